#!/usr/bin/env python3
"""Bundle section of `make bench`: `berth bundle create|import` vs skopeo, in MiB/s.

Run by bench/run.sh after bench/bench.py (it merges its figures into build/bench.json under
"bundle"), or alone: python3 bench/bundle_bench.py [--json PATH | --no-json].

Protocol (MiB = 2^20 bytes; MiB/s = total blob bytes / wall seconds):
  Data: IMAGES images x LAYERS layers of LAYER_MIB MiB each (gzip tars of random bytes, so
  incompressible; distinct seeds, so no blob is shared), built once with
  tests/fixtures/mkimage.py and cached in BENCH_BUNDLE_CACHE. Total = every blob of every image
  (layers + config + manifest).
  Source: berth A (plain http on 127.0.0.1) on the server CPU, images pushed to it with
  `skopeo copy oci:DIR:1 docker://A/bench/imgN:1`.
  Every client command runs pinned to the load CPU; every registry on the server CPU. Each
  measurement is run RUNS times (berth and skopeo alternating) and the median is taken.
  Nothing is dropped from the page cache (sources are warm); sync() runs before every timed
  command, so no command pays for an earlier one's writeback, and each tool fsyncs what it
  fsyncs (skopeo does not fsync its archives; berth may).
  1. create: `berth bundle create -o x.tar http://A/bench/img1:1 ... imgN:1` (one tar, every
     image) vs `skopeo copy docker://A/bench/imgN:1 oci-archive:y_N.tar:bench/imgN:1`, one
     archive per image (skopeo writes one image per archive): the skopeo time is the SUM over
     the images.
  2. import into a running registry: `berth bundle import x.tar --to http://B` into a fresh,
     empty berth B per run vs `skopeo copy oci-archive:y_N.tar docker://B2/bench/imgN:1` for
     every image (times summed) into a fresh, empty berth B2 per run: same server, only the
     client differs.
  3. offline import: `berth bundle import x.tar -c B.yml` into an empty storage directory (no
     server running). No skopeo peer; MiB/s only.
  Checks (outside the timings): the bundle tar holds every blob with the right size; after each
  import every image's manifest is served by tag with the expected digest and every blob
  answers HEAD with the right size (the offline store is checked by serving it once).

Environment (all optional): BERTH (build/berth), BENCH_BUNDLE_IMAGES (4),
BENCH_BUNDLE_LAYERS (4), BENCH_BUNDLE_LAYER_MIB (64), BENCH_BUNDLE_RUNS (3),
BENCH_BUNDLE_CACHE (build/bench-cache/bundle), BENCH_JSON (build/bench.json), BENCH_KEEP=1,
BENCH_WAIT_QUIET (30: seconds to wait for other CPU load to stop first),
BENCH_STRICT=1 (exit 1 on a MISS; otherwise exit 1 only when something could not be measured).
"""
import hashlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench import (exit_on_signals, SHARED_CONFIG, Server, fmt, free_port, json_out_arg, merge_json, wait_quiet,  # noqa: E402
                   log, print_table, ratio, sha256_file)

MIB = 1 << 20
SERVER_CPU = "0"
LOAD_CPU = "1"
BERTH = os.environ.get("BERTH", "build/berth")
IMAGES = int(os.environ.get("BENCH_BUNDLE_IMAGES", "4"))
LAYERS = int(os.environ.get("BENCH_BUNDLE_LAYERS", "4"))
LAYER_MIB = int(os.environ.get("BENCH_BUNDLE_LAYER_MIB", "64"))
RUNS = int(os.environ.get("BENCH_BUNDLE_RUNS", "3"))
CACHE = os.environ.get("BENCH_BUNDLE_CACHE", os.path.join(ROOT, "build/bench-cache/bundle"))
KEEP = os.environ.get("BENCH_KEEP", "") not in ("", "0")
STRICT = os.environ.get("BENCH_STRICT", "") not in ("", "0")
MKIMAGE = os.path.join(ROOT, "tests/fixtures/mkimage.py")
TAG = "1"
OCI_ACCEPT = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.oci.image.index.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json"])
CMD_TIMEOUT = 600
SYNC_S = [0.0]  # time spent in the sync() before each timed command (not timed)


class Failed(Exception):
    pass


# ---------------------------------------------------------------- test data

def file_sha256(path):
    return sha256_file(path)[len("sha256:"):]


