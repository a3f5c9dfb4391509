#!/usr/bin/env bash
# Token authentication (issue 6): berth behind a token service (tests/fixtures/tokenserver.py,
# the distribution token spec). Challenges name realm, service and scope; curl, skopeo and
# containerd's ctr get tokens and push/pull; RS256 and ES256 tokens verify against
# auth.token.rootcertbundle; expired, wrongly signed, wrongly scoped, other-issuer, other-audience,
# alg=none and tampered tokens are refused.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"
MT_OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
TS="python3 $T_ROOT/tests/fixtures/tokenserver.py"
K=$T_TMP/keys
mkdir -p "$K"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=token-rsa -keyout "$K/rsa.key" -out "$K/rsa.pem" 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=token-ec \
    -keyout "$K/ec.key" -out "$K/ec.pem" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=stranger -keyout "$K/bad.key" -out "$K/bad.pem" 2>/dev/null
cat "$K/rsa.pem" "$K/ec.pem" >"$K/bundle.pem"

start_ts() { # start_ts NAME KEY CERT ALG: a token service; sets TS_URL_<NAME>
    local port
    port=$(t_port)
    $TS --port "$port" --key "$2" --cert "$3" --alg "$4" --log "$T_TMP/$1.log" \
        --user alice:alice-pw --user bob:bob-pw --issuer site-auth >/dev/null 2>&1 &
    T_PIDS+=("$!")
    t_wait_http "http://127.0.0.1:$port/token"
    printf -v "TS_URL_$1" '%s' "http://127.0.0.1:$port/token"
}
start_ts rsa "$K/rsa.key" "$K/rsa.pem" RS256
start_ts ec "$K/ec.key" "$K/ec.pem" ES256
start_ts bad "$K/bad.key" "$K/bad.pem" RS256

cat >"$T_TMP/config.yml" <<YML
version: 0.1
auth:
  token:
    realm: $TS_URL_rsa
    service: berth-test
    issuer: site-auth
    rootcertbundle: $K/bundle.pem
YML
berth_start "$T_TMP" || { t_fail "berth starts"; t_finish; }
U=$BERTH_URL
H=${U#http://}

token() { # token URL USER SCOPE...: a token from a token service
    local url=$1 user=$2 q="service=berth-test"
    shift 2
    for s in "$@"; do q+="&scope=$s"; done
    curl -s -u "$user:$user-pw" "$url?$q" | jq -r .token
}
chal() { curl -s -D - -o /dev/null "$@" | tr -d '\r' | sed -n 's/^[Ww][Ww][Ww]-[Aa]uthenticate: //p'; }

t_eq "GET /v2/ without a token: a Bearer challenge naming realm and service" \
    "Bearer realm=\"$TS_URL_rsa\",service=\"berth-test\"" "$(chal "$U/v2/")"
t_eq "a manifest GET without a token: the challenge names the scope" \
    "Bearer realm=\"$TS_URL_rsa\",service=\"berth-test\",scope=\"repository:team/app:pull\"" \
    "$(chal "$U/v2/team/app/manifests/v1")"
t_eq "a blob upload without a token: scope pull,push" \
    "Bearer realm=\"$TS_URL_rsa\",service=\"berth-test\",scope=\"repository:team/app:pull,push\"" \
    "$(chal -X POST "$U/v2/team/app/blobs/uploads/")"

# ---- curl through the token flow: push then pull ----
T=$(token "$TS_URL_rsa" alice repository:team/app:pull,push)
PL_CURL=(curl -s -H "Authorization: Bearer $T")
pl_make_config "$T_TMP/cfg.json" token
pl_rand_blob "$T_TMP/layer" 1000 3000
D=$(pl_push_image "$U" team/app v1 "$T_TMP" "$T_TMP/cfg.json" "$T_TMP/layer")
t_check "push with an RS256 token (pull,push on team/app)" test -n "$D"
t_check "pull with it" pl_verify "$U" team/app v1 "$D"
TP=$(token "$TS_URL_rsa" bob repository:team/app:pull)
t_eq "a pull-only token cannot push: 401 with the push scope in the challenge" \
    "401 Bearer realm=\"$TS_URL_rsa\",service=\"berth-test\",scope=\"repository:team/app:pull,push\"" \
    "$(curl -s -o /dev/null -w '%{http_code} ' -X POST -H "Authorization: Bearer $TP" "$U/v2/team/app/blobs/uploads/")$(chal -X POST -H "Authorization: Bearer $TP" "$U/v2/team/app/blobs/uploads/")"
t_eq "a token for team/app does not open team/other (wrong scope): 401" 401 \
    "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TP" -H "Accept: $MT_OCI_MANIFEST" "$U/v2/team/other/manifests/v1")"
