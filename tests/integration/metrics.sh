#!/usr/bin/env bash
# The debug listener (issue 19, metrics): registry:2's http.debug.addr serves /debug/health and,
# with http.debug.prometheus, the metrics in Prometheus' text format. The exposition is read with
# Prometheus' own Python client parser (Debian's python3-prometheus-client), after real traffic:
# pushes and pulls, a 404, refused sign-ins, a mirror miss then hits against a docker-registry
# upstream, gc. Without the key nothing else listens.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"
t_need_tools curl jq htpasswd docker-registry
PY=/usr/bin/python3 # Debian's, with prometheus_client
W=$T_TMP/w
mkdir -p "$W/p" "$W/u"
HT=$T_TMP/htpasswd
htpasswd -cbB "$HT" alice alice-pw 2>/dev/null
htpasswd -bB -C 12 "$HT" slow slow-pw 2>/dev/null # a costly password check: one runs on a worker
registry_start "$T_TMP/up" || { t_fail "upstream registry starts"; t_finish; }
pl_make_config "$W/ucfg.json" up
pl_rand_blob "$W/ulayer" 3000 4000
PL_CURL=(curl -s)
UDIG=$(pl_push_image "$REG_URL" library/up v1 "$W/u" "$W/ucfg.json" "$W/ulayer") || t_fail "image pushed upstream"
UL="sha256:$(t_sha256 "$W/ulayer")"

# upstreams that fail: nothing listens on DEAD; HANG accepts and never answers; E503 answers 503
DEAD=$(t_port) HANG=$(t_port) E503=$(t_port)
for spec in "$HANG hang" "$E503 503"; do
    $PY "$T_ROOT/tests/fixtures/badupstream.py" $spec &
    T_PIDS+=("$!")
done
DP=$(t_port)
cat >"$T_TMP/config.yml" <<YML
version: 0.1
storage: {delete: {enabled: true}}
auth: {htpasswd: {realm: berth, path: $HT}}
access: {anonymous: [pull]}
http:
  debug:
    addr: 127.0.0.1:$DP
    prometheus: {enabled: true, path: /metrics}
mirrors:
  docker.io: {urls: [$REG_URL]}
  dead.io: {urls: ["http://127.0.0.1:$DEAD"]}
  hang.io: {urls: ["http://127.0.0.1:$HANG"], timeout: {connect: 1s, transfer: 1s}}
  e503.io: {urls: ["http://127.0.0.1:$E503"]}
cache: {maxsize: 100MiB}
health:
  file:
    - {file: $W/out-of-rotation, interval: 1s}
YML
berth_start "$T_TMP" || { t_fail "berth starts"; t_finish; }
U=$BERTH_URL
D=http://127.0.0.1:$DP
scrape() { curl -s "$D/metrics" >"$W/m.txt"; }
# value NAME [LABELS_JSON]: the sample's value, parsed by prometheus_client ("" when absent)
value() {
    $PY - "$W/m.txt" "$1" "${2:-{\}}" <<'PY'
import json, sys
from prometheus_client.parser import text_string_to_metric_families
want = json.loads(sys.argv[3])
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        if s.name == sys.argv[2] and all(s.labels.get(k) == v for k, v in want.items()):
            print(int(s.value) if s.value == int(s.value) else s.value)
            sys.exit(0)
PY
}

t_eq "GET /debug/health on the debug listener" 200 "$(curl -s -o "$W/h" -w '%{http_code}' "$D/debug/health")"
t_eq "... says healthy" true "$(jq -r .healthy "$W/h")"
t_eq "the API is not served there" 404 "$(curl -s -o /dev/null -w '%{http_code}' "$D/v2/")"
t_eq "a write there is refused" 405 "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$D/metrics")"
scrape
t_check "the exposition parses with Prometheus' client parser" \
    $PY -c "import sys; from prometheus_client.parser import text_string_to_metric_families as p; list(p(open('$W/m.txt').read()))"
