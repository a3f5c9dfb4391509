#!/usr/bin/env bash
# Server-level behaviour: registry:2 config compatibility (unknown keys reported, env overrides,
# http.headers, deletes disabled), real TLS, health (503 when storage is not writable), one log
# line per request, and a clean SIGTERM shutdown that lets an in-flight upload finish.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"

# --- a registry:2 config file, unchanged, with keys berth does not know ---
d=$T_TMP/cfg
mkdir -p "$d"
cat >"$d/config.yml" <<YML
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /nonexistent/overridden/by/env
  delete:
    enabled: false
http:
  addr: :1
  secret: asecretforlocaldevelopment
  headers:
    X-Content-Type-Options: [nosniff]
    X-Berth-Test: [one]
health:
  storagedriver:
    enabled: true
    interval: 1s
    threshold: 1
YML
berth_start "$d"
t_check "config: unknown key storage.cache reported by name" grep -q 'key=storage.cache' "$d/berth.log"
t_check "config: unknown key http.secret reported by name" grep -q 'key=http.secret' "$d/berth.log"
t_check "config: log.fields added to the lines (registry:2's key)" grep -q 'msg="berth serving".* service=registry$' "$d/berth.log"
t_check "config: env override of rootdirectory used" test -f "$d/data/metadata.db"
hdrs=$(curl -s -D - -o /dev/null "$BERTH_URL/v2/" | tr -d '\r')
t_check "http.headers: X-Content-Type-Options sent" grep -q '^X-Content-Type-Options: nosniff' <<<"$hdrs"
t_check "http.headers: custom header sent" grep -q '^X-Berth-Test: one' <<<"$hdrs"
t_eq "GET / answers 200" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL/")"
t_eq "GET /health answers 200 when writable" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL/health")"
# plain HTTP maps no TLS library (src/util/tlslazy.h), and no libm unless ASan's runtime needs it
case "$(t_bin_arch)" in amd64 | arm64)
    t_check "plain HTTP: GnuTLS is not loaded" bash -c "! grep -q libgnutls /proc/$BERTH_PID/maps"
    t_check "no Notary COSE signature read: libcbor is not loaded" bash -c "! grep -q libcbor /proc/$BERTH_PID/maps"
    ldd "$BERTH" | grep -q libasan ||
        t_check "plain HTTP: libm is not loaded" bash -c "! grep -q '/libm[.-]' /proc/$BERTH_PID/maps"
    ;;
esac

# one structured line per request: method, path, status, bytes, duration
curl -s -o /dev/null "$BERTH_URL/v2/some/repo/tags/list"
sleep 0.2
line=$(grep 'path="/v2/some/repo/tags/list"' "$d/berth.log" | tail -1)
t_check "log: request line has method, status, bytes and duration" \
    grep -qE 'method=GET .*status=404 bytes_in=0 bytes_out=[0-9]+ duration_ms=[0-9.]+' <<<"$line"

# deletes disabled -> 405 UNSUPPORTED
body=$(curl -s -X DELETE "$BERTH_URL/v2/x/manifests/latest")
t_eq "deletes disabled: 405" 405 "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$BERTH_URL/v2/x/manifests/latest")"
t_eq "deletes disabled: UNSUPPORTED code" UNSUPPORTED "$(jq -r '.errors[0].code' <<<"$body")"

# storage not writable -> /health 503 (the probe directory replaced by a file)
rm -rf "$d/data/tmp" && touch "$d/data/tmp"
ok=0
for _ in $(seq 1 40); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL/health")" = 503 ] && ok=1 && break
    sleep 0.1
done
t_eq "health: 503 when storage is not writable" 1 "$ok"
rm -f "$d/data/tmp" && mkdir "$d/data/tmp"
ok=0
for _ in $(seq 1 40); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL/health")" = 200 ] && ok=1 && break
    sleep 0.1
done
t_eq "health: back to 200 when storage recovers" 1 "$ok"

