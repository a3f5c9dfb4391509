#!/usr/bin/env python3
"""Trust bench (issue 20): the cost of an enforcing trust policy on a warm pull.

One berth (pinned to CPU 0) holds the same image in two repositories: apps/img, covered by an
enforcing `trust:` policy and signed in cosign's key-based layout (tests/fixtures/cosign_sign.py),
and plain/img, which no policy covers. After one pull of each (the enforcing one verifies the
signature once and remembers the verdict), wrk (pinned to CPU 1) GETs each manifest by tag in
alternating rounds; the figure is the no-policy rate over the enforcing rate (best round of
each). Target: within 1.2x. Prints a line per round and a PASS/MISS summary; exit 1 only when
the bench could not run (BENCH_STRICT=1: also on a MISS).

    BERTH           berth binary (default build/berth)
    BENCH_TRUST_SECS  seconds per wrk round (default 5), BENCH_TRUST_ROUNDS rounds (default 3)
"""
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BERTH = os.environ.get("BERTH", os.path.join(ROOT, "build/berth"))
SECS = int(os.environ.get("BENCH_TRUST_SECS", "5"))
ROUNDS = int(os.environ.get("BENCH_TRUST_ROUNDS", "3"))
MT = "application/vnd.oci.image.manifest.v1+json"
TARGET = 1.2


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def req(method, url, body=None, headers=None):
    r = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(r) as resp:
        return resp.status, dict(resp.headers), resp.read()


def push_blob(base, repo, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    _, h, _ = req("POST", f"{base}/v2/{repo}/blobs/uploads/")
    loc = h["Location"]
    loc = loc if loc.startswith("http") else base + loc
    req("PUT", f"{loc}{'&' if '?' in loc else '?'}digest={d}", data,
        {"Content-Type": "application/octet-stream"})
    return {"digest": d, "size": len(data)}


def push_image(base, repo):
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = b"trust bench layer\n" * 64
    c = push_blob(base, repo, cfg)
    l = push_blob(base, repo, layer)
    man = json.dumps({"schemaVersion": 2, "mediaType": MT,
                      "config": dict(c, mediaType="application/vnd.oci.image.config.v1+json"),
                      "layers": [dict(l, mediaType="application/vnd.oci.image.layer.v1.tar")]},
                     separators=(",", ":")).encode()
    req("PUT", f"{base}/v2/{repo}/manifests/v1", man, {"Content-Type": MT})
    return "sha256:" + hashlib.sha256(man).hexdigest()


def wrk(url):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{SECS}s",
                          "-H", f"Accept: {MT}", url], capture_output=True, text=True,
                         timeout=SECS + 30).stdout
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if not m or non2xx:
        raise RuntimeError(f"wrk against {url}: {out.strip()[-300:]}")
    return float(m.group(1))


def main():
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            print(f"trust bench: missing {tool}", file=sys.stderr)
            return 2
    tmp = tempfile.mkdtemp(prefix="berth-trust-bench-")
    sign = [sys.executable, os.path.join(ROOT, "tests/fixtures/cosign_sign.py")]
    subprocess.run(sign + ["keygen", f"{tmp}/k"], check=True)
    port = free_port()
    with open(f"{tmp}/config.yml", "w") as f:
        f.write(f"""version: 0.1
log: {{level: warn}}
storage: {{filesystem: {{rootdirectory: {tmp}/data}}}}
http: {{addr: 127.0.0.1:{port}}}
trust:
  keys: {{release: {tmp}/k/cosign.pub}}
  policies:
    - {{name: apps, repositories: ["apps/*"], mode: enforce, keys: [release]}}
""")
    log = open(f"{tmp}/berth.log", "wb")
    proc = subprocess.Popen(["taskset", "-c", "0", BERTH, "serve", "-c", f"{tmp}/config.yml"],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    rc = 0
    try:
        for _ in range(100):
            try:
                req("GET", base + "/v2/")
                break
            except OSError:
                time.sleep(0.05)
        d1 = push_image(base, "apps/img")
        d2 = push_image(base, "plain/img")
        assert d1 == d2
        subprocess.run(sign + ["sign", base, "apps/img", d1, "--key", f"{tmp}/k/cosign.key"],
                       check=True, stdout=subprocess.DEVNULL)
        for repo in ("apps/img", "plain/img"):  # the first pull verifies; warm from here on
            req("GET", f"{base}/v2/{repo}/manifests/v1", None, {"Accept": MT})
        best = {"apps/img": 0.0, "plain/img": 0.0}
        for r in range(ROUNDS):
            for repo in ("plain/img", "apps/img"):
                rps = wrk(f"{base}/v2/{repo}/manifests/v1")
                best[repo] = max(best[repo], rps)
                print(f"trust bench: round {r + 1} {repo:10} {rps:10.0f} req/s", flush=True)
        ratio = best["plain/img"] / best["apps/img"]
        verdict = "PASS" if ratio <= TARGET else "MISS"
        print(f"trust bench: warm manifest pull, enforcing policy (signed) {best['apps/img']:.0f} "
              f"req/s vs no policy {best['plain/img']:.0f} req/s: {ratio:.2f}x "
              f"(target <= {TARGET}x) {verdict}")
        if verdict == "MISS" and os.environ.get("BENCH_STRICT") == "1":
            rc = 1
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        print(f"trust bench: could not run: {e}", file=sys.stderr)
        rc = 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
