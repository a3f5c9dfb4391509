#!/usr/bin/env bash
# Signatures travel with what a platform-narrowed bundle carries (issue 20, docs/bundles.md,
# docs/trust.md). A bundle made with --platform must import under an enforcing policy with the
# signatures it carries, and be refused once one of them is removed:
#   - an index signed as a whole and per platform (cosign sign --recursive), narrowed to one
#     platform: the platform's manifest is carried with its own .sig tag; it imports, verifies and
#     pulls from the importing berth; without that .sig it is refused and `berth bundle verify`
#     says NOT MET;
#   - an index signed only as a whole: a narrowed index is content nobody signed, so the bundle
#     keeps the signed index whole (its signature still verifies): it imports and pulls; without
#     the index's .sig it is refused;
#   - the same holds for a narrowing to several platforms of a signed index (kept whole).
. "$(dirname "$0")/../lib.sh"
t_need_tools jq curl skopeo python3

SIGN="python3 $T_ROOT/tests/fixtures/cosign_sign.py"
MK="python3 $T_ROOT/tests/fixtures/mkimage.py"
APP="python3 $T_ROOT/tests/fixtures/mkapp.py"
SK=(skopeo --insecure-policy)
ACCEPT='application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json'
W=$T_TMP/work
mkdir -p "$W"
$SIGN keygen "$W/good" --type ecdsa || t_fail "keygen"

# conf DIR: a berth config with its store in DIR/data and an enforcing policy over apps/*
conf() {
    mkdir -p "$1"
    cat >"$1/config.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $1/data
trust:
  keys:
    release: $W/good/cosign.pub
  policies:
    - name: apps
      repositories: ["apps/*", "docker.io/apps/*"]
      mode: enforce
      keys: [release]
YML
}
conf "$T_TMP/src"
conf "$T_TMP/dst"
conf "$T_TMP/no1"
conf "$T_TMP/no2"
berth_start "$T_TMP/src" || { t_fail "the source berth starts"; t_finish; }
SRC=$BERTH_URL
berth_start "$T_TMP/dst" || { t_fail "the target berth starts"; t_finish; }
DST=$BERTH_URL

# push_index REPO SEED ARCHES: a multi-platform index pushed as REPO:v1; prints its digest
push_index() {
    local d
    d=$($MK index "$W/$2" --arches "$3" --seed "$2" --tag v1) || return 1
    "${SK[@]}" copy -q --all --dest-tls-verify=false "oci:$W/$2:v1" "docker://${SRC#http://}/$1:v1" || return 1
    echo "$d"
}
child() { jq -r --arg a "$2" '.manifests[] | select(.platform.architecture==$a) | .digest' "$W/$1/blobs/sha256/${3#sha256:}"; }
sign() { $SIGN sign "$SRC" "$1" "$2" --key "$W/good/cosign.key" >/dev/null || t_fail "sign $1 $2"; }
# entry TAR REF: the digest index.json names for REF
entry() { tar -xOf "$1" index.json | jq -r --arg r "$2" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $r) | .digest'; }
# strip TAR OUT REF: the same bundle without the index.json entry REF
strip() {
    rm -rf "$W/x" && mkdir -p "$W/x" && tar -xf "$1" -C "$W/x" &&
        jq --arg r "$3" '.manifests |= map(select(.annotations["org.opencontainers.image.ref.name"] != $r))' \
            "$W/x/index.json" >"$W/x/i2" && mv "$W/x/i2" "$W/x/index.json" && tar -cf "$2" -C "$W/x" .
}
code() { curl -s -o "$W/get.out" -w '%{http_code}' -H "Accept: $ACCEPT" "$1/v2/$2/manifests/$3"; }

