#!/usr/bin/env bash
# Event notifications (docs/notifications.md): registry:2's `notifications:` endpoints fed from
# berth's events table. A real HTTP receiver (tests/fixtures/receiver.py) records what it
# acknowledges; it is made to fail, hang, go away and die mid-delivery, and berth is SIGKILLed
# with events pending. Checked: registry:2's envelope and fields for push, pull, mount and delete;
# every event arrives, in order per repository, none is invented, and a duplicate always has its
# original's id; a hung endpoint does not hold pushes; the queue bound drops the oldest and says so.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"
t_need_tools jq python3 curl docker-registry

PY=$(python3 -c 'import sys; print(sys.executable)')
RX=$T_TMP/rx
mkdir -p "$RX"
RX_PORT=$(t_port)
RX_PID=

# rx_start MODE / rx_kill: the receiver on its fixed port (events in $RX/events)
rx_start() {
    echo "$1" >"$RX/mode"
    "$PY" "$T_ROOT/tests/fixtures/receiver.py" "$RX_PORT" "$RX/events" "$RX/mode" 2>>"$RX/log" &
    RX_PID=$!
    T_PIDS+=("$RX_PID")
    local i
    for i in $(seq 1 50); do
        curl -s -m 2 -o /dev/null "http://127.0.0.1:$RX_PORT/probe" && break
        sleep 0.1
    done
    : >"$RX/events.hits"
}
rx_kill() { kill -KILL "$RX_PID" 2>/dev/null; wait "$RX_PID" 2>/dev/null; }

# rx_count: events recorded (with duplicates); rx_wait N: until at least N unique ids arrived
rx_count() { [ -f "$RX/events" ] && wc -l <"$RX/events" || echo 0; }
rx_unique() { [ -f "$RX/events" ] && jq -r .event.id "$RX/events" | sort -u | wc -l || echo 0; }
rx_wait() {
    local i
    for i in $(seq 1 "${2:-150}"); do
        [ "$(rx_unique)" -ge "$1" ] && return 0
        sleep 0.1
    done
    return 1
}

# bstart DIR PORT: berth on a fixed port (a restart keeps its address, hence its endpoint leases)
bstart() {
    REGISTRY_HTTP_ADDR=127.0.0.1:$2 REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$1/data \
        "$BERTH" serve -c "$1/config.yml" >>"$1/berth.log" 2>&1 &
    BERTH_PID=$!
    T_PIDS+=("$BERTH_PID")
    BERTH_URL=http://127.0.0.1:$2
    t_wait_http "$BERTH_URL/v2/"
}

# push_img REPO TAG: a fresh image (config + one layer); appends its expected events to
# $T_TMP/expected as "repo action digest" lines in push order
push_img() {
    local d=$T_TMP/img.$1.$2
    mkdir -p "$d"
    pl_make_config "$d/cfg" "$1:$2"
    pl_rand_blob "$d/layer" 100 2000
    pl_push_image "$BERTH_URL" "$1" "$2" "$d" "$d/cfg" "$d/layer" >"$d/digest" || return 1
    {
        echo "$1 push sha256:$(t_sha256 "$d/cfg")"
        echo "$1 push sha256:$(t_sha256 "$d/layer")"
        echo "$1 push $(cat "$d/digest")"
    } >>"$T_TMP/expected"
}

