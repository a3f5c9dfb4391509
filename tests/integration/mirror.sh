#!/usr/bin/env bash
# The pull-through cache ("mirrors"): berth in front of real docker-registry upstreams.
#
#   upstream A  anonymous        mirrors.docker.io (revalidate 2s); killed near the end
#   upstream B  htpasswd         mirrors.ghcr.io (username/password); badauth.example (wrong password)
#   upstream C  anonymous        mirrors.quay.io (revalidate 1h), failover.example ([dead, C]),
#                                proxy.remoteurl (the default upstream)
#   blackhole   accepts TCP, never answers: hang.example (transfer timeout 2s)
#
# Covers routing (?ns= and the /v2/<mirror>/ prefix, docker.io's library/), OCI-Namespace,
# byte-identical content, read-only mirror space (403 DENIED), caching (upstream access logs show
# no second fetch of a digest), tag revalidation, upstream down / hung / 404 / wrong credentials,
# coalescing of concurrent cold pulls, refusal of corrupt upstream content, the default upstream
# (proxy.remoteurl) beside locally pushed repositories, and skopeo + containerd as clients.
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"

MK="python3 $T_ROOT/tests/fixtures/mkimage.py"
SK=(skopeo --insecure-policy)
NOTLS=(--src-tls-verify=false --dest-tls-verify=false)
CURL=(curl -s --max-time 20)
W=$T_TMP/work
mkdir -p "$W"

# ---- helpers --------------------------------------------------------------------------------

# up_start NAME [HTPASSWD_FILE]: a docker-registry (log.level info, access log on) in
# $T_TMP/NAME. Sets UP_URL, UP_PORT, UP_PID, UP_DIR.
up_start() {
    local dir=$T_TMP/$1 auth=""
    mkdir -p "$dir/data"
    UP_PORT=$(t_port)
    if [ -n "${2:-}" ]; then
        auth="auth:
  htpasswd:
    realm: test
    path: $2"
    fi
    cat >"$dir/registry.yml" <<YML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$UP_PORT
$auth
YML
    docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
    UP_PID=$!
    T_PIDS+=("$UP_PID")
    UP_DIR=$dir
    UP_URL=http://127.0.0.1:$UP_PORT
    t_wait_http "$UP_URL/v2/"
}

# up_reqs LOG: one "METHOD PATH STATUS" line per request in a docker-registry access log
# (combined log format; the query string is dropped, %3A decoded).
up_reqs() {
    awk -F'"' '/^[0-9.:]+ - [^ ]* \[/ && $2 ~ /^[A-Z]+ \// {
        split($2, r, " "); p = r[2]; sub(/\?.*/, "", p); gsub(/%3[Aa]/, ":", p)
        split($3, s, " "); print r[1], p, s[1] }' "$1"
}
# up_count LOG METHODS PATH [STATUS]: how many requests match; METHODS is one method or a list
# like GET|HEAD; METHODS or STATUS "*" match any.
up_count() {
    up_reqs "$1" | awk -v m="$2" -v p="$3" -v s="${4:-*}" \
        '($1 ~ ("^(" m ")$") || m == "*") && $2 == p && ($3 == s || s == "*")' | wc -l
}

# hdr FILE NAME: a header's value from a curl -D dump.
hdr() { pl_header "$1" "$2"; }
# errcode FILE: .errors[0].code of an error body ("" when not error JSON).
errcode() { jq -r '.errors[0].code // empty' "$1" 2>/dev/null; }
# is_err_status CODE: 404 or 5xx.
is_err_status() { [ "$1" = 404 ] || [ "${1:0:1}" = 5 ]; }

# bget PATH OUT [curl args...]: GET $BERTH_URL$PATH (manifest Accept list) into OUT, headers
# into OUT.h; prints the status code ("000" on a transport error).
bget() {
    local p=$1 o=$2
    shift 2
    "${CURL[@]}" -H "$PL_ACCEPT" -D "$o.h" -o "$o" -w '%{http_code}' "$@" "$BERTH_URL$p" || true
}
# bhead PATH OUT: HEAD; headers into OUT.h; prints the status.
bhead() {
    "${CURL[@]}" -I -H "$PL_ACCEPT" -D "$2.h" -o /dev/null -w '%{http_code}' "$BERTH_URL$1" || true
}

# mv_verify BASE QUERY REF WANT: through berth, BASE/manifests/REF$QUERY is 200 with sha256 WANT,
# a matching Docker-Content-Digest, and every blob and child manifest it references is served
# (BASE/blobs/D$QUERY) with the right bytes. BASE is e.g. /v2/ghcr.io/org/app, QUERY "" or
# "?ns=ghcr.io".
mv_verify() {
    local base=$1 q=$2 ref=$3 want=$4 tmp code got d rc=0
    tmp=$(mktemp -d -p "$T_TMP")
    code=$(bget "$base/manifests/$ref$q" "$tmp/m")
    if [ "$code" != 200 ]; then
        echo "GET $base/manifests/$ref$q: HTTP $code $(head -c 200 "$tmp/m" 2>/dev/null)"
        return 1
    fi
    got=sha256:$(t_sha256 "$tmp/m")
    [ "$got" = "$want" ] || { echo "GET $base/manifests/$ref$q: body is $got, want $want"; return 1; }
    d=$(hdr "$tmp/m.h" docker-content-digest)
    [ "$d" = "$want" ] || { echo "GET $base/manifests/$ref$q: Docker-Content-Digest [$d], want $want"; return 1; }
    for d in $(jq -r '[.config.digest?, .layers[]?.digest] | map(select(. != null)) | .[]' "$tmp/m"); do
        code=$("${CURL[@]}" -o "$tmp/b" -w '%{http_code}' "$BERTH_URL$base/blobs/$d$q")
        if [ "$code" != 200 ]; then
            echo "GET $base/blobs/$d$q: HTTP $code $(head -c 200 "$tmp/b" 2>/dev/null)"
            rc=1
        elif [ "sha256:$(t_sha256 "$tmp/b")" != "$d" ]; then
            echo "GET $base/blobs/$d$q: wrong bytes"
            rc=1
        fi
    done
    for d in $(jq -r '.manifests[]?.digest' "$tmp/m"); do
        mv_verify "$base" "$q" "$d" "$d" || rc=1
    done
    rm -rf "$tmp"
    return $rc
}

