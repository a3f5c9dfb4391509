#!/usr/bin/env bash
# The mirror under site conditions, against a real docker-registry behind relays the test
# controls: a silent upstream (accepts TCP, never answers) starves neither local requests nor a
# healthy upstream; a cached tag is served within timeout.revalidate when its check stalls; the
# silent upstream is marked down (named by /health, not asked by every request, probed in the
# background until it answers again); a fill cut mid-blob resumes where it stopped; fsck is clean.
. "$(dirname "$0")/../lib.sh"

registry_start "$T_TMP/up"
python3 "$T_ROOT/tests/fixtures/mkimage.py" image "$T_TMP/app" --layers 2 --seed 71 --tag v1 >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$T_TMP/app:v1" "docker://127.0.0.1:$REG_PORT/org/app:v1"
mt='application/vnd.oci.image.manifest.v1+json'
layer=$(curl -s -H "Accept: $mt" "$REG_URL/v2/org/app/manifests/v1" | jq -r '.layers[0].digest')
# one 8 MiB blob for the cut transfer
head -c $((8 << 20)) /dev/urandom >"$T_TMP/big"
big="sha256:$(t_sha256 "$T_TMP/big")"
loc=$(curl -s -D - -o /dev/null -X POST "$REG_URL/v2/org/big/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
case $loc in http*) ;; *) loc=$REG_URL$loc ;; esac
curl -s -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$T_TMP/big" "$loc&digest=$big"

SP=$(t_port)
python3 "$T_ROOT/tests/fixtures/mirror_stallproxy.py" "$SP" "$REG_PORT" "$T_TMP/stall" "$T_TMP/stalled" &
T_PIDS+=("$!")
CP=$(t_port)
python3 "$T_ROOT/tests/fixtures/cutproxy.py" "$CP" "$REG_PORT" $((3 << 20)) "$T_TMP/wan" &
T_PIDS+=("$!")
t_wait_http "http://127.0.0.1:$SP/v2/"
t_wait_http "http://127.0.0.1:$CP/v2/"
echo 0 >"$T_TMP/stalled"

mkdir -p "$T_TMP/b"
cat >"$T_TMP/b/config.yml" <<YML
version: 0.1
storage:
  delete:
    enabled: true