t_eq "content type is Prometheus text 0.0.4" "text/plain; version=0.0.4; charset=utf-8" \
    "$(curl -s -o /dev/null -w '%{content_type}' "$D/metrics")"

b0=$(value berth_store_blobs)
t_eq "an empty store holds no blobs" 0 "$b0"
# ---- traffic ----
PL_CURL=(curl -s -u alice:alice-pw)
pl_rand_blob "$W/player" 5000 6000
D_IMG=$(pl_push_image "$U" site/team/app v1 "$W/p" "$W/ucfg.json" "$W/player" | tail -1)
for _ in 1 2 3; do curl -s -o /dev/null -u alice:alice-pw -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$U/v2/site/team/app/manifests/v1"; done
curl -s -o /dev/null -u alice:alice-pw "$U/v2/site/team/app/manifests/nosuchtag"
for i in 1 2; do curl -s -o /dev/null -u "alice:wrong$i" "$U/v2/"; done
curl -s -o /dev/null "$U/v2/docker.io/library/up/blobs/$UL" # a miss: fetched upstream
curl -s -o /dev/null "$U/v2/docker.io/library/up/blobs/$UL" # a hit
curl -s -o /dev/null "$U/v2/docker.io/library/up/blobs/$UL" # a hit
scrape
t_eq "manifest GETs answered 200: 3" 3 \
    "$(value registry_http_requests_total '{"handler":"manifest","method":"GET","code":"200"}')"
t_eq "manifest GET 404: 1" 1 \
    "$(value registry_http_requests_total '{"handler":"manifest","method":"GET","code":"404"}')"
t_eq "manifest PUT 201: 1" 1 \
    "$(value registry_http_requests_total '{"handler":"manifest","method":"PUT","code":"201"}')"
t_eq "the duration histogram by route kind and status: manifest 200s (3)" 3 \
    "$(value registry_http_request_duration_seconds_count '{"handler":"manifest","code":"200"}')"
t_eq "... manifest 404s (1)" 1 \
    "$(value registry_http_request_duration_seconds_count '{"handler":"manifest","code":"404"}')"
t_eq "... manifest 201s (1), its +Inf bucket agreeing" "1 1" \
    "$(value registry_http_request_duration_seconds_count '{"handler":"manifest","code":"201"}') $(value registry_http_request_duration_seconds_bucket '{"handler":"manifest","code":"201","le":"+Inf"}')"
t_eq "refused sign-ins: 2" 2 "$(value berth_signin_failures_total)"
miss=$(value registry_storage_cache_requests_total '{"mirror":"docker.io","type":"Miss"}')
hit=$(value registry_storage_cache_requests_total '{"mirror":"docker.io","type":"Hit"}')
# the second GET may still join the first one's fill (then it counts as a miss too)
t_eq "mirror blob requests (docker.io): 3, counted as hits or misses" 3 "$((miss + hit))"
t_check "... the first a miss, the last a hit ($miss misses, $hit hits)" test "$miss" -ge 1 -a "$hit" -ge 1
t_eq "bytes fetched from docker.io: the layer's size" "$(stat -c %s "$W/ulayer")" \
    "$(value berth_upstream_fetched_bytes_total '{"mirror":"docker.io"}')"
t_check "request bytes counted (the push, at least the layer)" \
    test "$(value berth_http_request_bytes_total)" -ge "$(stat -c %s "$W/player")"
b1=$(value berth_store_blobs)
t_check "the blob count grew by the pushed config and layer and the fetched layer ($b1)" test "${b1:-0}" -ge 3
t_check "the store's size is reported (at least the layer)" \
    test "$(value berth_store_bytes)" -ge "$(stat -c %s "$W/ulayer")"
t_check "the mirror cache's size is reported (the fetched layer)" \
    test "$(value berth_cache_bytes)" -ge "$(stat -c %s "$W/ulayer")"
