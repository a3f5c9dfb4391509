#!/usr/bin/env bash
# Prints the DEBIAN/control of berth's package: deb-control.sh ARCH VERSION ROOT (ROOT: the
# installed tree, whose usr/bin/berth dpkg-shlibdeps reads).
#
# dpkg-shlibdeps sees only what the binary links: libc (and on armhf, where nothing is linked
# statically, the libraries themselves). The libraries berth loads with dlopen are declared here
# by their Debian package names, and on amd64/arm64 the source packages of the static archives
# linked in go to Built-Using (Debian policy 7.8), read from the -dev packages of that architecture.
set -euo pipefail
arch=$1 version=$2 root=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debian"
printf 'Source: berth\n\nPackage: berth\nArchitecture: any\n' >"$work/debian/control"
depends=$(cd "$work" && DEB_HOST_ARCH=$arch dpkg-shlibdeps -O "$root/usr/bin/berth" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "deb-control.sh: dpkg-shlibdeps found no dependencies for $root/usr/bin/berth" >&2; exit 1; }
built_using=""
case "$arch" in
amd64 | arm64)
    for p in libmicrohttpd-dev libjansson-dev libsqlite3-dev nettle-dev libyaml-dev libexpat1-dev libcrypt-dev; do
        s=$(dpkg-query -W -f='${source:Package} (= ${source:Version})' "$p:$arch")
        built_using="${built_using:+$built_using, }$s"
    done
    ;;
esac
size=$(du -sk "$root" | cut -f1)
cat <<CONTROL
Package: berth
Version: $version
Architecture: $arch
Maintainer: berth developers <berth@localhost>
Section: net
Priority: optional
Installed-Size: $size
Depends: $depends, passwd
Recommends: libgnutls30, libcurl3-gnutls, libarchive13, libcbor0.8, ca-certificates
Suggests: libpq5
${built_using:+Built-Using: $built_using
}Homepage: https://localhost/berth
Description: small OCI registry, mirror and Helm repository for edge sites
 berth serves the OCI distribution API to docker, podman, containerd, k3s,
 skopeo and helm, mirrors upstream registries for devices that cannot reach
 them, and carries images to air-gapped sites in bundles. It runs as the
 berth system user under a hardened systemd unit; a daily timer runs berth gc.
 .
 Libraries berth loads only when a feature is used (hence Recommends, which
 dpkg-shlibdeps cannot see): libgnutls30 for HTTPS (http.tls) and TLS
 upstreams; libcurl3-gnutls for mirrors, sync and the app/bundle clients;
 libarchive13 for Helm chart uploads; libcbor0.8 for Notary Project COSE
 signatures (trust:); ca-certificates to verify upstreams.
 libpq5 (Suggests) only with database.enabled (PostgreSQL metadata).
CONTROL
