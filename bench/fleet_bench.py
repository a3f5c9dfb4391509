"""Fleet section of `make bench` (issue 21): N devices pulling one image at once through a
throttled WAN, berth's mirror beside docker-registry's proxy mode in the same run.

Protocol:
  1. An upstream docker-registry holds one image: a config and BENCH_FLEET_LAYERS random layers
     of BENCH_FLEET_MIB MiB in all (incompressible), tagged `latest`.
  2. Each proxy reaches the upstream through its own relay (this script) that limits the answers
     of all its connections together to BENCH_FLEET_RATE MB/s (a site's WAN) and counts the
     bytes: WAN bytes / image size is how many times the image crossed the WAN.
  3. berth (`mirrors: {up.example: {urls: [relay]}}`, path-prefix names) and docker-registry
     (`proxy: {remoteurl: relay}`) start with empty caches. For each N in BENCH_FLEET_N, the N
     devices start together the way containerd pulls: the manifest by tag, then the config and
     the layers, 3 at a time per device (containerd's max_concurrent_downloads), each blob
     hashed and checked against its digest. Each proxy's cache is emptied between rounds (a new
     storage directory and a restart), so each round is a cold fleet pull.
  4. Reported per proxy and N: the last device's time, WAN bytes as a multiple of the image,
     and errors (failed or wrong transfers).
Figures only, no target. Results go to build/fleet_bench.json (BENCH_FLEET_JSON).
"""
import concurrent.futures
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
import tcprelay  # noqa: E402  (the relay loop the tests' forwarders use)

NS = [int(x) for x in os.environ.get("BENCH_FLEET_N", "10,50").split(",") if x]
IMAGE_MIB = int(os.environ.get("BENCH_FLEET_MIB", "24"))
LAYERS = int(os.environ.get("BENCH_FLEET_LAYERS", "3"))
RATE = float(os.environ.get("BENCH_FLEET_RATE", "20")) * 1e6  # bytes/s, all connections together
BERTH = os.environ.get("BERTH", "build/berth")
OUT = os.environ.get("BENCH_FLEET_JSON", "build/fleet_bench.json")
REPO = "fleet/app"
MT = "application/vnd.oci.image.manifest.v1+json"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_up(port, proc, secs=15):
    deadline = time.time() + secs
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Relay:
    """127.0.0.1:port -> target, the answers of all connections sharing one token bucket."""

    def __init__(self, target_port, rate):
        self.target, self.rate = target_port, rate
        self.lock = threading.Lock()
        self.bytes = 0
        self.next_free = time.monotonic()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(512)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _pace(self, n):
        with self.lock:
            self.bytes += n
            now = time.monotonic()
            start = max(now, self.next_free)
            self.next_free = start + n / self.rate
            wait = self.next_free - now
        if wait > 0:
            time.sleep(wait)

    def _pipe(self, a, b, paced):
        tcprelay.pipe(a, b, 32768 if paced else 65536,
                      before=(lambda data: self._pace(len(data))) if paced else None)

    def _serve(self, c):
        try:
            up = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            c.close()
            return
        threading.Thread(target=self._pipe, args=(c, up, False), daemon=True).start()
        self._pipe(up, c, True)


def request(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def push_blob(port, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    st, h, _ = request(port, "POST", f"/v2/{REPO}/blobs/uploads/")
    loc = h.get("Location") or h.get("location")
    if st != 202 or not loc:
        raise RuntimeError(f"upload start: {st}")
    if loc.startswith("http"):
        loc = "/" + loc.split("/", 3)[3]
    sep = "&" if "?" in loc else "?"
    st, _, _ = request(port, "PUT", f"{loc}{sep}digest={digest}", data,
                       {"Content-Type": "application/octet-stream"})
    if st != 201:
        raise RuntimeError(f"upload: {st}")
    return digest, len(data)


def make_image(port):
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    cd, cs = push_blob(port, config)
    layers = []
    per = IMAGE_MIB * (1 << 20) // LAYERS
    for _ in range(LAYERS):
        d, s = push_blob(port, os.urandom(per))
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": d, "size": s})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MT,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cd, "size": cs},
                           "layers": layers}).encode()
    st, _, _ = request(port, "PUT", f"/v2/{REPO}/manifests/latest", manifest,
                       {"Content-Type": MT})
    if st != 201:
        raise RuntimeError(f"manifest push: {st}")
    return cs + sum(x["size"] for x in layers) + len(manifest)


def get_blob(port, prefix, digest):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        c.request("GET", f"/v2/{prefix}{REPO}/blobs/{digest}")
        r = c.getresponse()
        if r.status != 200:
            r.read()
            return f"blob {digest[:19]}: {r.status}"
        h = hashlib.sha256()
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
        return None if "sha256:" + h.hexdigest() == digest else f"blob {digest[:19]}: wrong bytes"
    except (OSError, http.client.HTTPException) as e:
        return f"blob {digest[:19]}: {e}"
    finally:
        c.close()


