#!/usr/bin/env bash
# Disk full: berth's storage root is a 64 MiB tmpfs. Three images are pushed with skopeo, then
# the filesystem is filled by blob pushes (monolithic PUT, streamed PATCH, POST ?digest=, chunked
# PATCH) until one fails; while it is full every upload style, manifest PUTs (until SQLite itself
# runs out of room) and a skopeo push must fail with a clean error (an OCI error JSON with a 5xx,
# 507 or 403 DENIED status); berth stays up, every image pushed before still pulls byte for
# byte (skopeo to an OCI layout, and curl + sha256), every manifest acknowledged while the disk
# was full is really there, `berth fsck` is clean (while full, after a stop, after a restart);
# after space is freed (a ballast file removed) a push works again.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"

PY=$(python3 -c 'import sys; print(sys.executable)') # skip a pyenv shim's start-up cost
MKIMAGE="$PY $T_ROOT/tests/fixtures/mkimage.py"
SK=(timeout 120 skopeo --insecure-policy)
D=$T_TMP/df
MNT=$D/data # berth_start puts the storage root at DIR/data
mkdir -p "$MNT"

df_cleanup() {
    local p
    for p in "${T_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${T_PIDS[@]}"; do wait "$p" 2>/dev/null; done
    T_PIDS=()
    if mountpoint -q "$MNT"; then umount "$MNT" 2>/dev/null || umount -l "$MNT"; fi
    t_cleanup
}
trap df_cleanup EXIT
trap 'exit 143' TERM INT # the EXIT trap still unmounts

if ! mount -t tmpfs -o size=64m,mode=0755 tmpfs "$MNT"; then
    t_fail "mount a 64 MiB tmpfs (needs root)"
    t_finish
fi
cat >"$D/config.yml" <<YML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $MNT
health:
  storagedriver:
    enabled: true
    interval: 1s
    threshold: 1
YML
if ! berth_start "$D"; then
    t_fail "berth starts on the tmpfs" "$(tail -5 "$D/berth.log")"
    t_finish
fi
HP=${BERTH_URL#http://}
avail_kb() { df -k --output=avail "$MNT" | tail -1 | tr -d ' '; }
fsck_out() { "$BERTH" fsck -c "$D/config.yml" >"$T_TMP/fsck.$1" 2>&1; }

# clean_error CODE BODYFILE: an OCI error JSON with a 5xx, or 403 DENIED.
clean_error() {
    local c
    c=$(jq -r '.errors[0].code // empty' "$2" 2>/dev/null)
    [ -n "$c" ] || return 1
    case $1 in
    5[0-9][0-9]) return 0 ;;
    403) [ "$c" = DENIED ] ;;
    *) return 1 ;;
    esac
}
# names_cause BODYFILE: the error message says the storage is full.
names_cause() { jq -r '.errors[0].message' "$1" 2>/dev/null | grep -qiE 'storage full|no space|disk full|insufficient storage|quota'; }
# describe CODE BODYFILE: one line for the report.
describe() { echo "HTTP $1 $(tr -d '\n' <"$2" | cut -c1-200)"; }

# push_blob REPO FILE MODE: like pl_push_blob, but the failing step's status goes to PB_CODE and
# its body to $T_TMP/pb.body, the session URL (when one was opened) to PB_LOC; 0 only on 201.
# MODE: put, patch, post, chunked.
push_blob() {
    local repo=$1 f=$2 mode=$3 h=$T_TMP/pb.h d loc
    local C=(curl -s --max-time 60 -D "$h" -o "$T_TMP/pb.body" -w '%{http_code}')
    d=sha256:$(t_sha256 "$f")
    : >"$T_TMP/pb.body"
    if [ "$mode" = post ]; then
        PB_CODE=$("${C[@]}" -X POST -H 'Content-Type: application/octet-stream' --data-binary @"$f" \
            "$BERTH_URL/v2/$repo/blobs/uploads/?digest=$d")
        [ "$PB_CODE" = 201 ]
        return
    fi
    PB_LOC=""
    PB_CODE=$("${C[@]}" -X POST "$BERTH_URL/v2/$repo/blobs/uploads/")
    [ "$PB_CODE" = 202 ] || return 1
    loc=$(pl_loc "$h" "$BERTH_URL") || return 1
    PB_LOC=$loc
    case $mode in
    patch | chunked)
        local te=()
        [ "$mode" = chunked ] && te=(-H 'Transfer-Encoding: chunked')
        PB_CODE=$("${C[@]}" -X PATCH -H 'Content-Type: application/octet-stream' "${te[@]}" \
            --data-binary @"$f" "$loc")
        [ "$PB_CODE" = 202 ] || return 1
        loc=$(pl_loc "$h" "$BERTH_URL") || return 1
        PB_CODE=$("${C[@]}" -X PUT -H 'Content-Length: 0' "$loc$(pl_sep "$loc")digest=$d")
        ;;
    put)
        PB_CODE=$("${C[@]}" -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$f" \
            "$loc$(pl_sep "$loc")digest=$d")
        ;;
    esac
    [ "$PB_CODE" = 201 ]
}

