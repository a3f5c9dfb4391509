#!/usr/bin/env bash
# Air-gap bundles of a margo application (issue 5): `berth app closure` resolves a package, its
# Helm chart and compose archive and every image they run (through a berth that mirrors
# docker.io, ghcr.io and registry.k8s.io from a real docker-registry); `berth bundle create`
# writes it all (and the package's signature, a referrer) as one OCI layout tar; `berth bundle
# import` loads it into a fresh berth online (--to) and into a stopped one's storage (-c), after
# which containerd pulls every image with hosts.toml as if from the original registries, and the
# package, chart and compose archive are byte for byte those of the source. Damaged bundles
# (one flipped byte in a layer, a truncated tar) are refused with nothing becoming visible;
# `berth bundle serve` serves a bundle read-only as a registry.
# Fixtures: images by tests/fixtures/mkimage.py, the application by tests/fixtures/mkapp.py.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"

MK="python3 $T_ROOT/tests/fixtures/mkimage.py"
APP="python3 $T_ROOT/tests/fixtures/mkapp.py"
SK=(skopeo --insecure-policy)
NOTLS=(--src-tls-verify=false --dest-tls-verify=false)
W=$T_TMP/work
mkdir -p "$W"
PKG=registry.example.com/apps/hello:1.0.0
IMAGES="docker.io/library/app:1.0 docker.io/library/busybox:1.36 ghcr.io/org/web:2.0 registry.k8s.io/pause:3.9"

# mdigest URL REPO REF[?query]: sha256 of the manifest the registry serves ("" when not 200).
mdigest() {
    local f=$W/.md.$RANDOM code
    code=$(curl -s -o "$f" -w '%{http_code}' -H "$PL_ACCEPT" "$1/v2/$2/manifests/$3")
    [ "$code" = 200 ] && echo "sha256:$(t_sha256 "$f")"
    rm -f "$f"
}
# state URL: catalog, every repository's tags, the package's referrers: what a client can see.
state() {
    local r
    curl -s "$1/v2/_catalog?n=1000" | jq -c '.repositories // [] | sort'
    for r in $(curl -s "$1/v2/_catalog?n=1000" | jq -r '.repositories // [] | .[]'); do
        echo "$r $(curl -s "$1/v2/$r/tags/list" | jq -c '.tags // [] | sort')"
    done
    echo "referrers $(curl -s "$1/v2/registry.example.com/apps/hello/referrers/$D_PKG" | jq -c '[.manifests[]?.digest] | sort')"
}
# rc_eq NAME WANT RC ERRFILE: an exit status; a failure shows the command's stderr.
rc_eq() { if [ "$3" = "$2" ]; then t_ok "$1"; else t_fail "$1" "exit $3, want $2: $(head -c 400 "$4" | tr '\n' ' ')"; fi; }
# same_state F1 F2: two state dumps are equal and not empty.
same_state() { [ "$(head -1 "$1")" != "[]" ] || { echo "empty catalog"; return 1; }; diff "$1" "$2"; }
# run NAME CMD...: runs CMD, output in $W/NAME.out; records pass/fail on its exit status.
run() {
    local name=$1
    shift
    if "$@" >"$W/last.out" 2>&1; then t_ok "$name"; else t_fail "$name" "exit $?: $(tail -c 600 "$W/last.out" | tr '\n' ' ')"; fi
}

# ---- 1. upstream docker-registry U with the images ----------------------------------------
registry_start "$T_TMP/u" || { t_fail "docker-registry starts" "$(tail -5 "$T_TMP/u/registry.log")"; t_finish; }
U=$REG_URL
UH=127.0.0.1:$REG_PORT
$MK image "$W/app" --layers 2 --seed 51 --tag 1.0 --size 20000 >/dev/null
$MK image "$W/busybox" --layers 1 --seed 52 --tag 1.36 --size 12000 >/dev/null
$MK index "$W/web" --arches amd64,arm64 --seed 53 --tag 2.0 --size 8000 >/dev/null
$MK image "$W/pause" --layers 1 --seed 54 --tag 3.9 --size 3000 >/dev/null
"${SK[@]}" copy -q "${NOTLS[@]}" "oci:$W/app:1.0" "docker://$UH/library/app:1.0" >"$W/sk.log" 2>&1 &&
    "${SK[@]}" copy -q "${NOTLS[@]}" "oci:$W/busybox:1.36" "docker://$UH/library/busybox:1.36" >>"$W/sk.log" 2>&1 &&
    "${SK[@]}" copy -q --all "${NOTLS[@]}" "oci:$W/web:2.0" "docker://$UH/org/web:2.0" >>"$W/sk.log" 2>&1 &&
    "${SK[@]}" copy -q "${NOTLS[@]}" "oci:$W/pause:3.9" "docker://$UH/pause:3.9" >>"$W/sk.log" 2>&1
t_eq "fixture: skopeo pushed the 4 images into docker-registry" 0 "$?"
D_APP=$(mdigest "$U" library/app 1.0)
D_BUSY=$(mdigest "$U" library/busybox 1.36)
D_WEB=$(mdigest "$U" org/web 2.0)
D_PAUSE=$(mdigest "$U" pause 3.9)
t_eq "fixture: docker-registry serves the layouts' digests" \
    "$($MK digest "$W/app" --tag 1.0) $($MK digest "$W/busybox" --tag 1.36) $($MK digest "$W/web" --tag 2.0) $($MK digest "$W/pause" --tag 3.9)" \
    "$D_APP $D_BUSY $D_WEB $D_PAUSE"