t_eq "nothing is being uploaded now" 0 "$(value berth_uploads_in_progress)"
t_eq "no upstream is down" 0 "$(value berth_upstreams_down)"
t_eq "cache.maxsize is reported" 104857600 "$(value berth_cache_max_bytes)"
# bytes out: a blob GET adds at least its size
out0=$(value berth_http_response_bytes_total)
curl -s -o /dev/null -u alice:alice-pw "$U/v2/site/team/app/blobs/sha256:$(t_sha256 "$W/player")"
scrape
t_check "response bytes grow by the blob sent ($out0 before)" \
    test "$(value berth_http_response_bytes_total)" -ge "$((out0 + $(stat -c %s "$W/player")))"
# uploads in progress: a PATCH sending its body slowly shows while it lasts
loc=$(curl -s -D - -o /dev/null -u alice:alice-pw -X POST "$U/v2/site/slow/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
head -c 60000 /dev/urandom >"$W/slow"
curl -s -o /dev/null -u alice:alice-pw -X PATCH -H 'Content-Type: application/octet-stream' \
    --limit-rate 20k --data-binary @"$W/slow" "$U$loc" &
slow=$!
up=0
for _ in $(seq 1 30); do
    scrape
    up=$(value berth_uploads_in_progress)
    [ "$up" = 1 ] && break
    sleep 0.1
done
t_eq "an upload receiving its body counts in berth_uploads_in_progress" 1 "$up"
wait "$slow"
scrape
t_eq "... and not once it ended" 0 "$(value berth_uploads_in_progress)"
# the worker queue: more costly sign-ins at once than the pool's 8 workers wait in its queue
pids=()
for _ in $(seq 1 10); do
    curl -s -o /dev/null -u slow:slow-pw "$U/v2/" &
    pids+=("$!")
done
qmax=0
for _ in $(seq 1 30); do
    scrape
    q=$(value berth_worker_queue_depth)
    [ "${q:-0}" -gt "$qmax" ] && qmax=$q
    [ "$qmax" -gt 0 ] && break
    sleep 0.05
done
t_check "sign-ins waiting for a worker count in berth_worker_queue_depth ($qmax)" test "$qmax" -ge 1
wait "${pids[@]}"
scrape
t_eq "... and the queue is empty once they are answered" 0 "$(value berth_worker_queue_depth)"
# Helm index builds: a view is built when the charts changed, not on every GET
curl -s -o /dev/null -u alice:alice-pw "$U/index.yaml"
scrape
h0=$(value berth_helm_index_builds_total)
curl -s -o /dev/null -u alice:alice-pw "$U/index.yaml"
scrape
t_eq "an index.yaml GET with no change builds nothing" "$h0" "$(value berth_helm_index_builds_total)"
python3 "$T_ROOT/tests/fixtures/mkchart.py" good "$W/mc-0.1.0.tgz" mc 0.1.0
curl -s -o /dev/null -u alice:alice-pw --data-binary @"$W/mc-0.1.0.tgz" "$U/api/charts"
curl -s -o /dev/null -u alice:alice-pw "$U/index.yaml"
scrape
t_eq "a chart upload, then index.yaml: one build" "$((h0 + 1))" "$(value berth_helm_index_builds_total)"
# upstream errors by kind: refused, no answer in time, an HTTP error
for m in dead.io hang.io e503.io; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$U/v2/$m/lib/x/manifests/1")
    t_eq "a pull through $m fails" 503 "$code"
done
scrape
t_check "refused connections counted: dead.io kind=connect ($(value berth_upstream_errors_total '{"mirror":"dead.io","kind":"connect"}'))" \
    test "$(value berth_upstream_errors_total '{"mirror":"dead.io","kind":"connect"}')" -ge 1
t_check "timeouts counted: hang.io kind=timeout" \
    test "$(value berth_upstream_errors_total '{"mirror":"hang.io","kind":"timeout"}')" -ge 1
t_check "HTTP errors counted: e503.io kind=http" \
    test "$(value berth_upstream_errors_total '{"mirror":"e503.io","kind":"http"}')" -ge 1
t_eq "... and nothing else for them (e503.io kind=connect)" 0 \
    "$(value berth_upstream_errors_total '{"mirror":"e503.io","kind":"connect"}')"
t_eq "the three failing upstreams are down" 3 "$(value berth_upstreams_down)"
t_check "the upstream's last success is a recent time" \
    test "$(value berth_upstream_last_success_timestamp_seconds '{"mirror":"docker.io"}')" -ge "$(($(date +%s) - 60))"
t_eq "no gc has run" "0 0" "$(value berth_gc_runs_total) $(value berth_gc_reclaimed_bytes_total)"
curl -s -o /dev/null -u alice:alice-pw -X DELETE "$U/v2/site/team/app/manifests/$D_IMG"
REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$T_TMP/data "$BERTH" gc -c "$T_TMP/config.yml" --grace 0s >/dev/null 2>&1
scrape
t_eq "a gc run by berth gc (another process) counts in the server's berth_gc_runs_total" 1 "$(value berth_gc_runs_total)"
t_check "... with the bytes it reclaimed (at least the deleted image's layer)" \
    test "$(value berth_gc_reclaimed_bytes_total)" -ge "$(stat -c %s "$W/player")"
t_check "... and the blob count fell ($b1 before, $(value berth_store_blobs) after)" test "$(value berth_store_blobs)" -lt "$b1"

# ---- health.file (registry:2): unhealthy while the file exists ----
touch "$W/out-of-rotation"
for _ in $(seq 1 30); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$D/debug/health")" = 503 ] && break
    sleep 0.1
