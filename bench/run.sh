#!/usr/bin/env bash
# Side-by-side benchmark: berth vs docker-registry (registry:2) vs nginx (static files); then
# bench/bundle_bench.py: bundle create/import MB/s beside skopeo (oci-archive); then
# bench/scale_bench.py: push/pull MiB/s through one and three berth replicas over one Ceph RGW
# (S3) + PostgreSQL, beside docker-registry's s3 driver (figures only, no target); then
# bench/fleet_bench.py: 10 and 50 devices pulling one image at once through a 20 MB/s WAN, berth's
# mirror beside docker-registry's proxy (last device's time, WAN bytes / image, errors); then
# bench/trust_bench.py: a warm pull of a signed manifest through an enforcing trust policy vs the
# same pull without policy, as a ratio (target within 1.2x).
#
# Servers are pinned to CPU 0, load generators (curl, wrk) to CPU 1, all on 127.0.0.1 (the scale
# section pins nothing: its replicas, Ceph, PostgreSQL and clients share every CPU).
# Prints a table with ratios berth/peer and a PASS/MISS summary per target, and writes the
# results as JSON to build/bench.json. A last "mirror" section puts an upstream docker-registry
# on CPU 1 and compares berth's pull-through cache (mirrors:) with docker-registry's proxy mode
# (cold layer pull vs a direct pull; warm manifest-by-tag req/s). The work is done by
# bench/bench.py (stdlib only); this wrapper checks the tools and runs it from the repository
# root.
#
# Environment (all optional):
#   BERTH             berth binary (default build/berth)
#   BENCH_BLOB_MIB    push/GET blob size in MiB (default 256)
#   BENCH_GETS        blob GETs per server for the CPU figure (default 16)
#   BENCH_WRK_SECS    wrk duration per server (default 10)
#   BENCH_JSON        where to write the JSON (default build/bench.json)
#   BENCH_WAIT_QUIET  seconds to wait for other CPU load to stop before starting (default 30)
#   BENCH_KEEP=1      keep the temp dir (configs, logs, storage) for inspection
#   BENCH_STRICT=1    exit 1 when any target is a MISS (default: exit 1 only when a
#                     server could not be benchmarked at all)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in curl wrk nginx docker-registry taskset python3 sha256sum; do
    command -v "$tool" >/dev/null || {
        echo "bench: missing $tool (run scripts/deps.sh bench)" >&2
        exit 2
    }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "bench: needs 2 CPUs (servers on CPU 0, load on CPU 1); have $(nproc)" >&2
    exit 2
fi
rc=0; python3 bench/bench.py "$@" || rc=$?; python3 bench/bundle_bench.py || rc=$((rc ? rc : $?))
python3 bench/scale_bench.py || rc=$((rc ? rc : $?))
python3 bench/fleet_bench.py || rc=$((rc ? rc : $?))
python3 bench/trust_bench.py || rc=$((rc ? rc : $?)); exit "$rc"
