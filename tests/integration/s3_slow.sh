#!/usr/bin/env bash
# A slow bucket stalls only the requests that wait for it (issue 18, item 3): with storage.s3 the
# store reports STORE_CAP_BLOCKING, so blob GETs (and manifest GETs, upload PATCH/status) run on
# the worker pool instead of the event loop. berth talks to a throwaway Ceph RGW (tests/rgw.sh)
# through a relay (fixtures/holdproxy.py) that can hold every answer of the bucket back:
#   - a blob is pushed while the relay passes everything;
#   - the relay then holds; a blob GET starts and waits on the bucket (the relay says it holds an
#     answer);
#   - meanwhile /v2/, a manifest GET and a catalog request are answered, and the blob GET is
#     still waiting (the bucket has not answered yet): nothing here is timed, only ordered;
#   - released, the blob GET completes with the right bytes.
# Then an upload (issue 18, item 3's last gap): the relay holds the whole bucket while a PATCH of
# several parts opens its session (/v2/ is answered meanwhile), then only the answers to multipart
# part uploads: the session opens, the body streams and its first part waits on the bucket (the
# relay says so). While the body streams in, its later parts would wait for that one: the
# server writes the body on a worker, so /v2/, a manifest GET and the catalog are still answered
# and the PATCH is still in flight. Released, the PATCH and the PUT complete and the blob's digest
# is right.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/rgw.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"

if ! RGW_STORE=memstore RGW_OSD_SIZE=1G rgw_start "$T_TMP/rgw"; then
    t_fail "Ceph RGW starts"
    t_finish
fi
RELAY_PORT=$(t_port)
HOLD=$T_TMP/hold HELD=$T_TMP/held
python3 "$T_ROOT/tests/fixtures/holdproxy.py" "$RELAY_PORT" "${RGW_URL##*:}" "$HOLD" "$HELD" \
    >"$T_TMP/relay.log" 2>&1 &
T_PIDS+=($!)
t_wait_http "http://127.0.0.1:$RELAY_PORT/" || t_fail "the relay answers"

cat >"$T_TMP/config.yml" <<YML
version: 0.1
storage:
  redirect: {disable: true}
  s3:
    accesskey: $RGW_ACCESS_KEY
    secretkey: $RGW_SECRET_KEY
    region: $RGW_REGION
    regionendpoint: http://127.0.0.1:$RELAY_PORT
    bucket: $RGW_BUCKET
    rootdirectory: /slow
    secure: false
    chunksize: 5242880
health: {storagedriver: {enabled: false}}
YML
mkdir -p "$T_TMP/b"
cp "$T_TMP/config.yml" "$T_TMP/b/config.yml"
berth_start "$T_TMP/b" || {
    t_fail "berth starts over the relay"
    t_finish
}
U=$BERTH_URL

pl_rand_blob "$T_TMP/layer" 300000 400000
pl_make_config "$T_TMP/cfg" slow
d=$(pl_push_image "$U" slow/app v1 "$T_TMP" "$T_TMP/cfg" "$T_TMP/layer")
t_check "an image is pushed to the bucket through the relay" [ -n "$d" ]
L=sha256:$(t_sha256 "$T_TMP/layer")

# the bucket stops answering; a blob GET waits on it
touch "$HOLD"
curl -s --max-time 120 -o "$T_TMP/got" -w '%{http_code}' "$U/v2/slow/app/blobs/$L" >"$T_TMP/code" &
GET_PID=$!
for _ in $(seq 1 200); do
    [ -e "$HELD" ] && break
    sleep 0.1
done
t_check "the blob GET waits on the held bucket" [ -e "$HELD" ]

code=$(curl -s --max-time 15 -o /dev/null -w '%{http_code}' "$U/v2/")
t_eq "/v2/ answers while the blob GET waits on the bucket" 200 "$code"
got=$(curl -s --max-time 15 -H "$PL_ACCEPT" -o "$T_TMP/m" -w '%{http_code}' "$U/v2/slow/app/manifests/v1")
t_eq "a manifest GET answers meanwhile" 200 "$got"
t_eq "... with the pushed manifest" "$d" "sha256:$(t_sha256 "$T_TMP/m")"
cat_out=$(curl -s --max-time 15 "$U/v2/_catalog")
t_check "the catalog answers meanwhile" grep -q slow/app <<<"$cat_out"
t_check "... and the blob GET is still waiting (nothing answered for the bucket)" kill -0 "$GET_PID"

