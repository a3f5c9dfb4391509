#!/usr/bin/env bash
# berth over the shared engines of a scaled-out site: blobs in S3 (storage.s3, src/store/s3.c and
# s3mode.c) on a throwaway Ceph RGW (tests/rgw.sh), metadata in PostgreSQL (tests/pg.sh):
#   - the existing suites (API, gc, crash, mirror, Helm) run unchanged with BERTH pointing at
#     rgw_berth_wrapper over pg_berth_wrapper: one bucket prefix and one database per storage
#     directory; their tallies count here; the bucket is then checked to hold what they pushed
#     and no half-finished multipart uploads;
#   - start-up errors: a wrong secret key and an unreachable endpoint fail with a clear message;
#   - a cold mirror pull streams while the upstream (throttled) is still sending;
#   - a Helm chart larger than a part; a replica killed mid-PATCH: its multipart upload aborted;
#   - storage.redirect: on (registry:2's default with s3), a blob GET is a 307 to a presigned URL
#     that works without credentials (Range too); off, the blob streams through berth;
#   - RGW stopped: /health answers 503 naming the blob storage, a blob GET is a 503 OCI error.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/pg.sh"
. "$T_ROOT/tests/rgw.sh"

if ! rgw_start "$T_TMP/rgw"; then
    t_fail "Ceph RGW starts"
    t_finish
fi
if ! pg_start; then
    t_fail "PostgreSQL starts (initdb + pg_ctl as postgres)"
    rgw_stop
    t_finish
fi
trap 'pg_stop; rgw_stop; t_cleanup' EXIT
t_ok "RGW on $RGW_URL (bucket $RGW_BUCKET) and PostgreSQL on $PG_HOST:$PG_PORT started"

# ---- the existing suites, unchanged, over S3 + PostgreSQL ----
pg_berth_wrapper "$T_TMP/berth-pg"
rgw_berth_wrapper "$T_TMP/berth-s3" "$T_TMP/berth-pg"
export T_S3_PREFIXED=1 T_GC_PAUSE=0.5
for s in ${S3_API_SUITES-api gc crash mirror helm}; do # S3_API_SUITES="" skips them
    BERTH=$T_TMP/berth-s3 t_suite "$s" "over S3 + postgres"
done
unset T_S3_PREFIXED T_GC_PAUSE

if [ -n "${S3_API_SUITES-api gc crash mirror helm}" ]; then
    # the suites' blobs really are objects in the bucket, and no finished upload left anything
    rgw_aws s3api list-objects-v2 --bucket "$RGW_BUCKET" --query 'Contents[].Key' --output text |
        tr '\t' '\n' >"$T_TMP/keys"
    nblobs=$(grep -c '/blobs/sha256/' "$T_TMP/keys")
    t_check "the suites' blobs are objects in the bucket ($nblobs)" [ "$nblobs" -gt 0 ]
    t_eq "no finished upload left a data object" "" "$(grep '/uploads/.*/data$' "$T_TMP/keys" | head -3)"
    mpus=$(rgw_aws s3api list-multipart-uploads --bucket "$RGW_BUCKET" --query 'Uploads[].Key' --output text)
    t_eq "no multipart upload left open" "" "$(echo "$mpus" | grep -v '^None$' | head -3)"
    manifests=0
    for db in $(pg_psql postgres "SELECT datname FROM pg_database WHERE datname LIKE 'berth\_%'"); do
        n=$(pg_psql "$db" "SELECT count(*) FROM manifests" 2>/dev/null || echo 0)
        manifests=$((manifests + n))
    done
    t_check "their manifests are rows in postgres ($manifests)" [ "$manifests" -gt 0 ]
fi

