#!/usr/bin/env bash
# berth with its metadata in PostgreSQL (database:, src/store/meta_pg.c), against a throwaway
# cluster (tests/pg.sh):
#   - the existing API, gc and crash suites, unchanged, with BERTH pointing at a wrapper that adds
#     a database: section (REGISTRY_DATABASE_*) with one database per storage directory; their
#     tallies count here, and the databases are checked to hold what they pushed;
#   - `berth migrate`: creates the schema, is idempotent, and four at once on a fresh database
#     migrate it once;
#   - two berth processes on one database and one storage directory: a push to one is pulled
#     from the other, a tag deleted on one is gone on the other, `berth gc` and `berth fsck`
#     run beside both;
#   - PostgreSQL stopped: /health answers 503 naming the metadata engine; started again: 200,
#     and berth reconnects;
#   - errors: a wrong password and a missing libpq fail at start with a clear message; the
#     embedded (SQLite) mode does not map libpq.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/pg.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"

MK="python3 $T_ROOT/tests/fixtures/mkimage.py"
SK=(skopeo --insecure-policy)
W=$T_TMP/work
mkdir -p "$W"

if ! pg_start; then
    t_fail "PostgreSQL starts (initdb + pg_ctl as postgres)"
    t_finish
fi
trap 'pg_stop; t_cleanup' EXIT
t_ok "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') started on $PG_HOST:$PG_PORT"

# ---- the existing suites, unchanged, against PostgreSQL ----
WRAP=$T_TMP/berth-pg
pg_berth_wrapper "$WRAP"
dbs_before=$(pg_psql postgres "SELECT count(*) FROM pg_database WHERE datname LIKE 'berth\_%'")
for s in ${PG_API_SUITES-api gc crash}; do # PG_API_SUITES="" skips them
    BERTH=$WRAP t_suite "$s" "against postgres"
done
# the suites' servers really kept their metadata in postgres
new_dbs=$(pg_psql postgres "SELECT datname FROM pg_database WHERE datname LIKE 'berth\_%'")
dbs_after=$(echo "$new_dbs" | grep -c .)
if [ -n "${PG_API_SUITES-api gc crash}" ]; then
    t_check "the suites created their own databases ($dbs_before -> $dbs_after)" [ "$dbs_after" -gt "$dbs_before" ]
    manifests=0
    for db in $new_dbs; do
        n=$(pg_psql "$db" "SELECT count(*) FROM manifests" 2>/dev/null || echo 0)
        manifests=$((manifests + n))
    done
    t_check "their manifests are rows in postgres ($manifests)" [ "$manifests" -gt 100 ]
fi

# ---- berth migrate ----
cfg_for() { # cfg_for FILE ROOT DBNAME [PASSWORD]: a config with a database: section
    cat >"$1" <<YML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $2
  delete:
    enabled: true
$(pg_database_yaml "$3" "${4:-}")
YML
}
pg_createdb mig1
cfg_for "$W/mig.yml" "$W/migdata" mig1
t_check "berth migrate creates the schema" "$BERTH" migrate -c "$W/mig.yml"
t_eq "schema_version: migrations 1 to 3" "1,2,3" "$(pg_psql mig1 "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version")"
t_check "berth migrate again is a no-op" "$BERTH" migrate -c "$W/mig.yml"
t_eq "schema_version still one row per migration" "3" "$(pg_psql mig1 "SELECT count(*) FROM schema_version")"
pg_createdb mig2
cfg_for "$W/mig2.yml" "$W/migdata2" mig2
pids=()
for i in 1 2 3 4; do
    "$BERTH" migrate -c "$W/mig2.yml" >"$W/mig2.$i.out" 2>&1 &
    pids+=($!)
done
mig_ok=0
for p in "${pids[@]}"; do wait "$p" && mig_ok=$((mig_ok + 1)); done
t_eq "four concurrent migrates all succeed" 4 "$mig_ok"
t_eq "... and migrate once (one row per migration)" "3" "$(pg_psql mig2 "SELECT count(*) FROM schema_version")"
t_eq "... one process did the migrating" 1 "$(grep -l 'schema migrated' "$W"/mig2.*.out | wc -l)"
t_eq "chart-log triggers installed" 3 "$(pg_psql mig2 "SELECT count(*) FROM pg_trigger WHERE tgname IN ('charts_changed', 'charts_tag_changed', 'charts_manifest_del')")"

