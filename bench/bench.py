#!/usr/bin/env python3
"""Side-by-side benchmark of berth, docker-registry (registry:2) and nginx. Run via bench/run.sh.

Every server runs pinned to CPU 0 (taskset -c 0) on a free 127.0.0.1 port; curl and wrk run
pinned to CPU 1. berth and docker-registry get the same registry:2-format config (only the
root directory and listen address differ); nginx serves the same bytes as static files at the
same URL paths. Server CPU time is utime+stime from /proc/PID/stat summed over the server's
process tree (nginx: master + worker); RSS likewise sums VmRSS/VmHWM over the tree.

Measurements (units: MiB = 2^20 bytes, GiB = 2^30 bytes):
  1. push: monolithic blob upload (POST /v2/bench/blobs/uploads/, then PUT <Location>&digest=
     with the body), wall time of both requests as curl reports it, best of 3 distinct random
     blobs. nginx: one PUT to its WebDAV module (no digest check, no POST).
  2. blob GET CPU: the server's CPU ms per GiB served while curl GETs the blob N times.
  3. manifest GET by tag: wrk -t1 -c32 with the OCI manifest Accept header.
  4. idle RSS (after start + one /v2/ request + 1 s) and peak RSS (VmHWM at the end).

Mirror section (after the above; those three servers are stopped first): a docker-registry
UPSTREAM on CPU 1 (with curl/wrk) holds bench/img:latest (config + one BLOB_MIB MiB random layer,
pushed with POST/PUT + PUT manifest). On CPU 0: berth with `mirrors: {up.example: {urls:
[upstream], revalidate: 5m}}` and docker-registry with `proxy: {remoteurl: upstream}`, each with
its own empty store (the rest of the config is SHARED_CONFIG).
  5. cold pull: curl -o /dev/null of the layer through each proxy, once, empty cache (berth via
     /v2/up.example/bench/img/blobs/<digest>), vs the same GET straight from the upstream (best
     of 2, warm page cache). The bytes are checked too: a second berth with an empty store is
     pulled cold into a file (tmpfs) and hashed; the first berth's and the registry proxy's
     copies are pulled warm and hashed.
  6. warm manifest GET by tag: one checked GET (body = the upstream's manifest bytes; berth via
     ?ns=up.example and the path-prefix form), then wrk -t1 -c32 on each proxy (berth via
     ?ns=); any non-2xx fails it. Upstream CPU during wrk shows who asks the upstream.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

MIB = 1 << 20
GIB = 1 << 30
CLK = os.sysconf("SC_CLK_TCK")
SERVER_CPU = "0"
LOAD_CPU = "1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

BERTH = os.environ.get("BERTH", "build/berth")
BLOB_MIB = int(os.environ.get("BENCH_BLOB_MIB", "256"))
GETS = int(os.environ.get("BENCH_GETS", "32"))
WRK_SECS = int(os.environ.get("BENCH_WRK_SECS", "10"))
JSON_OUT = os.environ.get("BENCH_JSON", "build/bench.json")
KEEP = os.environ.get("BENCH_KEEP", "") not in ("", "0")
STRICT = os.environ.get("BENCH_STRICT", "") not in ("", "0")
WAIT_QUIET = int(os.environ.get("BENCH_WAIT_QUIET", "30"))
PUSHES = 3
BUSY_WARNINGS = []
MIRROR_ERRORS = []  # failures of the mirror section as a whole (e.g. the upstream)

# The one config both registries read; @ROOTDIR@ and @ADDR@ are the only per-server changes.
# accesslog.disabled and the in-memory blob descriptor cache are registry:2 settings that keep
# the peer at its best (nginx runs with access_log off too); berth may ignore them.
SHARED_CONFIG = """version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: @ROOTDIR@
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: @ADDR@
"""

NGINX_CONFIG = """worker_processes 1;
daemon off;
user root;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path @DIR@/body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;
    types { }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:@PORT@;
        root @DIR@/www;
        location /v2/bench/manifests/ { default_type @OCI@; }
        location /push/ {
            dav_methods PUT;
            client_max_body_size 0;
            create_full_put_path on;
        }
    }
}
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cpu_busy_fraction(secs):
    """Share of all CPUs' time spent non-idle over secs (a quiet-machine check)."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    t0, i0 = sample()
    time.sleep(secs)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def cpu_user_system_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2]  # user + nice + system, all CPUs (not irq/softirq)


RUN_START = {}
DISK = {}


def disk_speed(src, dst):
    """MiB/s of writing src's bytes to dst and fdatasync'ing them: what a server that makes
    each blob durable before answering can reach at best on this disk."""
    with open(src, "rb") as f:
        data = f.read()
    os.sync()
    t0 = time.time()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fdatasync(fd)
    finally:
        os.close(fd)
    secs = time.time() - t0
    os.unlink(dst)
    return len(data) / MIB / secs


def mark_run_start():
    t = os.times()
    RUN_START.update(sys=cpu_user_system_ticks(), wall=time.time(),
                     own=t.user + t.system + t.children_user + t.children_system)


def foreign_cpu_fraction(servers):
    """Share of all CPUs' time used in user/system mode by anything but the servers, this
    script and its curl/wrk children since mark_run_start(): other work on the machine."""
    if not RUN_START:
        return None
    t = os.times()
    own = (t.user + t.system + t.children_user + t.children_system - RUN_START["own"]) * CLK
    own += sum(s.final_ticks for s in servers)
    used = cpu_user_system_ticks() - RUN_START["sys"]
    span = (time.time() - RUN_START["wall"]) * CLK * (os.cpu_count() or 1)
    return max(0.0, used - own) / span if span > 0 else None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_stat(pid):
    """(ppid, utime+stime ticks) of one process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
    return int(fields[1]), int(fields[11]) + int(fields[12])


