#!/usr/bin/env bash
# Installs the Debian packages berth needs to build, test and benchmark.
# Runs apt-get only when something is missing, so repeated `make` calls stay fast.
set -euo pipefail
build_pkgs="build-essential pkg-config libmicrohttpd-dev libjansson-dev libsqlite3-dev nettle-dev
  libgnutls28-dev libyaml-dev libcurl4-gnutls-dev libarchive-dev libcrypt-dev libpq-dev libexpat1-dev
  libcbor-dev"
test_pkgs="curl jq openssl skopeo umoci containerd docker-registry python3 python3-yaml sqlite3 apache2-utils
  nginx-light wrk clang libclang-rt-14-dev podman postgresql util-linux-extra python3-prometheus-client docker.io"
# the web view's test (tests/integration/ui.sh): a real browser, headless
test_pkgs="$test_pkgs chromium"
# a single-node Ceph RADOS Gateway as the S3 store of tests/rgw.sh, and the AWS CLI to check it
test_pkgs="$test_pkgs ceph-mon ceph-osd radosgw ceph-common awscli"
# the Debian package's test (tests/integration/deb.sh): a throwaway root, and a trace of berth's
# system calls against the unit's filter
test_pkgs="$test_pkgs mmdebstrap arch-test strace"
# the Notary Project COSE envelopes tests/fixtures/notary_sign.py writes
test_pkgs="$test_pkgs python3-cbor2"
# trust (tests/integration/trust.sh, bench/trust_bench.py): cosign-format signatures
test_pkgs="$test_pkgs python3-cryptography"
bench_pkgs=""
case "${1:-build}" in
  build) pkgs="$build_pkgs" ;;
  test) pkgs="$build_pkgs $test_pkgs" ;;
  bench) pkgs="$build_pkgs $test_pkgs $bench_pkgs" ;;
  *) echo "usage: deps.sh build|test|bench [ARCH...]" >&2; exit 2 ;;
esac
# Other architectures (`deps.sh build arm64`, `deps.sh test arm64 armhf`), only when asked for:
# Debian's cross compiler, that architecture's -dev packages (multiarch, beside the host's), the
# libraries berth dlopens (libpq5: its -dev cannot be installed for two architectures at once,
# and berth takes the host's header), and qemu-user with binfmt to run the result here.
cross_libs="libmicrohttpd-dev libjansson-dev libsqlite3-dev nettle-dev libgnutls28-dev libyaml-dev
  libexpat1-dev libcbor-dev libcrypt-dev libcurl4-gnutls-dev libarchive-dev libpq5"
shift || true
add_arch=""
for a in "$@"; do
  case "$a" in
    arm64) cc=gcc-aarch64-linux-gnu ;;
    armhf) cc=gcc-arm-linux-gnueabihf ;;
    amd64) [ "$(dpkg --print-architecture)" = amd64 ] && continue; cc=gcc-x86-64-linux-gnu ;;
    *) echo "deps.sh: unknown architecture $a (arm64, armhf)" >&2; exit 2 ;;
  esac
  [ "$a" = "$(dpkg --print-architecture)" ] && continue
  dpkg --print-foreign-architectures | grep -qx "$a" || add_arch="$add_arch $a"
  pkgs="$pkgs $cc qemu-user-static binfmt-support"
  for l in $cross_libs; do pkgs="$pkgs $l:$a"; done
done
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
for a in $add_arch; do dpkg --add-architecture "$a"; done
apt-get update
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $missing
