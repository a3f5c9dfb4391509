#!/usr/bin/env bash
# Shared helpers for berth's integration tests. Each test script sources this file, calls
# `t_ok`/`t_fail`/`t_check`/`t_status` to record results, and ends with `t_finish`, which prints
# "N passed, N failed" for the script. tests/run.sh sums those lines.
#
# Environment:
#   BERTH      the binary under test (default build/berth; run.sh also passes build/asan/berth)
#   T_TMP      a per-script scratch directory, removed at exit
#   T_ONLY     a regex: only the checks whose group (t_group) or name matches it are counted;
#              the others are counted as skipped (their commands still run: later checks may
#              need what they did)
set -u
T_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BERTH=${BERTH:-$T_ROOT/build/berth}
T_NAME=$(basename "$0" .sh)
T_PASS=0
T_FAIL=0
T_TMP=$(mktemp -d "/tmp/berth-$T_NAME.XXXXXX")
T_PIDS=()

# t_cleanup: SIGTERM to every process the script started, then SIGKILL to any still alive after
# T_KILL_AFTER seconds (default 10): a signal lost under qemu-user once left a berth running for
# 37 minutes after its script had ended.
t_cleanup() {
    local p i alive
    for p in "${T_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for i in $(seq 1 $((${T_KILL_AFTER:-10} * 10))); do
        alive=0
        for p in "${T_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1 && break; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for p in "${T_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
    for p in "${T_PIDS[@]}"; do wait "$p" 2>/dev/null; done
    [ -n "${T_KEEP:-}" ] || rm -rf "$T_TMP"
}
trap t_cleanup EXIT

# t_bin_arch [FILE]: the Debian architecture the binary under test (or FILE) is built for, read
# from its ELF header (amd64, arm64, armhf, ...), not the machine's: a cross-built berth runs here
# under qemu-user, and checks that depend on the build (the trampolines, the libraries it maps)
# follow the binary.
t_bin_arch() {
    local m
    m=$(od -An -tu2 -j18 -N2 "${1:-$BERTH}" 2>/dev/null | tr -d ' ')
    case "$m" in 62) echo amd64 ;; 183) echo arm64 ;; 40) echo armhf ;; 3) echo i386 ;; *) echo "unknown-$m" ;; esac
}
# t_bin_triplet [FILE]: the multiarch directory of the binary's libraries (/usr/lib/TRIPLET)
t_bin_triplet() {
    case "$(t_bin_arch "$@")" in
    amd64) echo x86_64-linux-gnu ;; arm64) echo aarch64-linux-gnu ;; armhf) echo arm-linux-gnueabihf ;;
    i386) echo i386-linux-gnu ;; *) echo unknown ;;
    esac
}

# t_group NAME: the checks that follow, up to the next t_group, are group NAME, which T_ONLY can
# select (T_ONLY=uploads bash tests/integration/api.sh, or make test TESTS=api T_ONLY=uploads).
# Returns 1 when T_ONLY is set and does not select the group, so a script may leave out the
# group's own work: `if t_group tags; then ...; fi`.
T_GROUP=
t_group() {
    T_GROUP=$1
    [ -z "${T_ONLY:-}" ] || echo "$T_GROUP" | grep -qE -- "$T_ONLY"
}
# t_selected NAME: whether the check NAME counts under T_ONLY (its group or its name matches).
t_selected() {
    [ -z "${T_ONLY:-}" ] && return 0
    { [ -n "$T_GROUP" ] && echo "$T_GROUP" | grep -qE -- "$T_ONLY"; } ||
        echo "$1" | grep -qE -- "$T_ONLY"
}
T_UNSELECTED=0
t_unselected() {
    T_SKIP=$((T_SKIP + 1))
    T_UNSELECTED=$((T_UNSELECTED + 1))
    echo "skip - $T_NAME: $1 (not selected by T_ONLY)"
}
t_ok() {
    t_selected "$1" || { t_unselected "$1"; return 0; }
    T_PASS=$((T_PASS + 1))
    echo "ok   - $T_NAME: $1"
}
# t_skip NAME WHY: a check that cannot run here, counted apart (never as a pass), with the reason.
T_SKIP=0
t_skip() {
    T_SKIP=$((T_SKIP + 1))
    echo "skip - $T_NAME: $1 ($2)"
}
t_fail() {
    t_selected "$1" || { t_unselected "$1"; return 0; }
    T_FAIL=$((T_FAIL + 1))
    echo "FAIL - $T_NAME: $1${2:+ ($2)}"
}
# t_check NAME CMD...: passes when CMD exits 0.
t_check() {
    local name=$1
    shift
    if "$@" >"$T_TMP/.check.out" 2>&1; then t_ok "$name"; else t_fail "$name" "$(tail -c 400 "$T_TMP/.check.out" | tr '\n' ' ')"; fi
}
# t_eq NAME EXPECTED ACTUAL
t_eq() {
    if [ "$2" = "$3" ]; then t_ok "$1"; else t_fail "$1" "expected [$2] got [$3]"; fi
}
# t_finish: prints the script's tally; exit status 1 when anything failed.
t_finish() {
    [ -n "${T_ONLY:-}" ] && [ $((T_PASS + T_FAIL)) -eq 0 ] &&
        echo "# T_ONLY=$T_ONLY selected none of this script's $T_UNSELECTED checks"
    echo "$T_PASS passed, $T_FAIL failed$([ "$T_SKIP" -eq 0 ] || echo ", $T_SKIP skipped")"
    [ "$T_FAIL" -eq 0 ]
    exit $?
}