def process_tree(pid):
    """pid and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(d)
            if st:
                children.setdefault(st[0], []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def curl(args, timeout=300):
    """Runs curl on the load CPU; returns its stdout (the -w output)."""
    cmd = ["taskset", "-c", LOAD_CPU, "curl", "-sS", "--max-time", str(timeout)] + args
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)
    if r.returncode != 0:
        raise RuntimeError(f"curl {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


class Server:
    def __init__(self, key, label, kind):
        self.key, self.label, self.kind = key, label, kind  # kind: "registry" | "static"
        self.proc = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.error = None
        self.m = {}  # metrics
        self.failed = set()  # phases that failed for this server
        self.final_ticks = 0  # CPU ticks of the server over its life, read before stopping

    @property
    def ok(self):
        return self.proc is not None and self.error is None and self.proc.poll() is None

    def start(self, cmd, logpath, cpu=SERVER_CPU):
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.logpath = logpath
        self.logf = open(logpath, "ab")
        try:
            self.proc = subprocess.Popen(["taskset", "-c", cpu] + cmd, stdout=self.logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        except OSError as e:
            self.error = f"cannot start: {e}"
            return
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                # the first request, also part of the idle-RSS protocol
                code = curl(["-o", "/dev/null", "-w", "%{http_code}", self.url + "/v2/"], 5)
                log(f"  {self.label}: up on {self.url} (pid {self.proc.pid}, /v2/ -> {code})")
                return
            except (OSError, RuntimeError):
                time.sleep(0.05)
        self.error = "did not start: " + self.log_tail()
        self.stop()

    def log_tail(self, n=600):
        return file_tail(self.logpath, n)

    def cpu_ticks(self):
        return sum((proc_stat(p) or (0, 0))[1] for p in process_tree(self.proc.pid))

    def mem_kib(self, field):
        return sum(status_kib(p, field) for p in process_tree(self.proc.pid))

    def affinity(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("Cpus_allowed_list:"):
                        return line.split()[1]
        except OSError:
            pass
        return "?"

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass

    def fail(self, phase, err):
        msg = f"{phase}: {err}"
        if self.proc is not None and self.proc.poll() is not None:
            msg += f" (server exited {self.proc.returncode}; log: {self.log_tail()})"
        log(f"  {self.label}: FAILED {msg}")
        self.failed.add(phase)
        self.m.setdefault("errors", []).append(msg)


def parse_headers(text):
    hdrs = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return hdrs


def upload_blob(srv, path, digest, tmp, repo="bench"):
    """Monolithic upload; returns (seconds, POST+PUT as curl timed them, http code)."""
    hdr = os.path.join(tmp, "post.hdr")
    out = curl(["-X", "POST", "-o", "/dev/null", "-D", hdr, "-w", "%{http_code} %{time_total}",
                f"{srv.url}/v2/{repo}/blobs/uploads/"]).split()
    if out[0] != "202":
        raise RuntimeError(f"POST uploads/ -> {out[0]}")
    with open(hdr) as f:
        loc = parse_headers(f.read()).get("location")
    if not loc:
        raise RuntimeError("POST uploads/ gave no Location")
    loc = urllib.parse.urljoin(srv.url + "/", loc)
    loc += ("&" if "?" in loc else "?") + "digest=" + digest
    put = curl(["-X", "PUT", "-T", path, "-o", "/dev/null", "-H", "Expect:",
                "-H", "Content-Type: application/octet-stream",
                "-w", "%{http_code} %{time_total}", loc]).split()
    if put[0] != "201":
        raise RuntimeError(f"PUT upload -> {put[0]}")
    return float(out[1]) + float(put[1])


def push_once(srv, path, digest, i, tmp):
    """One timed push; returns its wall seconds."""
    if srv.kind == "registry":
        secs = upload_blob(srv, path, digest, tmp)
        code = curl(["-I", "-o", "/dev/null", "-w", "%{http_code}",
                     f"{srv.url}/v2/bench/blobs/{digest}"])
        if code != "200":
            raise RuntimeError(f"HEAD pushed blob -> {code}")
        return secs
    out = curl(["-X", "PUT", "-T", path, "-o", "/dev/null", "-H", "Expect:",
                "-w", "%{http_code} %{time_total}", f"{srv.url}/push/blob{i}"]).split()
    if out[0] not in ("201", "204"):
        raise RuntimeError(f"PUT /push/blob{i} -> {out[0]}")
    return float(out[1])


def bench_push(servers, blobs, tmp):
    """Attempt i of every server before attempt i+1 of any, so drift hits all alike; each
    push starts with no dirty pages left over from the previous one."""
    size = os.path.getsize(blobs[0][0])
    for s in servers:
        s.push_times, s.push_ticks = [], 0
    for i, (path, digest) in enumerate(blobs):
        for s in servers:
            if not s.ok or "push" in s.failed:
                continue
            os.sync()
            t0 = s.cpu_ticks()
            try:
                s.push_times.append(push_once(s, path, digest, i, tmp))
            except Exception as e:  # noqa: BLE001
                s.fail("push", e)
                continue
            s.push_ticks += s.cpu_ticks() - t0
    for s in servers:
        if s.push_times and "push" not in s.failed:
            s.m["push_times_s"] = [round(t, 4) for t in s.push_times]
            s.m["push_mib_s"] = size / MIB / min(s.push_times)
            s.m["push_cpu_ms_per_gib"] = (s.push_ticks * 1000 / CLK
                                          / (len(s.push_times) * size / GIB))
            s.m["push_cpu_busy_pct"] = s.push_ticks * 100 / CLK / sum(s.push_times)
    os.sync()


def get_blob(srv, url, size):
    out = curl(["-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}",
                url]).split()
    if out[0] != "200" or int(out[1]) != size:
        raise RuntimeError(f"GET blob -> {out[0]}, {out[1]} bytes (want 200, {size})")
    return float(out[2])


# The same code measured 0.88-1.25x nginx's blob GET CPU from run to run with 16 GETs in 4 rounds
# (the machine's own drift: one process's CPU for the same 1 GiB varies by 10% round to round);
# 32 GETs in 16 rounds of 2, each server's round right after the others', gave 0.98-1.13x.
GET_ROUNDS = 16


def bench_get(servers, digest, size):
    """GETS GETs per server, in GET_ROUNDS interleaved rounds, after one untimed warm-up."""
    live = []
    for s in servers:
        if s.ok:
            try:
                get_blob(s, f"{s.url}/v2/bench/blobs/{digest}", size)
                s.get_ticks, s.get_secs, s.get_n = 0, 0.0, 0
                live.append(s)
            except Exception as e:  # noqa: BLE001
                s.fail("blob GET", e)
    per_round = [GETS // GET_ROUNDS + (1 if r < GETS % GET_ROUNDS else 0)
                 for r in range(GET_ROUNDS)]
    for n in per_round:
        for s in live:
            if "blob GET" in s.failed or not s.ok:
                continue
            url = f"{s.url}/v2/bench/blobs/{digest}"
            t0 = s.cpu_ticks()
            try:
                for _ in range(n):
                    s.get_secs += get_blob(s, url, size)
                    s.get_n += 1
            except Exception as e:  # noqa: BLE001
                s.fail("blob GET", e)
                continue
            s.get_ticks += s.cpu_ticks() - t0
    for s in live:
        if "blob GET" not in s.failed and s.get_n:
            total = s.get_n * size
            s.m["get_count"] = s.get_n
            s.m["get_cpu_ticks"] = s.get_ticks
            s.m["get_cpu_ms_per_gib"] = s.get_ticks * 1000 / CLK / (total / GIB)
            s.m["get_mib_s"] = total / MIB / s.get_secs


def put_small_blob(srv, data, tmp, name, repo="bench"):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    upload_blob(srv, path, digest, tmp, repo)
    return digest


def make_manifest(config, layer):
    m = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + hashlib.sha256(layer).hexdigest(), "size": len(layer)}],
        "annotations": {"org.opencontainers.image.title": "berth-bench"},
    }
    return json.dumps(m, indent=3).encode()


def run_wrk(url, secs):
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c32", f"-d{secs}s", "--latency",
           "-H", f"Accept: {OCI_MANIFEST}", url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 30)
    if r.returncode != 0:
        raise RuntimeError(f"wrk exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def wrk_value(text, pattern, conv=float, default=None):
    m = re.search(pattern, text)
    return conv(m.group(1)) if m else default


def latency_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)$", s)
    if not m:
        return None
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def manifest_setup(srv, manifest, config, layer, tmp):
    """Pushes config + layer + manifest (registries) and checks that the server answers the
    tag with exactly the manifest's bytes; nginx has them as a static file already."""
    url = f"{srv.url}/v2/bench/manifests/latest"
    if srv.kind == "registry":
        put_small_blob(srv, config, tmp, "config.json")
        put_small_blob(srv, layer, tmp, "layer.bin")
        mpath = os.path.join(tmp, "manifest.json")
        with open(mpath, "wb") as f:
            f.write(manifest)
        code = curl(["-X", "PUT", "--data-binary", "@" + mpath, "-o", "/dev/null",
                     "-H", f"Content-Type: {OCI_MANIFEST}", "-w", "%{http_code}", url])
        if code != "201":
            raise RuntimeError(f"PUT manifest -> {code}")
    body = os.path.join(tmp, "got.json")
    out = curl(["-o", body, "-H", f"Accept: {OCI_MANIFEST}", "-w",
                "%{http_code} %{content_type}", url]).split(None, 1)
    with open(body, "rb") as f:
        got = f.read()
    if out[0] != "200" or got != manifest:
        raise RuntimeError(f"GET manifest -> {out[0]}, body "
                           f"{'matches' if got == manifest else 'differs'}")
    ctype = out[1].strip() if len(out) > 1 else ""
    if ctype.split(";")[0] != OCI_MANIFEST:
        srv.m.setdefault("warnings", []).append(f"manifest Content-Type is {ctype!r}")
    run_wrk(url, 1)  # warm-up
    srv.wrk = {"reqs": 0, "secs": 0.0, "ticks": 0, "non2xx": 0, "p50": [], "p99": [],
               "sockerr": []}


