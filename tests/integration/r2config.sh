#!/usr/bin/env bash
# registry:2 config files as other projects write them (issue 16), one of each shape, each checked
# for the behaviour it asks for, not only that berth starts: proxy with and without upstream
# auth, token auth, TLS, headers, readonly, validation of layer URLs, http.host without a scheme,
# json logs with fields and the old `loglevel` spelling; and the start-up warnings (an unreadable
# htpasswd file, notifications and http.debug served, the mirror cache's default bound).
. "$(dirname "$0")/../lib.sh"
t_need_tools skopeo jq openssl htpasswd docker-registry python3
MT_OCI=application/vnd.oci.image.manifest.v1+json

# cfg DIR: writes stdin as DIR/config.yml (after "version: 0.1")
cfg() {
    mkdir -p "$1"
    {
        echo "version: 0.1"
        cat
    } >"$1/config.yml"
}
# status METHOD URL [curl args...]: the HTTP status
status() {
    local m=$1 u=$2
    shift 2
    curl -s -o "$T_TMP/body" -w '%{http_code}' -X "$m" "$@" "$u"
}
# blob_post URL REPO FILE: a monolithic upload; prints the digest
blob_post() {
    local d
    d=sha256:$(t_sha256 "$3")
    curl -sf -o /dev/null -X POST -H 'Content-Type: application/octet-stream' --data-binary "@$3" \
        "$1/v2/$2/blobs/uploads/?digest=$d" && echo "$d"
}
python3 "$T_ROOT/tests/fixtures/mkimage.py" image "$T_TMP/img" --layers 1 --seed 1601 --tag v1 >/dev/null
D_IMG=$(python3 "$T_ROOT/tests/fixtures/mkimage.py" digest "$T_TMP/img" --tag v1)

# ---- proxy without auth (the registry:2 image's proxy shape) ----
registry_start "$T_TMP/up"
skopeo copy -q --dest-tls-verify=false "oci:$T_TMP/img:v1" "docker://127.0.0.1:$REG_PORT/library/hello:v1"
cfg "$T_TMP/p1" <<YML
proxy:
  remoteurl: $REG_URL
YML
berth_start "$T_TMP/p1"
t_eq "proxy: a bare name is pulled from the upstream" "$D_IMG" "$(curl -s -o /dev/null -D - -H "Accept: $MT_OCI" \
    "$BERTH_URL/v2/library/hello/manifests/v1" | tr -d '\r' | awk 'tolower($1)=="docker-content-digest:"{print $2}')"
t_check "proxy: the mirror cache gets a default bound, said at start" grep -q 'cache.maxsize not set: mirrored content bounded by default' "$T_TMP/p1/berth.log"
echo "pushed" >"$T_TMP/pushed.bin"
# registry:2's proxy mode refuses every write (issue 16 item 5)
t_eq "proxy: a push is refused as in registry:2's proxy mode (405)" 405 \
    "$(status POST "$BERTH_URL/v2/library/hello/blobs/uploads/")"
berth_stop
# registry:3's proxy.ttl: an image unused that long leaves the cache (and comes back on a pull)
cfg "$T_TMP/pt" <<YML
proxy:
  remoteurl: $REG_URL
  ttl: 1s
YML
berth_start "$T_TMP/pt"
layer=$(curl -sf -H "Accept: $MT_OCI" "$BERTH_URL/v2/library/hello/manifests/v1" | jq -r '.layers[0].digest')
curl -sf -o /dev/null "$BERTH_URL/v2/library/hello/blobs/$layer"
for _ in $(seq 1 150); do grep -q 'past proxy.ttl: evicted' "$T_TMP/pt/berth.log" && break; sleep 0.1; done
t_check "proxy.ttl: the unused image expired" grep -q 'evicted mirrored manifest.*library/hello.*reason=ttl' "$T_TMP/pt/berth.log"
t_check "proxy.ttl: its layer left with it" grep -q "evicted mirrored blob\" digest=$layer" "$T_TMP/pt/berth.log"
t_eq "proxy.ttl: pulled again from the upstream" 200 "$(status GET "$BERTH_URL/v2/library/hello/manifests/v1" -H "Accept: $MT_OCI")"
berth_stop