# t_port: a free TCP port on 127.0.0.1.
t_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# t_wait_http URL [TRIES]: waits until URL answers any HTTP status.
t_wait_http() {
    local i
    for i in $(seq 1 "${2:-100}"); do
        curl -s -o /dev/null -k "$1" && return 0
        sleep 0.1
    done
    return 1
}

# berth_start DIR [extra serve args...]: starts berth with storage in DIR/data on a free port,
# log in DIR/berth.log, config DIR/config.yml when present. Sets BERTH_URL, BERTH_PID, BERTH_PORT.
# t_listener_is PORT PID: whether PID is the process listening on PORT (true when ss is missing).
t_listener_is() {
    command -v ss >/dev/null || return 0
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -q "pid=$2,"
}

berth_start() {
    local dir=$1 try i
    shift
    mkdir -p "$dir"
    local cfg=()
    [ -f "$dir/config.yml" ] && cfg=(-c "$dir/config.yml")
    # a free port can be taken by another test's server (scripts run in parallel) between t_port
    # and berth's bind: berth then stops with "Address already in use" and the other server would
    # answer in its place, so the answer is trusted only from berth's own process
    for try in 1 2 3 4 5; do
        BERTH_PORT=$(t_port)
        REGISTRY_HTTP_ADDR=127.0.0.1:$BERTH_PORT REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$dir/data \
            "$BERTH" serve "${cfg[@]}" "$@" >>"$dir/berth.log" 2>&1 &
        BERTH_PID=$!
        T_PIDS+=("$BERTH_PID")
        BERTH_URL=http://127.0.0.1:$BERTH_PORT
        if ! t_wait_http "$BERTH_URL/v2/"; then
            echo "berth did not start; log:" >&2
            tail -20 "$dir/berth.log" >&2
            return 1
        fi
        for i in $(seq 1 100); do
            t_listener_is "$BERTH_PORT" "$BERTH_PID" && return 0
            kill -0 "$BERTH_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill "$BERTH_PID" 2>/dev/null
        wait "$BERTH_PID" 2>/dev/null
        echo "# port $BERTH_PORT was answered by another process: berth starts again" >&2
    done
    echo "berth did not start on its own port; log:" >&2
    tail -20 "$dir/berth.log" >&2
    return 1
}

# berth_stop: SIGTERM and wait; returns berth's exit status.
berth_stop() {
    kill -TERM "$BERTH_PID" 2>/dev/null
    wait "$BERTH_PID"
}

# registry_start DIR [LOGLEVEL]: starts a real docker-registry (registry:2) on a free port, log in
# DIR/registry.log (LOGLEVEL info logs each request). Sets REG_URL, REG_PID, REG_PORT.
registry_start() {
    local dir=$1
    mkdir -p "$dir/data"
    REG_PORT=$(t_port)
    cat >"$dir/registry.yml" <<YML
version: 0.1
log:
  level: ${2:-warn}
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REG_PORT
YML
    docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
    REG_PID=$!
    T_PIDS+=("$REG_PID")
    REG_URL=http://127.0.0.1:$REG_PORT
    t_wait_http "$REG_URL/v2/"
}

# podman_cmd DIR: sets PODMAN=(podman ...) with its storage (vfs) and state under DIR, so tests
# never touch the machine's own containers.
podman_cmd() {
    mkdir -p "$1"
    PODMAN=(podman --root "$1/root" --runroot "$1/run" --storage-driver vfs --cgroup-manager cgroupfs
        --events-backend none)
    export REGISTRY_AUTH_FILE="$1/auth.json"
    [ -f "$REGISTRY_AUTH_FILE" ] || echo '{}' >"$REGISTRY_AUTH_FILE"
}

# sha256 of a file, hex only.
t_sha256() { sha256sum "$1" | cut -d' ' -f1; }

# containerd_start DIR: a private containerd (native snapshotter, no CRI) with its root, state
# and sockets under DIR, log in DIR/containerd.log. Sets CTR=(ctr -a DIR/ctd.sock) and CTD_PID,
# and waits until it answers.
containerd_start() {
    local d=$1
    mkdir -p "$d/root" "$d/state"
    cat >"$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$d/ctd.sock"
[ttrpc]
  address = "$d/ctd-ttrpc.sock"
TOML
    containerd -c "$d/config.toml" >"$d/containerd.log" 2>&1 &
    CTD_PID=$!
    T_PIDS+=("$CTD_PID")
    CTR=(ctr -a "$d/ctd.sock")
    local i
    for i in $(seq 1 100); do "${CTR[@]}" version >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}