TE=$(token "$TS_URL_ec" bob repository:team/app:pull)
t_eq "an ES256 token from the second certificate of the bundle: 200" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TE" -H "Accept: $MT_OCI_MANIFEST" "$U/v2/team/app/manifests/v1")"
TB=$(token "$TS_URL_bad" alice repository:team/app:pull)
t_eq "a token signed by a key outside the bundle: 401" 401 \
    "$(curl -s -o "$T_TMP/b" -w '%{http_code}' -H "Authorization: Bearer $TB" "$U/v2/team/app/manifests/v1")"
t_eq "... saying so" "token signature not valid" "$(jq -r '.errors[0].message' "$T_TMP/b")"

# forged tokens, signed with the right key but wrong in one claim each
now=$(date +%s)
acc='[{"type":"repository","name":"team/app","actions":["pull"]}]'
forge() { $TS --forge "$1" --key "${2:-$K/rsa.key}" --alg "${3:-RS256}" --port 0 --cert x --log /dev/null; }
try() { curl -s -o "$T_TMP/b" -w '%{http_code}' -H "Authorization: Bearer $1" -H "Accept: $MT_OCI_MANIFEST" "$U/v2/team/app/manifests/v1"; }
good=$(forge "{\"iss\":\"site-auth\",\"aud\":\"berth-test\",\"sub\":\"f\",\"exp\":$((now + 300)),\"access\":$acc}")
t_eq "a forged-but-correct token (control): 200" 200 "$(try "$good")"
t_eq "an expired token: 401" "401 token expired" \
    "$(try "$(forge "{\"iss\":\"site-auth\",\"aud\":\"berth-test\",\"exp\":$((now - 600)),\"access\":$acc}")") $(jq -r '.errors[0].message' "$T_TMP/b")"
t_eq "a token not valid yet: 401" 401 \
    "$(try "$(forge "{\"iss\":\"site-auth\",\"aud\":\"berth-test\",\"nbf\":$((now + 600)),\"exp\":$((now + 900)),\"access\":$acc}")")"
t_eq "a token from another issuer: 401" 401 \
    "$(try "$(forge "{\"iss\":\"evil\",\"aud\":\"berth-test\",\"exp\":$((now + 300)),\"access\":$acc}")")"
t_eq "a token for another service: 401" 401 \
    "$(try "$(forge "{\"iss\":\"site-auth\",\"aud\":\"other\",\"exp\":$((now + 300)),\"access\":$acc}")")"
t_eq "a token without exp: 401" 401 \
    "$(try "$(forge "{\"iss\":\"site-auth\",\"aud\":\"berth-test\",\"access\":$acc}")")"