def device(port, prefix, start):
    """One containerd-like pull; returns (seconds, [errors])."""
    start.wait()
    t0 = time.monotonic()
    try:
        st, _, body = request(port, "GET", f"/v2/{prefix}{REPO}/manifests/latest", None,
                              {"Accept": MT})
    except (OSError, http.client.HTTPException) as e:
        return time.monotonic() - t0, [f"manifest: {e}"]
    if st != 200:
        return time.monotonic() - t0, [f"manifest: {st}"]
    m = json.loads(body)
    digests = [m["config"]["digest"]] + [x["digest"] for x in m["layers"]]
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        errs = [e for e in ex.map(lambda d: get_blob(port, prefix, d), digests) if e]
    return time.monotonic() - t0, errs


def fleet(port, prefix, n):
    start = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        futs = [ex.submit(device, port, prefix, start) for _ in range(n)]
        time.sleep(0.2)
        start.set()
        res = [f.result() for f in futs]
    return max(t for t, _ in res), sum(len(e) for _, e in res), [e for _, es in res for e in es]


class Proxy:
    def __init__(self, key, label, tmp, relay):
        self.key, self.label, self.tmp, self.relay = key, label, tmp, relay
        self.proc = None

    def start(self, rnd):
        d = os.path.join(self.tmp, f"{self.key}-{rnd}")
        os.makedirs(d, exist_ok=True)
        self.port = free_port()
        up = f"http://127.0.0.1:{self.relay.port}"
        cfg = os.path.join(d, "config.yml")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n"
                    f"http:\n  addr: 127.0.0.1:{self.port}\n")
            if self.key == "berth":
                f.write(f"mirrors:\n  up.example:\n    urls: [{up}]\n")
            else:
                f.write(f"proxy:\n  remoteurl: {up}\nlog:\n  level: warn\n")
        cmd = [BERTH, "serve", "-c", cfg] if self.key == "berth" else \
            ["docker-registry", "serve", cfg]
        self.logf = open(os.path.join(d, "server.log"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        if not wait_up(self.port, self.proc):
            raise RuntimeError(f"{self.label} did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def main():
    tmp = tempfile.mkdtemp(prefix="berth-fleet-")
    upstream = None
    results = []
    try:
        up_port = free_port()
        os.makedirs(os.path.join(tmp, "up"))
        ucfg = os.path.join(tmp, "up", "config.yml")
        with open(ucfg, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                    f"    rootdirectory: {tmp}/up/data\nhttp:\n  addr: 127.0.0.1:{up_port}\n")
        upstream = subprocess.Popen(["docker-registry", "serve", ucfg],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
        if not wait_up(up_port, upstream):
            log("bench: fleet: the upstream docker-registry did not start")
            return 1
        image = make_image(up_port)
        log(f"bench: fleet: image of {image / 1e6:.1f} MB ({LAYERS} layers), WAN "
            f"{RATE / 1e6:.0f} MB/s, devices {NS}")
        for key, label, prefix in (("berth", "berth mirror", "up.example/"),
                                   ("registry", "docker-registry proxy", "")):
            for i, n in enumerate(NS):
                relay = Relay(up_port, RATE)
                p = Proxy(key, label, tmp, relay)
                try:
                    p.start(f"{n}-{i}")
                    t, nerr, errs = fleet(p.port, prefix, n)
                    wan = relay.bytes / image
                    results.append({"server": key, "devices": n, "last_device_s": round(t, 2),
                                    "wan_x_image": round(wan, 2), "errors": nerr})
                    log(f"  {label:24} N={n:4}: last device {t:7.2f} s, WAN {wan:6.2f}x the "
                        f"image, errors {nerr}" + (f" (first: {errs[0]})" if errs else ""))
                except Exception as e:  # a proxy that cannot be measured is reported, not fatal
                    results.append({"server": key, "devices": n, "error": str(e)})
                    log(f"  {label:24} N={n:4}: failed: {e}")
                finally:
                    p.stop()
                    relay.srv.close()
    finally:
        if upstream:
            upstream.terminate()
            upstream.wait()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
    print("\nfleet (N devices at once through one throttled WAN; figures, no target)")
    print(f"{'server':24} {'devices':>8} {'last device s':>14} {'WAN x image':>12} {'errors':>7}")
    for r in results:
        label = "berth mirror" if r["server"] == "berth" else "docker-registry proxy"
        if "error" in r:
            print(f"{label:24} {r['devices']:>8} {'failed: ' + r['error']}")
        else:
            print(f"{label:24} {r['devices']:>8} {r['last_device_s']:>14.2f} "
                  f"{r['wan_x_image']:>12.2f} {r['errors']:>7}")
    os.makedirs(os.path.dirname(OUT) or ".", exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"image_bytes": image, "wan_bytes_per_s": RATE, "results": results}, f,
                  indent=1)
    return 1 if any("error" in r for r in results if r["server"] == "berth") else 0


if __name__ == "__main__":
    sys.exit(main())
