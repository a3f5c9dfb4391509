#!/usr/bin/env bash
# Builds berth's own OCI image as an OCI layout (issue 22): image.sh LAYOUT VERSION ARCH...
#
# One image per architecture, from the package tree `make deb ARCH=...` installed into
# build/deb/<arch>/root (the stripped binary, config.yml), then an image index over them tagged
# VERSION (each image is also tagged VERSION-ARCH). The libraries are collected explicitly, not
# from ldd (which, the binary linking only libc, lists only libc): the files of the Debian
# packages berth needs at run time and dlopens (libc6, libgnutls30, libcurl3-gnutls, libarchive13,
# libcbor0.8) and their dependency closure, read from dpkg for that architecture. Beside them: the CA
# certificates, a passwd/group with the berth user (uid 999), /var/lib/berth as a volume, /tmp.
# The image runs as berth, `serve -c /etc/berth/config.yml`, port 5000.
#
# libarchive13 (Helm chart uploads, margo compose and bundle extraction, through src/util/tar.c)
# depends on libxml2, which depends on ICU (libicu72, some 35 MB of the image): Debian builds no
# smaller libarchive, and berth's tar.c reads gzip tars through it, so it stays; a libarchive
# built without xar support (no libxml2) would take the image from about 60 MB to about 25 MB.
set -euo pipefail
layout=$1 version=$2
shift 2
[ $# -gt 0 ] || { echo "usage: image.sh LAYOUT VERSION ARCH..." >&2; exit 2; }
root_pkgs="libc6 libgnutls30 libcurl3-gnutls libarchive13 libcbor0.8"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# closure ARCH PKG...: the packages PKG... depend on (Depends and Pre-Depends), themselves included
closure() {
    local arch=$1
    shift
    local -A seen=()
    local queue=("$@") p deps d
    while [ ${#queue[@]} -gt 0 ]; do
        p=${queue[0]}
        queue=("${queue[@]:1}")
        [ -n "${seen[$p]:-}" ] && continue
        seen[$p]=1
        deps=$(dpkg-query -W -f='${Pre-Depends}, ${Depends}' "$p:$arch" 2>/dev/null ||
            dpkg-query -W -f='${Pre-Depends}, ${Depends}' "$p")
        for d in $(echo "$deps" | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/:any//; s/ //g' | grep -v '^$'); do
            # Essential tools and the debconf/perl world are not libraries berth loads
            case $d in debconf | perl* | dpkg | install-info | libc-bin | gcc-*-base) continue ;; esac
            queue+=("$d")
        done
    done
    printf '%s\n' "${!seen[@]}" | sort
}

rm -rf "$layout"
umoci init --layout "$layout"
for arch in "$@"; do
    tree=build/deb/$arch/root
    [ -x "$tree/usr/bin/berth" ] || { echo "image.sh: $tree/usr/bin/berth missing (make deb ARCH=$arch)" >&2; exit 1; }
    r=$work/$arch
    mkdir -p "$r/usr/bin" "$r/etc/berth" "$r/etc/ssl/certs" "$r/var/lib/berth" "$r/tmp"
    cp "$tree/usr/bin/berth" "$r/usr/bin/berth"
    cp "$tree/etc/berth/config.yml" "$r/etc/berth/config.yml"
    cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
    printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nberth:x:999:999:berth:/var/lib/berth:/usr/sbin/nologin\n' >"$r/etc/passwd"
    printf 'root:x:0:\nberth:x:999:\n' >"$r/etc/group"
    chown 999:999 "$r/var/lib/berth"
    chmod 0750 "$r/var/lib/berth"
    chmod 1777 "$r/tmp"
    for p in $(closure "$arch" $root_pkgs); do
        # shared objects and the dynamic loader only (no docs, no locales, no tools)
        dpkg-query -L "$p:$arch" 2>/dev/null | while read -r f; do
            case $f in
            /lib/ld-linux* | /lib64/ld-linux* | /usr/lib/ld-linux* | */lib/*.so* | */lib/*-linux-gnu*/*.so*)
                [ -e "$f" ] || [ -L "$f" ] || continue
                [ -d "$f" ] && continue
                mkdir -p "$r$(dirname "$f")"
                cp -a "$f" "$r$f"
                ;;
            esac
        done
    done
    # merged /usr: the loader's path in the binary is /lib/...
    [ -e "$r/lib" ] || ln -s usr/lib "$r/lib"
    # an OCI image has no ldconfig cache; the multiarch directories are searched by the loader's
    # built-in path, so each library is found by the name berth dlopens
    tag=$version-$arch
    umoci new --image "$layout:$tag"
    umoci insert --image "$layout:$tag" "$r" /
    umoci config --image "$layout:$tag" --architecture="$arch" --os=linux \
        --config.user=999:999 --config.workingdir=/var/lib/berth \
        --config.entrypoint=/usr/bin/berth --config.cmd=serve --config.cmd=-c --config.cmd=/etc/berth/config.yml \
        --config.volume=/var/lib/berth --config.exposedports=5000/tcp \
        --config.env=PATH=/usr/bin --config.label=org.opencontainers.image.title=berth \
        --config.label=org.opencontainers.image.version="$version"
    # umoci config writes a new manifest: keep the tag, drop umoci's history of the edit
    umoci gc --layout "$layout"
done
# the index over the per-architecture manifests, tagged VERSION
python3 - "$layout" "$version" "$@" <<'PY'
import hashlib, json, os, sys
layout, version, arches = sys.argv[1], sys.argv[2], sys.argv[3:]
idx = json.load(open(os.path.join(layout, "index.json")))
by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in idx["manifests"]}
arm = {"arm64": ("arm64", "v8"), "armhf": ("arm", "v7")}
entries = []
for a in arches:
    m = dict(by_tag[f"{version}-{a}"])
    m.pop("annotations", None)
    arch, variant = arm.get(a, (a, None))
    m["platform"] = {"architecture": arch, "os": "linux", **({"variant": variant} if variant else {})}
    entries.append(m)
body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "manifests": entries}, separators=(",", ":")).encode()
d = hashlib.sha256(body).hexdigest()
open(os.path.join(layout, "blobs", "sha256", d), "wb").write(body)
idx["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json",
                         "digest": "sha256:" + d, "size": len(body),
                         "annotations": {"org.opencontainers.image.ref.name": version}})
json.dump(idx, open(os.path.join(layout, "index.json"), "w"))
print(f"{layout}:{version} sha256:{d}")
PY
