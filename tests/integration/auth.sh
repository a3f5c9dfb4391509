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
helm:
  upstreams: # nothing listens there: access is decided before any fetch
    stable: {url: "http://127.0.0.1:$(t_port)/stable", timeout: {connect: 1s, transfer: 2s}}
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

# ---- the route table: every line of src/serve.c's table, probed as each user ----
# The table below is serve.c's (path, methods, access; checked to be the same), with one probe or
# more per line and the status each user gets: anonymous, carol (default pull), bob (dev: pull
# and push on team/*), alice (admin). Refused: 401 anonymous, 403 signed in. KNOWN lines filter or
# check each item: Helm hides a chart the caller may not pull (404) except from an anonymous chart
# download, which asks for credentials (401). A mount needs push on the target (team/*) and pull
# on its source (else a plain upload session, 202, as for an unknown digest). Upload sessions and
# the deleted blob do not exist: a caller let through gets 404, so access alone decides the rest;
# likewise the Helm upstream, where nothing listens: a caller let through gets 503.
curl -s -u alice:alice-pw -H "$PL_ACCEPT" "$U/v2/secret/app/manifests/v1" >"$T_TMP/manifest.json.secret"
for r in team secret; do
    eval "L_$r=$(jq -r '.layers[0].digest' "$T_TMP/manifest.json.$r")"
    eval "M_$r=sha256:$(t_sha256 "$T_TMP/manifest.json.$r")"
done
NOPE=sha256:$(printf '%064d' 0)
UUID=0b1c2d3e-0000-4000-8000-000000000000
ROUTES='
# path                          method access  probe       repo    anon carol bob alice
/                               GET    PUBLIC  root        -       200  200   200 200
/health                         GET    PUBLIC  health      -       200  200   200 200
/v2/                            GET    SIGNED  version     -       401  200   200 200
/v2/_catalog                    GET    KNOWN   catalog     -       200  200   200 200
/v2/<name>/tags/list            GET    PULL    tags        team    401  200   200 200
/v2/<name>/tags/list            GET    PULL    tags        secret  401  403   403 200
/v2/<name>/manifests/<ref>      GET    PULL    manifest    team    401  200   200 200
/v2/<name>/manifests/<ref>      GET    PULL    manifest    secret  401  403   403 200
/v2/<name>/manifests/<ref>      PUT    PUSH    mput        team    401  403   201 201
/v2/<name>/manifests/<ref>      DELETE DELETE  mdelete     other   401  403   403 202
/v2/<name>/blobs/<digest>       GET    PULL    blob        team    401  200   200 200
/v2/<name>/blobs/<digest>       GET    PULL    blob        secret  401  403   403 200
/v2/<name>/blobs/<digest>       GET    PULL    bhead       team    401  200   200 200
/v2/<name>/blobs/<digest>       GET    PULL    bhead       secret  401  403   403 200
/v2/<name>/blobs/<digest>       DELETE DELETE  bdelete     team    401  403   403 404
/v2/<name>/blobs/uploads/       POST   PUSH    mount       team    401  403   201 201
/v2/<name>/blobs/uploads/       POST   PUSH    mount       secret  401  403   202 201
/v2/<name>/blobs/uploads/<id>   GET    PULL    uget        team    401  404   404 404
/v2/<name>/blobs/uploads/<id>   PATCH  PUSH    upatch      team    401  403   404 404
/v2/<name>/blobs/uploads/<id>   PUT    PUSH    uput        team    401  403   404 404
/v2/<name>/blobs/uploads/<id>   DELETE DELETE  udelete     team    401  403   403 404
/v2/<name>/referrers/<digest>   GET    PULL    referrers   team    401  200   200 200
/v2/<name>/referrers/<digest>   GET    PULL    referrers   secret  401  403   403 200
/<area>/index.yaml              GET    KNOWN   index       charts  200  200   200 200
/<area>/charts/<file>           GET    KNOWN   chartfile   charts  401  200   200 200
/api/<area>/charts              GET    KNOWN   chartlist   charts  200  200   200 200
/api/<area>/charts              POST   KNOWN   chartpost   charts  401  403   400 400
/api/<area>/prov                POST   KNOWN   provpost    charts  401  403   400 400
/api/<area>/charts/<n>          GET    KNOWN   chart       charts  404  200   200 200
/api/<area>/charts/<n>/<v>      GET    KNOWN   chartapi    charts  404  200   200 200
/api/<area>/charts/<n>/<v>      DELETE KNOWN_IFDEL chartdel charts 404  403   403 200
/<upstream>/index.yaml          GET    KNOWN   upindex     -       401  503   503 503
/<upstream>/charts/<file>       GET    KNOWN   upchart     -       401  503   503 503
/ui                             GET    KNOWN   uiroot      -       301  301   301 301
/ui/                            GET    KNOWN   uipage      -       200  200   200 200
/ui/signin                      GET    KNOWN   uisignin    -       401  200   200 200
/ui/status.json                 GET    KNOWN   uijson      -       200  200   200 200
'
# serve.c's table as path/method/access lines (methods HTTP_GET...)
table_of_serve_c() {
    sed -n '/^static const http_route serve_routes/,/^};/p' "$T_ROOT/src/serve.c" |
        sed -n 's/^ *{\("[^"]*"\), *[A-Z]*([A-Z_]*), *HTTP_\([A-Z]*\), *&[a-z_]*, *\([A-Z_]*\)}.*/\1 \2 \3/p' |
        tr -d '"' | sort -u
}
t_eq "the table here is serve.c's route table (path, method, access)" \
    "$(table_of_serve_c)" "$(grep -v '^#' <<<"$ROUTES" | awk 'NF {print $1, $2, $3}' | sort -u)"