# check_delivery WHAT: the unique events received equal $T_TMP/expected, in order per repository,
# and every duplicate is identical to its first copy
check_delivery() {
    local out
    out=$("$PY" - "$RX/events" "$T_TMP/expected" <<'PYEOF'
import json, sys
seen, order = {}, []
for line in open(sys.argv[1]):
    ev = json.loads(line)["event"]
    key = json.dumps(ev, sort_keys=True)
    if ev["id"] in seen:
        if seen[ev["id"]] != key:
            print("duplicate id %s with different content" % ev["id"]); sys.exit(1)
        continue
    seen[ev["id"]] = key
    order.append(ev)
got = {}
for ev in order:
    # pulls, charts (part 1b) and the mirror's fill and evict (part 7) are checked on their own
    # (and part 9's margo package and bundle import)
    if ev["action"] in ("pull", "margo.push", "bundle.import") or ev["action"].startswith("chart.") or ev["target"]["repository"].startswith(("ghcr.io/", "ext/")):
        continue
    got.setdefault(ev["target"]["repository"], []).append("%s %s" % (ev["action"], ev["target"].get("digest")))
want = {}
for line in open(sys.argv[2]):
    repo, action, digest = line.split()
    want.setdefault(repo, []).append("%s %s" % (action, digest))
if got != want:
    for r in sorted(set(got) | set(want)):
        if got.get(r) != want.get(r):
            print("repo %s: got %s, want %s" % (r, got.get(r), want.get(r)))
    sys.exit(1)
PYEOF
) && t_ok "$1" || t_fail "$1: $out"
}

# ---------------------------------------------------------------------------------------------
A=$T_TMP/a
A_PORT=$(t_port)
mkdir -p "$A"
cat >"$A/config.yml" <<YML
version: 0.1
storage:
  delete:
    enabled: true
notifications:
  events:
    includereferences: true
  endpoints:
    - name: rx
      url: http://127.0.0.1:$RX_PORT/events
      headers:
        Authorization: [Bearer s3cret]
      timeout: 1s
      threshold: 2
      backoff: 100ms
YML
: >"$T_TMP/expected"
rx_start ok
bstart "$A" "$A_PORT" || { t_fail "berth did not start"; t_finish; }
for i in $(seq 1 50); do grep -q 'notifications: delivering' "$A/berth.log" && break; sleep 0.1; done
grep -q 'notifications: delivering.* endpoint=rx' "$A/berth.log" && ! grep -q 'key=notifications' "$A/berth.log" &&
    t_ok "the notifications section is read" || t_fail "the notifications section is not read: $(grep notif "$A/berth.log")"

# 1. push, pull, mount, delete: registry:2's envelope and fields
push_img app v1 || t_fail "push app:v1"
MDIG=$(cat "$T_TMP/img.app.v1/digest")
LDIG=sha256:$(t_sha256 "$T_TMP/img.app.v1/layer")
curl -s -o /dev/null -A "notify-test/1" -H "$PL_ACCEPT" "$BERTH_URL/v2/app/manifests/v1"
curl -s -o /dev/null "$BERTH_URL/v2/app/blobs/$LDIG"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$BERTH_URL/v2/other/blobs/uploads/?mount=$LDIG&from=app")
t_eq "mount answers 201" 201 "$code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$BERTH_URL/v2/app/manifests/$MDIG")
t_eq "manifest delete answers 202" 202 "$code"
echo "other mount $LDIG" >>"$T_TMP/expected"
echo "app delete $MDIG" >>"$T_TMP/expected"
rx_wait 7 && t_ok "push, pull, mount and delete events arrive" ||
    t_fail "only $(rx_unique) of 7 events arrived"
