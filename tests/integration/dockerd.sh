#!/usr/bin/env bash
# The Docker daemon (Debian's docker.io, dockerd run by hand) as a real client of berth: the
# daemon.json exactly as `berth client-config --for docker` prints it, registry-mirrors with
# `mirrors: docker.io` and with `proxy.remoteurl` (pull; upstream down, rmi, pull again, also
# after berth restarts), a push to berth pulled back, and a mirror-pulled image retagged, pushed
# and pulled back.
#
# dockerd falls back to Docker Hub (and a DNS lookup) when a mirror fails, so everything here runs
# in a network namespace of its own with only loopback up, where fixed ports are free: berth on
# 127.0.0.1:5000, the upstream docker-registry on 127.0.0.1:5001. /etc/docker and /run are
# bind-mounted over so dockerd's key file and sockets stay in the test directory; vfs, no bridge,
# no iptables, no containers run. dockerd is stopped with SIGTERM (it bind-mounts its data root).
if [ -z "${T_NETNS:-}" ]; then
    command -v unshare >/dev/null || {
        echo "FAIL - dockerd: tools installed (unshare missing)"
        echo "0 passed, 1 failed"
        exit 1
    }
    T_NETNS=1 exec unshare --net --mount bash "$0" "$@"
fi
. "$(dirname "$0")/../lib.sh"
DOCKERD=/usr/sbin/dockerd
DOCKER_BIN=/usr/bin/docker # not a docker that PATH may find first
t_need_tools unshare ip skopeo jq docker-registry "$DOCKERD" "$DOCKER_BIN"
ip link set lo up

BPORT=5000
UPORT=5001
B=127.0.0.1:$BPORT
U=http://127.0.0.1:$UPORT

# the upstream: a real docker-registry holding library/busybox:latest
upstream_start() {
    mkdir -p "$T_TMP/up/data"
    cat >"$T_TMP/up/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $T_TMP/up/data
http:
  addr: 127.0.0.1:$UPORT
YML
    docker-registry serve "$T_TMP/up/registry.yml" >>"$T_TMP/up/registry.log" 2>&1 &
    UP_PID=$!
    T_PIDS+=("$UP_PID")
    t_wait_http "$U/v2/"
}
upstream_stop() {
    kill "$UP_PID"
    wait "$UP_PID" 2>/dev/null
}

# bstart DIR: berth on the fixed port with DIR/config.yml and DIR/data
bstart() {
    REGISTRY_HTTP_ADDR=$B REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$1/data \
        "$BERTH" serve -c "$1/config.yml" >>"$1/berth.log" 2>&1 &
    BERTH_PID=$!
    T_PIDS+=("$BERTH_PID")
    t_wait_http "http://$B/v2/"
}

upstream_start
python3 "$T_ROOT/tests/fixtures/mkimage.py" image "$T_TMP/bb" --layers 2 --seed 161 --tag latest >/dev/null
python3 "$T_ROOT/tests/fixtures/mkimage.py" image "$T_TMP/app" --layers 1 --seed 162 --tag v1 >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$T_TMP/bb:latest" "docker://127.0.0.1:$UPORT/library/busybox:latest"
# Docker's image ID is the digest of the image's config
config_of() { jq -r .config.digest "$1/blobs/sha256/$(jq -r '.manifests[0].digest' "$1/index.json" | cut -d: -f2)"; }
ID_BB=$(config_of "$T_TMP/bb")
ID_APP=$(config_of "$T_TMP/app")
skopeo copy -q "oci:$T_TMP/app:v1" "docker-archive:$T_TMP/app.tar:local/app:v1"

# the daemon.json exactly as printed
D=$T_TMP/docker
mkdir -p "$D/etc" "$D/run" "$D/data" "$D/exec"
"$BERTH" client-config --for docker --endpoint "http://$B" >"$D/etc/daemon.json"
t_check "client-config --for docker prints JSON as it is (no comment lines)" jq -e \
    ".\"registry-mirrors\" == [\"http://$B\"] and .\"insecure-registries\" == [\"$B\"]" "$D/etc/daemon.json"
mount --bind "$D/etc" /etc/docker
mount --bind "$D/run" /run
"$DOCKERD" --config-file /etc/docker/daemon.json --data-root "$D/data" --exec-root "$D/exec" \
    --pidfile "$D/dockerd.pid" -H "unix://$D/docker.sock" --storage-driver=vfs --bridge=none \
    --iptables=false --ip6tables=false >"$D/dockerd.log" 2>&1 &
DOCKERD_PID=$!
T_PIDS+=("$DOCKERD_PID")
DK=(timeout 120 "$DOCKER_BIN" -H "unix://$D/docker.sock")
for _ in $(seq 1 150); do "${DK[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
if ! "${DK[@]}" info >"$D/info.txt" 2>&1; then
    t_fail "dockerd starts with the printed daemon.json" "$(grep -m1 -i 'unable\|error\|invalid' "$D/dockerd.log")"
    t_finish
