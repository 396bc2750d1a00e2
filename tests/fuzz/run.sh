#!/usr/bin/env bash
# The bounded fuzz run of `make fuzz`:
#   tests/fuzz/run.sh BUILDDIR SECONDS TARGET...
# Runs BUILDDIR/fuzz_TARGET for SECONDS each, starting from the committed
# seeds (tests/fuzz/corpus/TARGET, read only) plus what earlier runs found
# (BUILDDIR/corpus/TARGET), and prints one line per target with the number
# of inputs executed.  A crash, leak or failed check stops the run: the
# input is saved as BUILDDIR/artifacts/TARGET-crash-*, and replaying it is
#   BUILDDIR/fuzz_TARGET BUILDDIR/artifacts/TARGET-crash-...
# A failure prints the end of the log (the input, base64), then the start
# of the report (the failed check or sanitizer error and the top frames),
# then the lines that say what failed, last: a CI log that keeps only its
# tail keeps those.
set -euo pipefail

# The first line of a report: a failed check, a sanitizer's or libFuzzer's
# error (crash, leak, timeout, out of memory), a UBSan runtime error.
report_start='check failed|ERROR: |runtime error:|^ALARM: '

failed() {
    local log=$1 first lines
    echo "---- the end of $log ----"
    tail -n 12 "$log"
    first=$(grep -n -m 1 -E "$report_start" "$log" | cut -d: -f1 || true)
    if [ -n "$first" ]; then
        echo "---- the report, from line $first of $log ----"
        sed -n "${first},$((first + 24))p" "$log"
    fi
    echo "---- what failed ----"
    lines=$(grep -E "$report_start|^fuzz_[a-z]+: |^SUMMARY: " "$log" |
        head -n 10 || true)
    echo "${lines:-(no report line: see $log)}"
}

build=$1 seconds=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$build/artifacts"

for t in "$@"; do
    bin=$build/fuzz_$t
    work=$build/corpus/$t
    log=$build/fuzz_$t.log
    mkdir -p "$work"
    args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10
          -rss_limit_mb=1024 -artifact_prefix="$build/artifacts/$t-")
    [ -f "$here/$t.dict" ] && args+=(-dict="$here/$t.dict")
    start=$(date +%s)
    if ! "$bin" "${args[@]}" "$work" "$here/corpus/$t" >"$log" 2>&1; then
        failed "$log" >&2
        echo "fuzz_$t: FAILED (log: $log; input saved under $build/artifacts)" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    inputs=$(find "$work" "$here/corpus/$t" -type f | wc -l)
    echo "fuzz_$t: ${runs:-?} executions in $(( $(date +%s) - start )) s," \
         "no crash (corpus: $inputs inputs)"
done
