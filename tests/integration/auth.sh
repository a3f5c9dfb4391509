#!/usr/bin/env bash
# Authentication and authorization (issue 6): Basic sign-in against a bcrypt htpasswd file (re-read
# when it changes), and an authorization matrix, users x repositories x actions (pull, push,
# delete, catalog, Helm upload and delete, mirror fill), through the real HTTP API, with curl,
# skopeo and containerd's ctr signing in.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"
MT_OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
PL_ACCEPT="Accept: $MT_OCI_MANIFEST"

HT="$T_TMP/htpasswd"
htpasswd -cbB "$HT" alice alice-pw 2>/dev/null
htpasswd -bB "$HT" bob bob-pw 2>/dev/null
htpasswd -bB "$HT" carol carol-pw 2>/dev/null

registry_start "$T_TMP/up" || { t_fail "upstream registry starts"; t_finish; }
UPH=${REG_URL#http://}

cat >"$T_TMP/config.yml" <<YML
version: 0.1
storage:
  delete: {enabled: true}
auth:
  htpasswd:
    realm: berth-test
    path: $HT
access:
  default: [pull]
  admins: [alice]
  groups:
    dev: [bob]
  rules:
    - {repositories: ["team/*", "charts/*"], groups: [dev], actions: [pull, push]}
    - {repositories: ["public/*"], users: ["*", anonymous], actions: [pull]}
    - {repositories: ["secret/*"], users: ["*"], actions: [none]}
mirrors:
  $UPH:
    urls: [$REG_URL]
YML
berth_start "$T_TMP" || { t_fail "berth starts"; t_finish; }
U=$BERTH_URL
H=${U#http://}

# ---- content, pushed by the admin (and one image upstream, for the mirror) ----
PL_CURL=(curl -s -u alice:alice-pw)
for repo in team/app public/app secret/app other/app; do
    pl_make_config "$T_TMP/cfg.json" "$repo"
    pl_rand_blob "$T_TMP/layer" 1000 2000
    pl_push_image "$U" "$repo" v1 "$T_TMP" "$T_TMP/cfg.json" "$T_TMP/layer" >/dev/null ||
        t_fail "admin pushes $repo:v1"
done
PL_CURL=(curl -s)
pl_make_config "$T_TMP/ucfg.json" upstream
pl_rand_blob "$T_TMP/ulayer" 1000 2000
pl_push_image "$REG_URL" lib/up v1 "$T_TMP/u" "$T_TMP/ucfg.json" "$T_TMP/ulayer" >/dev/null 2>&1 ||
    { mkdir -p "$T_TMP/u" && pl_push_image "$REG_URL" lib/up v1 "$T_TMP/u" "$T_TMP/ucfg.json" "$T_TMP/ulayer" >/dev/null; } ||
    t_fail "image pushed upstream"

creds() { # creds USER: curl arguments for USER (anonymous: none)
    case $1 in
    anonymous) ;;
    *) printf -- '-u\n%s:%s-pw\n' "$1" "$1" ;;
    esac
}
code_as() { # code_as USER CURLARGS...: the HTTP status
    local u=$1
    shift
    mapfile -t c < <(creds "$u")
    curl -s -o "$T_TMP/body" -w '%{http_code}' "${c[@]}" "$@"
}
pull() { code_as "$1" -H "$PL_ACCEPT" "$U/v2/$2/manifests/v1"; }
push() { code_as "$1" -X POST "$U/v2/$2/blobs/uploads/"; }
# delete: of a tag that exists, re-created by the admin after each successful delete
delete() {
    local c
    c=$(code_as "$1" -X DELETE "$U/v2/$2/manifests/v1")
    if [ "$c" = 202 ]; then
        PL_CURL=(curl -s -u alice:alice-pw)
        pl_push_manifest "$U" "$2" v1 "$T_TMP/manifest.json.$3" >/dev/null
    fi
    echo "$c"
}
for repo in team/app other/app; do
    curl -s -u alice:alice-pw -H "$PL_ACCEPT" -o "$T_TMP/manifest.json.${repo%/*}" "$U/v2/$repo/manifests/v1"
