"""Helm chart repository section of `make bench` (issue 4), called from bench/bench.py.

Protocol:
  1. berth on the server CPU with an empty store (helm enabled, defaults).
  2. 10,000 chart versions (1,000 charts x 10 versions, each a real .tgz with a Chart.yaml) are
     uploaded with POST /api/charts by 8 concurrent keep-alive clients on the load CPU:
     uploads/s = 10,000 / wall time. Every answer must be 201.
  3. index.yaml GET latency with 10,000 versions loaded: the first GET after the last upload
     (the view is built then), then 50 GETs (median and p99), each reading the whole body; the
     body is parsed once to check it holds all 10,000 versions.
  4. Under load: 500 more uploads from 4 clients while a fifth client GETs index.yaml in a loop;
     median and p99 of those GETs (most follow a change, so they include building the view).
ChartMuseum cannot run here (not packaged for Debian); its published figures are shown beside
(issues #327, #332, #711): minutes per index at 7,000 charts, >10 s per index call at 5,000,
5 uploads/s under load.
"""
import gzip
import http.client
import io
import os
import socket
import statistics
import subprocess
import tarfile
import threading
import time

CHARTS = int(os.environ.get("BENCH_HELM_CHARTS", "1000"))
VERSIONS = int(os.environ.get("BENCH_HELM_VERSIONS", "10"))
CLIENTS = 8


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def _chart(name, version):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for path, data in (
                (f"{name}/Chart.yaml",
                 f"apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"1.0\"\n"
                 f"description: benchmark chart {name}\nkeywords: [bench, helm]\n"
                 f"maintainers:\n  - name: bench\n    email: bench@example.com\n".encode()),
                (f"{name}/values.yaml", b"image:\n  repository: nginx\n  tag: '1.25'\n"),
                (f"{name}/templates/cm.yaml", b"apiVersion: v1\nkind: ConfigMap\n")):
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            ti.mtime = 1700000000
            tf.addfile(ti, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def _post_all(port, bodies, errors):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for b in bodies:
        try:
            c.request("POST", "/api/charts", body=b,
                      headers={"Content-Type": "application/octet-stream"})
            r = c.getresponse()
            r.read()
            if r.status != 201:
                errors.append(f"upload answered {r.status}")
        except (OSError, http.client.HTTPException) as e:
            errors.append(f"upload: {e}")
            c.close()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.close()


def _get_index(c):
    t0 = time.perf_counter()
    c.request("GET", "/index.yaml")
    r = c.getresponse()
    body = r.read()
    return (time.perf_counter() - t0) * 1000, r.status, body


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run(tmp, binary, server_cpu, load_cpu, log):
    m = {"errors": []}
    root = os.path.join(tmp, "helm-berth")
    os.makedirs(root, exist_ok=True)
    port = _free_port()
    cfg = os.path.join(root, "config.yml")
    with open(cfg, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                f"    rootdirectory: {root}/data\nhttp:\n  addr: 127.0.0.1:{port}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    logf = open(os.path.join(root, "berth.log"), "ab")
    proc = subprocess.Popen(["taskset", "-c", server_cpu, binary, "serve", "-c", cfg],
                            stdout=logf, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        os.sched_setaffinity(0, {int(load_cpu)})
    except OSError:
        pass
    try:
        deadline = time.time() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    m["errors"].append("berth did not start")
                    return m
                time.sleep(0.05)
        n = CHARTS * VERSIONS
        log(f"bench: helm: building {n} chart versions ({CHARTS} charts x {VERSIONS})")
        bodies = [_chart(f"chart{i:04d}", f"1.{v}.0") for i in range(CHARTS)
                  for v in range(VERSIONS)]
        extra = [_chart(f"extra{i:04d}", "0.1.0") for i in range(500)]
        log(f"bench: helm: uploading {n} charts with {CLIENTS} clients")
        errors = []
        t0 = time.perf_counter()
        threads = [threading.Thread(target=_post_all, args=(port, bodies[k::CLIENTS], errors))
                   for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        el = time.perf_counter() - t0
        m["uploads"] = n
        m["upload_s"] = round(el, 2)
        m["uploads_per_s"] = round(n / el, 1)
        m["errors"] += sorted(set(errors))[:5]
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        ms, status, body = _get_index(c)
        m["index_first_get_ms"] = round(ms, 2)
        m["index_bytes"] = len(body)
        versions = body.count(b"\n    urls:\n")
        if status != 200 or versions != n:
            m["errors"].append(f"index.yaml: status {status}, {versions} versions (want {n})")
        lat = [_get_index(c)[0] for _ in range(50)]
        m["index_get_median_ms"] = round(statistics.median(lat), 2)
        m["index_get_p99_ms"] = round(_pct(lat, 99), 2)
        # under load: uploads continue while the index is read
        errors = []
        done = threading.Event()
        load_lat = []

        def reader():
            rc = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            while not done.is_set():
                ms, st, _ = _get_index(rc)
                if st != 200:
                    errors.append(f"index under load: {st}")
                load_lat.append(ms)
            rc.close()

        rt = threading.Thread(target=reader)
        rt.start()
        t0 = time.perf_counter()
        threads = [threading.Thread(target=_post_all, args=(port, extra[k::4], errors))
                   for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        el = time.perf_counter() - t0
        done.set()
        rt.join()
        m["errors"] += sorted(set(errors))[:5]
        m["load_uploads_per_s"] = round(len(extra) / el, 1)
        m["load_index_gets"] = len(load_lat)
        if load_lat:
            m["load_index_get_median_ms"] = round(statistics.median(load_lat), 2)
            m["load_index_get_p99_ms"] = round(_pct(load_lat, 99), 2)
        with open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k = "rss_mib" if line.startswith("VmRSS") else "peak_rss_mib"
                    m[k] = round(int(line.split()[1]) / 1024, 1)
        c.close()
        return m
    finally:
        try:
            os.sched_setaffinity(0, set(range(os.cpu_count())))
        except OSError:
            pass
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        logf.close()


if __name__ == "__main__":  # standalone: python3 bench/helm_bench.py [berth binary]
    import json
    import sys
    import tempfile
    d = tempfile.mkdtemp(prefix="berth-helm-bench.")
    print(json.dumps(run(d, sys.argv[1] if len(sys.argv) > 1 else "build/berth", "0", "1",
                         lambda s: print(s, file=sys.stderr)), indent=2))
    subprocess.run(["rm", "-rf", d])