# ---- proxy with upstream auth (Harbor / Gardener shape: proxy.username / password) ----
mkdir -p "$T_TMP/upa"
htpasswd -cbB "$T_TMP/upa/htpasswd" puller pull-pw 2>/dev/null
UPA_PORT=$(t_port)
cat >"$T_TMP/upa/registry.yml" <<YML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $T_TMP/upa/data}}
http: {addr: 127.0.0.1:$UPA_PORT}
auth: {htpasswd: {realm: up, path: $T_TMP/upa/htpasswd}}
YML
docker-registry serve "$T_TMP/upa/registry.yml" >"$T_TMP/upa/registry.log" 2>&1 &
T_PIDS+=("$!")
t_wait_http "http://127.0.0.1:$UPA_PORT/v2/"
skopeo copy -q --dest-tls-verify=false --dest-creds puller:pull-pw "oci:$T_TMP/img:v1" \
    "docker://127.0.0.1:$UPA_PORT/library/hello:v1"
for pw in pull-pw wrong-pw; do
    cfg "$T_TMP/pa-$pw" <<YML
proxy:
  remoteurl: http://127.0.0.1:$UPA_PORT
  username: puller
  password: $pw
YML
    berth_start "$T_TMP/pa-$pw"
    st=$(status GET "$BERTH_URL/v2/library/hello/manifests/v1" -H "Accept: $MT_OCI")
    if [ $pw = pull-pw ]; then
        t_eq "proxy with credentials: pulled through the authenticated upstream" 200 "$st"
    else
        t_check "proxy with wrong credentials: no image (status $st)" test "$st" != 200
    fi
    berth_stop
done

# ---- token auth (Portus / Harbor shape) ----
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=token -keyout "$T_TMP/tok.key" \
    -out "$T_TMP/tok.pem" 2>/dev/null
TSP=$(t_port)
python3 "$T_ROOT/tests/fixtures/tokenserver.py" --port "$TSP" --key "$T_TMP/tok.key" --cert "$T_TMP/tok.pem" \
    --alg RS256 --log "$T_TMP/ts.log" --user alice:alice-pw --issuer portus >/dev/null 2>&1 &
T_PIDS+=("$!")
t_wait_http "http://127.0.0.1:$TSP/token"
cfg "$T_TMP/tok" <<YML
auth:
  token:
    realm: http://127.0.0.1:$TSP/token
    service: registry.example
    issuer: portus
    rootcertbundle: $T_TMP/tok.pem
YML
berth_start "$T_TMP/tok"
chal=$(curl -s -o /dev/null -D - "$BERTH_URL/v2/team/app/tags/list" | tr -d '\r' | grep -i '^www-authenticate:')
t_check "token: 401 challenge names the realm, service and scope" bash -c "[[ '$chal' == *Bearer*realm=\\\"http://127.0.0.1:$TSP/token\\\"*service=\\\"registry.example\\\"*scope=\\\"repository:team/app:pull\\\"* ]]"
TOKEN=$(curl -s -u alice:alice-pw "http://127.0.0.1:$TSP/token?service=registry.example&scope=repository:team/app:pull,push" | jq -r .token)
t_eq "token: a token from the service is accepted" 201 "$(status POST "$BERTH_URL/v2/team/app/blobs/uploads/?digest=sha256:$(t_sha256 "$T_TMP/pushed.bin")" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/octet-stream' --data-binary "@$T_TMP/pushed.bin")"
berth_stop

# ---- TLS and headers (the distribution example shape) ----
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$T_TMP/tls.key" -out "$T_TMP/tls.pem" 2>/dev/null
mkdir -p "$T_TMP/tls"
TLS_PORT=$(t_port)
cat >"$T_TMP/tls/config.yml" <<YML
version: 0.1
storage:
  filesystem: {rootdirectory: $T_TMP/tls/data}
http:
  addr: 127.0.0.1:$TLS_PORT
  tls:
    certificate: $T_TMP/tls.pem
    key: $T_TMP/tls.key
  headers:
    X-Content-Type-Options: [nosniff]
    Strict-Transport-Security: ["max-age=63072000"]