# verify_image NAME SRC_LAYOUT TAG DIGEST: skopeo pulls berth's NAME:TAG into a fresh OCI
# layout; its manifest digest is DIGEST and every blob is byte-identical to SRC_LAYOUT's; then
# curl + sha256 of the manifest and every blob (pl_verify).
verify_image() {
    local name=$1 src=$2 tag=$3 want=$4 out=$T_TMP/pull.$RANDOM got d
    "${SK[@]}" copy -q --preserve-digests --src-tls-verify=false "docker://$HP/$name:$tag" "oci:$out:$tag" ||
        { echo "skopeo copy from berth failed"; return 1; }
    got=$($MKIMAGE digest "$out" --tag "$tag")
    [ "$got" = "$want" ] || { echo "pulled manifest $got, pushed $want"; return 1; }
    for d in $(pl_blob_digests "$src" "$want"); do
        cmp -s "$src/blobs/sha256/${d#sha256:}" "$out/blobs/sha256/${d#sha256:}" ||
            { echo "blob $d differs from what was pushed"; return 1; }
    done
    rm -rf "$out"
    pl_verify "$BERTH_URL" "$name" "$tag" "$want"
}

# --- earlier images: pushed while there is room ---
NAMES=()
DIGS=()
for i in 1 2 3; do
    $MKIMAGE image "$T_TMP/src$i" --layers 2 --size 1500000 --seed "$((40 + i))" --tag v1 >/dev/null
    t_check "before: skopeo pushes image $i" "${SK[@]}" copy -q --dest-tls-verify=false \
        "oci:$T_TMP/src$i:v1" "docker://$HP/full/img$i:v1"
    NAMES+=("full/img$i")
    DIGS+=("$($MKIMAGE digest "$T_TMP/src$i" --tag v1)")
done
echo "# after 3 images: $(avail_kb) kB free on the tmpfs"
# a ballast file to free later, on the same filesystem
head -c $((8 << 20)) /dev/urandom >"$MNT/ballast"

# --- fill the filesystem with blob pushes until one fails ---
modes=(put patch post chunked)
ok=0
failed=""
for i in $(seq 1 30); do
    head -c $((3 << 20)) /dev/urandom >"$T_TMP/fill.bin"
    m=${modes[$((i % 4))]}
    if push_blob full/fill "$T_TMP/fill.bin" "$m"; then
        ok=$((ok + 1))
    else
        failed="$m"
        cp "$T_TMP/pb.body" "$T_TMP/fill.body"
        FILL_CODE=$PB_CODE
        break
    fi
done
echo "# fill: $ok blobs of 3 MiB accepted, then $failed failed: $(describe "${FILL_CODE:-none}" "$T_TMP/fill.body" 2>/dev/null); $(avail_kb) kB free"
t_check "fill: blob pushes were accepted until the disk filled (ok=$ok)" test "$ok" -ge 3
t_check "fill: a push finally failed (the disk is full)" test -n "$failed"
t_check "fill: the push that hit the full disk ($failed) got a clean error ($(describe "${FILL_CODE:-none}" "$T_TMP/fill.body"))" \
    clean_error "${FILL_CODE:-none}" "$T_TMP/fill.body"
