//! Whether numbers are on WhatsApp, as a session of the project last asked WhatsApp: the
//! cache of the number check and of `skip_unregistered` campaigns (WhatsApp watches how often
//! an account looks numbers up, so each number is asked about once in a while, not per send).

use diesel::prelude::*;

use super::DbConn;
use super::schema::number_checks;
use crate::db_run;
use crate::error::Result;
use crate::values::ProjectId;

/// Cached number checks of `phones` younger than `since`: (phone, on WhatsApp).
pub fn cached_numbers(
    conn: &mut DbConn,
    project_id: &ProjectId,
    phones: &[String],
    since: i64,
) -> Result<Vec<(String, bool)>> {
    Ok(db_run!(conn, |c| number_checks::table
        .filter(number_checks::project_id.eq(project_id))
        .filter(number_checks::phone.eq_any(phones))
        .filter(number_checks::checked_at.ge(since))
        .select((number_checks::phone, number_checks::on_whatsapp))
        .load(c))?)
}

/// Stores what WhatsApp answered about these numbers.
pub fn store_numbers(
    conn: &mut DbConn,
    project_id: &ProjectId,
    answers: &[(String, bool)],
    now: i64,
) -> Result<()> {
    conn.transaction(|conn| {
        for (phone, on) in answers {
            let row = (
                number_checks::project_id.eq(project_id),
                number_checks::phone.eq(phone),
                number_checks::on_whatsapp.eq(*on),
                number_checks::checked_at.eq(now),
            );
            db_run!(conn, |c| diesel::insert_into(number_checks::table)
                .values(row)
                .on_conflict((number_checks::project_id, number_checks::phone))
                .do_update()
                .set((
                    number_checks::on_whatsapp.eq(*on),
                    number_checks::checked_at.eq(now),
                ))
                .execute(c))?;
        }
        Ok(())
    })
}

/// Phones of a campaign's recipients still to dispatch from `from_seq` on (its next batch to
/// check).
pub fn upcoming_phones(
    conn: &mut DbConn,
    broadcast_id: &str,
    from_seq: i64,
    limit: i64,
) -> Result<Vec<String>> {
    use super::schema::broadcast_recipients as r;
    Ok(db_run!(conn, |c| r::table
        .filter(r::broadcast_id.eq(broadcast_id))
        .filter(r::state.eq(super::broadcasts::CREATED))
        .filter(r::seq.ge(from_seq))
        .order(r::seq.asc())
        .select(r::phone)
        .limit(limit)
        .load(c))?)
}
