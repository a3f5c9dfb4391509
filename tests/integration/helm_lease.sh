#!/usr/bin/env bash
# The Helm upstream's fill lease (src/proxy/fill.c) across three berths sharing one PostgreSQL
# metadata database and one storage directory, in front of one slow upstream
# (tests/fixtures/slowhttp.py, which logs every request and stalls transfers on demand):
#   - 4 clients on each berth ask at once for an uncached chart whose transfer stalls for longer
#     than a lease lasts (FILL_LEASE_MS, 6 s): the holder keeps renewing it, so the upstream sees
#     one GET, every client gets the chart's exact bytes, and no lease is left;
#   - the same for a 3 MiB chart, but the berth holding the lease (named by the lease's owner) is
#     SIGKILLed mid-transfer: its lease lapses, one of the two others takes it over and fetches
#     the chart (the upstream sees exactly two GETs: the dead one's and its successor's), every
#     client of the survivors gets the exact bytes, no client of the dead one takes a wrong body as
#     whole, no lease is left, and fsck is clean.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/pg.sh"

if ! pg_start; then
    t_fail "PostgreSQL starts (initdb + pg_ctl as postgres)"
    t_finish
fi
trap 'pg_stop; t_cleanup' EXIT
pg_createdb lease

W=$T_TMP/www
mkdir -p "$W/stable"
python3 "$T_ROOT/tests/fixtures/mkchart.py" good "$W/stable/small-1.0.0.tgz" small 1.0.0 --pad 1000 >/dev/null
python3 "$T_ROOT/tests/fixtures/mkchart.py" good "$W/stable/big-1.0.0.tgz" big 1.0.0 --pad $((3 << 20)) >/dev/null
UP_PORT=$(t_port)
python3 "$T_ROOT/tests/fixtures/mkchart.py" index "$W/stable/index.yaml" "http://127.0.0.1:$UP_PORT/stable" \
    "$W/stable/small-1.0.0.tgz" "$W/stable/big-1.0.0.tgz"
python3 "$T_ROOT/tests/fixtures/slowhttp.py" "$UP_PORT" "$W" "$T_TMP/stall" "$T_TMP/up.log" \
    >"$T_TMP/up.out" 2>&1 &
T_PIDS+=("$!")
t_wait_http "http://127.0.0.1:$UP_PORT/stable/index.yaml" || { t_fail "upstream starts"; t_finish; }

# three berths: one database, one storage directory (b1/data; the others link to it)
mkdir -p "$T_TMP/b1/data"
{
    printf 'version: 0.1\nlog:\n  level: info\n'
    pg_database_yaml lease
    printf 'helm:\n  upstreams:\n    stable: {url: "http://127.0.0.1:%s/stable", refresh: 1h, timeout: {connect: 2s, transfer: 60s}}\n' "$UP_PORT"
} >"$T_TMP/b1/config.yml"
URLS=() PIDS=()
for b in 1 2 3; do
    mkdir -p "$T_TMP/b$b"
    [ "$b" = 1 ] || { ln -s "$T_TMP/b1/data" "$T_TMP/b$b/data" && cp "$T_TMP/b1/config.yml" "$T_TMP/b$b/"; }
    berth_start "$T_TMP/b$b" || { t_fail "berth $b starts"; t_finish; }
    URLS+=("$BERTH_URL") PIDS+=("$BERTH_PID")
    # each berth has the upstream's index before the charts are asked for (the index is not
    # stalled then, and is not what this script counts)
    curl -s -o /dev/null "$BERTH_URL/stable/index.yaml"
done

fetches() { grep -c "GET /stable/$1" "$T_TMP/up.log"; }
leases() { pg_psql lease "SELECT count(*) FROM leases WHERE key LIKE 'fill helm %'"; }
wait_for() { # wait_for TRIES CMD...: polls CMD every 0.2 s
    local i
    for i in $(seq 1 "$1"); do "${@:2}" && return 0; sleep 0.2; done
    return 1
}
# ask CHART DIR: 4 clients on each berth, in the background (client k of berth b is 4*(b-1)+k)
ask() {
    local b k
    mkdir -p "$2"
    CLIENTS=()
    for b in 1 2 3; do
        for k in 1 2 3 4; do
            t_fetch "$2" $((4 * (b - 1) + k)) "${URLS[$((b - 1))]}/stable/charts/$1" 25 &
            CLIENTS+=("$!")
        done
    done
}