# t_ctr_rootfs NAME LAYOUT MANIFEST PULLOUT DIR: after `ctr images pull --print-chainid` (its output
# in PULLOUT) of the image whose manifest MANIFEST is in the OCI layout LAYOUT, checks that the
# native snapshotter's view of its chain ID holds exactly the files of the layer tars (unpacked
# into DIR/expect).
t_ctr_rootfs() {
    local name=$1 layout=$2 man=$3 out=$4 d=$5 l chain src
    mkdir -p "$d/expect"
    for l in $(jq -r '.layers[].digest' "$layout/blobs/sha256/${man#sha256:}"); do
        tar -xzf "$layout/blobs/sha256/${l#sha256:}" -C "$d/expect"
    done
    chain=$(grep -o 'image chain ID: sha256:[0-9a-f]*' "$out" | cut -d' ' -f4)
    src=$("${CTR[@]}" snapshots --snapshotter native view --mounts rootfs-check "$chain" 2>"$d/view.err" | jq -r '.[0].Source' 2>>"$d/view.err")
    if [ -n "$src" ] && [ -d "$src" ]; then
        t_check "$name" diff -r "$d/expect" "$src"
        "${CTR[@]}" snapshots --snapshotter native rm rootfs-check >/dev/null 2>&1
    else
        t_fail "view of the unpacked rootfs" "chain [$chain] $(tail -c 300 "$d/view.err")"
    fi
}

# t_suite SCRIPT LABEL: runs tests/integration/SCRIPT.sh (with whatever BERTH and variables the
# caller exported) and adds its "N passed, N failed" to this test's tallies, echoing its failures.
t_suite() {
    local out=$T_TMP/suite-$1.out line
    timeout 900 bash "$T_ROOT/tests/integration/$1.sh" >"$out" 2>&1
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$out" | tail -1)
    if [ -z "$line" ]; then
        t_fail "$1.sh $2 ended without a tally" "$(tail -c 300 "$out" | tr '\n' ' ')"
        return
    fi
    echo "# $1.sh $2: $line"
    grep '^FAIL' "$out" | sed 's/^/# /'
    T_PASS=$((T_PASS + $(echo "$line" | cut -d' ' -f1)))
    T_FAIL=$((T_FAIL + $(echo "$line" | cut -d' ' -f3 | tr -d ,)))
    T_SKIP=$((T_SKIP + $(echo "$line" | awk '{print ($5 == "" ? 0 : $5)}')))
}

# t_wrapper_head: the start of a berth wrapper script (tests/pg.sh, tests/rgw.sh), after it sets
# $real: finds the config (-c FILE, or serve FILE) and the storage directory it names, as $root;
# commands that open no store run $real at once.
t_wrapper_head() {
    cat <<'SH'
cfg=
prev=
for a in "$@"; do
    [ "$prev" = -c ] && cfg=$a
    prev=$a
done
[ -z "$cfg" ] && [ "${1:-}" = serve ] && [ -f "${2:-}" ] && cfg=$2
# the commands that open a store (app closure and bundle commands do with -c)
case "${1:-}" in
serve | gc | fsck | migrate | sync) ;;
*) [ -n "$cfg" ] || exec "$real" "$@" ;;
esac
root=${REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY:-}
[ -z "$root" ] && [ -n "$cfg" ] && root=$(sed -n 's/^ *rootdirectory: *//p' "$cfg" | head -1)
root=$(realpath -m "${root:-./data}")
SH
}

# t_need_tools TOOL...: fails "tools installed" and ends the test when one is missing.
t_need_tools() {
    local c
    for c in "$@"; do
        if ! command -v "$c" >/dev/null; then
            t_fail "tools installed" "$c missing: run scripts/deps.sh test"
            t_finish
        fi
    done
}

# t_fetch DIR I URL [MAXTIME]: one GET of URL by client I, leaving what t_fetched_all reads:
# DIR/h.I (the headers), DIR/rc.I (curl's exit status) and DIR/s.I (the body's sha256). Run it
# in the background for concurrent clients.
t_fetch() {
    curl -s --max-time "${4:-120}" -D "$1/h.$2" "$3" | sha256sum | cut -d' ' -f1 >"$1/s.$2"
    echo "${PIPESTATUS[0]}" >"$1/rc.$2"
}

# t_fetched_all DIR N HEX: clients 1..N each left DIR/h.I (curl -D headers), DIR/rc.I (curl's exit
# status) and DIR/s.I (the body's sha256): true when every one got 200 and the body hashing to
# HEX; else prints each client that did not.
t_fetched_all() {
    local i bad=0 st
    for i in $(seq 1 "$2"); do
        st=$(head -1 "$1/h.$i" 2>/dev/null | cut -d' ' -f2)
        if [ "$(cat "$1/rc.$i")" != 0 ] || [ "$st" != 200 ] || [ "$(cat "$1/s.$i")" != "$3" ]; then
            echo "client $i: curl rc $(cat "$1/rc.$i") HTTP [$st] sha $(cut -c1-12 "$1/s.$i")"
            bad=1
        fi
    done
    return $bad
}
