#!/usr/bin/env bash
# Persisted dry runs per second of N replicas on one PostgreSQL store, all
# loaded at once (wrk against each, the connections split between them),
# and what the database did for them: commits and rows written per run,
# and, where pg_stat_statements is loaded, where its time went.
#
#   REMEDY_BENCH_PG=postgres://postgres@127.0.0.1:5432 scripts/cluster-load.sh [REPLICAS] [DURATION] [CONNECTIONS]
#
# A database of the run's own is created and dropped at the end. Needs wrk
# and psql. REMEDY_BIN measures another build (a baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${REMEDY_BENCH_PG:?set REMEDY_BENCH_PG to a PostgreSQL server URL}"
n=${1:-3}
duration=${2:-8s}
conns=${3:-64}
port=${REMEDY_LOAD_PORT:-18281}

bin=${REMEDY_BIN:-target/release/remedy}
if [ -z "${REMEDY_BIN:-}" ]; then
  cargo build --release -q -p remedy
  cargo test -q -p remedy-e2e --no-run >/dev/null 2>&1
fi
wasm=target/wasm-test-plugins/wasm32-wasip2/release/hostile.wasm

dir=$(mktemp -d)
db="remedy_cluster_$$"
psql "$REMEDY_BENCH_PG/postgres" -qc "CREATE DATABASE $db"
servers=()
cleanup() {
  for s in "${servers[@]}"; do kill "$s" 2>/dev/null || true; done
  for s in "${servers[@]}"; do wait "$s" 2>/dev/null || true; done
  psql "$REMEDY_BENCH_PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  rm -rf "$dir"
}
trap cleanup EXIT

for i in $(seq "$n"); do
  mkdir -p "$dir/r$i"
  cat >"$dir/r$i/remedy.toml" <<TOML
[server]
data_dir = "$dir/r$i/data"
store = "$REMEDY_BENCH_PG/$db"
replica = "r$i"
[plugins.hostile]
path = "$PWD/$wasm"
config = { behave = "ok" }
TOML
  "$bin" serve --config "$dir/r$i/remedy.toml" --listen "127.0.0.1:$((port + i))" >/dev/null 2>&1 &
  servers+=($!)
done
for i in $(seq "$n"); do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((port + i))/healthz" >/dev/null && break; sleep 0.1; done
  # The steady state: every plugin's optimised code in the cache.
  for _ in $(seq 600); do
    [ "$(ls "$dir/r$i/data/compiled" 2>/dev/null | grep -c '\.cwasm$')" -ge 9 ] && break
    sleep 0.1
  done
done

stat() { psql "$REMEDY_BENCH_PG/$db" -Atc "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = '$db'"; }
statements=$(psql "$REMEDY_BENCH_PG/$db" -Atc "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'" 2>/dev/null || echo 0)
if [ "$statements" = 0 ] && psql "$REMEDY_BENCH_PG/$db" -qc "CREATE EXTENSION pg_stat_statements" 2>/dev/null; then
  statements=1
fi
if [ "$statements" = 1 ] && ! psql "$REMEDY_BENCH_PG/$db" -qAtc "SELECT pg_stat_statements_reset()" >/dev/null 2>&1; then
  statements=0 # the extension exists but the server did not preload it
fi
# CPU seconds of the database's processes (when it runs on this machine)
# and of the replicas, read from /proc.
cpu_of() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done | awk -v hz="$(getconf CLK_TCK)" '{s += $1} END {printf "%.2f", s / hz}'; }
db_cpu() { cpu_of $(pgrep -u postgres 2>/dev/null); }
db_before=$(db_cpu)
remedy_before=$(cpu_of "${servers[@]}")
before=$(stat)
runs_before=$(psql "$REMEDY_BENCH_PG/$db" -Atc 'SELECT count(*) FROM runs')

echo "== $n replica(s), $conns connections in all, $duration"
per=$(((conns + n - 1) / n))
loads=()
for i in $(seq "$n"); do
  wrk -t1 -c"$per" -d"$duration" --latency -s scripts/post-run.lua \
    "http://127.0.0.1:$((port + i))/v1/plugins/hostile/runs?wait=true" >"$dir/wrk$i" &
  loads+=($!)
done
# What the store's sessions wait on while loaded, sampled every 100 ms:
# lock contention would show as Lock or LWLock waits.
(
  end=$((SECONDS + ${duration%s}))
  while [ $SECONDS -lt $end ]; do
    psql "$REMEDY_BENCH_PG/$db" -Atc "SELECT coalesce(wait_event_type || ':' || wait_event, 'on CPU') FROM pg_stat_activity \
      WHERE datname = '$db' AND application_name = 'remedy-store' AND state = 'active'" 2>/dev/null
    sleep 0.1
  done
) >"$dir/waits" &
sampler=$!
wait "${loads[@]}"
wait "$sampler" || true
sleep 1
total=0
for i in $(seq "$n"); do
  r=$(awk '/Requests\/sec/ {printf "%d", $2}' "$dir/wrk$i")
  p99=$(awk '$1 == "99%" {print $2}' "$dir/wrk$i")
  echo "r$i: $r runs/s (p99 $p99)"
  total=$((total + r))
done
after=$(stat)
db_used=$(awk -v a="$(db_cpu)" -v b="$db_before" 'BEGIN {printf "%.2f", a - b}')
remedy_used=$(awk -v a="$(cpu_of "${servers[@]}")" -v b="$remedy_before" 'BEGIN {printf "%.2f", a - b}')
runs=$(($(psql "$REMEDY_BENCH_PG/$db" -Atc 'SELECT count(*) FROM runs') - runs_before))
commits=$((${after%%|*} - ${before%%|*}))
rows=$((${after##*|} - ${before##*|}))
echo "together: $total runs/s ?wait=true"
echo "database: $runs runs stored; $commits commits ($(awk "BEGIN {printf \"%.2f\", $commits / ($runs > 0 ? $runs : 1)}") per run), $rows rows written ($(awk "BEGIN {printf \"%.2f\", $rows / ($runs > 0 ? $runs : 1)}") per run)"
per_k() { awk -v s="$1" -v n="$runs" 'BEGIN {printf "%.0f", (n > 0 ? 1000 * s / n * 1000 : 0)}'; }
echo "cpu: database $db_used s ($(per_k "$db_used") ms per 1,000 runs), replicas $remedy_used s ($(per_k "$remedy_used") ms per 1,000 runs)"
echo "store sessions active when sampled (every 100 ms), by what they waited on:"
sort "$dir/waits" | uniq -c | sort -rn | head -6 | sed 's/^/  /'
if [ "$statements" = 1 ]; then
  echo "== where the database's time went (pg_stat_statements, top 8 by total time)"
  psql "$REMEDY_BENCH_PG/$db" -c "SELECT calls, round(total_exec_time::numeric, 1) AS total_ms, \
    round(mean_exec_time::numeric, 3) AS mean_ms, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS query \
    FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '$db') \
    ORDER BY total_exec_time DESC LIMIT 8"
fi
