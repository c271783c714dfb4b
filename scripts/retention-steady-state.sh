#!/usr/bin/env bash
# Retention under load: runs MODE at CLIENTS clients for DURATION with a short retention horizon (HORIZON, pruned
# every INTERVAL) on three throwaway servers, and prints every SAMPLE seconds the rows of each table retention prunes,
# beside the highest transaction id so far (about the number begun). Without retention the tables grow with every
# transaction; with it they level off at about throughput x (horizon + interval) rows. Ends with dtx bench's own
# invariant check.
#
#   DURATION=120s HORIZON=10s scripts/retention-steady-state.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DTX=${DTX:-.build/release/dtx}
MODE=${MODE:-tcc+batch}
CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-120s}
HORIZON=${HORIZON:-10s}
INTERVAL=${INTERVAL:-2s}
SAMPLE=${SAMPLE:-10}
[ -x "$DTX" ] || { echo "build first: swift build -c release" >&2; exit 2; }

work=$(mktemp -d /tmp/dtx-retention-XXXXXX)
chmod 755 "$work"
bench=""
cleanup() {
    [ -n "$bench" ] && kill "$bench" 2>/dev/null || true
    wait 2>/dev/null || true
    "$DTX" postgres stop --remove --servers 3 --dir "$work/pg" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

"$DTX" postgres start --servers 3 --dir "$work/pg" | grep -v '^PostgreSQL' > "$work/urls"
url() { grep "^$1" "$work/urls" | cut -f2; }
a=$(url dtx_service_a); b=$(url dtx_service_b); c=$(url dtx_coordinator)

retention=("--retention-horizon" "$HORIZON" "--retention-interval" "$INTERVAL")
args=$(printf '"%s",' "${retention[@]}"); args="[${args%,}]"
cat > "$work/retention.json" <<EOF
{
  "name": "retention",
  "description": "The uniform workload with a retention horizon of $HORIZON, pruned every $INTERVAL.",
  "workload": { "products": 1000, "stock": 100000000, "quantity": 1, "distribution": "uniform", "zipfExponent": 1.1, "failShare": 0 },
  "participantArguments": { "ServiceA": $args, "ServiceB": $args },
  "coordinatorArguments": $args
}
EOF

"$DTX" bench --scenario "$work/retention.json" --modes "$MODE" --clients "$CLIENTS" --duration "$DURATION" --warmup 0s \
    --repeat 1 --database-url-a "$a" --database-url-b "$b" --database-url-coordinator "$c" --out "$work/out" > "$work/bench.log" 2>&1 &
bench=$!

count() { psql "$1" -Atc "SELECT count(*) FROM $2" 2>/dev/null || echo "?"; }
printf "%6s %14s %14s %14s %14s %14s %14s\n" seconds "highest id" worker_events "A barrier" "A transactions" "B barrier" "B transactions"
start=$(date +%s)
while kill -0 "$bench" 2>/dev/null; do
    highest=$(psql "$c" -Atc "SELECT COALESCE(max(id), 0) FROM worker_events" 2>/dev/null || echo "?")
    printf '%6s %14s %14s %14s %14s %14s %14s\n' $(( $(date +%s) - start )) "$highest" "$(count "$c" worker_events)" \
        "$(count "$a" barrier)" "$(count "$a" transactions)" "$(count "$b" barrier)" "$(count "$b" transactions)"
    sleep "$SAMPLE"
done
wait "$bench" && status=0 || status=$?
bench=""
grep -E "tx/s|invariants" "$work/bench.log" | tail -2
exit $status
