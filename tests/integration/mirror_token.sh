#!/usr/bin/env bash
# The mirror's upstream client against the distribution Bearer token flow (Docker Hub, ghcr.io):
# a real docker-registry with `auth: token` in front of tests/fixtures/tokenserver.py, which signs
# RS256 JWTs with a self-signed certificate the registry trusts (x5c in the JWT header).
#
#   berth 1  tok.example   username/password right, revalidate 1s
#   berth 2  tok.example   wrong password
#            anon.example  no credentials (the token service grants nothing)
#            short.example a user whose tokens expire after 2 s
#
# Covers: on a 401 Bearer challenge berth fetches a token from the realm with service and scope
# and HTTP Basic credentials, retries once with it, serves byte-identical content (curl ?ns= and
# skopeo through the path-prefix form), reuses the token for later manifest revalidations and
# blob fetches (token requests counted in the token service's log, upstream requests and 401s in
# docker-registry's access log), asks for a separate token per repository scope, fetches a new
# one once the cached one expired or the upstream refused it (signing key rotated), and answers
# an error (not content) when the credentials are wrong or the token grants nothing.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"

MK="python3 $T_ROOT/tests/fixtures/mkimage.py"
SK=(skopeo --insecure-policy)
CURL=(curl -s --max-time 20)
W=$T_TMP/work
mkdir -p "$W"
SERVICE=test-registry
ISSUER=test-issuer

# ---- helpers --------------------------------------------------------------------------------

# tok_mark: the token log's current line count (a phase's starting point for tok_n).
tok_mark() { wc -l <"$TOK_LOG"; }
# tok_n MARK JQ_CONDITION: token requests from berth (User-Agent berth) logged after MARK lines
# that satisfy the jq condition, e.g. '.status == 200'.
tok_n() {
    tail -n +"$(($1 + 1))" "$TOK_LOG" | jq -c "select(.agent == \"berth\") | select($2)" | wc -l
}
# up_sync: lets the registry finish its access-log lines (written after the response went out).
up_sync() { sleep 0.3; }
# up_mark: the upstream log's current line count.
up_mark() {
    up_sync
    wc -l <"$UP_LOG"
}
# up_reqs MARK: "METHOD PATH STATUS" per request berth (User-Agent berth) made upstream after
# MARK log lines (combined log format; query dropped, %3A decoded). Call up_sync first.
up_reqs() {
    tail -n +"$(($1 + 1))" "$UP_LOG" | awk -F'"' '/^[0-9.:]+ - [^ ]* \[/ && $6 == "berth" {
        split($2, r, " "); p = r[2]; sub(/\?.*/, "", p); gsub(/%3[Aa]/, ":", p)
        split($3, s, " "); print r[1], p, s[1] }'
}
# up_n MARK METHODS PATH STATUS: how many of up_reqs MARK match; "*" matches anything, METHODS
# may be a list like GET|HEAD.
up_n() {
    up_reqs "$1" | awk -v m="$2" -v p="$3" -v s="$4" \
        '(m == "*" || $1 ~ ("^(" m ")$")) && (p == "*" || $2 == p) && (s == "*" || $3 == s)' | wc -l
}
# bget PATH OUT: GET $BERTH_URL$PATH (manifest Accept list) into OUT, headers into OUT.h;
# prints the status ("000" on a transport error).
bget() {
    "${CURL[@]}" -H "$PL_ACCEPT" -D "$2.h" -o "$2" -w '%{http_code}' "$BERTH_URL$1" || true
}
# up_first MARK LINE...: berth's first upstream requests after MARK are exactly the LINEs ("" as
# the last LINE: and nothing else after them).
up_first() {
    local m=$1 got want
    shift
    want=$(printf '%s\n' "$@")
    got=$(up_reqs "$m" | head -n $#)
    [ "$got" = "$want" ] || {
        echo "upstream requests: $(up_reqs "$m" | tr '\n' ';') want: $(printf '%s;' "$@")"
        return 1
    }
}
# up_only_401 MARK: 1 or 2 upstream requests from berth after MARK, all answered 401.
up_only_401() {
    local n
    n=$(up_n "$1" '*' '*' '*')
    if [ "$n" -lt 1 ] || [ "$n" -gt 2 ] || [ "$(up_n "$1" '*' '*' 401)" -ne "$n" ]; then
        echo "upstream requests: $(up_reqs "$1" | tr '\n' ';')"
        return 1
    fi
}
errcode() { jq -r '.errors[0].code // empty' "$1" 2>/dev/null; }
# blobs_verify BASE QUERY MANIFEST: every blob MANIFEST references is served by berth at
# BASE/blobs/D$QUERY with the right bytes.
blobs_verify() {
    local d code rc=0
    for d in $(jq -r '.config.digest, .layers[].digest' "$3"); do
        code=$("${CURL[@]}" -o "$W/blob" -w '%{http_code}' "$BERTH_URL$1/blobs/$d$2")
        if [ "$code" != 200 ]; then
            echo "GET $1/blobs/$d$2: HTTP $code $(head -c 200 "$W/blob")"
            rc=1
        elif [ "sha256:$(t_sha256 "$W/blob")" != "$d" ]; then
            echo "GET $1/blobs/$d$2: wrong bytes"
            rc=1
        fi
    done
    return $rc
}
# layout_has_blobs LAYOUT MANIFEST: LAYOUT holds every blob MANIFEST references, byte for byte.
layout_has_blobs() {
    local d f
    for d in $(jq -r '.config.digest, .layers[].digest' "$2"); do
        f=$1/blobs/sha256/${d#sha256:}
        if [ ! -f "$f" ] || [ "sha256:$(t_sha256 "$f")" != "$d" ]; then
            echo "blob $d missing or wrong"
            return 1
        fi
    done
}
# err_not_content CODE FILE WANT_DIGEST: CODE is 4xx/5xx, FILE an error JSON, not the manifest.
err_not_content() {
    case $1 in 4?? | 5??) ;; *) echo "HTTP $1, want 4xx/5xx: $(head -c 300 "$2")"; return 1 ;; esac
    [ -n "$(errcode "$2")" ] || { echo "HTTP $1 without error JSON: $(head -c 300 "$2")"; return 1; }
    [ "sha256:$(t_sha256 "$2")" != "$3" ] || { echo "the manifest was served"; return 1; }
}