# layout_ok LAYOUT TAG WANT_DIGEST: the OCI layout names WANT_DIGEST for TAG and holds every blob
# reachable from it intact.
layout_ok() {
    local got d
    got=$($MK digest "$1" --tag "$2") || return 1
    [ "$got" = "$3" ] || { echo "layout $1:$2 has $got, want $3"; return 1; }
    for d in $(pl_blob_digests "$1" "$3"); do
        [ "sha256:$(t_sha256 "$1/blobs/sha256/${d#sha256:}")" = "$d" ] || { echo "bad/missing blob $d in $1"; return 1; }
    done
}

# blob_file LAYOUT DIGEST: path of a blob in an OCI layout.
blob_file() { echo "$1/blobs/sha256/${2#sha256:}"; }
# mt_of LAYOUT DIGEST: mediaType field of a manifest in a layout.
mt_of() { jq -r .mediaType "$(blob_file "$1" "$2")"; }
# up_retag URL REPO TAG LAYOUT DIGEST [CURL_AUTH]: PUT an existing manifest under another tag.
up_retag() {
    local code
    code=$("${CURL[@]}" ${6:+-u "$6"} -o /dev/null -w '%{http_code}' -X PUT \
        -H "Content-Type: $(mt_of "$4" "$5")" --data-binary @"$(blob_file "$4" "$5")" \
        "$1/v2/$2/manifests/$3")
    [ "$code" = 201 ] || { echo "retag $2:$3 on $1: HTTP $code"; return 1; }
}
# layers_of LAYOUT DIGEST: the config and layer digests of one image manifest.
layers_of() { jq -r '.config.digest, .layers[].digest' "$(blob_file "$1" "$2")"; }

RANDHEX=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
NODIGEST=sha256:$RANDHEX

# ---- images ---------------------------------------------------------------------------------
# built in parallel (the machine may be shared); each digest lands in $W/NAME.d
MK_PIDS=()
mk() { # mk NAME mkimage-args...
    local n=$1
    shift
    ($MK "$@" >"$W/$n.d") &
    MK_PIDS+=("$!")
}
mk APP image "$W/app" --layers 3 --seed 31 --tag v1 --size 60000
mk MULTI index "$W/multi" --arches amd64,arm64 --seed 32 --tag v1
mk X1 image "$W/alp1" --layers 2 --seed 41 --tag 3 --size 30000
mk X2 image "$W/alp2" --layers 2 --seed 42 --tag 3 --size 30000
mk EDGE image "$W/edge" --layers 1 --seed 43 --tag edge --size 20000
mk S1 image "$W/st1" --layers 2 --seed 51 --tag v1 --size 20000
mk S2 image "$W/st2" --layers 2 --seed 52 --tag v1 --size 20000
mk FO image "$W/fo" --layers 2 --seed 56 --tag v1 --size 20000
mk R image "$W/remote" --layers 2 --seed 53 --tag v1 --size 20000
mk LW_UP image "$W/lw-up" --layers 1 --seed 54 --tag v1 --size 20000
mk LW image "$W/lw" --layers 1 --seed 55 --tag v1 --size 20000
# a 64 MiB blob for coalescing, a 3 MiB blob to corrupt
(head -c $((64 << 20)) /dev/urandom >"$W/big") &
MK_PIDS+=("$!")
(head -c $((3 << 20)) /dev/urandom >"$W/bad") &
MK_PIDS+=("$!")
wait "${MK_PIDS[@]}"
for n in APP MULTI X1 X2 EDGE S1 S2 FO R LW_UP LW; do
    v=$(cat "$W/$n.d")
    case $v in sha256:*) ;; *) t_fail "building image $n" "[$v]"; t_finish ;; esac
    printf -v "D_$n" '%s' "$v"
done
D_BIG=sha256:$(t_sha256 "$W/big")
D_BAD=sha256:$(t_sha256 "$W/bad")

# ---- upstreams ------------------------------------------------------------------------------
htpasswd -Bbn user pass >"$W/htpasswd" 2>/dev/null
if ! up_start upA; then t_fail "upstream A starts" "$(tail -3 "$T_TMP/upA/registry.log")"; t_finish; fi
A_URL=$UP_URL A_PID=$UP_PID A_LOG=$UP_DIR/registry.log A=127.0.0.1:$UP_PORT
if ! up_start upB "$W/htpasswd"; then t_fail "upstream B starts" "$(tail -3 "$T_TMP/upB/registry.log")"; t_finish; fi
B_URL=$UP_URL B_LOG=$UP_DIR/registry.log B=127.0.0.1:$UP_PORT
if ! up_start upC; then t_fail "upstream C starts" "$(tail -3 "$T_TMP/upC/registry.log")"; t_finish; fi
C_URL=$UP_URL C_LOG=$UP_DIR/registry.log C_DATA=$UP_DIR/data C=127.0.0.1:$UP_PORT

# a listener that never accepts: connections complete in the kernel backlog and then hang
HANG_PORT=$(t_port)
python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64); time.sleep(3600)' "$HANG_PORT" &
T_PIDS+=("$!")
DEAD_PORT=$(t_port) # nothing listens there

