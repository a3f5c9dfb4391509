#!/usr/bin/env bash
# One way in for manifests (issue 18 item 4, src/registry/ingest.c): the push-time checks run on
# every path a manifest enters the store. margo artifacts in a real docker-registry upstream
# (tests/fixtures/mkmargo.py pushes them there, as oras would) reach berth by a mirror fill and by
# `berth sync`: a broken one is refused with the push's MANIFEST_INVALID and its message (the
# checks read the margo.yaml / compose layer, which a fill fetches first), nothing of it is
# tagged, and a valid one is served byte for byte.
. "$(dirname "$0")/../lib.sh"
MK="python3 $T_ROOT/tests/fixtures/mkmargo.py"

registry_start "$T_TMP/up" || { t_fail "docker-registry starts"; t_finish; }
push_up() { # push_up NAME CMD...: the upstream stores it (201)
    local out
    out=$("${@:2}")
    [ "${out%% *}" = 201 ] || t_fail "upstream takes $1" "$out"
}
push_up "a valid package" $MK package "$REG_URL" apps/good 1.0.0
push_up "a package with a bad metadata.id" $MK package "$REG_URL" apps/bad 1.0.0 --variant bad-id
push_up "a compose archive without compose.yaml" $MK compose "$REG_URL" comp/bad 1.0.0 --variant no-compose-yaml
push_up "a package whose tag is not its version" $MK package "$REG_URL" apps/synced 1.0.0 --variant wrong-tag

mkdir -p "$T_TMP/b"
cat >"$T_TMP/b/config.yml" <<YML
version: 0.1
mirrors:
  up.example:
    urls: [$REG_URL]
    timeout: {connect: 1s, transfer: 10s}
YML
berth_start "$T_TMP/b" || { t_fail "berth starts"; t_finish; }
U=$BERTH_URL
ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json'

refused() { # refused NAME EXPECTED-TEXT URL: 400 MANIFEST_INVALID whose message has the text
    local out code msg
    out=$(curl -s -H "$ACCEPT" -w '\n%{http_code}' "$3")
    code=${out##*$'\n'}
    msg=$(jq -r '.errors[0].code + ": " + .errors[0].message' <<<"${out%$'\n'*}" 2>/dev/null)
    if [ "$code" = 400 ] && [[ "$msg" == MANIFEST_INVALID:*"$2"* ]]; then
        t_ok "$1: 400 \"${msg#MANIFEST_INVALID: }\""
    else
        t_fail "$1" "got $code $msg"
    fi
}

refused "mirror fill: a margo package with a bad metadata.id is refused as a push is" \
    "metadata.id 'Hello_World' must match" "$U/v2/up.example/apps/bad/manifests/1.0.0"
refused "mirror fill: a compose archive without compose.yaml is refused as a push is" \
    "no compose.yaml" "$U/v2/up.example/comp/bad/manifests/1.0.0"
refused "mirror fill (?ns=): the same package, the same refusal" \
    "metadata.id 'Hello_World' must match" "$U/v2/apps/bad/manifests/1.0.0?ns=up.example"

up_body=$(curl -s -H "$ACCEPT" "$REG_URL/v2/apps/good/manifests/1.0.0" | sha256sum)
got_body=$(curl -s -H "$ACCEPT" "$U/v2/up.example/apps/good/manifests/1.0.0" | sha256sum)
t_eq "mirror fill: a valid package is served byte for byte" "$up_body" "$got_body"

# `berth sync` fills through the same code (next to the running server, same store)
cat >"$T_TMP/list.yml" <<YML
images:
  - up.example/apps/synced:latest
YML
REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$T_TMP/b/data "$BERTH" sync -c "$T_TMP/b/config.yml" "$T_TMP/list.yml" >"$T_TMP/sync.out" 2>&1
t_eq "sync: a package whose tag is not its version fails the sync" 1 "$?"
t_check "sync: reports margo's rule" grep -q "tag 'latest' must equal the version '1.0.0'" "$T_TMP/sync.out"

# with the upstream gone, only what the store holds is served: the valid package, none of the rest
kill "$REG_PID" 2>/dev/null
wait "$REG_PID" 2>/dev/null
for r in apps/bad comp/bad apps/synced:latest; do
    ref=${r#*:}
    [ "$ref" = "$r" ] && ref=1.0.0
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$ACCEPT" "$U/v2/up.example/${r%%:*}/manifests/$ref")
    t_check "nothing of the refused ${r%%:*} was stored (upstream down: $code)" test "$code" != 200
done
t_eq "the valid package was stored (upstream down: served from the store)" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' -H "$ACCEPT" "$U/v2/up.example/apps/good/manifests/1.0.0")"
t_finish
