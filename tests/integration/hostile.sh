#!/usr/bin/env bash
# Hostile clients (tests/fixtures/hostile.py): slowloris below and above http.connections,
# oversize headers (one 1 MiB header, 10,000 headers), a million 1-byte chunks in one streamed
# PATCH, 6,000 one-byte PATCH requests with Content-Range, uploads abandoned mid-body (purged by
# storage.maintenance.uploadpurging), 1,000 concurrent connections (wrk). Throughout, berth must
# stay up and answer a probe client (GET /v2/ and a manifest GET, from another source address,
# 127.0.0.2), and after each attack its open file descriptors and RSS must come back near the
# baseline measured after a warm-up (before/after comparison with a generous margin; nothing is
# asserted about timing).
. "$(dirname "$0")/../lib.sh"

# python3 may be a pyenv shim that costs most of a second per start: resolve it once
PY=$(python3 -c 'import sys; print(sys.executable)')
HOSTILE="$PY $T_ROOT/tests/fixtures/hostile.py"
ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json'
FD_MARGIN=40       # the SQLite connection pool may legitimately open up to 16 connections
RSS_MARGIN=16384   # kB

D=$T_TMP/b
mkdir -p "$D"
# connections_per_ip: the wrk test opens 1,000 connections from one address (the default limit
# is all but an eighth of http.connections); the slowloris test above the limit relies on it too
cat >"$D/config.yml" <<YML
version: 0.1
log:
  level: info
http:
  connections_per_ip: 1000
storage:
  filesystem:
    rootdirectory: $D/data
  maintenance:
    uploadpurging:
      enabled: true
      age: 3s
      interval: 1s
YML
if ! berth_start "$D"; then
    t_fail "berth starts" "$(tail -5 "$D/berth.log")"
    t_finish
