#!/usr/bin/env bash
# Online garbage collection. Pushes images (skopeo) and hand-made manifests (curl), deletes a
# manifest by digest, deletes a tag, overwrites a tag, uploads unreferenced blobs; then
#   - `berth gc --dry-run --grace 0s` lists the candidates and removes nothing,
#   - `berth gc` with the default grace (1h) removes nothing (everything is young),
#   - `berth gc --grace 0s` (three runs) while pushers and pullers keep working,
# and checks that everything referenced is intact, everything unreferenced is 404 and gone from
# disk, every concurrent push acknowledged with 201 is intact, a fresh unreferenced blob survives a
# default-grace gc, and `berth fsck` is clean.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"

MK="python3 $T_ROOT/tests/fixtures/mkimage.py"
OCIPUSH="python3 $T_ROOT/tests/fixtures/ocipush.py"
SK=(skopeo --insecure-policy)
W=$T_TMP/work
mkdir -p "$W"
D=$T_TMP/berth
DATA=$D/data
mkdir -p "$DATA"
cat >"$D/config.yml" <<YML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $DATA
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YML
GC=("$BERTH" gc -c "$D/config.yml")

if ! berth_start "$D"; then
    t_fail "berth starts"
    t_finish
fi
U=$BERTH_URL
B=127.0.0.1:$BERTH_PORT

