#!/usr/bin/env bash
# berth's own OCI image (issue 22, `make image`: build/image, an OCI layout with an amd64 + arm64
# index). podman (vfs storage, in a network namespace with only the loopback) runs this machine's
# image as shipped, non-root, with its own config and a volume for the data; an image is pushed and
# pulled through it; skopeo copies the whole multi-architecture index into it and back, and
# `berth bundle create` carries the index out of it. The image's libraries are checked to be the
# ones berth dlopens, by name, for each architecture.
#
#   IMAGE=build/image   the layout
if [ -z "${IMAGE_NETNS:-}" ]; then
    exec unshare --net --mount env IMAGE_NETNS=1 bash "$0" "$@"
fi
. "$(dirname "$0")/../lib.sh"
ip link set lo up
IMAGE=${IMAGE:-$T_ROOT/build/image}
ver=$(sed -n 's/^#define BERTH_VERSION "\(.*\)"/\1/p' "$T_ROOT/src/serve.h")
arch=$(dpkg --print-architecture)
if [ ! -f "$IMAGE/index.json" ]; then
    t_fail "the image layout $IMAGE exists (make image)"
    t_finish
fi
idx=$(skopeo inspect --raw "oci:$IMAGE:$ver")
t_eq "$ver is an index of amd64 and arm64" "amd64 arm64" \
    "$(jq -r '[.manifests[].platform.architecture] | sort | join(" ")' <<<"$idx")"
for a in amd64 arm64; do
    cfg=$(skopeo inspect --config --raw "oci:$IMAGE:$ver-$a")
    t_eq "$a: runs as berth (999), not root" "999:999" "$(jq -r .config.User <<<"$cfg")"
    t_eq "$a: serve -c /etc/berth/config.yml" "/usr/bin/berth serve -c /etc/berth/config.yml" \
        "$(jq -r '(.config.Entrypoint + .config.Cmd) | join(" ")' <<<"$cfg")"
    t_check "$a: /var/lib/berth is a volume" jq -e '.config.Volumes["/var/lib/berth"]' <<<"$cfg"
    mkdir -p "$T_TMP/u-$a"
    umoci raw unpack --rootless --image "$IMAGE:$ver-$a" "$T_TMP/u-$a" >/dev/null 2>&1
    for lib in libgnutls.so.30 libcurl-gnutls.so.4 libarchive.so.13 libcbor.so.0.8; do
        t_check "$a: $lib, which berth dlopens, is in the image" \
            bash -c "ls '$T_TMP/u-$a'/usr/lib/*-linux-gnu/$lib"
    done
    t_check "$a: CA certificates" test -s "$T_TMP/u-$a/etc/ssl/certs/ca-certificates.crt"
    t_check "$a: a passwd entry for berth" grep -q '^berth:x:999:999:' "$T_TMP/u-$a/etc/passwd"
done

podman_cmd "$T_TMP/podman"
# podman names an image pulled from a layout after its path, which must be lowercase
lay=/tmp/berth-image-layout.$$
rm -rf "$lay" && cp -r "$IMAGE" "$lay"
id=$("${PODMAN[@]}" pull -q "oci:$lay:$ver-$arch" 2>"$T_TMP/pull.err" | tail -1)
rm -rf "$lay"
t_check "podman pulls the $arch image from the layout" test -n "$id"
# limits below the machine's own: podman otherwise asks for more open files and processes than a
# runner without CAP_SYS_RESOURCE may set
"${PODMAN[@]}" run -d --name berth --network host --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 -v berthdata:/var/lib/berth "$id" >"$T_TMP/run.out" 2>&1
U=127.0.0.1:5000
if ! t_wait_http "http://$U/v2/" 150; then
    t_fail "the image starts" "$(tail -3 "$T_TMP/run.out"; "${PODMAN[@]}" logs berth 2>&1 | tail -3)"
    t_finish
fi
t_eq "the container serves /health" 200 "$(curl -s -o /dev/null -w '%{http_code}' "http://$U/health")"
t_eq "... as the berth user" "999" "$("${PODMAN[@]}" top berth huser 2>/dev/null | tail -1 | tr -d ' ')"
python3 "$T_ROOT/tests/fixtures/mkimage.py" image "$T_TMP/img" --layers 2 --seed 23 --tag v1 >/dev/null
want=$(python3 "$T_ROOT/tests/fixtures/mkimage.py" digest "$T_TMP/img" --tag v1)
t_check "push through the container" skopeo copy -q --dest-tls-verify=false "oci:$T_TMP/img:v1" "docker://$U/site/app:v1"
t_check "pull back" skopeo copy -q --src-tls-verify=false "docker://$U/site/app:v1" "oci:$T_TMP/back:v1"
t_check "the same manifest ($want)" test -n "$want" -a "$want" = \
    "$(python3 "$T_ROOT/tests/fixtures/mkimage.py" digest "$T_TMP/back" --tag v1)"
t_check "skopeo copies berth's multi-architecture image into berth" \
    skopeo copy -q --all --dest-tls-verify=false "oci:$IMAGE:$ver" "docker://$U/berth/berth:$ver"
t_eq "berth serves it back as the same index" "$(skopeo inspect --raw "oci:$IMAGE:$ver" | sha256sum)" \
    "$(skopeo inspect --raw --tls-verify=false "docker://$U/berth/berth:$ver" | sha256sum)"
t_check "a bundle carries it" "$T_ROOT/build/berth" bundle create -o "$T_TMP/b.tar" \
    --registry "http://$U" "berth/berth:$ver"
t_check "... with both architectures' manifests" bash -c \
    "tar -tf '$T_TMP/b.tar' | grep -c blobs/sha256/ | awk '{exit !(\$1 >= 7)}'"
t_check "the data is on the volume" bash -c "${PODMAN[*]} volume inspect berthdata >/dev/null"
"${PODMAN[@]}" stop -t 10 berth >/dev/null 2>&1
"${PODMAN[@]}" rm -f berth >/dev/null 2>&1
t_finish
