#!/usr/bin/env bash
# The web view under /ui/ and `berth status` (issue 19): a berth holding images (one of them a
# two-platform index), Helm charts, a margo package and two mirrors, one upstream up (a real
# docker-registry) and one down, with sign-in and limited anonymous pull. Debian's chromium
# (headless, in this script's own network namespace: it never reaches out) loads the page as the
# admin and anonymously; the checks read what a person would see in the DOM (names, sizes,
# platforms, versions, the icon, the cache against its limit, the hit ratio, the upstream that is
# down and its error, pinned content, the last gc and fsck), that the screenshot is not blank, that
# an anonymous caller sees only what it may pull, and that `berth status --json` gives the numbers
# the page gives.
if [ -z "${UI_NETNS:-}" ]; then
    exec unshare --net --mount env UI_NETNS=1 bash "$0" "$@"
fi
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"
ip link set lo up
t_need_tools chromium htpasswd jq python3 docker-registry
MT_OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_OCI_INDEX=application/vnd.oci.image.index.v1+json

HT="$T_TMP/htpasswd"
htpasswd -cbB "$HT" admin admin-pw 2>/dev/null
registry_start "$T_TMP/up" || { t_fail "upstream registry starts"; t_finish; }
UPH=${REG_URL#http://}
DEAD=$(t_port) # nothing listens there: the upstream that is down
# two more upstreams that fail: one accepts and never answers, one answers 503
HANG=$(t_port) E503=$(t_port)
for spec in "$HANG hang" "$E503 503"; do
    python3 "$T_ROOT/tests/fixtures/badupstream.py" $spec &
    T_PIDS+=("$!")
done
cat >"$T_TMP/config.yml" <<YML
version: 0.1
storage:
  delete: {enabled: true}
auth:
  htpasswd: {realm: berth-ui, path: $HT}
access:
  admins: [admin]
  rules:
    - {repositories: ["public/*", "charts/web*"], users: [anonymous], actions: [pull]}
    - {repositories: ["apps/*"], users: [anonymous], actions: [pull, push]}
mirrors:
  $UPH:
    urls: [$REG_URL]
  127.0.0.1:$DEAD:
    urls: [http://127.0.0.1:$DEAD]
  127.0.0.1:$HANG:
    urls: [http://127.0.0.1:$HANG]
    timeout: {connect: 1s, transfer: 1s}
  127.0.0.1:$E503:
    urls: [http://127.0.0.1:$E503]
cache:
  maxsize: 100MiB
  pin: ["*/pinned/*"]
YML
berth_start "$T_TMP" || { t_fail "berth starts"; t_finish; }
U=$BERTH_URL
A=(-u admin:admin-pw)
PL_CURL=(curl -s "${A[@]}")

# ---- content ----
push_image() { # push_image URL REPO TAG ARCH [VARIANT] [LAYER-BYTES]: prints the manifest digest
    local d="$T_TMP/img-$RANDOM"
    mkdir -p "$d"
    printf '{"architecture":"%s","os":"linux"%s,"rootfs":{"type":"layers","diff_ids":[]},"n":"%s"}' \
        "$4" "${5:+,\"variant\":\"$5\"}" "$RANDOM$RANDOM" >"$d/cfg.json"
    head -c "${6:-3000}" /dev/urandom >"$d/layer"
    pl_push_image "$1" "$2" "$3" "$d" "$d/cfg.json" "$d/layer" >/dev/null || return 1
    echo "sha256:$(sha256sum <"$d/manifest.json" | cut -d' ' -f1)"
}
push_image "$U" public/web 1.0 amd64 "" 5000 >/dev/null || t_fail "push public/web:1.0"
push_image "$U" private/db 2.0 arm64 v8 7000 >/dev/null || t_fail "push private/db:2.0"
# a two-platform index: its children by digest, then the index
d1=$(push_image "$U" public/multi tmp-amd64 amd64) && d2=$(push_image "$U" public/multi tmp-arm64 arm64 v8) ||
    t_fail "push the index's children"
desc() { printf '{"mediaType":"%s","digest":"%s","size":%s,"platform":{"os":"linux","architecture":"%s"%s}}' \
    "$MT_OCI_MANIFEST" "$1" "$(curl -s "${A[@]}" -H "Accept: $MT_OCI_MANIFEST" "$U/v2/public/multi/manifests/$1" | wc -c)" "$2" "${3:+,\"variant\":\"$3\"}"; }
printf '{"schemaVersion":2,"mediaType":"%s","manifests":[%s,%s]}' "$MT_OCI_INDEX" "$(desc "$d1" amd64)" \
    "$(desc "$d2" arm64 v8)" >"$T_TMP/index.json"
pl_push_manifest "$U" public/multi 3.1 "$T_TMP/index.json" "$MT_OCI_INDEX" || t_fail "push the index"
for t in tmp-amd64 tmp-arm64; do curl -s -o /dev/null "${A[@]}" -X DELETE "$U/v2/public/multi/manifests/$t"; done

# Helm charts (ChartMuseum's upload API), one anonymous callers may pull, one they may not
MKC="python3 $T_ROOT/tests/fixtures/mkchart.py"
$MKC good "$T_TMP/webapp-1.2.3.tgz" webapp 1.2.3 --full
$MKC good "$T_TMP/secretdb-0.9.0.tgz" secretdb 0.9.0
# a chart whose description is markup: the page shows it as text
python3 - "$T_TMP/evil-0.1.0.tgz" <<'PY'
import io, sys, tarfile
chart = b"""apiVersion: v2
name: evil
version: 0.1.0
description: "<script>alert(1)</script><img src=x onerror=alert(2)> & 'q'"
"""
with tarfile.open(sys.argv[1], "w:gz") as t:
    info = tarfile.TarInfo("evil/Chart.yaml")
    info.size = len(chart)
    t.addfile(info, io.BytesIO(chart))
PY
for c in webapp-1.2.3 secretdb-0.9.0 evil-0.1.0; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" --data-binary @"$T_TMP/$c.tgz" "$U/api/charts")
    [ "$code" = 201 ] || t_fail "upload chart $c" "HTTP $code"
done
# a margo Application Package (margo.yaml with name, description and an icon)
out=$(python3 "$T_ROOT/tests/fixtures/mkmargo.py" package "$U" apps/hello 1.0.0)
[ "${out%% *}" = 201 ] || t_fail "push the margo package" "$out"

# the mirror: an image upstream (pinned by cache.pin), pulled through berth (a miss), then a
# layer again (a hit); the dead upstream is asked once and marked down
up_digest=$(push_image "$REG_URL" team/pinned/tool 7.0 amd64 "" 4000) || t_fail "push upstream image"
curl -s "${A[@]}" -H "Accept: $MT_OCI_MANIFEST" "$U/v2/team/pinned/tool/manifests/7.0?ns=$UPH" >"$T_TMP/upm.json"
for l in $(jq -r '.config.digest, .layers[].digest' "$T_TMP/upm.json"); do
    curl -s -o /dev/null "${A[@]}" "$U/v2/team/pinned/tool/blobs/$l?ns=$UPH"
    curl -s -o /dev/null "${A[@]}" "$U/v2/team/pinned/tool/blobs/$l?ns=$UPH"
done
# once more, after both fills ended (a GET made while its fill runs joins it: a miss)
for l in $(jq -r '.config.digest, .layers[].digest' "$T_TMP/upm.json"); do
    curl -s -o /dev/null "${A[@]}" "$U/v2/team/pinned/tool/blobs/$l?ns=$UPH"
done
code=$(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" "$U/v2/lib/x/manifests/1?ns=127.0.0.1:$DEAD")
t_eq "a pull through the dead upstream fails" 503 "$code"
for p in $HANG $E503; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" "$U/v2/lib/x/manifests/1?ns=127.0.0.1:$p")
    t_eq "a pull through the upstream on port $p (hangs, or answers 503) fails" 503 "$code"
done
# pulls: public/web:1.0 by tag (the last pull the page shows)
curl -s -o /dev/null "${A[@]}" -H "Accept: $MT_OCI_MANIFEST" "$U/v2/public/web/manifests/1.0"
pull_after=$(date +%s)
# gc and fsck, from their own processes beside the server
REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$T_TMP/data "$BERTH" gc -c "$T_TMP/config.yml" >"$T_TMP/gc.out" 2>&1 ||
    t_fail "berth gc" "$(tail -3 "$T_TMP/gc.out")"
REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$T_TMP/data "$BERTH" fsck -c "$T_TMP/config.yml" >"$T_TMP/fsck.out" 2>&1 ||
    t_fail "berth fsck" "$(tail -3 "$T_TMP/fsck.out")"

# ---- the page in a browser ----
browse() { # browse OUT URL [extra chromium args]: the DOM after load
    local out=$1 url=$2
    shift 2
    HOME=$T_TMP/home timeout 60 chromium --headless --no-sandbox --disable-gpu --no-first-run \
        --user-data-dir="$T_TMP/chrome-$RANDOM" "$@" --dump-dom "$url" >"$out" 2>"$out.err"
}
U_ADMIN="http://admin:admin-pw@127.0.0.1:$BERTH_PORT"
browse "$T_TMP/admin.html" "$U_ADMIN/ui/signin"
D="$T_TMP/admin.html"
if ! grep -q '<section id="repositories">' "$D"; then
    t_fail "chromium shows the page as the admin" "$(head -c 300 "$D") $(tail -3 "$D.err")"
fi
J=$(curl -s "${A[@]}" "$U/ui/status.json")
has() { grep -qF -- "$2" "$1"; }
# a row: the text chromium laid out for one table row, tags stripped
row() { python3 - "$1" "$2" <<'PY'
import html, re, sys
doc = open(sys.argv[1]).read()
for tr in re.findall(r"<tr[^>]*>.*?</tr>", doc, re.S):
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", tr)).split())
    if sys.argv[2] in tr:
        print(text)
PY
}
size_of() { jq -r --arg r "$1" --arg t "$2" '.repositories[] | select(.name==$r) | .tags[] | select(.tag==$t) | .size' <<<"$J"; }
web_size=$(size_of public/web 1.0)
multi_size=$(size_of public/multi 3.1)
t_check "the size of public/web:1.0 is the manifest, config and layer ($web_size B)" \
    test "$web_size" -gt 5000 -a "$web_size" -lt 6000
r=$(row "$D" 'data-ref="public/web:1.0"')
t_check "public/web:1.0: image, linux/amd64, its size in bytes, a last pull [$r]" \
    bash -c '[[ "$1" == *"public/web 1.0 image linux/amd64"*" $2 B "*UTC* ]]' _ "$r" "$web_size"
r=$(row "$D" 'data-ref="public/multi:3.1"')
t_check "public/multi:3.1: an index of linux/amd64 and linux/arm64/v8, the children's bytes [$r]" \
    bash -c '[[ "$1" == *"3.1 index linux/amd64, linux/arm64/v8"*" $2 B never"* ]] && [ "$2" -gt 6000 ]' _ "$r" "$multi_size"
r=$(row "$D" 'data-ref="private/db:2.0"')
t_check "private/db:2.0 shows for the admin: linux/arm64/v8, never pulled [$r]" \
    bash -c '[[ "$1" == *"private/db 2.0 image linux/arm64/v8"*never* ]]' _ "$r"
lp=$(jq -r '.repositories[] | select(.name=="public/web") | .tags[0].last_pull' <<<"$J")
t_check "the last pull of public/web:1.0 is the pull made ($lp ms)" \
    test "$((lp / 1000))" -le "$pull_after" -a "$((lp / 1000))" -ge "$((pull_after - 120))"
r=$(row "$D" 'class="chart"' | grep webapp)
t_check "the chart webapp 1.2.3 with its repository [$r]" bash -c '[[ "$1" == "webapp 1.2.3 "*charts/webapp* ]]' _ "$r"
r=$(row "$D" 'class="chart"' | grep secretdb)
t_check "the chart secretdb 0.9.0 shows for the admin [$r]" bash -c '[[ "$1" == "secretdb 0.9.0 "*charts/secretdb* ]]' _ "$r"
r=$(row "$D" 'class="app"')
t_check "the margo app: name, id, version, description, package [$r]" \
    bash -c '[[ "$1" == "Hello World hello-world 1.0.0 a test app apps/hello:1.0.0 "* ]]' _ "$r"
r=$(row "$D" 'class="chart"' | grep evil)
t_check "a chart description that is markup shows as text [$r]" \
    bash -c '[[ "$1" == "evil 0.1.0 charts/evil <script>alert(1)</script><img src=x onerror=alert(2)> & '"'q'"'" ]] && ! grep -q "<img src=\"x\"" "$2"' _ "$r" "$D"
icon=$(python3 -c 'import base64;print("data:image/png;base64,"+base64.b64encode(b"\x89PNG fake icon").decode())')
t_check "the margo app's icon is the package's, inline" has "$D" "src=\"$icon\""
t_check "the page loads nothing from elsewhere (no script, no external URL)" \
    bash -c "grep -q '<section id=\"apps\">' '$D' && ! grep -Eiq '<script|<link|src=\"https?:|url\\(' '$D'"
cu=$(jq -r .cache.used <<<"$J")
r=$(row "$D" 'id="cache-used"')
t_check "cache used: the mirrored bytes ($cu B) [$r]" bash -c '[ "$2" -gt 4000 ] && [[ "$1" == *" $2 B"* ]]' _ "$r" "$cu"
r=$(row "$D" 'id="cache-limit"')
t_check "cache limit: cache.maxsize 100 MiB and the share used [$r]" \
    bash -c '[[ "$1" == *"100.0 MiB 104857600 B"*"% used"* ]]' _ "$r"
r=$(row "$D" 'id="hit-ratio"')
hits=$(jq -r .cache.hits <<<"$J") misses=$(jq -r .cache.misses <<<"$J")
t_check "hit ratio with hits and misses [$r]" \
    bash -c '[ "$2" -ge 1 ] && [ "$3" -ge 1 ] && [[ "$1" == "Hit ratio "*"%"*" $2 hits, $3 misses"* ]]' _ "$r" "$hits" "$misses"
r=$(row "$D" "data-mirror=\"127.0.0.1:$DEAD\"")
t_check "the dead upstream is down, with its error [$r]" bash -c '[[ "$1" == *" down "*[a-zA-Z]* ]] && [[ "$1" != *" up "* ]]' _ "$r"
errs=$(jq -r --arg m "127.0.0.1:$DEAD" '.upstreams[] | select(.mirror==$m) | .errors' <<<"$J")
t_check "the dead upstream's last error is on the page: the refused connection, its URL, kind, time; errors counted ($errs) [$r]" \
    bash -c '[[ "$1" == *"connection failed: Connection refused (http://127.0.0.1:$2) connect, "*UTC* ]] && [ "$3" -ge 1 ]' _ "$r" "$DEAD" "$errs"
r=$(row "$D" "data-mirror=\"127.0.0.1:$HANG\"")
t_check "the upstream that never answers: down, timed out [$r]" \
    bash -c '[[ "$1" == *" down timed out: no answer in time (http://127.0.0.1:$2) timeout, "*UTC* ]]' _ "$r" "$HANG"
r=$(row "$D" "data-mirror=\"127.0.0.1:$E503\"")
t_check "the upstream that answers 503: down, HTTP 503 [$r]" \
    bash -c '[[ "$1" == *" down HTTP 503 (http://127.0.0.1:$2) http, "*UTC* ]]' _ "$r" "$E503"
r=$(row "$D" "data-mirror=\"$UPH\"")
t_check "the live upstream is up, fetched bytes, a last success [$r]" bash -c '[[ "$1" == *" up "*UTC* ]]' _ "$r"
t_check "pinned content: the mirrored repository matching cache.pin" \
    has "$D" "<li>${UPH/:/-}/team/pinned/tool</li>"
r=$(row "$D" 'id="gc"')
t_check "the last gc [$r]" bash -c '[[ "$1" == "Last gc "*UTC": ok, removed "*" manifests, "* ]]' _ "$r"
fb=$(jq -r .fsck.blobs <<<"$J")
r=$(row "$D" 'id="fsck"')
t_check "the last fsck, with its counts [$r]" bash -c '[ "$2" -gt 0 ] && [[ "$1" == *"ok, checked $2 blobs"*": 0 problems"* ]]' _ "$r" "$fb"

# ---- a screenshot: not blank ----
HOME=$T_TMP/home timeout 60 chromium --headless --no-sandbox --disable-gpu --no-first-run \
    --user-data-dir="$T_TMP/chrome-shot" --window-size=1280,1600 --screenshot="$T_TMP/ui.png" \
    "$U_ADMIN/ui/signin" >/dev/null 2>&1
colours=$(python3 - "$T_TMP/ui.png" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n"
pos, idat = 8, b""
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
assert depth == 8 and ctype in (2, 6), (depth, ctype)
bpp = 3 if ctype == 2 else 4
raw, stride = zlib.decompress(idat), w * bpp
prev, colours, i = bytearray(stride), set(), 0
for y in range(h):
    f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
    i += 1 + stride
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b, c = prev[x], (prev[x - bpp] if x >= bpp else 0)
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    if y % 2 == 0:
        for x in range(0, stride, bpp * 2):
            colours.add(bytes(line[x:x + 3]))
    prev = line
# the page's header colour (#123b5c) fills a band: the page was drawn, not an error text
print(len(colours), w, h, int(bytes((0x12, 0x3b, 0x5c)) in colours))
PY
)
t_check "the screenshot is a page, not blank (distinct colours, width, height, header drawn: $colours)" \
    bash -c 'set -- $1; [ "${1:-0}" -gt 40 ] && [ "$2" -eq 1280 ] && [ "$4" = 1 ]' _ "$colours"

# ---- an anonymous caller: only what it may pull ----
browse "$T_TMP/anon.html" "$U/ui/"
N="$T_TMP/anon.html"
t_check "anonymous: the page shows public/web and apps/hello" \
    bash -c "grep -q 'data-ref=\"public/web:1.0\"' '$N' && grep -q 'data-ref=\"apps/hello:1.0.0\"' '$N'"
t_check "anonymous: webapp shows, secretdb does not" bash -c "grep -q webapp '$N' && ! grep -q secretdb '$N'"
t_check "anonymous: nothing of private/ or the mirrored repositories" \
    bash -c "grep -q '<section id=\"repositories\">' '$N' && ! grep -Eq 'private/db|team/pinned' '$N'"
t_check "anonymous: viewing as anonymous" has "$N" "viewing as anonymous"
t_eq "anonymous JSON: the repositories it may pull" '["apps/hello","charts/webapp","public/multi","public/web"]' \
    "$(curl -s "$U/ui/status.json" | jq -c '[.repositories[].name]')"
t_eq "a wrong password is refused with a challenge" 401 \
    "$(curl -s -o /dev/null -w '%{http_code}' -u admin:wrong "$U/ui/")"

# ---- berth status: the same numbers ----
proj='{repos: [.repositories[] | {name, size, tags: [.tags[] | {tag, kind, size, platforms, digest, last_pull}]}],
  charts: [.charts[] | {name, version, repository}], apps: [.apps[] | {name, version, description, icon}],
  cache: (.cache | {used, limit, hits, misses, hit_ratio}), up: [.upstreams[] | {mirror, state, last_error}],
  pins, gc, fsck}'
curl -s "${A[@]}" "$U/ui/status.json" | jq -S "$proj" >"$T_TMP/page.json"
REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$T_TMP/data "$BERTH" status -c "$T_TMP/config.yml" --json \
    >"$T_TMP/status.raw" 2>"$T_TMP/status.err"
jq -S "$proj" "$T_TMP/status.raw" >"$T_TMP/status.json" 2>/dev/null
t_check "the summary compared is not empty (8 repositories, 3 charts, 1 app, 4 upstreams)" \
    bash -c "test -s '$T_TMP/status.json' && jq -e '(.repos|length)==8 and (.charts|length)==3 and (.apps|length)==1 and (.up|length)==4' '$T_TMP/status.json'"
t_check "berth status --json gives the page's numbers" \
    bash -c "test -s '$T_TMP/page.json' && diff '$T_TMP/page.json' '$T_TMP/status.json'"
REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$T_TMP/data "$BERTH" status -c "$T_TMP/config.yml" >"$T_TMP/status.txt" 2>&1
t_check "berth status prints the summary for a terminal" \
    bash -c "grep -q 'public/web' '$T_TMP/status.txt' && grep -q \"^  127.0.0.1:$DEAD *down\" '$T_TMP/status.txt' && grep -q '^Last fsck: .* 0 problems' '$T_TMP/status.txt'"
t_check "berth status names each failing upstream's last error and its kind" \
    bash -c "grep -q \"^  127.0.0.1:$DEAD *down *errors [1-9].*last error: connection failed: Connection refused (http://127.0.0.1:$DEAD) (connect, \" '$T_TMP/status.txt' &&
        grep -q \"^  127.0.0.1:$HANG *down .*last error: timed out: no answer in time (http://127.0.0.1:$HANG) (timeout, \" '$T_TMP/status.txt' &&
        grep -q \"^  127.0.0.1:$E503 *down .*last error: HTTP 503 (http://127.0.0.1:$E503) (http, \" '$T_TMP/status.txt'" 
t_finish