# --- uploads drop their pages from the page cache behind the writeback (store.c, WRITEBACK_STEP)
# While streaming: a 64 MiB PATCH, its pages made clean (sync), then 16 MiB more. Clean pages more
# than a step (8 MiB) behind are dropped as the second PATCH goes: 24 MiB of the 80 stay cached,
# where nothing would be dropped before the upload is finished.
head -c $((64 << 20)) /dev/urandom >"$T_TMP/big64"
head -c $((16 << 20)) /dev/urandom >"$T_TMP/big16"
code=$("${PL_CURL[@]}" -D "$T_TMP/h" -o /dev/null -w '%{http_code}' -X POST "$BERTH_URL/v2/dropbehind/blobs/uploads/")
loc=$(pl_loc "$T_TMP/h" "$BERTH_URL")
for f in big64 big16; do
    sync
    code="$code $("${PL_CURL[@]}" -D "$T_TMP/h" -o /dev/null -w '%{http_code}' -X PATCH \
        -H 'Content-Type: application/octet-stream' --data-binary @"$T_TMP/$f" "$loc")"
    loc=$(pl_loc "$T_TMP/h" "$BERTH_URL")
done
t_eq "80 MiB upload in two PATCHes -> 202, 202, 202" "202 202 202" "$code"
res=$(fincore --bytes --noheadings --output RES "$d/data/uploads/${loc##*/}/data")
t_check "80 MiB upload streaming: at most 32 MiB of it in the page cache (${res:-?} bytes)" \
    test "${res:-99999999999}" -le $((32 << 20))
"${PL_CURL[@]}" -o /dev/null -X DELETE "$loc"
# Finished (verified and synced), all but the last 16 MiB leave the cache. Five PATCHes of 6 MiB:
# each request opens the session anew and none writes a whole step, so nothing was dropped while
# streaming and the 30 MiB are all cached until the PUT.
head -c $((30 << 20)) "$T_TMP/big64" >"$T_TMP/big30"
split -b $((6 << 20)) -d "$T_TMP/big30" "$T_TMP/part."
dg=sha256:$(t_sha256 "$T_TMP/big30")
code=$("${PL_CURL[@]}" -D "$T_TMP/h" -o /dev/null -w '%{http_code}' -X POST "$BERTH_URL/v2/dropbehind/blobs/uploads/")
loc=$(pl_loc "$T_TMP/h" "$BERTH_URL")
for f in "$T_TMP"/part.*; do
    code="$code $("${PL_CURL[@]}" -D "$T_TMP/h" -o /dev/null -w '%{http_code}' -X PATCH \
        -H 'Content-Type: application/octet-stream' --data-binary @"$f" "$loc")"
    loc=$(pl_loc "$T_TMP/h" "$BERTH_URL")
done
code="$code $("${PL_CURL[@]}" -o /dev/null -w '%{http_code}' -X PUT "$loc$(pl_sep "$loc")digest=$dg")"
t_eq "30 MiB upload in five PATCHes -> 202 x 6, 201" "202 202 202 202 202 202 201" "$code"
res=$(fincore --bytes --noheadings --output RES "$d/data/blobs/sha256/${dg:7:2}/${dg#sha256:}")
t_check "30 MiB upload finished: at most 16 MiB of it stays in the page cache (${res:-?} bytes)" \
    test "${res:-99999999999}" -le $((16 << 20))
t_check "30 MiB upload: the blob reads back whole" pl_get_blob "$BERTH_URL" dropbehind "$dg" "$T_TMP/back"
rm -f "$T_TMP"/big* "$T_TMP"/part.* "$T_TMP/back"