D_WEB_ARM=$(jq -r '.manifests[] | select(.platform.architecture=="arm64") | .digest' "$W/web/blobs/sha256/${D_WEB#sha256:}")
D_WEB_AMD=$(jq -r '.manifests[] | select(.platform.architecture=="amd64") | .digest' "$W/web/blobs/sha256/${D_WEB#sha256:}")
L_APP=$(jq -r '.layers[0].digest' "$W/app/blobs/sha256/${D_APP#sha256:}") # the layer tampered with below

# ---- 2. berth A: mirrors of docker.io, ghcr.io, registry.k8s.io; the application pushed ----
mkdir -p "$T_TMP/a"
cat >"$T_TMP/a/config.yml" <<YML
version: 0.1
mirrors:
  docker.io:
    urls: [$U]
  ghcr.io:
    urls: [$U]
  registry.k8s.io:
    urls: [$U]
YML
berth_start "$T_TMP/a" || { t_fail "berth A starts"; t_finish; }
A=$BERTH_URL
t_eq "fixture: A mirrors docker.io (?ns=, implicit library/)" "$D_APP" "$(mdigest "$A" app '1.0?ns=docker.io')"
t_eq "fixture: A mirrors ghcr.io (?ns=)" "$D_WEB" "$(mdigest "$A" org/web '2.0?ns=ghcr.io')"
t_eq "fixture: A mirrors registry.k8s.io (?ns=)" "$D_PAUSE" "$(mdigest "$A" pause '3.9?ns=registry.k8s.io')"

$APP chart "$W/hello-1.2.3.tgz"
D_CHART=$($APP push-chart "$A" registry.example.com/charts/hello 1.2.3 "$W/hello-1.2.3.tgz" 2>"$W/err")
t_eq "fixture: chart hello 1.2.3 pushed over OCI as registry.example.com/charts/hello" \
    "$D_CHART" "$(mdigest "$A" registry.example.com/charts/hello 1.2.3)"
mkdir -p "$W/compose/hello"
$APP compose "$W/compose/hello"
run "fixture: berth compose push registry.example.com/compose/hello:1.2.3" \
    "$BERTH" compose push "$W/compose/hello" "$A/registry.example.com/compose/hello:1.2.3"
D_COMPOSE=$(mdigest "$A" registry.example.com/compose/hello 1.2.3)
$APP package "$W/pkg/hello" --helm oci://registry.example.com/charts/hello@1.2.3 \
    --compose oci://registry.example.com/compose/hello@1.2.3
run "fixture: berth app push $PKG" "$BERTH" app push "$W/pkg/hello" "$A/registry.example.com/apps/hello:1.0.0"
D_PKG=$(mdigest "$A" registry.example.com/apps/hello 1.0.0)
# a signature-like artifact whose subject is the package manifest, pushed by digest (no tag)
mkdir -p "$W/pkgref"
curl -s -H "$PL_ACCEPT" -o "$W/pkg.manifest" "$A/v2/registry.example.com/apps/hello/manifests/1.0.0"
jq -n --arg d "$D_PKG" --argjson s "$(stat -c %s "$W/pkg.manifest")" \
    '{schemaVersion: 2, manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s}]}' \
    >"$W/pkgref/index.json"
D_SIG=$($MK artifact "$W/sig" --subject-of "$W/pkgref" --seed 55 --tag sig)
sig_push() {
    local d
    for d in $(jq -r '.config.digest, .layers[].digest' "$W/sig/blobs/sha256/${D_SIG#sha256:}"); do
        pl_push_blob "$A" registry.example.com/apps/hello "$W/sig/blobs/sha256/${d#sha256:}" || return 1
    done
    pl_push_manifest "$A" registry.example.com/apps/hello "$D_SIG" "$W/sig/blobs/sha256/${D_SIG#sha256:}"
}
t_check "fixture: signature (subject = the package) pushed into A" sig_push
t_eq "fixture: A's referrers API lists the signature" "[\"$D_SIG\"]" \
    "$(curl -s "$A/v2/registry.example.com/apps/hello/referrers/$D_PKG" | jq -c '[.manifests[]?.digest]')"
# a second application one of whose images does not exist upstream
mkdir -p "$W/compose-broken/broken"
$APP compose "$W/compose-broken/broken" --image docker.io/library/app:1.0 --image docker.io/library/missing:0.1
run "fixture: berth compose push registry.example.com/compose/broken:1.0.0" \
    "$BERTH" compose push "$W/compose-broken/broken" "$A/registry.example.com/compose/broken:1.0.0"
$APP package "$W/pkg-broken/broken" --id broken --compose oci://registry.example.com/compose/broken@1.0.0
run "fixture: berth app push registry.example.com/apps/broken:1.0.0" \
    "$BERTH" app push "$W/pkg-broken/broken" "$A/registry.example.com/apps/broken:1.0.0"
# berth's containerd-style routing for a local repository stored under <host>/<repo>
t_eq "A serves the pushed package as /v2/apps/hello/...?ns=registry.example.com" "$D_PKG" \
    "$(mdigest "$A" apps/hello '1.0.0?ns=registry.example.com')"