t_check "fill: the error message names the cause" names_cause "$T_TMP/fill.body"
t_eq "fill: berth still answers /v2/" 200 "$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/")"
# A refused upload gives its bytes back (the session rolls back to where the request began), so
# the filesystem has room again; take what is left so the next steps start from a full disk.
sleep 0.5
echo "# fill: $(avail_kb) kB free once the refused upload rolled back"
dd if=/dev/zero of="$MNT/filler" bs=4k 2>/dev/null
echo "# fill: $(avail_kb) kB free after the filler"

# --- every upload style while the disk is full ---
head -c 1000000 /dev/urandom >"$T_TMP/one.bin"
for m in put patch post chunked; do
    if push_blob full/more "$T_TMP/one.bin" "$m"; then
        t_fail "full: a 1 MB $m upload is refused" "answered 201 with $(avail_kb) kB free"
    else
        t_check "full: a 1 MB $m upload fails cleanly ($(describe "$PB_CODE" "$T_TMP/pb.body"))" \
            clean_error "$PB_CODE" "$T_TMP/pb.body"
        t_check "full: the $m upload's error message names the cause" names_cause "$T_TMP/pb.body"
    fi
done
t_eq "full: nothing of the refused 1 MB blob is served" 404 \
    "$(curl -s -o /dev/null -w '%{http_code}' -I "$BERTH_URL/v2/full/more/blobs/sha256:$(t_sha256 "$T_TMP/one.bin")")"

# --- manifest PUTs while full: new tags on image 1 (16 KiB annotation each), until SQLite fails ---
cfgd=$(jq -r .config.digest "$T_TMP/src1/blobs/sha256/${DIGS[0]#sha256:}")
pad=$(head -c 12288 /dev/urandom | base64 -w0)
macked=0
mfail=""
: >"$T_TMP/macked"
for i in $(seq 1 150); do
    jq -c --arg p "$pad" --arg n "$i" '.annotations = {"berth.test.pad": $p, "berth.test.n": $n}' \
        "$T_TMP/src1/blobs/sha256/${DIGS[0]#sha256:}" >"$T_TMP/m.json"
    code=$(curl -s -m 60 -o "$T_TMP/m.body" -w '%{http_code}' -X PUT -H "Content-Type: $MT_OCI_MANIFEST" \
        --data-binary @"$T_TMP/m.json" "$BERTH_URL/v2/full/img1/manifests/m$i")
    if [ "$code" = 201 ]; then
        macked=$((macked + 1))
        echo "full/img1 m$i sha256:$(t_sha256 "$T_TMP/m.json")" >>"$T_TMP/macked"
    else
        mfail=$code
        break
    fi
done
echo "# manifests while full: $macked acknowledged, then ${mfail:-none failed}: $(describe "${mfail:-none}" "$T_TMP/m.body")"
t_check "full: manifest PUTs stop being accepted once SQLite has no room ($macked accepted)" test -n "$mfail"
if [ -n "$mfail" ]; then
    t_check "full: the refused manifest PUT is a clean error ($(describe "$mfail" "$T_TMP/m.body"))" \
        clean_error "$mfail" "$T_TMP/m.body"
    t_check "full: the refused manifest PUT's error message names the cause" names_cause "$T_TMP/m.body"