# ---- token service and token-authenticated upstream -----------------------------------------

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$ISSUER" \
    -keyout "$T_TMP/token.key" -out "$T_TMP/token.crt" 2>"$T_TMP/openssl.err" ||
    { t_fail "openssl makes the token signing key" "$(cat "$T_TMP/openssl.err")"; t_finish; }

TOK_PORT=$(t_port)
TOK_LOG=$T_TMP/token.log
python3 "$T_ROOT/tests/fixtures/tokenserver.py" --port "$TOK_PORT" --key "$T_TMP/token.key" \
    --cert "$T_TMP/token.crt" --log "$TOK_LOG" --issuer "$ISSUER" \
    --user user:pass --user short:shortpw:2 >"$T_TMP/tokenserver.err" 2>&1 &
T_PIDS+=("$!")
TOK_URL=http://127.0.0.1:$TOK_PORT
t_wait_http "$TOK_URL/token" ||
    { t_fail "token service starts" "$(tail -5 "$T_TMP/tokenserver.err")"; t_finish; }

UP=$T_TMP/upstream
mkdir -p "$UP/data"
UP_PORT=$(t_port)
cat >"$UP/registry.yml" <<YML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $UP/data
http:
  addr: 127.0.0.1:$UP_PORT
auth:
  token:
    realm: $TOK_URL/token
    service: $SERVICE
    issuer: $ISSUER
    rootcertbundle: $T_TMP/token.crt
YML
UP_LOG=$UP/registry.log
UP_URL=http://127.0.0.1:$UP_PORT
# up_start: (re)starts the upstream on UP_PORT, appending to UP_LOG; sets UP_PID.
up_start() {
    docker-registry serve "$UP/registry.yml" >>"$UP_LOG" 2>&1 &
    UP_PID=$!
    T_PIDS+=("$UP_PID")
    t_wait_http "$UP_URL/v2/"
}
up_start || { t_fail "upstream docker-registry starts" "$(tail -5 "$UP_LOG")"; t_finish; }

# The upstream really demands the token flow.
code=$("${CURL[@]}" -D "$W/anon.h" -o "$W/anon" -w '%{http_code}' "$UP_URL/v2/org/app/manifests/v1")
t_eq "upstream without a token: 401 with a Bearer challenge" \
    "401 Bearer realm=\"$TOK_URL/token\",service=\"$SERVICE\",scope=\"repository:org/app:pull\"" \
    "$code $(pl_header "$W/anon.h" www-authenticate)"