# ---- 3. berth app closure ------------------------------------------------------------------
CL=("$BERTH" app closure --registry "$A")
"${CL[@]}" "$PKG" >"$W/closure.txt" 2>"$W/closure.err"
rc_eq "app closure: exit 0 when everything resolves" 0 $? "$W/closure.err"
# one line per item, KIND REFERENCE DIGEST (anything after the digest, such as platforms, is not compared)
t_eq "app closure: package, chart, compose archive and the 4 images, digests as upstream serves them" \
    "$(sort <<EOF
package $PKG $D_PKG
chart registry.example.com/charts/hello:1.2.3 $D_CHART
compose registry.example.com/compose/hello:1.2.3 $D_COMPOSE
image docker.io/library/app:1.0 $D_APP
image docker.io/library/busybox:1.36 $D_BUSY
image ghcr.io/org/web:2.0 $D_WEB
image registry.k8s.io/pause:3.9 $D_PAUSE
EOF
)" "$(awk '{print $1, $2, $3}' "$W/closure.txt" | sort)"
"${CL[@]}" --json "$PKG" >"$W/closure.json" 2>"$W/closure.err"
rc_eq "app closure --json: exit 0" 0 $? "$W/closure.err"
t_eq "app closure --json: package" "$PKG $D_PKG" "$(jq -r '"\(.package.ref) \(.package.digest)"' "$W/closure.json" 2>&1)"
t_eq "app closure --json: components" \
    "[\"registry.example.com/charts/hello:1.2.3 $D_CHART\",\"registry.example.com/compose/hello:1.2.3 $D_COMPOSE\"]" \
    "$(jq -c '[.components[] | "\(.ref) \(.digest)"] | sort' "$W/closure.json" 2>&1)"
t_eq "app closure --json: images with digests" \
    "[\"docker.io/library/app:1.0 $D_APP\",\"docker.io/library/busybox:1.36 $D_BUSY\",\"ghcr.io/org/web:2.0 $D_WEB\",\"registry.k8s.io/pause:3.9 $D_PAUSE\"]" \
    "$(jq -c '[.images[] | "\(.ref) \(.digest)"] | sort' "$W/closure.json" 2>&1)"
t_eq "app closure --json: the index's platforms name linux/amd64 and linux/arm64" "true true" \
    "$(jq -r '[.images[] | select(.ref=="ghcr.io/org/web:2.0") | .platforms | tostring][0] // "" | "\(contains("linux/amd64")) \(contains("linux/arm64"))"' "$W/closure.json" 2>&1)"
t_eq "app closure --json: nothing unresolved" '[]' "$(jq -c '.unresolved' "$W/closure.json" 2>&1)"
"${CL[@]}" --platform linux/arm64 "$PKG" >"$W/closure-arm.txt" 2>"$W/closure.err"
# narrowed: the org/web line names the arm64 manifest (as its digest, or beside the index digest)
# and not the amd64 one
t_eq "app closure --platform linux/arm64: org/web narrowed to its arm64 manifest" "1 0" \
    "$(grep -E '^image ghcr.io/org/web:2.0 ' "$W/closure-arm.txt" | grep -c "$D_WEB_ARM") $(grep -E '^image ghcr.io/org/web:2.0 ' "$W/closure-arm.txt" | grep -c "$D_WEB_AMD")"
"${CL[@]}" --platform linux/arm64 --json "$PKG" >"$W/closure-arm.json" 2>"$W/closure.err"
t_eq "app closure --platform linux/arm64 --json: org/web's platforms are linux/arm64 only" "true false" \
    "$(jq -r '[.images[] | select(.ref=="ghcr.io/org/web:2.0") | .platforms | tostring][0] // "" | "\(contains("linux/arm64")) \(contains("linux/amd64"))"' "$W/closure-arm.json" 2>&1)"
"${CL[@]}" registry.example.com/apps/broken:1.0.0 >"$W/broken.txt" 2>"$W/broken.err"
rc_eq "app closure: an image missing upstream -> exit 1" 1 $? "$W/broken.err"
t_check "app closure: ... it is printed as unresolved with a reason ($(grep '^unresolved' "$W/broken.txt" | head -1))" \
    grep -qE '^unresolved (image )?docker.io/library/missing:0.1 .+' "$W/broken.txt"
t_check "app closure: ... and what resolved is still printed" \
    grep -qE "^image docker.io/library/app:1.0 $D_APP( |\$)" "$W/broken.txt"
"${CL[@]}" --json registry.example.com/apps/broken:1.0.0 >"$W/broken.json" 2>"$W/broken.err"
rc_eq "app closure --json: an image missing upstream -> exit 1" 1 $? "$W/broken.err"
t_eq "app closure --json: ... listed under unresolved" true \
    "$(jq -c '.unresolved | tostring | contains("docker.io/library/missing:0.1")' "$W/broken.json" 2>&1)"

# a Helm component from a classic HTTP chart repository (A's own, ChartMuseum's API)
t_eq "fixture: chart hello 1.2.3 uploaded to A's chart repository (POST /api/charts)" 201 \
    "$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$W/hello-1.2.3.tgz" "$A/api/charts")"
$APP package "$W/pkg/httphelm" --id httphelm --helm "$A@1.2.3"
run "fixture: berth app push registry.example.com/apps/httphelm:1.0.0 (helm repository: $A)" \
    "$BERTH" app push "$W/pkg/httphelm" "$A/registry.example.com/apps/httphelm:1.0.0"
