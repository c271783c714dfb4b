#!/usr/bin/env bash
# Schemathesis over both OpenAPI documents (openapi/*.json), against live services on throwaway PostgreSQL servers,
# with every check (--checks all); exits non-zero on any finding. .ci/run calls it after the README's test command.
#
# What runs:
# - a coordinator with ServiceA and ServiceB behind it (two-phase commit on): the coordinator's document;
# - a participant on a server with max_prepared_transactions = 0: the participant's document. A fuzzer is a client
#   that never commits: XA prepares it made on a 2PC server would hold their rows' locks for the rest of the run
#   (no coordinator knows them, so none resolves them), and every later call on those rows would wait and get a
#   retryable 503. On a server without 2PC, /xa/prepare answers its documented 409 xa_unavailable and holds nothing;
#   the coordinator's run exercises XA end to end.
#
# EXAMPLES (default 50) bounds the examples per operation. Needs `st` (pip install schemathesis).
set -euo pipefail
cd "$(dirname "$0")/.."
DTX=${DTX:-.build/debug/dtx}
EXAMPLES=${EXAMPLES:-50}
[ -x "$DTX" ] || swift build --product dtx
command -v st >/dev/null || { echo "schemathesis (st) is not installed: pip install schemathesis" >&2; exit 2; }

work=$(mktemp -d /tmp/dtx-contract-XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$DTX" postgres stop --remove --dir "$work/pg" >/dev/null 2>&1 || true
    "$DTX" postgres stop --remove --dir "$work/pg-no2pc" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

url() { grep "^$2" "$1" | cut -f2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_healthy() {
    for _ in $(seq 1 300); do
        curl -fsS "$1/health" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "$1 did not become healthy; logs in $work" >&2
    tail -20 "$work"/*.log >&2 || true
    exit 1
}

"$DTX" postgres start --dir "$work/pg" > "$work/pg.urls"
"$DTX" postgres start --dir "$work/pg-no2pc" --max-prepared-transactions 0 > "$work/pg-no2pc.urls"

a=$(free_port); b=$(free_port); c=$(free_port); p=$(free_port)
"$DTX" participant --name ServiceA --port "$a" --database-url "$(url "$work/pg.urls" dtx_service_a)" --parent-pid $$ > "$work/a.log" 2>&1 &
pids+=($!)
"$DTX" participant --name ServiceB --port "$b" --database-url "$(url "$work/pg.urls" dtx_service_b)" --parent-pid $$ > "$work/b.log" 2>&1 &
pids+=($!)
"$DTX" coordinator --port "$c" --database-url "$(url "$work/pg.urls" dtx_coordinator)" --global-timeout 3s --response-wait 3s \
    --participant "ServiceA=http://127.0.0.1:$a" --participant "ServiceB=http://127.0.0.1:$b" --parent-pid $$ > "$work/c.log" 2>&1 &
pids+=($!)
"$DTX" participant --name ServiceC --port "$p" --database-url "$(url "$work/pg-no2pc.urls" dtx_service_a)" --parent-pid $$ > "$work/p.log" 2>&1 &
pids+=($!)
for port in "$a" "$b" "$c" "$p"; do wait_healthy "http://127.0.0.1:$port"; done

status=0
for target in "coordinator:$c" "participant:$p"; do
    name=${target%%:*}
    port=${target##*:}
    echo "==> schemathesis: the $name's document, --checks all, at most $EXAMPLES examples per operation"
    st --config-file schemathesis.toml run "http://127.0.0.1:$port/openapi.json" --checks all --max-examples "$EXAMPLES" --workers 1 \
        --request-timeout 30 --seed 42 --generation-deterministic --no-color || status=1
done
if [ "$status" -ne 0 ]; then
    echo "schemathesis found problems; the services' logs:" >&2
    tail -30 "$work"/*.log >&2 || true
fi
exit "$status"