out=$("$PY" - "$RX/events" "$MDIG" "$LDIG" "$A_PORT" <<'PYEOF'
import json, re, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
mdig, ldig, port = sys.argv[2], sys.argv[3], sys.argv[4]
err = []
for r in recs:
    if r["ct"] != "application/vnd.docker.distribution.events.v1+json": err.append("content type %s" % r["ct"])
    if r["auth"] != "Bearer s3cret": err.append("configured header missing")
evs = [r["event"] for r in recs]
def one(action, **t):
    m = [e for e in evs if e["action"] == action and all(e["target"].get(k) == v for k, v in t.items())]
    if not m: err.append("no %s event with %s" % (action, t))
    return m[0] if m else {"target": {}, "request": {}, "source": {}, "actor": {}}
for e in evs:
    for k in ("id", "timestamp", "action", "target", "request", "actor", "source"):
        if k not in e: err.append("%s event without %s" % (e.get("action"), k))
    if not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", e.get("timestamp", "")): err.append("timestamp %s" % e.get("timestamp"))
    if not e["source"].get("instanceID") or not e["source"].get("addr", "").endswith(":" + port): err.append("source %s" % e["source"])
push = one("push", digest=mdig, tag="v1", repository="app", mediaType="application/vnd.oci.image.manifest.v1+json")
t = push["target"]
if t.get("size") != t.get("length") or not t.get("size"): err.append("size/length %s" % t)
if t.get("url") != "http://127.0.0.1:%s/v2/app/manifests/%s" % (port, mdig): err.append("url %s" % t.get("url"))
if len(t.get("references", [])) != 2: err.append("references %s" % t.get("references"))
if push["request"].get("method") != "PUT" or not push["request"].get("id") or not push["request"].get("addr", "").startswith("127.0.0.1:"): err.append("request %s" % push["request"])
if push["request"].get("host") != "127.0.0.1:%s" % port: err.append("host %s" % push["request"].get("host"))
blob = one("push", digest=ldig, repository="app", mediaType="application/octet-stream")
if blob["target"].get("url", "").find("/v2/app/blobs/") < 0: err.append("blob url %s" % blob["target"].get("url"))
pull = one("pull", digest=mdig, tag="v1", repository="app")
if pull["request"].get("useragent") != "notify-test/1" or pull["request"].get("method") != "GET": err.append("pull request %s" % pull["request"])
one("pull", digest=ldig, repository="app")
mount = one("mount", digest=ldig, repository="other")
if mount["target"].get("fromRepository") != "app": err.append("mount from %s" % mount["target"])
one("delete", digest=mdig, repository="app")
print("; ".join(err[:6]))
sys.exit(1 if err else 0)
PYEOF
) && t_ok "registry:2 envelope and fields (id, timestamp, target, request, actor, source)" ||
    t_fail "envelope: $out"

# 1b. berth's own actions: a Helm chart upload and delete
python3 "$T_ROOT/tests/fixtures/mkchart.py" good "$T_TMP/hc-0.1.0.tgz" hc 0.1.0
code=$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$T_TMP/hc-0.1.0.tgz" "$BERTH_URL/api/charts")
t_eq "chart upload answers 201" 201 "$code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$BERTH_URL/api/charts/hc/0.1.0")
t_eq "chart delete answers 200" 200 "$code"
rx_wait 9 && out=$(jq -r 'select(.event.action | startswith("chart.")) | "\(.event.action) \(.event.target.digest)"' "$RX/events" | sort -u) &&
    [ "$(echo "$out" | cut -d' ' -f1 | tr '\n' ' ')" = "chart.delete chart.upload " ] &&
    [ "$(echo "$out" | cut -d' ' -f2 | sort -u | wc -l)" = 1 ] &&
    t_ok "a chart upload and its delete arrive as chart.upload and chart.delete" ||
    t_fail "chart events: $(jq -c 'select(.event.action | startswith("chart")) | .event.action' "$RX/events" | tr '\n' ' ')"
CHART_EVENTS=2

# 2. the receiver is down, then back: every event arrives
rx_kill
for i in 1 2 3; do push_img down$((i % 2)) "t$i" || t_fail "push while the receiver is down"; done
sleep 0.5
rx_start ok
rx_wait $((9 + 9)) && t_ok "events made while the receiver was down arrive when it is back" ||
    t_fail "after the receiver came back: $(rx_unique) of 18"