fi
PID=$BERTH_PID
HP=${BERTH_URL#http://}
HOST=${HP%:*}
PORT=${HP##*:}

fds() { find "/proc/$PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$PID/status" 2>/dev/null; }
alive() { kill -0 "$PID" 2>/dev/null; }

# the image every manifest probe reads
python3 "$T_ROOT/tests/fixtures/mkimage.py" image "$T_TMP/layout" --layers 2 --seed 11 --tag v1 >/dev/null
t_check "setup: skopeo pushes the probe image" skopeo copy -q --insecure-policy --dest-tls-verify=false \
    "oci:$T_TMP/layout:v1" "docker://$HP/hostile/img:v1"
MDIG=$(python3 "$T_ROOT/tests/fixtures/mkimage.py" digest "$T_TMP/layout" --tag v1)

# probe: prints "ok" when GET /v2/ answers 200 and the manifest GET returns the pushed bytes,
# else what went wrong. Runs from 127.0.0.2 so a per-address limit on the attacker (127.0.0.1)
# would not hit it.
probe() {
    local c m f=$T_TMP/.probe.$BASHPID
    c=$(curl -s -m "${1:-10}" --interface 127.0.0.2 -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/")
    [ "$c" = 200 ] || { echo "v2=$c"; return; }
    m=$(curl -s -m "${1:-10}" --interface 127.0.0.2 -H "$ACCEPT" -o "$f" -w '%{http_code}' \
        "$BERTH_URL/v2/hostile/img/manifests/v1")
    if [ "$c" = 200 ] && [ "$m" = 200 ] && [ "sha256:$(t_sha256 "$f")" = "$MDIG" ]; then
        echo ok
    else
        echo "v2=$c manifest=$m"
    fi
    rm -f "$f"
}

# probes_during N: N probes half a second apart; prints "answered/total" and the first failure.
probes_during() {
    local i ok=0 first="" r
    for i in $(seq 1 "$1"); do
        r=$(probe "${2:-10}")
        if [ "$r" = ok ]; then ok=$((ok + 1)); else first=${first:-$r}; fi
        sleep 0.5
    done
    echo "$ok/$1${first:+ first failure: $first}"
}

# settle NAME: waits (up to ~15 s) for fds and RSS to come back near the baseline, then checks.
settle() {
    local i f r
    for i in $(seq 1 60); do
        f=$(fds)
        r=$(rss)
        [ -n "$r" ] && [ "$f" -le $((BASE_FD + FD_MARGIN)) ] && [ "$r" -le $((BASE_RSS + RSS_MARGIN)) ] && break
        sleep 0.25
    done
    t_check "$1: berth still running" alive
    if [ -n "$r" ] && [ "$f" -le $((BASE_FD + FD_MARGIN)) ]; then
        t_ok "$1: open fds back near baseline ($BASE_FD before, $f after)"
    else
        t_fail "$1: open fds back near baseline" "$BASE_FD before, ${f:-?} after, margin $FD_MARGIN"
    fi
    if [ -n "$r" ] && [ "$r" -le $((BASE_RSS + RSS_MARGIN)) ]; then
        t_ok "$1: RSS back near baseline (${BASE_RSS} kB before, $r kB after)"
    else
        t_fail "$1: RSS back near baseline" "${BASE_RSS} kB before, ${r:-?} kB after, margin $RSS_MARGIN kB"
    fi
}

# --- warm-up and baseline: some of everything the attacks will do, then measure ---
echo "# t=${SECONDS}s"
BG=()
for i in 1 2 3 4; do
    head -c 100000 /dev/urandom >"$T_TMP/warm$i"
    curl -s -o /dev/null -X POST -H 'Content-Type: application/octet-stream' --data-binary @"$T_TMP/warm$i" \
        "$BERTH_URL/v2/hostile/warm/blobs/uploads/?digest=sha256:$(t_sha256 "$T_TMP/warm$i")" &
    BG+=($!)
done
wait "${BG[@]}"
wrk -c 50 -t 2 -d 1s -H "$ACCEPT" "$BERTH_URL/v2/hostile/img/manifests/v1" >/dev/null 2>&1
$HOSTILE headers "$BERTH_URL/v2/" --many 20 >/dev/null
sleep 0.5
BASE_FD=$(fds)
BASE_RSS=$(rss)
echo "# baseline: $BASE_FD fds, $BASE_RSS kB RSS (pid $PID)"
t_eq "baseline probe answers" ok "$(probe)"

# --- slowloris, below the connection limit: 600 connections dribbling headers ---
echo "# t=${SECONDS}s"
rm -f "$T_TMP/stop" "$T_TMP/ready"
$HOSTILE slowloris "$HOST" "$PORT" --conns 600 --src 127.0.0.1 --tick 0.5 --ready "$T_TMP/ready" \
    --stop "$T_TMP/stop" --seconds 60 >"$T_TMP/sl1.json" 2>"$T_TMP/sl1.err" &
SL=$!
T_PIDS+=("$SL")
for _ in $(seq 1 100); do [ -f "$T_TMP/ready" ] && break; sleep 0.1; done
sleep 1
held=$(fds)
echo "# slowloris 600: berth holds $held fds"
t_check "slowloris 600: the slow connections reached berth (fds >= baseline + 500)" test "$held" -ge $((BASE_FD + 500))
t_eq "slowloris 600: probes answered while 600 slow clients are connected" "6/6" "$(probes_during 6)"
touch "$T_TMP/stop"
wait "$SL"
echo "# slowloris 600: $(cat "$T_TMP/sl1.json")"
settle "slowloris 600"

# --- slowloris above http.connections (1024): 1100 connections, reconnecting when dropped ---
echo "# t=${SECONDS}s"
# The slots must not all go to slow clients for good: a header timeout, a per-address limit or
# any other defence must let the probe client in while the attack goes on.
rm -f "$T_TMP/stop" "$T_TMP/ready"
$HOSTILE slowloris "$HOST" "$PORT" --conns 1100 --src 127.0.0.1 --tick 0.5 --reconnect \
    --ready "$T_TMP/ready" --stop "$T_TMP/stop" --seconds 60 >"$T_TMP/sl2.json" 2>"$T_TMP/sl2.err" &
SL=$!
T_PIDS+=("$SL")
for _ in $(seq 1 150); do [ -f "$T_TMP/ready" ] && break; sleep 0.1; done
sleep 1
echo "# slowloris 1100: berth holds $(fds) fds"
r=$(probes_during 6 2)
echo "# slowloris 1100: probes answered $r"
t_check "slowloris 1100 (> http.connections): at least half the probes answered during the attack ($r)" \
    test "${r%%/*}" -ge 3
touch "$T_TMP/stop"
wait "$SL"
echo "# slowloris 1100: $(cat "$T_TMP/sl2.json")"
t_eq "slowloris 1100: probe answered once the attack stops" ok "$(probe)"
settle "slowloris 1100"

# --- oversize headers ---
echo "# t=${SECONDS}s"
is_4xx() { case $1 in 400 | 413 | 414 | 431) return 0 ;; *) return 1 ;; esac; }
out=$($HOSTILE headers "$BERTH_URL/v2/" --one-big 1048576)
echo "# one 1 MiB header: $out"
t_check "headers: one 1 MiB header answered 4xx (431) ($(jq -c '[.status,.reason]' <<<"$out"))" is_4xx "$(jq -r .status <<<"$out")"
out=$($HOSTILE headers "$BERTH_URL/v2/" --many 10000)
echo "# 10,000 headers: $out"
t_check "headers: 10,000 headers answered 4xx (431) ($(jq -c '[.status,.reason]' <<<"$out"))" is_4xx "$(jq -r .status <<<"$out")"
out=$($HOSTILE headers "$BERTH_URL/v2/hostile/img/manifests/v1" --one-big 1048576 --method PUT)
t_check "headers: a 1 MiB header on a manifest PUT answered 4xx ($(jq -c '[.status,.reason]' <<<"$out"))" \
    is_4xx "$(jq -r .status <<<"$out")"
BG=()
for i in $(seq 1 30); do
    $HOSTILE headers "$BERTH_URL/v2/" --one-big 1048576 >"$T_TMP/big.$i" &
    BG+=($!)
done
r=$(probes_during 3)
wait "${BG[@]}"
n431=$(cat "$T_TMP"/big.* | jq -r .status | grep -c '^431$')
t_eq "headers: 30 parallel 1 MiB-header requests all answered 431" 30 "$n431"
t_eq "headers: probes answered during the oversize-header flood" "3/3" "$r"
t_eq "headers: 100 ordinary headers still fine (200)" 200 "$($HOSTILE headers "$BERTH_URL/v2/" --many 100 | jq -r .status)"
settle "oversize headers"

# --- a million 1-byte chunks in one streamed PATCH ---
echo "# t=${SECONDS}s"
loc=$(curl -s -D - -o /dev/null -X POST "$BERTH_URL/v2/hostile/chunks/blobs/uploads/" | tr -d '\r' |
    awk 'tolower($1)=="location:" {print $2}')
$HOSTILE chunked "$BERTH_URL$loc" --chunks 1000000 --chunk-size 1 --seed 5 >"$T_TMP/chunked.json" 2>&1 &
CH=$!
sleep 0.5
r=$(probes_during 3)
wait "$CH"
echo "# chunked: $(cut -c1-300 "$T_TMP/chunked.json")"
t_eq "1M chunks: the PATCH of 1,000,000 one-byte chunks answered 202" 202 "$(jq -r .status "$T_TMP/chunked.json")"
t_eq "1M chunks: Range reports all 1,000,000 bytes" 0-999999 "$(jq -r .range "$T_TMP/chunked.json")"
t_eq "1M chunks: probes answered while the chunks stream" "3/3" "$r"
dg=$(jq -r .digest "$T_TMP/chunked.json")
loc2=$(jq -r .location "$T_TMP/chunked.json")
case $loc2 in /*) loc2=$BERTH_URL$loc2 ;; esac
t_eq "1M chunks: PUT ?digest= commits (201)" 201 \
    "$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$loc2?digest=$dg")"
t_eq "1M chunks: the blob reads back byte for byte" "$dg" \
    "sha256:$(curl -s "$BERTH_URL/v2/hostile/chunks/blobs/$dg" | sha256sum | cut -d' ' -f1)"
settle "1M chunks"

# --- 6,000 one-byte PATCH requests with Content-Range on one keep-alive connection ---
echo "# t=${SECONDS}s"
$HOSTILE patches "$BERTH_URL/" hostile/patches --count 6000 --size 1 --seed 6 >"$T_TMP/patches.json" 2>&1 &
PA=$!
sleep 0.5
r=$(probes_during 3)
wait "$PA"
echo "# patches: $(cut -c1-400 "$T_TMP/patches.json")"
t_eq "6k PATCHes: all 6,000 Content-Range PATCHes answered 202 with the right Range" 6000 \
    "$(jq -r .patch_ok "$T_TMP/patches.json")"
t_eq "6k PATCHes: PUT ?digest= commits (201)" 201 "$(jq -r .put_status "$T_TMP/patches.json")"
dg=$(jq -r .digest "$T_TMP/patches.json")
t_eq "6k PATCHes: the blob reads back byte for byte" "$dg" \
    "sha256:$(curl -s "$BERTH_URL/v2/hostile/patches/blobs/$dg" | sha256sum | cut -d' ' -f1)"
t_eq "6k PATCHes: probes answered meanwhile" "3/3" "$r"
settle "6k PATCHes"

# --- uploads that never finish: each client stops mid-body (half of 1 MiB sent), holds the
# socket a while, then goes away; purging (age 3s, interval 1s) must remove every session ---
echo "# t=${SECONDS}s"
n_before=$(find "$D/data/uploads" -mindepth 1 -maxdepth 1 | wc -l)
t_eq "abandoned: no upload sessions before" 0 "$n_before"
BG=()
for m in patch patch-chunked put post; do
    $HOSTILE abort "$BERTH_URL/" hostile/abandoned --mode "$m" --declared 1048576 --send 524288 --hold 2 \
        >"$T_TMP/abort.$m.json" 2>&1 &
    BG+=($!)
done
# each client starts python, makes its 1 MiB and sends half: under load that can take a second
for _ in $(seq 1 15); do
    [ "$(find "$D/data/uploads" -mindepth 1 -maxdepth 1 | wc -l)" = 4 ] && break
    sleep 0.1
done
t_eq "abandoned: 4 sessions in uploads/ while the clients stall mid-body" 4 \
    "$(find "$D/data/uploads" -mindepth 1 -maxdepth 1 | wc -l)"
r=$(probes_during 2)
wait "${BG[@]}"
t_eq "abandoned: probes answered while four uploads stall mid-body" "2/2" "$r"
for m in patch patch-chunked put post; do
    echo "# abort $m: $(cat "$T_TMP/abort.$m.json")"
done
# right after the clients went away: resumable sessions are still there (not yet purged, or purged already)
loc=$(jq -r .location "$T_TMP/abort.patch.json")
st=$(curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL$loc")
echo "# status of the abandoned PATCH session right after the abort: $st"
for _ in $(seq 1 60); do
    [ "$(find "$D/data/uploads" -mindepth 1 -maxdepth 1 | wc -l)" = 0 ] && break
    sleep 0.25
done
left=$(find "$D/data/uploads" -mindepth 1 -maxdepth 1 | wc -l)
t_eq "abandoned: all 4 abandoned sessions purged from uploads/" 0 "$left"
t_check "abandoned: berth logged the purge" grep -q 'msg="purged stale uploads"' "$D/berth.log"
for m in patch patch-chunked put; do
    loc=$(jq -r .location "$T_TMP/abort.$m.json")
    b=$(curl -s "$BERTH_URL$loc")
    t_eq "abandoned ($m): the purged session answers 404 BLOB_UPLOAD_UNKNOWN" \
        "404 BLOB_UPLOAD_UNKNOWN" "$(curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL$loc") $(jq -r '.errors[0].code' <<<"$b" 2>/dev/null)"
done
dg=$(jq -r .digest "$T_TMP/abort.put.json")
t_eq "abandoned: the half-sent blob does not exist" 404 \
    "$(curl -s -o /dev/null -w '%{http_code}' -I "$BERTH_URL/v2/hostile/abandoned/blobs/$dg")"
settle "abandoned uploads"

# --- 1,000 concurrent connections (wrk) on the manifest GET ---
echo "# t=${SECONDS}s"
wrk -c 1000 -t 2 -d 5s --timeout 10s -H "$ACCEPT" "$BERTH_URL/v2/hostile/img/manifests/v1" >"$T_TMP/wrk.out" 2>&1 &
WK=$!
T_PIDS+=("$WK")
peak=0
for _ in $(seq 1 15); do # the highest fd count over 1.5 s
    f=$(fds)
    [ "$f" -gt "$peak" ] && peak=$f
    sleep 0.1
done
r=$(probes_during 3)
wait "$WK"
sed 's/^/# wrk: /' "$T_TMP/wrk.out"
echo "# wrk: berth held $peak fds during the run"
t_check "wrk 1000: the 1,000 connections reached berth (fds >= baseline + 900)" test "$peak" -ge $((BASE_FD + 900))
reqs=$(awk '/requests in/ {print $1}' "$T_TMP/wrk.out")
t_check "wrk 1000: requests completed (${reqs:-none})" test "${reqs:-0}" -gt 1000
t_check "wrk 1000: no non-2xx answers" bash -c "! grep -q 'Non-2xx' '$T_TMP/wrk.out'"
t_check "wrk 1000: no connect/read/write errors" bash -c "! grep -qE 'Socket errors: connect [1-9]|read [1-9]|write [1-9]' '$T_TMP/wrk.out'"
t_eq "wrk 1000: probes answered during the run" "3/3" "$r"
settle "wrk 1000"

# --- after everything ---
echo "# t=${SECONDS}s"
t_eq "after all attacks: probe answers" ok "$(probe)"
t_check "berth exits 0 on SIGTERM after the attacks" berth_stop
t_check "berth fsck is clean after the attacks" "$BERTH" fsck -c "$D/config.yml"
t_finish