done
t_eq "health.file present: /debug/health answers 503" 503 "$(curl -s -o "$W/h" -w '%{http_code}' "$D/debug/health")"
t_check "... naming the file ($(cat "$W/h"))" grep -q "out-of-rotation exists" "$W/h"
t_eq "... and so does the API's /health" 503 "$(curl -s -o /dev/null -w '%{http_code}' "$U/health")"
rm "$W/out-of-rotation"
for _ in $(seq 1 30); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$D/debug/health")" = 200 ] && break
    sleep 0.1
done
t_eq "file removed: healthy again" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$D/debug/health")"
berth_stop

# ---- evictions: a mirror over its cache.maxsize ----
mkdir -p "$T_TMP/e"
cat >"$T_TMP/e/config.yml" <<YML
version: 0.1
http: {debug: {addr: 127.0.0.1:$DP, prometheus: {enabled: true}}}
mirrors:
  docker.io: {urls: [$REG_URL]}
cache: {maxsize: 1}
YML
berth_start "$T_TMP/e" || t_fail "berth starts with a tiny cache"
PL_CURL=(curl -s)
out=$(pl_verify "$BERTH_URL" docker.io/library/up v1 "$UDIG" 2>&1) || t_fail "pull through the tiny cache" "$out"
ev=0
for _ in $(seq 1 100); do
    scrape
    ev=$(value berth_cache_evictions_total)
    [ "${ev:-0}" -ge 1 ] && break
    sleep 0.1
done
t_check "a mirrored manifest evicted past cache.maxsize counts in berth_cache_evictions_total ($ev)" test "${ev:-0}" -ge 1
t_check "... with the bytes it freed (at least the layer)" \
    test "$(value berth_cache_evicted_bytes_total)" -ge "$(stat -c %s "$W/ulayer")"
berth_stop

# ---- without http.debug.addr nothing else listens ----
mkdir -p "$T_TMP/n"
printf 'version: 0.1\n' >"$T_TMP/n/config.yml"
berth_start "$T_TMP/n" || t_fail "berth starts without a debug listener"
t_check "without http.debug.addr the debug port is closed" \
    bash -c "! curl -s -o /dev/null --max-time 2 '$D/debug/health'"
t_check "and the start-up log does not call http.debug unserved" \
    bash -c "! grep -q 'http.debug' '$T_TMP/berth.log'"
berth_stop
t_finish