hdr_none=$(printf '{"alg":"none","typ":"JWT"}' | base64 -w0 | tr '+/' '-_' | tr -d '=')
pay=$(printf '%s' "{\"iss\":\"site-auth\",\"aud\":\"berth-test\",\"exp\":$((now + 300)),\"access\":$acc}" | base64 -w0 | tr '+/' '-_' | tr -d '=')
t_eq "alg none: 401" 401 "$(try "$hdr_none.$pay.")"
tampered="${good%%.*}.$(printf '%s' "{\"iss\":\"site-auth\",\"aud\":\"berth-test\",\"sub\":\"f\",\"exp\":$((now + 300)),\"access\":[{\"type\":\"repository\",\"name\":\"team/app\",\"actions\":[\"pull\",\"push\",\"delete\"]}]}" | base64 -w0 | tr '+/' '-_' | tr -d '=').${good##*.}"
t_eq "a tampered payload (more actions, old signature): 401" 401 "$(try "$tampered")"
t_eq "garbage: 401" 401 "$(try "not.a.token")"
t_eq "Basic credentials where tokens are required: 401" 401 \
    "$(curl -s -o /dev/null -w '%{http_code}' -u alice:alice-pw "$U/v2/")"

# ---- real clients do the flow themselves ----
python3 "$T_ROOT/tests/fixtures/mkimage.py" image "$T_TMP/layout" --layers 1 --seed 5 --tag v1 >/dev/null 2>&1
t_check "skopeo pushes with credentials (it fetches the tokens)" skopeo copy -q --dest-tls-verify=false \
    --dest-creds alice:alice-pw "oci:$T_TMP/layout:v1" "docker://$H/team/img:v1"
t_check "skopeo pulls with credentials" skopeo copy -q --src-tls-verify=false --src-creds bob:bob-pw \
    "docker://$H/team/img:v1" "oci:$T_TMP/out:v1"
t_check "skopeo without credentials is refused" bash -c \
    "! skopeo inspect --tls-verify=false docker://$H/team/img:v1"
if containerd_start "$T_TMP/ctd"; then
    t_check "ctr (containerd) pulls with --user (token flow)" "${CTR[@]}" images pull --plain-http --snapshotter native \
        --user bob:bob-pw "$H/team/img:v1"
else
    t_fail "containerd starts" "$(tail -5 "$T_TMP/ctd/containerd.log")"
fi
podman_cmd "$T_TMP/podman"
# podman names an image pulled from a layout after its path, which must be lowercase
lay=/tmp/berth-podman-layout.$$
rm -rf "$lay" && cp -r "$T_TMP/layout" "$lay"
id=$("${PODMAN[@]}" pull -q "oci:$lay:v1" 2>/dev/null | tail -1)
rm -rf "$lay"
t_check "podman login (token service behind it)" "${PODMAN[@]}" login --tls-verify=false -u alice -p alice-pw "$H"
t_check "podman push (token flow)" "${PODMAN[@]}" push -q --tls-verify=false "$id" "$H/team/pod:v1"
t_check "podman pull (token flow)" "${PODMAN[@]}" pull -q --tls-verify=false "$H/team/pod:v1"
unset REGISTRY_AUTH_FILE
# ---- berth's own clients sign in with the token flow (berth app / compose / bundle) ----
P=$T_TMP/tokapp
mkdir -p "$P"
cat >"$P/margo.yaml" <<'YML'
apiVersion: margo.org/v1-alpha1
kind: ApplicationDescription
metadata:
  id: tok-app
  name: Token App
  version: 1.0.0
  catalog:
    organization: [{name: Example}]
deploymentProfiles:
  - type: compose
    id: c
    components:
      - name: web
        properties: {repository: oci://example.com/compose/web, revision: 1.0.0}
YML
out=$("$BERTH" app push "$P" "$U/team/tokapp" --user alice:alice-pw 2>&1)
t_check "berth app push signs in through the token service (Basic to the realm, then Bearer): $out" \
    grep -q "team/tokapp:1.0.0 sha256:" <<<"$out"
out=$("$BERTH" app push "$P" "$U/team/tokapp" --user alice:wrong 2>&1)
t_check "berth app push with a wrong password fails with the registry's 401 ($out)" grep -q "401" <<<"$out"
out=$("$BERTH" app inspect "$U/team/tokapp:1.0.0" --user alice:alice-pw 2>&1)
t_check "berth app inspect reads it back with a token: $out" grep -q "id: tok-app" <<<"$out"
t_check "no token or password in berth's log" bash -c \
    "! grep -qE 'alice-pw|bob-pw|${T:0:40}' '$T_TMP/berth.log'"
berth_stop
t_eq "berth exits cleanly" 0 $?
t_finish
