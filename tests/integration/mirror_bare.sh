#!/usr/bin/env bash
# Bare names and the default upstream (issue 16, items 1, 3 and 5): what Docker's
# registry-mirrors requests look like (/v2/library/busybox/..., no ?ns=, no mirror prefix), with
# `mirrors: docker.io` and with registry:2's `proxy.remoteurl`; an answer about a blob is true
# for the repository asked; a push never stands in for mirrored content.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"
t_need_tools curl jq skopeo docker-registry
SK=(skopeo --insecure-policy)
NOTLS=(--src-tls-verify=false --dest-tls-verify=false)
W=$T_TMP/w
mkdir -p "$W/u" "$W/l" "$W/x"
MT_OCI=application/vnd.oci.image.manifest.v1+json

registry_start "$T_TMP/up" || { t_fail "upstream registry starts"; t_finish; }
PL_CURL=(curl -s)
pl_make_config "$W/cfg.json" hub
pl_rand_blob "$W/layer" 2000 3000
D_HUB=$(pl_push_image "$REG_URL" library/busybox latest "$W/u" "$W/cfg.json" "$W/layer") ||
    t_fail "image pushed upstream"
D_HUB=$(echo "$D_HUB" | tail -1)
LAYER="sha256:$(t_sha256 "$W/layer")"
mdigest() { curl -s -o /dev/null -D - -H "Accept: $MT_OCI" "$1" | tr -d '\r' | awk 'tolower($1)=="docker-content-digest:" {print $2}'; }
code() { curl -s -o "$W/body" -w '%{http_code}' "$@"; }

# ---- mirrors: docker.io ----------------------------------------------------------------------
mkdir -p "$T_TMP/a"
cat >"$T_TMP/a/config.yml" <<YML
version: 0.1
mirrors:
  docker.io:
    urls: [$REG_URL]
    repositories: ["library/*"]
YML
berth_start "$T_TMP/a" || { t_fail "berth starts (mirrors: docker.io)"; t_finish; }
U=$BERTH_URL
t_eq "1. a bare name (/v2/library/busybox) is pulled through the Docker Hub mirror" \
    "$(mdigest "$REG_URL/v2/library/busybox/manifests/latest")" "$(mdigest "$U/v2/library/busybox/manifests/latest")"
t_eq "1. ... and so is a one-component name (busybox: library/busybox)" \
    "$(mdigest "$REG_URL/v2/library/busybox/manifests/latest")" "$(mdigest "$U/v2/busybox/manifests/latest")"
t_eq "1. ... its layer too" 200 "$(code "$U/v2/library/busybox/blobs/$LAYER")"
t_check "1. ... cached under docker.io/library/busybox" \
    bash -c "curl -s '$U/v2/_catalog' | jq -e '.repositories | index(\"docker.io/library/busybox\")'"
out=$(code -X POST "$U/v2/library/busybox/blobs/uploads/")
t_eq "5. a push to a bare name the Docker Hub mirror serves is refused (403)" 403 "$out"
t_check "5. ... saying why ($(head -c 160 "$W/body"))" grep -q "would stand in for the mirrored one" "$W/body"
pl_make_config "$W/lcfg.json" local
pl_rand_blob "$W/llayer" 2000 3000
t_check "5. a push to a bare name the mirror does not serve works (site/app)" \
    pl_push_image "$U" site/app v1 "$W/l" "$W/lcfg.json" "$W/llayer"
t_eq "5. ... and is served from the local repository" 200 \
    "$(code -H "Accept: $MT_OCI" "$U/v2/site/app/manifests/v1")"
berth_stop

# an unrestricted Docker Hub mirror: names whose first component is a host are never Docker Hub's
mkdir -p "$T_TMP/b"
printf 'version: 0.1\nmirrors:\n  docker.io:\n    urls: [%s]\n' "$REG_URL" >"$T_TMP/b/config.yml"
berth_start "$T_TMP/b" || { t_fail "berth starts (unrestricted docker.io mirror)"; t_finish; }
t_eq "5. unrestricted mirror: a push to team/app is refused (403)" 403 \
    "$(code -X POST "$BERTH_URL/v2/team/app/blobs/uploads/")"
t_eq "5. ... a push to registry.example.com/apps/app (a host name first) is not (202)" 202 \
    "$(code -X POST "$BERTH_URL/v2/registry.example.com/apps/app/blobs/uploads/")"
t_eq "5. ... nor to localhost/app (202)" 202 "$(code -X POST "$BERTH_URL/v2/localhost/app/blobs/uploads/")"
t_eq "5. ... nor to site/team/app (three components: never Docker Hub's) (202)" 202 \
    "$(code -X POST "$BERTH_URL/v2/site/team/app/blobs/uploads/")"
berth_stop

# ---- proxy.remoteurl (registry:2's proxy mode) ------------------------------------------------
mkdir -p "$T_TMP/p"
cat >"$T_TMP/p/config.yml" <<YML
version: 0.1
proxy:
  remoteurl: $REG_URL
YML
berth_start "$T_TMP/p" || { t_fail "berth starts (proxy.remoteurl)"; t_finish; }
U=$BERTH_URL
t_eq "proxy: a bare name is pulled from the remote" \
    "$(mdigest "$REG_URL/v2/library/busybox/manifests/latest")" "$(mdigest "$U/v2/library/busybox/manifests/latest")"
t_eq "5. proxy.remoteurl alone takes no pushes, as registry:2 (405)" 405 \
    "$(code -X POST "$U/v2/library/hello/blobs/uploads/")"
t_eq "5. ... with the OCI error UNSUPPORTED" UNSUPPORTED "$(jq -r '.errors[0].code' "$W/body")"
t_eq "5. ... nor deletes" 405 "$(code -X DELETE "$U/v2/library/busybox/manifests/$D_HUB")"
berth_stop
cat >>"$T_TMP/p/config.yml" <<YML
  localpush: true
YML
berth_start "$T_TMP/p" || { t_fail "berth starts (proxy.localpush)"; t_finish; }
U=$BERTH_URL
BH=${U#http://}
t_eq "proxy: the mirrored image is still served" 200 \
    "$(code -H "Accept: $MT_OCI" "$U/v2/library/busybox/manifests/latest")"
t_eq "proxy: its layer is pulled (now in the store)" 200 "$(code "$U/v2/library/busybox/blobs/$LAYER")"
t_eq "3. HEAD of the mirrored layer under a new name is 404 there (not mirror space's 200)" 404 \
    "$(code -I "$U/v2/team/retagged/blobs/$LAYER")"
t_check "3. retag of the mirror-pulled image and push to berth (skopeo)" \
    "${SK[@]}" copy -q "${NOTLS[@]}" "docker://$BH/library/busybox:latest" "docker://$BH/team/retagged:v1"
t_eq "3. ... the retagged image is served from its own repository" 200 \
    "$(code -H "Accept: $MT_OCI" "$U/v2/team/retagged/manifests/v1")"
RL=$(curl -s -H "Accept: $MT_OCI" "$U/v2/team/retagged/manifests/v1" | jq -r '.layers[0].digest')
t_eq "3. ... with its layer" 200 "$(code "$U/v2/team/retagged/blobs/$RL")"
t_eq "3. ... byte for byte" "$RL" "sha256:$(t_sha256 "$W/body")"
berth_stop
t_finish
