#!/usr/bin/env bash
# Limits (issue 6): a per-address request rate answered with 429 TOOMANYREQUESTS and Retry-After,
# other addresses unaffected; a cap on concurrent request bodies (uploads) answered the same way;
# a storage quota answered 507 with a message naming it before the disk is full, with everything
# stored before it still served.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"
PL_CURL=(curl -s)

# ---- rate ----
mkdir -p "$T_TMP/rate"
cat >"$T_TMP/rate/config.yml" <<YML
version: 0.1
limits: {rate: 0.2, burst: 5}
YML
berth_start "$T_TMP/rate" || { t_fail "berth starts"; t_finish; }
# a slow refill (one token per 5 s), so how fast this machine runs the requests does not matter;
# the start-up probe took one token of the burst
codes=""
for i in $(seq 1 15); do codes+="$(curl -s -o "$T_TMP/r$i" -D "$T_TMP/h$i" -w '%{http_code}' "$BERTH_URL/v2/") "; done
n429=$(grep -o 429 <<<"$codes" | wc -l)
n200=$(grep -o 200 <<<"$codes" | wc -l)
t_check "rate 0.2/s, burst 5: of 15 requests the rest of the burst passes, the others are 429 ($codes)" \
    bash -c "[ $n200 -ge 3 ] && [ $n200 -le 6 ] && [ $n429 -ge 9 ]"
last=$(ls -t "$T_TMP"/h* | head -1)
for i in $(seq 1 15); do grep -q ' 429' "$T_TMP/h$i" && last=$T_TMP/h$i && lastb=$T_TMP/r$i; done
t_eq "a 429 carries the OCI error TOOMANYREQUESTS" TOOMANYREQUESTS "$(jq -r '.errors[0].code' "$lastb")"
t_check "a 429 carries Retry-After (seconds)" grep -qiE '^retry-after: [1-9][0-9]*' "$last"
t_eq "another address is not limited by it" 200 \
    "$(curl -s --interface 127.0.0.2 -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/")"
sleep 5.5
t_eq "after waiting, the address is served again" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/")"
berth_stop

# ---- concurrent bodies ----
mkdir -p "$T_TMP/up"
cat >"$T_TMP/up/config.yml" <<YML
version: 0.1
limits: {uploads: 2}
YML
berth_start "$T_TMP/up" || { t_fail "berth starts"; t_finish; }
loc() { curl -s -D - -o /dev/null -X POST "$BERTH_URL/v2/lim/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p'; }
# two uploads that send a little of a 1 MB body and then hold on
python3 - "$BERTH_PORT" "$(loc)" "$(loc)" "$T_TMP/hold" <<'PY' &
import socket, sys, time, os
port, locs, stop = int(sys.argv[1]), sys.argv[2:4], sys.argv[4]
socks = []
for l in locs:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"PATCH {l} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n".encode() + b"x" * 1000)
    socks.append(s)
open(stop + ".ready", "w").close()
while not os.path.exists(stop):
    time.sleep(0.1)
for s in socks:
    s.close()
PY
HOLD=$!
T_PIDS+=("$HOLD")
for _ in $(seq 1 50); do [ -f "$T_TMP/hold.ready" ] && break; sleep 0.1; done
sleep 0.3
head -c 4096 /dev/urandom >"$T_TMP/small"
l=$(loc)
code=$(curl -s -D "$T_TMP/uh" -o "$T_TMP/ub" -w '%{http_code}' -X PATCH -H 'Content-Type: application/octet-stream' \
    --data-binary @"$T_TMP/small" "$BERTH_URL$l")
t_eq "a third upload while two are in progress (limits.uploads: 2): 429" 429 "$code"
t_check "... with Retry-After" grep -qi '^retry-after: 1' "$T_TMP/uh"
t_eq "requests without a body are not counted" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/")"
touch "$T_TMP/hold"
wait "$HOLD" 2>/dev/null
sleep 0.3
t_check "once they are gone, an upload goes through" pl_push_blob "$BERTH_URL" lim "$T_TMP/small" patch
berth_stop

# ---- storage quota ----
mkdir -p "$T_TMP/q"
cat >"$T_TMP/q/config.yml" <<YML
version: 0.1
storage: {quota: 3MiB}
YML
berth_start "$T_TMP/q" || { t_fail "berth starts"; t_finish; }
head -c $((1 << 20)) /dev/urandom >"$T_TMP/b1"
head -c $((1 << 20)) /dev/urandom >"$T_TMP/b2"
head -c $((2 << 20)) /dev/urandom >"$T_TMP/b3"
t_check "quota 3 MiB: a 1 MiB blob is stored" pl_push_blob "$BERTH_URL" q/a "$T_TMP/b1" put
t_check "quota 3 MiB: another 1 MiB blob is stored" pl_push_blob "$BERTH_URL" q/a "$T_TMP/b2" patch
l=$(curl -s -D - -o /dev/null -X POST "$BERTH_URL/v2/q/a/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
code=$(curl -s -o "$T_TMP/qb" -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
    --data-binary @"$T_TMP/b3" "$BERTH_URL$l?digest=sha256:$(t_sha256 "$T_TMP/b3")")
t_eq "a 2 MiB blob past the quota: 507" 507 "$code"
t_check "... naming the quota ($(jq -c . "$T_TMP/qb"))" jq -e '.errors[0].message | test("quota")' "$T_TMP/qb"
t_eq "... and nothing of it is stored" 404 \
    "$(curl -s -o /dev/null -w '%{http_code}' -I "$BERTH_URL/v2/q/a/blobs/sha256:$(t_sha256 "$T_TMP/b3")")"
t_check "the blobs stored before are served intact" pl_get_blob "$BERTH_URL" q/a "sha256:$(t_sha256 "$T_TMP/b1")" "$T_TMP/got1"
t_check "berth fsck is clean" "$BERTH" fsck -c "$T_TMP/q/config.yml"
berth_stop
t_eq "berth exits cleanly" 0 $?
t_finish