probe() { # probe USER WHAT REPO: the status USER gets
    local user=$1 what=$2 r=$3 L M
    eval "L=\${L_$r:-}; M=\${M_$r:-}"
    case $what in
    root) code_as "$user" "$U/" ;;
    health) code_as "$user" "$U/health" ;;
    version) code_as "$user" "$U/v2/" ;;
    catalog) code_as "$user" "$U/v2/_catalog" ;;
    tags) code_as "$user" "$U/v2/$r/app/tags/list" ;;
    manifest) code_as "$user" -H "$PL_ACCEPT" "$U/v2/$r/app/manifests/v1" ;;
    mput) code_as "$user" -X PUT -H "Content-Type: $MT_OCI_MANIFEST" \
        --data-binary @"$T_TMP/manifest.json.team" "$U/v2/team/app/manifests/put-$user" ;;
    mdelete) delete "$user" "$r/app" "$r" ;;
    blob) code_as "$user" "$U/v2/$r/app/blobs/$L" ;;
    bhead) code_as "$user" -I "$U/v2/$r/app/blobs/$L" ;;
    bdelete) code_as "$user" -X DELETE "$U/v2/$r/app/blobs/$NOPE" ;;
    mount) code_as "$user" -X POST "$U/v2/team/m-$user-$n/blobs/uploads/?mount=$L&from=$r/app" ;;
    uget) code_as "$user" "$U/v2/$r/app/blobs/uploads/$UUID" ;;
    upatch) code_as "$user" -X PATCH --data-binary x "$U/v2/$r/app/blobs/uploads/$UUID" ;;
    uput) code_as "$user" -X PUT "$U/v2/$r/app/blobs/uploads/$UUID?digest=$NOPE" ;;
    udelete) code_as "$user" -X DELETE "$U/v2/$r/app/blobs/uploads/$UUID" ;;
    referrers) code_as "$user" "$U/v2/$r/app/referrers/$M" ;;
    index) code_as "$user" "$U/index.yaml" ;;
    chartfile) code_as "$user" "$U/charts/web-1.1.0.tgz" ;;
    chartlist) code_as "$user" "$U/api/charts" ;;
    chartpost) code_as "$user" --data-binary 'not a chart' "$U/api/charts" ;;
    provpost) code_as "$user" --data-binary 'not a provenance file' "$U/api/prov" ;;
    chart) code_as "$user" "$U/api/charts/web" ;;
    chartapi) code_as "$user" "$U/api/charts/web/1.1.0" ;;
    chartdel) code_as "$user" -X DELETE "$U/api/charts/web/1.1.0" ;; # alice last: it goes
    upindex) code_as "$user" "$U/stable/index.yaml" ;;
    upchart) code_as "$user" "$U/stable/charts/web-1.1.0.tgz" ;;
    uiroot) code_as "$user" "$U/ui" ;;
    uipage) code_as "$user" "$U/ui/" ;;
    uisignin) code_as "$user" "$U/ui/signin" ;;
    uijson) code_as "$user" "$U/ui/status.json" ;;
    esac
}
bad=""
n=0
lines=0
while read -r path method access what r codes; do
    [ -z "$path" ] || [ "${path:0:1}" = "#" ] && continue
    lines=$((lines + 1))
    read -r -a want_codes <<<"$codes"
    i=0
    for user in anonymous carol bob alice; do
        n=$((n + 1))
        got=$(probe "$user" "$what" "$r")
        [ "$got" = "${want_codes[$i]}" ] || bad+=" $user:$method:$path:$r=$got(want ${want_codes[$i]})"
        i=$((i + 1))
    done
done <<<"$ROUTES"
t_eq "route matrix: $n cells (4 users x $lines probes of the table's lines)" "" "$bad"

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
