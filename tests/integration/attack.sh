#!/usr/bin/env bash
# The outside attacker (issue 15): a hostile user of the site network, signed in with few rights
# (eve) or anonymous, tries to read what they may not, write where they may not, and exhaust
# berth's memory or time, over HTTP and with crafted files, never by calling internals. Each
# section names its goal; every check here failed on the berth before the fix.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"
t_need_tools curl jq python3 htpasswd docker-registry
ATK="python3 $T_ROOT/tests/fixtures/attacker.py"
MKC="python3 $T_ROOT/tests/fixtures/mkchart.py"
MT_OCI=application/vnd.oci.image.manifest.v1+json
W=$T_TMP/w
mkdir -p "$W" "$W/s" "$W/u" "$W/p" "$W/b"

HT=$T_TMP/htpasswd
htpasswd -cbB "$HT" alice alice-pw 2>/dev/null
htpasswd -bB "$HT" eve eve-pw 2>/dev/null
htpasswd -bB "$HT" bob bob-pw 2>/dev/null
htpasswd -bB -C 12 "$HT" slow slow-pw 2>/dev/null

registry_start "$T_TMP/up" || { t_fail "upstream registry starts"; t_finish; }

# a Helm chart repository upstream (origin A) whose index sends one chart to another origin (B)
HA=$(t_port)
HB=$(t_port)
mkdir -p "$W/ha/repo" "$W/hb"
$MKC good "$W/hb/far-1.0.0.tgz" far 1.0.0
$MKC index "$W/ha/repo/index.yaml" "http://127.0.0.1:$HB" "$W/hb/far-1.0.0.tgz"
sed -i "s#- far-1.0.0.tgz#- http://127.0.0.1:$HB/far-1.0.0.tgz#" "$W/ha/repo/index.yaml"
$ATK headerlog "$W/ha" "$HA" "$W/ha.log" &
T_PIDS+=($!)
$ATK headerlog "$W/hb" "$HB" "$W/hb.log" &
T_PIDS+=($!)

cat >"$T_TMP/config.yml" <<YML
version: 0.1
log: {level: info}
storage:
  delete: {enabled: false}
auth:
  htpasswd: {realm: berth, path: $HT}
access:
  default: [pull]
  admins: [alice]
  rules:
    - {repositories: ["secret/*", "charts/secret*"], users: ["*"], actions: [none]}
    - {repositories: ["eve/*", "charts/web"], users: [eve], actions: [pull, push]}
    - {repositories: ["public/*", "charts/pub*"], users: [anonymous, "*"], actions: [pull]}
mirrors:
  docker.io:
    urls: [$REG_URL]
    repositories: ["library/*"]
helm:
  upstreams:
    up: {url: "http://127.0.0.1:$HA/repo", username: helmuser, password: helmsecret}
