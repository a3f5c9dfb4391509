#!/usr/bin/env bash
# Crash safety: four curl-based pushers upload blobs and manifests (and now and then an index)
# while berth is SIGKILLed at random moments and restarted on the same data dir and port. Every
# blob upload and manifest push acknowledged with 201 is recorded; at the end every acknowledged
# tag resolves to its acknowledged digest, every acknowledged blob is served intact, `berth fsck`
# is clean both right after a SIGKILL and after a clean stop.
. "$(dirname "$0")/../lib.sh"

# vres FILE: "N failures" from an ocipush.py verify output, plus its first failure.
vres() {
    local r f
    r=$(tail -1 "$1" | grep -o '[0-9]* failures')
    f=$(grep -m1 FAILED "$1")
    echo "${r:-no result: $(tail -c 200 "$1")}${f:+ first: $f}"
}

SEED=${CRASH_SEED:-$$}
RANDOM=$SEED
echo "# crash.sh seed $SEED (rerun with CRASH_SEED=$SEED)"
PUSHERS=4
KILLS=$((6 + RANDOM % 3))
D=$T_TMP/berth
mkdir -p "$D/data"
cat >"$D/config.yml" <<YML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $D/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YML
PORT=$(t_port)
URL=http://127.0.0.1:$PORT

# crash_start: starts berth on the fixed PORT and waits until it answers; 1 when it does not.
crash_start() {
    REGISTRY_HTTP_ADDR=127.0.0.1:$PORT REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$D/data \
        "$BERTH" serve -c "$D/config.yml" >>"$D/berth.log" 2>&1 &
    BERTH_PID=$!
    T_PIDS+=("$BERTH_PID")
    t_wait_http "$URL/v2/" 150 && curl -sf -o /dev/null "$URL/v2/"
}

# rand_sleep MIN_CS MAX_CS: sleeps a random time between MIN and MAX centiseconds.
rand_sleep() {
    local cs=$(($1 + RANDOM % ($2 - $1 + 1)))
    sleep "$((cs / 100)).$(printf %02d $((cs % 100)))"
}

if ! crash_start; then
    t_fail "berth starts" "$(tail -5 "$D/berth.log")"
    t_finish
fi

# A blob every manifest of every pusher references: concurrent uploads of the same digest.
head -c 150000 /dev/urandom >"$T_TMP/shared.bin"

# pusher ID: pushes images to crash/pID until $T_TMP/stop exists (tests/fixtures/ocipush.py).
# Appends "repo digest" to blobs.ID for each blob acknowledged with 201, "repo tag digest" to
# acked.ID for each acknowledged manifest or index.
OCIPUSH="python3 $T_ROOT/tests/fixtures/ocipush.py"
PP=()
for i in $(seq 1 $PUSHERS); do
    $OCIPUSH push-loop "$URL" "crash/p$i" --seed $((SEED + i)) --shared "$T_TMP/shared.bin" \
        --acked "$T_TMP/acked.$i" --blobs "$T_TMP/blobs.$i" --stop "$T_TMP/stop" >"$T_TMP/pusher.$i.out" 2>&1 &
    PP+=($!)
    T_PIDS+=($!)
done

acked_count() { cat "$T_TMP"/acked.* 2>/dev/null | wc -l; }
# start killing once the pushers are under way
for _ in $(seq 1 100); do
    [ "$(acked_count)" -ge 1 ] && break
    sleep 0.1
done

restart_fail=0
fsck_crash_rc=none
for k in $(seq 1 $KILLS); do
    rand_sleep 20 150
    kill -KILL "$BERTH_PID" 2>/dev/null
    wait "$BERTH_PID" 2>/dev/null
    echo "# kill $k/$KILLS: $(acked_count) manifests acknowledged so far"
    if [ "$k" = "$KILLS" ]; then
        # fsck straight after a crash (server down, uploads were in flight)
        "$BERTH" fsck -c "$D/config.yml" >"$T_TMP/fsck-crash.out" 2>&1
        fsck_crash_rc=$?
    fi
    if ! crash_start; then
        restart_fail=$((restart_fail + 1))
        echo "# restart after kill $k failed; log tail:" && tail -5 "$D/berth.log"
        kill -KILL "$BERTH_PID" 2>/dev/null
        wait "$BERTH_PID" 2>/dev/null
        sleep 1
        crash_start || { t_fail "berth restarts on the same port after SIGKILL" "gave up after kill $k"; break; }
    fi
done
t_eq "berth restarted on the same data dir and port after each of $KILLS SIGKILLs" 0 "$restart_fail"
t_eq "fsck right after a SIGKILL exits 0" 0 "$fsck_crash_rc"
[ "$fsck_crash_rc" = 0 ] || sed 's/^/#   /' "$T_TMP/fsck-crash.out" | head -20

# a quiet stretch after the last restart: pushes must succeed again
before=$(acked_count)
for _ in $(seq 1 40); do
    [ "$(acked_count)" -ge $((before + PUSHERS)) ] && break
    sleep 0.25
done
after=$(acked_count)
touch "$T_TMP/stop"
for p in "${PP[@]}"; do wait "$p"; done
attempts=$(cat "$T_TMP"/pusher.*.out | awk '$1=="attempts" {s+=$2} END {print s+0}')
total=$(acked_count)
echo "# $total manifests acknowledged over $attempts attempts, $(cat "$T_TMP"/blobs.* | sort -u | wc -l) distinct blobs acknowledged"
t_check "pushers got manifests acknowledged (>= 10)" test "$total" -ge 10
t_check "pushes succeed after the last crash recovery" test "$after" -gt "$before"

# every acknowledged manifest/index: tag -> acknowledged digest, content and blobs intact
for i in $(seq 1 $PUSHERS); do
    $OCIPUSH verify "$URL" "$T_TMP/acked.$i" >"$T_TMP/verify.$i" 2>&1
    t_eq "pusher $i: all $(wc -l <"$T_TMP/acked.$i") acknowledged tags resolve to their digests, blobs intact" \
        "0 failures" "$(vres "$T_TMP/verify.$i")"
done
# every acknowledged blob (also those whose manifest never made it) is served intact
sort -u "$T_TMP"/blobs.* | sed 's/^/blob /' >"$T_TMP/allblobs"
$OCIPUSH verify "$URL" "$T_TMP/allblobs" >"$T_TMP/verify.blobs" 2>&1
t_eq "all $(wc -l <"$T_TMP/allblobs") acknowledged blob uploads are served intact" \
    "0 failures" "$(vres "$T_TMP/verify.blobs")"
# the tag lists hold every acknowledged tag
missing=0
for i in $(seq 1 $PUSHERS); do
    curl -s "$URL/v2/crash/p$i/tags/list?n=100000" | jq -r '.tags[]?' | sort >"$T_TMP/tags.$i"
    missing=$((missing + $(cut -d' ' -f2 "$T_TMP/acked.$i" | sort | comm -23 - "$T_TMP/tags.$i" | wc -l)))
done
t_eq "tags/list of every repository holds all acknowledged tags" 0 "$missing"

t_check "berth exits 0 on SIGTERM" berth_stop
t_check "berth fsck exits 0 after the crashes" "$BERTH" fsck -c "$D/config.yml"
# and the data dir still serves after a final clean restart
if crash_start; then
    read -r repo tag d <"$T_TMP/acked.1"
    t_check "after a clean restart the first acknowledged image is intact" $OCIPUSH verify "$URL" <(echo "$repo $tag $d")
    berth_stop
else
    t_fail "berth restarts after the clean stop" "$(tail -5 "$D/berth.log")"
fi
t_finish