# ---- errors at start ----
cfg_s3() { # cfg_s3 FILE ROOT PORT SECRET ENDPOINT [REDIRECT-DISABLE]
    cat >"$1" <<YML
version: 0.1
storage:
  filesystem: {rootdirectory: $2}
  redirect: {disable: ${6:-false}}
  s3:
    accesskey: $RGW_ACCESS_KEY
    secretkey: $4
    region: $RGW_REGION
    regionendpoint: $5
    bucket: $RGW_BUCKET
    rootdirectory: /errors
    secure: false
http: {addr: 127.0.0.1:$3}
health: {storagedriver: {enabled: true, interval: 1s, threshold: 1}}
YML
}
P=$(t_port)
cfg_s3 "$T_TMP/bad-secret.yml" "$T_TMP/e1" "$P" wrong-secret "$RGW_URL"
out=$(timeout 20 "$BERTH" serve -c "$T_TMP/bad-secret.yml" 2>&1)
t_eq "a wrong secret key: berth exits 1 at start" 1 $?
t_check "... naming S3 and the refusal" grep -q "S3.*403" <<<"$out"
cfg_s3 "$T_TMP/bad-host.yml" "$T_TMP/e2" "$P" "$RGW_SECRET_KEY" "http://127.0.0.1:$(t_port)"
out=$(timeout 30 "$BERTH" serve -c "$T_TMP/bad-host.yml" 2>&1)
t_eq "an unreachable endpoint: berth exits 1 at start" 1 $?
t_check "... saying it is unreachable" grep -q "unreachable" <<<"$out"

# ---- redirects, streaming, and RGW going away ----
# A: redirects on (registry:2's default with s3); B: redirects off, blobs stream through berth
cfg_s3 "$T_TMP/a.yml" "$T_TMP/e3" "$P" "$RGW_SECRET_KEY" "$RGW_URL"
sed -i 's|^    secure: false|    secure: false\n    chunksize: 5MiB|' "$T_TMP/a.yml"
PB=$(t_port)
cfg_s3 "$T_TMP/b.yml" "$T_TMP/e4" "$PB" "$RGW_SECRET_KEY" "$RGW_URL" true
"$BERTH" serve -c "$T_TMP/a.yml" >"$T_TMP/a.log" 2>&1 &
BA=$!
"$BERTH" serve -c "$T_TMP/b.yml" >"$T_TMP/b.log" 2>&1 &
BB=$!
T_PIDS+=("$BA" "$BB")
A=http://127.0.0.1:$P
B=http://127.0.0.1:$PB
t_wait_http "$A/v2/" || t_fail "berth A over S3 (SQLite metadata) starts" "$(tail -3 "$T_TMP/a.log")"
t_wait_http "$B/v2/" || t_fail "berth B over S3 (SQLite metadata) starts" "$(tail -3 "$T_TMP/b.log")"
t_eq "/health 200 with RGW up" "200 200" \
    "$(curl -s -o /dev/null -w '%{http_code}' "$A/health") $(curl -s -o /dev/null -w '%{http_code}' "$B/health")"
head -c 300000 /dev/urandom >"$T_TMP/small"
D=sha256:$(t_sha256 "$T_TMP/small")
for u in "$A" "$B"; do
    t_eq "a monolithic upload over S3 (SQLite metadata): 201 ($u)" 201 "$(curl -s -o /dev/null -w '%{http_code}' \
        -X POST --data-binary @"$T_TMP/small" -H 'Content-Type: application/octet-stream' \
        "$u/v2/e/blobs/uploads/?digest=$D")"
done
t_eq "redirects on: a blob GET answers 307" 307 "$(curl -s -o /dev/null -w '%{http_code}' "$A/v2/e/blobs/$D")"
loc=$(curl -s -o /dev/null -w '%{redirect_url}' "$A/v2/e/blobs/$D")
t_check "... to a presigned URL of the bucket" grep -q "^$RGW_URL/$RGW_BUCKET/errors/blobs/sha256/.*X-Amz-Signature=" <<<"$loc"
t_eq "... which a client without credentials follows to the blob" "$(t_sha256 "$T_TMP/small")" \
    "$(curl -s -L "$A/v2/e/blobs/$D" | sha256sum | cut -d' ' -f1)"
t_eq "... Range through the redirect" "$(tail -c +1001 "$T_TMP/small" | head -c 100 | sha256sum | cut -d' ' -f1)" \
    "$(curl -s -L -H 'Range: bytes=1000-1099' "$A/v2/e/blobs/$D" | sha256sum | cut -d' ' -f1)"
t_eq "... a tampered presigned URL is refused by S3" 403 \
    "$(curl -s -o /dev/null -w '%{http_code}' "${loc/X-Amz-Expires=1200/X-Amz-Expires=99999}")"