YML
"$BERTH" serve -c "$T_TMP/tls/config.yml" >"$T_TMP/tls/berth.log" 2>&1 &
TLS_PID=$!
T_PIDS+=("$TLS_PID")
t_wait_http "https://127.0.0.1:$TLS_PORT/v2/"
t_check "tls: HTTPS with the configured certificate" curl -sf --cacert "$T_TMP/tls.pem" "https://127.0.0.1:$TLS_PORT/v2/"
hdrs=$(curl -s -o /dev/null -D - --cacert "$T_TMP/tls.pem" "https://127.0.0.1:$TLS_PORT/v2/" | tr -d '\r')
t_check "headers: X-Content-Type-Options sent" grep -qi '^x-content-type-options: nosniff$' <<<"$hdrs"
t_check "headers: Strict-Transport-Security sent" grep -qi '^strict-transport-security: max-age=63072000$' <<<"$hdrs"
kill "$TLS_PID"
wait "$TLS_PID"

# ---- readonly (maintenance shape) ----
cfg "$T_TMP/ro" <<YML
storage:
  maintenance:
    readonly:
      enabled: true
YML
berth_start "$T_TMP/ro"
t_eq "readonly: an upload answers 405" 405 "$(status POST "$BERTH_URL/v2/team/app/blobs/uploads/")"
t_check "readonly: 405 says UNSUPPORTED" jq -e '.errors[0].code == "UNSUPPORTED"' "$T_TMP/body"
t_eq "readonly: reads still answer" 200 "$(status GET "$BERTH_URL/v2/")"
berth_stop

# ---- validation of layer URLs ----
echo '{"architecture":"amd64","os":"windows","rootfs":{"type":"layers","diff_ids":[]}}' >"$T_TMP/conf.json"
CONF_SIZE=$(stat -c %s "$T_TMP/conf.json")
# manifest URL: an image manifest with one non-distributable layer at URL
manifest_with() {
    jq -cn --arg c "sha256:$(t_sha256 "$T_TMP/conf.json")" --argjson cs "$CONF_SIZE" --arg u "$1" \
        '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
          config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
          layers: [{mediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                    digest: "sha256:5a1f1c3c2d0e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b",
                    size: 1024, urls: [$u]}]}'
}
# put_with DIR URL: PUT of that manifest to berth (started from DIR); prints the status
put_with() {
    blob_post "$BERTH_URL" win/app "$T_TMP/conf.json" >/dev/null
    manifest_with "$2" >"$T_TMP/m.json"
    status PUT "$BERTH_URL/v2/win/app/manifests/v1" -H "Content-Type: $MT_OCI" --data-binary "@$T_TMP/m.json"
}
META=http://169.254.169.254/latest/meta-data/iam
cfg "$T_TMP/v0" </dev/null
berth_start "$T_TMP/v0"
t_eq "validation (default): a layer URL is refused as in registry:2" 400 "$(put_with "$T_TMP/v0" "$META")"
t_check "validation (default): 400 says MANIFEST_INVALID" jq -e '.errors[0].code == "MANIFEST_INVALID"' "$T_TMP/body"
berth_stop
cfg "$T_TMP/v1" <<'YML'
validation:
  manifests:
    urls:
      allow:
        - ^https?://go\.microsoft\.com/
      deny:
        - ^https?://go\.microsoft\.com/private/
YML
berth_start "$T_TMP/v1"
t_eq "validation allow: an allowed URL is accepted" 201 "$(put_with "$T_TMP/v1" https://go.microsoft.com/fwlink/?linkid=1)"
t_eq "validation allow: a URL outside the list is refused" 400 "$(put_with "$T_TMP/v1" "$META")"
t_eq "validation deny: a denied URL is refused" 400 "$(put_with "$T_TMP/v1" https://go.microsoft.com/private/x)"
t_eq "validation allow: a fragment is refused" 400 "$(put_with "$T_TMP/v1" https://go.microsoft.com/x#frag)"
berth_stop
cfg "$T_TMP/v2" <<YML
validation:
  disabled: true
YML
berth_start "$T_TMP/v2"
t_eq "validation.disabled: the layer URL is not checked" 201 "$(put_with "$T_TMP/v2" "$META")"
berth_stop
cfg "$T_TMP/v3" <<'YML'
validation:
  manifests:
    urls:
      allow: ["^(unclosed"]
YML
REGISTRY_HTTP_ADDR=127.0.0.1:$(t_port) REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$T_TMP/v3/data \
    timeout 10 "$BERTH" serve -c "$T_TMP/v3/config.yml" >"$T_TMP/v3/out" 2>&1
