#!/usr/bin/env bash
# Property-based fuzzing of the REST surface from its own OpenAPI document (schemathesis):
# every operation with generated valid and invalid input, checking for server errors,
# undocumented status codes and answers that do not match the documented schemas.
# Loopback only, bounded (examples per operation, wall time), stops by itself.
#
#   tests/fuzz/openapi.sh [examples-per-operation]     (default 50)
#
# Not part of CI: it needs schemathesis from PyPI (installed into target/fuzz-venv).
# Known, accepted findings: 503 WHATSAPP_UNAVAILABLE after 10 s on pairing-code (no WhatsApp
# here); "schema-valid request rejected" for business rules a schema cannot state (public
# webhook hosts, existing ids), so that check is excluded; and ST201 "pageSize/offset greater
# than maximum" on requests whose reproduction carries no such parameter (an out-of-range
# integer in the query is answered 400 VALIDATION_ERROR, see tests/it/openapi.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."
examples="${1:-50}"
port=18097
venv=target/fuzz-venv
[ -x "$venv/bin/st" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q schemathesis; }
cargo build -q
work=$(mktemp -d)
# The per-IP limits would answer most requests with 429; a 1 ms window switches them off.
RATE_LIMIT_WINDOW_MS=1 target/debug/wagate serve --database-url "$work/fuzz.db" \
  --listen "127.0.0.1:$port" >"$work/wagate.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 50); do curl -sf "$base/health" >/dev/null && break; sleep 0.2; done
json() { python3 -c "import json,sys; print(json.load(sys.stdin)['data']['$1'])"; }
token=$(curl -sf -XPOST "$base/api/v1/auth/register" -H 'content-type: application/json' \
  -d '{"email":"fuzz@example.com","password":"correct horse","name":"fuzz"}' | json token)
session_key=$(curl -sf -XPOST "$base/api/v1/sessions" -H "Authorization: Bearer $token" | json apiKey)
status=0
for auth in "Authorization: Bearer $token" "x-api-key: $session_key"; do
  timeout 600 "$venv/bin/st" run "$base/api/v1/openapi.json" --url "$base" -H "$auth" \
    -n "$examples" -c all --exclude-checks positive_data_acceptance || status=1
done
exit $status