done

# ---- sign-in ----
t_eq "GET /v2/ without credentials: 401" 401 "$(code_as anonymous "$U/v2/")"
t_eq "... with a Basic challenge naming the realm" 'Basic realm="berth-test"' \
    "$(curl -s -D - -o /dev/null "$U/v2/" | tr -d '\r' | sed -n 's/^[Ww][Ww][Ww]-[Aa]uthenticate: //p')"
t_eq "... and an OCI error body" UNAUTHORIZED "$(jq -r '.errors[0].code' "$T_TMP/body")"
t_eq "GET /v2/ signed in: 200" 200 "$(code_as bob "$U/v2/")"
t_eq "a wrong password: 401" 401 "$(curl -s -o /dev/null -w '%{http_code}' -u bob:nope "$U/v2/")"
t_eq "an unknown user: 401" 401 "$(curl -s -o /dev/null -w '%{http_code}' -u mallory:x "$U/v2/")"
t_eq "a malformed Authorization header: 401" 401 \
    "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Basic !!!' "$U/v2/")"
t_eq "another scheme (Bearer) is refused: 401" 401 \
    "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer abc' "$U/v2/")"
t_eq "/health stays public (load balancers)" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$U/health")"
t_check "the password is not logged" bash -c "! grep -q 'bob-pw\|nope' '$T_TMP/berth.log'"

# ---- the matrix: users x repositories x actions ----
# expected codes: pull 200 / push 202 (upload started) / delete 202; refused: 401 anonymous, 403 signed in
declare -A want=(
    [alice:pull:team/app]=200 [bob:pull:team/app]=200 [carol:pull:team/app]=200 [anonymous:pull:team/app]=401
    [alice:pull:public/app]=200 [bob:pull:public/app]=200 [carol:pull:public/app]=200 [anonymous:pull:public/app]=200
    [alice:pull:secret/app]=200 [bob:pull:secret/app]=403 [carol:pull:secret/app]=403 [anonymous:pull:secret/app]=401
    [alice:pull:other/app]=200 [bob:pull:other/app]=200 [carol:pull:other/app]=200 [anonymous:pull:other/app]=401
    [alice:push:team/app]=202 [bob:push:team/app]=202 [carol:push:team/app]=403 [anonymous:push:team/app]=401
    [alice:push:public/app]=202 [bob:push:public/app]=403 [carol:push:public/app]=403 [anonymous:push:public/app]=401
    [alice:push:secret/app]=202 [bob:push:secret/app]=403 [carol:push:secret/app]=403 [anonymous:push:secret/app]=401
    [alice:push:other/app]=202 [bob:push:other/app]=403 [carol:push:other/app]=403 [anonymous:push:other/app]=401
    [alice:delete:team/app]=202 [bob:delete:team/app]=403 [carol:delete:team/app]=403 [anonymous:delete:team/app]=401
    [alice:delete:other/app]=202 [bob:delete:other/app]=403 [carol:delete:other/app]=403 [anonymous:delete:other/app]=401
)
bad=""
n=0
for key in $(printf '%s\n' "${!want[@]}" | sort); do
    IFS=: read -r user action repo <<<"$key"
    case $action in
    pull) got=$(pull "$user" "$repo") ;;
    push) got=$(push "$user" "$repo") ;;
    delete) got=$(delete "$user" "$repo" "${repo%/*}") ;;
    esac
    n=$((n + 1))
    [ "$got" = "${want[$key]}" ] || bad+=" $key=$got(want ${want[$key]})"
    if [ "$got" = 403 ] && [ "$(jq -r '.errors[0].code' "$T_TMP/body" 2>/dev/null)" != DENIED ]; then
        bad+=" $key:403-without-DENIED"
    fi