WRK_ROUNDS = 2


def bench_manifest(servers, manifest, config, layer, tmp):
    """wrk against each server in WRK_ROUNDS interleaved rounds of WRK_SECS/WRK_ROUNDS s."""
    live = []
    for s in servers:
        if s.ok:
            try:
                manifest_setup(s, manifest, config, layer, tmp)
                live.append(s)
            except Exception as e:  # noqa: BLE001
                s.fail("manifest GET", e)
    os.sync()
    wrk_rounds(live, "manifest GET", lambda s: f"{s.url}/v2/bench/manifests/latest")
    for s in live:
        w = wrk_summary(s, "manifest GET")
        if w is None:
            continue
        s.m["manifest_cpu_pct"] = w["ticks"] * 100 / CLK / w["secs"]
        if w["non2xx"]:
            s.m.setdefault("warnings", []).append(f"{w['non2xx']} non-2xx manifest responses")
            s.m["manifest_rps"] = None  # an error flood is not throughput
        for e in w["sockerr"]:
            s.m.setdefault("warnings", []).append("wrk " + e)


# ---- mirror: berth as a pull-through cache vs docker-registry's proxy mode -----------------

MIRROR_NS = "up.example"
MIRROR_REPO = "bench/img"
MIRROR_REVALIDATE = "5m"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MIB)
            if not b:
                break
            h.update(b)
    return "sha256:" + h.hexdigest()


def fetch_blob(url, size, out="/dev/null"):
    """One GET of a blob into out; returns curl's wall seconds (time_total)."""
    r = curl(["-o", out, "-w", "%{http_code} %{size_download} %{time_total}", url]).split()
    if r[0] != "200" or int(r[1]) != size:
        raise RuntimeError(f"GET {url} -> {r[0]}, {r[1]} bytes (want 200, {size})")
    return float(r[2])


def fetch_manifest(url, tmp):
    """GET of a manifest with the OCI Accept header; returns its bytes (raises on non-200)."""
    body = os.path.join(tmp, "mirror-got.json")
    code = curl(["-o", body, "-H", f"Accept: {OCI_MANIFEST}", "-w", "%{http_code}", url])
    with open(body, "rb") as f:
        got = f.read()
    if code != "200":
        raise RuntimeError(f"GET {url} -> {code}: {got[:200]!r}")
    return got