# 3. the receiver dies mid-delivery: after it has recorded the batch but before it answers
echo die >"$RX/mode"
push_img dies t1 || t_fail "push while the receiver dies"
for i in $(seq 1 100); do kill -0 "$RX_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$RX_PID" 2>/dev/null && t_fail "the receiver did not die mid-delivery"
before=$(rx_count)
rx_start ok
rx_wait $((18 + 3)) && t_ok "a batch the receiver died on is sent again" || t_fail "after the receiver died: $(rx_unique) of 21"
for i in $(seq 1 30); do [ "$(rx_count)" -gt "$before" ] && break; sleep 0.1; done
[ "$(rx_count)" -gt "$(rx_unique)" ] && t_ok "the batch was delivered twice (at least once)" ||
    t_fail "no redelivery seen ($(rx_count) records, $(rx_unique) ids)"

# 4. a hung endpoint: pushes finish while the receiver has received nothing
rx_kill
rx_start hang
n0=$(rx_count)
ok=1
for i in 1 2 3 4 5 6; do push_img hung "t$i" || ok=0; done
[ "$ok" = 1 ] && t_ok "six pushes complete while the endpoint hangs" || t_fail "a push failed while the endpoint hangs"
t_eq "the hung receiver acknowledged nothing meanwhile" "$n0" "$(rx_count)"
[ -s "$RX/events.hits" ] && t_ok "berth was posting to the hung endpoint" || t_fail "berth never posted to the hung endpoint"

# 5. berth SIGKILLed with events pending (the endpoint still hangs), then restarted
for i in 1 2 3; do push_img crash "t$i" || t_fail "push before the kill"; done
kill -KILL "$BERTH_PID"
wait "$BERTH_PID" 2>/dev/null
rx_kill
rx_start ok
bstart "$A" "$A_PORT" || t_fail "berth did not restart"
want=$(wc -l <"$T_TMP/expected")
# the unique events: expected holds all but part 1's 2 pulls and part 1b's chart events
rx_wait $((want + 2 + CHART_EVENTS)) 200 && t_ok "every pending event arrives after berth was SIGKILLed and restarted" ||
    t_fail "after the restart: $(rx_unique) of $((want + 2 + CHART_EVENTS))"
sleep 0.5
check_delivery "every event arrived, in order per repository, none invented, duplicates identical"

# 7. berth's own actions: a mirror fill and an eviction (an upstream docker-registry)
registry_start "$T_TMP/up" || t_fail "the upstream registry did not start"
UP=$BERTH_URL
d=$T_TMP/up-img && mkdir -p "$d"
pl_make_config "$d/cfg" up
pl_rand_blob "$d/layer" 100 2000
UPDIG=$(pl_push_image "$REG_URL" org/img v1 "$d" "$d/cfg" "$d/layer") || t_fail "push to the upstream"
C=$T_TMP/c
C_PORT=$(t_port)
mkdir -p "$C"
cat >"$C/config.yml" <<YML
version: 0.1
log: {level: info}
mirrors:
  ghcr.io:
    urls: [$REG_URL]
cache:
  maxsize: 1
notifications:
  endpoints:
    - name: rx
      url: http://127.0.0.1:$RX_PORT/events
      backoff: 100ms
      ignore:
        actions: [pull]
YML
bstart "$C" "$C_PORT" || t_fail "berth C did not start"
out=$(pl_verify "$BERTH_URL" ghcr.io/org/img v1 "$UPDIG") && t_ok "pull through the mirror" || t_fail "mirror pull: $out"
want=$(printf '%s\n' "evict $UPDIG" "fill $UPDIG" "fill sha256:$(t_sha256 "$d/cfg")" \
    "fill sha256:$(t_sha256 "$d/layer")" | sort | paste -sd'|')
for i in $(seq 1 150); do
    got=$(jq -r 'select(.event.target.repository == "ghcr.io/org/img") | "\(.event.action) \(.event.target.digest)"' "$RX/events" | sort -u | paste -sd'|')
    [ "$got" = "$want" ] && break
    sleep 0.1
done
t_eq "a mirror fill and its eviction arrive as fill and evict events" "$want" "$got"
kill "$BERTH_PID" 2>/dev/null
BERTH_URL=$UP