done
t_eq "authorization matrix: $n cells (4 users x 4 repositories x pull/push/delete) as configured" "" "$bad"

# ---- catalog ----
cat_as() { mapfile -t c < <(creds "$1"); curl -s "${c[@]}" "$U/v2/_catalog" | jq -r '.repositories // [] | map(select(startswith("'"$H"'") | not)) | join(" ")'; }
t_eq "catalog (alice, admin): everything" "other/app public/app secret/app team/app" "$(cat_as alice)"
t_eq "catalog (carol): only what she may pull" "other/app public/app team/app" "$(cat_as carol)"
t_eq "catalog (anonymous): only the public repositories" "public/app" "$(cat_as anonymous)"

# ---- Helm ----
MK="python3 $T_ROOT/tests/fixtures/mkchart.py"
$MK good "$T_TMP/web-1.0.0.tgz" web 1.0.0
$MK good "$T_TMP/web-1.1.0.tgz" web 1.1.0
t_eq "Helm upload as carol (default pull): 403" 403 \
    "$(code_as carol --data-binary @"$T_TMP/web-1.0.0.tgz" "$U/api/charts")"
t_eq "... with {\"error\":...}" true "$(jq 'has("error")' "$T_TMP/body")"
t_eq "Helm upload anonymous: 401" 401 \
    "$(code_as anonymous --data-binary @"$T_TMP/web-1.0.0.tgz" "$U/api/charts")"
t_eq "Helm upload as bob (dev may push charts/*): 201" 201 \
    "$(code_as bob --data-binary @"$T_TMP/web-1.0.0.tgz" "$U/api/charts")"
t_eq "Helm upload as alice: 201" 201 \
    "$(code_as alice -F "chart=@$T_TMP/web-1.1.0.tgz" "$U/api/charts")"
t_eq "index.yaml for carol lists the chart" "1.1.0 1.0.0" \
    "$(mapfile -t c < <(creds carol); curl -s "${c[@]}" "$U/index.yaml" | python3 -c 'import sys,yaml; print(" ".join(e["version"] for e in yaml.safe_load(sys.stdin)["entries"]["web"]))')"
t_eq "index.yaml anonymous: no charts listed (no anonymous access to charts/*)" "200 {}" \
    "$(code_as anonymous "$U/index.yaml") $(python3 -c 'import sys,yaml,json; print(json.dumps(yaml.safe_load(open(sys.argv[1]))["entries"]))' "$T_TMP/body")"
t_eq "chart download anonymous: 401" 401 "$(code_as anonymous "$U/charts/web-1.1.0.tgz")"
t_eq "Helm delete as bob (no delete): 403" 403 "$(code_as bob -X DELETE "$U/api/charts/web/1.0.0")"
t_eq "Helm delete as alice: 200" 200 "$(code_as alice -X DELETE "$U/api/charts/web/1.0.0")"
t_eq "chart download as carol: 200" 200 "$(code_as carol "$U/charts/web-1.1.0.tgz")"

# ---- every other route, one table: user x route x repository -> status ----
# reads (tags, blob GET/HEAD, referrers, chart file and API) need pull on the repository; a
# mount needs push on the target (team/*) and pull on its source (else a plain upload session,
# 202, as for an unknown digest); refused: 401 anonymous, 403 signed in (Helm: 404, like a
# missing chart, except an anonymous chart download, which asks for credentials: 401)
curl -s -u alice:alice-pw -H "$PL_ACCEPT" "$U/v2/secret/app/manifests/v1" >"$T_TMP/manifest.json.secret"
for r in team secret; do
    eval "L_$r=$(jq -r '.layers[0].digest' "$T_TMP/manifest.json.$r")"
    eval "M_$r=sha256:$(t_sha256 "$T_TMP/manifest.json.$r")"