def wrk_rounds(live, phase, url_of, up=None):
    """WRK_ROUNDS rounds of wrk on each live server (interleaved, so drift hits all alike),
    adding requests, seconds, server CPU ticks (and the upstream's when up is given), non-2xx
    counts, latencies and socket errors into s.wrk."""
    secs = max(1, round(WRK_SECS / WRK_ROUNDS))
    for _ in range(WRK_ROUNDS):
        for s in live:
            if phase in s.failed or not s.ok:
                continue
            w = s.wrk
            try:
                t0, u0 = s.cpu_ticks(), up.cpu_ticks() if up else 0
                r = parse_wrk(run_wrk(url_of(s), secs))
                w["ticks"] += s.cpu_ticks() - t0
                if up:
                    w["up_ticks"] += up.cpu_ticks() - u0
            except Exception as e:  # noqa: BLE001
                s.fail(phase, e)
                continue
            for k in ("reqs", "secs", "non2xx"):
                w[k] += r[k]
            w["p50"].append(r["p50"])
            w["p99"].append(r["p99"])
            if r["sockerr"]:
                w["sockerr"].append(r["sockerr"])


def wrk_summary(s, phase):
    """The manifest figures both wrk sections report, from the sums wrk_rounds made; returns
    s.wrk for the section's own figures, or None when the phase failed or measured nothing."""
    w = s.wrk
    if phase in s.failed or not w["secs"]:
        return None
    s.m["manifest_requests"] = w["reqs"]
    s.m["manifest_rps"] = w["reqs"] / w["secs"]
    s.m["manifest_non2xx"] = w["non2xx"]
    p50 = [v for v in w["p50"] if v is not None]
    p99 = [v for v in w["p99"] if v is not None]
    s.m["manifest_p50_ms"] = sum(p50) / len(p50) if p50 else None
    s.m["manifest_p99_ms"] = max(p99) if p99 else None  # worst round
    s.m["manifest_cpu_us_per_req"] = w["ticks"] * 1e6 / CLK / w["reqs"] if w["reqs"] else None
    return w


