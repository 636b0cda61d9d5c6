-- Expands broadcast $1 over contact list $2: one recipient per contact, numbered from 1 in
-- number order, spread over $3 sessions, available at $4. One statement: the database does
-- the batching.
INSERT INTO broadcast_recipients
    (broadcast_id, seq, phone, full_name, variables, session_slot, state, available_at,
     created_at, updated_at)
SELECT $1, n, phone, full_name, variables, CAST((n - 1) % $3 AS INTEGER), 'created', $4, $4, $4
FROM (
    SELECT phone, full_name, variables, ROW_NUMBER() OVER (ORDER BY phone) AS n
    FROM contact_list_contacts
    WHERE list_id = $2
) c