# Two images pushed by skopeo, which does the token flow itself (pull,push scope, Basic creds).
D_APP=$($MK image "$W/img-app" --layers 2 --seed 31 --tag v1)
D_OTHER=$($MK image "$W/img-other" --layers 2 --seed 32 --tag v1)
t_check "skopeo pushes org/app:v1 to the upstream through the token service" \
    "${SK[@]}" copy --dest-tls-verify=false --dest-creds user:pass "oci:$W/img-app:v1" \
    "docker://127.0.0.1:$UP_PORT/org/app:v1"
t_check "skopeo pushes org/other:v1" \
    "${SK[@]}" copy --dest-tls-verify=false --dest-creds user:pass "oci:$W/img-other:v1" \
    "docker://127.0.0.1:$UP_PORT/org/other:v1"
t_check "the token service saw skopeo's Basic-authenticated pull,push token requests" \
    test "$(jq -c 'select(.agent != "berth" and .basic and .user == "user" and .status == 200
        and (.scopes | index("repository:org/app:pull,push")))' "$TOK_LOG" | wc -l)" -ge 1

# The upstream's bytes, fetched directly with a token from the service.
tok=$("${CURL[@]}" -u user:pass "$TOK_URL/token?service=$SERVICE&scope=repository:org/app:pull" | jq -r .token)
code=$("${CURL[@]}" -H "$PL_ACCEPT" -H "Authorization: Bearer $tok" -o "$W/up-app" -w '%{http_code}' \
    "$UP_URL/v2/org/app/manifests/v1")
t_eq "upstream with a token: 200, the pushed manifest" "200 $D_APP" "$code sha256:$(t_sha256 "$W/up-app")"
code=$("${CURL[@]}" -u user:wrong -o /dev/null -w '%{http_code}' \
    "$TOK_URL/token?service=$SERVICE&scope=repository:org/app:pull")
t_eq "token service: wrong password is 401" 401 "$code"

# ---- berth 1: right credentials --------------------------------------------------------------

B1=$T_TMP/berth1
mkdir -p "$B1"
cat >"$B1/config.yml" <<YML
version: 0.1
mirrors:
  tok.example:
    urls: [$UP_URL]
    username: user
    password: pass
    revalidate: 1s
YML
if ! berth_start "$B1"; then
    t_fail "berth starts with a token-authenticated mirror" "$(tail -5 "$B1/berth.log" | tr '\n' ' ')"
    t_finish
fi
BH=127.0.0.1:$BERTH_PORT
TM=$(tok_mark)
UM=$(up_mark)

code=$(bget "/v2/org/app/manifests/v1?ns=tok.example" "$W/m1")
t_eq "GET /v2/org/app/manifests/v1?ns=tok.example: 200, the upstream's bytes" \
    "200 $D_APP" "$code sha256:$(t_sha256 "$W/m1")"
t_eq "Docker-Content-Digest is the upstream's digest" "$D_APP" "$(pl_header "$W/m1.h" docker-content-digest)"
up_sync
t_eq "berth asked the token service once" 1 "$(tok_n "$TM" true)"
t_eq "berth's token request: Basic user, service and pull scope from the challenge, granted" 1 \
    "$(tok_n "$TM" '.path == "/token" and .basic and .user == "user" and .status == 200
        and .service == "'$SERVICE'" and .scopes == ["repository:org/app:pull"]
        and .granted == [{"type":"repository","name":"org/app","actions":["pull"]}]')"
t_check "upstream: berth's first manifest GET was challenged (401), the retry with the token got 200" \
    up_first "$UM" "GET /v2/org/app/manifests/v1 401" "GET /v2/org/app/manifests/v1 200"

t_check "blobs via ?ns=tok.example: the upstream's bytes" blobs_verify /v2/org/app "?ns=tok.example" "$W/m1"

# Three revalidations of the tag (revalidate 1s), 1.1 s apart, on the same token.
for i in 1 2 3; do
    sleep 1.1
    code=$(bget "/v2/org/app/manifests/v1?ns=tok.example" "$W/r$i")
    t_eq "revalidation $i: 200, same manifest" "200 $D_APP" "$code sha256:$(t_sha256 "$W/r$i")"
done

# skopeo through the path-prefix form.
t_check "skopeo copy docker://$BH/tok.example/org/app:v1 -> oci:" \
    "${SK[@]}" copy --src-tls-verify=false "docker://$BH/tok.example/org/app:v1" "oci:$W/out:v1"