# ---- one fetch for all, the holder's upstream stalled longer than a lease lasts ----
touch "$T_TMP/stall"
ask small-1.0.0.tgz "$T_TMP/s"
wait_for 50 grep -q "GET /stable/small-1.0.0.tgz" "$T_TMP/up.log"
sleep 7 # > FILL_LEASE_MS: the holder renews its lease while the upstream is silent
rm -f "$T_TMP/stall"
wait "${CLIENTS[@]}"
t_check "12 concurrent clients over 3 berths all get the chart's exact bytes" \
    t_fetched_all "$T_TMP/s" 12 "$(t_sha256 "$W/stable/small-1.0.0.tgz")"
t_eq "... and the upstream saw exactly one GET of it (the lease outlived a 7 s stall)" 1 "$(fetches small-1.0.0.tgz)"
t_eq "... no lease is left once the fill committed" 0 "$(leases)"

# ---- the holder is SIGKILLed mid-transfer: another berth finishes ----
touch "$T_TMP/stall"
ask big-1.0.0.tgz "$T_TMP/g"
wait_for 50 grep -q "GET /stable/big-1.0.0.tgz" "$T_TMP/up.log"
owner=""
holder_known() { owner=$(pg_psql lease "SELECT owner FROM leases WHERE key LIKE 'fill helm %big-1.0.0.tgz'"); [ -n "$owner" ]; }
wait_for 50 holder_known
hpid=$(echo "$owner" | awk '{print $2}')
dead=0
for b in 1 2 3; do [ "${PIDS[$((b - 1))]}" = "$hpid" ] && dead=$b; done
t_check "the lease of the big chart names one of the berths ($owner)" [ "$dead" != 0 ]
sleep 0.5 # its clients have their first bytes
kill -KILL "$hpid"
wait "$hpid" 2>/dev/null
rm -f "$T_TMP/stall"
wait "${CLIENTS[@]}"
big=$(t_sha256 "$W/stable/big-1.0.0.tgz")
ok=0 wrong=0
for i in $(seq 1 12); do
    st=$(head -1 "$T_TMP/g/h.$i" 2>/dev/null | cut -d' ' -f2)
    whole=no
    [ "$(cat "$T_TMP/g/rc.$i")" = 0 ] && [ "$st" = 200 ] && whole=yes
    if [ $(((i - 1) / 4 + 1)) = "$dead" ]; then
        [ "$whole" = yes ] && [ "$(cat "$T_TMP/g/s.$i")" != "$big" ] && wrong=$((wrong + 1))
    else
        [ "$whole" = yes ] && [ "$(cat "$T_TMP/g/s.$i")" = "$big" ] && ok=$((ok + 1))
    fi
done
t_eq "holder killed: the 8 clients of the two other berths get the chart's exact bytes" 8 "$ok"
t_eq "... no client of the killed berth takes a wrong body as whole" 0 "$wrong"
t_eq "... the upstream saw two GETs of it: the killed holder's and its successor's" 2 "$(fetches big-1.0.0.tgz)"
t_eq "... no lease is left once the successor committed" 0 "$(leases)"
for b in 1 2 3; do
    [ "$b" = "$dead" ] && continue
    t_eq "berth $b serves the chart from the store" "$big" \
        "$(curl -s -m 20 "${URLS[$((b - 1))]}/stable/charts/big-1.0.0.tgz" | sha256sum | cut -d' ' -f1)"
done
t_eq "... without asking the upstream again" 2 "$(fetches big-1.0.0.tgz)"
for b in 1 2 3; do
    [ "$b" = "$dead" ] && continue
    kill -TERM "${PIDS[$((b - 1))]}"
    wait "${PIDS[$((b - 1))]}"
    t_eq "berth $b exits cleanly" 0 $?
done
t_check "fsck is clean after the kill" env REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY="$T_TMP/b1/data" \
    "$BERTH" fsck -c "$T_TMP/b1/config.yml"
t_finish