t_eq "HEAD is answered by berth itself (200, size)" "200 300000" \
    "$(curl -s -I -o /dev/null -w '%{http_code} ' "$A/v2/e/blobs/$D")$(curl -sI "$A/v2/e/blobs/$D" | tr -d '\r' | awk 'tolower($1)=="content-length:" {print $2}')"
t_eq "redirects off: the blob streams through berth" "200 $(t_sha256 "$T_TMP/small")" \
    "$(curl -s -o "$T_TMP/got" -w '%{http_code}' "$B/v2/e/blobs/$D") $(t_sha256 "$T_TMP/got")"
# a Helm chart larger than a part (A's chunksize is 5 MiB): the upload is completed and read back
# for the chart checks, then stored as any blob
mkdir -p "$T_TMP/big/templates"
printf 'apiVersion: v2\nname: big\nversion: 0.1.0\n' >"$T_TMP/big/Chart.yaml"
head -c 7000000 /dev/urandom >"$T_TMP/big/data.bin"
tar -C "$T_TMP" -czf "$T_TMP/big-0.1.0.tgz" big
t_eq "a 7 MB Helm chart uploaded over S3 in parts: 201" 201 \
    "$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$T_TMP/big-0.1.0.tgz" "$A/api/charts")"
t_eq "... listed in index.yaml and served back byte for byte" "0.1.0 $(t_sha256 "$T_TMP/big-0.1.0.tgz")" \
    "$(curl -s "$A/index.yaml" | grep -A30 '^  big:' | sed -n 's/^ *version: //p' | tr -d '"' | head -1) $(curl -s "$A/charts/big-0.1.0.tgz" | sha256sum | cut -d' ' -f1)"

# a cold mirror pull over S3 streams: the client gets bytes while the upstream (4 MiB/s through
# a throttling proxy) is still sending; the fill's parts go to S3 and a local spool feeds readers
registry_start "$T_TMP/up" || t_fail "upstream registry starts"
head -c 16777216 /dev/urandom >"$T_TMP/layer.bin"
DL=sha256:$(t_sha256 "$T_TMP/layer.bin")
uloc=$(curl -s -D- -o /dev/null -X POST "$REG_URL/v2/test/big/blobs/uploads/" | tr -d '\r' |
    awk 'tolower($1)=="location:" {print $2}')
