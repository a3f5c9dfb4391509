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
registry_start "$T_TMP/up" || { t_fail "upstream registry starts"; t_finish; }
pl_make_config "$W/ucfg.json" up
pl_rand_blob "$W/ulayer" 3000 4000
PL_CURL=(curl -s)
pl_push_image "$REG_URL" library/up v1 "$W/u" "$W/ucfg.json" "$W/ulayer" >/dev/null || t_fail "image pushed upstream"
UL="sha256:$(t_sha256 "$W/ulayer")"

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
t_eq "the duration histogram counts every manifest request (5)" 5 \
    "$(value registry_http_request_duration_seconds_count '{"handler":"manifest"}')"
t_eq "... and its +Inf bucket agrees" 5 \
    "$(value registry_http_request_duration_seconds_bucket '{"handler":"manifest","le":"+Inf"}')"
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
t_check "the store's size is reported (at least the layer)" \
    test "$(value berth_store_bytes)" -ge "$(stat -c %s "$W/ulayer")"
t_check "the mirror cache's size is reported (the fetched layer)" \
    test "$(value berth_cache_bytes)" -ge "$(stat -c %s "$W/ulayer")"
t_eq "nothing is being uploaded now" 0 "$(value berth_uploads_in_progress)"
t_eq "no upstream is down" 0 "$(value berth_upstreams_down)"
t_check "the upstream's last success is a recent time" \
    test "$(value berth_upstream_last_success_timestamp_seconds '{"mirror":"docker.io"}')" -ge "$(($(date +%s) - 60))"
curl -s -o /dev/null -u alice:alice-pw -X DELETE "$U/v2/site/team/app/manifests/$D_IMG"
"$BERTH" gc -c "$T_TMP/config.yml" --grace 0s >/dev/null 2>&1 # another process: its own counts
t_eq "gc runs in the server are counted (none yet)" 0 "$(value berth_gc_runs_total)"

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