mirrors:
  dark.io:
    urls: [http://127.0.0.1:$SP]
    revalidate: 1s
    timeout: {connect: 2s, transfer: 120s, revalidate: 1s}
  ghcr.io:
    urls: [$REG_URL]
  cut.io:
    urls: [http://127.0.0.1:$CP]
YML
berth_start "$T_TMP/b"
t_eq "warm: the tag is cached while the upstream answers" 200 \
    "$(curl -s -o "$T_TMP/m1" -w '%{http_code}' -H "Accept: $mt" "$BERTH_URL/v2/dark.io/org/app/manifests/v1")"

# the WAN goes dark: more requests for uncached content than berth has workers
touch "$T_TMP/stall"
bg=()
for i in $(seq 1 12); do
    curl -s -o /dev/null -m 60 "$BERTH_URL/v2/dark.io/org/app/manifests/t$i" &
    bg+=("$!")
done
curl -s -o /dev/null -m 60 "$BERTH_URL/v2/dark.io/org/app/blobs/$layer" &
bg+=("$!")
sleep 1.5

# healthy upstream and local requests do not wait for it
code=$(curl -s -m 15 -o "$T_TMP/h1" -w '%{http_code}' -H "Accept: $mt" "$BERTH_URL/v2/ghcr.io/org/app/manifests/v1")
t_eq "silent upstream: a cold pull from a healthy upstream answers" 200 "$code"
code=$(curl -s -m 15 -o "$T_TMP/h2" -w '%{http_code}' "$BERTH_URL/v2/ghcr.io/org/app/blobs/$layer")
t_eq "silent upstream: a cold blob from a healthy upstream answers" 200 "$code"
t_eq "silent upstream: with the right bytes" "${layer#sha256:}" "$(t_sha256 "$T_TMP/h2")"
echo local-blob >"$T_TMP/lb"
ld="sha256:$(t_sha256 "$T_TMP/lb")"
t_eq "silent upstream: a local push answers" 201 \
    "$(curl -s -m 15 -o /dev/null -w '%{http_code}' -X POST --data-binary @"$T_TMP/lb" "$BERTH_URL/v2/local/x/blobs/uploads/?digest=$ld")"
t_eq "silent upstream: a local DELETE answers" 202 \
    "$(curl -s -m 15 -o /dev/null -w '%{http_code}' -X DELETE "$BERTH_URL/v2/local/x/blobs/$ld")"

# the cached tag, due for its check, is served within timeout.revalidate, then the upstream is down
code=$(curl -s -m 15 -o "$T_TMP/m2" -w '%{http_code}' -H "Accept: $mt" "$BERTH_URL/v2/dark.io/org/app/manifests/v1")
t_eq "silent upstream: the cached tag is served (stale-if-error)" 200 "$code"
t_eq "silent upstream: with the cached bytes" "$(t_sha256 "$T_TMP/m1")" "$(t_sha256 "$T_TMP/m2")"
t_check "silent upstream: /health names it" bash -c "curl -s -m 5 $BERTH_URL/health | jq -e '.healthy and .upstreams_down[0].mirror == \"dark.io\"'"
t_check "silent upstream: the log names it" grep -q 'upstream down.*mirror=dark.io' "$T_TMP/b/berth.log"
before=$(cat "$T_TMP/stalled")
for i in 1 2 3 4 5; do curl -s -o /dev/null -m 15 -H "Accept: $mt" "$BERTH_URL/v2/dark.io/org/app/manifests/v1"; done
code=$(curl -s -m 15 -o "$T_TMP/e1" -w '%{http_code}' "$BERTH_URL/v2/dark.io/org/app/manifests/other")
t_eq "down: an uncached tag fails at once (503)" 503 "$code"
after=$(cat "$T_TMP/stalled")
t_check "down: requests do not ask it again ($before -> $after connections)" test $((after - before)) -le 1

# the WAN comes back: a background probe marks it up
rm -f "$T_TMP/stall"
up=no
for i in $(seq 1 150); do
    curl -s "$BERTH_URL/health" | jq -e '.upstreams_down == null' >/dev/null && { up=yes; break; }
    sleep 0.2
done
t_eq "back: the probe marks it up" yes "$up"
t_check "back: logged" grep -q 'upstream reachable again.*mirror=dark.io' "$T_TMP/b/berth.log"
t_eq "back: an uncached tag is fetched again" 200 \
    "$(curl -s -m 15 -o /dev/null -w '%{http_code}' -H "Accept: $mt" "$BERTH_URL/v2/dark.io/org/app/manifests/v1")"

# a WAN drop mid-fill: the blob is resumed, crosses the WAN about once, and is whole
code=$(curl -s -m 60 -o "$T_TMP/got" -w '%{http_code}' "$BERTH_URL/v2/cut.io/org/big/blobs/$big"; echo " rc=$?")
t_eq "cut: the blob arrives whole in one GET" "200 rc=0" "$code"
[ "$code" = "200 rc=0" ] || curl -s -m 60 -o "$T_TMP/got" "$BERTH_URL/v2/cut.io/org/big/blobs/$big"
t_eq "cut: with the right bytes" "${big#sha256:}" "$(t_sha256 "$T_TMP/got")"
wan=$(cat "$T_TMP/wan")
t_check "cut: resumed, not restarted ($wan WAN bytes for $((8 << 20)))" test "$wan" -lt $(((8 << 20) * 11 / 10))
t_check "cut: logged" grep -q 'mirror fill cut: resuming' "$T_TMP/b/berth.log"

for p in "${bg[@]}"; do kill "$p" 2>/dev/null; done
kill -KILL "$BERTH_PID" 2>/dev/null
wait "$BERTH_PID" 2>/dev/null

# a fleet behind one NAT address, under a soft descriptor limit of 256: berth raises it to the
# hard limit, and 300 connections from one address at once are all served
nofile_berth() { # nofile_berth SOFT:HARD DIR: berth_start under that descriptor limit
    printf '#!/bin/sh\nexec prlimit --nofile=%s %s "$@"\n' "$1" "$BERTH" >"$T_TMP/nofile.sh"
    chmod +x "$T_TMP/nofile.sh"
    BERTH="$T_TMP/nofile.sh" berth_start "$2"
}
nofile_berth 256:4096 "$T_TMP/b"
t_eq "descriptors: the soft limit is raised to the hard one" 4096 \
    "$(awk '/Max open files/{print $4}' /proc/$BERTH_PID/limits)"
t_check "descriptors: the start-up log says so" grep -q 'berth serving.*nofile=4096' "$T_TMP/b/berth.log"
ok=$(python3 - "$BERTH_PORT" <<'PY'
import socket, sys
conns = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(300)]
for c in conns:
    c.sendall(b"GET /v2/ HTTP/1.1\r\nHost: berth\r\n\r\n")
ok = 0
for c in conns:
    c.settimeout(20)
    try:
        ok += c.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        pass
print(ok)
PY
)
t_eq "fleet: 300 connections from one address at once are all served" 300 "$ok"
berth_stop

# out of descriptors: a stored blob is a 503 (retryable), never BLOB_UNKNOWN, and not fetched again
printf 'http:\n  connections_per_ip: 0\n' >"$T_TMP/f.yml"
cat "$T_TMP/b/config.yml" "$T_TMP/f.yml" >"$T_TMP/b/config2.yml"
mkdir -p "$T_TMP/f" && ln -s "$T_TMP/b/data" "$T_TMP/f/data" && cp "$T_TMP/b/config2.yml" "$T_TMP/f/config.yml"
nofile_berth 40:40 "$T_TMP/f"
wan0=$(cat "$T_TMP/wan")
code=$(python3 - "$BERTH_PORT" "/v2/cut.io/org/big/blobs/$big" <<'PY'
import socket, sys
port = int(sys.argv[1])
a = socket.create_connection(("127.0.0.1", port))
idle = []
for _ in range(60):  # take every descriptor berth has left
    try:
        idle.append(socket.create_connection(("127.0.0.1", port), timeout=2))
    except OSError:
        break
import time
time.sleep(0.5)
a.sendall(f"GET {sys.argv[2]} HTTP/1.1\r\nHost: berth\r\n\r\n".encode())
a.settimeout(20)
try:
    print(a.recv(64).split(b" ")[1].decode())
except (OSError, IndexError):
    print("none")
PY
)
t_eq "descriptors exhausted: a stored blob answers 503" 503 "$code"
t_eq "descriptors exhausted: and is not fetched again" "$wan0" "$(cat "$T_TMP/wan")"
t_check "descriptors exhausted: logged" grep -q 'cannot open a stored blob' "$T_TMP/f/berth.log"
kill -KILL "$BERTH_PID" 2>/dev/null
wait "$BERTH_PID" 2>/dev/null
t_check "fsck clean after the faults" env REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY="$T_TMP/b/data" "$BERTH" fsck -c "$T_TMP/b/config.yml"
t_finish
