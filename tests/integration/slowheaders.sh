#!/usr/bin/env bash
# The header deadline (http.headertimeout), issue 6's "timeouts against slow clients": a
# connection that has not sent a complete request head in time is closed, whatever the address,
# so slow-header clients cannot hold connection slots; a slow request *body* is not cut, and other
# clients are served meanwhile.
. "$(dirname "$0")/../lib.sh"
cat >"$T_TMP/config.yml" <<YML
version: 0.1
http:
  headertimeout: 2s
YML
berth_start "$T_TMP" || { t_fail "berth starts"; t_finish; }
PORT=$BERTH_PORT
out=$(python3 - "$PORT" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
socks = []
for i in range(50):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(0.2)
    socks.append(s)
head = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 400
closed_at = [None] * len(socks)
t0 = time.time()
i = 0
while time.time() - t0 < 5 and None in closed_at:
    for k, s in enumerate(socks):
        if closed_at[k] is not None:
            continue
        try:
            s.send(head[i:i + 1])
            if s.recv(1) == b"":
                closed_at[k] = time.time() - t0
        except socket.timeout:
            pass
        except OSError:
            closed_at[k] = time.time() - t0
    i += 1
    time.sleep(0.05)
n = sum(c is not None for c in closed_at)
first = min((c for c in closed_at if c is not None), default=-1)
print(f"{n} {first:.1f}")
PY
)
n=${out%% *}
first=${out#* }
t_eq "50 slow-header connections are all closed by the server" 50 "$n"
t_check "... none before the deadline (first closed at ${first}s)" \
    python3 -c "import sys; sys.exit(0 if float('$first') >= 1.9 else 1)"
t_eq "a normal request is served" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/")"
# an idle keep-alive connection is closed after the deadline too; a slow body is not cut
out=$(python3 - "$PORT" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
s.settimeout(5)
first = s.recv(65536)
time.sleep(3)
s.settimeout(1)
try:
    idle = "closed" if s.recv(1) == b"" else "open"
except socket.timeout:
    idle = "open"
except OSError:
    idle = "closed"
# a request whose headers are quick and whose body takes 4 s
s2 = socket.create_connection(("127.0.0.1", port))
s2.sendall(b"POST /v2/slow/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
r = s2.recv(65536).decode()
loc = [l.split(": ", 1)[1] for l in r.split("\r\n") if l.lower().startswith("location:")][0]
body = b"x" * 40
s2.sendall(f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n".encode())
for i in range(40):
    s2.sendall(body[i:i + 1])
    time.sleep(0.1)
s2.settimeout(5)
status = s2.recv(65536).decode().split(" ")[1]
print(idle, status)
PY
)
t_eq "an idle keep-alive connection is closed after the deadline" closed "${out%% *}"
t_eq "a request with a slow body (4 s, headers in time) completes" 202 "${out#* }"
t_check "the closures are logged" grep -q "closed connections that sent no complete request in time" "$T_TMP/berth.log"
berth_stop
t_eq "berth exits cleanly" 0 $?
t_finish