done
declare -A route=(
    [anonymous:tags:team]=401 [carol:tags:team]=200 [bob:tags:team]=200 [alice:tags:team]=200
    [anonymous:tags:secret]=401 [carol:tags:secret]=403 [bob:tags:secret]=403 [alice:tags:secret]=200
    [anonymous:blob:team]=401 [carol:blob:team]=200 [bob:blob:team]=200 [alice:blob:team]=200
    [anonymous:blob:secret]=401 [carol:blob:secret]=403 [bob:blob:secret]=403 [alice:blob:secret]=200
    [anonymous:bhead:team]=401 [carol:bhead:team]=200 [bob:bhead:team]=200 [alice:bhead:team]=200
    [anonymous:bhead:secret]=401 [carol:bhead:secret]=403 [bob:bhead:secret]=403 [alice:bhead:secret]=200
    [anonymous:referrers:team]=401 [carol:referrers:team]=200 [bob:referrers:team]=200 [alice:referrers:team]=200
    [anonymous:referrers:secret]=401 [carol:referrers:secret]=403 [bob:referrers:secret]=403 [alice:referrers:secret]=200
    [anonymous:mount:team]=401 [carol:mount:team]=403 [bob:mount:team]=201 [alice:mount:team]=201
    [anonymous:mount:secret]=401 [carol:mount:secret]=403 [bob:mount:secret]=202 [alice:mount:secret]=201
    [anonymous:chartfile:charts]=401 [carol:chartfile:charts]=200 [bob:chartfile:charts]=200 [alice:chartfile:charts]=200
    [anonymous:chartapi:charts]=404 [carol:chartapi:charts]=200 [bob:chartapi:charts]=200 [alice:chartapi:charts]=200
    [anonymous:catalog:-]=200 [carol:catalog:-]=200 [bob:catalog:-]=200 [alice:catalog:-]=200
)
bad=""
n=0
for key in $(printf '%s\n' "${!route[@]}" | sort); do
    IFS=: read -r user what r <<<"$key"
    eval "L=\${L_$r:-}; M=\${M_$r:-}"
    n=$((n + 1))
    case $what in
    tags) got=$(code_as "$user" "$U/v2/$r/app/tags/list") ;;
    blob) got=$(code_as "$user" "$U/v2/$r/app/blobs/$L") ;;
    bhead) got=$(code_as "$user" -I "$U/v2/$r/app/blobs/$L") ;;
    referrers) got=$(code_as "$user" "$U/v2/$r/app/referrers/$M") ;;
    mount) got=$(code_as "$user" -X POST "$U/v2/team/m-$user-$n/blobs/uploads/?mount=$L&from=$r/app") ;;
    chartfile) got=$(code_as "$user" "$U/charts/web-1.1.0.tgz") ;;
    chartapi) got=$(code_as "$user" "$U/api/charts/web/1.1.0") ;;
    catalog) got=$(code_as "$user" "$U/v2/_catalog") ;;
    esac
    [ "$got" = "${route[$key]}" ] || bad+=" $key=$got(want ${route[$key]})"
done
t_eq "route matrix: $n cells (4 users x tags, blobs, HEAD, referrers, mounts, chart files and API, catalog)" "" "$bad"

# ---- mirror space: pull (and fill) allowed, push refused even where rules would allow it ----
t_eq "mirror fill (first pull through berth) as carol: 200" 200 \
    "$(code_as carol -H "$PL_ACCEPT" "$U/v2/lib/up/manifests/v1?ns=$UPH")"
t_eq "mirror pull anonymous: 401" 401 \
    "$(code_as anonymous -H "$PL_ACCEPT" "$U/v2/lib/up/manifests/v1?ns=$UPH")"
t_check "mirror push as bob is refused (4xx)" bash -c \
    "c=\$(curl -s -o /dev/null -w '%{http_code}' -u bob:bob-pw -X POST '$U/v2/lib/up/blobs/uploads/?ns=$UPH'); [ \"\${c:0:1}\" = 4 ]"