# ---- 1. signed per platform (cosign sign --recursive), narrowed to one platform -----------------
D_REC=$(push_index apps/rec 61 amd64,arm64) || t_fail "push apps/rec"
A_REC=$(child 61 arm64 "$D_REC")
for d in "$D_REC" "$A_REC" "$(child 61 amd64 "$D_REC")"; do sign apps/rec "$d"; done
"$BERTH" bundle create -c "$T_TMP/src/config.yml" --platform linux/arm64 -o "$W/rec.tar" apps/rec:v1 >"$W/rec.out" 2>&1
t_eq "narrowed to arm64: apps/rec:v1 is the arm64 manifest" "$A_REC" "$(entry "$W/rec.tar" apps/rec:v1)"
t_check "the arm64 manifest's own signature is carried (its .sig tag)" \
    test -n "$(entry "$W/rec.tar" "apps/rec:sha256-${A_REC#sha256:}.sig")"
t_eq "the index's signature, whose subject is not carried, is not" "" \
    "$(entry "$W/rec.tar" "apps/rec:sha256-${D_REC#sha256:}.sig")"
"$BERTH" bundle verify "$W/rec.tar" -c "$T_TMP/dst/config.yml" >"$W/rv.out" 2>&1
t_eq "bundle verify under enforce: exit 0, apps/rec:v1 accepted" "0 1" \
    "$? $(grep -c "apps/rec:v1 .*policy 'apps': accepted: signed by key 'release'" "$W/rv.out")"
"$BERTH" bundle import "$W/rec.tar" -c "$T_TMP/dst/config.yml" >"$W/ri.out" 2>&1
t_eq "bundle import under enforce succeeds" 0 "$?"
t_eq "the importing berth serves apps/rec:v1 (the arm64 manifest)" "200 $A_REC" \
    "$(code "$DST" apps/rec v1) sha256:$(t_sha256 "$W/get.out")"
t_check "skopeo pulls apps/rec:v1 from the importing berth" \
    "${SK[@]}" copy -q --src-tls-verify=false "docker://${DST#http://}/apps/rec:v1" "oci:$W/pulled:rec"
strip "$W/rec.tar" "$W/rec-nosig.tar" "apps/rec:sha256-${A_REC#sha256:}.sig"
"$BERTH" bundle verify "$W/rec-nosig.tar" -c "$T_TMP/no1/config.yml" >"$W/rv2.out" 2>&1
t_eq "without the arm64 signature: bundle verify exits 1, NOT MET" "1 1" \
    "$? $(grep -c "apps/rec:v1 .*NOT MET.*has no signature" "$W/rv2.out")"
"$BERTH" bundle import "$W/rec-nosig.tar" -c "$T_TMP/no1/config.yml" >"$W/ri2.out" 2>&1
t_eq "without the arm64 signature: bundle import is refused, naming the policy" "1 1" \
    "$? $(grep -c "trust policy 'apps' refuses apps/rec:v1" "$W/ri2.out")"
t_eq "and nothing was written" 0 "$(find "$T_TMP/no1/data" -path '*/blobs/*' -type f 2>/dev/null | wc -l)"

# ---- 2. signed only as a whole index, narrowed to one platform: kept whole -----------------------
D_WH=$(push_index apps/whole 62 amd64,arm64) || t_fail "push apps/whole"
A_WH=$(child 62 arm64 "$D_WH")
sign apps/whole "$D_WH"
"$BERTH" bundle create -c "$T_TMP/src/config.yml" --platform linux/arm64 -o "$W/wh.tar" apps/whole:v1 >"$W/wh.out" 2>&1
t_eq "an index signed only as a whole stays whole: apps/whole:v1 is the signed index" "$D_WH" \
    "$(entry "$W/wh.tar" apps/whole:v1)"
t_check "bundle create says why" grep -q "is signed as a whole.*carried with all its platforms" "$W/wh.out"
t_check "the index's signature is carried" test -n "$(entry "$W/wh.tar" "apps/whole:sha256-${D_WH#sha256:}.sig")"
"$BERTH" bundle verify "$W/wh.tar" -c "$T_TMP/dst/config.yml" >"$W/wv.out" 2>&1
t_eq "bundle verify under enforce: exit 0" 0 "$?"
"$BERTH" bundle import "$W/wh.tar" -c "$T_TMP/dst/config.yml" >"$W/wi.out" 2>&1
t_eq "bundle import under enforce succeeds" 0 "$?"
t_eq "the importing berth serves the arm64 manifest (released by the index's signature)" "200 $A_WH" \
    "$(code "$DST" apps/whole "$A_WH") sha256:$(t_sha256 "$W/get.out")"
t_check "skopeo pulls the arm64 image of apps/whole:v1 from the importing berth" \
    "${SK[@]}" copy -q --override-arch arm64 --src-tls-verify=false "docker://${DST#http://}/apps/whole:v1" "oci:$W/pulled:whole"
strip "$W/wh.tar" "$W/wh-nosig.tar" "apps/whole:sha256-${D_WH#sha256:}.sig"
"$BERTH" bundle verify "$W/wh-nosig.tar" -c "$T_TMP/no2/config.yml" >"$W/wv2.out" 2>&1
t_eq "without the index's signature: bundle verify exits 1, NOT MET" "1 1" \
    "$? $(grep -c "apps/whole.*NOT MET.*has no signature" "$W/wv2.out")"
"$BERTH" bundle import "$W/wh-nosig.tar" -c "$T_TMP/no2/config.yml" >"$W/wi2.out" 2>&1
t_eq "without the index's signature: bundle import is refused" "1 1" \
    "$? $(grep -c "trust policy 'apps' refuses apps/whole" "$W/wi2.out")"

# ---- 3. a signed index narrowed to several platforms: a new index would be unsigned, kept whole --
D_3=$(push_index apps/three 63 amd64,arm64,s390x) || t_fail "push apps/three"
sign apps/three "$D_3"
for a in amd64 arm64 s390x; do sign apps/three "$(child 63 $a "$D_3")"; done
"$BERTH" bundle create -c "$T_TMP/src/config.yml" --platform linux/arm64,linux/amd64 -o "$W/three.tar" apps/three:v1 >"$W/t.out" 2>&1
t_eq "narrowed to two of three platforms: the signed index is kept whole" "$D_3" "$(entry "$W/three.tar" apps/three:v1)"
"$BERTH" bundle import "$W/three.tar" -c "$T_TMP/dst/config.yml" >"$W/ti.out" 2>&1
t_eq "and it imports under enforce" 0 "$?"

# ---- 4. an unsigned index narrows as before (the bundle is no bigger than asked) -----------------
D_U=$(push_index other/u 64 amd64,arm64) || t_fail "push other/u"
"$BERTH" bundle create -c "$T_TMP/src/config.yml" --platform linux/arm64 -o "$W/u.tar" other/u:v1 >"$W/u.out" 2>&1
t_eq "an unsigned index narrowed to arm64 is replaced by its arm64 manifest" "$(child 64 arm64 "$D_U")" \
    "$(entry "$W/u.tar" other/u:v1)"

# ---- 5. a margo application's closure for one platform carries what verifies -------------------
# its compose file runs the two images above by original name, docker.io/apps/..., where the
# source store keeps them (signed as above)
for r in rec:61 whole:62; do
    "${SK[@]}" copy -q --all --dest-tls-verify=false "oci:$W/${r#*:}:v1" "docker://${SRC#http://}/docker.io/apps/${r%:*}:v1" ||
        t_fail "push docker.io/apps/${r%:*}"
done
for d in "$D_REC" "$A_REC" "$(child 61 amd64 "$D_REC")"; do sign docker.io/apps/rec "$d"; done
sign docker.io/apps/whole "$D_WH"
mkdir -p "$W/compose"
$APP compose "$W/compose" --image docker.io/apps/rec:v1 --image docker.io/apps/whole:v1
"$BERTH" compose push "$W/compose" "$SRC/pkgs/compose:1.0.0" >"$W/cp.out" 2>&1 || t_fail "compose push"
$APP package "$W/pkg" --compose oci://pkgs/compose@1.0.0
"$BERTH" app push "$W/pkg" "$SRC/pkgs/hello:1.0.0" >"$W/ap.out" 2>&1 || t_fail "app push"
"$BERTH" bundle create --closure -c "$T_TMP/src/config.yml" --platform linux/arm64 -o "$W/app.tar" \
    pkgs/hello:1.0.0 >"$W/app.out" 2>&1
t_eq "closure for arm64: the per-platform signed image is its arm64 manifest, the other stays whole" \
    "$A_REC $D_WH" "$(entry "$W/app.tar" docker.io/apps/rec:v1) $(entry "$W/app.tar" docker.io/apps/whole:v1)"
"$BERTH" bundle import "$W/app.tar" -c "$T_TMP/dst/config.yml" >"$W/ai.out" 2>&1
t_eq "the application's bundle imports under enforce" 0 "$?"
t_eq "and its images pull from the importing berth" "200 200" \
    "$(code "$DST" docker.io/apps/rec v1) $(code "$DST" docker.io/apps/whole "$A_WH")"
strip "$W/app.tar" "$W/app-nosig.tar" "docker.io/apps/whole:sha256-${D_WH#sha256:}.sig"
"$BERTH" bundle import "$W/app-nosig.tar" -c "$T_TMP/no2/config.yml" >"$W/ai2.out" 2>&1
t_eq "without one of its signatures it is refused" "1 1" \
    "$? $(grep -c "trust policy 'apps' refuses docker.io/apps/whole" "$W/ai2.out")"

t_finish
