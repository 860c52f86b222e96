#!/usr/bin/env bash
# HTTP-triggered dry runs per second against a release `remedy serve`, with
# every run record persisted in the SQLite store. Needs wrk (apt-get install wrk).
#
#   scripts/load.sh [DURATION] [CONNECTIONS]
#   REMEDY_BENCH_PG=postgres://postgres@127.0.0.1:5432 scripts/load.sh ...
#
# With REMEDY_BENCH_PG (a server URL; psql needed) the store is PostgreSQL:
# a database of the run's own is created there and dropped at the end.
#
# The plugin is tests/plugins/hostile with `behave = ok`: a detection that is
# healthy without host calls, so the figure is Remedy's own cost (HTTP, single
# flight, store, instantiate, detect), not a backend's.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
conns=${2:-64}
port=${REMEDY_LOAD_PORT:-18181}

# REMEDY_BIN: measure another build (a baseline) instead of this checkout's.
bin=${REMEDY_BIN:-target/release/remedy}
if [ -z "${REMEDY_BIN:-}" ]; then
  cargo build --release -q -p remedy
  cargo test -q -p remedy-e2e --no-run >/dev/null 2>&1
fi
wasm=target/wasm-test-plugins/wasm32-wasip2/release/hostile.wasm

dir=$(mktemp -d)
store_line=""
if [ -n "${REMEDY_BENCH_PG:-}" ]; then
  db="remedy_load_$$"
  psql "$REMEDY_BENCH_PG/postgres" -qc "CREATE DATABASE $db"
  store_line="store = \"$REMEDY_BENCH_PG/$db\""
fi
cleanup() {
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null
  [ -n "${db:-}" ] && psql "$REMEDY_BENCH_PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  rm -rf "$dir"
}
trap cleanup EXIT
cat > "$dir/remedy.toml" <<TOML
[server]
data_dir = "$dir/data"
$store_line
[plugins.hostile]
path = "$PWD/$wasm"
config = { behave = "ok" }
TOML
"$bin" serve --config "$dir/remedy.toml" --listen "127.0.0.1:$port" >/dev/null &
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
# A cold start serves quick code until the optimised code is compiled in the
# background (runtime/tiers.rs): measure the steady state, once the cache
# holds every plugin's optimised code (the bundled ones and hostile).
for _ in $(seq 600); do
  [ "$(ls "$dir/data/compiled" 2>/dev/null | grep -c '\.cwasm$')" -ge 9 ] && break
  sleep 0.1
done

base="http://127.0.0.1:$port/v1/plugins/hostile/runs"
echo "== 202 answers (record stored as running before the answer; final record stored when the run ends)"
wrk -t2 -c"$conns" -d"$duration" --latency -s scripts/post-run.lua "$base"
echo "== ?wait=true (the answer is the finished record, stored before it is sent)"
wrk -t2 -c"$conns" -d"$duration" --latency -s scripts/post-run.lua "$base?wait=true" | tee "$dir/wait"
# Latency at a fixed rate, half the maximum just measured: at saturation
# every request queues, so wrk's p99 says little about a loaded service.
# oha holds the rate (`-q`) and corrects for coordinated omission.
if command -v oha >/dev/null 2>&1; then
  max=$(awk '/Requests\/sec/ {printf "%d", $2}' "$dir/wait")
  rate=${REMEDY_LOAD_RATE:-$((max / 2))}
  echo "== ?wait=true at a fixed $rate/s (half the maximum), $conns connections"
  oha --no-tui -z "$duration" -c "$conns" -q "$rate" --latency-correction -m POST \
    -H 'Content-Type: application/json' -d '{"dry_run": true}' "$base?wait=true" |
    grep -E 'Requests/sec|Success rate|50.00%|90.00%|99.00%|99.90%|\[2'
else
  echo "== (install oha, \`cargo install oha\`, for latency at a fixed rate)"
fi
sleep 1
if [ -n "${db:-}" ]; then
  echo "== runs stored (PostgreSQL): $(psql "$REMEDY_BENCH_PG/$db" -Atc 'select count(*) from runs')"
else
  echo "== runs stored: $(sqlite3 "$dir/data/remedy.db" 'select count(*) from runs' 2>/dev/null || echo '(install sqlite3 to count)')"
fi
