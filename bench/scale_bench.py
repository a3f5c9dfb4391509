#!/usr/bin/env python3
"""Scale-out section of `make bench`: push and pull MiB/s through one and through three berth
replicas sharing one S3 store (Ceph RGW) and one PostgreSQL, beside docker-registry (registry:2)
with its s3 driver on the same RGW. There is no target for this row: figures only.

Run by bench/run.sh after bench/bundle_bench.py (it merges its figures into build/bench.json under
"scale"), or alone: python3 bench/scale_bench.py [--json PATH | --no-json].

Protocol (MiB = 2^20 bytes; MiB/s = blob bytes moved / wall seconds, summed over clients):
  Backend: tests/rgw.sh's rgw_start (one mon, one bluestore OSD on a sparse file, one radosgw, all
  on 127.0.0.1) and tests/pg.sh's pg_start, run by one bash process that this script starts and
  that stops them (radosgw, OSD, mon; then PostgreSQL) when its stdin closes. One bucket.
  Images: the bundle section's test images (bundle_bench.build_images: gzip tars of random bytes,
  BENCH_BUNDLE_LAYERS x BENCH_BUNDLE_LAYER_MIB, default 4 x 64 MiB = 256 MiB each; cached), the
  first three: img1 for the one-server phases, img1..img3 for three replicas.
  Nothing is pinned: servers, Ceph, PostgreSQL and the skopeo clients share every CPU (the point
  is what a second and third replica add over one shared backend). sync() before each timed step.
  Steps:
    direct    context only: curl PUTs every blob of img1 straight to the RGW as one object each,
              one after the other, then GETs them into tmpfs (no registry in the path).
    registry  docker-registry, storage.s3 + redirect.disable (it streams GETs itself);
              push img1 with one skopeo copy, then pull it back.
    berth x1  one berth (storage.s3 + database:); the same push and pulls.
    berth x3  three berths, same config but own http.addr and own scratch directory
              (storage.filesystem.rootdirectory); three concurrent pushes, img_N via replica N;
              then three concurrent pulls crossing replicas: img_N via replica N+1 (mod 3).
  Push: `skopeo copy oci:<cache>/imgN:1 docker://HOST/bench/imgN:1` (skopeo sends an oci:
  layout's layers one at a time), PUSH_RUNS times, each into an empty store: servers started
  afresh on rootdirectory /PHASE-RUN in the bucket (berth: and database PHASE_RUN). Pull, after
  the last push: `skopeo copy docker://HOST/bench/imgN:1 oci:<tmpfs dir>:1` (up to 6 layers at
  once; skopeo checks every blob's digest), PULL_RUNS times. Best run of each reported.
  Aggregate = all images' blob bytes / wall time from the start of the first client to the end
  of the last.
  Checks (untimed): after each push every image's manifest is answered by tag with the pushed
  digest and every blob by HEAD with its size, through every server of the phase (so berth x3 is
  read across replicas); after each pull the layout's index names the pushed manifest digest and
  every blob has its size.
  CPU: utime+stime of the registries, of radosgw+ceph-osd+ceph-mon and of PostgreSQL (postmaster
  tree) per step, and the clients' (getrusage), as CPU ms per GiB moved; the rest of the
  machine's busy time is "other processes" (work that is not this benchmark: noise).

Environment (all optional): BERTH (build/berth), BENCH_SCALE_PUSH_RUNS (2),
BENCH_SCALE_PULL_RUNS (3), BENCH_SCALE_OSD_SIZE (RGW_OSD_SIZE for the OSD's sparse block file;
default 8G, less when the disk is short), BENCH_JSON (build/bench.json), BENCH_KEEP=1 (keep the
temp dir, Ceph and PostgreSQL directories), BENCH_WAIT_QUIET (30), and the bundle section's
image variables.
"""
import hashlib
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench import (exit_on_signals, CLK, Server, cpu_user_system_ticks, file_tail, fmt, json_out_arg, merge_json,  # noqa: E402
                   wait_quiet,
                   log, print_table, proc_stat, process_tree, ratio)
from bundle_bench import OCI_ACCEPT, TAG, Failed, build_images, http  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
BERTH = os.environ.get("BERTH", "build/berth")
PUSH_RUNS = int(os.environ.get("BENCH_SCALE_PUSH_RUNS", "2"))
PULL_RUNS = int(os.environ.get("BENCH_SCALE_PULL_RUNS", "3"))
OSD_SIZE = os.environ.get("BENCH_SCALE_OSD_SIZE", "")
KEEP = os.environ.get("BENCH_KEEP", "") not in ("", "0")
REPLICAS = 3
ALL_CPUS = f"0-{(os.cpu_count() or 1) - 1}"
CHUNK = 10 * MIB  # storage.s3.chunksize for both registries (registry:2's default)
CMD_TIMEOUT = 300
START_TIMEOUT = 240  # RGW + PostgreSQL start