rm -f "$HOLD"
wait "$GET_PID"
t_eq "released, the blob GET completes" 200 "$(cat "$T_TMP/code")"
t_eq "... with the blob's bytes" "$L" "sha256:$(t_sha256 "$T_TMP/got")"

# a large PATCH whose part uploads wait on the bucket
head -c $((16 * 1024 * 1024 + 12345)) /dev/urandom >"$T_TMP/big"
B=sha256:$(t_sha256 "$T_TMP/big")
curl -s -D "$T_TMP/post.h" -o /dev/null -X POST "$U/v2/slow/app/blobs/uploads/"
loc=$(pl_loc "$T_TMP/post.h" "$U")
t_check "an upload session opens" [ -n "$loc" ]
# the whole bucket held: the PATCH's session (its state object) is read on a worker
rm -f "$HELD"
touch "$HOLD"
curl -s --max-time 120 -D "$T_TMP/patch.h" -o /dev/null -w '%{http_code}' -X PATCH \
    -H 'Content-Type: application/octet-stream' --data-binary @"$T_TMP/big" "$loc" \
    >"$T_TMP/patch.code" &
PATCH_PID=$!
for _ in $(seq 1 200); do
    [ -e "$HELD" ] && break
    sleep 0.1
done
t_check "the PATCH's session opening waits on the held bucket" [ -e "$HELD" ]
code=$(curl -s --max-time 15 -o /dev/null -w '%{http_code}' "$U/v2/")
t_eq "/v2/ answers while a PATCH's session opening waits on the bucket" 200 "$code"
# then only part uploads are held: the session opens, the body flows, its first part waits
rm -f "$HELD"
printf 'partNumber=' >"$HOLD.new"
mv "$HOLD.new" "$HOLD"
for _ in $(seq 1 300); do
    [ -e "$HELD" ] && break
    sleep 0.1
done
t_check "the PATCH's part upload waits on the held bucket" [ -e "$HELD" ]
code=$(curl -s --max-time 15 -o /dev/null -w '%{http_code}' "$U/v2/")
t_eq "/v2/ answers while a PATCH's body waits on the bucket" 200 "$code"
got=$(curl -s --max-time 15 -H "$PL_ACCEPT" -o "$T_TMP/m2" -w '%{http_code}' "$U/v2/slow/app/manifests/v1")
t_eq "a manifest GET answers meanwhile" 200 "$got"
cat_out=$(curl -s --max-time 15 "$U/v2/_catalog")
t_check "the catalog answers meanwhile" grep -q slow/app <<<"$cat_out"
t_check "... and the PATCH is still in flight (its part not answered)" kill -0 "$PATCH_PID"
rm -f "$HOLD"
wait "$PATCH_PID"
t_eq "released, the PATCH completes" 202 "$(cat "$T_TMP/patch.code")"
t_eq "... with every byte in the session" "0-$((16 * 1024 * 1024 + 12344))" \
    "$(pl_header "$T_TMP/patch.h" range)"
loc=$(pl_loc "$T_TMP/patch.h" "$U")
code=$(curl -s --max-time 60 -o /dev/null -w '%{http_code}' -X PUT "$loc$(pl_sep "$loc")digest=$B")
t_eq "the upload commits with its digest verified" 201 "$code"
curl -s --max-time 60 -o "$T_TMP/big.got" "$U/v2/slow/app/blobs/$B"
t_eq "... and the blob reads back with its digest" "$B" "sha256:$(t_sha256 "$T_TMP/big.got")"

# an error found while a worker writes the body is answered with the OCI error JSON: a chunked
# body (no Content-Length to check up front) longer than its Content-Range
curl -s -D "$T_TMP/post2.h" -o /dev/null -X POST "$U/v2/slow/app/blobs/uploads/"
loc=$(pl_loc "$T_TMP/post2.h" "$U")
head -c $((2 * 1024 * 1024)) /dev/urandom >"$T_TMP/two"
code=$(curl -s --max-time 60 -o "$T_TMP/err.json" -w '%{http_code}' -X PATCH \
    -H 'Transfer-Encoding: chunked' -H 'Content-Range: 0-99' \
    -H 'Content-Type: application/octet-stream' --data-binary @"$T_TMP/two" "$loc")
t_eq "a body longer than its Content-Range is refused (416)" 416 "$code"
t_check "... with the OCI error JSON" grep -Eq '"code": ?"BLOB_UPLOAD_INVALID"' "$T_TMP/err.json"

berth_stop
rgw_stop
t_finish