# ---- the htpasswd file is re-read when it changes ----
t_eq "dave is unknown" 401 "$(curl -s -o /dev/null -w '%{http_code}' -u dave:dave-pw "$U/v2/")"
sleep 1.1
htpasswd -bB "$HT" dave dave-pw 2>/dev/null
sleep 1.1
t_eq "dave, added to the file, signs in without a restart" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' -u dave:dave-pw "$U/v2/")"
htpasswd -bB "$HT" carol carol-new 2>/dev/null
sleep 1.1
t_eq "carol's old password stops working after the change" 401 \
    "$(curl -s -o /dev/null -w '%{http_code}' -u carol:carol-pw "$U/v2/")"
t_eq "carol's new password works" 200 "$(curl -s -o /dev/null -w '%{http_code}' -u carol:carol-new "$U/v2/")"
htpasswd -bB "$HT" carol carol-pw 2>/dev/null
sleep 1.1

# ---- real clients ----
mkdir -p "$T_TMP/img"
t_check "skopeo copy (push) as bob to team/img" skopeo copy -q --dest-tls-verify=false \
    --dest-creds bob:bob-pw "docker://$H/team/app:v1" "docker://$H/team/img:v1" --src-tls-verify=false --src-creds bob:bob-pw
t_check "skopeo copy (push) as carol to team/img2 is refused" bash -c \
    "! skopeo copy -q --dest-tls-verify=false --dest-creds carol:carol-pw --src-tls-verify=false --src-creds carol:carol-pw docker://$H/team/app:v1 docker://$H/team/img2:v1"
t_check "skopeo pulls as carol to an OCI layout" skopeo copy -q --src-tls-verify=false \
    --src-creds carol:carol-pw "docker://$H/team/img:v1" "oci:$T_TMP/img:v1"
t_check "skopeo without credentials cannot pull team/img" bash -c \
    "! skopeo copy -q --src-tls-verify=false docker://$H/team/img:v1 oci:$T_TMP/img2:v1"
if containerd_start "$T_TMP/ctd"; then
    # content fetch: the test images are not runnable (random layers), so nothing is unpacked
    t_check "ctr (containerd) fetches as bob with --user" "${CTR[@]}" content fetch --plain-http \
        --user bob:bob-pw "$H/team/img:v1"
    t_check "ctr without credentials is refused" bash -c \
        "! ${CTR[*]} content fetch --plain-http $H/other/app:v1"
else
    t_fail "containerd starts" "$(tail -5 "$T_TMP/ctd/containerd.log")"
fi

# podman: login, push, pull, logout
podman_cmd "$T_TMP/podman"
# podman names an image pulled from a layout after its path, which must be lowercase
lay=/tmp/berth-podman-layout.$$
python3 "$T_ROOT/tests/fixtures/mkimage.py" image "$T_TMP/podimg" --layers 1 --seed 9 --tag v1 >/dev/null 2>&1
rm -rf "$lay" && cp -r "$T_TMP/podimg" "$lay"
id=$("${PODMAN[@]}" pull -q "oci:$lay:v1" 2>/dev/null | tail -1)
rm -rf "$lay"
t_check "podman login (Basic)" "${PODMAN[@]}" login --tls-verify=false -u bob -p bob-pw "$H"
t_check "podman push as bob to team/pod" "${PODMAN[@]}" push -q --tls-verify=false "$id" "$H/team/pod:v1"
t_check "podman pull as bob" "${PODMAN[@]}" pull -q --tls-verify=false "$H/team/pod:v1"
t_check "podman login with a wrong password fails" bash -c \
    "! ${PODMAN[*]} login --tls-verify=false -u bob -p nope $H"
"${PODMAN[@]}" logout "$H" >/dev/null 2>&1
t_check "podman pull without login is refused" bash -c \
    "! ${PODMAN[*]} pull -q --tls-verify=false $H/team/pod:v1"
unset REGISTRY_AUTH_FILE
berth_stop
t_eq "berth exits cleanly" 0 $?
t_finish