# The bash side: starts PostgreSQL (databases named in "$@") and the RGW, prints KEY=VALUE lines
# and READY, then waits for stdin to close; its EXIT trap (set by rgw_start: rgw_stop, then
# t_cleanup) stops radosgw, the OSD and the mon, then PostgreSQL. SIGTERM/INT/HUP exit through it.
BACKEND_SH = r"""
set -u
t_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0))
print(s.getsockname()[1])'
}
t_cleanup() { pg_stop; }
trap t_cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP
. tests/pg.sh
. tests/rgw.sh
t0=$(date +%s.%N)
pg_start >&2 || exit 1
for db in "$@"; do
    pg_createdb "$db" >&2 || { echo "scale: pg_createdb $db failed" >&2; exit 1; }
done
PG_START_SECONDS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
rgw_start "$SCALE_RGW_DIR" >&2 || exit 1
PG_POSTMASTER=$(head -1 "$PG_DIR/data/postmaster.pid")
for v in RGW_URL RGW_ACCESS_KEY RGW_SECRET_KEY RGW_REGION RGW_BUCKET RGW_PIDS RGW_DIR \
    RGW_START_SECONDS PG_HOST PG_PORT PG_USER PG_PASSWORD PG_DIR PG_POSTMASTER PG_START_SECONDS; do
    printf '%s=%s\n' "$v" "${!v}"
done
echo READY
read -r _ || true
exit 0
"""

REGISTRY_CONFIG = """version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
@S3@
  redirect:
    disable: true
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: @ADDR@
"""

# berth: the same, plus the local scratch directory and the shared database
BERTH_CONFIG = (REGISTRY_CONFIG
                .replace("storage:\n", "storage:\n  filesystem:\n    rootdirectory: @SCRATCH@\n")
                .replace("http:\n", """database:
  enabled: true
  host: @PGHOST@
  port: @PGPORT@
  user: @PGUSER@
  password: @PGPASSWORD@
  dbname: @DBNAME@
  sslmode: disable
http:
"""))


# ---------------------------------------------------------------- the backend (RGW + PostgreSQL)