# --- SIGTERM lets an in-flight upload finish ---
head -c 3000000 /dev/urandom >"$T_TMP/big"
dg=sha256:$(t_sha256 "$T_TMP/big")
loc=$(curl -s -D - -o /dev/null -X POST "$BERTH_URL/v2/slow/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
curl -s -o /dev/null -w '%{http_code}' --limit-rate 1500k -X PUT --data-binary @"$T_TMP/big" \
    "$BERTH_URL$loc?digest=$dg" >"$T_TMP/slow.status" &
slow=$!
sleep 0.7
kill -TERM "$BERTH_PID"
wait "$slow"
t_eq "shutdown: in-flight upload finished with 201" 201 "$(cat "$T_TMP/slow.status")"
wait "$BERTH_PID"
t_eq "shutdown: exit status 0 after SIGTERM" 0 "$?"
t_check "shutdown: no new connections after stop" bash -c "! curl -s -m 2 -o /dev/null $BERTH_URL/v2/"

# the committed blob survives the restart
berth_start "$d"
t_eq "restart: blob uploaded during shutdown is there" "$(t_sha256 "$T_TMP/big")" \
    "$(curl -s "$BERTH_URL/v2/slow/blobs/$dg" | sha256sum | cut -d' ' -f1)"
berth_stop

# a config error is reported clearly and berth refuses to start
printf 'storage:\n  delete:\n    enabled: perhaps\n' >"$T_TMP/bad.yml"
out=$("$BERTH" serve -c "$T_TMP/bad.yml" 2>&1)
t_eq "config: invalid value refused (exit 1)" 1 "$?"
t_check "config: error names the key" grep -q 'storage.delete.enabled' <<<"$out"
printf 'storage:\n  s3:\n    bucket: x\n' >"$T_TMP/s3.yml"
out=$("$BERTH" serve -c "$T_TMP/s3.yml" 2>&1)
t_check "config: unsupported storage driver refused by name" grep -q 'storage.s3' <<<"$out"

# --- real TLS ---
td=$T_TMP/tls
mkdir -p "$td/certs"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$td/key.pem" -out "$td/cert.pem" 2>/dev/null
cat >"$td/config.yml" <<YML
version: 0.1
http:
  tls:
    certificate: $td/cert.pem
    key: $td/key.pem
YML
BERTH_PORT=$(t_port)
REGISTRY_HTTP_ADDR=127.0.0.1:$BERTH_PORT REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$td/data \
    "$BERTH" serve -c "$td/config.yml" >>"$td/berth.log" 2>&1 &
BERTH_PID=$!
T_PIDS+=("$BERTH_PID")
t_wait_http "https://127.0.0.1:$BERTH_PORT/v2/"
t_eq "tls: /v2/ over https with the CA" 200 \
    "$(curl -s --cacert "$td/cert.pem" -o /dev/null -w '%{http_code}' "https://localhost:$BERTH_PORT/v2/")"
t_check "tls: untrusted certificate refused by curl" bash -c "! curl -s -o /dev/null https://localhost:$BERTH_PORT/v2/"
t_check "tls: TLS 1.1 refused" bash -c "! curl -s --cacert $td/cert.pem --tls-max 1.1 -o /dev/null https://localhost:$BERTH_PORT/v2/"
# skopeo pushes over verified TLS (cert dir holds the CA as ca.crt)
cp "$td/cert.pem" "$td/certs/ca.crt"
python3 "$T_ROOT/tests/fixtures/mkimage.py" image "$td/layout" --layers 2 --seed 7 --tag v1 >/dev/null 2>&1
t_check "tls: skopeo copy into berth over https" skopeo copy -q --dest-cert-dir "$td/certs" \
    "oci:$td/layout:v1" "docker://localhost:$BERTH_PORT/tls/img:v1"
t_check "tls: skopeo inspect over https" skopeo inspect --cert-dir "$td/certs" "docker://localhost:$BERTH_PORT/tls/img:v1"
t_check "clean shutdown on SIGTERM (tls)" berth_stop

# ---- storage.maintenance.readonly.enabled (registry:2's key): reads served, writes 405 ----
ro=$T_TMP/ro
mkdir -p "$ro"
berth_start "$ro" || t_fail "berth starts (read-write, to fill the store)"
t_check "readonly: fill the store first (skopeo copy)" skopeo copy -q --dest-tls-verify=false \
    "oci:$td/layout:v1" "docker://127.0.0.1:$BERTH_PORT/ro/img:v1"
berth_stop
printf 'version: 0.1\nstorage:\n  maintenance:\n    readonly:\n      enabled: true\n' >"$ro/config.yml"
berth_start "$ro" || t_fail "berth starts read-only"
U=$BERTH_URL
t_eq "readonly: GET manifest" 200 "$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$U/v2/ro/img/manifests/v1")"
t_check "readonly: skopeo pulls" skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$BERTH_PORT/ro/img:v1" "oci:$ro/out:v1"
body=$(curl -s -X POST -w ' %{http_code}' "$U/v2/ro/img/blobs/uploads/")
t_eq "readonly: POST upload -> 405 UNSUPPORTED" "UNSUPPORTED 405" "$(jq -r '.errors[0].code' <<<"${body% *}") ${body##* }"
t_eq "readonly: PUT manifest -> 405" 405 "$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data '{}' "$U/v2/ro/img/manifests/v2")"
t_eq "readonly: DELETE manifest -> 405" 405 "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$U/v2/ro/img/manifests/v1")"
t_eq "readonly: Helm upload (POST /api/charts) -> 405" 405 "$(curl -s -o /dev/null -w '%{http_code}' --data-binary 'x' "$U/api/charts")"
t_check "readonly: clean shutdown" berth_stop
t_finish
