#!/usr/bin/env bash
# Every performance figure of the README's Performance section, on this
# machine, as one table. Takes ~10 minutes after the release build.
#
#   scripts/bench-all.sh            # SQLite store
#   REMEDY_BENCH_PG=postgres://postgres@127.0.0.1:5432 scripts/bench-all.sh
#
# With REMEDY_BENCH_PG (psql and pgbench needed) a second table follows,
# measured in the same run: the HTTP load and the alert storm on SQLite and
# on PostgreSQL side by side, one to three replicas loaded together on one
# PostgreSQL, and what the database itself does on these cores (pgbench's
# simple-update, durable commits), so the store's rate reads as a share of
# it. About 6 minutes more.
#
# Needs wrk (apt-get install wrk) and oha (cargo install oha). Figures move ±30 % between machines:
# compare a change against a baseline run on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p remedy
cargo test -q -p remedy-e2e --no-run >/dev/null 2>&1
export REMEDY_BIN=${REMEDY_BIN:-target/release/remedy}
pg=${REMEDY_BENCH_PG:-}
# The first table is SQLite's; PostgreSQL's figures come after it.
unset REMEDY_BENCH_PG
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

row() { printf '| %s | %s |\n' "$1" "$2"; }

echo "criterion: invocation (a few minutes)…" >&2
cargo bench -q -p remedy --bench invocation -- --noplot >"$out/bench" 2>&1 || true
median() { grep -A1 "^invocation/$1\$" "$out/bench" | grep -o 'time: *\[[^]]*\]' | awk '{print $4, $5}'; }

echo "HTTP load…" >&2
scripts/load.sh 8s 64 >"$out/load" 2>&1
rps() { grep 'Requests/sec' "$out/load" | sed -n "${1}p" | awk '{printf "%d", $2}'; }
p99() { grep '99%' "$out/load" | sed -n "${1}p" | awk '{print $2}'; }

echo "alert storm…" >&2
python3 scripts/alert-storm.py >"$out/storm" 2>&1
echo "alert storm, every post twice (an HA pair of Alertmanagers)…" >&2
REMEDY_STORM_HA=1 python3 scripts/alert-storm.py >"$out/storm-ha" 2>&1

echo "schedules (about 80 s)…" >&2
python3 scripts/schedule-load.py >"$out/sched" 2>&1

echo "start-up…" >&2
dir=$(mktemp -d)
printf '[server]\ndata_dir = "%s/data"\n' "$dir" >"$dir/remedy.toml"
startup() {
  local t0 t1 pid
  t0=$(date +%s%N)
  exec 3< <(target/release/remedy serve --config "$dir/remedy.toml" --listen 127.0.0.1:0 2>/dev/null)
  pid=$!
  read -r _ <&3
  t1=$(date +%s%N)
  sleep 2
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$(pgrep -n -f "$dir/remedy.toml")/status" 2>/dev/null || echo "?")
  pkill -f "$dir/remedy.toml" || true
  wait "$pid" 2>/dev/null || true
  exec 3<&-
  echo "$(((t1 - t0) / 1000000)) ms, idle RSS $((rss / 1024)) MiB"
}
cold=$(startup)
warm=$(startup)
rm -rf "$dir"

echo
echo "| figure | measured |"
echo "|---|---|"
row "invocation/wasm_instantiate_detect (median)" "$(median wasm_instantiate_detect)"
row "invocation/native_detect (median)" "$(median native_detect)"
row "invocation/native_detect_record (median)" "$(median native_detect_record)"
row "dry runs/s → 202 (load.sh 8s 64)" "$(rps 1) (p99 $(p99 1))"
row "dry runs/s ?wait=true" "$(rps 2) (p99 $(p99 2))"
row "?wait=true at a fixed half of that rate (oha -q)" "$(grep -o 'fixed [0-9]*/s' "$out/load" | head -1): p50 $(awk '/50.00% in/ {print $3, $4}' "$out/load"), p99 $(awk '/99.00% in/ {print $3, $4}' "$out/load")"
row "alert storm: post answered" "$(grep -o 'p50 .*' <(grep 'answer to Alertmanager' "$out/storm"))"
row "alert storm: receipt → run start" "$(grep -o 'p50 .*' <(grep '^receipt -> run start' "$out/storm"))"
row "alert storm: 20 critical alerts posted mid-storm, receipt → run start" "$(grep -o 'p50 .*' <(grep 'critical alerts' "$out/storm"))"
row "alert storm: queue drained" "$(grep -o "[0-9]* runs/s" <(grep "queue drained" "$out/storm"))"
row "alert storm: server peak RSS" "$(grep -o '[0-9]* MiB' <(grep 'peak RSS' "$out/storm"))"
row "alert storm, HA twins: post answered" "$(grep -o 'p50 .*' <(grep 'answer to Alertmanager' "$out/storm-ha"))"
row "alert storm, HA twins: runs" "$(grep -o 'runs recorded.*' "$out/storm-ha")"
row "schedules: ticks" "$(sed -n 2p "$out/sched")"
row "schedules: tick → run start" "$(grep -o 'p50 .*' <(grep 'tick -> run start' "$out/sched"))"
row "start-up cold (8 bundled plugins compiled)" "$cold"
row "start-up warm (compiled-code cache)" "$warm"
row "release binary" "$(du -m target/release/remedy | cut -f1) MB"

