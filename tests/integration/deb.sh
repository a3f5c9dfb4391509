#!/usr/bin/env bash
# berth's Debian package (issue 22), tested as an operator meets it: `make deb` builds it, this
# installs it with dpkg into a throwaway Debian root (a minbase bookworm made once by mmdebstrap,
# build/deb/root-<arch>.tar: `make debroot`), runs the installed binary as the berth user with the
# unit's own ExecStart (chrooted; under qemu-user through binfmt for a foreign package), pushes
# and pulls through it, then removes (conffile and data kept) and purges (both gone, and the user).
# Beside it, on this machine's architecture, two claims of the unit are checked against the
# installed binary: MemoryDenyWriteExecute (berth under the kernel's MDWE still serves TLS, whose
# trampolines and dlopen'ed GnuTLS it needs, and a Helm upload, which dlopens libarchive), and the
# SystemCallFilter (every system call berth makes while serving a push and a pull, traced, is one
# the unit's filter allows). systemd-analyze verify must pass on the installed units.
#
#   DEB=build/berth_<version>_<arch>.deb   the package (default: this machine's architecture)
#   DEB_ROOT=build/deb/root-<arch>.tar      the root file system tar for that architecture
. "$(dirname "$0")/../lib.sh"
host_arch=$(dpkg --print-architecture)
ver=$(sed -n 's/^#define BERTH_VERSION "\(.*\)"/\1/p' "$T_ROOT/src/serve.h")
DEB=${DEB:-$T_ROOT/build/berth_${ver}_$host_arch.deb}
if [ ! -f "$DEB" ]; then
    t_fail "the package $DEB exists (make deb)"
    t_finish
fi
arch=$(dpkg-deb -f "$DEB" Architecture)
DEB_ROOT=${DEB_ROOT:-$T_ROOT/build/deb/root-$arch.tar}
if [ ! -f "$DEB_ROOT" ]; then
    t_fail "a $arch root to install into: $DEB_ROOT (make debroot ARCH=$arch)"
    t_finish
fi
R=$T_TMP/root
mkdir -p "$R"
tar -xf "$DEB_ROOT" -C "$R"
if [ "$arch" != "$host_arch" ]; then
    # binfmt looks the interpreter up inside the chroot (no F flag): give it one
    case $arch in arm64) q=aarch64 ;; armhf) q=arm ;; *) q=$arch ;; esac
    interp=$(sed -n 's/^interpreter //p' "/proc/sys/fs/binfmt_misc/qemu-$q")
    mkdir -p "$R$(dirname "$interp")" "$R/usr/bin"
    cp "$interp" "$R$interp"
    cp "/usr/bin/qemu-$q-static" "$R/usr/bin/"