case "$uloc" in *\?*) uloc="$uloc&digest=$DL" ;; *) uloc="$uloc?digest=$DL" ;; esac
case "$uloc" in /*) uloc="$REG_URL$uloc" ;; esac
t_eq "upstream holds a 16 MiB blob" 201 "$(curl -s -o /dev/null -w '%{http_code}' -X PUT \
    --data-binary @"$T_TMP/layer.bin" -H 'Content-Type: application/octet-stream' "$uloc")"
TP=$(t_port)
python3 "$T_ROOT/tests/fixtures/throttleproxy.py" "$TP" "$REG_PORT" 4194304 "$T_TMP/sent" &
T_PIDS+=("$!")
PD=$(t_port)
cfg_s3 "$T_TMP/d.yml" "$T_TMP/e6" "$PD" "$RGW_SECRET_KEY" "$RGW_URL" true
printf 'mirrors:\n  up.example:\n    urls: [http://127.0.0.1:%s]\n' "$TP" >>"$T_TMP/d.yml"
"$BERTH" serve -c "$T_TMP/d.yml" >"$T_TMP/d.log" 2>&1 &
BD=$!
T_PIDS+=("$BD")
t_wait_http "http://127.0.0.1:$PD/v2/" || t_fail "berth D (S3, mirror) starts" "$(tail -3 "$T_TMP/d.log")"
for _ in $(seq 1 50); do [ -s "$T_TMP/sent" ] && break; sleep 0.1; done
curl -s -o "$T_TMP/cold.bin" "http://127.0.0.1:$PD/v2/up.example/test/big/blobs/$DL" &
CC=$!
early=""
for _ in $(seq 1 600); do
    sent=$(cat "$T_TMP/sent" 2>/dev/null || echo 0)
    got=$(stat -c %s "$T_TMP/cold.bin" 2>/dev/null || echo 0)
    if [ "$got" -gt 1048576 ] && [ "$sent" -lt 16777216 ]; then
        early="client had $got bytes while the upstream had sent $sent"
        break
    fi
    kill -0 "$CC" 2>/dev/null || break
    sleep 0.1
done
wait "$CC"
t_check "cold mirror pull over S3 streams (${early:-no bytes before the upstream finished})" test -n "$early"
t_eq "... and the client's bytes are the blob" "$(t_sha256 "$T_TMP/layer.bin")" "$(t_sha256 "$T_TMP/cold.bin")"
before=$(cat "$T_TMP/sent")
t_eq "a second pull is served from the bucket (no upstream bytes)" "$(t_sha256 "$T_TMP/layer.bin") $before" \
    "$(curl -s "http://127.0.0.1:$PD/v2/up.example/test/big/blobs/$DL" | sha256sum | cut -d' ' -f1) $(cat "$T_TMP/sent")"
kill "$BD" 2>/dev/null
wait "$BD" 2>/dev/null

# a replica killed while a PATCH streams leaves a multipart upload whose id it never saved: the
# upload purge of the next start aborts it with the session
PC=$(t_port)
cfg_s3 "$T_TMP/c.yml" "$T_TMP/e5" "$PC" "$RGW_SECRET_KEY" "$RGW_URL" true
sed -i 's|^    rootdirectory: /errors|    rootdirectory: /killed\n    chunksize: 5MiB|' "$T_TMP/c.yml"
# the restarted C purges sessions untouched for 3 s (the first C must not: its PATCH may open the
# session only after its first bytes arrive)
python3 - "$T_TMP/c.yml" "$T_TMP/c2.yml" <<'PY'
import sys
s = open(sys.argv[1]).read().replace("storage:\n", "storage:\n  maintenance: {uploadpurging: {enabled: true, age: 3s, interval: 1s}}\n", 1)
open(sys.argv[2], "w").write(s)
PY
C=http://127.0.0.1:$PC
"$BERTH" serve -c "$T_TMP/c.yml" >"$T_TMP/c.log" 2>&1 &
BC=$!
t_wait_http "$C/v2/" || t_fail "berth C starts" "$(tail -3 "$T_TMP/c.log")"
loc=$(curl -s -D- -o /dev/null -X POST "$C/v2/k/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
head -c 30000000 /dev/urandom >"$T_TMP/patch.bin"
curl -s -o /dev/null --limit-rate 3M -X PATCH -H 'Content-Type: application/octet-stream' \
    --data-binary @"$T_TMP/patch.bin" "$C$loc" &
CP=$!
mpus() { rgw_curl "$RGW_URL/$RGW_BUCKET?prefix=killed%2F&uploads=" | grep -o '<UploadId>[^<]*' ; }
for _ in $(seq 1 100); do [ -n "$(mpus)" ] && break; sleep 0.2; done
t_check "a streaming PATCH has a multipart upload open" test -n "$(mpus)"
kill -9 "$BC"
wait "$BC" "$CP" 2>/dev/null
"$BERTH" serve -c "$T_TMP/c2.yml" >>"$T_TMP/c.log" 2>&1 &
BC=$!
T_PIDS+=("$BC")
t_wait_http "$C/v2/" || t_fail "berth C restarts" "$(tail -3 "$T_TMP/c.log")"
for _ in $(seq 1 200); do [ -z "$(mpus)" ] && break; sleep 0.3; done
t_eq "after SIGKILL and restart, the purge aborts the orphaned multipart upload" "" "$(mpus)"
t_eq "... and removes the session" 404 "$(curl -s -o /dev/null -w '%{http_code}' "$C$loc")"
kill "$BC" 2>/dev/null
wait "$BC" 2>/dev/null

rgw_stop
code=000
for _ in $(seq 1 50); do
    code=$(curl -s -o "$T_TMP/h.json" -w '%{http_code}' --max-time 20 "$B/health")
    [ "$code" = 503 ] && break
    sleep 0.3
done
t_eq "RGW stopped: /health answers 503" 503 "$code"
t_check "... naming the blob storage" grep -q "S3" "$T_TMP/h.json"
t_eq "RGW stopped: a streamed blob GET is a 503 with the OCI error body" "503 UNAVAILABLE" \
    "$(curl -s -o "$T_TMP/e.json" -w '%{http_code}' --max-time 60 "$B/v2/e/blobs/$D") $(jq -r '.errors[0].code' "$T_TMP/e.json" 2>&1)"
kill "$BA" "$BB" 2>/dev/null
wait "$BA" "$BB" 2>/dev/null
t_finish