def parse_wrk(text):
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", text)
    if not m:
        raise RuntimeError("cannot parse wrk output: " + text)
    return {"reqs": int(m.group(1)),
            "secs": float(m.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[m.group(3)],
            "non2xx": wrk_value(text, r"Non-2xx or 3xx responses:\s+(\d+)", int, 0),
            "p50": latency_ms(wrk_value(text, r"\s50%\s+(\S+)", str, "")),
            "p99": latency_ms(wrk_value(text, r"\s99%\s+(\S+)", str, "")),
            "sockerr": (re.search(r"Socket errors:.*", text) or [None])[0]}


def mirror_configs(tmp, up, proxies):
    """Writes the upstream's config (SHARED_CONFIG as is) and the two proxies' (SHARED_CONFIG
    plus berth's mirrors: section / registry:2's proxy: section)."""
    upurl = up.url
    extra = {
        "upstream": "",
        "berth_mirror": (f"mirrors:\n  {MIRROR_NS}:\n    urls: [{upurl}]\n"
                         f"    revalidate: {MIRROR_REVALIDATE}\n"),
        "berth_verify": (f"mirrors:\n  {MIRROR_NS}:\n    urls: [{upurl}]\n"
                         f"    revalidate: {MIRROR_REVALIDATE}\n"),
        "registry_proxy": f"proxy:\n  remoteurl: {upurl}\n",
    }
    for srv in [up] + proxies:
        d = os.path.join(tmp, "mirror", srv.key)
        os.makedirs(os.path.join(d, "data"))
        srv.config = os.path.join(d, "config.yml")
        with open(srv.config, "w") as f:
            f.write(SHARED_CONFIG.replace("@ROOTDIR@", os.path.join(d, "data"))
                    .replace("@ADDR@", f"127.0.0.1:{srv.port}") + extra[srv.key])


def bench_mirror(tmp, binary, ms):
    """ms: dict of Servers upstream, berth_mirror, berth_verify, registry_proxy (not started).
    Fills ms[...].m and returns the direct-pull metrics."""
    t_start = time.time()
    up, bm, bv, rp = ms["upstream"], ms["berth_mirror"], ms["berth_verify"], ms["registry_proxy"]
    direct = {}
    size = BLOB_MIB * MIB
    # a blob no server has seen: berth keeps one content-addressed store for all repositories
    path = os.path.join(tmp, "mirror-blob")
    data = os.urandom(size)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(path, "wb") as f:
        f.write(data)
    del data
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [digest]}}).encode()
    m = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest, "size": size}],
        "annotations": {"org.opencontainers.image.title": "berth-bench-mirror"},
    }
    manifest = json.dumps(m, indent=3).encode()
    mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    direct["blob_digest"], direct["manifest_digest"] = digest, mdigest

    mirror_configs(tmp, up, [bm, bv, rp])
    log(f"bench: mirror: upstream docker-registry on CPU {LOAD_CPU}")
    up.start(["docker-registry", "serve", up.config], os.path.join(tmp, "upstream.log"),
             cpu=LOAD_CPU)
    if not up.ok:
        raise RuntimeError(f"upstream: {up.error}")
    up.m["cpus_allowed"] = up.affinity()
    put_small_blob(up, config, tmp, "mirror-config.json", MIRROR_REPO)
    upload_blob(up, path, digest, tmp, MIRROR_REPO)
    mpath = os.path.join(tmp, "mirror-manifest.json")
    with open(mpath, "wb") as f:
        f.write(manifest)
    code = curl(["-X", "PUT", "--data-binary", "@" + mpath, "-o", "/dev/null",
                 "-H", f"Content-Type: {OCI_MANIFEST}", "-w", "%{http_code}",
                 f"{up.url}/v2/{MIRROR_REPO}/manifests/latest"])
    if code != "201":
        raise RuntimeError(f"upstream: PUT manifest -> {code}")
    if fetch_manifest(f"{up.url}/v2/{MIRROR_REPO}/manifests/latest", tmp) != manifest:
        raise RuntimeError("upstream: GET manifest differs from the pushed bytes")
    os.unlink(mpath)

    log(f"bench: mirror: berth (mirrors: {MIRROR_NS}) and docker-registry (proxy: remoteurl) "
        f"on CPU {SERVER_CPU}")
    bm.start([binary, "serve", "-c", bm.config], os.path.join(tmp, "berth_mirror.log"))
    rp.start(["docker-registry", "serve", rp.config], os.path.join(tmp, "registry_proxy.log"))
    time.sleep(0.5)
    for s in (bm, rp):
        if s.ok:
            s.m["idle_rss_mib"] = s.mem_kib("VmRSS") / 1024
            s.m["cpus_allowed"] = s.affinity()
        elif s.error:
            s.fail("start", s.error)

    # 1. direct pull from the upstream (its page cache is warm from the push), best of 2
    os.sync()
    direct_url = f"{up.url}/v2/{MIRROR_REPO}/blobs/{digest}"
    times = [fetch_blob(direct_url, size) for _ in range(2)]
    direct["cold_pull_times_s"] = [round(t, 4) for t in times]
    direct["cold_pull_s"] = min(times)
    direct["cold_pull_mib_s"] = size / MIB / min(times)

    # 1b. cold pulls through the proxies, curl -o /dev/null (each proxy fetches once)
    blob_urls = {bm.key: f"{bm.url}/v2/{MIRROR_NS}/{MIRROR_REPO}/blobs/{digest}",
                 bv.key: f"{bv.url}/v2/{MIRROR_NS}/{MIRROR_REPO}/blobs/{digest}",
                 rp.key: f"{rp.url}/v2/{MIRROR_REPO}/blobs/{digest}"}
    for s in (bm, rp):
        if not s.ok:
            continue
        os.sync()
        t0, u0 = s.cpu_ticks(), up.cpu_ticks()
        try:
            secs = fetch_blob(blob_urls[s.key], size)
        except Exception as e:  # noqa: BLE001
            s.fail("mirror cold pull", e)
            continue
        s.m["cold_pull_s"] = secs
        s.m["cold_pull_mib_s"] = size / MIB / secs
        s.m["cold_cpu_ms_per_gib"] = (s.cpu_ticks() - t0) * 1000 / CLK / (size / GIB)
        s.m["cold_upstream_cpu_ms"] = (up.cpu_ticks() - u0) * 1000 / CLK
    os.sync()

    # 3. correctness of cold-pulled bytes: the timed pulls went to /dev/null, so a second,
    # untimed cold pull through a fresh berth (same config, empty store) goes to a file
    # (tmpfs when there is room), and so does one through the registry proxy's now warm cache
    # and berth's (the committed copy).
    sinkdir = "/dev/shm" if os.path.isdir("/dev/shm") else tmp
    try:
        st = os.statvfs(sinkdir)
        if st.f_bavail * st.f_frsize < 2 * size:
            sinkdir = tmp
    except OSError:
        sinkdir = tmp
    sink = os.path.join(sinkdir, f"berth-bench-mirror-{os.getpid()}.blob")
    bv.start([binary, "serve", "-c", bv.config], os.path.join(tmp, "berth_verify.log"))
    try:
        for s, what, key in ((bv, "cold", "cold_sha256_ok"), (bm, "warm", "warm_sha256_ok"),
                             (rp, "warm", "warm_sha256_ok")):
            if not s.ok:
                continue
            try:
                fetch_blob(blob_urls[s.key], size, sink)
                got = sha256_file(sink)
            except Exception as e:  # noqa: BLE001
                s.fail(f"mirror {what} pull", e)
                continue
            s.m[key] = got == digest
            if got != digest:
                s.fail(f"mirror {what} pull", f"bytes hash to {got}, want {digest}")
            os.unlink(sink)
    finally:
        if os.path.exists(sink):
            os.unlink(sink)
    if bv.ok:
        bm.m["cold_sha256_ok"] = bv.m.get("cold_sha256_ok")
        bv.final_ticks = bv.cpu_ticks()
        bv.stop()

    # 2. manifest by tag: one warming request (checked byte for byte), then wrk
    murls = {bm.key: f"{bm.url}/v2/{MIRROR_REPO}/manifests/latest?ns={MIRROR_NS}",
             rp.key: f"{rp.url}/v2/{MIRROR_REPO}/manifests/latest"}
    live = []
    for s in (bm, rp):
        if not s.ok:
            continue
        try:
            got = fetch_manifest(murls[s.key], tmp)
            gd = "sha256:" + hashlib.sha256(got).hexdigest()
            s.m["manifest_sha256_ok"] = gd == mdigest
            if gd != mdigest:
                raise RuntimeError(f"manifest body hashes to {gd}, upstream's is {mdigest}")
            if s is bm:  # the path-prefix form names the same content
                alt = f"{bm.url}/v2/{MIRROR_NS}/{MIRROR_REPO}/manifests/latest"
                if fetch_manifest(alt, tmp) != manifest:
                    raise RuntimeError(f"GET {alt}: body differs from the upstream's manifest")
            s.wrk = {"reqs": 0, "secs": 0.0, "ticks": 0, "up_ticks": 0, "non2xx": 0,
                     "p50": [], "p99": [], "sockerr": []}
            live.append(s)
        except Exception as e:  # noqa: BLE001
            s.fail("mirror manifest GET", e)
    os.sync()
    wrk_rounds(live, "mirror manifest GET", lambda s: murls[s.key], up)
    for s in live:
        w = wrk_summary(s, "mirror manifest GET")
        if w is None:
            continue
        s.m["manifest_upstream_cpu_pct"] = w["up_ticks"] * 100 / CLK / w["secs"]
        if w["non2xx"]:
            s.fail("mirror manifest GET", f"{w['non2xx']} non-2xx responses under wrk")
            s.m["manifest_rps"] = None
        for e in w["sockerr"]:
            s.m.setdefault("warnings", []).append("mirror wrk " + e)

    for s in (up, bm, rp):
        if s.ok:
            s.m["peak_rss_mib"] = s.mem_kib("VmHWM") / 1024
            s.final_ticks = s.cpu_ticks()
        elif s.proc is not None and s.error is None:
            s.error = f"exited {s.proc.returncode} during the mirror run: {s.log_tail()}"
    direct["section_elapsed_s"] = round(time.time() - t_start, 1)
    log(f"bench: mirror section took {direct['section_elapsed_s']} s")
    return direct


MIRROR_ROWS = [
    # (key, label, digits)
    ("cold_pull_s", "cold blob pull s (curl)", 3),
    ("cold_pull_mib_s", "cold blob pull MiB/s", 0),
    ("cold_cpu_ms_per_gib", "cold pull proxy CPU ms/GiB", 0),
    ("manifest_rps", "manifest GET req/s (warm)", 0),
    ("manifest_p99_ms", "manifest GET p99 ms", 2),
    ("manifest_cpu_us_per_req", "manifest proxy CPU us/req", 1),
    ("manifest_upstream_cpu_pct", "upstream CPU % during wrk", 1),
    ("peak_rss_mib", "peak RSS MiB", 2),
]