fi
# squeeze: free 8 KiB at a time (truncating the ballast) and after each step push a 100-byte
# blob and a small manifest; near the boundary the data fits but the metadata may not. Each push
# is either refused cleanly (and then not served) or acknowledged (and then served intact). A
# refused upload's session is cancelled (DELETE), as a client giving up would, so that it does
# not keep the space just freed.
squeeze_modes=(put patch chunked)
sq_bad=""
: >"$T_TMP/sq.unclear"
sq_blobs=0
sq_mans=0
for i in $(seq 1 24); do
    truncate -s -8192 "$MNT/ballast"
    head -c 100 /dev/urandom >"$T_TMP/tiny.bin"
    td=sha256:$(t_sha256 "$T_TMP/tiny.bin")
    if push_blob full/tiny "$T_TMP/tiny.bin" "${squeeze_modes[$((i % 3))]}"; then
        if pl_get_blob "$BERTH_URL" full/tiny "$td" "$T_TMP/tiny.out" >/dev/null; then
            sq_blobs=$((sq_blobs + 1))
        else
            sq_bad=${sq_bad:-"step $i: tiny blob acknowledged but not served intact"}
        fi
    elif ! clean_error "$PB_CODE" "$T_TMP/pb.body"; then
        sq_bad=${sq_bad:-"step $i: tiny blob: $(describe "$PB_CODE" "$T_TMP/pb.body")"}
    else
        echo "# squeeze step $i: blob refused: $(describe "$PB_CODE" "$T_TMP/pb.body")"
        names_cause "$T_TMP/pb.body" || jq -r '.errors[0].message' "$T_TMP/pb.body" >>"$T_TMP/sq.unclear"
        [ -n "$PB_LOC" ] && curl -s -o /dev/null -X DELETE "$PB_LOC"
        c=$(curl -s -o /dev/null -w '%{http_code}' -I "$BERTH_URL/v2/full/tiny/blobs/$td")
        [ "$c" = 404 ] || sq_bad=${sq_bad:-"step $i: refused tiny blob answers HEAD $c"}
    fi
    jq -c --arg n "$i" '.annotations = {"berth.test.squeeze": $n}' \
        "$T_TMP/src1/blobs/sha256/${DIGS[0]#sha256:}" >"$T_TMP/m.json"
    code=$(curl -s -m 60 -o "$T_TMP/m.body" -w '%{http_code}' -X PUT -H "Content-Type: $MT_OCI_MANIFEST" \
        --data-binary @"$T_TMP/m.json" "$BERTH_URL/v2/full/img1/manifests/s$i")
    if [ "$code" = 201 ]; then
        sq_mans=$((sq_mans + 1))
        echo "full/img1 s$i sha256:$(t_sha256 "$T_TMP/m.json")" >>"$T_TMP/macked"
    elif ! clean_error "$code" "$T_TMP/m.body"; then
        sq_bad=${sq_bad:-"step $i: manifest: $(describe "$code" "$T_TMP/m.body")"}
    else
        echo "# squeeze step $i: manifest refused: $(describe "$code" "$T_TMP/m.body")"
        names_cause "$T_TMP/m.body" || jq -r '.errors[0].message' "$T_TMP/m.body" >>"$T_TMP/sq.unclear"
        c=$(curl -s -o /dev/null -w '%{http_code}' -H "$PL_ACCEPT" "$BERTH_URL/v2/full/img1/manifests/s$i")
        [ "$c" = 404 ] || sq_bad=${sq_bad:-"step $i: refused manifest s$i answers GET $c"}
    fi
done
macked=$(wc -l <"$T_TMP/macked")
echo "# squeeze: $sq_blobs tiny blobs and $sq_mans manifests acknowledged over 24 steps of 8 KiB; $(avail_kb) kB free"
t_eq "squeeze: every push near the boundary refused cleanly (and not served) or acknowledged and intact" "" "$sq_bad"
t_eq "squeeze: every refusal's message names the cause (storage full)" "" \
    "$(sort "$T_TMP/sq.unclear" 2>/dev/null | uniq -c | sed 's/^ *//' | paste -sd ';')"
$MKIMAGE image "$T_TMP/src4" --layers 1 --size 500000 --seed 50 --tag v1 >/dev/null
t_check "full: skopeo push of a new image fails" bash -c "! ${SK[*]} copy -q --dest-tls-verify=false \
    oci:$T_TMP/src4:v1 docker://$HP/full/img4:v1"
t_check "full: berth is still running" kill -0 "$BERTH_PID"
t_eq "full: berth still answers /v2/" 200 "$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/")"
echo "# full: /health answers $(curl -s -m 10 -o /dev/null -w '%{http_code}' "$BERTH_URL/health"), $(avail_kb) kB free"

# --- what was stored before is intact, while the disk is still full ---
for i in 0 1 2; do
    t_check "full: ${NAMES[$i]}:v1 (pushed before) pulls byte for byte" \
        verify_image "${NAMES[$i]}" "$T_TMP/src$((i + 1))" v1 "${DIGS[$i]}"
done
# every manifest acknowledged with 201 while the disk was full really is there
macked_ok=0
while read -r repo tag dg; do
    pl_verify "$BERTH_URL" "$repo" "$tag" "$dg" >/dev/null && macked_ok=$((macked_ok + 1))
