#!/usr/bin/env bash
# The Helm upstream on the one fill engine (src/proxy/fill.h), against a small python upstream
# (http.server) that logs every request and can stall a chart mid-transfer:
#   - more concurrent downloads of one uncached chart than berth has workers make one upstream
#     fetch, and every client gets the chart;
#   - while that fetch is stalled, a cached chart is still served (no worker waits on the
#     upstream: the downloads are parked), and a chart over 1 MiB is streamed: its clients have
#     its first bytes before the upstream finished sending;
#   - a stalled refresh of an upstream's index.yaml holds no worker either, and is made once for
#     all the requests waiting for it.
. "$(dirname "$0")/../lib.sh"
N=12 # > the 8 workers
W=$T_TMP/www
mkdir -p "$W/stable" "$T_TMP/b"
ln -s stable "$W/other"
python3 "$T_ROOT/tests/fixtures/mkchart.py" good "$W/stable/cached-1.0.0.tgz" cached 1.0.0 --pad 1000 >/dev/null
python3 "$T_ROOT/tests/fixtures/mkchart.py" good "$W/stable/small-1.0.0.tgz" small 1.0.0 --pad 1000 >/dev/null
python3 "$T_ROOT/tests/fixtures/mkchart.py" good "$W/stable/big-1.0.0.tgz" big 1.0.0 --pad $((3 << 20)) >/dev/null
UP_PORT=$(t_port)
python3 "$T_ROOT/tests/fixtures/mkchart.py" index "$W/stable/index.yaml" "http://127.0.0.1:$UP_PORT/stable" \
    "$W/stable/cached-1.0.0.tgz" "$W/stable/small-1.0.0.tgz" "$W/stable/big-1.0.0.tgz"
python3 "$T_ROOT/tests/fixtures/slowhttp.py" "$UP_PORT" "$W" "$T_TMP/stall" "$T_TMP/up.log" \
    >"$T_TMP/up.out" 2>&1 &
T_PIDS+=("$!")
t_wait_http "http://127.0.0.1:$UP_PORT/stable/index.yaml" || { t_fail "upstream starts"; t_finish; }
cat >"$T_TMP/b/config.yml" <<YML
version: 0.1
helm:
  upstreams:
    stable: {url: "http://127.0.0.1:$UP_PORT/stable", refresh: 1h, timeout: {connect: 2s, transfer: 60s}}
    other: {url: "http://127.0.0.1:$UP_PORT/other", refresh: 1s, timeout: {connect: 2s, transfer: 60s}}
YML
berth_start "$T_TMP/b" || { t_fail "berth starts"; t_finish; }
U=$BERTH_URL
curl -s -o /dev/null "$U/stable/index.yaml"
curl -s -o "$T_TMP/c0" "$U/stable/charts/cached-1.0.0.tgz"
t_check "a chart is cached" cmp "$T_TMP/c0" "$W/stable/cached-1.0.0.tgz"

fetches() { grep -c "GET /stable/$1" "$T_TMP/up.log"; }
wait_for() { # wait_for TRIES CMD...: polls CMD every 0.2 s
    local i
    for i in $(seq 1 "$1"); do "${@:2}" && return 0; sleep 0.2; done
    return 1
}
all_started() { # every download has bytes
    local i
    for i in $(seq 1 $N); do [ -s "$T_TMP/d$1.$i" ] || return 1; done
}

# which: small (stalled before its first byte) or big (stalled after its first 1.5 MiB)
for which in small big; do
    touch "$T_TMP/stall"
    pids=()
    for i in $(seq 1 $N); do
        curl -s -m 90 -o "$T_TMP/d$which.$i" -w '%{http_code}\n' "$U/stable/charts/$which-1.0.0.tgz" \
            >"$T_TMP/code$which.$i" &
        pids+=("$!")
    done
    wait_for 100 grep -q "GET /stable/$which-1.0.0.tgz" "$T_TMP/up.log"
    sleep 0.5 # every download has reached berth
    ok=0
    for i in 1 2 3; do
        code=$(curl -s -m 8 -o "$T_TMP/c$i" -w '%{http_code}' "$U/stable/charts/cached-1.0.0.tgz")
        [ "$code" = 200 ] && cmp -s "$T_TMP/c$i" "$W/stable/cached-1.0.0.tgz" && ok=$((ok + 1))
    done
    t_eq "$which: $N downloads of a stalled chart hold no worker: a cached chart is served meanwhile" 3 "$ok"
    if [ "$which" = big ]; then
        t_check "big: every download has the first bytes before the upstream sent them all (streamed)" \
            wait_for 100 all_started big
    fi
    rm -f "$T_TMP/stall"
    wait "${pids[@]}"
    same=0
    for i in $(seq 1 $N); do
        [ "$(cat "$T_TMP/code$which.$i")" = 200 ] && cmp -s "$T_TMP/d$which.$i" "$W/stable/$which-1.0.0.tgz" &&
            same=$((same + 1))
    done
    t_eq "$which: all $N concurrent downloads get the chart" $N "$same"
    t_eq "$which: one upstream fetch for all of them" 1 "$(fetches "$which-1.0.0.tgz")"
done
t_eq "the cached chart was fetched once" 1 "$(fetches cached-1.0.0.tgz)"

# an index refresh that stalls: every request waiting for it is parked
curl -s -o /dev/null "$U/other/index.yaml"
touch "$T_TMP/stall"
sleep 1.1 # past other's refresh interval
pids=()
for i in $(seq 1 $N); do
    curl -s -m 90 -o "$T_TMP/i.$i" -w '%{http_code}\n' "$U/other/index.yaml" >"$T_TMP/icode.$i" &
    pids+=("$!")
done
refreshing() { [ "$(grep -c 'GET /other/index.yaml' "$T_TMP/up.log")" -ge 2 ]; }
wait_for 100 refreshing
sleep 0.5 # every request has reached berth
ok=0
for i in 1 2 3; do
    code=$(curl -s -m 8 -o "$T_TMP/c$i" -w '%{http_code}' "$U/stable/charts/cached-1.0.0.tgz")
    [ "$code" = 200 ] && cmp -s "$T_TMP/c$i" "$W/stable/cached-1.0.0.tgz" && ok=$((ok + 1))
done
t_eq "index: $N requests waiting on a stalled refresh hold no worker: a cached chart is served" 3 "$ok"
rm -f "$T_TMP/stall"
wait "${pids[@]}"
same=0
for i in $(seq 1 $N); do
    [ "$(cat "$T_TMP/icode.$i")" = 200 ] && grep -q 'charts/big-1.0.0.tgz' "$T_TMP/i.$i" && same=$((same + 1))
done
t_eq "index: all $N requests get the rewritten index" $N "$same"
t_eq "index: one refresh for all of them" 2 "$(grep -c 'GET /other/index.yaml' "$T_TMP/up.log")"
berth_stop
t_eq "berth exits cleanly" 0 $?
t_finish