class Backend:
    """tests/rgw.sh + tests/pg.sh in one bash process; env holds what they export."""

    def __init__(self, tmp, databases):
        self.tmp, self.databases = tmp, databases
        self.proc, self.env, self.error = None, {}, None
        self.logpath = os.path.join(tmp, "backend.log")
        self.rgw_dir = os.path.join(tmp, "rgw")

    def start(self, osd_size):
        env = dict(os.environ, SCALE_RGW_DIR=self.rgw_dir, RGW_OSD_SIZE=osd_size)
        env.pop("RGW_STORE", None)  # bluestore, the default
        if KEEP:
            env.update(RGW_KEEP="1", T_KEEP="1")
        logf = open(self.logpath, "ab")
        self.proc = subprocess.Popen(["bash", "-c", BACKEND_SH, "scale-backend"] + self.databases,
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=logf, env=env, start_new_session=True)
        logf.close()
        buf = b""
        deadline = time.time() + START_TIMEOUT
        fd = self.proc.stdout.fileno()
        while b"READY\n" not in buf:
            left = deadline - time.time()
            if left <= 0:
                raise Failed(f"RGW/PostgreSQL did not start in {START_TIMEOUT} s: "
                             f"{self.log_tail()}")
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    self.proc.wait()
                    raise Failed(f"RGW/PostgreSQL start failed (exit {self.proc.returncode}): "
                                 f"{self.log_tail()}")
                buf += chunk
        for line in buf.decode().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                self.env[k] = v
        return self

    def log_tail(self, n=800):
        return file_tail(self.logpath, n)

    def ceph_ticks(self):
        return sum((proc_stat(int(p)) or (0, 0))[1] for p in self.env.get("RGW_PIDS", "").split())

    def pg_ticks(self):
        pm = self.env.get("PG_POSTMASTER")
        if not pm:
            return 0
        return sum((proc_stat(p) or (0, 0))[1] for p in process_tree(int(pm)))

    def osd_block_bytes(self):
        """Bytes the OSD's sparse block file occupies on disk now."""
        try:
            return os.stat(os.path.join(self.rgw_dir, "osd.block")).st_blocks * 512
        except OSError:
            return None

    def stop(self):
        """Closes the bash side's stdin: its EXIT trap stops radosgw, OSD, mon, PostgreSQL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            log(f"bench: scale: backend shell {self.proc.pid} still running after 90 s; SIGTERM")
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.error = f"backend shell {self.proc.pid} did not stop: {self.log_tail()}"


def s3_yaml(be, rootdir):
    e = be.env
    return "\n".join([
        "  s3:",
        f"    accesskey: {e['RGW_ACCESS_KEY']}",
        f"    secretkey: {e['RGW_SECRET_KEY']}",
        f"    region: {e['RGW_REGION']}",
        f"    regionendpoint: {e['RGW_URL']}",
        f"    bucket: {e['RGW_BUCKET']}",
        f"    rootdirectory: {rootdir}",
        "    secure: false",
        "    v4auth: true",
        "    forcepathstyle: true",
        f"    chunksize: {CHUNK}",
    ])


# ---------------------------------------------------------------- servers

def start_registry(tmp, be, run):
    """docker-registry on rootdirectory /registry-RUN."""
    srv = Server("registry", "docker-registry (s3)", "registry")
    d = os.path.join(tmp, f"registry-{run}")
    os.makedirs(d)
    srv.config = os.path.join(d, "config.yml")
    with open(srv.config, "w") as f:
        f.write(REGISTRY_CONFIG.replace("@S3@", s3_yaml(be, f"/registry-{run}"))
                .replace("@ADDR@", f"127.0.0.1:{srv.port}"))
    # registry:2's aws-sdk-go panics at start when AWS_CA_BUNDLE is set ("LoadCustomCABundleError:
    # ... HTTPClient's transport unsupported type"); the RGW is plain http, so it is not needed
    saved = os.environ.pop("AWS_CA_BUNDLE", None)
    try:
        srv.start(["docker-registry", "serve", srv.config], os.path.join(d, "registry.log"),
                  cpu=ALL_CPUS)
    finally:
        if saved is not None:
            os.environ["AWS_CA_BUNDLE"] = saved
    return srv


def start_berths(tmp, be, binary, phase, n, run):
    """n berth replicas of one phase: rootdirectory /PHASE-RUN in the bucket and database
    PHASE_RUN, each its own address and scratch directory. Started one after the other (the first
    migrates the schema)."""
    out = []
    for i in range(1, n + 1):
        srv = Server(f"{phase}_{i}", f"berth {phase} replica {i}", "registry")
        d = os.path.join(tmp, f"{phase}-{run}", f"r{i}")
        os.makedirs(os.path.join(d, "scratch"))
        srv.config = os.path.join(d, "config.yml")
        pg = be.env
        with open(srv.config, "w") as f:
            f.write(BERTH_CONFIG.replace("@S3@", s3_yaml(be, f"/{phase}-{run}"))
                    .replace("@SCRATCH@", os.path.join(d, "scratch"))
                    .replace("@PGHOST@", pg["PG_HOST"]).replace("@PGPORT@", pg["PG_PORT"])
                    .replace("@PGUSER@", pg["PG_USER"]).replace("@PGPASSWORD@", pg["PG_PASSWORD"])
                    .replace("@DBNAME@", f"{phase}_{run}")
                    .replace("@ADDR@", f"127.0.0.1:{srv.port}"))
        out.append(srv)
        srv.start([binary, "serve", "-c", srv.config], os.path.join(d, "berth.log"), cpu=ALL_CPUS)
        if srv.error:
            break
    return out


# ---------------------------------------------------------------- timed client runs

def run_clients(cmds, logpath):
    """Starts every command at once (unpinned); returns (wall s to the last exit, [wall s of each],
    client CPU s). Raises Failed when one fails or times out (the others are killed)."""
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(logpath, "ab") as logf:
        for c in cmds:
            logf.write(("$ " + " ".join(c) + "\n").encode())
        logf.flush()
        t0 = time.perf_counter()
        procs = [subprocess.Popen(c, stdout=logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
                 for c in cmds]
        ends = [None] * len(procs)
        try:
            while None in ends:
                for i, p in enumerate(procs):
                    if ends[i] is None and p.poll() is not None:
                        ends[i] = time.perf_counter() - t0
                if time.perf_counter() - t0 > CMD_TIMEOUT:
                    raise Failed(f"{cmds[0][0]} {cmds[0][1]}: timed out after {CMD_TIMEOUT} s")
                time.sleep(0.01)
        finally:  # a timeout or a signal: no client outlives the step
            for i, p in enumerate(procs):
                if ends[i] is None and p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    bad = [(c, p.returncode) for c, p in zip(cmds, procs) if p.returncode != 0]
    if bad:
        with open(logpath, "rb") as f:
            tail = f.read()[-600:].decode(errors="replace").strip().replace("\n", " | ")
        raise Failed(f"{' '.join(bad[0][0][:3])} ... {bad[0][0][-1]} exited {bad[0][1]}"
                     f" ({len(bad)} of {len(cmds)} failed): {tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return max(ends), ends, cpu


def image_bytes(im):
    return sum(im["blobs"].values())


def check_pushed(url, im):
    """The manifest by tag has the pushed digest; every other blob answers HEAD with its size
    (not the manifest's own digest: registry:2 links manifests apart from blobs)."""
    st, _, body = http("GET", f"{url}/v2/{im['name']}/manifests/{TAG}", {"Accept": OCI_ACCEPT})
    got = "sha256:" + hashlib.sha256(body).hexdigest() if st == 200 else None
    if got != im["manifest"]:
        raise Failed(f"{url}/v2/{im['name']}/manifests/{TAG} -> {st}, digest {got} "
                     f"(want {im['manifest']}): {body[:200]!r}")
    for dg, size in im["blobs"].items():
        if dg == im["manifest"]:
            continue
        st, hd, _ = http("HEAD", f"{url}/v2/{im['name']}/blobs/{dg}")
        if st != 200 or int(hd.get("Content-Length", -1)) != size:
            raise Failed(f"HEAD {url}/v2/{im['name']}/blobs/{dg} -> {st}, "
                         f"Content-Length {hd.get('Content-Length')} (want {size})")


def check_pulled(dest, im):
    with open(os.path.join(dest, "index.json")) as f:
        got = json.load(f)["manifests"][0]["digest"]
    if got != im["manifest"]:
        raise Failed(f"pulled {im['name']} into {dest}: index names {got}, pushed "
                     f"{im['manifest']}")
    for dg, size in im["blobs"].items():
        p = os.path.join(dest, "blobs", "sha256", dg.split(":", 1)[1])
        if os.path.getsize(p) != size:
            raise Failed(f"pulled {im['name']}: blob {dg} has {os.path.getsize(p)} bytes, "
                         f"want {size}")


class Meter:
    """CPU ticks of the servers, Ceph and PostgreSQL, and of the whole machine, over a step."""

    def __init__(self, servers, be):
        self.servers, self.be = servers, be
        self.t = self.sample()

    def sample(self):
        return (sum(s.cpu_ticks() for s in self.servers if s.ok), self.be.ceph_ticks(),
                self.be.pg_ticks(), cpu_user_system_ticks(), time.time())

    def done(self, m, prefix, nbytes, client_cpu):
        a, b = self.t, self.sample()
        gib = nbytes / GIB
        m[prefix + "_server_cpu_ms_per_gib"] = ((b[0] - a[0]) * 1000 / CLK / gib
                                                if self.servers else None)
        m[prefix + "_ceph_cpu_ms_per_gib"] = (b[1] - a[1]) * 1000 / CLK / gib
        m[prefix + "_pg_cpu_ms_per_gib"] = (b[2] - a[2]) * 1000 / CLK / gib
        m[prefix + "_client_cpu_ms_per_gib"] = client_cpu * 1000 / gib
        span = (b[4] - a[4]) * CLK * (os.cpu_count() or 1)
        m[prefix + "_machine_busy_pct"] = (b[3] - a[3]) * 100 / span if span > 0 else None
        # what none of the above (nor this script's clients) used: other work on the machine
        known = (b[0] - a[0]) + (b[1] - a[1]) + (b[2] - a[2]) + client_cpu * CLK
        m[prefix + "_other_cpu_pct"] = (max(0.0, (b[3] - a[3]) - known) * 100 / span
                                        if span > 0 else None)


def measure_push(m, phase, servers, be, push_plan, tmp):
    """One timed push of every (image, server) of push_plan at once into an empty store; keeps the
    best run's figures in m. Then checks every image through every server of the phase."""
    clog = os.path.join(tmp, f"{phase}-skopeo.log")
    pushed = sum(image_bytes(im) for im, _ in push_plan)
    m["clients"], m["push_bytes"] = len(push_plan), pushed
    meter = Meter(servers, be)
    wall, each, cpu = run_clients(
        [["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{im['dir']}:{TAG}",
          f"docker://127.0.0.1:{s.port}/{im['name']}:{TAG}"] for im, s in push_plan], clog)
    m.setdefault("push_runs_s", []).append(round(wall, 3))
    if "push_s" not in m or wall < m["push_s"]:
        meter.done(m, "push", pushed, cpu)
        m["push_s"], m["push_client_s"] = round(wall, 3), [round(x, 3) for x in each]
        m["push_mib_s"] = pushed / MIB / wall
    log(f"bench: scale: {phase}: push {pushed / MIB:.0f} MiB in {wall:.2f} s "
        f"({pushed / MIB / wall:.0f} MiB/s)")
    for s in servers:  # every image through every server of the phase
        for im, _ in push_plan:
            check_pushed(s.url, im)


def measure_pull(m, phase, servers, be, pull_plan, tmp, sink):
    """PULL_RUNS timed pulls of every (image, server) of pull_plan at once; the best in m."""
    clog = os.path.join(tmp, f"{phase}-skopeo.log")
    pulled = sum(image_bytes(im) for im, _ in pull_plan)
    m["pull_bytes"], m["pull_runs_s"] = pulled, []
    for r in range(PULL_RUNS):
        dests = [os.path.join(sink, f"{phase}-pull{r}-{n}") for n in range(len(pull_plan))]
        meter = Meter(servers, be)
        wall, each, cpu = run_clients(
            [["skopeo", "copy", "-q", "--src-tls-verify=false",
              f"docker://127.0.0.1:{s.port}/{im['name']}:{TAG}", f"oci:{d}:{TAG}"]
             for (im, s), d in zip(pull_plan, dests)], clog)
        m["pull_runs_s"].append(round(wall, 3))
        for (im, _), d in zip(pull_plan, dests):
            check_pulled(d, im)
            shutil.rmtree(d, ignore_errors=True)
        if "pull_s" not in m or wall < m["pull_s"]:
            meter.done(m, "pull", pulled, cpu)
            m["pull_s"], m["pull_client_s"] = round(wall, 3), [round(x, 3) for x in each]
            m["pull_mib_s"] = pulled / MIB / wall
        log(f"bench: scale: {phase}: pull {pulled / MIB:.0f} MiB in {wall:.2f} s")
    m["peak_rss_mib"] = [round(s.mem_kib("VmHWM") / 1024, 1) for s in servers if s.ok]
    m["peak_rss_mib_max"] = max(m["peak_rss_mib"], default=None)


def rgw_curl(be, args):
    """curl signed as tests/rgw.sh's rgw_curl signs (SigV4, UNSIGNED-PAYLOAD); returns -w output."""
    e = be.env
    cmd = ["curl", "-sS", "--max-time", str(CMD_TIMEOUT), "--aws-sigv4",
           f"aws:amz:{e['RGW_REGION']}:s3",
           "--user", f"{e['RGW_ACCESS_KEY']}:{e['RGW_SECRET_KEY']}",
           "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"] + args
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=CMD_TIMEOUT + 10)
    if r.returncode != 0:
        raise Failed(f"curl {' '.join(args[-2:])}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def measure_direct(be, im, sink):
    """The RGW alone: every blob of im PUT as one object, then GET into tmpfs, one curl after
    the other (no registry): what one sequential client gets from this backend."""
    m = {"clients": 1}
    bucket = f"{be.env['RGW_URL']}/{be.env['RGW_BUCKET']}/direct"
    blobdir = os.path.join(im["dir"], "blobs", "sha256")
    nbytes = image_bytes(im)
    m["push_bytes"] = m["pull_bytes"] = nbytes
    os.sync()
    meter = Meter([], be)
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    for dg in im["blobs"]:
        h = dg.split(":", 1)[1]
        code = rgw_curl(be, ["-T", os.path.join(blobdir, h), "-o", "/dev/null",
                             "-w", "%{http_code}", f"{bucket}/{h}"])
        if code != "200":
            raise Failed(f"direct PUT {bucket}/{h} -> {code}")
    wall = time.perf_counter() - t0
    meter.done(m, "push", nbytes, rusage_cpu(c0))
    m["push_s"], m["push_mib_s"] = round(wall, 3), nbytes / MIB / wall
    m["pull_runs_s"] = []
    for _ in range(PULL_RUNS):
        os.sync()
        meter = Meter([], be)
        t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        for dg, size in im["blobs"].items():
            h = dg.split(":", 1)[1]
            out = os.path.join(sink, "direct-" + h)
            got = rgw_curl(be, ["-o", out, "-w", "%{http_code} %{size_download}",
                                f"{bucket}/{h}"]).split()
            if got != ["200", str(size)]:
                raise Failed(f"direct GET {bucket}/{h} -> {got}, want 200 and {size} bytes")
        wall = time.perf_counter() - t0
        for dg in im["blobs"]:
            os.unlink(os.path.join(sink, "direct-" + dg.split(":", 1)[1]))
        m["pull_runs_s"].append(round(wall, 3))
        if "pull_s" not in m or wall < m["pull_s"]:
            meter.done(m, "pull", nbytes, rusage_cpu(c0))
            m["pull_s"], m["pull_mib_s"] = round(wall, 3), nbytes / MIB / wall
    log(f"bench: scale: RGW direct: PUT {nbytes / MIB:.0f} MiB at {m['push_mib_s']:.0f} MiB/s, "
        f"GET at {m['pull_mib_s']:.0f} MiB/s")
    return m


def rusage_cpu(before):
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# ---------------------------------------------------------------- the run

def osd_size_for(tmp, need):
    """RGW_OSD_SIZE: BENCH_SCALE_OSD_SIZE, else 8G, or less when the disk is short. The block
    file is sparse: only what the OSD writes takes space."""
    free = shutil.disk_usage(tmp).free
    if free < need + 2 * GIB:
        raise Failed(f"{tmp}: {free / GIB:.1f} GiB free; the RGW needs about "
                     f"{(need + 2 * GIB) / GIB:.1f} GiB there for its OSD file")
    if OSD_SIZE:
        return OSD_SIZE
    return f"{max(need, min(8 * GIB, free - 2 * GIB)) // MIB}M"


def pull_sink(tmp, need):
    """tmpfs for the pulled layouts when it has room (the disk is then not what is measured)."""
    for d in ("/dev/shm", tmp):
        try:
            if shutil.disk_usage(d).free > need + 512 * MIB:
                p = tempfile.mkdtemp(prefix="berth-scale-pull.", dir=d)
                return p
        except OSError:
            continue
    raise Failed(f"no room for {need / MIB:.0f} MiB of pulled images in /dev/shm or {tmp}")


def run(tmp, res, cleanup):
    warning = wait_quiet("scale section: ", 0.10)
    if warning:
        res["warnings"].append(warning)
    binary = None
    if os.access(BERTH, os.X_OK):
        binary = os.path.join(tmp, "berth.bin")  # a rebuild mid-run must not change the subject
        shutil.copy2(BERTH, binary)
    else:
        res["errors"].append(f"{BERTH} not built; measuring docker-registry only")
    try:
        os.nice(-10)
    except OSError:
        pass

    images = build_images()
    if len(images) < REPLICAS:
        raise Failed(f"need {REPLICAS} bundle test images, BENCH_BUNDLE_IMAGES gives "
                     f"{len(images)}")
    images = images[:REPLICAS]
    one = image_bytes(images[0])
    total = sum(image_bytes(im) for im in images)
    # stored: registry (upload + copy) 2x, berth x1, berth x3; Ceph's own overhead on top
    osd_size = osd_size_for(tmp, 2 * PUSH_RUNS * (3 * one + total))
    sink = pull_sink(tmp, total)
    cleanup.append(lambda: shutil.rmtree(sink, ignore_errors=True))
    res["params"] = {
        "image_bytes": [image_bytes(im) for im in images],
        "layers_per_image": len(images[0]["blobs"]) - 2, "push_runs": PUSH_RUNS,
        "pull_runs": PULL_RUNS, "statistic": "best run", "replicas": REPLICAS,
        "cpus": os.cpu_count(),
        "pinning": "none (servers, Ceph, PostgreSQL and clients share all CPUs)",
        "s3_chunksize": CHUNK, "rgw_store": "bluestore", "rgw_osd_size": osd_size,
        "pull_sink": os.path.dirname(sink),
        "skopeo": subprocess.run(["skopeo", "--version"], capture_output=True,
                                 text=True).stdout.strip(),
        "units": "MiB=2^20 bytes; MiB/s = blob bytes of all images / wall s"}
    log(f"bench: scale: starting PostgreSQL and Ceph RGW (bluestore, OSD {osd_size}); "
        f"temp dir {tmp}")
    be = Backend(tmp, [f"{p}_{r}" for p in ("berth1", "berth3") for r in range(1, PUSH_RUNS + 1)])
    cleanup.append(be.stop)
    t0 = time.time()
    be.start(osd_size)
    res["backend"] = {"start_s": round(time.time() - t0, 1),
                      "rgw_start_s": float(be.env.get("RGW_START_SECONDS") or 0),
                      "pg_start_s": float(be.env.get("PG_START_SECONDS") or 0),
                      "rgw_url": be.env.get("RGW_URL"), "bucket": be.env.get("RGW_BUCKET"),
                      "rgw_dir": be.env.get("RGW_DIR"), "pg_dir": be.env.get("PG_DIR")}
    log(f"bench: scale: RGW on {be.env['RGW_URL']} (bucket {be.env['RGW_BUCKET']}), PostgreSQL "
        f"on {be.env['PG_HOST']}:{be.env['PG_PORT']}; up in {res['backend']['start_s']} s")

    def phase(key, start, plans):
        """PUSH_RUNS times: start(run) -> servers on an empty store, push; pulls after the last.
        plans(servers) -> (push plan, pull plan)."""
        m = res[key] = {}
        for run in range(1, PUSH_RUNS + 1):
            servers = []
            try:
                servers = start(run)
                bad = [s for s in servers if s.error]
                if bad:
                    raise Failed(f"{bad[0].label}: {bad[0].error}")
                push_plan, pull_plan = plans(servers)
                measure_push(m, key, servers, be, push_plan, tmp)
                if run == PUSH_RUNS:
                    measure_pull(m, key, servers, be, pull_plan, tmp, sink)
            except (Failed, OSError, ValueError, KeyError) as e:
                msg = f"{key}: {e}"
                for s in servers:
                    if s.proc is not None and s.proc.poll() is not None and s.error is None:
                        msg += f" ({s.label} exited {s.proc.returncode}; log: {s.log_tail()})"
                log("bench: scale: FAILED " + msg)
                res["errors"].append(msg)
                m["error"] = msg
                return
            finally:
                for s in servers:
                    was_up = s.ok
                    s.stop()
                    if was_up and s.proc.returncode == -signal.SIGKILL:
                        res["warnings"].append(f"{s.label} (run {run}) did not exit within 5 s "
                                               "of SIGTERM: killed")
                    lines = log_problems(s)
                    if lines:
                        res["server_log_lines"][f"{s.label} (run {run})"] = lines

    im1 = images[0]
    try:
        res["direct"] = measure_direct(be, im1, sink)
    except (Failed, OSError, subprocess.TimeoutExpired) as e:
        res["errors"].append(f"RGW direct: {e}")
        res["direct"] = {"error": str(e)}
    phase("registry", lambda run: [start_registry(tmp, be, run)],
          lambda sv: ([(im1, sv[0])], [(im1, sv[0])]))
    if binary:
        phase("berth1", lambda run: start_berths(tmp, be, binary, "berth1", 1, run),
              lambda sv: ([(im1, sv[0])], [(im1, sv[0])]))
        # img_N pushed via replica N, pulled via replica N+1
        phase("berth3", lambda run: start_berths(tmp, be, binary, "berth3", REPLICAS, run),
              lambda sv: ([(im, sv[i]) for i, im in enumerate(images)],
                          [(im, sv[(i + 1) % REPLICAS]) for i, im in enumerate(images)]))
    blocks = be.osd_block_bytes()
    if blocks is not None:
        res["backend"]["osd_block_on_disk_bytes"] = blocks
    be.stop()
    if be.error:
        res["errors"].append(be.error)
    return res


def log_problems(srv, n=20):
    """The last n error lines of a server's log, without registry:2's expected 404s (the HEADs
    a client sends before uploading a blob)."""
    try:
        with open(srv.logpath, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except (OSError, AttributeError):  # AttributeError: never started
        return []
    keys = ("level=error", "level=fatal", "level=panic", "level=crit", "panic:")
    out = [ln for ln in lines if any(k in ln.lower() for k in keys)
           and not ("err.code=\"blob unknown\"" in ln and "method=HEAD" in ln)]
    return out[-n:]


# ---------------------------------------------------------------- report

ROWS = [
    # (key, label, digits)
    ("clients", "clients (concurrent skopeo copies)", 0),
    ("push_mib_s", "push MiB/s (aggregate)", 0),
    ("pull_mib_s", "pull MiB/s (aggregate, best run)", 0),
    ("push_s", "push wall s", 2),
    ("pull_s", "pull wall s", 2),
    ("push_server_cpu_ms_per_gib", "push server CPU ms/GiB", 0),
    ("pull_server_cpu_ms_per_gib", "pull server CPU ms/GiB", 0),
    ("push_ceph_cpu_ms_per_gib", "push Ceph (rgw+osd+mon) CPU ms/GiB", 0),
    ("pull_ceph_cpu_ms_per_gib", "pull Ceph (rgw+osd+mon) CPU ms/GiB", 0),
    ("push_pg_cpu_ms_per_gib", "push PostgreSQL CPU ms/GiB", 0),
    ("push_client_cpu_ms_per_gib", "push skopeo CPU ms/GiB", 0),
    ("pull_client_cpu_ms_per_gib", "pull skopeo CPU ms/GiB", 0),
    ("push_machine_busy_pct", "push machine CPU busy %", 0),
    ("pull_machine_busy_pct", "pull machine CPU busy %", 0),
    ("peak_rss_mib_max", "peak RSS MiB (largest server)", 1),
    ("push_other_cpu_pct", "push other processes' CPU %", 0),
    ("pull_other_cpu_pct", "pull other processes' CPU %", 0),
]


def report(res, started):
    p = res.get("params", {})
    d, reg, b1, b3 = (res.get(k, {}) for k in ("direct", "registry", "berth1", "berth3"))
    table = []
    for key, label, nd in ROWS:
        r, x1, x3 = reg.get(key), b1.get(key), b3.get(key)
        ratios = key.endswith("mib_s")
        table.append([label, fmt(d.get(key), nd), fmt(r, nd), fmt(x1, nd), fmt(x3, nd),
                      fmt(ratio(x1, r), 2) if ratios else "-",
                      fmt(ratio(x3, x1), 2) if ratios else "-"])
    sizes = p.get("image_bytes", [0])
    print()
    print(f"scale-out: {len(sizes)} images of {p.get('layers_per_image', '?')} layers, "
          f"{sizes[0] / MIB:.0f} MiB each, pushed then pulled with skopeo; one Ceph RGW "
          f"({p.get('rgw_store', 'bluestore')}, 1 OSD) + PostgreSQL")
    print(f"           under every server; nothing pinned ({p.get('cpus', os.cpu_count())} CPUs "
          "shared by servers, Ceph, PostgreSQL and clients)")
    print_table(["scale-out", "RGW direct", "docker-registry", "berth x1", "berth x3",
                 "berth x1/registry", "berth x3/berth x1"], table)
    print("notes: RGW direct = curl PUT/GET of the same blobs straight to the RGW, one after the "
          "other (no registry; context only).")
    print("       registry = docker-registry's s3 driver (storage.redirect.disable: it streams "
          "GETs); berth x1 = one berth, x3 = three")
    print("       (same bucket + database, own address and scratch dir each), img_N pushed via "
          "replica N and pulled via N+1, all")
    print(f"       at once. registry and berth x1: one client, one image. Push: best of "
          f"{p.get('push_runs', PUSH_RUNS)}, each into an empty store; pull: best of "
          f"{p.get('pull_runs', PULL_RUNS)},")
    print("       into tmpfs. MiB/s = blob bytes of all images / wall s from the first client's "
          "start to the last one's end.")
    print("       skopeo pushes an oci: layout's layers one at a time and pulls up to 6 at once. "
          "'server CPU' = docker-registry's,")
    print("       or all berth replicas' together; 'other processes' = machine CPU used by none of "
          "these (other work).")
    print("no target for this row: figures only.")
    for key in ("direct", "registry", "berth1", "berth3"):
        for step in ("push", "pull"):
            v = res.get(key, {}).get(step + "_other_cpu_pct")
            if v is not None and v > 10:
                res["warnings"].append(f"other processes used {v:.0f}% of the machine's CPU "
                                       f"during the {key} {step}: figures are noisy")
    problems = res["errors"] + [f"warning: {w}" for w in res["warnings"]]
    for label, lines in res.get("server_log_lines", {}).items():
        problems += [f"{label} log: {ln}" for ln in lines]
    if problems:
        print()
        print("problems:")
        for e in problems:
            print("  scale: " + e)
    res["elapsed_s"] = round(time.time() - started, 1)
    be = res.get("backend", {})
    print()
    print(f"scale section took {res['elapsed_s']:.0f} s (RGW + PostgreSQL start "
          f"{be.get('start_s', 0):.0f} s)")


def main(argv):
    out = json_out_arg(argv)
    missing = [t for t in ("skopeo", "docker-registry", "ceph-mon", "ceph-osd", "radosgw",
                           "radosgw-admin", "ceph-authtool", "monmaptool", "runuser")
               if not shutil.which(t)]
    if missing:
        print(f"bench: scale: missing {' '.join(missing)} (scripts/deps.sh)", file=sys.stderr)
        return 2
    started = time.time()
    # short: rgw.sh keeps admin socket paths under 108 bytes only for a directory under 60 chars
    tmp = tempfile.mkdtemp(prefix="berth-scale.", dir="/tmp")
    res = {"errors": [], "warnings": [], "server_log_lines": {}}
    cleanup = []
    exit_on_signals()
    try:
        try:
            run(tmp, res, cleanup)
        except Failed as e:
            res["errors"].append(str(e))
            log("bench: scale: FAILED " + str(e))
    finally:
        for fn in reversed(cleanup):
            fn()
        if KEEP:
            be = res.get("backend", {})
            log(f"bench: scale: kept {tmp} (Ceph: {be.get('rgw_dir')}, its osd.block is a sparse "
                f"file of some GiB; PostgreSQL: {be.get('pg_dir')}); remove them when done")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(res, started)
    if out:
        merge_json(out, "scale", res)
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main(sys.argv[1:]))