def wait_quiet(what, limit):
    """Waits up to WAIT_QUIET s for other CPU load (above limit) to stop; returns a warning
    for the results when it did not, else None."""
    busy = cpu_busy_fraction(1.0)
    deadline = time.time() + WAIT_QUIET
    if busy > limit and WAIT_QUIET > 0:
        log(f"bench: {what}machine {busy:.0%} busy; waiting up to {WAIT_QUIET} s for it to settle")
    while busy > limit and time.time() < deadline:
        busy = cpu_busy_fraction(2.0)
    if busy > limit:
        return f"machine was {busy:.0%} busy before the {what or 'run'}: figures are noisy"
    return None


def file_tail(path, n):
    """The last n bytes of a log file on one line ("" when unreadable)."""
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace").strip().replace("\n", " | ")
    except OSError:
        return ""


def json_out_arg(argv):
    """The results file of a section run alone: --json PATH, --no-json (None), else JSON_OUT."""
    if "--no-json" in argv:
        return None
    if "--json" in argv:
        return argv[argv.index("--json") + 1]
    return JSON_OUT


def merge_json(path, key, res):
    """Writes res under key into the results file (keeping the other sections' results)."""
    doc = {}
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        pass
    doc[key] = res
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.rename(path + ".tmp", path)
    print(f"{key} results merged into {path}")


def print_table(head, table):
    widths = [max(len(row[i]) for row in [head] + table) for i in range(len(head))]
    line = lambda row: "  ".join(  # noqa: E731
        (c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])) for i, c in enumerate(row))
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print(line(row))


