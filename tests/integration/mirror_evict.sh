#!/usr/bin/env bash
# Mirror space limit: least recently used mirrored images are evicted first; a blob that local
# (pushed) content shares is kept; pinned repositories are never evicted; evicted content is
# fetched again on demand.
. "$(dirname "$0")/../lib.sh"

registry_start "$T_TMP/up"
for i in 1 2 3; do
    python3 "$T_ROOT/tests/fixtures/mkimage.py" image "$T_TMP/l$i" --layers 1 --seed 4$i --tag v1 >/dev/null
    skopeo copy -q --dest-tls-verify=false "oci:$T_TMP/l$i:v1" "docker://127.0.0.1:$REG_PORT/org/img$i:v1"
done
mkdir -p "$T_TMP/b"
# each image is ~33 KiB: the limit holds two of them
cat >"$T_TMP/b/config.yml" <<YML
version: 0.1
log: {level: info}
mirrors:
  ghcr.io:
    urls: [$REG_URL]
cache:
  maxsize: 70k
  pin: ["ghcr.io/org/img4*"]
YML
berth_start "$T_TMP/b"
pull() { skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$BERTH_PORT/ghcr.io/org/$1:v1" "oci:$T_TMP/o-$1-$RANDOM:v1"; }
dig() { curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/ghcr.io/org/$1/manifests/v1"; }
t_check "pull img1 through the mirror" pull img1
t_check "pull img2 through the mirror" pull img2
sleep 1.2
t_eq "img1 used again (newer than img2)" 200 "$(dig img1)"
sleep 1.2 # access times are flushed once a second
t_check "pull img3 (now over the limit)" pull img3
ok=0
for _ in $(seq 1 150); do grep -q 'evicted mirrored manifest' "$T_TMP/b/berth.log" && ok=1 && break; sleep 0.1; done
t_eq "eviction ran" 1 "$ok"
sleep 0.5
evicted=$(grep 'evicted mirrored manifest' "$T_TMP/b/berth.log" | grep -o 'repo=[^ ]*' | sort -u | tr '\n' ' ')
t_eq "the least recently used image (img2) was evicted, and only it" "repo=ghcr.io/org/img2 " "$evicted"
sqlite3 "$T_TMP/b/data/metadata.db" "select repo from manifests" >"$T_TMP/repos"
t_check "img1 (recently used) kept" grep -qx 'ghcr.io/org/img1' "$T_TMP/repos"
t_check "img3 (newest) kept" grep -qx 'ghcr.io/org/img3' "$T_TMP/repos"
cfg=$T_TMP/b/fsck.yml
printf 'storage:\n  filesystem:\n    rootdirectory: %s\n' "$T_TMP/b/data" >"$cfg"
t_check "fsck clean after eviction" "$BERTH" fsck -c "$cfg"
# evicted content comes back from upstream on demand
t_check "evicted img2 pulls again through the mirror" pull img2
berth_stop

# pins: with a limit of 1 byte, only pinned repositories keep their images
cat >"$T_TMP/p.yml" <<YML
version: 0.1
log: {level: info}
mirrors:
  ghcr.io:
    urls: [$REG_URL]
cache:
  maxsize: 1
  pin: ["ghcr.io/org/img3"]
YML
mkdir -p "$T_TMP/p" && cp "$T_TMP/p.yml" "$T_TMP/p/config.yml"
berth_start "$T_TMP/p"
t_check "pin: pull img1" pull img1
# local content sharing img1's blobs: pushed from the mirror into a plain repository
t_check "push a local copy of img1" skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
    "docker://127.0.0.1:$BERTH_PORT/ghcr.io/org/img1:v1" "docker://127.0.0.1:$BERTH_PORT/local/copy:v1"
t_check "pin: pull img2" pull img2
t_check "pin: pull img3" pull img3
ok=0
for _ in $(seq 1 150); do grep -q 'mirror space over its limit' "$T_TMP/p/berth.log" && ok=1 && break; sleep 0.1; done
t_eq "pin: eviction ran" 1 "$ok"
sqlite3 "$T_TMP/p/data/metadata.db" "select repo from manifests" >"$T_TMP/prepos"
t_eq "pin: only the pinned image and local content are left" "ghcr.io/org/img3 local/copy" "$(sort "$T_TMP/prepos" | tr '\n' ' ' | sed 's/ $//')"
# the local copy still pulls whole: its blobs, shared with the evicted img1, were kept
t_check "local content sharing evicted blobs still pulls" skopeo copy -q --src-tls-verify=false \
    "docker://127.0.0.1:$BERTH_PORT/local/copy:v1" "oci:$T_TMP/local-out:v1"
printf 'storage:\n  filesystem:\n    rootdirectory: %s\n' "$T_TMP/p/data" >"$T_TMP/p/fsck.yml"
t_check "pin: fsck clean after eviction" "$BERTH" fsck -c "$T_TMP/p/fsck.yml"
t_check "clean shutdown" berth_stop
t_finish
