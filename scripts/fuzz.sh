#!/usr/bin/env bash
# Fuzzes Remedy's parsers with cargo-fuzz (libFuzzer): the Alertmanager
# webhook payload, remedy.toml and the run record's JSON. Not run by CI.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 300)
#
# Each target runs for SECONDS_PER_TARGET from its seed corpus (fuzz/seeds/,
# examples/alerts/, examples/remedy.toml) and dictionary (fuzz/dicts/, if
# any); what it finds grows
# fuzz/corpus/TARGET, crashes land in fuzz/artifacts/TARGET/. Prints the
# executions per target and every crash artifact; exits 1 if any target
# crashed (a panic, a timeout of one input, or running out of memory).
#
# Environment:
#   FUZZ_TARGETS    targets to run (default: all three)
#   FUZZ_SANITIZER  address (default) or none (faster to build and to run)
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a crash (10)
#   FUZZ_RSS_MB     memory limit in MiB (2048)
#
# Builds into fuzz/target (its own workspace), niced, with a stable toolchain
# made to accept cargo-fuzz's nightly flags (RUSTC_BOOTSTRAP=1). The first
# build compiles wasmtime with sanitizer instrumentation: expect 15-25 min.
set -euo pipefail

secs=${1:-300}
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-address}
read -r -a targets <<<"${FUZZ_TARGETS:-alert_payload config_file run_record}"
# -O: release; -a: debug assertions, so integer overflow panics too.
flags=(-O -a -s "$sanitizer")

if ! cargo fuzz --version >/dev/null 2>&1; then
    nice -n 19 cargo install cargo-fuzz --locked
fi

nice -n 19 cargo fuzz build "${flags[@]}"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
summary=()
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    seeds=("fuzz/seeds/$t")
    case $t in
        alert_payload) seeds+=(examples/alerts) ;;
        config_file) cp -n examples/remedy.toml "$corpus/seed-examples-remedy.toml" ;;
    esac
    dict=()
    if [ -f "fuzz/dicts/$t.dict" ]; then dict=(-dict="fuzz/dicts/$t.dict"); fi
    before=$(ls -1 "fuzz/artifacts/$t" | wc -l)
    echo "=== $t: ${secs}s, sanitizer $sanitizer, corpus $corpus + ${seeds[*]}"
    set +e
    nice -n 19 cargo fuzz run "${flags[@]}" "$t" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$secs" \
        -timeout="${FUZZ_TIMEOUT:-10}" \
        -rss_limit_mb="${FUZZ_RSS_MB:-2048}" \
        -print_final_stats=1 "${dict[@]}" 2>&1 | tee "$logs/$t.log" |
        grep --line-buffered -v -E '^(#[0-9]+\s+(NEW|REDUCE|pulse)|\s+NEW_FUNC)'
    rc=${PIPESTATUS[0]}
    set -e
    stat() { grep -E "^stat::$1:" "$logs/$t.log" | tail -n 1 | awk '{print $2}'; }
    execs=$(stat number_of_executed_units)
    rate=$(stat average_exec_per_sec)
    size=$(ls -1 "$corpus" | wc -l)
    line="$t: ${execs:-?} executions, ${rate:-?} exec/s, corpus $size files"
    artifacts=$(grep -oE 'Test unit written to \S+' "$logs/$t.log" | awk '{print $5}' || true)
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        line+=", CRASHED (exit $rc)"
        for a in $artifacts; do line+=$'\n'"    artifact: $a"; done
        if [ -z "$artifacts" ]; then
            line+=$'\n'"    (no artifact written; see the output above)"
        fi
    fi
    after=$(ls -1 "fuzz/artifacts/$t" | wc -l)
    if [ "$rc" -eq 0 ] && [ "$after" -gt "$before" ]; then
        line+=" ($((after - before)) new files in fuzz/artifacts/$t)"
    fi
    summary+=("$line")
done

echo
echo "=== summary (${secs}s per target, sanitizer $sanitizer)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashed: ${failed[*]}"
    echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} TARGET ARTIFACT"
    echo "minimize:  RUSTC_BOOTSTRAP=1 cargo fuzz tmin ${flags[*]} TARGET ARTIFACT"
    exit 1
fi