# ---- errors at start ----
cfg_for "$W/badpw.yml" "$W/badpw" mig1 wrong-password
out=$("$BERTH" migrate -c "$W/badpw.yml" 2>&1)
rc=$?
t_check "a wrong password fails at start" [ "$rc" -ne 0 ]
t_check "... saying why ($(echo "$out" | tail -1 | cut -c1-90))" grep -q "password authentication failed" <<<"$out"
if unshare -m true 2>/dev/null; then
    # every architecture's libpq (a foreign one may be installed beside the binary's own)
    binds=$(for l in $(realpath /usr/lib/*/libpq.so.5 2>/dev/null | sort -u); do printf "mount --bind /dev/null '%s' && " "$l"; done)
    out=$(unshare -m sh -c "$binds exec '$BERTH' migrate -c '$W/mig.yml'" 2>&1)
    rc=$?
    t_check "without libpq, store_open fails" [ "$rc" -ne 0 ]
    t_check "... with a clear message ($(echo "$out" | tail -1 | cut -c1-80))" grep -q "database.enabled: the PostgreSQL client library" <<<"$out"
else
    t_skip "without libpq, store_open fails" "unshare -m is not available here"
fi

# ---- two berth processes, one database, one storage directory ----
pg_createdb shared
SH=$T_TMP/shared
mkdir -p "$SH/a/data" "$SH/b"
ln -s "$SH/a/data" "$SH/b/data" # berth_start serves DIR/data: both serve A's directory
cfg_for "$SH/a/config.yml" "$SH/a/data" shared
cp "$SH/a/config.yml" "$SH/b/config.yml"
# A checks its engines every second (health.storagedriver.interval), for the /health checks below
REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL=1s berth_start "$SH/a" || {
    t_fail "berth A starts on postgres"
    t_finish
}
A_URL=$BERTH_URL A_HP=127.0.0.1:$BERTH_PORT A_PID=$BERTH_PID
berth_start "$SH/b" || {
    t_fail "berth B starts on postgres"
    t_finish
}
B_URL=$BERTH_URL B_HP=127.0.0.1:$BERTH_PORT B_PID=$BERTH_PID
t_ok "two berth processes serve one database and one storage directory"
t_check "embedded mode is not what runs: no metadata.db" [ ! -e "$SH/a/data/metadata.db" ]
t_check "berth A maps libpq (loaded on use)" grep -q libpq "/proc/$A_PID/maps"

D1=$($MK image "$W/img1" --layers 3 --seed 71 --tag v1)
D2=$($MK index "$W/img2" --arches amd64,arm64 --seed 72 --tag v1)
t_check "push an image to A" "${SK[@]}" copy -q --dest-tls-verify=false "oci:$W/img1:v1" "docker://$A_HP/team/app:v1"
t_check "push an index to B" "${SK[@]}" copy -q --all --dest-tls-verify=false "oci:$W/img2:v1" "docker://$B_HP/team/multi:v1"
t_check "pull A's image from B" "${SK[@]}" copy -q --src-tls-verify=false "docker://$B_HP/team/app:v1" "oci:$W/pulled1:v1"
t_eq "... the same manifest digest" "$D1" "$($MK digest "$W/pulled1" --tag v1)"
t_check "pull B's index from A (all platforms)" "${SK[@]}" copy -q --all --src-tls-verify=false "docker://$A_HP/team/multi:v1" "oci:$W/pulled2:v1"
t_eq "... the same index digest" "$D2" "$($MK digest "$W/pulled2" --tag v1)"
t_eq "B's catalog lists both" '["team/app","team/multi"]' "$(curl -s "$B_URL/v2/_catalog" | jq -c .repositories)"
curl -s -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$W/img1/blobs/sha256/${D1#sha256:}" "$A_URL/v2/team/app/manifests/v2"
t_eq "a tag added on A is listed by B" '["v1","v2"]' "$(curl -s "$B_URL/v2/team/app/tags/list" | jq -c .tags)"
t_eq "delete the tag on B" 202 "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$B_URL/v2/team/app/manifests/v2")"
t_eq "... A answers 404 for it" 404 "$(curl -s -o /dev/null -w '%{http_code}' "$A_URL/v2/team/app/manifests/v2")"
# unreferenced content for gc: a manifest deleted by digest on A
D3=$($MK image "$W/img3" --layers 2 --seed 73 --tag v1)
"${SK[@]}" copy -q --dest-tls-verify=false "oci:$W/img3:v1" "docker://$A_HP/team/gone:v1" >/dev/null 2>&1
t_eq "delete a manifest by digest on A" 202 "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$A_URL/v2/team/gone/manifests/$D3")"
gcout=$("$BERTH" gc -c "$SH/a/config.yml" --grace 0s 2>/dev/null | tail -1)
t_check "berth gc beside both servers removes the deleted image's blobs ($gcout)" grep -qE 'removed 0 manifests, [1-9][0-9]* blobs' <<<"$gcout"
t_eq "... its layers are gone on B" 404 "$(curl -s -o /dev/null -w '%{http_code}' "$B_URL/v2/team/gone/blobs/$(jq -r '.layers[0].digest' "$W/img3/blobs/sha256/${D3#sha256:}")")"
t_check "... what is tagged survives (pull from B)" "${SK[@]}" copy -q --src-tls-verify=false "docker://$B_HP/team/app:v1" "oci:$W/pulled1b:v1"
# an orphan file (in blobs/, no row, older than the grace period): removed under the write lock;
# its re-check reads on the locking connection, so even a pool of one connection cannot deadlock
head -c 1000 /dev/urandom >"$W/orphan"
oh=$(t_sha256 "$W/orphan")
opath=$SH/a/data/blobs/sha256/${oh:0:2}/$oh
mkdir -p "$(dirname "$opath")" && cp "$W/orphan" "$opath" && touch -d '3 hours ago' "$opath"
gcout=$(REGISTRY_DATABASE_POOL_MAXOPEN=1 timeout 60 "$BERTH" gc -c "$SH/a/config.yml" 2>/dev/null | tail -1)
t_check "berth gc with a pool of one connection removes an orphan file ($gcout)" grep -q ', 1 orphan files' <<<"$gcout"
t_check "... gone from disk" [ ! -e "$opath" ]
# online gc from a third process while both servers take pushes (one blob shared by all of
# them): every acknowledged push stays intact, read through the other server
OCIPUSH="python3 $T_ROOT/tests/fixtures/ocipush.py"
head -c 40000 /dev/urandom >"$W/shared.bin"
# push_loops NAME SEED: two pushers into A and two into B (repositories NAME/a1.. NAME/b2) until
# $W/NAME.stop exists; acknowledged pushes in $W/NAME.acked.{a,b}N; their PIDs in LP
push_loops() {
    local i s
    LP=()
    for i in 1 2; do
        for s in a b; do
            local u=$A_URL seed=$(($2 + i))
            [ $s = b ] && u=$B_URL seed=$(($2 + 100 + i))
            $OCIPUSH push-loop "$u" "$1/$s$i" --seed $seed --max-size 40000 --shared "$W/shared.bin" \
                --acked "$W/$1.acked.$s$i" --blobs "$W/$1.blobs.$s$i" --stop "$W/$1.stop" >"$W/$1.push.$s$i" 2>&1 &
            LP+=($!)
        done
    done
    T_PIDS+=("${LP[@]}")
}
push_loops load 300
gcrc=""
for run in 1 2 3 4 5 6; do
    sleep 0.5
    "$BERTH" gc -c "$SH/a/config.yml" --grace 0s >"$W/gcload.$run" 2>&1
    gcrc+=$?
done
touch "$W/load.stop"
for p in "${LP[@]}"; do wait "$p"; done
t_eq "6 gc --grace 0s runs beside two loaded servers exit 0" 000000 "$gcrc"
cat "$W"/load.acked.a* >"$W/acked.a" 2>/dev/null
cat "$W"/load.acked.b* >"$W/acked.b" 2>/dev/null
t_check "both servers acknowledged pushes meanwhile ($(wc -l <"$W/acked.a") + $(wc -l <"$W/acked.b"))" \
    test "$(wc -l <"$W/acked.a")" -gt 0 -a "$(wc -l <"$W/acked.b")" -gt 0
$OCIPUSH verify "$B_URL" "$W/acked.a" >"$W/verify.a" 2>&1
t_eq "every push acknowledged by A is intact, read from B" "0 failures" "$(tail -1 "$W/verify.a" | grep -o '[0-9]* failures')"
$OCIPUSH verify "$A_URL" "$W/acked.b" >"$W/verify.b" 2>&1
t_eq "every push acknowledged by B is intact, read from A" "0 failures" "$(tail -1 "$W/verify.b" | grep -o '[0-9]* failures')"
t_check "gc --grace 0s after the load exits 0 (blobs of pushes cut short go)" "$BERTH" gc -c "$SH/a/config.yml" --grace 0s
t_check "berth fsck against postgres exits 0" "$BERTH" fsck -c "$SH/a/config.yml"
t_eq "berth gc --dry-run finds nothing more" "would remove 0 manifests, 0 blobs (0 bytes), 0 orphan files" \
    "$("$BERTH" gc -c "$SH/a/config.yml" --grace 0s --dry-run 2>/dev/null | tail -1)"

# a replica killed with SIGKILL in the middle of pushes to both: every acknowledged push is
# intact (read through the other one and through the restarted one), fsck is clean
push_loops kill 500
# killed once both have acknowledged pushes (on a loaded machine that can take more than a second)
for _ in $(seq 1 300); do
    [ "$(cat "$W"/kill.acked.a* 2>/dev/null | wc -l)" -gt 0 ] &&
        [ "$(cat "$W"/kill.acked.b* 2>/dev/null | wc -l)" -gt 0 ] && break
    sleep 0.1
done
sleep 0.5
kill -9 "$B_PID"
wait "$B_PID" 2>/dev/null
sleep 1
touch "$W/kill.stop"
for p in "${LP[@]}"; do wait "$p"; done
berth_start "$SH/b" || t_fail "B restarts after SIGKILL"
B_URL=$BERTH_URL B_HP=127.0.0.1:$BERTH_PORT B_PID=$BERTH_PID
cat "$W"/kill.acked.* >"$W/kacked" 2>/dev/null
t_check "pushes were acknowledged by both before the kill ($(cat "$W"/kill.acked.a* | wc -l) + $(cat "$W"/kill.acked.b* | wc -l))" \
    test "$(cat "$W"/kill.acked.a* | wc -l)" -gt 0 -a "$(cat "$W"/kill.acked.b* | wc -l)" -gt 0
$OCIPUSH verify "$A_URL" "$W/kacked" >"$W/kverify.a" 2>&1
t_eq "B killed -9 mid-push: every acknowledged push intact, read from A" "0 failures" "$(tail -1 "$W/kverify.a" | grep -o '[0-9]* failures')"
$OCIPUSH verify "$B_URL" "$W/kacked" >"$W/kverify.b" 2>&1
t_eq "... and from the restarted B" "0 failures" "$(tail -1 "$W/kverify.b" | grep -o '[0-9]* failures')"
t_check "... berth fsck exits 0" "$BERTH" fsck -c "$SH/a/config.yml"

# Helm: a chart uploaded to A is in B's index.yaml (B's index cache follows the change log that
# PostgreSQL triggers write)
t_eq "B's index.yaml before: no entries" "0" "$(curl -s "$B_URL/index.yaml" | grep -c 'name: hello')"
python3 "$T_ROOT/tests/fixtures/mkchart.py" good "$W/hello-1.0.0.tgz" hello 1.0.0 >/dev/null
t_eq "upload a chart to A" 201 "$(curl -s -o /dev/null -w '%{http_code}' --data-binary "@$W/hello-1.0.0.tgz" "$A_URL/api/charts")"
t_check "... B's index.yaml lists it" bash -c "curl -s '$B_URL/index.yaml' | grep -q 'version: \"1.0.0\"'"
t_check "... a change-log row names it" [ "$(pg_psql shared "SELECT count(*) FROM charts_changes WHERE repo LIKE '%hello'")" -ge 1 ]
t_eq "delete it on B" 200 "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$B_URL/api/charts/hello/1.0.0")"
t_check "... A's index.yaml no longer lists it" bash -c "! curl -s '$A_URL/index.yaml' | grep -q 'version: \"1.0.0\"'"

# ---- one upstream fetch per blob across berths on one database (the fill lease) ----
# two mirroring berths F1, F2 on one database and one storage directory; 20 concurrent cold pulls
# of a 32 MiB blob spread over both: the upstream (a docker-registry, access log on) sees one GET
UPD=$T_TMP/up
registry_start "$UPD" info || t_fail "upstream docker-registry starts" "$(tail -3 "$UPD/registry.log")"
UPP=$REG_PORT
head -c $((32 * 1024 * 1024)) /dev/urandom >"$W/big"
DBIG=sha256:$(t_sha256 "$W/big")
t_check "fixture: a 32 MiB blob in the upstream" pl_push_blob "http://127.0.0.1:$UPP" org/big "$W/big"
pg_createdb fill
FS=$T_TMP/fill
mkdir -p "$FS/f1/data" "$FS/f2"
ln -s "$FS/f1/data" "$FS/f2/data"
cfg_for "$FS/f1/config.yml" "$FS/f1/data" fill
printf 'mirrors:\n  up.example:\n    urls: [http://127.0.0.1:%s]\n' "$UPP" >>"$FS/f1/config.yml"
cp "$FS/f1/config.yml" "$FS/f2/config.yml"
berth_start "$FS/f1" || t_fail "berth F1 starts"
F1=$BERTH_URL F1_PID=$BERTH_PID
berth_start "$FS/f2" || t_fail "berth F2 starts"
F2=$BERTH_URL
mkdir -p "$W/fill"
fpids=()
for i in $(seq 1 20); do
    if [ $((i % 2)) = 0 ]; then u=$F1; else u=$F2; fi
    t_fetch "$W/fill" "$i" "$u/v2/org/big/blobs/$DBIG?ns=up.example" &
    fpids+=("$!")
done
wait "${fpids[@]}"
t_check "20 concurrent cold pulls over F1 and F2 all got 200 and the exact 32 MiB" \
    t_fetched_all "$W/fill" 20 "${DBIG#sha256:}"
t_eq "... and the upstream saw exactly one GET of it" 1 \
    "$(grep -c "\"GET /v2/org/big/blobs/$DBIG " "$UPD/registry.log")"
t_check "... the lease is gone once the fill committed" [ "$(pg_psql fill "SELECT count(*) FROM leases")" = 0 ]
berth_stop
kill -TERM "$F1_PID" && wait "$F1_PID"

# ---- PostgreSQL down under a running berth: /health says so, and all recovers ----
health_is() { # health_is URL CODE: waits up to 6 s for /health to answer CODE
    for _ in $(seq 1 60); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/health")" = "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
t_check "A's /health answers 200 while PostgreSQL is up" health_is "$A_URL" 200
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1
t_check "PostgreSQL stopped: A's /health answers 503 (a load balancer takes it out)" health_is "$A_URL" 503
t_check "... naming the metadata engine ($(curl -s "$A_URL/health"))" bash -c \
    "curl -s '$A_URL/health' | jq -r .reason | grep -q 'metadata unreachable'"
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -w start \
    -o "-p $PG_PORT -c listen_addresses=$PG_HOST -k $PG_DIR -c fsync=off -c max_connections=300" >/dev/null 2>&1
t_check "PostgreSQL back: A's /health answers 200 again" health_is "$A_URL" 200
t_eq "after a PostgreSQL restart, A serves the manifest again (reconnected)" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' -H "$(printf 'Accept: application/vnd.oci.image.manifest.v1+json')" "$A_URL/v2/team/app/manifests/v1")"
t_check "... and B takes a push" "${SK[@]}" copy -q --dest-tls-verify=false "oci:$W/img3:v1" "docker://$B_HP/team/again:v1"
t_check "... A logged the reconnection" grep -q 'postgres: reconnected' "$SH/a/berth.log"

kill -TERM "$A_PID" "$B_PID"
wait "$A_PID"
a_rc=$?
wait "$B_PID"
t_eq "both exit 0 on SIGTERM" "0 $?" "$a_rc 0"

# ---- the embedded mode does not load libpq ----
mkdir -p "$T_TMP/lite"
berth_start "$T_TMP/lite" && {
    t_check "the SQLite berth does not map libpq" bash -c "! grep -q libpq /proc/$BERTH_PID/maps"
    berth_stop
}

t_finish