# vres FILE: "N failures" from an ocipush.py verify output, plus its first failure.
vres() {
    local r f
    r=$(tail -1 "$1" | grep -o '[0-9]* failures')
    f=$(grep -m1 FAILED "$1")
    echo "${r:-no result: $(tail -c 200 "$1")}${f:+ first: $f}"
}
# push_layout LAYOUT TAG REPO:TAG [skopeo copy args]: skopeo copy oci -> berth.
push_layout() {
    local lay=$1 tag=$2 dst=$3
    shift 3
    "${SK[@]}" copy -q "$@" --dest-tls-verify=false "oci:$lay:$tag" "docker://$B/$dst" >>"$W/skopeo.log" 2>&1
}
# blobs_of LAYOUT DIGEST: config and layer digests of a manifest in a layout.
blobs_of() { jq -r '.config.digest, .layers[].digest' "$1/blobs/sha256/${2#sha256:}"; }
# on_disk DIGEST: 0 when a file or directory named by the digest's hex exists under the data dir.
on_disk() { [ -n "$(find "$DATA" -name "*${1#sha256:}*" -print -quit)" ]; }
# over S3 (tests/integration/s3_api.sh runs this suite through rgw_berth_wrapper, which keeps
# each storage directory's blobs under its own key prefix): the blob's object, or its trashed copy
if [ -n "${T_S3_PREFIXED:-}" ]; then
    S3P=r-$(printf '%s' "$(realpath -m "$DATA")" | md5sum | cut -c1-16)
    s3_has() {
        [ "$(curl -s -o /dev/null -w '%{http_code}' -I --aws-sigv4 "aws:amz:$RGW_REGION:s3" \
            --user "$RGW_ACCESS_KEY:$RGW_SECRET_KEY" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
            "$RGW_URL/$RGW_BUCKET/$S3P/$1")" = 200 ]
    }
    on_disk() {
        local h=${1#sha256:}
        s3_has "blobs/sha256/${h:0:2}/$h" || s3_has "trash/sha256-$h"
    }
fi
# http_code URL [curl args]
http_code() {
    local u=$1
    shift
    curl -s -o /dev/null -w '%{http_code}' "$@" "$u"
}

# ---- content ------------------------------------------------------------------------------
# kept: an image, a multi-arch index (untagged children), a tagged artifact whose subject is K1
D_K1=$($MK image "$W/k1" --layers 2 --seed 31 --tag v1)
D_K2=$($MK index "$W/k2" --arches amd64,arm64 --seed 32 --tag v1)
D_ART=$($MK artifact "$W/art" --subject-of "$W/k1" --subject-tag v1 --seed 33 --tag sig)
ok=0
push_layout "$W/k1" v1 test/keep:v1 && push_layout "$W/k2" v1 test/keepidx:v1 --all &&
    push_layout "$W/art" sig test/keep:sig && ok=1
# removed: a manifest deleted by digest, a tag overwritten, a tag deleted
D_DEL=$($MK image "$W/del" --layers 2 --seed 34 --tag v1)
D_OLD=$($MK image "$W/old" --layers 2 --seed 35 --tag v1)
D_NEW=$($MK image "$W/new" --layers 2 --seed 36 --tag v1)
D_TD=$($MK image "$W/td" --layers 1 --seed 37 --tag v1)
push_layout "$W/del" v1 test/del:v1 && push_layout "$W/old" v1 test/over:v1 &&
    push_layout "$W/new" v1 test/over:v1 && push_layout "$W/td" v1 test/tagdel:v1 && ok=$((ok + 1))
t_eq "setup: skopeo pushed all images" 2 "$ok"
t_eq "setup: overwritten tag now names the new manifest" "$D_NEW" \
    "$(curl -s -H "$PL_ACCEPT" "$U/v2/test/over/manifests/v1" | sha256sum | sed 's/^/sha256:/; s/ .*//')"
t_eq "DELETE manifest by digest: 202" 202 "$(http_code "$U/v2/test/del/manifests/$D_DEL" -X DELETE)"
t_eq "deleted manifest is 404" 404 "$(http_code "$U/v2/test/del/manifests/$D_DEL" -H "$PL_ACCEPT")"
t_eq "DELETE tag: 202" 202 "$(http_code "$U/v2/test/tagdel/manifests/v1" -X DELETE)"
t_eq "deleted tag is 404, its manifest still 200 by digest" "404 200" \
    "$(http_code "$U/v2/test/tagdel/manifests/v1" -H "$PL_ACCEPT") $(http_code "$U/v2/test/tagdel/manifests/$D_TD" -H "$PL_ACCEPT")"
# a blob shared by a kept and a deleted manifest (curl pushes)
head -c 70000 /dev/urandom >"$W/shared.bin"
head -c 30000 /dev/urandom >"$W/gone-layer.bin"
pl_make_config "$W/ckeep" keep
pl_make_config "$W/cgone" gone
ok=0
mkdir -p "$W/sk" "$W/sg"
pl_push_image "$U" test/shared keep "$W/sk" "$W/ckeep" "$W/shared.bin" >"$W/d_sk" && ok=$((ok + 1))
pl_push_image "$U" test/shared2 gone "$W/sg" "$W/cgone" "$W/shared.bin" "$W/gone-layer.bin" >"$W/d_sg" && ok=$((ok + 1))
D_SK=$(cat "$W/d_sk")
D_SG=$(cat "$W/d_sg")
t_eq "setup: curl pushes of the shared-blob manifests" 2 "$ok"
t_eq "DELETE the manifest sharing the blob: 202" 202 "$(http_code "$U/v2/test/shared2/manifests/$D_SG" -X DELETE)"
# unreferenced uploads
for i in 1 2 3; do head -c $((5000 * i)) /dev/urandom >"$W/orphan$i"; done
ok=0
for i in 1 2 3; do pl_push_blob "$U" test/orphan "$W/orphan$i" && ok=$((ok + 1)); done
t_eq "setup: unreferenced blobs uploaded" 3 "$ok"

# what gc must keep ("repo ref digest" for ocipush.py verify) and remove ("repo digest")
cat >"$W/keep.refs" <<EOF
test/keep v1 $D_K1
test/keepidx v1 $D_K2
test/keep sig $D_ART
test/over v1 $D_NEW
test/shared keep $D_SK
EOF
{
    for i in 1 2 3; do echo "test/orphan sha256:$(t_sha256 "$W/orphan$i")"; done
    for d in $(blobs_of "$W/del" "$D_DEL"); do echo "test/del $d"; done
    for d in $(blobs_of "$W/old" "$D_OLD"); do echo "test/over $d"; done
    for d in $(blobs_of "$W/td" "$D_TD"); do echo "test/tagdel $d"; done
    echo "test/shared2 sha256:$(t_sha256 "$W/cgone")"
    echo "test/shared2 sha256:$(t_sha256 "$W/gone-layer.bin")"
} >"$W/gone.blobs"
printf '%s\n' "test/over $D_OLD" "test/tagdel $D_TD" "test/del $D_DEL" >"$W/gone.manifests"
NGONE=$(wc -l <"$W/gone.blobs")
# sanity: blob files are named by hex under blobs/ (so "gone from disk" below means something)
n=0
while read -r repo d; do on_disk "$d" && n=$((n + 1)); done <"$W/gone.blobs"
t_eq "before gc: all $NGONE to-be-removed blobs are files named by hex under blobs/" "$NGONE" "$n"
$OCIPUSH verify "$U" "$W/keep.refs" >"$W/v0" 2>&1
t_eq "before gc: kept content intact" "0 failures" "$(vres "$W/v0")"

# present_count: how many of the to-be-removed blobs are still served and on disk, and how many
# of the unreferenced manifests (old, tag-deleted) are still served by digest
present_count() {
    local n=0 repo d
    while read -r repo d; do
        [ "$(http_code "$U/v2/$repo/blobs/$d" -L)" = 200 ] && on_disk "$d" && n=$((n + 1))
    done <"$W/gone.blobs"
    [ "$(http_code "$U/v2/test/over/manifests/$D_OLD" -H "$PL_ACCEPT")" = 200 ] && n=$((n + 1))
    [ "$(http_code "$U/v2/test/tagdel/manifests/$D_TD" -H "$PL_ACCEPT")" = 200 ] && n=$((n + 1))
    echo $n
}

# ---- dry run: lists candidates, removes nothing ----------------------------------------------
"${GC[@]}" --dry-run --grace 0s >"$W/dry.out" 2>&1
t_eq "gc --dry-run --grace 0s exits 0" 0 $?
n=0
while read -r repo d; do grep -q "${d#sha256:}" "$W/dry.out" && n=$((n + 1)); done <"$W/gone.blobs"
t_eq "dry run lists every unreferenced blob" "$NGONE" "$n"
t_check "dry run lists the untagged manifests (overwritten tag, deleted tag)" \
    bash -c "grep -q '${D_OLD#sha256:}' '$W/dry.out' && grep -q '${D_TD#sha256:}' '$W/dry.out'"
n=0
while read -r repo d; do grep -q "${d#sha256:}" "$W/dry.out" && n=$((n + 1)); done < <(
    cat "$W/keep.refs" | awk '{print $1, $3}'
    for d in $(blobs_of "$W/k1" "$D_K1") $(blobs_of "$W/new" "$D_NEW"); do echo "x $d"; done
    echo "x sha256:$(t_sha256 "$W/shared.bin")"
)
t_eq "dry run lists nothing that is referenced" 0 "$n"
t_eq "after dry run: nothing removed" $((NGONE + 2)) "$(present_count)"

# ---- default grace (1h): everything is younger, nothing removed ------------------------------
t_check "gc with the default grace exits 0" "${GC[@]}"
t_eq "after default-grace gc: nothing removed" $((NGONE + 2)) "$(present_count)"

# ---- gc --grace 0s while pushers, churners and pullers run -----------------------------------
# pushers: fresh images; churners: manifests over blobs that keep turning into garbage (HEAD-skip,
# cross-repo mount from test/orphan, re-upload; half deleted again); pullers: the kept images.
for i in 1 2 3 4; do
    head -c $((3000 * i)) /dev/urandom >"$W/contested$i"
    pl_push_blob "$U" test/orphan "$W/contested$i" put
done
rm -f "$W/stop"
LP=()
for i in 1 2; do
    $OCIPUSH push-loop "$U" "test/live$i" --seed $((100 + i)) --max-size 60000 --acked "$W/live.acked.$i" \
        --blobs "$W/live.blobs.$i" --stop "$W/stop" >"$W/live.push.$i" 2>&1 &
    LP+=($!)
    $OCIPUSH churn "$U" "test/churn$i" --seed $((200 + i)) --reuse-from test/orphan --reuse "$W"/contested* \
        --acked "$W/live.acked.c$i" --errors "$W/churn.errors.$i" --deleted "$W/churn.deleted.$i" --stop "$W/stop" >"$W/live.churn.$i" 2>&1 &
    LP+=($!)
    $OCIPUSH pull-loop "$U" --refs "$W/keep.refs" --stop "$W/stop" --errors "$W/pull.errors.$i" >"$W/live.pull.$i" 2>&1 &
    LP+=($!)
done
T_PIDS+=("${LP[@]}")
for _ in $(seq 1 100); do
    [ "$(cat "$W"/live.acked.* 2>/dev/null | wc -l)" -ge 4 ] && break
    sleep 0.1
done
# gc runs again and again (0.1 s apart) until the churners have turned at least 12 manifests
# into garbage: at least 6 runs, for at most 120 s. Most churn attempts lose their fresh blobs to
# gc --grace 0s, by design, so how many runs that takes depends on the machine's load.
gcrc=""
GCRUNS=0
gc_deadline=$((SECONDS + 120))
while [ $SECONDS -lt $gc_deadline ]; do
    GCRUNS=$((GCRUNS + 1))
    "${GC[@]}" --grace 0s >"$W/gc.$GCRUNS.out" 2>&1
    rc=$?
    gcrc+="$rc"
    [ $rc = 0 ] || echo "# gc run $GCRUNS exit $rc: $(tail -3 "$W/gc.$GCRUNS.out" | tr '\n' ' ')"
    [ $GCRUNS -ge 6 ] && [ "$(cat "$W"/churn.deleted.* 2>/dev/null | wc -l)" -ge 12 ] && break
    # over S3 an upload takes several object-store round trips: leave the churners a window
    sleep "${T_GC_PAUSE:-0.1}"
done
touch "$W/stop"
for p in "${LP[@]}"; do wait "$p"; done
t_eq "$GCRUNS gc --grace 0s runs under load exit 0" "$(printf '0%.0s' $(seq 1 $GCRUNS))" "$gcrc"
t_check "churners deleted manifests while gc ran (>= 12)" test "$(cat "$W"/churn.deleted.* | wc -l)" -ge 12
# the garbage made during those runs goes with the next one
t_check "gc --grace 0s after the load exits 0" "${GC[@]}" --grace 0s
n=0
while read -r repo m c; do
    [ "$(http_code "$U/v2/$repo/manifests/$m" -H "$PL_ACCEPT")" = 404 ] && ! on_disk "$c" && n=$((n + 1))
done < <(cat "$W"/churn.deleted.*)
t_eq "every churned-and-deleted manifest is 404 and its config blob gone from disk" "$(cat "$W"/churn.deleted.* | wc -l)" "$n"
pulls=$(cat "$W"/live.pull.* | awk '$1=="pulls" {s+=$2} END {print s+0}')
cat "$W"/pull.errors.* >"$W/pull.errors" 2>/dev/null
t_eq "concurrent pulls of kept images ($pulls) all intact" "0" "$(wc -l <"$W/pull.errors")$(head -1 "$W/pull.errors" | sed 's/^/ first: /')"
t_check "pullers pulled during gc" test "$pulls" -gt 0
cat "$W"/churn.errors.* >"$W/churn.errors" 2>/dev/null
echo "# churn: $(cat "$W"/live.churn.* | tr '\n' ' ')"
t_eq "churned manifests read back intact right after their 201" "0" "$(wc -l <"$W/churn.errors")$(head -1 "$W/churn.errors" | sed 's/^/ first: /')"
cat "$W"/live.acked.* >"$W/live.acked" 2>/dev/null
t_check "pushers and churners got pushes acknowledged during gc" test "$(wc -l <"$W/live.acked")" -ge 4
$OCIPUSH verify "$U" "$W/live.acked" >"$W/v1" 2>&1
t_eq "all $(wc -l <"$W/live.acked") pushes acknowledged during gc are intact" "0 failures" "$(vres "$W/v1")"

# ---- after gc ------------------------------------------------------------------------------
$OCIPUSH verify "$U" "$W/keep.refs" >"$W/v2" 2>&1
t_eq "after gc: kept tags, index children, artifact, shared blob intact" "0 failures" "$(vres "$W/v2")"
curl -s "$U/v2/test/keep/referrers/$D_K1" >"$W/ref.json"
t_eq "after gc: referrers of K1 still list the artifact" "$D_ART" \
    "$(jq -r '.manifests[]?.digest' "$W/ref.json" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
n404=0
ndisk=0
first=""
while read -r repo d; do
    c=$(http_code "$U/v2/$repo/blobs/$d" -L)
    [ "$c" = 404 ] && n404=$((n404 + 1))
    if on_disk "$d"; then ndisk=$((ndisk + 1)); [ -n "$first" ] || first=" e.g. $(find "$DATA" -name "*${d#sha256:}*" | head -1)"; fi
done <"$W/gone.blobs"
t_eq "after gc: all $NGONE unreferenced blobs answer 404" "$NGONE" "$n404"
t_eq "after gc: no unreferenced blob left anywhere under the data dir" "0" "$ndisk$first"
codes=""
while read -r repo d; do codes+="$(http_code "$U/v2/$repo/manifests/$d" -H "$PL_ACCEPT") "; done <"$W/gone.manifests"
t_eq "after gc: overwritten, tag-deleted and deleted manifests are 404 by digest" "404 404 404 " "$codes"
t_eq "after gc: test/over tags" '["v1"]' "$(curl -s "$U/v2/test/over/tags/list" | jq -c .tags 2>&1)"

# ---- a fresh unreferenced blob survives gc with the default grace ----------------------------
head -c 12345 /dev/urandom >"$W/fresh"
pl_push_blob "$U" test/orphan "$W/fresh" put
FRESH=sha256:$(t_sha256 "$W/fresh")
t_check "gc with the default grace exits 0 (fresh blob)" "${GC[@]}"
t_eq "fresh unreferenced blob survives default-grace gc (HTTP, on disk)" "200 yes" \
    "$(http_code "$U/v2/test/orphan/blobs/$FRESH" -L) $(on_disk "$FRESH" && echo yes || echo no)"
t_check "gc --grace 10m --dry-run exits 0" "${GC[@]}" --dry-run --grace 10m
t_eq "fresh blob survives --grace 10m" 200 "$(http_code "$U/v2/test/orphan/blobs/$FRESH" -L)"
t_check "gc --grace with a malformed duration fails" bash -c '! "$@"' _ "${GC[@]}" --grace bogus
t_eq "fresh blob survives the failed gc" 200 "$(http_code "$U/v2/test/orphan/blobs/$FRESH" -L)"

t_check "berth still serving after gc" curl -sf -o /dev/null "$U/v2/"
t_check "berth exits 0 on SIGTERM" berth_stop
t_check "berth fsck exits 0 after gc" "$BERTH" fsck -c "$D/config.yml"
t_finish