def build_images():
    """Returns [{name, dir, manifest: digest, blobs: {digest: size}}], building the OCI layouts
    (in parallel, one mkimage.py per CPU) unless a cache for these parameters exists."""
    key = f"{IMAGES}x{LAYERS}x{LAYER_MIB}m-{file_sha256(MKIMAGE)[:12]}"
    base = os.path.join(CACHE, key)
    done = os.path.join(base, "done")
    if not os.path.exists(done):
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        log(f"bench: bundle: building {IMAGES} images x {LAYERS} layers x {LAYER_MIB} MiB with "
            f"mkimage.py into {base} (once; cached)")
        t0 = time.time()
        pending = list(range(1, IMAGES + 1))
        running = []
        while pending or running:
            while pending and len(running) < max(1, os.cpu_count() or 1):
                n = pending.pop(0)
                running.append(subprocess.Popen(
                    [sys.executable, MKIMAGE, "image", os.path.join(base, f"img{n}"),
                     "--layers", str(LAYERS), "--size", str(LAYER_MIB * MIB),
                     "--seed", str(1000 + n), "--tag", TAG], stdout=subprocess.DEVNULL))
            p = running.pop(0)
            if p.wait() != 0:
                raise Failed(f"mkimage.py exited {p.returncode}")
        with open(done, "w") as f:
            f.write(f"{time.time() - t0:.1f} s\n")
    images = []
    for n in range(1, IMAGES + 1):
        d = os.path.join(base, f"img{n}")
        with open(os.path.join(d, "index.json")) as f:
            desc = json.load(f)["manifests"][0]
        blobdir = os.path.join(d, "blobs", "sha256")
        with open(os.path.join(blobdir, desc["digest"].split(":", 1)[1]), "rb") as f:
            man = json.load(f)
        blobs = {desc["digest"]: desc["size"]}
        for b in [man["config"]] + man["layers"]:
            blobs[b["digest"]] = b["size"]
        for dg, size in blobs.items():
            if os.path.getsize(os.path.join(blobdir, dg.split(":", 1)[1])) != size:
                raise Failed(f"cache {d}: blob {dg} has the wrong size; delete {CACHE}")
        images.append({"name": f"bench/img{n}", "dir": d, "manifest": desc["digest"],
                       "blobs": blobs})
    return images


# ---------------------------------------------------------------- processes

class Berth(Server):
    """A berth serving (or about to be given) a store on the server CPU: bench.Server with its own
    directory and configuration, raising Failed when it does not start."""

    def __init__(self, tmp, binary, name):
        super().__init__(name, f"berth {name}", "registry")
        self.dir = os.path.join(tmp, name)
        self.root = os.path.join(self.dir, "data")
        os.makedirs(self.root)
        self.config = os.path.join(self.dir, "config.yml")
        with open(self.config, "w") as f:
            f.write(SHARED_CONFIG.replace("@ROOTDIR@", self.root)
                    .replace("@ADDR@", f"127.0.0.1:{self.port}"))
        self.binary = binary
        self.name = name

    def start(self):
        super().start([self.binary, "serve", "-c", self.config],
                      os.path.join(self.dir, "berth.log"), cpu=SERVER_CPU)
        if self.error:
            raise Failed(f"berth {self.name}: {self.error}")
        return self

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def http(method, url, headers=None, timeout=30):
    """(status, headers, body) of one request; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def timed(cmd, logpath):
    """Runs cmd on the load CPU after a sync(); returns (wall s, client CPU s). Raises Failed
    on a non-zero exit."""
    with open(logpath, "ab") as logf:
        logf.write(("$ " + " ".join(cmd) + "\n").encode())
        logf.flush()
        t_sync = time.perf_counter()
        os.sync()  # nobody pays for the previous command's writeback
        SYNC_S[0] += time.perf_counter() - t_sync
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.Popen(["taskset", "-c", LOAD_CPU] + cmd, stdout=logf,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        try:
            rc = p.wait(timeout=CMD_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise Failed(f"{' '.join(cmd[:3])}: timed out after {CMD_TIMEOUT} s")
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        with open(logpath, "rb") as f:
            tail = f.read()[-500:].decode(errors="replace").strip().replace("\n", " | ")
        raise Failed(f"{' '.join(cmd[:3])} exited {rc}: {tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


# ---------------------------------------------------------------- checks

def check_registry(url, images):
    """Every image's manifest by tag (expected digest) and every blob by HEAD (size)."""
    for im in images:
        st, hd, body = http("GET", f"{url}/v2/{im['name']}/manifests/{TAG}",
                            {"Accept": OCI_ACCEPT})
        got = "sha256:" + hashlib.sha256(body).hexdigest() if st == 200 else None
        if got != im["manifest"]:
            cat = http("GET", f"{url}/v2/_catalog")
            raise Failed(f"{url}/v2/{im['name']}/manifests/{TAG} -> {st}, digest {got} "
                         f"(want {im['manifest']}); catalog: {cat[2][:200]!r}")
        for dg, size in im["blobs"].items():
            st, hd, _ = http("HEAD", f"{url}/v2/{im['name']}/blobs/{dg}")
            if st != 200 or int(hd.get("Content-Length", -1)) != size:
                raise Failed(f"HEAD {im['name']} blob {dg} -> {st}, "
                             f"Content-Length {hd.get('Content-Length')} (want {size})")