"${CL[@]}" registry.example.com/apps/httphelm:1.0.0 >"$W/cl.http" 2>&1
rc_eq "app closure of a package whose chart is in an HTTP repository" 0 $? "$W/cl.http"
t_eq "... the chart: its URL from index.yaml, the archive's sha256" \
    "chart $A/charts/hello-1.2.3.tgz sha256:$(t_sha256 "$W/hello-1.2.3.tgz")" "$(grep '^chart ' "$W/cl.http")"
t_eq "... the images the chart runs, with their digests" "$(printf '%s\n' \
    "image docker.io/library/busybox:1.36 $D_BUSY" "image ghcr.io/org/web:2.0 $D_WEB" \
    "image registry.k8s.io/pause:3.9 $D_PAUSE" | sort)" \
    "$(awk '$1=="image" {print $1, $2, $3}' "$W/cl.http" | sort)"

# ... and its bundle carries that chart as an OCI chart artifact, listed by the importing berth's
# chart repository
run "bundle create --closure of httphelm (its chart from an HTTP repository)" \
    "$BERTH" bundle create --closure --registry "$A" -o "$W/http.tar" registry.example.com/apps/httphelm:1.0.0
t_check "... carries the chart as charts/hello:1.2.3" bash -c "$APP bundle-ls '$W/http.tar' | grep -q '^charts/hello:1.2.3 '"
berth_start "$T_TMP/h" || t_fail "berth H starts"
H=$BERTH_URL
run "bundle import http.tar --to H" "$BERTH" bundle import "$W/http.tar" --to "$H"
t_check "H's index.yaml lists hello 1.2.3" bash -c "curl -s '$H/index.yaml' | grep -qE 'version: \"?1.2.3'"
t_eq "H serves charts/hello-1.2.3.tgz byte-identical to the repository's" "$(t_sha256 "$W/hello-1.2.3.tgz")" \
    "$(curl -s "$H/charts/hello-1.2.3.tgz" | sha256sum | cut -d' ' -f1)"
t_eq "H has the package too" 200 "$(curl -s -o /dev/null -w '%{http_code}' -H "$PL_ACCEPT" "$H/v2/registry.example.com/apps/httphelm/manifests/1.0.0")"
berth_stop

# ---- 4. berth bundle create ----------------------------------------------------------------
run "bundle create --closure -o b.tar $PKG" \
    "$BERTH" bundle create --closure --registry "$A" -o "$W/b.tar" "$PKG"
$APP bundle-ls "$W/b.tar" --blobs >"$W/b.ls" 2>&1
rc_eq "b.tar is an OCI layout whose every blob has its digest" 0 $? "$W/b.ls"
t_eq "b.tar: org.opencontainers.image.ref.name = the original references" \
    "$(sort <<EOF
$PKG $D_PKG
registry.example.com/charts/hello:1.2.3 $D_CHART
registry.example.com/compose/hello:1.2.3 $D_COMPOSE
docker.io/library/app:1.0 $D_APP
docker.io/library/busybox:1.36 $D_BUSY
ghcr.io/org/web:2.0 $D_WEB
registry.k8s.io/pause:3.9 $D_PAUSE
EOF
)" "$(awk '$1!="blob" && $1!="-" {print $1, $2}' "$W/b.ls" | sort)"
awk '$1=="blob" {print $2}' "$W/b.ls" | sort >"$W/b.blobs"
missing() { # missing LAYOUT DIGEST: digests reachable from it that b.tar lacks
    pl_blob_digests "$1" "$2" | sort -u | comm -23 - "$W/b.blobs"
}
t_eq "b.tar holds every manifest, config and layer of the 4 images (both arches of org/web)" "" \
    "$(missing "$W/app" "$D_APP")$(missing "$W/busybox" "$D_BUSY")$(missing "$W/web" "$D_WEB")$(missing "$W/pause" "$D_PAUSE")"