[ -n "$pg" ] || exit 0

echo "PostgreSQL: HTTP load, alert storm, replicas, pgbench…" >&2
REMEDY_BENCH_PG=$pg scripts/load.sh 8s 64 >"$out/pg-load" 2>&1
REMEDY_BENCH_PG=$pg python3 scripts/alert-storm.py >"$out/pg-storm" 2>&1
for n in 1 2 3; do
  REMEDY_BENCH_PG=$pg scripts/cluster-load.sh "$n" 8s 64 >"$out/pg-cluster$n" 2>&1
done
bench_db="remedy_pgbench_$$"
psql "$pg/postgres" -qc "CREATE DATABASE $bench_db"
pgbench -q -i -s 10 "$pg/$bench_db" >/dev/null 2>&1
pgbench -N -c 8 -j 2 -T 10 "$pg/$bench_db" >"$out/pgbench" 2>&1 || true
psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $bench_db WITH (FORCE)"

# $1: file, $2: line number of the wrk run (1: 202, 2: ?wait=true)
rps_of() { grep 'Requests/sec' "$1" | sed -n "${2}p" | awk '{printf "%d", $2}'; }
p99_of() { grep '99%' "$1" | sed -n "${2}p" | awk '{print $2}'; }
half_p99() { awk '/99.00% in/ {print $3, $4}' "$1"; }
storm_p99() { grep "$2" "$1" | grep -o 'p99 [0-9.]* ms' | head -1 | awk '{print $2}'; }
drained() { grep 'queue drained' "$1" | grep -o '[0-9]* runs/s' | awk '{print $1}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", b / a; else print "—" }'; }
three() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$(ratio "$4" "$5")"; }

echo
echo "| figure | SQLite | PostgreSQL | PostgreSQL / SQLite |"
echo "|---|---|---|---|"
three "dry runs/s → 202 (load.sh 8s 64)" "$(rps_of "$out/load" 1)" "$(rps_of "$out/pg-load" 1)" "$(rps_of "$out/load" 1)" "$(rps_of "$out/pg-load" 1)"
three "dry runs/s ?wait=true" "$(rps_of "$out/load" 2)" "$(rps_of "$out/pg-load" 2)" "$(rps_of "$out/load" 2)" "$(rps_of "$out/pg-load" 2)"
three "?wait=true p99 at half its own max (oha -q)" "$(half_p99 "$out/load")" "$(half_p99 "$out/pg-load")" "" ""
for what in 'answer to Alertmanager' '^receipt -> run start' 'critical alerts'; do
  a=$(storm_p99 "$out/storm" "$what")
  b=$(storm_p99 "$out/pg-storm" "$what")
  three "alert storm: $(echo "$what" | tr -d '^') p99 (ms)" "$a" "$b" "$a" "$b"
done
three "alert storm: queue drained (runs/s)" "$(drained "$out/storm")" "$(drained "$out/pg-storm")" "$(drained "$out/storm")" "$(drained "$out/pg-storm")"
one=$(grep together "$out/pg-cluster1" | awk '{print $2}')
for n in 1 2 3; do
  together=$(grep together "$out/pg-cluster$n" | awk '{print $2}')
  printf '| %s | — | %s | %s of one replica |\n' "$n replica(s) loaded together, ?wait=true runs/s" \
    "$together ($(grep -o '[0-9.]* per run), [0-9]* rows' "$out/pg-cluster$n" | head -1 | awk '{print $1}') commits/run)" \
    "$(ratio "$one" "$together")"
done
tps=$(grep -o 'tps = [0-9.]*' "$out/pgbench" | tail -1 | awk '{printf "%d", $3}')
printf '| %s | — | %s | |\n' "pgbench simple-update (-N -c 8 -j 2, scale 10): durable commits/s" "$tps"