def fmt(v, nd=1):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if v >= 100:
            return f"{v:,.0f}"
        return f"{v:.{nd}f}" if v >= 1 else f"{v:.{max(nd, 2)}f}"
    return str(v)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def exit_on_signals():
    """SIGTERM and SIGINT raise SystemExit, so a section's finally blocks stop its servers and
    remove its temp dir."""
    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def main():
    started = time.time()
    tmp = tempfile.mkdtemp(prefix="berth-bench.")
    servers = []
    exit_on_signals()
    try:
        return run(tmp, servers, started)
    finally:
        for s in servers:
            s.stop()
        if KEEP:
            log(f"bench: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(tmp, servers, started):
    berth = Server("berth", "berth", "registry")
    reg = Server("registry", "docker-registry", "registry")
    ngx = Server("nginx", "nginx", "static")
    servers += [berth, reg, ngx]

    # ---- test data: PUSHES distinct random blobs (so no server can skip a known digest)
    # Servers and load generators inherit this: other work on the machine then disturbs the
    # figures less (all three servers alike). Needs root; without it, runs at normal priority.
    try:
        os.nice(-10)
    except OSError:
        pass
    warning = wait_quiet("", 0.05)
    if warning:
        BUSY_WARNINGS.append(warning)
        log("bench: warning: " + warning)
    mark_run_start()
    log(f"bench: temp dir {tmp}; generating {PUSHES} x {BLOB_MIB} MiB random blobs")
    size = BLOB_MIB * MIB
    rand = os.urandom(size)
    blobs = []
    for i in range(PUSHES):
        path = os.path.join(tmp, f"blob{i}")
        data = memoryview(rand)
        head = hashlib.sha256(f"berth-bench-{i}-{time.time()}".encode()).digest()
        h = hashlib.sha256(head)
        h.update(data[len(head):])
        with open(path, "wb") as f:
            f.write(head)
            f.write(data[len(head):])
        blobs.append((path, "sha256:" + h.hexdigest()))
    del rand, data
    DISK["fdatasync_mib_s"] = disk_speed(blobs[0][0], os.path.join(tmp, "disk.test"))
    log(f"bench: temp dir's disk writes {DISK['fdatasync_mib_s']:.0f} MiB/s (write + fdatasync)")
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = os.urandom(4096)
    manifest = make_manifest(config, layer)

    # ---- configs and servers
    base = os.path.join(tmp, "config.yml")
    with open(base, "w") as f:
        f.write(SHARED_CONFIG)
    for srv in (berth, reg):
        d = os.path.join(tmp, srv.key)
        os.makedirs(os.path.join(d, "data"))
        cfg = os.path.join(d, "config.yml")
        with open(cfg, "w") as f:
            f.write(SHARED_CONFIG.replace("@ROOTDIR@", os.path.join(d, "data"))
                    .replace("@ADDR@", f"127.0.0.1:{srv.port}"))
        srv.config = cfg
    nd = os.path.join(tmp, "nginx")
    for sub in ("www/push", "www/v2/bench/blobs", "www/v2/bench/manifests", "body"):
        os.makedirs(os.path.join(nd, sub))
    with open(os.path.join(nd, "nginx.conf"), "w") as f:
        f.write(NGINX_CONFIG.replace("@DIR@", nd).replace("@PORT@", str(ngx.port))
                .replace("@OCI@", OCI_MANIFEST))
    shutil.copyfile(blobs[0][0], os.path.join(nd, "www/v2/bench/blobs", blobs[0][1]))
    with open(os.path.join(nd, "www/v2/bench/manifests/latest"), "wb") as f:
        f.write(manifest)

    log("bench: starting servers on CPU " + SERVER_CPU)
    # run a private copy: a rebuild of build/berth mid-run must not change the subject
    binary = os.path.join(tmp, "berth.bin")
    if os.access(BERTH, os.X_OK):
        shutil.copy2(BERTH, binary)
        berth.start([binary, "serve", "-c", berth.config],
                    os.path.join(tmp, "berth.log"))
    else:
        berth.error = f"{BERTH} not built"
    reg.start(["docker-registry", "serve", reg.config], os.path.join(tmp, "registry.log"))
    ngx.start(["nginx", "-p", nd, "-c", os.path.join(nd, "nginx.conf")],
              os.path.join(tmp, "nginx.log"))
    for s in servers:
        if s.error:
            log(f"  {s.label}: {s.error}")

    time.sleep(1)
    for s in servers:
        if s.ok:
            s.m["idle_rss_mib"] = s.mem_kib("VmRSS") / 1024
            s.m["cpus_allowed"] = s.affinity()
            s.m["processes"] = len(process_tree(s.proc.pid))

    log("bench: push")
    bench_push(servers, blobs, tmp)
    log("bench: blob GET")
    bench_get(servers, blobs[0][1], size)
    log("bench: manifest GET")
    bench_manifest(servers, manifest, config, layer, tmp)
    for s in servers:
        if s.ok:
            s.m["peak_rss_mib"] = s.mem_kib("VmHWM") / 1024
            s.final_ticks = s.cpu_ticks()
        elif s.proc is not None and s.error is None:
            s.error = f"exited {s.proc.returncode} during the run: {s.log_tail()}"

    # ---- mirror section: the three servers above are done; CPU 0 is left to the proxies
    for s in (berth, reg, ngx):
        s.stop()
    mirror = {"upstream": Server("upstream", "upstream docker-registry", "registry"),
              "berth_mirror": Server("berth_mirror", "berth (mirror)", "registry"),
              "berth_verify": Server("berth_verify", "berth (mirror, verify pull)", "registry"),
              "registry_proxy": Server("registry_proxy", "docker-registry (proxy)", "registry")}
    servers += mirror.values()
    direct = {}
    if berth.error or not os.access(binary, os.X_OK):
        MIRROR_ERRORS.append("mirror section skipped: berth did not run")
    else:
        try:
            direct = bench_mirror(tmp, binary, mirror)
        except Exception as e:  # noqa: BLE001
            MIRROR_ERRORS.append(f"mirror section: {e}")
            log("bench: mirror: FAILED " + MIRROR_ERRORS[-1])
        for s in mirror.values():
            if s.ok and not s.final_ticks:
                s.final_ticks = s.cpu_ticks()
            s.stop()

    # ---- Helm section: berth alone on CPU 0 (ChartMuseum is not packaged; its published
    # figures are printed beside)
    helm = {}
    if not berth.error and os.access(binary, os.X_OK):
        try:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import helm_bench
            helm = helm_bench.run(tmp, binary, SERVER_CPU, LOAD_CPU, log)
        except Exception as e:  # noqa: BLE001
            helm = {"errors": [f"helm section: {e}"]}
            log("bench: helm: FAILED " + helm["errors"][0])
    return report(servers[:3], mirror, direct, started, helm)


def report(servers, mirror, direct, started, helm):
    berth, reg, ngx = servers
    bm, rp, up = mirror["berth_mirror"], mirror["registry_proxy"], mirror["upstream"]
    rows = [
        # (key, label, digits, informational?)
        ("push_mib_s", "push MiB/s (best of 3)", 0),
        ("push_cpu_ms_per_gib", "push server CPU ms/GiB", 0),
        ("push_cpu_busy_pct", "push server CPU busy %", 0),
        ("get_cpu_ms_per_gib", "blob GET server CPU ms/GiB", 0),
        ("get_mib_s", "blob GET MiB/s (curl)", 0),
        ("manifest_rps", "manifest GET req/s", 0),
        ("manifest_p99_ms", "manifest GET p99 ms", 2),
        ("manifest_cpu_pct", "manifest server CPU %", 0),
        ("manifest_cpu_us_per_req", "manifest server CPU us/req", 1),
        ("idle_rss_mib", "idle RSS MiB", 2),
        ("peak_rss_mib", "peak RSS MiB", 2),
    ]
    head = ["", "berth", "docker-registry", "nginx", "berth/registry", "berth/nginx"]
    table = []
    for key, label, nd in rows:
        b, r, n = (s.m.get(key) for s in servers)
        table.append([label, fmt(b, nd), fmt(r, nd), fmt(n, nd),
                      fmt(ratio(b, r), 2), fmt(ratio(b, n), 2)])

    print()
    print(f"berth benchmark: {BLOB_MIB} MiB blob, {GETS} GETs, wrk -t1 -c32 -d{WRK_SECS}s; "
          f"servers on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}")
    print_table(head, table)
    print("notes: nginx push is a WebDAV PUT without digest check; nginx CPU/RSS are "
          "master+worker.")
    if DISK:
        print(f"       the temp dir's disk takes {DISK['fdatasync_mib_s']:.0f} MiB/s of "
              "write + fdatasync (a bound for a server that fsyncs blobs).")

    mhead = ["mirror", "berth", "docker-registry", "direct", "berth/registry", "berth/direct"]
    mtable = []
    for key, label, nd in MIRROR_ROWS:
        b, r, d = bm.m.get(key), rp.m.get(key), direct.get(key)
        mtable.append([label, fmt(b, nd), fmt(r, nd), fmt(d, nd),
                       fmt(ratio(b, r), 2), fmt(ratio(b, d), 2)])
    print()
    print(f"mirror (pull-through cache): upstream docker-registry on CPU {LOAD_CPU} with the load; "
          f"berth (mirrors: {MIRROR_NS}, revalidate {MIRROR_REVALIDATE}) and docker-registry "
          f"(proxy: remoteurl) on CPU {SERVER_CPU}")
    print_table(mhead, mtable)
    print(f"notes: cold pull = first GET of a {BLOB_MIB} MiB layer (curl -o /dev/null, empty cache); "
          "direct = the same GET from the")
    print("       upstream, best of 2, warm page cache. Manifest by tag: docker-registry's proxy "
          "asks the upstream every time;")
    print("       berth answers from its store until the tag is due for revalidation.")

    print()
    print(f"helm chart repository: berth on CPU {SERVER_CPU}, clients on CPU {LOAD_CPU}; "
          f"{helm.get('uploads', 0)} chart versions uploaded with POST /api/charts by 8 clients")
    hrows = [
        ("uploads/s (8 clients, 10,000 versions)", helm.get("uploads_per_s"), "5 under load (#711)"),
        ("index.yaml GET ms, first after loading", helm.get("index_first_get_ms"),
         "minutes at 7,000 charts (#327)"),
        ("index.yaml GET ms, median (unchanged)", helm.get("index_get_median_ms"),
         "> 10,000 at 5,000 charts (#332)"),
        ("index.yaml GET ms, p99 (unchanged)", helm.get("index_get_p99_ms"), ""),
        ("index.yaml GET ms, median during uploads", helm.get("load_index_get_median_ms"), ""),
        ("index.yaml GET ms, p99 during uploads", helm.get("load_index_get_p99_ms"), ""),
        ("uploads/s while the index is read", helm.get("load_uploads_per_s"), ""),
        ("index.yaml bytes", helm.get("index_bytes"), ""),
        ("peak RSS MiB", helm.get("peak_rss_mib"), ""),
    ]
    print_table(["helm", "berth", "ChartMuseum (published)"],
                [[label, fmt(v, 2), pub] for label, v, pub in hrows])
    print("notes: ChartMuseum is not packaged for Debian, so it cannot run beside berth here; "
          "its figures are the ones its")
    print("       users published (issue numbers in its tracker). 'during uploads': 4 clients "
          "upload 500 more charts while")
    print("       a fifth reads index.yaml in a loop, so most reads follow a change.")

    b = berth.m
    targets = [
        ("push MiB/s berth >= 3x docker-registry",
         ratio(b.get("push_mib_s"), reg.m.get("push_mib_s")), ">=", 3.0, "x"),
        ("blob GET CPU/GiB berth <= 1.2x nginx",
         ratio(b.get("get_cpu_ms_per_gib"), ngx.m.get("get_cpu_ms_per_gib")), "<=", 1.2, "x"),
        ("manifest req/s berth >= 20x docker-registry",
         ratio(b.get("manifest_rps"), reg.m.get("manifest_rps")), ">=", 20.0, "x"),
        ("manifest req/s berth >= 0.5x nginx",
         ratio(b.get("manifest_rps"), ngx.m.get("manifest_rps")), ">=", 0.5, "x"),
        ("idle RSS berth < 4 MiB", b.get("idle_rss_mib"), "<", 4.0, " MiB"),
        ("mirror cold pull berth <= 1.3x direct",
         ratio(bm.m.get("cold_pull_s"), direct.get("cold_pull_s")), "<=", 1.3, "x"),
        ("mirror manifest req/s berth >= 50x registry proxy",
         ratio(bm.m.get("manifest_rps"), rp.m.get("manifest_rps")), ">=", 50.0, "x"),
        ("helm uploads/s >= 200", helm.get("uploads_per_s"), ">=", 200.0, "/s"),
        ("helm index.yaml GET (10,000 versions) < 50 ms, median",
         helm.get("index_get_median_ms"), "<", 50.0, " ms"),
        ("helm index.yaml GET during uploads < 50 ms, median",
         helm.get("load_index_get_median_ms"), "<", 50.0, " ms"),
    ]
    results = []
    print()
    print("targets:")
    for name, value, op, goal, unit in targets:
        if value is None:
            ok = False
        else:
            ok = {">=": value >= goal, "<=": value <= goal, "<": value < goal}[op]
        shown = "n/a" if value is None else f"{value:.2f}{unit}"
        print(f"  {'PASS' if ok else 'MISS'}  {name:50s} {shown}")
        results.append({"target": name, "value": value, "op": op, "goal": goal, "pass": ok})
    problems = list(MIRROR_ERRORS) + [f"helm: {e}" for e in helm.get("errors", [])]
    for s in servers + list(mirror.values()):
        if s.error:
            problems.append(f"{s.label}: {s.error}")
        for e in s.m.get("errors", []):
            problems.append(f"{s.label}: {e}")
        for w in s.m.get("warnings", []):
            problems.append(f"{s.label}: warning: {w}")
    problems += BUSY_WARNINGS
    foreign = foreign_cpu_fraction(servers + list(mirror.values()))
    if foreign is not None and foreign > 0.10:
        problems.append(f"other processes used {foreign:.0%} of the machine's CPU during the "
                        "run: figures are noisy")
    if problems:
        print()
        print("problems:")
        for p in problems:
            print("  " + p)
    elapsed = time.time() - started
    passed = sum(r["pass"] for r in results)
    print()
    print(f"{passed}/{len(results)} targets met; bench took {elapsed:.0f} s")

    doc = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": {"blob_mib": BLOB_MIB, "pushes": PUSHES, "gets": GETS,
                   "wrk": f"-t1 -c32 -d{WRK_SECS}s", "server_cpu": SERVER_CPU,
                   "load_cpu": LOAD_CPU, "clk_tck": CLK, "nproc": os.cpu_count(),
                   "units": "MiB=2^20 bytes, GiB=2^30 bytes",
                   "disk_write_fdatasync_mib_s": DISK.get("fdatasync_mib_s"),
                   "nice": os.nice(0)},
        "servers": {s.key: dict(s.m, error=s.error) for s in servers},
        "ratios": {
            "berth_over_registry": {k: ratio(b.get(k), reg.m.get(k)) for k, _, _ in rows},
            "berth_over_nginx": {k: ratio(b.get(k), ngx.m.get(k)) for k, _, _ in rows},
        },
        "mirror": {
            "params": {"namespace": MIRROR_NS, "repository": MIRROR_REPO,
                       "revalidate": MIRROR_REVALIDATE, "blob_mib": BLOB_MIB,
                       "upstream_cpu": LOAD_CPU, "proxy_cpu": SERVER_CPU},
            "servers": {s.key: dict(s.m, error=s.error) for s in mirror.values()},
            "direct": direct,
            "ratios": {
                "berth_over_registry_proxy": {k: ratio(bm.m.get(k), rp.m.get(k))
                                              for k, _, _ in MIRROR_ROWS},
                "berth_over_direct": {k: ratio(bm.m.get(k), direct.get(k))
                                      for k, _, _ in MIRROR_ROWS},
            },
        },
        "helm": helm,
        "targets": results,
        "warnings": problems,
        "elapsed_s": round(elapsed, 1),
    }
    os.makedirs(os.path.dirname(os.path.abspath(JSON_OUT)), exist_ok=True)
    with open(JSON_OUT, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"results written to {JSON_OUT}")

    if MIRROR_ERRORS or helm.get("errors") or any(s.error or s.m.get("errors")
                            for s in servers + list(mirror.values())):
        return 1
    if STRICT and passed < len(results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