t_check "b.tar holds the package's referrer (the signature) and its payload" \
    bash -c "grep -qx '$D_SIG' '$W/b.blobs' && grep -qx '$(jq -r '.layers[0].digest' "$W/sig/blobs/sha256/${D_SIG#sha256:}")' '$W/b.blobs'"
# umoci reads the layout too (unpacked from the tar: umoci takes directories)
mkdir -p "$W/umoci" && tar -xf "$W/b.tar" -C "$W/umoci"
t_eq "umoci ls lists the 7 original references" "$(printf '%s\n' "$PKG" registry.example.com/charts/hello:1.2.3 \
    registry.example.com/compose/hello:1.2.3 $IMAGES | sort)" "$(umoci ls --layout "$W/umoci" 2>&1 | sort)"
run "umoci unpack --rootless docker.io/library/app:1.0" \
    umoci unpack --rootless --image "$W/umoci:docker.io/library/app:1.0" "$W/umoci-app"
rm -rf "$W/skdir"
run "skopeo copy oci-archive:b.tar:docker.io/library/app:1.0 dir:" \
    "${SK[@]}" copy -q "oci-archive:$W/b.tar:docker.io/library/app:1.0" "dir:$W/skdir"
t_eq "... the copied manifest is the upstream one" "$D_APP" "sha256:$(t_sha256 "$W/skdir/manifest.json" 2>/dev/null)"
run "bundle create of a http://host:port/repo:tag REF (no --registry)" \
    "$BERTH" bundle create -o "$W/plain.tar" "http://$UH/library/app:1.0"
t_eq "... its ref.name is repo:tag" "library/app:1.0 $D_APP" \
    "$($APP bundle-ls "$W/plain.tar" 2>&1 | awk '$1!="-" {print $1, $2}')"
run "bundle create --platform linux/arm64 ghcr.io/org/web:2.0" \
    "$BERTH" bundle create --platform linux/arm64 --registry "$A" -o "$W/arm.tar" ghcr.io/org/web:2.0
$APP bundle-ls "$W/arm.tar" --blobs >"$W/arm.ls" 2>&1
t_eq "... holds the arm64 manifest and not the amd64 one" "1 0" \
    "$(grep -c "^blob $D_WEB_ARM " "$W/arm.ls") $(grep -c "^blob $D_WEB_AMD " "$W/arm.ls")"
run "bundle create --closure -o b.tar.zst" \
    "$BERTH" bundle create --closure --registry "$A" -o "$W/b.tar.zst" "$PKG"
t_check "... is zstd-compressed and a valid layout" bash -c "zstd -tq '$W/b.tar.zst' && $APP bundle-ls '$W/b.tar.zst'"
run "bundle create --closure -o b.tar.gz" \
    "$BERTH" bundle create --closure --registry "$A" -o "$W/b.tar.gz" "$PKG"
t_check "... is gzip-compressed and a valid layout" bash -c "gzip -t '$W/b.tar.gz' && $APP bundle-ls '$W/b.tar.gz'"

# berth's own store as the source (-c), read while A serves: no server needed
"$BERTH" app closure --registry "$A" "$PKG" 2>&1 | sort >"$W/cl.api"
OWN=(env REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY="$T_TMP/a/data" "$BERTH") # A's storage, as berth_start set it
"${OWN[@]}" app closure -c "$T_TMP/a/config.yml" "$PKG" >"$W/cl.own" 2>&1
rc_eq "app closure -c A's config (its own store)" 0 $? "$W/cl.own"
t_eq "... lists what the closure through A's API lists" "$(cat "$W/cl.api")" "$(sort "$W/cl.own")"
run "bundle create --closure -c A's config (its own store)" \
    "${OWN[@]}" bundle create --closure -c "$T_TMP/a/config.yml" -o "$W/own.tar" "$PKG"
$APP bundle-ls "$W/own.tar" --blobs >"$W/own.ls" 2>&1
t_eq "... the same artifacts and blobs as b.tar" "$(sort "$W/b.ls")" "$(sort "$W/own.ls")"
t_check "app closure -c refuses a URL reference" bash -c \
    "! '$BERTH' app closure -c '$T_TMP/a/config.yml' '$A/registry.example.com/apps/hello:1.0.0' 2>/dev/null"

# ---- 4b. the specification's helm + compose example, its package given by URL -------------
# (data-model/.../ApplicationDescription-helm_and_compose.yaml with its components pointed at
# this test's chart and compose archive). The package lives in docker-registry U, the components
# and images are read through A: the bundle keeps the package's own name, and an empty berth E
# that imports it resolves the whole application offline.
SPEC=$W/spec
mkdir -p "$SPEC/resources" "$W/files/digitron"
# an older compose component whose packageLocation is a plain compose.yaml on a web server
printf 'services:\n  tool:\n    image: docker.io/library/busybox:1.36\n' >"$W/files/digitron/compose.yaml"
FP=$(t_port)
FH=127.0.0.1:$FP
(cd "$W/files" && exec python3 -m http.server --bind 127.0.0.1 "$FP") >"$W/files.log" 2>&1 &
FPID=$!
T_PIDS+=("$FPID")
t_wait_http "http://$FH/" || t_fail "web server for the compose.yaml starts"
python3 "$T_ROOT/tests/fixtures/mkmargo.py" mutate "$T_ROOT/tests/fixtures/margo/valid/data-model-helm_and_compose.yaml" \
    'deploymentProfiles[0].components[0].properties.repository=oci://registry.example.com/charts/hello' \
    'deploymentProfiles[0].components[0].properties.revision=1.2.3' \
    'deploymentProfiles[0].components[1].properties.repository=oci://registry.example.com/charts/hello' \
    'deploymentProfiles[0].components[1].properties.revision=1.2.3' \
    'deploymentProfiles[1].components[0].properties={repository: "oci://registry.example.com/compose/hello", revision: 1.2.3}' \
    "deploymentProfiles[2]={type: compose, id: digitron-legacy, components: [{name: digitron-legacy, properties: {packageLocation: 'http://$FH/digitron/compose.yaml'}}]}" \
    >"$SPEC/margo.yaml"
for f in ndo-logo.png description.md release-notes.md license.pdf; do echo "$f" >"$SPEC/resources/$f"; done
run "fixture: berth app push of the specification's helm + compose example to U (acme/digitron:1.2.1)" \
    "$BERTH" app push "$SPEC" "http://$UH/acme/digitron"
D_SPEC=$(mdigest "$U" acme/digitron 1.2.1)
run "bundle create --closure --registry A http://U/acme/digitron:1.2.1 (the package elsewhere than --registry)" \
    "$BERTH" bundle create --closure --registry "$A" -o "$W/spec.tar" "http://$UH/acme/digitron:1.2.1"
t_eq "... the bundle names the package as given (acme/digitron:1.2.1), not docker.io/..." \
    "acme/digitron:1.2.1 $D_SPEC" "$($APP bundle-ls "$W/spec.tar" 2>&1 | awk '$1 ~ /acme\/digitron/ {print $1, $2}')"
t_eq "... and carries the plain compose.yaml, named after its URL" "127.0.0.1-$FP/digitron/compose.yaml:url" \
    "$($APP bundle-ls "$W/spec.tar" 2>&1 | awk '$1 ~ /compose.yaml:url$/ {print $1}')"
kill "$FPID" && wait "$FPID" 2>/dev/null # offline from here on
berth_start "$T_TMP/e" || t_fail "berth E starts"
E=$BERTH_URL
run "bundle import spec.tar --to E (empty, no mirrors)" "$BERTH" bundle import "$W/spec.tar" --to "$E"
t_eq "E holds the package under its own name" "$D_SPEC" "$(mdigest "$E" acme/digitron 1.2.1)"
t_eq "app inspect on E's copy" "id: com-northstartida-digitron-orchestrator|version: 1.2.1|profile: helm com-northstartida-digitron-orchestrator-helm-a|profile: compose com-northstartida-digitron-orchestrator-compose-a|profile: compose digitron-legacy" \
    "$("$BERTH" app inspect "$E/acme/digitron:1.2.1" 2>&1 | grep -E '^(id|version|profile):' | paste -sd'|')"
"$BERTH" app closure --registry "$E" "$E/acme/digitron:1.2.1" >"$W/cl.e" 2>&1
rc_eq "app closure on E's copy resolves everything offline (exit 0)" 0 $? "$W/cl.e"
t_eq "... the package, the chart, the compose archive, the carried compose.yaml and the 4 images, with the digests upstream has" "$(sort <<EOF2
chart registry.example.com/charts/hello:1.2.3 $D_CHART
compose http://$FH/digitron/compose.yaml sha256:$(t_sha256 "$W/files/digitron/compose.yaml")
compose registry.example.com/compose/hello:1.2.3 $D_COMPOSE
image docker.io/library/app:1.0 $D_APP
image docker.io/library/busybox:1.36 $D_BUSY
image ghcr.io/org/web:2.0 $D_WEB
image registry.k8s.io/pause:3.9 $D_PAUSE
package acme/digitron:1.2.1 $D_SPEC
EOF2
)" "$(awk '{print $1, $2, $3}' "$W/cl.e" | sort -u)"
berth_stop