t_eq "skopeo's copy has the upstream's manifest digest" "$D_APP" "$($MK digest "$W/out" --tag v1)"
t_check "skopeo's copy has the upstream's blobs" layout_has_blobs "$W/out" "$W/up-app"

# Counting: every upstream request after the first rode on the one cached token.
up_sync
n_up=$(up_n "$UM" '*' '*' '*')
n_man=$(up_n "$UM" 'GET|HEAD' /v2/org/app/manifests/v1 '*')
n_401=$(up_n "$UM" '*' '*' 401)
n_tok=$(tok_n "$TM" true)
t_check "upstream saw the initial manifest fetch plus >= 3 revalidations ($n_man manifest requests)" \
    test "$n_man" -ge 5
n_blob=$(up_reqs "$UM" | awk '$1 == "GET" && $2 ~ /^\/v2\/org\/app\/blobs\/sha256:/ && $3 == 200' | wc -l)
t_eq "upstream served berth config + 2 layers, each once" 3 "$n_blob"
t_eq "token reused: $n_up upstream requests, 1 token request, 1 challenge (401)" "1 1" "$n_tok $n_401"
t_check "all $n_up upstream requests from berth succeeded except the first challenge" \
    test "$(up_n "$UM" '*' '*' 200)" -eq $((n_up - 1))

# A second repository: a token is scoped to one repository, so berth asks for another one.
TM2=$(tok_mark)
code=$(bget "/v2/tok.example/org/other/manifests/v1" "$W/o1")
t_eq "GET /v2/tok.example/org/other/manifests/v1: 200, the upstream's bytes" \
    "200 $D_OTHER" "$code sha256:$(t_sha256 "$W/o1")"
t_check "org/other's blobs via the prefix form" blobs_verify /v2/tok.example/org/other "" "$W/o1"
t_eq "one new token request, for repository:org/other:pull, Basic user" "1 1" \
    "$(tok_n "$TM2" true) $(tok_n "$TM2" '.basic and .user == "user" and .status == 200
        and .scopes == ["repository:org/other:pull"]')"

# The upstream rotates its token signing key (restart with a new rootcertbundle; the token
# service signs with the new key). berth's cached org/app token is now refused by the upstream
# (401 invalid_token) although it has not expired: berth must drop it and fetch a new one rather
# than retry with the rejected token.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$ISSUER" \
    -keyout "$T_TMP/token2.key" -out "$T_TMP/token2.crt" 2>"$T_TMP/openssl.err"
kill "$UP_PID"
wait "$UP_PID" 2>/dev/null
mv "$T_TMP/token2.key" "$T_TMP/token.key"
mv "$T_TMP/token2.crt" "$T_TMP/token.crt"
up_start || { t_fail "upstream restarts with the new key" "$(tail -5 "$UP_LOG")"; t_finish; }
D_APP2=$($MK image "$W/img-app" --layers 2 --seed 33 --tag v2)
t_check "after the key rotation skopeo pushes org/app:v2 (new tokens work)" \
    "${SK[@]}" copy --dest-tls-verify=false --dest-creds user:pass "oci:$W/img-app:v2" \
    "docker://127.0.0.1:$UP_PORT/org/app:v2"
code=$("${CURL[@]}" -H "Authorization: Bearer $tok" -D "$W/old.h" -o /dev/null -w '%{http_code}' \
    "$UP_URL/v2/org/app/manifests/v1")
t_eq "the upstream refuses a token signed with the old key" "401 1" \
    "$code $(pl_header "$W/old.h" www-authenticate | grep -c 'error="invalid_token"')"
TM=$(tok_mark)
UM=$(up_mark)
code=$(bget "/v2/org/app/manifests/v2?ns=tok.example" "$W/v2")
t_eq "GET org/app:v2 after the rotation: 200, the upstream's bytes" \
    "200 $D_APP2" "$code sha256:$(t_sha256 "$W/v2")"
up_sync
t_eq "a token the upstream refused is not reused: one new token request" 1 \
    "$(tok_n "$TM" '.basic and .user == "user" and .status == 200 and .scopes == ["repository:org/app:pull"]')"
t_check "upstream: the old token's 401, then 200 with the new token" \
    up_first "$UM" "GET /v2/org/app/manifests/v2 401" "GET /v2/org/app/manifests/v2 200"

t_check "berth is still serving" curl -sf --max-time 5 -o /dev/null "$BERTH_URL/v2/"
berth_stop
t_eq "berth 1 stops cleanly" 0 $?