# 9. a mirror's pulls (from the cache and after a fill), a margo package push and a bundle import
d=$T_TMP/up-img2 && mkdir -p "$d"
pl_make_config "$d/cfg" up2
pl_rand_blob "$d/layer" 100 2000
UPDIG2=$(pl_push_image "$REG_URL" org/img2 v1 "$d" "$d/cfg" "$d/layer") || t_fail "push img2 to the upstream"
D9=$T_TMP/d9
D9_PORT=$(t_port)
mkdir -p "$D9"
cat >"$D9/config.yml" <<YML
version: 0.1
mirrors:
  ghcr.io:
    urls: [$REG_URL]
notifications:
  endpoints:
    - name: rx
      url: http://127.0.0.1:$RX_PORT/events
      backoff: 100ms
YML
bstart "$D9" "$D9_PORT" || t_fail "berth D9 did not start"
for i in 1 2; do # the first fills the manifest from the upstream, the second is served from the cache
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$PL_ACCEPT" "$BERTH_URL/v2/ghcr.io/org/img2/manifests/v1")
    t_eq "mirror manifest GET $i answers 200" 200 "$code"
done
curl -s -o /dev/null -I -H "$PL_ACCEPT" "$BERTH_URL/v2/ghcr.io/org/img2/manifests/v1" # a HEAD: no pull
mirror_events() { jq -r 'select(.event.target.repository == "ghcr.io/org/img2" and .event.target.digest == "'"$UPDIG2"'") | "\(.event.id) \(.event.action) \(.event.target.tag)"' "$RX/events" | sort -u | cut -d' ' -f2- | sort | paste -sd'|'; }
for i in $(seq 1 100); do [ "$(mirror_events)" = "fill v1|pull v1|pull v1" ] && break; sleep 0.1; done
sleep 0.5 # an extra event would have arrived by now
t_eq "a mirror pull that filled and one from the cache: one pull event each, one fill" "fill v1|pull v1|pull v1" "$(mirror_events)"