YML
berth_start "$T_TMP" || { t_fail "berth starts"; t_finish; }
U=$BERTH_URL
code() { curl -s -o "$W/body" -w '%{http_code}' "$@"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$BERTH_PID/status"; }

# ---- the secret: alice's private image, with a layer nobody else has ------------------------
PL_CURL=(curl -s -u alice:alice-pw)
pl_make_config "$W/scfg.json" secret
pl_rand_blob "$W/slayer" 3000 4000
pl_push_image "$U" secret/app v1 "$W/s" "$W/scfg.json" "$W/slayer" >/dev/null || t_fail "alice pushes secret/app"
SECRET="sha256:$(t_sha256 "$W/slayer")"
PL_CURL=(curl -s)
t_eq "eve cannot read the secret blob where it lives" 403 \
    "$(code -u eve:eve-pw "$U/v2/secret/app/blobs/$SECRET")"

# ---- 1. read any blob through mirror space ----------------------------------------------------
t_eq "1. eve: GET /v2/docker.io/library/nothing/blobs/<secret> is not served" 404 \
    "$(code -u eve:eve-pw "$U/v2/docker.io/library/nothing/blobs/$SECRET")"
t_eq "1. ... nor with ?ns=docker.io" 404 \
    "$(code -u eve:eve-pw "$U/v2/library/nothing/blobs/$SECRET?ns=docker.io")"
t_eq "1. ... nor as a bare name (the Docker Hub mirror's)" 404 \
    "$(code -u eve:eve-pw "$U/v2/nothing/blobs/$SECRET")"
t_eq "1. ... and HEAD says the same" 404 \
    "$(code -I -u eve:eve-pw "$U/v2/docker.io/library/nothing/blobs/$SECRET")"
t_eq "1. ... and nothing was linked: a second GET is still refused" 404 \
    "$(code -u eve:eve-pw "$U/v2/docker.io/library/nothing/blobs/$SECRET")"
# the mirror still serves what its upstream holds, including a blob the store already has
pl_push_image "$REG_URL" library/shared v1 "$W/u" "$W/scfg.json" "$W/slayer" >/dev/null ||
    t_fail "the same layer pushed upstream"
t_eq "1. a blob the upstream does hold for that repository is served" 200 \
    "$(code -u eve:eve-pw "$U/v2/docker.io/library/shared/blobs/$SECRET")"
t_check "1. ... with the right bytes" cmp "$W/body" "$W/slayer"

# ---- 2. cross-repository mount --------------------------------------------------------------
t_eq "2. eve: mount=<secret> without from= opens an upload (202), mounts nothing" 202 \
    "$(code -u eve:eve-pw -X POST "$U/v2/eve/x/blobs/uploads/?mount=$SECRET")"
t_eq "2. eve: mount=<secret>&from=secret/app (no pull there): 202" 202 \
    "$(code -u eve:eve-pw -X POST "$U/v2/eve/x/blobs/uploads/?mount=$SECRET&from=secret/app")"
t_eq "2. ... and the blob is not readable in eve/x" 404 \
    "$(code -u eve:eve-pw "$U/v2/eve/x/blobs/$SECRET")"
PL_CURL=(curl -s -u alice:alice-pw)
pl_push_image "$U" public/base v1 "$W/p" "$W/scfg.json" "$W/slayer" >/dev/null || t_fail "alice pushes public/base"
PL_CURL=(curl -s)
t_eq "2. a mount from a repository eve may pull still mounts (201)" 201 \
    "$(code -u eve:eve-pw -X POST "$U/v2/eve/y/blobs/uploads/?mount=$SECRET&from=public/base")"

# ---- 3. catalog paging ----------------------------------------------------------------------
PL_CURL=(curl -s -u alice:alice-pw)
mkdir -p "$W/z"
pl_push_image "$U" zz/visible v1 "$W/z" "$W/scfg.json" "$W/slayer" >/dev/null || t_fail "alice pushes zz/visible"
PL_CURL=(curl -s)
next="/v2/_catalog?n=1"
: >"$W/cat.txt"
for _ in $(seq 1 40); do
    curl -s -u eve:eve-pw -D "$W/cat.h" "$U$next" | jq -r '.repositories[]' >>"$W/cat.txt"
    grep -i '^link:' "$W/cat.h" >>"$W/cat.txt"
    next=$(grep -i '^link:' "$W/cat.h" | sed -E 's/^[Ll]ink: <([^>]*)>.*/\1/' | tr -d '\r')
    [ -n "$next" ] || break
done
t_check "3. no catalog page or Link header names a repository eve cannot see" \
    bash -c "! grep -q secret '$W/cat.txt'"
t_check "3. ... while paging still reaches every visible one" grep -q '^zz/visible$' "$W/cat.txt"

# ---- 4, 5, 6, 7: the Helm API ----------------------------------------------------------------
$MKC good "$W/web-1.0.0-0.0.0.tgz" web-1.0.0 0.0.0
$MKC good "$W/web-1.0.0-0.0.0b.tgz" web 1.0.0-0.0.0
$MKC good "$W/secretchart-1.0.0.tgz" secretchart 1.0.0
t_eq "alice uploads chart web-1.0.0 0.0.0" 201 \
    "$(code -u alice:alice-pw --data-binary @"$W/web-1.0.0-0.0.0.tgz" "$U/api/charts")"
t_eq "4. DELETE of a chart with storage.delete.enabled: false is refused (405)" 405 \
    "$(code -u alice:alice-pw -X DELETE "$U/api/charts/web-1.0.0/0.0.0")"
t_eq "4. ... and the chart is still there" 200 \
    "$(code -u alice:alice-pw "$U/api/charts/web-1.0.0/0.0.0")"
t_eq "5. eve's chart web 1.0.0-0.0.0 (same download name) is refused with 409" 409 \
    "$(code -u eve:eve-pw --data-binary @"$W/web-1.0.0-0.0.0b.tgz" "$U/api/charts")"
code -u bob:bob-pw "$U/charts/web-1.0.0-0.0.0.tgz" >/dev/null
t_check "5. ... and the download is still alice's chart" cmp "$W/body" "$W/web-1.0.0-0.0.0.tgz"
mkdir -p "$W/race"
$ATK charts "$W/race" raced 1.0.0 --n 8
t_eq "6. eight concurrent uploads of one chart version: one 201, seven 409" \
    "201 409 409 409 409 409 409 409" \
    "$($ATK race "$U/api/charts" --n 8 --chart-dir "$W/race" --auth alice:alice-pw)"
t_eq "alice uploads secretchart" 201 \
    "$(code -u alice:alice-pw --data-binary @"$W/secretchart-1.0.0.tgz" "$U/api/charts")"
a=$(code "$U/charts/secretchart-1.0.0.tgz")
b=$(code "$U/charts/nosuchchart-1.0.0.tgz")
t_eq "7. anonymous: a forbidden chart and a missing one get the same answer" "$b" "$a"
a=$(code -u bob:bob-pw "$U/charts/secretchart-1.0.0.tgz")
b=$(code -u bob:bob-pw "$U/charts/nosuchchart-1.0.0.tgz")
t_eq "7. bob: a forbidden chart and a missing one get the same answer (404)" "404 404" "$a $b"

# ---- 8. Helm upstream credentials stay with the upstream's origin -----------------------------
t_eq "8. a chart the upstream's index places on another host is fetched" 200 \
    "$(code -u alice:alice-pw "$U/up/charts/far-1.0.0.tgz")"
t_check "8. ... the upstream itself got the credentials" grep -q '^/repo/index.yaml Basic ' "$W/ha.log"
t_eq "8. ... the other host did not" "/far-1.0.0.tgz -" "$(grep far "$W/hb.log" | head -1)"

# ---- 10, 11: memory -------------------------------------------------------------------------
$ATK yamlbomb "$W/bomb.tgz"
r0=$(rss_kib)
t_eq "10. an anonymous alias-bomb chart upload is refused (401)" 401 \
    "$(code --data-binary @"$W/bomb.tgz" "$U/api/charts")"
t_eq "10. alice's alias-bomb chart is refused as bad YAML (400)" 400 \
    "$(code -u alice:alice-pw --data-binary @"$W/bomb.tgz" "$U/api/charts")"
t_check "10. ... naming the expansion ($(head -c 200 "$W/body"))" grep -q "expands to too much" "$W/body"
r1=$(rss_kib)
t_check "10. berth grew by less than 32 MiB for the bombs (${r0} -> ${r1} KiB)" test $((r1 - r0)) -lt 32768
$ATK stall "$U/api/charts" --conns 150 --declared 1048576 --send 524288 --stop "$W/stop" >"$W/stall.json" &
spid=$!
for _ in $(seq 1 100); do
    [ "$(ls "/proc/$BERTH_PID/fd" | wc -l)" -gt 150 ] && break
    sleep 0.1
done
sleep 1
r2=$(rss_kib)
touch "$W/stop"
wait "$spid"
t_check "11. 150 stalled anonymous chart uploads hold less than 32 MiB (${r1} -> ${r2} KiB)" \
    test $((r2 - r1)) -lt 32768
t_eq "11. ... every one was answered (refused) without waiting for its body" 150 \
    "$(jq -r .answered "$W/stall.json")"

# ---- 12, 15: passwords -----------------------------------------------------------------------
order=$($ATK signins "$U/v2/" --user slow --n 4 --probe "$U/health" | jq -r '.order[0]')
t_eq "12. /health answers before four bcrypt checks (cost 12) in flight finish" probe "$order"
for i in 1 2 3 4 5 6 7; do code -u "bob:wrong$i" "$U/v2/" >/dev/null; done
t_eq "12. after repeated failures an address is refused before any password check (429)" 429 \
    "$(code -u bob:bob-pw "$U/v2/")"
t_check "12. ... with Retry-After" bash -c "curl -s -D - -o /dev/null -u bob:bob-pw '$U/v2/' | grep -qi '^retry-after: [1-9]'"
berth_stop
berth_start "$T_TMP" || { t_fail "berth restarts"; t_finish; }
U=$BERTH_URL
# medians of 3 each: six failures, under the sign-in back-off (5 free); the old binary refused
# an unknown user 160 times faster, so a quarter leaves room for a loaded machine
known=$($ATK timing "$U/v2/" --user slow --n 3)
unknown=$($ATK timing "$U/v2/" --user nobody-here --n 3)
t_check "15. an unknown user is refused about as slowly as a wrong password ($unknown s against $known s)" \
    python3 -c "import sys; sys.exit(0 if $unknown > 0.25 * $known else 1)"

# ---- 16. log injection ----------------------------------------------------------------------
code "$U/v2/x%0Amsg=forged%20status=200/tags/list" >/dev/null
code -u "$(printf 'eve\nmsg=forged-user')":x "$U/v2/" >/dev/null
sleep 0.3
t_check "16. no log line was forged by a path or a user name" bash -c "! grep -q '^msg=forged' '$T_TMP/berth.log'"

# ---- 17. one port, one berth ----------------------------------------------------------------
REGISTRY_HTTP_ADDR=127.0.0.1:$BERTH_PORT REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$W/second \
    timeout 5 "$BERTH" serve >"$W/second.log" 2>&1
rc=$?
t_check "17. a second berth on the same port stops with an error (status $rc)" test "$rc" -ne 0 -a "$rc" -ne 124
t_check "17. ... saying why ($(tail -c 200 "$W/second.log"))" grep -qi "cannot listen" "$W/second.log"
berth_stop

# ---- 9. compose archives that escape through links -------------------------------------------
mkdir -p "$T_TMP/m"
printf 'version: 0.1\nmargo: {validation: "off"}\n' >"$T_TMP/m/config.yml"
berth_start "$T_TMP/m" || { t_fail "berth starts (margo off)"; t_finish; }
U=$BERTH_URL
$ATK compose-escape "$U" comp/esc 1.0.0 >"$W/esc.out"
mkdir -p "$W/a/b"
"$BERTH" compose pull "$U/comp/esc:1.0.0" "$W/a/b/out" >"$W/pull.out" 2>&1
t_check "9. berth compose pull refuses the escaping archive ($(tail -c 200 "$W/pull.out"))" \
    grep -q "below the symbolic link\|leads through another link" "$W/pull.out"
t_check "9. ... and nothing was written outside its target" bash -c \
    "! ls '$W/a/PWNED' '$W/PWNED' '$W/a/b/PWNED' 2>/dev/null | grep -q ."
berth_stop
mkdir -p "$T_TMP/r"
berth_start "$T_TMP/r" || { t_fail "berth starts (margo on)"; t_finish; }
$ATK compose-escape "$BERTH_URL" comp/esc 1.0.0 >"$W/esc2.out"
t_check "9. a push of the escaping compose archive is refused ($(head -c 200 "$W/esc2.out"))" \
    grep -q '^400 .*link' "$W/esc2.out"
berth_stop

# ---- 13, 14: bundles -------------------------------------------------------------------------
$ATK dagbundle "$W/dag.tar" --width 50 --depth 8
timeout 60 "$BERTH" bundle verify "$W/dag.tar" >"$W/dag.out" 2>&1
t_eq "13. bundle verify of an 8-level, 50-wide index DAG finishes (not killed by timeout)" 0 $?
# a small image bundle, served in place, then changed on disk
PL_CURL=(curl -s)
mkdir -p "$T_TMP/src"
berth_start "$T_TMP/src" || t_fail "berth starts (bundle source)"
pl_make_config "$W/bcfg.json" bundled
pl_rand_blob "$W/blayer" 5000 6000
pl_push_image "$BERTH_URL" bundled/app v1 "$W/b" "$W/bcfg.json" "$W/blayer" >/dev/null || t_fail "image for the bundle"
"$BERTH" bundle create -o "$W/b.tar" "$BERTH_URL/bundled/app:v1" >/dev/null 2>&1 || t_fail "bundle create"
berth_stop
P=$(t_port)
"$BERTH" bundle serve "$W/b.tar" --addr "127.0.0.1:$P" >"$W/serve.log" 2>&1 &
T_PIDS+=($!)
t_wait_http "http://127.0.0.1:$P/v2/" || t_fail "bundle serve starts"
BL="sha256:$(t_sha256 "$W/blayer")"
t_eq "14. bundle serve serves the verified layer" 200 \
    "$(code "http://127.0.0.1:$P/v2/bundled/app/blobs/$BL")"
python3 - "$W/b.tar" "$W/blayer" <<'PY'
import sys
tar, layer = sys.argv[1], open(sys.argv[2], "rb").read()
data = open(tar, "rb").read()
at = data.find(layer)
assert at >= 0
with open(tar, "r+b") as f:  # the same file, changed in place
    f.seek(at + 100)
    f.write(bytes([data[at + 100] ^ 0xFF]))
PY
c=$(code "http://127.0.0.1:$P/v2/bundled/app/blobs/$BL")
if [ "$c" = 200 ]; then
    t_check "14. after the tar changed in place, what is served is still the verified bytes" cmp "$W/body" "$W/blayer"
else
    t_ok "14. after the tar changed in place, the changed blob is refused ($c)"
fi
t_finish