# ---- 5. berth bundle import --to a fresh berth B (no mirrors) ------------------------------
berth_start "$T_TMP/b" || { t_fail "berth B starts"; t_finish; }
B=$BERTH_URL
BH=127.0.0.1:$BERTH_PORT
run "bundle import b.tar --to B" "$BERTH" bundle import "$W/b.tar" --to "$B"
state "$B" >"$W/b.state1"
t_eq "B's catalog: the 7 repositories named after ref.name" \
    '["docker.io/library/app","docker.io/library/busybox","ghcr.io/org/web","registry.example.com/apps/hello","registry.example.com/charts/hello","registry.example.com/compose/hello","registry.k8s.io/pause"]' \
    "$(head -1 "$W/b.state1")"
t_eq "B's tags" "docker.io/library/app [\"1.0\"]|docker.io/library/busybox [\"1.36\"]|ghcr.io/org/web [\"2.0\"]|registry.example.com/apps/hello [\"1.0.0\"]|registry.example.com/charts/hello [\"1.2.3\"]|registry.example.com/compose/hello [\"1.2.3\"]|registry.k8s.io/pause [\"3.9\"]" \
    "$(sed -n '2,8p' "$W/b.state1" | paste -sd'|')"
# byte-identical with A: manifest and every blob, B read containerd-style (?ns=)
same_as_a() { # same_as_a REPO TAG: B's /v2/REPO?ns=registry.example.com vs A's registry.example.com/REPO
    local r=$1 t=$2 d
    curl -sf -H "$PL_ACCEPT" -o "$W/a.m" "$A/v2/registry.example.com/$r/manifests/$t" || { echo "A: no $r:$t"; return 1; }
    curl -sf -H "$PL_ACCEPT" -o "$W/b.m" "$B/v2/$r/manifests/$t?ns=registry.example.com" || { echo "B: no $r:$t?ns="; return 1; }
    cmp "$W/a.m" "$W/b.m" || return 1
    for d in $(jq -r '.config.digest, .layers[].digest' "$W/a.m"); do
        curl -sf -o "$W/a.b" "$A/v2/registry.example.com/$r/blobs/$d" || { echo "A: no blob $d"; return 1; }
        curl -sf -o "$W/b.b" "$B/v2/$r/blobs/$d?ns=registry.example.com" || { echo "B: no blob $r@$d?ns="; return 1; }
        cmp "$W/a.b" "$W/b.b" || return 1
    done
}
t_check "B: the package (manifest, margo.yaml, resources) is byte-identical to A's" same_as_a apps/hello 1.0.0
t_check "B: the chart (manifest, config, .tgz) is byte-identical to A's" same_as_a charts/hello 1.2.3
t_check "B: the compose archive (manifest, archive) is byte-identical to A's" same_as_a compose/hello 1.2.3
t_eq "B: the referrers API lists the signature" "referrers [\"$D_SIG\"]" "$(tail -1 "$W/b.state1")"
run "bundle import b.tar again" "$BERTH" bundle import "$W/b.tar" --to "$B"
state "$B" >"$W/b.state2"
t_check "... is a no-op (same catalog, tags and referrers)" same_state "$W/b.state1" "$W/b.state2"

