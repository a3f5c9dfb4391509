#!/usr/bin/env bash
# Real clients against berth: skopeo (image, multi-arch index, artifact with subject), containerd
# (ctr pull through a hosts.toml mirror, which adds ?ns=), and copies between berth and a real
# docker-registry in both directions. Images are built on disk by tests/fixtures/mkimage.py.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"

MK="python3 $T_ROOT/tests/fixtures/mkimage.py"
SK=(skopeo --insecure-policy)
NOTLS=(--src-tls-verify=false --dest-tls-verify=false)
W=$T_TMP/work
mkdir -p "$W"

if ! berth_start "$T_TMP/berth"; then
    t_fail "berth starts"
    t_finish
fi
B=127.0.0.1:$BERTH_PORT

# same_set FILE1 FILE2: the two newline lists hold the same items.
same_set() { diff <(sort -u "$1") <(sort -u "$2"); }

# layout_ok LAYOUT TAG WANT_DIGEST: the OCI layout names WANT_DIGEST for TAG and every blob
# reachable from it exists with the right sha256.
layout_ok() {
    local got d
    got=$($MK digest "$1" --tag "$2") || return 1
    [ "$got" = "$3" ] || { echo "layout $1:$2 has $got, want $3"; return 1; }
    for d in $(pl_blob_digests "$1" "$3"); do
        [ "sha256:$(t_sha256 "$1/blobs/sha256/${d#sha256:}")" = "$d" ] || { echo "bad blob $d in $1"; return 1; }
    done
}

# ---- 1. single-platform image -------------------------------------------------------------
D_IMG=$($MK image "$W/img" --layers 3 --seed 11 --tag v1 --size 40000)
pl_blob_digests "$W/img" "$D_IMG" >"$W/img.digests"
t_check "skopeo copy oci image -> berth" "${SK[@]}" copy -q "${NOTLS[@]}" "oci:$W/img:v1" "docker://$B/test/img:v1"
t_check "berth serves the pushed image and its blobs intact" pl_verify "$BERTH_URL" test/img v1 "$D_IMG"
hdr=$(curl -s -I -H "$PL_ACCEPT" "$BERTH_URL/v2/test/img/manifests/v1" | tr -d '\r')
t_eq "HEAD manifest Docker-Content-Digest" "$D_IMG" "$(echo "$hdr" | grep -i '^docker-content-digest:' | cut -d' ' -f2)"
t_eq "HEAD manifest Content-Type" "$MT_OCI_MANIFEST" "$(echo "$hdr" | grep -i '^content-type:' | cut -d' ' -f2 | cut -d';' -f1)"
"${SK[@]}" inspect --raw --tls-verify=false "docker://$B/test/img:v1" >"$W/img.raw" 2>"$W/err"
t_check "skopeo inspect --raw equals the pushed bytes" cmp "$W/img.raw" "$W/img/blobs/sha256/${D_IMG#sha256:}"
t_eq "skopeo inspect reports the digest" "$D_IMG" \
    "$("${SK[@]}" inspect --tls-verify=false "docker://$B/test/img:v1" 2>"$W/err" | jq -r .Digest)"
t_eq "skopeo list-tags" '["v1"]' \
    "$("${SK[@]}" list-tags --tls-verify=false "docker://$B/test/img" 2>"$W/err" | jq -c .Tags)"
t_check "skopeo copy berth -> oci --preserve-digests" "${SK[@]}" copy -q --preserve-digests "${NOTLS[@]}" \
    "docker://$B/test/img:v1" "oci:$W/img-out:v1"
t_check "copied-out layout has the same manifest digest and blobs" layout_ok "$W/img-out" v1 "$D_IMG"
pl_blob_digests "$W/img-out" "$D_IMG" >"$W/img-out.digests" 2>/dev/null
t_check "copied-out blob digests equal the pushed ones" same_set "$W/img.digests" "$W/img-out.digests"
# a second repository: skopeo tries a cross-repository mount for every blob
t_check "skopeo copy between two berth repositories" "${SK[@]}" copy -q "${NOTLS[@]}" \
    "docker://$B/test/img:v1" "docker://$B/test/img-copy:v1"
t_check "copied repository serves the same digest and blobs" pl_verify "$BERTH_URL" test/img-copy v1 "$D_IMG"

# ---- 2. multi-arch index ------------------------------------------------------------------
D_IDX=$($MK index "$W/idx" --arches amd64,arm64 --seed 12 --tag multi)
pl_blob_digests "$W/idx" "$D_IDX" >"$W/idx.digests"
D_ARM=$(jq -r '.manifests[] | select(.platform.architecture=="arm64") | .digest' "$W/idx/blobs/sha256/${D_IDX#sha256:}")
t_check "skopeo copy --all oci index -> berth" "${SK[@]}" copy -q --all "${NOTLS[@]}" "oci:$W/idx:multi" "docker://$B/test/multi:v1"
t_check "berth serves the index, both manifests and all blobs intact" pl_verify "$BERTH_URL" test/multi v1 "$D_IDX"
"${SK[@]}" inspect --raw --tls-verify=false "docker://$B/test/multi:v1" >"$W/idx.raw" 2>"$W/err"
t_check "skopeo inspect --raw of the index equals the pushed bytes" cmp "$W/idx.raw" "$W/idx/blobs/sha256/${D_IDX#sha256:}"
t_eq "GET index Content-Type" "$MT_OCI_INDEX" \
    "$(curl -s -o /dev/null -w '%{content_type}' -H "$PL_ACCEPT" "$BERTH_URL/v2/test/multi/manifests/v1" | cut -d';' -f1)"
t_check "skopeo copy --all berth -> oci --preserve-digests" "${SK[@]}" copy -q --all --preserve-digests "${NOTLS[@]}" \
    "docker://$B/test/multi:v1" "oci:$W/idx-out:v1"
t_check "copied-out index layout has the same digests" layout_ok "$W/idx-out" v1 "$D_IDX"
pl_blob_digests "$W/idx-out" "$D_IDX" >"$W/idx-out.digests" 2>/dev/null
t_check "copied-out index blob digests equal the pushed ones" same_set "$W/idx.digests" "$W/idx-out.digests"
t_check "skopeo --override-arch arm64 copies the arm64 manifest" "${SK[@]}" --override-arch arm64 --override-os linux \
    copy -q --preserve-digests "${NOTLS[@]}" "docker://$B/test/multi:v1" "oci:$W/arm-out:v1"
t_eq "the arm64 manifest digest is the index's arm64 entry" "$D_ARM" "$($MK digest "$W/arm-out" --tag v1 2>/dev/null)"

# ---- 3. artifact with subject, referrers API ---------------------------------------------
D_ART=$($MK artifact "$W/art" --subject-of "$W/img" --subject-tag v1 --seed 13 --tag sig)
ATYPE=application/vnd.berth.test.signature.v1
t_check "skopeo copy artifact (subject = test/img:v1) -> berth" "${SK[@]}" copy -q "${NOTLS[@]}" "oci:$W/art:sig" "docker://$B/test/img:sig"
t_check "berth serves the artifact and its blobs intact" pl_verify "$BERTH_URL" test/img sig "$D_ART"
"${SK[@]}" inspect --raw --tls-verify=false "docker://$B/test/img:sig" >"$W/art.raw" 2>"$W/err"
t_check "skopeo inspect --raw of the artifact equals the pushed bytes" cmp "$W/art.raw" "$W/art/blobs/sha256/${D_ART#sha256:}"
code=$(curl -s -D "$W/ref.h" -o "$W/ref.json" -w '%{http_code}' "$BERTH_URL/v2/test/img/referrers/$D_IMG")
t_eq "GET referrers/<subject> status" 200 "$code"
t_eq "referrers Content-Type" "$MT_OCI_INDEX" "$(pl_header "$W/ref.h" content-type | cut -d';' -f1)"
t_eq "referrers lists the artifact with artifactType and size" \
    "$D_ART $ATYPE $(stat -c %s "$W/art.raw")" \
    "$(jq -r --arg d "$D_ART" '.manifests[] | select(.digest==$d) | "\(.digest) \(.artifactType) \(.size)"' "$W/ref.json" 2>&1)"
t_eq "referrers lists nothing else" 1 "$(jq '.manifests | length' "$W/ref.json" 2>&1)"
code=$(curl -s -o "$W/ref2.json" -w '%{http_code}' "$BERTH_URL/v2/test/img/referrers/$D_IDX")
t_eq "referrers of a digest without referrers: 200 and empty" "200 0" "$code $(jq '.manifests | length' "$W/ref2.json" 2>&1)"
curl -s -D "$W/ref3.h" -o "$W/ref3.json" "$BERTH_URL/v2/test/img/referrers/$D_IMG?artifactType=application/x-other"
if grep -qi '^oci-filters-applied:.*artifactType' "$W/ref3.h"; then
    t_eq "filtered referrers (other artifactType) exclude it" 0 "$(jq '.manifests | length' "$W/ref3.json" 2>&1)"
else
    t_eq "unfiltered referrers (filter not applied) still list it" 1 "$(jq '.manifests | length' "$W/ref3.json" 2>&1)"
fi
# a manifest PUT carrying a subject must be answered with OCI-Subject
code=$(curl -s -D "$W/put.h" -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: $MT_OCI_MANIFEST" \
    --data-binary @"$W/art.raw" "$BERTH_URL/v2/test/img/manifests/sig2")
t_eq "PUT artifact manifest again: 201 with OCI-Subject" "201 $D_IMG" "$code $(pl_header "$W/put.h" oci-subject)"
t_check "skopeo copy artifact berth -> oci --preserve-digests" "${SK[@]}" copy -q --preserve-digests "${NOTLS[@]}" \
    "docker://$B/test/img:sig" "oci:$W/art-out:sig"
t_check "copied-out artifact has the same digest and blobs" layout_ok "$W/art-out" sig "$D_ART"

# ---- 4. containerd pulls through a hosts.toml mirror (?ns=upstream.example:5000) -----------
C=$T_TMP/ctd
mkdir -p "$C/root" "$C/state" "$C/hosts/upstream.example:5000"
cat >"$C/hosts/upstream.example:5000/hosts.toml" <<EOF
server = "http://upstream.example:5000"

[host."http://$B"]
  capabilities = ["pull", "resolve"]
EOF
containerd_start "$C"
t_check "private containerd is up" "${CTR[@]}" version
REF=upstream.example:5000/test/img:v1
t_check "ctr images pull via hosts.toml mirror (native snapshotter)" "${CTR[@]}" images pull --http-dump \
    --print-chainid --hosts-dir "$C/hosts" --snapshotter native "$REF"
cp "$T_TMP/.check.out" "$C/pull.out"
t_check "containerd asked berth with ?ns=upstream.example:5000" \
    grep -qE "(HEAD|GET) /v2/test/img/manifests/v1\?ns=upstream.example(%3A|:)5000" "$C/pull.out"
t_eq "ctr images ls shows the pushed digest" "$D_IMG" \
    "$("${CTR[@]}" images ls 2>&1 | awk -v r="$REF" '$1==r {print $3}')"
ctr_complete() { "${CTR[@]}" images check 2>&1 | grep -F "$1" | grep -q complete; }
t_check "ctr images check: complete" ctr_complete "$REF"
# the unpacked root filesystem (a native-snapshotter view of the image's chain ID) holds exactly
# the files of the layer tars
t_ctr_rootfs "unpacked rootfs equals the layer contents" "$W/img" "$D_IMG" "$C/pull.out" "$C"
REF2=upstream.example:5000/test/multi:v1
t_check "ctr pull of the multi-arch index via the mirror" "${CTR[@]}" images pull --hosts-dir "$C/hosts" \
    --snapshotter native --platform linux/amd64 "$REF2"
t_eq "ctr images ls shows the index digest" "$D_IDX" \
    "$("${CTR[@]}" images ls 2>&1 | awk -v r="$REF2" '$1==r {print $3}')"
"${CTR[@]}" images rm --sync "$REF" "$REF2" >/dev/null 2>&1
kill "$CTD_PID" 2>/dev/null
wait "$CTD_PID" 2>/dev/null

# ---- 5. berth <-> docker-registry ----------------------------------------------------------
if registry_start "$T_TMP/reg"; then
    R=127.0.0.1:$REG_PORT
    t_check "skopeo copy berth -> docker-registry (image)" "${SK[@]}" copy -q --preserve-digests "${NOTLS[@]}" \
        "docker://$B/test/img:v1" "docker://$R/test/img:v1"
    t_check "docker-registry has the identical image" pl_verify "$REG_URL" test/img v1 "$D_IMG"
    t_check "skopeo copy --all berth -> docker-registry (index)" "${SK[@]}" copy -q --all --preserve-digests "${NOTLS[@]}" \
        "docker://$B/test/multi:v1" "docker://$R/test/multi:v1"
    t_check "docker-registry has the identical index" pl_verify "$REG_URL" test/multi v1 "$D_IDX"
    # images that only ever lived in docker-registry
    D_R=$($MK image "$W/rimg" --layers 2 --seed 21 --tag v1 --size 50000)
    D_RI=$($MK index "$W/ridx" --arches amd64,arm64,ppc64le --seed 22 --tag v1)
    "${SK[@]}" copy -q "${NOTLS[@]}" "oci:$W/rimg:v1" "docker://$R/test/fromreg:v1" >"$W/err" 2>&1
    "${SK[@]}" copy -q --all "${NOTLS[@]}" "oci:$W/ridx:v1" "docker://$R/test/fromreg-multi:v1" >>"$W/err" 2>&1
    t_check "skopeo copy docker-registry -> berth (image)" "${SK[@]}" copy -q --preserve-digests "${NOTLS[@]}" \
        "docker://$R/test/fromreg:v1" "docker://$B/test/fromreg:v1"
    t_check "berth has the identical image from docker-registry" pl_verify "$BERTH_URL" test/fromreg v1 "$D_R"
    t_check "skopeo copy --all docker-registry -> berth (index)" "${SK[@]}" copy -q --all --preserve-digests "${NOTLS[@]}" \
        "docker://$R/test/fromreg-multi:v1" "docker://$B/test/fromreg-multi:v1"
    t_check "berth has the identical index from docker-registry" pl_verify "$BERTH_URL" test/fromreg-multi v1 "$D_RI"
    "${SK[@]}" inspect --raw --tls-verify=false "docker://$R/test/fromreg-multi:v1" >"$W/r1" 2>/dev/null
    "${SK[@]}" inspect --raw --tls-verify=false "docker://$B/test/fromreg-multi:v1" >"$W/r2" 2>/dev/null
    t_check "inspect --raw identical on both registries" cmp "$W/r1" "$W/r2"
else
    t_fail "docker-registry starts" "$(tail -5 "$T_TMP/reg/registry.log" 2>/dev/null)"
fi

t_check "berth is still serving" curl -sf -o /dev/null "$BERTH_URL/v2/"
t_finish
