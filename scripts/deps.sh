#!/usr/bin/env bash
# Installs the Debian packages berth needs to build, test and benchmark.
# Runs apt-get only when something is missing, so repeated `make` calls stay fast.
set -euo pipefail
build_pkgs="build-essential pkg-config libmicrohttpd-dev libjansson-dev libsqlite3-dev nettle-dev
  libgnutls28-dev libyaml-dev libcurl4-gnutls-dev libarchive-dev libcrypt-dev libpq-dev libexpat1-dev"
test_pkgs="curl jq openssl skopeo umoci containerd docker-registry python3 python3-yaml sqlite3 apache2-utils
  nginx-light wrk clang libclang-rt-14-dev podman postgresql util-linux-extra python3-prometheus-client docker.io"
# a single-node Ceph RADOS Gateway as the S3 store of tests/rgw.sh, and the AWS CLI to check it
test_pkgs="$test_pkgs ceph-mon ceph-osd radosgw ceph-common awscli"
bench_pkgs=""
case "${1:-build}" in
  build) pkgs="$build_pkgs" ;;
  test) pkgs="$build_pkgs $test_pkgs" ;;
  bench) pkgs="$build_pkgs $test_pkgs $bench_pkgs" ;;
  *) echo "usage: deps.sh build|test|bench" >&2; exit 2 ;;
esac
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $missing