def check_bundle(path, images):
    """The tar is an OCI layout holding every blob at blobs/sha256/<hex> with its size."""
    want = {}
    for im in images:
        want.update(im["blobs"])
    found, index = {}, None
    with tarfile.open(path, "r:") as tf:
        for ti in tf:
            name = ti.name.lstrip("./")
            if name.startswith("blobs/sha256/") and ti.isfile():
                found["sha256:" + name[len("blobs/sha256/"):]] = ti.size
            elif name == "index.json":
                index = json.load(tf.extractfile(ti))
    if index is None:
        raise Failed(f"bundle {path}: no index.json")
    bad = [dg for dg, size in want.items() if found.get(dg) != size]
    if bad:
        raise Failed(f"bundle {path}: {len(bad)} of {len(want)} blobs missing or of the wrong "
                     f"size (e.g. {bad[0]})")
    return len(index.get("manifests", []))


# ---------------------------------------------------------------- the runs

def berth_has_bundle(binary):
    try:
        r = subprocess.run([binary, "bundle", "--help"], capture_output=True, text=True,
                           timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{binary} bundle --help: {e}"
    out = (r.stdout + r.stderr).strip()
    if "unknown command" in out or "create" not in out or "import" not in out:
        return (f"{binary} has no `bundle` command yet (bundle --help exit {r.returncode}: "
                f"{out.splitlines()[0] if out else 'no output'})")
    return None


def run(tmp, started):
    res = {"errors": [], "warnings": []}
    warning = wait_quiet("bundle section: ", 0.10)
    if warning:
        res["warnings"].append(warning)
    if not os.access(BERTH, os.X_OK):
        res["errors"].append(f"{BERTH} not built")
        return res
    binary = os.path.join(tmp, "berth.bin")  # a rebuild mid-run must not change the subject
    shutil.copy2(BERTH, binary)
    no_bundle = berth_has_bundle(binary)
    if no_bundle:
        no_bundle = no_bundle.replace(binary, BERTH)
    if no_bundle:
        res["errors"].append(no_bundle)
        log("bench: bundle: " + no_bundle + "; measuring the skopeo side only")
    try:
        os.nice(-10)
    except OSError:
        pass

    images = build_images()
    total = sum(sum(im["blobs"].values()) for im in images)
    nblobs = sum(len(im["blobs"]) for im in images)
    res["params"] = {"images": IMAGES, "layers_per_image": LAYERS, "layer_mib": LAYER_MIB,
                     "blobs": nblobs, "total_blob_bytes": total, "runs": RUNS,
                     "statistic": "median", "server_cpu": SERVER_CPU, "load_cpu": LOAD_CPU,
                     "page_cache": "not dropped (sources warm); sync() before each command",
                     "skopeo": subprocess.run(["skopeo", "--version"], capture_output=True,
                                              text=True).stdout.strip(),
                     "units": "MiB=2^20 bytes; MiB/s = total blob bytes / wall s"}
    log(f"bench: bundle: {IMAGES} images, {nblobs} blobs, {total / MIB:.0f} MiB; temp dir {tmp}")

    src = Berth(tmp, binary, "source")
    servers = [src]
    try:
        src.start()
        for im in images:
            timed(["skopeo", "copy", "-q", "--dest-tls-verify=false",
                   f"oci:{im['dir']}:{TAG}", f"docker://127.0.0.1:{src.port}/{im['name']}:{TAG}"],
                  os.path.join(tmp, "setup.log"))
        check_registry(src.url, images)
        log(f"bench: bundle: source berth on {src.url} holds the images")

        m = {k: {"berth": {"runs_s": [], "cpu_s": []}, "skopeo": {"runs_s": [], "cpu_s": []}}
             for k in ("create", "import_to")}
        m["import_offline"] = {"berth": {"runs_s": [], "cpu_s": []}}
        xtar = os.path.join(tmp, "x.tar")
        ytars = [os.path.join(tmp, f"y_{n}.tar") for n in range(1, IMAGES + 1)]
        blog = os.path.join(tmp, "berth-client.log")
        slog = os.path.join(tmp, "skopeo.log")
        berth_ok = no_bundle is None

        def note(key, side, wall, cpu):
            m[key][side]["runs_s"].append(round(wall, 3))
            m[key][side]["cpu_s"].append(round(cpu, 3))

        def fail(key, side, e):
            msg = f"{key} ({side}): {e}"
            log("bench: bundle: FAILED " + msg)
            res["errors"].append(msg)
            m[key][side]["failed"] = True

        # 1. create
        for r in range(RUNS):
            if berth_ok and not m["create"]["berth"].get("failed"):
                try:
                    if os.path.exists(xtar):
                        os.unlink(xtar)
                    note("create", "berth", *timed(
                        [binary, "bundle", "create", "-o", xtar] +
                        [f"{src.url}/{im['name']}:{TAG}" for im in images], blog))
                    if r == RUNS - 1:
                        m["create"]["berth"]["index_entries"] = check_bundle(xtar, images)
                        m["create"]["berth"]["tar_bytes"] = os.path.getsize(xtar)
                except (Failed, tarfile.TarError, OSError, ValueError) as e:
                    fail("create", "berth", e)
            if not m["create"]["skopeo"].get("failed"):
                try:
                    wall = cpu = 0.0
                    for im, y in zip(images, ytars):
                        if os.path.exists(y):
                            os.unlink(y)
                        w, c = timed(["skopeo", "copy", "-q", "--src-tls-verify=false",
                                      f"docker://127.0.0.1:{src.port}/{im['name']}:{TAG}",
                                      f"oci-archive:{y}:{im['name']}:{TAG}"], slog)
                        wall, cpu = wall + w, cpu + c
                    note("create", "skopeo", wall, cpu)
                    if r == RUNS - 1:
                        m["create"]["skopeo"]["tar_bytes"] = sum(os.path.getsize(y)
                                                                 for y in ytars)
                except Failed as e:
                    fail("create", "skopeo", e)
        src.remove()
        servers.remove(src)
        log("bench: bundle: create done")

        # 2. import into a running registry (fresh, empty berth per run)
        have_x = berth_ok and not m["create"]["berth"].get("failed")
        have_y = not m["create"]["skopeo"].get("failed")
        for r in range(RUNS):
            if have_x and not m["import_to"]["berth"].get("failed"):
                b = Berth(tmp, binary, f"import-berth-{r}")
                servers.append(b)
                try:
                    b.start()
                    note("import_to", "berth", *timed(
                        [binary, "bundle", "import", xtar, "--to", b.url], blog))
                    check_registry(b.url, images)
                except Failed as e:
                    fail("import_to", "berth", e)
                b.remove()
                servers.remove(b)
            if have_y and not m["import_to"]["skopeo"].get("failed"):
                b = Berth(tmp, binary, f"import-skopeo-{r}")
                servers.append(b)
                try:
                    b.start()
                    wall = cpu = 0.0
                    for im, y in zip(images, ytars):
                        w, c = timed(["skopeo", "copy", "-q", "--dest-tls-verify=false",
                                      f"oci-archive:{y}:{im['name']}:{TAG}",
                                      f"docker://127.0.0.1:{b.port}/{im['name']}:{TAG}"], slog)
                        wall, cpu = wall + w, cpu + c
                    note("import_to", "skopeo", wall, cpu)
                    check_registry(b.url, images)
                except Failed as e:
                    fail("import_to", "skopeo", e)
                b.remove()
                servers.remove(b)
        log("bench: bundle: import --to done")

        # 3. offline import into an empty store (no server)
        if have_x:
            for r in range(RUNS):
                b = Berth(tmp, binary, f"offline-{r}")
                servers.append(b)
                try:
                    note("import_offline", "berth", *timed(
                        [binary, "bundle", "import", xtar, "-c", b.config], blog))
                    if r == RUNS - 1:
                        b.start()
                        check_registry(b.url, images)
                except Failed as e:
                    fail("import_offline", "berth", e)
                    break
                finally:
                    b.remove()
                    servers.remove(b)
            log("bench: bundle: offline import done")
    finally:
        for s in servers:
            s.remove()

    for key, sides in m.items():
        for side, d in sides.items():
            if d["runs_s"] and not d.get("failed"):
                d["median_s"] = round(statistics.median(d["runs_s"]), 3)
                d["mib_s"] = round(total / MIB / d["median_s"], 1)
                d["client_cpu_median_s"] = round(statistics.median(d["cpu_s"]), 3)
        if "skopeo" in sides:
            sides["berth_over_skopeo"] = ratio(sides["berth"].get("mib_s"),
                                               sides["skopeo"].get("mib_s"))
    res.update(m)
    res["params"]["untimed_sync_s"] = round(SYNC_S[0], 1)
    return res


# ---------------------------------------------------------------- report

def report(res, started):
    p = res.get("params", {})
    rows = [("create (registry -> tar)", "create"),
            ("import --to (tar -> running registry)", "import_to"),
            ("import -c (tar -> stopped store, offline)", "import_offline")]
    table = []
    for label, key in rows:
        d = res.get(key, {})
        b, s = d.get("berth", {}), d.get("skopeo", {})
        r = d.get("berth_over_skopeo")
        table.append([label, fmt(b.get("mib_s"), 0), fmt(s.get("mib_s"), 0) if s else "-",
                      fmt(r, 2) if s else "-", fmt(b.get("median_s"), 2),
                      fmt(s.get("median_s"), 2) if s else "-",
                      fmt(b.get("client_cpu_median_s"), 2),
                      fmt(s.get("client_cpu_median_s"), 2) if s else "-"])
    print()
    print(f"bundle: {p.get('images', IMAGES)} images x {p.get('layers_per_image', LAYERS)} "
          f"layers x {p.get('layer_mib', LAYER_MIB)} MiB = "
          f"{p.get('total_blob_bytes', 0) / MIB:.0f} MiB of blobs; registries on CPU "
          f"{SERVER_CPU}, clients on CPU {LOAD_CPU}; median of {RUNS}")
    print_table(["bundle", "berth MiB/s", "skopeo MiB/s", "berth/skopeo", "berth s",
                 "skopeo s", "berth CPU s", "skopeo CPU s"], table)
    print("notes: skopeo writes one image per oci-archive, so its create and import times are "
          "the sum over the images;")
    print("       imports go into a fresh empty berth each run (same server for both clients). "
          "Page cache not dropped")
    print("       (sources warm); sync() before each command. CPU s = the client's user+sys. "
          "MiB/s = all blob bytes / wall s.")
    targets = []
    print()
    print("targets:")
    for name, key in (("bundle create MiB/s berth >= 1.0x skopeo", "create"),
                      ("bundle import --to MiB/s berth >= 1.0x skopeo", "import_to")):
        v = res.get(key, {}).get("berth_over_skopeo")
        ok = v is not None and v >= 1.0
        print(f"  {'PASS' if ok else 'MISS'}  {name:50s} "
              f"{'n/a' if v is None else f'{v:.2f}x'}")
        targets.append({"target": name, "value": v, "op": ">=", "goal": 1.0, "pass": ok})
    res["targets"] = targets
    problems = res["errors"] + [f"warning: {w}" for w in res["warnings"]]
    if problems:
        print()
        print("problems:")
        for e in problems:
            print("  bundle: " + e)
    res["elapsed_s"] = round(time.time() - started, 1)
    print()
    print(f"{sum(t['pass'] for t in targets)}/{len(targets)} bundle targets met; "
          f"bundle section took {res['elapsed_s']:.0f} s")


def main(argv):
    out = json_out_arg(argv)
    for tool in ("skopeo", "taskset"):
        if not shutil.which(tool):
            print(f"bench: bundle: missing {tool} (apt-get install {tool})", file=sys.stderr)
            return 2
    started = time.time()
    tmp = tempfile.mkdtemp(prefix="berth-bundle-bench.")
    exit_on_signals()
    try:
        try:
            res = run(tmp, started)
        except Failed as e:
            res = {"errors": [str(e)], "warnings": []}
    finally:
        if KEEP:
            log(f"bench: bundle: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(res, started)
    if out:
        merge_json(out, "bundle", res)
    if res["errors"]:
        return 1
    if STRICT and not all(t["pass"] for t in res["targets"]):
        return 1
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main(sys.argv[1:]))