fi
cp "$DEB" "$R/tmp/berth.deb"
# in_root CMD...: runs CMD in the root, with its own /proc, in a private mount namespace
IN_ROOT=(unshare --mount --fork --kill-child=SIGTERM sh -c 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' "$R")
in_root() { "${IN_ROOT[@]}" "$@"; }

# ---- install ----
t_check "dpkg -i installs the $arch package" in_root dpkg -i /tmp/berth.deb
t_check "/usr/bin/berth is the package's ($arch) binary" test "$(t_bin_arch "$R/usr/bin/berth")" = "$arch"
t_eq "/etc/berth/config.yml is a conffile" /etc/berth/config.yml \
    "$(in_root dpkg-query -W -f='${Conffiles}\n' berth | awk 'NF {print $1}')"
t_eq "a berth system user, no login shell" "/var/lib/berth:/usr/sbin/nologin" \
    "$(in_root getent passwd berth | cut -d: -f6,7)"
uid=$(in_root id -u berth)
t_check "a system uid ($uid)" test "$uid" -lt 1000
t_eq "/var/lib/berth is the berth user's, 0750" "berth berth 750" "$(in_root stat -c '%U %G %a' /var/lib/berth)"
t_check "the man page is installed" test -s "$R/usr/share/man/man8/berth.8.gz"
t_check "the license is installed" grep -q "Apache License" "$R/usr/share/doc/berth/copyright"
for u in berth.service berth-gc.service berth-gc.timer; do
    t_check "$u installed" test -s "$R/lib/systemd/system/$u"
done
# verified here (the minbase root has no systemd), with ExecStart= pointing at the package's binary
dpkg-deb -x "$DEB" "$T_TMP/x"
mkdir -p "$T_TMP/units"
for u in berth.service berth-gc.service berth-gc.timer; do
    sed "s|/usr/bin/berth|$T_TMP/x/usr/bin/berth|" "$R/lib/systemd/system/$u" >"$T_TMP/units/$u"
done
t_check "systemd-analyze verify passes on the installed units" systemd-analyze verify --man=no \
    "$T_TMP/units/berth.service" "$T_TMP/units/berth-gc.service" "$T_TMP/units/berth-gc.timer"
unit=$R/lib/systemd/system/berth.service
for k in ProtectSystem=strict StateDirectory=berth NoNewPrivileges=yes PrivateTmp=yes \
    MemoryDenyWriteExecute=yes CapabilityBoundingSet= User=berth; do
    t_check "berth.service: $k" grep -qx "$k" "$unit"
done
t_check "berth.service: LimitNOFILE" grep -q "^LimitNOFILE=[0-9]" "$unit"
t_check "berth.service: a SystemCallFilter" grep -q "^SystemCallFilter=@system-service" "$unit"
t_check "berth-gc.timer starts berth-gc.service daily" grep -qx OnCalendar=daily "$R/lib/systemd/system/berth-gc.timer"

# ---- run the installed binary as the unit does, push and pull ----
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
PORT=$(t_port)
U=127.0.0.1:$PORT
# the package's own configuration; only the port is this test's (port 5000 may be taken here).
# $! is unshare's pid, and berth (every step after it exec'ing) its only child
env REGISTRY_HTTP_ADDR="$U" "${IN_ROOT[@]}" setpriv --reuid=berth --regid=berth --init-groups \
    --no-new-privs sh -c "cd /var/lib/berth && exec $exec_start" >"$T_TMP/berth.log" 2>&1 &
upid=$!
T_PIDS+=("$upid")
if ! t_wait_http "http://$U/v2/" 300; then
    t_fail "the installed berth starts as the berth user ($exec_start)" "$(tail -3 "$T_TMP/berth.log")"
    t_finish
fi
t_ok "the installed berth serves as the berth user ($exec_start)"
t_eq "/health answers 200" 200 "$(curl -s -o /dev/null -w '%{http_code}' "http://$U/health")"
python3 "$T_ROOT/tests/fixtures/mkimage.py" image "$T_TMP/img" --layers 2 --seed 22 --tag v1 >/dev/null
want=$(python3 "$T_ROOT/tests/fixtures/mkimage.py" digest "$T_TMP/img" --tag v1)
t_check "skopeo copy pushes into the installed berth" \
    skopeo copy -q --dest-tls-verify=false "oci:$T_TMP/img:v1" "docker://$U/site/app:v1"
t_check "skopeo copy pulls it back" \
    skopeo copy -q --src-tls-verify=false "docker://$U/site/app:v1" "oci:$T_TMP/back:v1"
got=$(python3 "$T_ROOT/tests/fixtures/mkimage.py" digest "$T_TMP/back" --tag v1)
t_check "the pulled manifest is the pushed one ($want)" test -n "$want" -a "$want" = "$got"
t_check "the data is in /var/lib/berth, the berth user's" \
    test "$(stat -c %U "$R/var/lib/berth/metadata.db")" = "$(stat -c %U "$R/var/lib/berth")"
t_check "berth gc runs as the berth user (the timer's command)" in_root setpriv --reuid=berth \
    --regid=berth --init-groups sh -c "$(sed -n 's/^ExecStart=//p' "$R/lib/systemd/system/berth-gc.service")"
# berth is unshare's child (every step before it execs); stop it and wait until it is gone
bpid=$(pgrep -P "$upid")
t_check "the installed berth runs as the berth user" test "$(stat -c %u "/proc/$bpid")" = "$uid"
kill "$bpid"
for _ in $(seq 1 100); do kill -0 "$bpid" 2>/dev/null || break; sleep 0.1; done
wait "$upid" 2>/dev/null

# ---- remove: conffile and data kept; purge: both gone ----
echo "# a local change" >>"$R/etc/berth/config.yml"
t_check "dpkg -r removes the package" in_root dpkg -r berth
t_check "... the binary is gone" test ! -e "$R/usr/bin/berth"
t_check "... the changed conffile is kept" grep -q "a local change" "$R/etc/berth/config.yml"
t_check "... the data is kept" test -s "$R/var/lib/berth/metadata.db"
t_check "dpkg -P purges it" in_root dpkg -P berth
t_check "... the conffile is gone" test ! -e "$R/etc/berth"
t_check "... the data is gone" test ! -e "$R/var/lib/berth"
t_check "... the berth user is gone" bash -c "! grep -q '^berth:' '$R/etc/passwd'"

# ---- the unit's MemoryDenyWriteExecute and SystemCallFilter, on this machine's architecture ----
if [ "$arch" = "$host_arch" ]; then
    B=$T_TMP/x/usr/bin/berth
    # mdwe CMD...: CMD under the kernel's MDWE (PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN), what
    # systemd's MemoryDenyWriteExecute sets up; kept across exec
    cat >"$T_TMP/mdwe.py" <<'PY'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0 or libc.prctl(66, 0, 0, 0, 0) != 1:
    sys.exit("PR_SET_MDWE refused")
os.execvp(sys.argv[1], sys.argv[1:])
PY
    mdwe() { python3 "$T_TMP/mdwe.py" "$@"; }
    td=$T_TMP/mdwe
    mkdir -p "$td"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
        -addext "subjectAltName=IP:127.0.0.1" -keyout "$td/key.pem" -out "$td/cert.pem" 2>/dev/null
    printf 'version: 0.1\nhttp:\n  tls:\n    certificate: %s\n    key: %s\n' "$td/cert.pem" "$td/key.pem" >"$td/config.yml"
    P=$(t_port)
    REGISTRY_HTTP_ADDR=127.0.0.1:$P REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$td/data \
        python3 "$T_TMP/mdwe.py" "$B" serve -c "$td/config.yml" >"$td/berth.log" 2>&1 &
    mp=$!
    T_PIDS+=("$mp")
    t_wait_http "https://127.0.0.1:$P/v2/" 100
    t_check "MDWE works here: a writable and executable mapping is refused" \
        mdwe python3 -c 'import mmap,sys
try: mmap.mmap(-1, 4096, prot=7)
except PermissionError: sys.exit(0)
sys.exit(1)'
    t_eq "under MDWE, TLS works (trampolines, dlopen'ed GnuTLS)" 200 \
        "$(curl -s --cacert "$td/cert.pem" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$P/v2/")"
    python3 "$T_ROOT/tests/fixtures/mkchart.py" good "$td/c.tgz" app 0.1.0 >/dev/null
    t_eq "under MDWE, a Helm upload works (dlopen'ed libarchive)" 201 \
        "$(curl -s --cacert "$td/cert.pem" -o /dev/null -w '%{http_code}' --data-binary @"$td/c.tgz" "https://127.0.0.1:$P/api/charts")"
    kill "$mp"
    wait "$mp" 2>/dev/null

    # the system calls berth makes serving a push and a pull, against the unit's filter
    allowed() { # the names a group expands to, recursively
        systemd-analyze syscall-filter --no-pager "$1" | awk 'NF && $1 !~ /^#/ {print $1}' | while read -r n; do
            case $n in @*) [ "$n" != "$1" ] && allowed "$n" ;; *) echo "$n" ;; esac
        done
    }
    { allowed @system-service | sort -u >"$T_TMP/allow"; } 2>/dev/null
    { allowed @privileged; allowed @resources; } 2>/dev/null | sort -u >"$T_TMP/deny"
    P=$(t_port)
    # as the unit runs it, not as root (SQLite fchowns its files only when run as root)
    chmod 711 "$T_TMP"
    mkdir -p "$T_TMP/sdata" && chown 65534:65534 "$T_TMP/sdata"
    REGISTRY_HTTP_ADDR=127.0.0.1:$P REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$T_TMP/sdata \
        strace -f -qq -o "$T_TMP/strace" setpriv --reuid=65534 --regid=65534 --clear-groups "$B" serve -c "$T_TMP/x/etc/berth/config.yml" >"$T_TMP/s.log" 2>&1 &
    sp=$!
    T_PIDS+=("$sp")
    t_wait_http "http://127.0.0.1:$P/v2/" 300
    t_check "a push and a pull through the traced berth" bash -c "skopeo copy -q --dest-tls-verify=false \
        'oci:$T_TMP/img:v1' 'docker://127.0.0.1:$P/site/app:v2' && skopeo copy -q --src-tls-verify=false \
        'docker://127.0.0.1:$P/site/app:v2' 'oci:$T_TMP/back2:v2'"
    curl -s -o /dev/null "http://127.0.0.1:$P/health"
    kill $(pgrep -P "$sp") 2>/dev/null # berth, strace's child: strace then ends with it
    wait "$sp" 2>/dev/null
    # berth's own calls: those after setpriv, which started it, exec'ed it
    awk -v b="execve(\"$B\"" 'index($0, b) {on = 1; next}
        on {sub(/^[0-9]+ +/, ""); if (match($0, /^[a-z_0-9]+\(/)) print substr($0, 1, RLENGTH - 1)}' \
        "$T_TMP/strace" | sort -u >"$T_TMP/used"
    outside=$(comm -23 "$T_TMP/used" "$T_TMP/allow" | tr '\n' ' ')
    denied=$(comm -12 "$T_TMP/used" "$T_TMP/deny" | tr '\n' ' ')
    t_check "strace saw berth serve ($(wc -l <"$T_TMP/used") distinct system calls)" test "$(wc -l <"$T_TMP/used")" -gt 20
    t_eq "every system call is in @system-service" "" "$outside"
    t_eq "none is in @privileged or @resources (the unit's ~ list)" "" "$denied"
fi
t_finish
