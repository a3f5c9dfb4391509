#!/usr/bin/env bash
# The libFuzzer targets of tests/fuzz/ (issue 6): builds them (make fuzz-build, clang with
# ASan + UBSan) and runs each target (every tests/fuzz/fuzz_<target>.c, about 5 s each)
# for FUZZ_TEST_SECONDS (default 5) from its seed corpus tests/fuzz/corpus/<target>/, plus what
# `make fuzz` has collected in build/fuzz/corpus/<target>/. A crash, sanitizer report, leak,
# broken invariant or hang fails the target; the input is kept in build/fuzz/artifacts/<target>/
# and the log in build/fuzz/logs/.
# Reproduce with: build/fuzz/fuzz_<target> build/fuzz/artifacts/<target>/crash-...
. "$(dirname "$0")/../lib.sh"
cd "$T_ROOT" || exit 2
secs=${FUZZ_TEST_SECONDS:-5}

if ! command -v "${FUZZ_CC:-clang}" >/dev/null; then
    t_fail "fuzz: clang not installed (scripts/deps.sh test installs clang and libclang-rt-14-dev)"
    t_finish
fi
if make --no-print-directory -s fuzz-build >"$T_TMP/build.log" 2>&1; then
    t_ok "fuzz targets build"
else
    t_fail "fuzz targets build" "$(tail -c 600 "$T_TMP/build.log" | tr '\n' ' ')"
    t_finish
fi

mkdir -p build/fuzz/logs
for src in tests/fuzz/fuzz_*.c; do
    t=$(basename "$src" .c)
    t=${t#fuzz_}
    bin=build/fuzz/fuzz_$t
    log=build/fuzz/logs/$t.log
    art=build/fuzz/artifacts/$t
    mkdir -p "$T_TMP/corpus/$t" "$art"
    dirs=("$T_TMP/corpus/$t" "tests/fuzz/corpus/$t")
    [ -d "build/fuzz/corpus/$t" ] && dirs+=("build/fuzz/corpus/$t")
    dict=()
    [ -f "tests/fuzz/dict/$t.dict" ] && dict=("-dict=tests/fuzz/dict/$t.dict")
    if [ ! -d "tests/fuzz/corpus/$t" ] || [ -z "$(ls -A "tests/fuzz/corpus/$t")" ]; then
        t_fail "$t: no seed corpus in tests/fuzz/corpus/$t"
    fi
    # -max_total_time is checked between inputs; timeout(1) bounds a run that stops making progress
    UBSAN_OPTIONS=print_stacktrace=1 timeout $((secs * 3 + 30)) "$bin" -max_total_time="$secs" \
        -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$art/" "${dict[@]}" \
        "${dirs[@]}" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
    if [ "$rc" -eq 0 ]; then
        t_ok "$t: ${runs:-?} executions in ${secs}s (${cov:-cov: ?}), no crash"
    else
        what=$(grep -m1 -E 'ERROR: |runtime error|invariant failed|Timeout|out-of-memory|leak' "$log")
        frames=$(grep -E '^ +#[0-9]+ ' "$log" |
            grep -v -E 'libFuzzer|fuzzer::|__sanitizer|__asan|__interceptor|libc\.so|nptl/|stdlib/abort|posix/raise' |
            head -4 | sed -E 's/^ +#[0-9]+ 0x[0-9a-f]+ in //; s/\(.*BuildId.*\)//' | tr '\n' ';')
        input=$(grep -oE "$art/[a-z-]+-[0-9a-f]+" "$log" | tail -1)
        t_fail "$t: exit $rc after ${runs:-?} executions" \
            "${what:-no sanitizer line} | ${frames} | input ${input:-none} | log $log"
    fi
done
t_finish