# margo.push: one of margo's own example packages (tests/fixtures/margo/), pushed as margo.sh does
FX=$T_ROOT/tests/fixtures/margo
out=$(python3 "$T_ROOT/tests/fixtures/mkmargo.py" desc-files "$BERTH_URL" ext/margo "$FX/valid/spec-003-helm_only.yaml")
t_eq "the margo package push answers 201" 201 "${out%% *}"
MREPO=ext/margo/spec-003-helm-only # mkmargo names it after the file, _ as -
MTAG=$(curl -s "$BERTH_URL/v2/$MREPO/tags/list" | jq -r '.tags[0]')
MDIG9=$(curl -s -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$BERTH_URL/v2/$MREPO/manifests/$MTAG" |
    tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')
# bundle.import: a bundle of A's crash:t1, imported into D9's store beside the running server
BDIG=$(cat "$T_TMP/img.crash.t1/digest")
"$BERTH" bundle create -o "$T_TMP/b9.tar" "http://127.0.0.1:$A_PORT/crash:t1" >"$T_TMP/b9.out" 2>&1 ||
    t_fail "bundle create" "$(tail -2 "$T_TMP/b9.out")"
REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$D9/data "$BERTH" bundle import "$T_TMP/b9.tar" -c "$D9/config.yml" \
    >>"$T_TMP/b9.out" 2>&1 || t_fail "bundle import" "$(tail -2 "$T_TMP/b9.out")"
for i in $(seq 1 100); do
    [ "$(jq -r 'select(.event.action == "bundle.import" or .event.action == "margo.push") | .event.id' "$RX/events" | sort -u | wc -l)" -ge 4 ] && break
    sleep 0.1
done
sleep 0.5
out=$("$PY" - "$RX/events" "$MREPO" "$MTAG" "$MDIG9" "$BDIG" "sha256:$(t_sha256 "$T_TMP/img.crash.t1/cfg")" \
    "sha256:$(t_sha256 "$T_TMP/img.crash.t1/layer")" "$D9_PORT" <<'PYEOF'
import json, re, sys
path, mrepo, mtag, mdig, bdig, bcfg, blayer, port = sys.argv[1:]
evs = {}
for l in open(path):
    e = json.loads(l)["event"]
    evs.setdefault(e["id"], e)
evs = list(evs.values())
err = []
def envelope(e, port=port):
    for k in ("id", "timestamp", "action", "target", "request", "actor", "source"):
        if k not in e: err.append("%s event without %s" % (e.get("action"), k))
    if not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", e.get("timestamp", "")): err.append("timestamp %s" % e.get("timestamp"))
    if not e.get("source", {}).get("instanceID") or not e.get("source", {}).get("addr", "").endswith(":" + port if port else ""): err.append("source %s" % e.get("source"))
    t = e.get("target", {})
    if not t.get("size") or t.get("size") != t.get("length"): err.append("size/length %s" % t)
mp = [e for e in evs if e["action"] == "margo.push"]
if len(mp) != 1: err.append("%d margo.push events, want 1" % len(mp))
for e in mp:
    envelope(e)
    t = e["target"]
    want = {"repository": mrepo, "tag": mtag, "digest": mdig, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "url": "http://127.0.0.1:%s/v2/%s/manifests/%s" % (port, mrepo, mdig)}
    for k, v in want.items():
        if t.get(k) != v: err.append("margo.push target.%s %s, want %s" % (k, t.get(k), v))
    if e["request"].get("method") != "PUT" or not e["request"].get("addr", "").startswith("127.0.0.1:"): err.append("margo.push request %s" % e["request"])
if [e for e in evs if e["action"] == "push" and e["target"].get("digest") == mdig]: err.append("the margo manifest also reported as push")
bi = [e for e in evs if e["action"] == "bundle.import"]
got = sorted("%s %s %s" % (e["target"]["repository"], e["target"]["digest"], e["target"].get("tag")) for e in bi)
want = sorted(["crash %s t1" % bdig, "crash %s None" % bcfg, "crash %s None" % blayer])
if got != want: err.append("bundle.import events %s, want %s" % (got, want))
for e in bi:
    envelope(e, "")  # the import process has no listener: its source.addr is the host's
    if e.get("actor") != {"name": "bundle import"}: err.append("bundle.import actor %s" % e.get("actor"))
    mt = "application/octet-stream" if e["target"]["digest"] != bdig else "application/vnd.oci.image.manifest.v1+json"
    if e["target"].get("mediaType") != mt: err.append("bundle.import mediaType %s" % e["target"].get("mediaType"))
print("; ".join(err[:6]))
sys.exit(1 if err else 0)
PYEOF
) && t_ok "margo.push and bundle.import events: one each per manifest (and blob), with registry:2's envelope" ||
    t_fail "margo.push / bundle.import: $out"
kill "$BERTH_PID" 2>/dev/null
BERTH_URL=$UP

# 8. two berths on one PostgreSQL database (and one storage directory): each event is delivered
# once, by the holder of the endpoint's lease
. "$T_ROOT/tests/pg.sh"
if pg_start >"$T_TMP/pg.log" 2>&1; then
    trap 'pg_stop; t_cleanup' EXIT
    pg_createdb notify
    P1=$T_TMP/p1 P2=$T_TMP/p2
    mkdir -p "$P1" "$P2"
    for p in "$P1" "$P2"; do
        cat >"$p/config.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $T_TMP/pgdata
$(pg_database_yaml notify)
notifications:
  endpoints:
    - name: rx
      url: http://127.0.0.1:$RX_PORT/events
      backoff: 100ms
      ignore:
        actions: [pull]
YML
    done
    # bstart names the storage directory; both use the config's shared one
    REGISTRY_HTTP_ADDR=127.0.0.1:$(t_port) "$BERTH" serve -c "$P1/config.yml" >>"$P1/berth.log" 2>&1 &
    T_PIDS+=("$!")
    P2_PORT=$(t_port)
    REGISTRY_HTTP_ADDR=127.0.0.1:$P2_PORT "$BERTH" serve -c "$P2/config.yml" >>"$P2/berth.log" 2>&1 &
    T_PIDS+=("$!")
    t_wait_http "http://127.0.0.1:$P2_PORT/v2/"
    for i in $(seq 1 50); do grep -q 'berth serving' "$P1/berth.log" && break; sleep 0.1; done
    P1_URL=http://127.0.0.1:$(sed -n 's/.*berth serving.* addr=127.0.0.1:\([0-9]*\).*/\1/p' "$P1/berth.log" | head -1)
    ok=1
    for i in 1 2 3 4; do
        if [ $((i % 2)) = 0 ]; then BERTH_URL=$P1_URL; else BERTH_URL=http://127.0.0.1:$P2_PORT; fi
        push_img "pg/r$i" t || ok=0
    done
    t_eq "pushes to both berths succeed" 1 "$ok"
    pgwant=12
    for i in $(seq 1 150); do
        [ "$(jq -r 'select(.event.target.repository | startswith("pg/")) | .event.id' "$RX/events" | sort -u | wc -l)" -ge $pgwant ] && break
        sleep 0.1
    done
    sleep 1 # a second deliverer would have sent its copies by now
    t_eq "two berths on one database: every event once" "$pgwant $pgwant" \
        "$(jq -r 'select(.event.target.repository | startswith("pg/")) | .event.id' "$RX/events" | sort -u | wc -l) $(jq -r 'select(.event.target.repository | startswith("pg/")) | .event.id' "$RX/events" | wc -l)"
    check_delivery "over PostgreSQL: every event arrived, in order per repository, none invented"
else
    t_skip "PostgreSQL: $(tail -1 "$T_TMP/pg.log")"
fi

# 6. the queue bound: past queuelimit the oldest undelivered events are dropped, with a log line
B=$T_TMP/b
B_PORT=$(t_port)
DEAD_PORT=$(t_port)
mkdir -p "$B"
cat >"$B/config.yml" <<YML
version: 0.1
http:
  debug:
    addr: 127.0.0.1:$(t_port)
    prometheus:
      enabled: true
notifications:
  endpoints:
    - name: bounded
      url: http://127.0.0.1:$DEAD_PORT/events
      timeout: 200ms
      backoff: 50ms
      queuelimit: 4
      ignore:
        actions: [pull]
YML
bstart "$B" "$B_PORT" || t_fail "berth B did not start"
for i in 1 2 3; do push_img bounded "t$i" || t_fail "push to B"; done
DBG=$(sed -n 's/^    addr: //p' "$B/config.yml")
for i in $(seq 1 100); do
    m=$(curl -s "http://$DBG/metrics")
    echo "$m" | grep -q '^berth_notifications_dropped_total 5$' && break
    sleep 0.1
done
echo "$m" | grep -q '^berth_notifications_dropped_total 5$' && t_ok "the dropped-events metric counts the 5 dropped past queuelimit 4" ||
    t_fail "metric: $(echo "$m" | grep notifications)"
dropped=$(grep 'msg="notifications: endpoint queue over its limit, oldest undelivered events dropped" endpoint=bounded queuelimit=4 dropped=' "$B/berth.log" |
    sed 's/.* dropped=\([0-9]*\).*/\1/' | awk '{s += $1} END {print s + 0}')
t_eq "the log lines name the dropped events" 5 "${dropped:-0}"
echo "$m" | grep -q '^berth_notifications_pending 4$' && t_ok "the pending gauge shows the bounded queue" ||
    t_fail "pending: $(echo "$m" | grep notifications_pending)"

t_finish