t_eq "validation: an invalid expression stops berth" 1 "$?"
t_check "validation: ... naming the key" grep -q 'validation.manifests.urls.allow' "$T_TMP/v3/out"

# ---- http.host without a scheme (neonKUBE shape) and with one ----
cfg "$T_TMP/h1" <<YML
http:
  host: myhost:5000
YML
berth_start "$T_TMP/h1"
t_check "http.host without a scheme: said at start" grep -q 'http.host is not a URL' "$T_TMP/h1/berth.log"
t_check "http.host without a scheme: skopeo pushes" skopeo copy -q --dest-tls-verify=false "oci:$T_TMP/img:v1" \
    "docker://127.0.0.1:$BERTH_PORT/team/app:v1"
berth_stop
cfg "$T_TMP/h2" <<YML
http:
  host: https://registry.example.com/
YML
berth_start "$T_TMP/h2"
loc=$(curl -s -o /dev/null -D - -X POST "$BERTH_URL/v2/team/app/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
t_check "http.host with a scheme: upload Location built on it" bash -c "[[ '$loc' == https://registry.example.com/v2/team/app/blobs/uploads/* ]]"
berth_stop

# ---- json logs with fields; the old loglevel spelling ----
cfg "$T_TMP/j" <<YML
log:
  level: debug
  formatter: json
  fields:
    service: registry
    environment: test
YML
berth_start "$T_TMP/j"
curl -s -o /dev/null "$BERTH_URL/v2/no/such/manifests/latest"
berth_stop
t_check "log.formatter json: every line is a JSON object" bash -c "jq -e . '$T_TMP/j/berth.log' >/dev/null && ! grep -qv '^{' '$T_TMP/j/berth.log'"
t_check "log.formatter json: time, level and msg keys" jq -se 'all(.[]; has("time") and has("level") and has("msg"))' "$T_TMP/j/berth.log"
t_check "log.fields: on every line" jq -se 'all(.[]; .service == "registry" and .environment == "test")' "$T_TMP/j/berth.log"
t_check "log.formatter json: logfmt keys become JSON keys" jq -se 'any(.[]; .msg == "berth serving" and .addr != null)' "$T_TMP/j/berth.log"
cfg "$T_TMP/l" <<YML
loglevel: warn
YML
berth_start "$T_TMP/l"
berth_stop
t_check "loglevel (old spelling): warn hides the info lines" bash -c "! grep -q 'berth serving' '$T_TMP/l/berth.log'"
t_check "loglevel (old spelling): not reported unknown" bash -c "! grep -q 'unknown configuration key' '$T_TMP/l/berth.log'"

# ---- start-up warnings ----
DBG_PORT=$(t_port)
cfg "$T_TMP/w" <<YML
auth:
  htpasswd:
    realm: basic-realm
    path: $T_TMP/w/no-such-htpasswd
http:
  debug:
    addr: 127.0.0.1:$DBG_PORT
    prometheus:
      enabled: true
notifications:
  endpoints:
    - name: alistener
      url: https://listener.example/event
mirrors:
  docker.io:
    urls: [$REG_URL]
cache:
  maxsize: 0
YML
berth_start "$T_TMP/w"
t_eq "http.debug.addr serves /debug/health, as registry:2" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DBG_PORT/debug/health")"
t_check "... and Prometheus metrics at /metrics" \
    bash -c "curl -s 'http://127.0.0.1:$DBG_PORT/metrics' | grep -q '^# TYPE registry_http_requests_total counter'"
berth_stop
t_check "warning: an unreadable htpasswd file is said at start" grep -q "auth.htpasswd.path cannot be read.*no-such-htpasswd" "$T_TMP/w/berth.log"
t_check "http.debug is not named as unserved" bash -c "! grep -q 'not acted on.*key=http.debug' '$T_TMP/w/berth.log'"
t_check "notifications are served (not named as unserved)" bash -c "! grep -q 'not acted on.*key=notifications' '$T_TMP/w/berth.log'"
t_check "... its endpoint gets a delivery thread" grep -q 'notifications: delivering.* endpoint=alistener' "$T_TMP/w/berth.log"
t_check "warning: cache.maxsize 0 said as unbounded" grep -q 'cache.maxsize is 0' "$T_TMP/w/berth.log"
t_finish
