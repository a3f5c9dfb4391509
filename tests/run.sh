#!/usr/bin/env bash
# Runs every berth test: C unit tests (under ASan/UBSan), then each integration script against
# build/berth, then the API suite again against the ASan/UBSan build. Prints per-test lines and,
# last, the total as "N passed, N failed". Exits non-zero when anything failed.
cd "$(dirname "$0")/.." || exit 2
pass=0
fail=0
log=$(mktemp)
tally() { # tally LOGFILE: adds the script's "N passed, N failed" line, or one failure if missing
    local line
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -1)
    if [ -n "$line" ]; then
        pass=$((pass + $(echo "$line" | cut -d' ' -f1)))
        fail=$((fail + $(echo "$line" | cut -d' ' -f3)))
    else
        fail=$((fail + 1))
        echo "FAIL - $2: ended without a tally (crashed?)"
    fi
}
for t in build/unit/*; do
    [ -x "$t" ] || continue
    "$t" >"$log" 2>&1
    cat "$log"
    tally "$log" "$t"
done
for t in tests/integration/*.sh; do
    [ -n "${TESTS:-}" ] && ! echo "$t" | grep -qE "$TESTS" && continue
    echo "== $t"
    timeout 900 bash "$t" >"$log" 2>&1
    cat "$log"
    tally "$log" "$t"
done
# The API, mirror, Helm, auth, margo, bundle (and, over S3, API) suites once more under AddressSanitizer/UBSan: a report aborts berth and fails the suite.
if [ -z "${TESTS:-}" ] || echo asan | grep -qE "$TESTS"; then
    for t in tests/integration/api*.sh tests/integration/mirror_*.sh tests/integration/helm.sh \
        tests/integration/auth*.sh tests/integration/margo.sh tests/integration/bundle.sh; do
        echo "== $t (asan)"
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 BERTH=build/asan/berth timeout 900 bash "$t" >"$log" 2>&1
        cat "$log"
        tally "$log" "$t (asan)"
    done
    # the S3 blob backend under ASan: the API suite over RGW + PostgreSQL, and s3_api's own checks
    echo "== tests/integration/s3_api.sh (asan, API suite)"
    S3_API_SUITES=api ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 BERTH=build/asan/berth \
        timeout 900 bash tests/integration/s3_api.sh >"$log" 2>&1
    cat "$log"
    tally "$log" "tests/integration/s3_api.sh (asan)"
fi
rm -f "$log"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