done <"$T_TMP/macked"
t_eq "full: every manifest acknowledged while full resolves to its digest" "$macked" "$macked_ok"
fsck_out full
t_check "full: berth fsck is clean while the disk is full ($(tail -1 "$T_TMP/fsck.full"))" \
    bash -c "! grep -q '^problem' '$T_TMP/fsck.full' && grep -q '0 problems' '$T_TMP/fsck.full'"
grep -v '^checked' "$T_TMP/fsck.full" | head -5 | sed 's/^/# fsck (full): /'

# --- free space: a push works again ---
rm -f "$MNT/ballast" "$MNT/filler"
echo "# after removing the ballast: $(avail_kb) kB free"
t_check "freed: skopeo pushes a new image" "${SK[@]}" copy -q --dest-tls-verify=false \
    "oci:$T_TMP/src4:v1" "docker://$HP/full/img4:v1"
t_check "freed: the new image pulls byte for byte" \
    verify_image full/img4 "$T_TMP/src4" v1 "$($MKIMAGE digest "$T_TMP/src4" --tag v1)"
t_check "freed: a blob push works again (monolithic PUT)" push_blob full/more "$T_TMP/one.bin" put
t_check "freed: a blob push works again (chunked PATCH)" push_blob full/more2 "$T_TMP/one.bin" chunked
# every pooled metadata connection works again: 24 small manifest PUTs, 4 at a time
for i in $(seq 1 24); do
    jq -c --arg n "$i" '.annotations = {"berth.test.after": $n}' \
        "$T_TMP/src1/blobs/sha256/${DIGS[0]#sha256:}" >"$T_TMP/a$i.json"
done
for i in $(seq 1 24); do
    curl -s -m 60 -o /dev/null -w '%{http_code}\n' -X PUT -H "Content-Type: $MT_OCI_MANIFEST" \
        --data-binary @"$T_TMP/a$i.json" "$BERTH_URL/v2/full/img1/manifests/a$i" >"$T_TMP/a$i.code" &
    [ $((i % 4)) = 0 ] && wait "$!"
done
sleep 0.5
t_eq "freed: 24 manifest PUTs after the full disk all answered 201" 24 "$(cat "$T_TMP"/a*.code | grep -c '^201$')"
h=0
for _ in $(seq 1 30); do
    [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$BERTH_URL/health")" = 200 ] && h=1 && break
    sleep 0.2
done
t_eq "freed: /health answers 200 again" 1 "$h"

# --- stop, fsck, restart on the same (nearly full) filesystem ---
t_check "berth exits 0 on SIGTERM" berth_stop
fsck_out stopped
t_check "berth fsck is clean after the stop ($(tail -1 "$T_TMP/fsck.stopped"))" \
    bash -c "! grep -q '^problem' '$T_TMP/fsck.stopped' && grep -q '0 problems' '$T_TMP/fsck.stopped'"
grep -v '^checked' "$T_TMP/fsck.stopped" | head -5 | sed 's/^/# fsck (stopped): /'
if berth_start "$D"; then
    HP=${BERTH_URL#http://}
    for i in 0 1 2; do
        t_check "restart: ${NAMES[$i]}:v1 pulls byte for byte" \
            verify_image "${NAMES[$i]}" "$T_TMP/src$((i + 1))" v1 "${DIGS[$i]}"
    done
    t_check "restart: full/img4:v1 (pushed after freeing space) pulls byte for byte" \
        verify_image full/img4 "$T_TMP/src4" v1 "$($MKIMAGE digest "$T_TMP/src4" --tag v1)"
    t_check "berth exits 0 on SIGTERM after the restart" berth_stop
else
    t_fail "berth restarts on the nearly full filesystem" "$(tail -5 "$D/berth.log")"
fi
# the distinct errors berth logged, for the record
grep -E 'level=(error|warn)' "$D/berth.log" | grep -v 'msg=request ' | sed -e 's/^time=[^ ]* //' \
    -e 's/[0-9a-f]\{8\}-[0-9a-f-]\{27\}/<uuid>/g' -e "s|$T_TMP|<tmp>|g" | sort | uniq -c | sort -rn | sed 's/^/# log: /'
t_finish