SEED_PIDS=()
up_copy() { # up_copy LAYOUT TAG DEST [extra skopeo args]: in the background
    local lay=$1 tag=$2 dst=$3
    shift 3
    ("${SK[@]}" copy -q --all "${NOTLS[@]}" "$@" "oci:$lay:$tag" "docker://$dst" >"$W/seed.err.${dst//[\/:]/_}" 2>&1 ||
        echo "seeding $dst failed: $(tail -c 200 "$W/seed.err.${dst//[\/:]/_}")" >>"$W/seed.fail") &
    SEED_PIDS+=("$!")
}
up_copy "$W/app" v1 "$B/org/app:v1" --dest-creds user:pass
up_copy "$W/multi" v1 "$B/org/multi:v1" --dest-creds user:pass
up_copy "$W/alp1" 3 "$A/library/alpine:3"
up_copy "$W/alp2" 3 "$A/library/alpine:next"
up_copy "$W/edge" edge "$A/library/alpine:edge"
up_copy "$W/st1" v1 "$C/org/stable:v1"
up_copy "$W/st2" v1 "$C/org/stable:v2"
up_copy "$W/fo" v1 "$C/org/fo:v1"
up_copy "$W/remote" v1 "$C/org/remote:v1"
up_copy "$W/lw-up" v1 "$C/org/local-wins:v1"
(pl_push_blob "$C_URL" org/big "$W/big" patch || echo "seeding big blob failed" >>"$W/seed.fail") &
SEED_PIDS+=("$!")
(pl_push_blob "$C_URL" org/corrupt "$W/bad" put || echo "seeding corrupt blob failed" >>"$W/seed.fail") &
SEED_PIDS+=("$!")
wait "${SEED_PIDS[@]}"
if [ -s "$W/seed.fail" ]; then
    t_fail "seeding the upstreams" "$(tail -c 600 "$W/seed.fail")"
    t_finish
fi

# ---- berth ----------------------------------------------------------------------------------
mkdir -p "$T_TMP/berth"
cat >"$T_TMP/berth/config.yml" <<YML
version: 0.1
log:
  level: info
proxy:
  remoteurl: $C_URL
  localpush: true
mirrors:
  docker.io:
    urls: [$A_URL]
    revalidate: 2s
    timeout: {connect: 1s, transfer: 30s}
  ghcr.io:
    urls: [$B_URL]
    username: user
    password: pass
  quay.io:
    urls: [$C_URL]
    revalidate: 1h
  failover.example:
    urls: [http://127.0.0.1:$DEAD_PORT, $C_URL]
  badauth.example:
    urls: [$B_URL]
    username: user
    password: wrong
  hang.example:
    urls: [http://127.0.0.1:$HANG_PORT]
    timeout: {connect: 1s, transfer: 2s}
YML
if ! berth_start "$T_TMP/berth"; then
    t_fail "berth starts with a mirrors configuration" "$(tail -5 "$T_TMP/berth/berth.log" | tr '\n' ' ')"
    t_finish
fi
BH=127.0.0.1:$BERTH_PORT
t_check "no unknown-key warning for the mirrors/proxy sections" \
    bash -c "! grep -iE 'unknown configuration key.*(mirrors|proxy)' '$T_TMP/berth/berth.log'"

# ---- 1. ghcr.io (basic-auth upstream): path prefix and ?ns= ----------------------------------
code=$(bget /v2/ghcr.io/org/app/manifests/v1 "$W/app.m")
t_eq "GET /v2/ghcr.io/org/app/manifests/v1 (prefix form): 200" 200 "$code"
t_check "prefix form: manifest bytes identical to upstream's" cmp "$W/app.m" "$(blob_file "$W/app" "$D_APP")"
t_eq "prefix form: Docker-Content-Digest" "$D_APP" "$(hdr "$W/app.m.h" docker-content-digest)"
t_eq "prefix form: Content-Type is upstream's" "$MT_OCI_MANIFEST" "$(hdr "$W/app.m.h" content-type | cut -d';' -f1)"
t_eq "prefix form: OCI-Namespace: ghcr.io" ghcr.io "$(hdr "$W/app.m.h" oci-namespace)"
t_check "prefix form: every blob served intact" mv_verify /v2/ghcr.io/org/app "" v1 "$D_APP"
t_check "basic-auth upstream B answered berth's GET of org/app:v1 with 200" \
    test "$(up_count "$B_LOG" GET /v2/org/app/manifests/v1 200)" -ge 1

code=$(bget "/v2/org/app/manifests/v1?ns=ghcr.io" "$W/app2.m")
t_eq "GET /v2/org/app/manifests/v1?ns=ghcr.io: 200" 200 "$code"
t_check "?ns= form: manifest bytes identical" cmp "$W/app2.m" "$(blob_file "$W/app" "$D_APP")"
t_eq "?ns= form: OCI-Namespace: ghcr.io" ghcr.io "$(hdr "$W/app2.m.h" oci-namespace)"
t_check "?ns= form: every blob served intact" mv_verify /v2/org/app "?ns=ghcr.io" v1 "$D_APP"
code=$(bhead "/v2/org/app/manifests/v1?ns=ghcr.io" "$W/app3")
t_eq "HEAD manifest ?ns=ghcr.io: 200 with Docker-Content-Digest" "200 $D_APP" "$code $(hdr "$W/app3.h" docker-content-digest)"
L1=$(layers_of "$W/app" "$D_APP" | sed -n 2p)
code=$("${CURL[@]}" -D "$W/blob.h" -o "$W/blob" -w '%{http_code}' "$BERTH_URL/v2/org/app/blobs/$L1?ns=ghcr.io")
t_eq "blob GET ?ns=ghcr.io: OCI-Namespace: ghcr.io" "200 ghcr.io" "$code $(hdr "$W/blob.h" oci-namespace)"
code=$("${CURL[@]}" -I -D "$W/blobh.h" -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/ghcr.io/org/app/blobs/$L1")
t_eq "blob HEAD (cached): 200, Content-Length = size" "200 $(stat -c %s "$(blob_file "$W/app" "$L1")")" \
    "$code $(hdr "$W/blobh.h" content-length)"

t_check "multi-arch index via ghcr.io: index, children and blobs intact (prefix)" \
    mv_verify /v2/ghcr.io/org/multi "" v1 "$D_MULTI"
t_check "multi-arch index via ghcr.io (?ns=)" mv_verify /v2/org/multi "?ns=ghcr.io" v1 "$D_MULTI"

# ---- 2. digests are fetched once, then served from the store ---------------------------------
sleep 0.3
snap_counts() { # every request B saw for org/app and org/multi digests, "path count" lines
    local d
    for d in $D_APP $(layers_of "$W/app" "$D_APP"); do
        echo "app/$d $(up_count "$B_LOG" '*' "/v2/org/app/manifests/$d") $(up_count "$B_LOG" '*' "/v2/org/app/blobs/$d")"
    done
    for d in $(pl_blob_digests "$W/multi" "$D_MULTI"); do
        echo "multi/$d $(up_count "$B_LOG" '*' "/v2/org/multi/manifests/$d") $(up_count "$B_LOG" '*' "/v2/org/multi/blobs/$d")"
    done
}
snap_counts >"$W/counts1"
fetched_once() {
    local d n bad=0
    for d in $(layers_of "$W/app" "$D_APP"); do
        n=$(up_count "$B_LOG" GET "/v2/org/app/blobs/$d" 200)
        [ "$n" = 1 ] || { echo "org/app blob $d: $n successful upstream GETs"; bad=1; }
    done
    for d in $(pl_blob_digests "$W/multi" "$D_MULTI" | sort -u); do
        n=$(($(up_count "$B_LOG" GET "/v2/org/multi/blobs/$d" 200) + $(up_count "$B_LOG" GET "/v2/org/multi/manifests/$d" 200)))
        [ "$d" = "$D_MULTI" ] && continue # fetched by tag
        [ "$n" = 1 ] || { echo "org/multi $d: $n successful upstream GETs"; bad=1; }
    done
    n=$(up_count "$B_LOG" GET "/v2/org/app/manifests/$D_APP" 200)
    [ "$n" -le 1 ] || { echo "org/app manifest by digest: $n upstream GETs"; bad=1; }
    return $bad
}
t_check "each blob/child manifest was fetched from upstream exactly once (two pulls, both forms)" fetched_once
# pull everything again, by digest, both forms, GET and HEAD
t_check "re-pull org/app by digest (prefix)" mv_verify /v2/ghcr.io/org/app "" "$D_APP" "$D_APP"
t_check "re-pull org/app by digest (?ns=)" mv_verify /v2/org/app "?ns=ghcr.io" "$D_APP" "$D_APP"
t_check "re-pull org/multi by digest (prefix)" mv_verify /v2/ghcr.io/org/multi "" "$D_MULTI" "$D_MULTI"
t_check "re-pull org/multi by digest (?ns=)" mv_verify /v2/org/multi "?ns=ghcr.io" "$D_MULTI" "$D_MULTI"
codes=$(bhead "/v2/org/app/manifests/$D_APP?ns=ghcr.io" "$W/x")
for d in $(layers_of "$W/app" "$D_APP"); do codes="$codes $("${CURL[@]}" -I -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/org/app/blobs/$d?ns=ghcr.io")"; done
t_eq "HEAD of the cached manifest and blobs by digest" "200 200 200 200 200" "$codes"
sleep 0.3
snap_counts >"$W/counts2"
t_check "no upstream request for any digest once cached" diff "$W/counts1" "$W/counts2"

# ---- 3. mirror space is read-only -------------------------------------------------------------
denied() { # denied CODE FILE: CODE is 403 and FILE has error code DENIED
    local code=$1 f=$2
    [ "$code" = 403 ] && [ "$(errcode "$f")" = DENIED ] || { echo "HTTP $code $(head -c 200 "$f")"; return 1; }
}
code=$("${CURL[@]}" -o "$W/d1" -w '%{http_code}' -X POST "$BERTH_URL/v2/ghcr.io/org/app/blobs/uploads/")
t_check "POST upload to /v2/ghcr.io/org/app: 403 DENIED" denied "$code" "$W/d1"
code=$("${CURL[@]}" -o "$W/d2" -w '%{http_code}' -X POST "$BERTH_URL/v2/org/app/blobs/uploads/?ns=ghcr.io")
t_check "POST upload to org/app?ns=ghcr.io: 403 DENIED" denied "$code" "$W/d2"
code=$("${CURL[@]}" -o "$W/d3" -w '%{http_code}' -X POST -H 'Content-Type: application/octet-stream' \
    --data-binary @"$W/bad" "$BERTH_URL/v2/docker.io/library/alpine/blobs/uploads/?digest=$D_BAD")
t_check "monolithic POST ?digest= to /v2/docker.io/library/alpine: 403 DENIED" denied "$code" "$W/d3"
code=$("${CURL[@]}" -o "$W/d4" -w '%{http_code}' -X PUT -H "Content-Type: $MT_OCI_MANIFEST" \
    --data-binary @"$(blob_file "$W/app" "$D_APP")" "$BERTH_URL/v2/ghcr.io/org/app/manifests/pushed")
t_check "PUT manifest /v2/ghcr.io/org/app/manifests/pushed: 403 DENIED" denied "$code" "$W/d4"
code=$("${CURL[@]}" -o "$W/d5" -w '%{http_code}' -X PUT -H "Content-Type: $MT_OCI_MANIFEST" \
    --data-binary @"$(blob_file "$W/app" "$D_APP")" "$BERTH_URL/v2/org/app/manifests/pushed?ns=ghcr.io")
t_check "PUT manifest org/app:pushed?ns=ghcr.io: 403 DENIED" denied "$code" "$W/d5"
code=$(bget /v2/ghcr.io/org/app/manifests/pushed "$W/d6")
t_eq "the refused tag does not exist (404 MANIFEST_UNKNOWN)" "404 MANIFEST_UNKNOWN" "$code $(errcode "$W/d6")"

# plain local names still take pushes beside the mirrors (before the proxy.remoteurl checks:
# the locally pushed org/local-wins must win over upstream C's org/local-wins)
t_check "skopeo push to a plain local name (org/local-wins) works" "${SK[@]}" copy -q "${NOTLS[@]}" \
    "oci:$W/lw:v1" "docker://$BH/org/local-wins:v1"
t_check "the local push is served" pl_verify "$BERTH_URL" org/local-wins v1 "$D_LW"
pl_make_config "$W/thing.cfg" thing
pl_rand_blob "$W/thing.layer" 1000 50000
t_check "curl push of a plain local image (local/thing) works" \
    pl_push_image "$BERTH_URL" local/thing v1 "$W" "$W/thing.cfg" "$W/thing.layer"

# ---- 4. upstream 404 -----------------------------------------------------------------------
code=$(bget /v2/ghcr.io/org/app/manifests/nope "$W/n1")
t_eq "unknown tag (prefix): 404 MANIFEST_UNKNOWN" "404 MANIFEST_UNKNOWN" "$code $(errcode "$W/n1")"
code=$(bget "/v2/org/app/manifests/nope?ns=ghcr.io" "$W/n2")
t_eq "unknown tag (?ns=): 404 MANIFEST_UNKNOWN" "404 MANIFEST_UNKNOWN" "$code $(errcode "$W/n2")"
code=$(bhead "/v2/org/app/manifests/nope?ns=ghcr.io" "$W/n3")
t_eq "HEAD unknown tag: 404" 404 "$code"
code=$(bget "/v2/ghcr.io/org/app/manifests/$NODIGEST" "$W/n4")
t_eq "unknown manifest digest: 404 MANIFEST_UNKNOWN" "404 MANIFEST_UNKNOWN" "$code $(errcode "$W/n4")"
code=$(bget "/v2/ghcr.io/org/app/blobs/$NODIGEST" "$W/n5")
t_eq "unknown blob (prefix): 404 BLOB_UNKNOWN" "404 BLOB_UNKNOWN" "$code $(errcode "$W/n5")"
code=$(bget "/v2/org/app/blobs/$NODIGEST?ns=ghcr.io" "$W/n6")
t_eq "unknown blob (?ns=): 404 BLOB_UNKNOWN" "404 BLOB_UNKNOWN" "$code $(errcode "$W/n6")"
code=$(bget "/v2/ghcr.io/org/ghost/blobs/$NODIGEST" "$W/n5b")
t_eq "unknown blob in a repository upstream does not have: 404 BLOB_UNKNOWN or NAME_UNKNOWN" "404 ok" \
    "$code $(grep -qE '"(BLOB_UNKNOWN|NAME_UNKNOWN)"' "$W/n5b" && echo ok)"
code=$("${CURL[@]}" -I -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/ghcr.io/org/app/blobs/$NODIGEST")
t_eq "HEAD unknown blob: 404" 404 "$code"
code=$(bget /v2/ghcr.io/org/nothing-here/manifests/v1 "$W/n7")
t_check "unknown upstream repository: 404 MANIFEST_UNKNOWN or NAME_UNKNOWN" \
    bash -c "[ '$code' = 404 ] && grep -qE '\"(MANIFEST_UNKNOWN|NAME_UNKNOWN)\"' '$W/n7'"
code=$(bget /v2/badauth.example/org/app/manifests/v1 "$W/n8")
t_check "wrong upstream credentials: not served (error status + error JSON)" \
    bash -c "[ '${code:0:1}' = 4 ] || [ '${code:0:1}' = 5 ] && [ -n \"\$(jq -r '.errors[0].code // empty' '$W/n8')\" ]"

# ---- 5. docker.io: library/, revalidation of a moving tag --------------------------------------
code=$(bget "/v2/alpine/manifests/3?ns=docker.io" "$W/x1")
t_eq "GET /v2/alpine/manifests/3?ns=docker.io: 200 library/alpine:3" "200 $D_X1" "$code sha256:$(t_sha256 "$W/x1")"
t_eq "docker.io: OCI-Namespace: docker.io" docker.io "$(hdr "$W/x1.h" oci-namespace)"
t_check "upstream A was asked for /v2/library/alpine/manifests/3" \
    test "$(up_count "$A_LOG" 'GET|HEAD' /v2/library/alpine/manifests/3)" -ge 1
t_check "one-component name, prefix form (/v2/docker.io/alpine/...)" mv_verify /v2/docker.io/alpine "" 3 "$D_X1"
t_check "two-component name, ?ns= form (/v2/library/alpine/...?ns=docker.io)" mv_verify /v2/library/alpine "?ns=docker.io" 3 "$D_X1"
t_check "blobs via /v2/alpine/...?ns=docker.io" mv_verify /v2/alpine "?ns=docker.io" 3 "$D_X1"
t_eq "no upstream request for library/library/ or bare alpine" 0 \
    "$(up_reqs "$A_LOG" | grep -cE ' /v2/(library/library/|alpine/|docker\.io/)')"
# move the tag upstream; after the revalidate interval (2s) berth serves the new digest
t_check "tag library/alpine:3 moved upstream" up_retag "$A_URL" library/alpine 3 "$W/alp2" "$D_X2"
sleep 2.6
t_check "after the interval: ?ns= serves the new digest and its blobs" mv_verify /v2/alpine "?ns=docker.io" 3 "$D_X2"
t_check "after the interval: prefix form serves the new digest" mv_verify /v2/docker.io/library/alpine "" 3 "$D_X2"
code=$(bhead "/v2/alpine/manifests/3?ns=docker.io" "$W/x2")
t_eq "HEAD after the move: new Docker-Content-Digest" "200 $D_X2" "$code $(hdr "$W/x2.h" docker-content-digest)"
t_check "the old digest stays served by digest" mv_verify /v2/docker.io/library/alpine "" "$D_X1" "$D_X1"
# once the interval has passed again, a burst of 16 concurrent requests re-checks the tag once
sleep 2.6
pids=()
n0=$(up_count "$A_LOG" 'GET|HEAD' /v2/library/alpine/manifests/3)
for i in $(seq 1 16); do
    if [ $((i % 2)) = 0 ]; then p="/v2/alpine/manifests/3?ns=docker.io"; else p=/v2/docker.io/library/alpine/manifests/3; fi
    "${CURL[@]}" -H "$PL_ACCEPT" -o "$W/burst.$i" "$BERTH_URL$p" &
    pids+=("$!")
done
wait "${pids[@]}"
sleep 0.3
n1=$(up_count "$A_LOG" 'GET|HEAD' /v2/library/alpine/manifests/3)
t_eq "burst of 16 concurrent GETs after the interval: exactly one upstream tag check" 1 "$((n1 - n0))"
t_check "burst: all 16 got the current manifest" bash -c "for i in \$(seq 1 16); do [ \"\$(sha256sum '$W'/burst.\$i | cut -d' ' -f1)\" = '${D_X2#sha256:}' ] || exit 1; done"

# ---- 6. quay.io (revalidate 1h): no re-check inside the interval -------------------------------
t_check "quay.io org/stable:v1 served" mv_verify /v2/quay.io/org/stable "" v1 "$D_S1"
t_check "tag org/stable:v1 moved upstream" up_retag "$C_URL" org/stable v1 "$W/st2" "$D_S2"
sleep 0.3
q0=$(up_count "$C_LOG" 'GET|HEAD' /v2/org/stable/manifests/v1)
code1=$(bget /v2/quay.io/org/stable/manifests/v1 "$W/q1")
code2=$(bget "/v2/org/stable/manifests/v1?ns=quay.io" "$W/q2")
code3=$(bhead /v2/quay.io/org/stable/manifests/v1 "$W/q3")
t_eq "inside the interval the cached tag is served (old digest, GET/GET/HEAD)" \
    "200 $D_S1 200 $D_S1 200 $D_S1" \
    "$code1 sha256:$(t_sha256 "$W/q1") $code2 sha256:$(t_sha256 "$W/q2") $code3 $(hdr "$W/q3.h" docker-content-digest)"
sleep 0.3
t_eq "inside the interval: no upstream request for the tag" "$q0" "$(up_count "$C_LOG" 'GET|HEAD' /v2/org/stable/manifests/v1)"
t_check "another tag of the same repository is fetched (org/stable:v2)" mv_verify /v2/quay.io/org/stable "" v2 "$D_S2"

# ---- 7. coalescing: 20 concurrent pulls of a cold 64 MiB blob ---------------------------------
mkdir -p "$W/co"
pids=()
for i in $(seq 1 20); do
    if [ $((i % 2)) = 0 ]; then p="/v2/org/big/blobs/$D_BIG?ns=quay.io"; else p="/v2/quay.io/org/big/blobs/$D_BIG"; fi
    t_fetch "$W/co" "$i" "$BERTH_URL$p" 60 &
    pids+=("$!")
done
wait "${pids[@]}"
sleep 0.3
t_check "20 concurrent clients all got 200 and the exact 64 MiB" t_fetched_all "$W/co" 20 "${D_BIG#sha256:}"
t_eq "upstream C saw exactly one GET of the 64 MiB blob" 1 "$(up_count "$C_LOG" GET "/v2/org/big/blobs/$D_BIG")"
code=$("${CURL[@]}" -o "$W/big.again" -w '%{http_code}' "$BERTH_URL/v2/quay.io/org/big/blobs/$D_BIG")
t_eq "the big blob is then served from the store" "200 ${D_BIG#sha256:} 1" \
    "$code $(t_sha256 "$W/big.again") $(up_count "$C_LOG" GET "/v2/org/big/blobs/$D_BIG")"
rm -f "$W/big.again"

# ---- 8. corrupt upstream content is not served as good nor committed ---------------------------
BAD_FILE=$C_DATA/docker/registry/v2/blobs/sha256/${D_BAD:7:2}/${D_BAD#sha256:}/data
BAD_SIZE=$(stat -c %s "$W/bad")
cp "$BAD_FILE" "$W/bad.orig"
python3 - "$BAD_FILE" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(-1, 2); b = f.read(1); f.seek(-1, 2); f.write(bytes([b[0] ^ 0xff]))
PY
t_check "the upstream now serves wrong bytes under the blob's digest" bash -c \
    "[ \"\$(curl -s --max-time 20 '$C_URL/v2/org/corrupt/blobs/$D_BAD' | sha256sum | cut -d' ' -f1)\" != '${D_BAD#sha256:}' ]"
# corrupt_pull OUT PATH: the client did not get a complete 200 of the full length
corrupt_pull() {
    local out=$1 rc code size
    code=$(curl -s --max-time 20 -o "$out" -w '%{http_code} %{size_download}' "$BERTH_URL$2")
    rc=$?
    size=${code#* }
    code=${code%% *}
    if [ "$rc" = 0 ] && [ "$code" = 200 ] && [ "$size" = "$BAD_SIZE" ]; then
        echo "complete 200 of $size bytes, sha256 $(t_sha256 "$out")"
        return 1
    fi
    echo "$2: refused as expected: curl rc $rc HTTP $code, $size of $BAD_SIZE bytes" | tee -a "$W/corrupt.log" >&2
}
t_check "pull of the corrupt blob through berth fails (no complete 200)" corrupt_pull "$W/c1" "/v2/quay.io/org/corrupt/blobs/$D_BAD"
t_check "second pull (?ns=) also fails: nothing was committed" corrupt_pull "$W/c2" "/v2/org/corrupt/blobs/$D_BAD?ns=quay.io"
pids=()
for i in 1 2 3 4 5 6; do
    (corrupt_pull "$W/cc.$i" "/v2/quay.io/org/corrupt/blobs/$D_BAD" >"$W/cc.out.$i" 2>&1; echo $? >"$W/cc.rc.$i") &
    pids+=("$!")
done
wait "${pids[@]}"
t_check "6 concurrent pulls of the corrupt blob: none gets a complete 200" \
    bash -c "for i in 1 2 3 4 5 6; do [ \"\$(cat '$W'/cc.rc.\$i)\" = 0 ] || { cat '$W'/cc.out.\$i; exit 1; }; done"
cp "$W/bad.orig" "$BAD_FILE"
code=$("${CURL[@]}" -o "$W/c3" -w '%{http_code}' "$BERTH_URL/v2/quay.io/org/corrupt/blobs/$D_BAD")
t_eq "after the upstream file is restored the pull succeeds with the right bytes" "200 ${D_BAD#sha256:}" "$code $(t_sha256 "$W/c3")"

# ---- 9. several urls tried in order; a hung upstream ------------------------------------------
t_check "failover.example: first url refuses, the second serves (prefix)" mv_verify /v2/failover.example/org/fo "" v1 "$D_FO"
t_check "failover.example (?ns=)" mv_verify /v2/org/fo "?ns=failover.example" v1 "$D_FO"
# quick_err PATH: within curl's 10 s the answer is a 404/5xx error JSON
quick_err() {
    local code rc
    code=$(curl -s --max-time 10 -H "$PL_ACCEPT" -o "$W/qe" -w '%{http_code}' "$BERTH_URL$1")
    rc=$?
    [ "$rc" = 0 ] || { echo "curl rc $rc (HTTP $code) for $1"; return 1; }
    is_err_status "$code" || { echo "HTTP $code for $1"; return 1; }
    [ -n "$(errcode "$W/qe")" ] || { echo "HTTP $code for $1 without error JSON: $(head -c 200 "$W/qe")"; return 1; }
}
t_check "hung upstream (transfer timeout 2s): manifest GET answers an error in time" quick_err /v2/hang.example/org/x/manifests/v1
t_check "hung upstream: blob GET answers an error in time" quick_err "/v2/org/x/blobs/$NODIGEST?ns=hang.example"

# ---- 10. proxy.remoteurl: the default upstream, local repositories win ------------------------
t_check "no ns/prefix: org/remote:v1 comes from proxy.remoteurl, intact" pl_verify "$BERTH_URL" org/remote v1 "$D_R"
t_check "upstream C was asked for org/remote:v1" test "$(up_count "$C_LOG" 'GET|HEAD' /v2/org/remote/manifests/v1)" -ge 1
lw0=$(up_count "$C_LOG" 'GET|HEAD' /v2/org/local-wins/manifests/v1)
code=$(bget /v2/org/local-wins/manifests/v1 "$W/lw.m")
t_eq "a locally pushed repository wins over proxy.remoteurl" "200 $D_LW" "$code sha256:$(t_sha256 "$W/lw.m")"
sleep 0.3
t_eq "no upstream request for the local repository's tag" "$lw0" "$(up_count "$C_LOG" 'GET|HEAD' /v2/org/local-wins/manifests/v1)"
code=$(bget /v2/org/absent-everywhere/manifests/v1 "$W/abs")
t_check "a name neither local nor upstream: 404" bash -c "[ '$code' = 404 ] && grep -qE 'MANIFEST_UNKNOWN|NAME_UNKNOWN' '$W/abs'"

# ---- 11. skopeo through the path prefix ------------------------------------------------------
t_check "skopeo copy docker://berth/ghcr.io/org/app:v1 -> oci" "${SK[@]}" copy -q --preserve-digests \
    --src-tls-verify=false "docker://$BH/ghcr.io/org/app:v1" "oci:$W/sk-app:v1"
t_check "skopeo's copy has the upstream digest and intact blobs" layout_ok "$W/sk-app" v1 "$D_APP"
t_check "skopeo copy --all of the ghcr.io index" "${SK[@]}" copy -q --all --preserve-digests \
    --src-tls-verify=false "docker://$BH/ghcr.io/org/multi:v1" "oci:$W/sk-multi:v1"
t_check "the copied index has the upstream digests" layout_ok "$W/sk-multi" v1 "$D_MULTI"
t_check "skopeo copy docker://berth/docker.io/library/alpine:3 -> oci" "${SK[@]}" copy -q --preserve-digests \
    --src-tls-verify=false "docker://$BH/docker.io/library/alpine:3" "oci:$W/sk-alp:3"
t_check "skopeo's alpine copy is the current upstream digest" layout_ok "$W/sk-alp" 3 "$D_X2"
"${SK[@]}" inspect --raw --tls-verify=false "docker://$BH/ghcr.io/org/app:v1" >"$W/sk.raw" 2>"$W/sk.err"
t_check "skopeo inspect --raw equals the upstream bytes" cmp "$W/sk.raw" "$(blob_file "$W/app" "$D_APP")"

# ---- 12. containerd with hosts.toml (adds ?ns=) ------------------------------------------------
CT=$T_TMP/ctd
mkdir -p "$CT/root" "$CT/state" "$CT/hosts/ghcr.io" "$CT/hosts/docker.io"
cat >"$CT/hosts/ghcr.io/hosts.toml" <<EOF
server = "https://ghcr.io"

[host."http://$BH"]
  capabilities = ["pull", "resolve"]
EOF
cat >"$CT/hosts/docker.io/hosts.toml" <<EOF
server = "https://registry-1.docker.io"

[host."http://$BH"]
  capabilities = ["pull", "resolve"]
EOF
containerd_start "$CT"
t_check "private containerd is up" "${CTR[@]}" version
ctr_digest() { "${CTR[@]}" images ls 2>&1 | awk -v r="$1" '$1==r {print $3}'; }
ctr_pull() { timeout 60 "${CTR[@]}" images pull --http-dump --hosts-dir "$CT/hosts" --snapshotter native "$@"; }
t_check "ctr images pull ghcr.io/org/app:v1 via berth" ctr_pull ghcr.io/org/app:v1
cp "$T_TMP/.check.out" "$CT/pull1.out"
t_check "containerd asked berth with ?ns=ghcr.io" grep -qE "(HEAD|GET) /v2/org/app/manifests/v1\?ns=ghcr\.io" "$CT/pull1.out"
t_eq "ctr images ls: ghcr.io/org/app:v1 has the upstream digest" "$D_APP" "$(ctr_digest ghcr.io/org/app:v1)"
t_check "ctr images pull ghcr.io/org/multi:v1 (index, linux/amd64)" ctr_pull --platform linux/amd64 ghcr.io/org/multi:v1
t_eq "ctr images ls: the index digest" "$D_MULTI" "$(ctr_digest ghcr.io/org/multi:v1)"
t_check "ctr images pull docker.io/library/alpine:3 via berth" ctr_pull docker.io/library/alpine:3
cp "$T_TMP/.check.out" "$CT/pull2.out"
t_check "containerd asked berth with ?ns=docker.io" grep -qE "(HEAD|GET) /v2/library/alpine/manifests/3\?ns=docker\.io" "$CT/pull2.out"
t_eq "ctr images ls: docker.io/library/alpine:3 is the current upstream digest" "$D_X2" "$(ctr_digest docker.io/library/alpine:3)"
t_check "ctr images check: all complete" bash -c "[ \$(${CTR[*]} images check 2>&1 | grep -c complete) -ge 3 ]"
"${CTR[@]}" images rm --sync ghcr.io/org/app:v1 ghcr.io/org/multi:v1 docker.io/library/alpine:3 >/dev/null 2>&1
kill "$CTD_PID" 2>/dev/null
wait "$CTD_PID" 2>/dev/null

# ---- 13. upstream down: cached content still served, uncached fails fast ----------------------
kill "$A_PID"
wait "$A_PID" 2>/dev/null
t_check "upstream A is down" bash -c "! curl -s --max-time 2 -o /dev/null '$A_URL/v2/'"
sleep 2.6 # the docker.io tag is due for revalidation
code=$(bget "/v2/alpine/manifests/3?ns=docker.io" "$W/down1")
t_eq "upstream down: cached tag still 200" 200 "$code"
t_check "upstream down: same bytes as upstream's manifest" cmp "$W/down1" "$(blob_file "$W/alp2" "$D_X2")"
code=$(bhead /v2/docker.io/library/alpine/manifests/3 "$W/down2")
t_eq "upstream down: HEAD of the cached tag" "200 $D_X2" "$code $(hdr "$W/down2.h" docker-content-digest)"
t_check "upstream down: cached tag and blobs (prefix form)" mv_verify /v2/docker.io/library/alpine "" 3 "$D_X2"
t_check "upstream down: cached old digest" mv_verify /v2/alpine "?ns=docker.io" "$D_X1" "$D_X1"
t_check "upstream down: uncached tag (alpine:edge) -> error JSON in time" quick_err "/v2/alpine/manifests/edge?ns=docker.io"
t_check "upstream down: uncached manifest digest -> error JSON in time" quick_err "/v2/docker.io/library/alpine/manifests/$D_EDGE"
t_check "upstream down: uncached blob -> error JSON in time" \
    quick_err "/v2/docker.io/library/alpine/blobs/$(layers_of "$W/edge" "$D_EDGE" | tail -1)"
code=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/ghcr.io/org/app/manifests/v1")
t_eq "other mirrors unaffected" 200 "$code"

# ---- 14. catalog --------------------------------------------------------------------------
"${CURL[@]}" -o "$W/cat.json" "$BERTH_URL/v2/_catalog?n=10000"
jq -r '.repositories[]' "$W/cat.json" >"$W/cat.txt" 2>/dev/null
for r in ghcr.io/org/app ghcr.io/org/multi docker.io/library/alpine quay.io/org/stable quay.io/org/big \
    quay.io/org/corrupt failover.example/org/fo org/local-wins local/thing; do
    t_check "_catalog lists $r" grep -qxF "$r" "$W/cat.txt"
done
t_check "_catalog has no aliases (docker.io/alpine, library/alpine, org/app, alpine)" \
    bash -c "! grep -xE 'docker\.io/alpine|alpine|library/alpine|org/app|org/multi' '$W/cat.txt'"
for r in hang.example/org/x badauth.example/org/app ghcr.io/org/nothing-here ghcr.io/org/ghost; do
    t_check "_catalog has no $r (its fetches all failed)" bash -c "! grep -qxF '$r' '$W/cat.txt'"
done
# only failed/404 reads went to the default upstream for these two names
t_check "_catalog has no default-upstream copy of org/local-wins or org/absent-everywhere" \
    bash -c "! grep -E '.+/org/(local-wins|absent-everywhere)\$' '$W/cat.txt'"

# ---- 15. the cache survives a restart (upstream A still down) --------------------------------
t_check "berth exits cleanly on SIGTERM" berth_stop
if berth_start "$T_TMP/berth"; then
    code=$(bget "/v2/alpine/manifests/3?ns=docker.io" "$W/rs1")
    t_eq "after restart, upstream down: cached docker.io tag served" "200 $D_X2" "$code sha256:$(t_sha256 "$W/rs1")"
    t_check "after restart: cached docker.io blobs served" mv_verify /v2/docker.io/library/alpine "" "$D_X2" "$D_X2"
    snap_counts >"$W/counts3"
    t_check "after restart: ghcr.io image served" mv_verify /v2/org/app "?ns=ghcr.io" v1 "$D_APP"
    sleep 0.3
    snap_counts >"$W/counts4"
    t_check "after restart: no upstream request for cached digests" diff "$W/counts3" "$W/counts4"
else
    t_fail "berth restarts" "$(tail -5 "$T_TMP/berth/berth.log" | tr '\n' ' ')"
fi

t_check "berth is still serving" curl -sf --max-time 5 -o /dev/null "$BERTH_URL/v2/"
t_finish