# ---- berth 2: wrong password, no credentials, short-lived tokens ----------------------------

B2=$T_TMP/berth2
mkdir -p "$B2"
cat >"$B2/config.yml" <<YML
version: 0.1
mirrors:
  tok.example:
    urls: [$UP_URL]
    username: user
    password: wrong
    revalidate: 1s
  anon.example:
    urls: [$UP_URL]
    revalidate: 1s
  short.example:
    urls: [$UP_URL]
    username: short
    password: shortpw
    revalidate: 1s
YML
if ! berth_start "$B2"; then
    t_fail "berth 2 starts" "$(tail -5 "$B2/berth.log" | tr '\n' ' ')"
    t_finish
fi

# Wrong password: the token service refuses; berth answers an error, not content.
TM=$(tok_mark)
UM=$(up_mark)
code=$(bget "/v2/org/app/manifests/v1?ns=tok.example" "$W/bad")
t_check "wrong password, uncached manifest: error status + error JSON, not content" \
    err_not_content "$code" "$W/bad" "$D_APP"
up_sync
t_check "the token service refused berth's Basic credentials (401)" \
    test "$(tok_n "$TM" '.basic and .user == "user" and .status == 401')" -ge 1
t_eq "no token was issued to berth" 0 "$(tok_n "$TM" '.status == 200')"
t_check "upstream answered berth nothing but 401 (one request, at most one retry)" up_only_401 "$UM"
code=$("${CURL[@]}" -o "$W/badblob" -w '%{http_code}' \
    "$BERTH_URL/v2/org/app/blobs/$(jq -r '.layers[0].digest' "$W/up-app")?ns=tok.example")
t_check "wrong password, uncached blob: error status + error JSON" err_not_content "$code" "$W/badblob" x

# No credentials: the token service issues a token with no access; the upstream still says 401.
TM=$(tok_mark)
UM=$(up_mark)
code=$(bget "/v2/anon.example/org/app/manifests/v1" "$W/anon1")
t_check "no credentials, token grants nothing: error status + error JSON, not content" \
    err_not_content "$code" "$W/anon1" "$D_APP"
up_sync
t_eq "berth asked for a token without Basic credentials, once" "1 1" \
    "$(tok_n "$TM" true) $(tok_n "$TM" '(.basic | not) and .status == 200 and .granted == []')"
t_check "upstream: challenge, one retry with the (useless) token, both 401 - no loop" \
    up_first "$UM" "GET /v2/org/app/manifests/v1 401" "GET /v2/org/app/manifests/v1 401" ""

# Short-lived tokens (expires_in 2): reused while valid, fetched anew once expired.
TM=$(tok_mark)
code=$(bget "/v2/org/app/manifests/v1?ns=short.example" "$W/s1")
t_eq "short-lived tokens: 200, the upstream's bytes" "200 $D_APP" "$code sha256:$(t_sha256 "$W/s1")"
t_eq "one token request (user short)" 1 "$(tok_n "$TM" '.user == "short" and .status == 200 and .expires_in == 2')"
sleep 2.5
code=$(bget "/v2/org/app/manifests/v1?ns=short.example" "$W/s2")
t_eq "after the token expired: revalidation answers 200, same manifest" "200 $D_APP" \
    "$code sha256:$(t_sha256 "$W/s2")"
t_eq "an expired token is not reused: a second token request" 2 \
    "$(tok_n "$TM" '.user == "short" and .status == 200')"

t_check "berth 2 is still serving" curl -sf --max-time 5 -o /dev/null "$BERTH_URL/v2/"
berth_stop
t_eq "berth 2 stops cleanly" 0 $?
# secrets: upstream passwords (and the Basic credentials made of them) appear in no log line and
# no error body berth sent
b64() { printf '%s' "$1" | base64; }
printf '%s\n' shortpw user:pass user:wrong '=pass' '=wrong' '"pass' '"wrong' \
    "$(b64 user:pass)" "$(b64 user:wrong)" "$(b64 short:shortpw)" >"$T_TMP/secrets"
t_check "no upstream password or Basic credential in berth's logs" bash -c \
    "! grep -qF -f '$T_TMP/secrets' '$B1/berth.log' '$B2/berth.log'"
t_check "no upstream password in the error bodies berth answered" bash -c \
    "! cat '$W'/* 2>/dev/null | grep -aqE 'shortpw|user:pass|user:wrong'"
t_finish