fi
t_ok "dockerd starts with the printed daemon.json"
t_check "dockerd uses berth as its registry mirror" grep -q "http://$B/" "$D/info.txt"

image_id() { "${DK[@]}" image inspect -f '{{.Id}}' "$1" 2>&1; }
# pull_check NAME IMAGE ID: docker pull IMAGE succeeds and gives the image whose config is ID
pull_check() {
    "${DK[@]}" rmi -f "$2" >/dev/null 2>&1
    if "${DK[@]}" pull "$2" >"$T_TMP/pull.out" 2>&1; then
        t_eq "$1" "$3" "$(image_id "$2")"
    else
        t_fail "$1" "$(tail -c 300 "$T_TMP/pull.out" | tr '\n' ' ')"
    fi
}
# push_back NAME SRC DST ID: tag SRC as DST, push it to berth, remove both, pull DST back
push_back() {
    "${DK[@]}" tag "$2" "$3"
    if "${DK[@]}" push "$3" >"$T_TMP/push.out" 2>&1; then
        t_ok "$1: push"
    else
        t_fail "$1: push" "$(tail -c 300 "$T_TMP/push.out" | tr '\n' ' ')"
    fi
    "${DK[@]}" rmi -f "$3" >/dev/null 2>&1
    "${DK[@]}" rmi -f "$2" >/dev/null 2>&1
    pull_check "$1: pulled back" "$3" "$4"
}

# ---- mirrors: docker.io ----
M=$T_TMP/bm
mkdir -p "$M"
cat >"$M/config.yml" <<YML
version: 0.1
mirrors:
  docker.io:
    urls: [$U]
YML
bstart "$M"
pull_check "mirrors docker.io: docker pull busybox through berth" busybox:latest "$ID_BB"
t_check "mirrors docker.io: berth cached it under docker.io/library/busybox" bash -c \
    "curl -s http://$B/v2/_catalog | jq -e '.repositories | index(\"docker.io/library/busybox\")'"
upstream_stop
pull_check "mirrors docker.io: upstream down, rmi, pull again" busybox:latest "$ID_BB"
kill "$BERTH_PID" && wait "$BERTH_PID"
bstart "$M"
pull_check "mirrors docker.io: upstream down, berth restarted, pull again" busybox:latest "$ID_BB"
"${DK[@]}" load -i "$T_TMP/app.tar" >/dev/null 2>&1
# three components: never a Docker Hub name, so never one that reads resolve to the mirror
push_back "mirrors docker.io: a loaded image pushed to berth" local/app:v1 "$B/site/team/app:v1" "$ID_APP"
"${DK[@]}" pull busybox:latest >/dev/null 2>&1
push_back "mirrors docker.io: mirror-pulled busybox retagged" busybox:latest "$B/site/team/bb:v1" "$ID_BB"
kill "$BERTH_PID" && wait "$BERTH_PID"
upstream_start

# ---- proxy.remoteurl (registry:2's proxy mode), with the berth key that allows local pushes ----
P=$T_TMP/bp
mkdir -p "$P"
cat >"$P/config.yml" <<YML
version: 0.1
proxy:
  remoteurl: $U
  localpush: true
YML
bstart "$P"
"${DK[@]}" rmi -f busybox:latest "$B/site/team/bb:v1" "$B/site/team/app:v1" >/dev/null 2>&1
pull_check "proxy.remoteurl: docker pull busybox through berth" busybox:latest "$ID_BB"
upstream_stop
pull_check "proxy.remoteurl: upstream down, rmi, pull again" busybox:latest "$ID_BB"
kill "$BERTH_PID" && wait "$BERTH_PID"
bstart "$P"
pull_check "proxy.remoteurl: upstream down, berth restarted, pull again" busybox:latest "$ID_BB"
"${DK[@]}" load -i "$T_TMP/app.tar" >/dev/null 2>&1
push_back "proxy.remoteurl: a loaded image pushed to berth" local/app:v1 "$B/team/app:v1" "$ID_APP"
"${DK[@]}" pull busybox:latest >/dev/null 2>&1
push_back "proxy.remoteurl: mirror-pulled busybox retagged" busybox:latest "$B/team/bb:v1" "$ID_BB"
t_check "proxy.remoteurl: the retagged image is a local repository of berth" bash -c \
    "curl -sf http://$B/v2/team/bb/tags/list | jq -e '.tags == [\"v1\"]'"
t_check "proxy.remoteurl: busybox still answers the upstream's image" bash -c \
    "curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' http://$B/v2/library/busybox/manifests/latest | jq -e '.config.digest == \"$ID_BB\"'"
kill "$BERTH_PID" && wait "$BERTH_PID"

kill -TERM "$DOCKERD_PID"
wait "$DOCKERD_PID"
t_eq "dockerd stops cleanly" 0 "$?"
t_finish
