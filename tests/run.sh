#!/usr/bin/env bash
# Runs every berth test: C unit tests (under ASan/UBSan), then each integration script against
# build/berth, and the API, mirror, Helm, auth, margo and bundle suites again against the
# ASan/UBSan build. Prints each script's lines as it finishes and, last, the total as
# "N passed, N failed". Exits non-zero when anything failed.
#
# The scripts share nothing (each starts its own berth, upstreams, PostgreSQL or Ceph on free
# ports in a directory of its own), so they run TEST_JOBS at a time (default: the number of
# cores), the longest first. TESTS=REGEX runs only the scripts whose path matches (and "asan"
# selects the sanitizer runs); one script alone: bash tests/integration/NAME.sh. T_ONLY=REGEX
# (passed on to every script) counts only the checks whose t_group or name matches; the others
# are counted as skipped (tests/lib.sh).
cd "$(dirname "$0")/.." || exit 2
pass=0
fail=0
skip=0
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
tally() { # tally LOGFILE NAME: adds the script's "N passed, N failed" line, or one failure if missing
    local line
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$1" | tail -1)
    if [ -n "$line" ]; then
        pass=$((pass + $(echo "$line" | cut -d' ' -f1)))
        fail=$((fail + $(echo "$line" | cut -d' ' -f3 | tr -d ,)))
        skip=$((skip + $(echo "$line" | awk '{print ($5 == "" ? 0 : $5)}')))
    else
        fail=$((fail + 1))
        echo "FAIL - $2: ended without a tally (crashed?)"
    fi
}
for t in build/unit/*; do
    [ -x "$t" ] || continue
    "$t" >"$out/unit.log" 2>&1
    cat "$out/unit.log"
    tally "$out/unit.log" "$t"
done

# jobs: "NAME|ENV|SCRIPT", the slowest first so the lanes finish together
jobs=()
slow="s3_api s3_replicas rgw_engine mirror bundle pg_api api dockerd diskfull"
ordered=()
for s in $slow; do [ -f "tests/integration/$s.sh" ] && ordered+=("tests/integration/$s.sh"); done
for t in tests/integration/*.sh; do
    case " $slow " in *" $(basename "$t" .sh) "*) continue ;; esac
    ordered+=("$t")
done
for t in "${ordered[@]}"; do
    [ -n "${TESTS:-}" ] && ! echo "$t" | grep -qE "$TESTS" && continue
    jobs+=("$t||$t")
done
if [ -z "${TESTS:-}" ] || echo asan | grep -qE "$TESTS"; then
    asan="ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} BERTH=build/asan/berth"
    # the S3 blob backend under ASan: the API suite over RGW + PostgreSQL, and s3_api's own checks
    jobs+=("tests/integration/s3_api.sh (asan, API suite)|$asan S3_API_SUITES=api|tests/integration/s3_api.sh")
    for t in tests/integration/api*.sh tests/integration/mirror_*.sh tests/integration/helm.sh \
        tests/integration/auth*.sh tests/integration/margo.sh tests/integration/bundle.sh; do
        jobs+=("$t (asan)|$asan|$t")
    done
fi

# ---- other architectures (issue 22): each cross build that exists (make test builds
# build/<arch>/berth for TEST_ARCHES) runs a set of scripts under qemu-user through binfmt (never
# `qemu -L`, which hangs threaded programs), in the same lanes as the native scripts. LeakSanitizer
# cannot run under qemu, and these are not ASan builds. TESTS=arm64 (or armhf) selects a lane.
declare -A cross_scripts=(
    [arm64]="api mirror helm margo bundle auth tls_client crash deb"
    [armhf]="api mirror bundle bigblob deb"
)
declare -A cross_binfmt=([arm64]=qemu-aarch64 [armhf]=qemu-arm)
for arch in arm64 armhf; do
    [ -x "build/$arch/berth" ] || continue
    if ! grep -qx enabled "/proc/sys/fs/binfmt_misc/${cross_binfmt[$arch]}" 2>/dev/null; then
        echo "FAIL - $arch: build/$arch/berth exists but binfmt has no ${cross_binfmt[$arch]} (scripts/deps.sh test $arch)"
        fail=$((fail + 1))
        continue
    fi
    for s in ${cross_scripts[$arch]}; do
        t=tests/integration/$s.sh
        [ -f "$t" ] || t=tests/cross/$s.sh # the checks only a cross lane runs
        [ -f "$t" ] || continue
        [ -n "${TESTS:-}" ] && ! echo "$t ($arch)" | grep -qE "$TESTS" && continue
        extra=
        # deb.sh installs that architecture's package (make test builds it and its root)
        [ "$s" = deb ] && extra=" DEB=build/berth_$(sed -n 's/^#define BERTH_VERSION "\(.*\)"/\1/p' src/serve.h)_$arch.deb"
        jobs+=("$t ($arch)|BERTH=build/$arch/berth ASAN_OPTIONS=detect_leaks=0$extra|$t")
    done
done
# ---- end of the other architectures

max=${TEST_JOBS:-$(nproc)}
declare -A job_of
running=0
finish_one() { # waits for one job, prints its log, tallies it
    local pid k
    wait -n -p pid
    running=$((running - 1))
    k=${job_of[$pid]}
    IFS='|' read -r name _ <<<"${jobs[$k]}"
    echo "== $name"
    cat "$out/$k.log"
    tally "$out/$k.log" "$name"
}
for k in "${!jobs[@]}"; do
    IFS='|' read -r name envs script <<<"${jobs[$k]}"
    [ "$running" -ge "$max" ] && finish_one
    # shellcheck disable=SC2086
    env $envs timeout 900 bash "$script" >"$out/$k.log" 2>&1 &
    job_of[$!]=$k
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do finish_one; done
echo "$pass passed, $fail failed$([ "$skip" -eq 0 ] || echo ", $skip skipped")"
[ "$fail" -eq 0 ]