# ---- 6. containerd pulls every image from B with hosts.toml for the original registries ----
containerd_start "$T_TMP/ctd" || t_fail "private containerd starts" "$(tail -5 "$T_TMP/ctd/containerd.log")"
# hosts_dir DIR HOST:PORT: hosts.toml for docker.io, ghcr.io, registry.k8s.io -> http://HOST:PORT
# (server is the same host, so that nothing ever leaves the machine and an error is berth's)
hosts_dir() {
    local r
    for r in docker.io ghcr.io registry.k8s.io; do
        mkdir -p "$1/$r"
        printf 'server = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$2" "$2" >"$1/$r/hosts.toml"
    done
}
# ctr_pull_all LABEL HOSTSDIR: pulls the 4 images, checks their digests, removes them again.
ctr_pull_all() {
    local ref got=""
    for ref in $IMAGES; do
        t_check "$1: ctr images pull $ref" "${CTR[@]}" images pull --hosts-dir "$2" --snapshotter native "$ref"
    done
    for ref in $IMAGES; do got+="$("${CTR[@]}" images ls 2>&1 | awk -v r="$ref" '$1==r {print $3}') "; done
    t_eq "$1: containerd has the upstream digests" "$D_APP $D_BUSY $D_WEB $D_PAUSE " "$got"
    # shellcheck disable=SC2086
    "${CTR[@]}" images rm --sync $IMAGES >/dev/null 2>&1
}
hosts_dir "$W/hosts-b" "$BH"
ctr_pull_all "from B" "$W/hosts-b"

# ---- 7. offline import (-c) into a stopped berth C's storage -------------------------------
mkdir -p "$T_TMP/c"
printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\n' "$T_TMP/c/data" >"$T_TMP/c/config.yml"
berth_start "$T_TMP/c" && berth_stop
run "bundle import b.tar -c (C stopped)" "$BERTH" bundle import "$W/b.tar" -c "$T_TMP/c/config.yml"
berth_start "$T_TMP/c" || t_fail "berth C starts after the offline import" "$(tail -5 "$T_TMP/c/berth.log")"
C=$BERTH_URL
state "$C" >"$W/c.state"
t_check "C shows what B shows (catalog, tags, referrers)" same_state "$W/b.state1" "$W/c.state"
hosts_dir "$W/hosts-c" "127.0.0.1:$BERTH_PORT"
ctr_pull_all "from C" "$W/hosts-c"

# kill -9 during offline imports, at different moments: the store stays consistent (fsck clean)
# and a last import completes it
mkdir -p "$T_TMP/k"
printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\n' "$T_TMP/k/data" >"$T_TMP/k/config.yml"
fsck_bad=""
for delay in 0.005 0.01 0.02 0.04 0.08 0.15; do
    "$BERTH" bundle import "$W/b.tar" -c "$T_TMP/k/config.yml" >/dev/null 2>&1 &
    kp=$!
    sleep "$delay"
    kill -9 "$kp" 2>/dev/null
    wait "$kp" 2>/dev/null
    "$BERTH" fsck -c "$T_TMP/k/config.yml" >"$W/kfsck.out" 2>&1 || fsck_bad+=" after ${delay}s: $(tail -2 "$W/kfsck.out" | tr '\n' ' ')"
done
t_eq "offline import killed -9 at 6 moments: berth fsck clean after each" "" "$fsck_bad"
run "... and one more import completes it" "$BERTH" bundle import "$W/b.tar" -c "$T_TMP/k/config.yml"
berth_start "$T_TMP/k" || t_fail "berth K starts after the killed imports" "$(tail -5 "$T_TMP/k/berth.log")"
state "$BERTH_URL" >"$W/k.state"
t_check "K shows what B shows (catalog, tags, referrers)" same_state "$W/b.state1" "$W/k.state"
berth_stop

# ---- 8. damaged bundles are refused and nothing becomes visible ----------------------------
berth_start "$T_TMP/b2" || { t_fail "berth B2 starts"; t_finish; }
B2=$BERTH_URL
state "$B2" >"$W/b2.state0"
if [ -s "$W/b.tar" ]; then
    $APP tamper "$W/b.tar" "$W/bad.tar" "$L_APP" >/dev/null
    out=$("$BERTH" bundle import "$W/bad.tar" --to "$B2" 2>&1)
    rc=$?
    t_check "tampered bundle (a byte flipped in layer $L_APP): import fails (exit $rc)" test "$rc" -ne 0
    t_check "... naming the digest ($(head -c 200 <<<"$out" | tr '\n' ' '))" grep -q "${L_APP#sha256:}" <<<"$out"
    state "$B2" >"$W/b2.state1"
    t_check "... and nothing is visible in B2 (catalog, tags)" cmp "$W/b2.state0" "$W/b2.state1"
    t_eq "... not even the untouched package manifest by digest" "" "$(mdigest "$B2" registry.example.com/apps/hello "$D_PKG")"
    head -c $(($(stat -c %s "$W/b.tar") * 6 / 10)) "$W/b.tar" >"$W/trunc.tar"
    out=$("$BERTH" bundle import "$W/trunc.tar" --to "$B2" 2>&1)
    rc=$?
    t_check "truncated bundle: import fails (exit $rc: $(head -c 200 <<<"$out" | tr '\n' ' '))" test "$rc" -ne 0 -a -n "$out"
    state "$B2" >"$W/b2.state2"
    t_check "... and nothing is visible in B2" cmp "$W/b2.state0" "$W/b2.state2"
    # the same damage offline (-c): refused, and the berth started on that storage shows nothing
    mkdir -p "$T_TMP/d"
    printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\n' "$T_TMP/d/data" >"$T_TMP/d/config.yml"
    out=$("$BERTH" bundle import "$W/bad.tar" -c "$T_TMP/d/config.yml" 2>&1)
    rc=$?
    t_check "tampered bundle, offline (-c): import fails naming the digest (exit $rc)" \
        bash -c "[ $rc -ne 0 ] && grep -q '${L_APP#sha256:}' <<<\"\$1\"" _ "$out"
    if berth_start "$T_TMP/d"; then
        state "$BERTH_URL" >"$W/d.state"
        t_check "... and a berth started on that storage shows nothing" cmp "$W/b2.state0" "$W/d.state"
        berth_stop
    else
        t_fail "berth D starts on the storage of the refused offline import" "$(tail -5 "$T_TMP/d/berth.log")"
    fi
else
    t_fail "damaged bundles" "no b.tar to damage"
fi
# the compressed bundles import too
run "bundle import b.tar.zst --to B2" "$BERTH" bundle import "$W/b.tar.zst" --to "$B2"
state "$B2" >"$W/b2.state3"
t_check "... B2 then shows what B shows" same_state "$W/b.state1" "$W/b2.state3"
t_check "... and serves docker.io/library/app:1.0 intact" pl_verify "$B2" docker.io/library/app 1.0 "$D_APP"
run "bundle import b.tar.gz --to B2 (same content: no-op)" "$BERTH" bundle import "$W/b.tar.gz" --to "$B2"
state "$B2" >"$W/b2.state4"
t_check "... nothing changed" same_state "$W/b2.state3" "$W/b2.state4"

# ---- 9. berth bundle serve -----------------------------------------------------------------
P=$(t_port)
"$BERTH" bundle serve "$W/b.tar" --addr "127.0.0.1:$P" >"$W/serve.log" 2>&1 &
T_PIDS+=("$!")
S=http://127.0.0.1:$P
if t_wait_http "$S/v2/"; then
    hosts_dir "$W/hosts-s" "127.0.0.1:$P"
    ctr_pull_all "from bundle serve" "$W/hosts-s"
    curl -s -H "$PL_ACCEPT" -o "$W/s.m" "$S/v2/apps/hello/manifests/1.0.0?ns=registry.example.com"
    t_check "serve: the package manifest (?ns=registry.example.com) is byte-identical to A's" cmp "$W/pkg.manifest" "$W/s.m"
    t_eq "serve: path-prefix name docker.io/library/app:1.0" "$D_APP" "$(mdigest "$S" docker.io/library/app 1.0)"
    t_eq "serve: the chart by its original name" "$D_CHART" "$(mdigest "$S" registry.example.com/charts/hello 1.2.3)"
    t_eq "serve: referrers of the package list the signature" "[\"$D_SIG\"]" \
        "$(curl -s "$S/v2/apps/hello/referrers/$D_PKG?ns=registry.example.com" | jq -c '[.manifests[]?.digest]' 2>&1)"
    t_eq "serve: PUT manifest -> 405 UNSUPPORTED" "405 UNSUPPORTED" \
        "$(curl -s -o "$W/s.e" -w '%{http_code}' -X PUT -H "Content-Type: $MT_OCI_MANIFEST" --data-binary @"$W/pkg.manifest" \
            "$S/v2/docker.io/library/app/manifests/evil") $(jq -r '.errors[0].code' "$W/s.e" 2>&1)"
    t_eq "serve: POST blob upload -> 405 UNSUPPORTED" "405 UNSUPPORTED" \
        "$(curl -s -o "$W/s.e" -w '%{http_code}' -X POST "$S/v2/library/app/blobs/uploads/?ns=docker.io") $(jq -r '.errors[0].code' "$W/s.e" 2>&1)"
    t_eq "serve: DELETE manifest -> 405" 405 \
        "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$S/v2/docker.io/library/app/manifests/$D_APP")"
    t_eq "serve: still serves the image after the refused writes" "$D_APP" "$(mdigest "$S" app '1.0?ns=docker.io')"
else
    t_fail "bundle serve b.tar answers" "$(tail -c 400 "$W/serve.log")"
fi
mkdir -p "$W/bdir"
tar -xf "$W/b.tar" -C "$W/bdir"
P2=$(t_port)
"$BERTH" bundle serve "$W/bdir" --addr "127.0.0.1:$P2" >"$W/serve2.log" 2>&1 &
T_PIDS+=("$!")
if t_wait_http "http://127.0.0.1:$P2/v2/"; then
    t_eq "serve DIR (an unpacked layout): registry.k8s.io/pause:3.9 via ?ns=" "$D_PAUSE" \
        "$(mdigest "http://127.0.0.1:$P2" pause '3.9?ns=registry.k8s.io')"
else
    t_fail "bundle serve DIR answers" "$(tail -c 400 "$W/serve2.log")"
fi

t_check "A is still serving" curl -sf -o /dev/null "$A/v2/"
t_finish
