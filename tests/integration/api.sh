#!/usr/bin/env bash
# HTTP API suite: berth against the OCI distribution-spec v1.1 (plus the registry:2 extras it
# implements: catalog, delete switch, status endpoints). Every request goes through curl; test data
# is deterministic (seeded python3 random bytes, hand-built manifests whose digests and sizes come from
# sha256sum/stat). Runs three berth instances:
#   A  deletes enabled by config.yml     - most of the API
#   B  no config (deletes disabled)      - 405 UNSUPPORTED, exact catalog + paging, restart
#   C  config says no, env says yes      - REGISTRY_STORAGE_DELETE_ENABLED overrides the file
. "$(dirname "$0")/../lib.sh"

W=$T_TMP/w # scratch files; the servers live in $T_TMP/{a,b,c}
mkdir -p "$W"
unset REGISTRY_STORAGE_DELETE_ENABLED # each server's delete setting is chosen below

MT_OCI=application/vnd.oci.image.manifest.v1+json
MT_IDX=application/vnd.oci.image.index.v1+json
MT_D2=application/vnd.docker.distribution.manifest.v2+json
MT_DL=application/vnd.docker.distribution.manifest.list.v2+json
MT_CFG=application/vnd.oci.image.config.v1+json
MT_LAYER=application/vnd.oci.image.layer.v1.tar+gzip
MT_D2CFG=application/vnd.docker.container.image.v1+json
MT_D2LAYER=application/vnd.docker.image.rootfs.diff.tar.gzip
MT_EMPTY=application/vnd.oci.empty.v1+json
ACCEPT="$MT_OCI, $MT_IDX, $MT_D2, $MT_DL"
ZERO_UUID=00000000-0000-4000-8000-000000000000

# ---------------------------------------------------------------------------------------------
# helpers

# The real interpreter, resolved once: a pyenv-style shim costs half a second per start, and
# lib.sh's t_port starts python3 for every server.
PY=$(python3 -c 'import sys; print(sys.executable)')
mkdir -p "$W/bin"
ln -sf "$PY" "$W/bin/python3"
PATH=$W/bin:$PATH
# gen FILE SIZE SEED [FILE SIZE SEED...]: deterministic bytes.
gen() {
    "$PY" -c 'import sys
import random
a = sys.argv[1:]
for f, n, s in zip(a[0::3], map(int, a[1::3]), map(int, a[2::3])):
    open(f, "wb").write(random.Random(s).randbytes(n))' "$@"
}
# dg FILE: "sha256:<hex>" of FILE. Files registered with dg_cache (never rewritten) are looked up.
declare -A DG
dg() {
    if [ -n "${DG[$1]:-}" ]; then
        echo "${DG[$1]}"
        return
    fi
    local s
    s=$(sha256sum "$1")
    echo "sha256:${s%% *}"
}
dg_cache() {
    local h f
    while read -r h f; do DG[$f]=sha256:$h; done < <(sha256sum "$@")
}
sz() { stat -c %s "$1"; }
# desc MEDIATYPE FILE [EXTRA]: a descriptor JSON for FILE (EXTRA: more fields, e.g. "platform":{..})
desc() { printf '{"mediaType":"%s","digest":"%s","size":%s%s}' "$1" "$(dg "$2")" "$(sz "$2")" "${3:+,$3}"; }

# abs_url LOC: a Location value (absolute, or relative to the server) as an absolute URL.
abs_url() {
    case $1 in
        http://* | https://*) echo "$1" ;;
        /*) echo "$BERTH_URL$1" ;;
        *) echo "$BERTH_URL/$1" ;;
    esac
}
# with_q URL K=V: appends a query parameter to URL (which may already carry a query).
with_q() { case $1 in *\?*) echo "$1&$2" ;; *) echo "$1?$2" ;; esac; }

# req METHOD PATH|URL [curl args...]: one request. Sets ST (status; 000 when no response) and the
# header table H (lower-cased names; repeated headers joined by newlines); the raw headers are in
# $W/h and the body in $W/b (empty for HEAD).
declare -A H
req() {
    local m=$1 u mo=()
    u=$(abs_url "$2")
    shift 2
    case $m in
        GET) ;;
        HEAD) mo=(-I) ;;
        *) mo=(-X "$m") ;;
    esac
    : >"$W/h"
    : >"$W/b"
    ST=$(curl -s -g --path-as-is --max-time 30 -H 'Expect:' "${mo[@]}" -o "$W/b" -D "$W/h" -w '%{http_code}' "$@" "$u")
    [ "$m" = HEAD ] && : >"$W/b"
    [ -n "$ST" ] || ST=000
    parse_headers
}
# parse_headers: fills H from $W/h, keeping only the final response's block (pure bash: no forks).
parse_headers() {
    local line k v
    H=()
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line%$'\r'}
        case $line in
            HTTP/*) H=() ;;
            *:*)
                k=${line%%:*}
                k=${k,,}
                v=${line#*:}
                v=${v#"${v%%[![:space:]]*}"}
                v=${v%"${v##*[![:space:]]}"}
                if [ -n "${H[$k]+x}" ]; then H[$k]+=$'\n'$v; else H[$k]=$v; fi
                ;;
        esac
    done <"$W/h"
}
# hdrs NAME: every value of response header NAME, one per line. hdr NAME: the first one.
hdrs() { [ -z "${H[${1,,}]:-}" ] || printf '%s\n' "${H[${1,,}]}"; }
hdr() {
    local v=${H[${1,,}]:-}
    printf '%s' "${v%%$'\n'*}"
}
# bsha: sha256 of the last response body, as a digest.
bsha() { dg "$W/b"; }
# jb FILTER: jq -c over the last body ("<bad json>" when it does not parse).
jb() { jq -c "$1" "$W/b" 2>/dev/null || echo "<bad json>"; }
# snippet: a short view of the last response for failure messages.
snippet() { echo "status $ST body $(head -c 200 "$W/b" | tr '\n' ' ')"; }

# t_st NAME WANT: the last status matches WANT (an ERE, e.g. 202 or "202|204").
t_st() {
    if [[ $ST =~ ^($2)$ ]]; then t_ok "$1"; else t_fail "$1" "want $2, $(snippet)"; fi
}
# t_hdr NAME HEADER WANT: the last response's HEADER equals WANT.
t_hdr() { t_eq "$1" "$3" "$(hdr "$2")"; }
# t_nonempty NAME HEADER
t_nonempty() { if [ -n "${H[${2,,}]:-}" ]; then t_ok "$1"; else t_fail "$1" "no $2 header; $(snippet)"; fi; }
# t_err NAME STATUS CODES: the last response is an error with status STATUS (an ERE), a JSON
# Content-Type and a body {"errors":[{"code":C,"message":"..."}]} with C matching the ERE CODES.
t_err() {
    local name=$1 code="" msg="" body
    body=$(<"$W/b")
    # the usual shape is matched in bash; anything else goes through jq
    local ws='[[:space:]]*'
    if [[ $body =~ \}$ws$ && $body =~ ^$ws\{$ws\"errors\"$ws:$ws\[$ws\{$ws\"code\"$ws:$ws\"([A-Z_]+)\"$ws,$ws\"message\"$ws:$ws\" ]]; then
        code=${BASH_REMATCH[1]}
        msg=string
    else
        read -r code msg < <(jq -r '[(.errors[0].code | strings), (.errors[0].message | type)] | join(" ")' "$W/b" 2>/dev/null)
    fi
    if ! [[ $ST =~ ^($2)$ ]]; then
        t_fail "$name" "want status $2, $(snippet)"
    elif ! [[ ${code:-} =~ ^($3)$ ]]; then
        t_fail "$name" "want code $3, $(snippet)"
    elif [[ $(hdr Content-Type) != application/json* ]]; then
        t_fail "$name" "error Content-Type [$(hdr Content-Type)], want application/json"
    elif [ "${msg:-}" != string ]; then
        t_fail "$name" "errors[0].message is not a string; $(snippet)"
    else
        t_ok "$name"
    fi
}
# t_body NAME FILE: the last body is byte-identical to FILE.
t_body() { t_eq "$1" "$(dg "$2")" "$(bsha)"; }

# upload_blob REPO FILE: POST a session, PUT the whole blob with ?digest=; prints the digest.
upload_blob() {
    local d loc st
    d=$(dg "$2")
    loc=$(curl -s -g --max-time 30 -o /dev/null -w '%header{location}' -X POST -H 'Content-Length: 0' \
        "$BERTH_URL/v2/$1/blobs/uploads/")
    [ -n "$loc" ] || return 1
    st=$(curl -s -g --max-time 30 -o /dev/null -w '%{http_code}' -X PUT -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' --data-binary "@$2" "$(with_q "$(abs_url "$loc")" "digest=$d")")
    [ "$st" = 201 ] || return 1
    echo "$d"
}
# put_manifest REPO REF FILE [MEDIATYPE]: PUT FILE as a manifest (via req: sets ST, $W/h, $W/b).
put_manifest() { req PUT "/v2/$1/manifests/$2" -H "Content-Type: ${4:-$MT_OCI}" --data-binary "@$3"; }
# get_manifest METHOD REPO REF: GET/HEAD a manifest accepting every supported type.
get_manifest() { req "$1" "/v2/$2/manifests/$3" -H "Accept: $ACCEPT"; }
# mk_image OUT CONFIG LAYER [EXTRA]: a compact OCI image manifest (EXTRA: more top-level fields).
mk_image() {
    printf '{"schemaVersion":2,"mediaType":"%s","config":%s,"layers":[%s]%s}' \
        "$MT_OCI" "$(desc "$MT_CFG" "$2")" "$(desc "$MT_LAYER" "$3")" "${4:+,$4}" >"$1"
}
# seed_repo REPO: uploads the shared config + layer to REPO; 0 on success.
seed_repo() { upload_blob "$1" "$W/cfg.json" >/dev/null && upload_blob "$1" "$W/layer.bin" >/dev/null; }

# raw_head PATH: a HEAD over a raw socket (Connection: close); prints "<status> <body bytes>",
# the byte count being whatever the server sent after the header block.
raw_head() {
    "$PY" - "$BERTH_PORT" "$1" "$ACCEPT" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(("HEAD %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: %s\r\nConnection: close\r\n\r\n"
           % (sys.argv[2], sys.argv[3])).encode())
data = b""
try:
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
except socket.timeout:
    pass
head, _, rest = data.partition(b"\r\n\r\n")
status = head.split(b" ")[1].decode() if head.startswith(b"HTTP/") else "000"
print(status, len(rest))
PY
}

# link_next: the target of the last response's Link rel="next" header (empty when none).
link_next() { hdr Link | grep 'rel="next"' | sed -n 's/^[^<]*<\([^>]*\)>.*/\1/p'; }
# paginate FIRST_PATH JQ_ARRAY: follows Link headers from FIRST_PATH, printing the concatenated
# arrays (one item per line) to stdout; "PAGE-ERROR" lines mark a bad page (status, no rel/last).
paginate() {
    local url=$1 i next
    for i in $(seq 1 50); do
        req GET "$url"
        [ "$ST" = 200 ] || { echo "PAGE-ERROR status $ST"; return; }
        jq -r "$2[]" "$W/b" 2>/dev/null || echo "PAGE-ERROR json"
        [ -n "$(hdr Link)" ] || return
        hdr Link | grep -q 'rel="next"' || echo "PAGE-ERROR no rel=next"
        next=$(link_next)
        case $next in *last=*) ;; *) echo "PAGE-ERROR no last= in [$next]" ;; esac
        [ -n "$next" ] || return
        url=$next
    done
    echo "PAGE-ERROR endless"
}

# start_or_die LABEL DIR: berth_start, or record the failure and end the script (every later check
# would only repeat "connection refused").
start_or_die() {
    if berth_start "$2"; then
        t_ok "server $1 starts"
    else
        t_fail "server $1 starts" "$(tail -5 "$2/berth.log" 2>/dev/null | tr '\n' ' ')"
        t_finish
    fi
}

# fs_snapshot: every path under $T_TMP except the servers' data dirs and the scratch dir.
fs_snapshot() {
    find "$T_TMP" \( -path "$T_TMP/w" -o -path "$T_TMP/*/data" \) -prune -o -print |
        grep -v '/\.check\.out$' | sort
}

# ---------------------------------------------------------------------------------------------
# test data

printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$W/cfg.json"
gen "$W/layer.bin" 2048 1 "$W/layer2.bin" 1500 2 "$W/blob1k.bin" 1000 3 "$W/blob300.bin" 300 4 \
    "$W/other.bin" 777 5 "$W/single.bin" 4321 6 "$W/s512.bin" 999 7 "$W/mounted.bin" 555 8 \
    "$W/fallback.bin" 444 9 "$W/del.bin" 333 10 "$W/stream.bin" 64 11 "$W/big.bin" $((6 << 20)) 12 \
    "$W/il1.bin" 150 13 "$W/il2.bin" 170 14
: >"$W/zero.bin"
head -c 100 "$W/blob300.bin" >"$W/c1"
dd if="$W/blob300.bin" of="$W/c2" bs=1 skip=100 count=100 status=none
dd if="$W/blob300.bin" of="$W/c3" bs=1 skip=200 count=100 status=none
cat "$W/c1" "$W/c2" >"$W/c12"
printf '{}' >"$W/empty.json"
printf 'sbom payload\n' >"$W/sbom.txt"
printf 'signature payload\n' >"$W/sig.txt"
printf '{"kind":"cfg-artifact"}' >"$W/acfg.json"
NOPE=sha256:$(printf 'this blob was never pushed' | sha256sum | cut -d' ' -f1)
dg_cache "$W"/*.bin "$W"/*.json "$W"/*.txt "$W"/c1 "$W"/c2 "$W"/c3 "$W"/c12

# ---------------------------------------------------------------------------------------------
# server A: deletes enabled in config.yml

mkdir -p "$T_TMP/a"
cat >"$T_TMP/a/config.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $T_TMP/a/data
  delete:
    enabled: true
YML
start_or_die A "$T_TMP/a"

# --- base and status endpoints ---------------------------------------------------------------
req GET /v2/
t_st "GET /v2/ -> 200" 200
t_hdr "GET /v2/ has Docker-Distribution-API-Version" Docker-Distribution-API-Version registry/2.0
req HEAD /v2/
t_st "HEAD /v2/ -> 200" 200
req GET /
t_st "GET / -> 200" 200
req GET /health
t_st "GET /health -> 200" 200
if jq -e 'type == "object"' "$W/b" >/dev/null 2>&1; then t_ok "GET /health is a JSON object"; else t_fail "GET /health is a JSON object" "$(snippet)"; fi

# --- monolithic upload (POST + PUT) ----------------------------------------------------------
R=lib/a
D1K=$(dg "$W/blob1k.bin")
req POST "/v2/$R/blobs/uploads/" -H 'Content-Length: 0'
t_st "POST upload session -> 202" 202
t_nonempty "POST upload session has Location" Location
t_nonempty "POST upload session has Docker-Upload-UUID" Docker-Upload-UUID
LOC=$(abs_url "$(hdr Location)")
req PUT "$(with_q "$LOC" "digest=$D1K")" -H 'Content-Type: application/octet-stream' --data-binary "@$W/blob1k.bin"
t_st "monolithic PUT ?digest= -> 201" 201
t_hdr "monolithic PUT Docker-Content-Digest" Docker-Content-Digest "$D1K"
t_nonempty "monolithic PUT has Location" Location
BLOC=$(hdr Location)
req GET "$LOC"
t_err "GET a finished upload session -> 404 BLOB_UPLOAD_UNKNOWN" 404 BLOB_UPLOAD_UNKNOWN
if [ -n "$BLOC" ]; then
    req GET "$BLOC"
    t_st "GET the blob Location -> 200" 200
    t_body "blob Location serves the blob" "$W/blob1k.bin"
else
    t_fail "GET the blob Location -> 200" "no Location"
fi

# --- blob GET / HEAD / ranges ----------------------------------------------------------------
req GET "/v2/$R/blobs/$D1K"
t_st "GET blob -> 200" 200
t_body "GET blob returns the exact bytes" "$W/blob1k.bin"
t_hdr "GET blob Docker-Content-Digest" Docker-Content-Digest "$D1K"
t_hdr "GET blob Content-Length" Content-Length 1000
req HEAD "/v2/$R/blobs/$D1K"
t_st "HEAD blob -> 200" 200
t_hdr "HEAD blob Docker-Content-Digest" Docker-Content-Digest "$D1K"
t_hdr "HEAD blob Content-Length" Content-Length 1000
t_eq "HEAD blob sends no body" "200 0" "$(raw_head "/v2/$R/blobs/$D1K")"

# range REQ WANT_STATUS WANT_CONTENT_RANGE [START LEN]: one Range request on blob1k.
range() {
    req GET "/v2/$R/blobs/$D1K" -H "Range: $1"
    t_st "Range $1 -> $2" "$2"
    t_hdr "Range $1 Content-Range" Content-Range "$3"
    if [ $# -ge 5 ]; then
        dd if="$W/blob1k.bin" of="$W/slice" bs=1 skip="$4" count="$5" status=none
        t_body "Range $1 returns the exact bytes" "$W/slice"
        t_hdr "Range $1 Content-Length" Content-Length "$5"
    fi
}
range bytes=10-19 206 "bytes 10-19/1000" 10 10
range bytes=0-0 206 "bytes 0-0/1000" 0 1
range bytes=990- 206 "bytes 990-999/1000" 990 10
range bytes=-5 206 "bytes 995-999/1000" 995 5
range bytes=995-2000 206 "bytes 995-999/1000" 995 5
range bytes=1000-1010 416 "bytes */1000"
range bytes=5000- 416 "bytes */1000"
range bytes=-2000 206 "bytes 0-999/1000" 0 1000
range bytes=-0 416 "bytes */1000"
range bytes=500-0 416 "bytes */1000"
for r in bytes=abc bytes=5-x; do
    req GET "/v2/$R/blobs/$D1K" -H "Range: $r"
    t_st "Range $r (invalid) -> 200 (ignored) or 416" "200|416"
done

DZERO=$(upload_blob $R "$W/zero.bin") || t_fail "upload an empty blob" "upload failed"
t_eq "empty blob digest" "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" "$DZERO"
req GET "/v2/$R/blobs/$DZERO"
t_st "GET empty blob -> 200" 200
t_hdr "GET empty blob Content-Length" Content-Length 0
req HEAD "/v2/$R/blobs/$DZERO"
t_hdr "HEAD empty blob Content-Length" Content-Length 0
req GET "/v2/$R/blobs/$DZERO" -H "Range: bytes=0-"
t_st "Range on an empty blob -> 416" 416
t_hdr "Range on an empty blob Content-Range" Content-Range "bytes */0"

# 6 MiB blob in two PATCH chunks (4 MiB + 2 MiB), read back whole and across the chunk seam
DBIG=$(dg "$W/big.bin")
head -c $((4 << 20)) "$W/big.bin" >"$W/big.1"
tail -c $((2 << 20)) "$W/big.bin" >"$W/big.2"
req POST "/v2/$R/blobs/uploads/" -H 'Content-Length: 0'
LOC=$(abs_url "$(hdr Location)")
# this one lets curl send "Expect: 100-continue", as it does by default for large bodies
: >"$W/h"
: >"$W/b"
ST=$(curl -s -g --max-time 30 -o "$W/b" -D "$W/h" -w '%{http_code}' -X PATCH -H 'Content-Type: application/octet-stream' \
    -H "Content-Range: 0-$(((4 << 20) - 1))" --data-binary "@$W/big.1" "$LOC")
parse_headers
t_st "6 MiB blob: 4 MiB chunk with Expect: 100-continue -> 202" 202
t_hdr "6 MiB blob: 4 MiB chunk Range" Range "0-$(((4 << 20) - 1))"
[ -n "$(hdr Location)" ] && LOC=$(abs_url "$(hdr Location)")
req PATCH "$LOC" -H 'Content-Type: application/octet-stream' -H "Content-Range: $((4 << 20))-$(((6 << 20) - 1))" --data-binary "@$W/big.2"
t_hdr "6 MiB blob: 2 MiB chunk Range" Range "0-$(((6 << 20) - 1))"
[ -n "$(hdr Location)" ] && LOC=$(abs_url "$(hdr Location)")
req PUT "$(with_q "$LOC" "digest=$DBIG")" -H 'Content-Length: 0'
t_st "6 MiB blob completes -> 201" 201
req GET "/v2/$R/blobs/$DBIG"
t_body "6 MiB blob bytes" "$W/big.bin"
req GET "/v2/$R/blobs/$DBIG" -H "Range: bytes=$(((4 << 20) - 5))-$(((4 << 20) + 4))"
dd if="$W/big.bin" of="$W/slice" bs=1 skip=$(((4 << 20) - 5)) count=10 status=none
t_body "6 MiB blob: range across the chunk seam" "$W/slice"
req GET "/v2/$R/blobs/$DBIG" -H "Range: bytes=-3"
tail -c 3 "$W/big.bin" >"$W/slice"
t_body "6 MiB blob: suffix range" "$W/slice"
# Bodies leave in sendfile calls of up to 2 MiB (src/http/bigsend.c), bounded by the response's
# end: ranges that end mid-file, then the whole blob, on one kept-alive connection, each exact.
U="$BERTH_URL/v2/$R/blobs/$DBIG"
conns=$(curl -s -g --max-time 30 -r 1000-3000000 "$U" -o "$W/k1" -w '%{num_connects}' \
    --next -s -r 2097151-4194305 "$U" -o "$W/k2" -w ' %{num_connects}' \
    --next -s "$U" -o "$W/k3" -w ' %{num_connects}' \
    --next -s -r $(((1 << 20) + 7))- "$U" -o "$W/k4" -w ' %{num_connects}')
t_eq "6 MiB blob: four GETs share one connection" "1 0 0 0" "$conns"
dd if="$W/big.bin" of="$W/slice" bs=4096 iflag=skip_bytes,count_bytes skip=1000 count=2999001 status=none
t_eq "6 MiB blob: range 1000-3000000 on a kept-alive connection" "$(dg "$W/slice")" "$(dg "$W/k1")"
dd if="$W/big.bin" of="$W/slice" bs=4096 iflag=skip_bytes,count_bytes skip=2097151 count=2097155 status=none
t_eq "6 MiB blob: range across two 2 MiB marks, same connection" "$(dg "$W/slice")" "$(dg "$W/k2")"
t_eq "6 MiB blob: whole blob after two ranges, same connection" "$DBIG" "$(dg "$W/k3")"
tail -c +$(((1 << 20) + 8)) "$W/big.bin" >"$W/slice"
t_eq "6 MiB blob: open-ended range after the whole blob" "$(dg "$W/slice")" "$(dg "$W/k4")"
# /proc/PID/io counts every sendfile call in syscw: 6 MiB in 128 KiB calls would be 48 or more
# (blobs on the local disk only: over S3 they stream from the bucket, not from a file)
[ -z "${T_S3_PREFIXED:-}" ] && case "$(t_bin_arch)" in amd64 | arm64)
    w0=$(awk '/^syscw/ {print $2}' "/proc/$BERTH_PID/io")
    curl -s -g --max-time 30 -o /dev/null "$U"
    w1=$(awk '/^syscw/ {print $2}' "/proc/$BERTH_PID/io")
    t_check "6 MiB blob GET: sendfile in calls of up to 2 MiB ($((w1 - w0)) write calls)" \
        test $((w1 - w0)) -lt 24
    ;;
esac

req GET "/v2/$R/blobs/$NOPE"
t_err "GET unknown blob -> 404 BLOB_UNKNOWN" 404 BLOB_UNKNOWN
req HEAD "/v2/$R/blobs/$NOPE"
t_st "HEAD unknown blob -> 404" 404

# --- repository isolation and cross-repo mount -----------------------------------------------
upload_blob lib/b "$W/other.bin" >/dev/null || t_fail "seed lib/b" "upload failed"
req GET "/v2/lib/b/blobs/$D1K"
t_err "blob of lib/a is not visible from lib/b" 404 BLOB_UNKNOWN
req HEAD "/v2/lib/b/blobs/$D1K"
t_st "HEAD blob of lib/a from lib/b -> 404" 404

DM=$(dg "$W/mounted.bin")
upload_blob lib/a "$W/mounted.bin" >/dev/null || t_fail "seed mount source" "upload failed"
req POST "/v2/lib/b/blobs/uploads/?mount=$DM&from=lib/a" -H 'Content-Length: 0'
t_st "mount from lib/a -> 201" 201
t_nonempty "mount has Location" Location
t_hdr "mount Docker-Content-Digest" Docker-Content-Digest "$DM"
req GET "/v2/lib/b/blobs/$DM"
t_st "mounted blob readable in lib/b" 200
t_body "mounted blob bytes" "$W/mounted.bin"

DF=$(dg "$W/fallback.bin")
req POST "/v2/lib/b/blobs/uploads/?mount=$NOPE&from=lib/a" -H 'Content-Length: 0'
t_st "mount of an unknown digest -> 202 session" 202
t_nonempty "mount fallback has Location" Location
LOC=$(abs_url "$(hdr Location)")
req PUT "$(with_q "$LOC" "digest=$DF")" -H 'Content-Type: application/octet-stream' --data-binary "@$W/fallback.bin"
t_st "mount fallback session completes -> 201" 201
req POST "/v2/lib/c/blobs/uploads/?mount=$D1K&from=lib/nothing" -H 'Content-Length: 0'
t_st "mount naming a repo without the blob -> 202 session" 202
req GET "/v2/lib/c/blobs/$D1K"
t_err "failed mount does not expose the blob" 404 BLOB_UNKNOWN

# --- single-request POST ?digest= --------------------------------------------------------------
DS=$(dg "$W/single.bin")
req POST "/v2/$R/blobs/uploads/?digest=$DS" -H 'Content-Type: application/octet-stream' --data-binary "@$W/single.bin"
t_st "single POST ?digest= -> 201" 201
t_hdr "single POST Docker-Content-Digest" Docker-Content-Digest "$DS"
t_nonempty "single POST has Location" Location
req GET "/v2/$R/blobs/$DS"
t_body "single POST blob readable" "$W/single.bin"
req POST "/v2/$R/blobs/uploads/?digest=$(dg "$W/c1")" -H 'Content-Type: application/octet-stream' --data-binary "@$W/c2"
t_err "single POST with the wrong digest -> 400 DIGEST_INVALID" 400 DIGEST_INVALID
req GET "/v2/$R/blobs/$(dg "$W/c1")"
t_err "wrong-digest POST stored nothing" 404 BLOB_UNKNOWN

# --- what real clients send: percent-encoded query values (Go encodes ':' and '/'), chunked bodies
gen "$W/enc.bin" 321 40 "$W/te1.bin" 1500000 41 "$W/te2.bin" 7000 42
DENC=$(dg "$W/enc.bin")
req POST "/v2/$R/blobs/uploads/" -H 'Content-Length: 0'
LOC=$(abs_url "$(hdr Location)")
req PUT "$(with_q "$LOC" "digest=${DENC/:/%3A}")" -H 'Content-Type: application/octet-stream' --data-binary "@$W/enc.bin"
t_st "PUT ?digest=sha256%3A... (percent-encoded) -> 201" 201
t_hdr "percent-encoded digest: Docker-Content-Digest" Docker-Content-Digest "$DENC"
req POST "/v2/lib/b/blobs/uploads/?mount=${DENC/:/%3A}&from=lib%2Fa" -H 'Content-Length: 0'
t_st "mount with percent-encoded mount= and from= -> 201" 201
req GET "/v2/lib/b/blobs/$DENC"
t_body "percent-encoded mount: blob readable" "$W/enc.bin"

DTE1=$(dg "$W/te1.bin")
req POST "/v2/$R/blobs/uploads/" -H 'Content-Length: 0'
LOC=$(abs_url "$(hdr Location)")
req PATCH "$LOC" -H 'Content-Type: application/octet-stream' -H 'Transfer-Encoding: chunked' --data-binary "@$W/te1.bin"
t_st "PATCH with Transfer-Encoding: chunked -> 202" 202
t_hdr "chunked-encoding PATCH Range" Range 0-1499999
[ -n "$(hdr Location)" ] && LOC=$(abs_url "$(hdr Location)")
req PUT "$(with_q "$LOC" "digest=$DTE1")" -H 'Content-Length: 0'
t_st "upload after a chunked-encoding PATCH completes -> 201" 201
req GET "/v2/$R/blobs/$DTE1"
t_body "chunked-encoding PATCH bytes" "$W/te1.bin"
DTE2=$(dg "$W/te2.bin")
req POST "/v2/$R/blobs/uploads/?digest=$DTE2" -H 'Content-Type: application/octet-stream' -H 'Transfer-Encoding: chunked' --data-binary "@$W/te2.bin"
t_st "single POST with Transfer-Encoding: chunked -> 201" 201
req GET "/v2/$R/blobs/$DTE2"
t_body "chunked-encoding single POST bytes" "$W/te2.bin"

# --- chunked upload --------------------------------------------------------------------------
D300=$(dg "$W/blob300.bin")
req POST "/v2/$R/blobs/uploads/" -H 'Content-Length: 0'
LOC=$(abs_url "$(hdr Location)")
UUID=$(hdr Docker-Upload-UUID)
req PATCH "$LOC" -H 'Content-Type: application/octet-stream' -H 'Content-Range: 0-99' --data-binary "@$W/c1"
t_st "PATCH chunk 0-99 -> 202" 202
t_hdr "PATCH chunk 0-99 Range" Range 0-99
t_nonempty "PATCH chunk has Location" Location
[ -n "$(hdr Location)" ] && LOC=$(abs_url "$(hdr Location)")
req GET "$LOC"
t_st "GET upload status -> 204" 204
t_hdr "GET upload status Range" Range 0-99
t_hdr "GET upload status Docker-Upload-UUID" Docker-Upload-UUID "$UUID"
req PATCH "$LOC" -H 'Content-Type: application/octet-stream' -H 'Content-Range: 100-199' --data-binary "@$W/c2"
t_st "PATCH chunk 100-199 -> 202" 202
t_hdr "PATCH chunk 100-199 Range" Range 0-199
[ -n "$(hdr Location)" ] && LOC=$(abs_url "$(hdr Location)")
req PATCH "$LOC" -H 'Content-Type: application/octet-stream' -H 'Content-Range: 100-199' --data-binary "@$W/c2"
t_st "repeated chunk 100-199 -> 416" 416
req PATCH "$LOC" -H 'Content-Type: application/octet-stream' -H 'Content-Range: 300-399' --data-binary "@$W/c3"
t_st "out-of-order chunk 300-399 -> 416" 416
req PATCH "$LOC" -H 'Content-Type: application/octet-stream' -H 'Content-Range: 0-99' --data-binary "@$W/c1"
t_st "rewound chunk 0-99 -> 416" 416
req PATCH "$LOC" -H 'Content-Type: application/octet-stream' -H 'Content-Range: 200-249' --data-binary "@$W/c3"
t_err "Content-Range shorter than the body -> 400/416" "400|416" '[A-Z_]+'
req GET "$LOC"
t_st "session survives rejected chunks -> 204" 204
t_hdr "rejected chunks left the Range unchanged" Range 0-199
req PUT "$(with_q "$LOC" "digest=$D300")" -H 'Content-Type: application/octet-stream' --data-binary "@$W/c3"
t_st "final PUT with the last chunk -> 201" 201
t_hdr "final PUT Docker-Content-Digest" Docker-Content-Digest "$D300"
req GET "/v2/$R/blobs/$D300"
t_body "chunked blob is the concatenation" "$W/blob300.bin"

# chunked, final PUT without a body
D12=$(dg "$W/c12")
req POST "/v2/$R/blobs/uploads/" -H 'Content-Length: 0'
LOC=$(abs_url "$(hdr Location)")
req PATCH "$LOC" -H 'Content-Type: application/octet-stream' -H 'Content-Range: 0-99' --data-binary "@$W/c1"
[ -n "$(hdr Location)" ] && LOC=$(abs_url "$(hdr Location)")
req PATCH "$LOC" -H 'Content-Type: application/octet-stream' -H 'Content-Range: 100-199' --data-binary "@$W/c2"
[ -n "$(hdr Location)" ] && LOC=$(abs_url "$(hdr Location)")
req PUT "$(with_q "$LOC" "digest=$D12")" -H 'Content-Type: application/octet-stream' -H 'Content-Length: 0'
t_st "final PUT without a body -> 201" 201
req GET "/v2/$R/blobs/$D12"
t_body "bodiless final PUT stored both chunks" "$W/c12"

# streamed PATCH (no Content-Range)
DST=$(dg "$W/stream.bin")
head -c 40 "$W/stream.bin" >"$W/st1"
tail -c 24 "$W/stream.bin" >"$W/st2"
req POST "/v2/$R/blobs/uploads/" -H 'Content-Length: 0'
LOC=$(abs_url "$(hdr Location)")
req PATCH "$LOC" -H 'Content-Type: application/octet-stream' --data-binary "@$W/st1"
t_st "streamed PATCH -> 202" 202
t_hdr "streamed PATCH Range" Range 0-39
[ -n "$(hdr Location)" ] && LOC=$(abs_url "$(hdr Location)")
req PATCH "$LOC" -H 'Content-Type: application/octet-stream' --data-binary "@$W/st2"
t_st "second streamed PATCH -> 202" 202
t_hdr "second streamed PATCH Range" Range 0-63
[ -n "$(hdr Location)" ] && LOC=$(abs_url "$(hdr Location)")
req PUT "$(with_q "$LOC" "digest=$DST")" -H 'Content-Length: 0'
t_st "streamed upload completes -> 201" 201
req GET "/v2/$R/blobs/$DST"
t_body "streamed blob bytes" "$W/stream.bin"

# two sessions interleaved in one repository
head -c 70 "$W/il1.bin" >"$W/il1.a"
tail -c 80 "$W/il1.bin" >"$W/il1.b"
req POST "/v2/$R/blobs/uploads/" -H 'Content-Length: 0'
L1=$(abs_url "$(hdr Location)")
req POST "/v2/$R/blobs/uploads/" -H 'Content-Length: 0'
L2=$(abs_url "$(hdr Location)")
t_eq "two sessions get distinct Locations" 1 "$([ "$L1" != "$L2" ] && echo 1)"
req PATCH "$L1" -H 'Content-Type: application/octet-stream' -H 'Content-Range: 0-69' --data-binary "@$W/il1.a"
[ -n "$(hdr Location)" ] && L1=$(abs_url "$(hdr Location)")
req PATCH "$L2" -H 'Content-Type: application/octet-stream' -H 'Content-Range: 0-169' --data-binary "@$W/il2.bin"
t_hdr "interleaved session 2 Range" Range 0-169
[ -n "$(hdr Location)" ] && L2=$(abs_url "$(hdr Location)")
req PATCH "$L1" -H 'Content-Type: application/octet-stream' -H 'Content-Range: 70-149' --data-binary "@$W/il1.b"
t_hdr "interleaved session 1 Range" Range 0-149
[ -n "$(hdr Location)" ] && L1=$(abs_url "$(hdr Location)")
req PUT "$(with_q "$L2" "digest=$(dg "$W/il2.bin")")" -H 'Content-Length: 0'
t_st "interleaved session 2 completes" 201
req PUT "$(with_q "$L1" "digest=$(dg "$W/il1.bin")")" -H 'Content-Length: 0'
t_st "interleaved session 1 completes" 201
req GET "/v2/$R/blobs/$(dg "$W/il1.bin")"
t_body "interleaved session 1 bytes" "$W/il1.bin"
req GET "/v2/$R/blobs/$(dg "$W/il2.bin")"
t_body "interleaved session 2 bytes" "$W/il2.bin"
req PUT "$(with_q "$L1" "digest=$(dg "$W/il1.bin")")" -H 'Content-Length: 0'
t_err "PUT on a completed session -> 404 BLOB_UPLOAD_UNKNOWN" 404 BLOB_UPLOAD_UNKNOWN

# parallel: the same blob pushed 6 times at once plus 6 distinct blobs, all into one repository
gen "$W/par.same" 20000 20 "$W/par.0" 3000 21 "$W/par.1" 3001 22 "$W/par.2" 3002 23 "$W/par.3" 3003 24 \
    "$W/par.4" 3004 25 "$W/par.5" 3005 26
pids=()
for i in 0 1 2 3 4 5; do
    upload_blob lib/par "$W/par.same" >"$W/par.same.out.$i" &
    pids+=($!)
    upload_blob lib/par "$W/par.$i" >"$W/par.out.$i" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
bad=""
for i in 0 1 2 3 4 5; do
    [ "$(cat "$W/par.same.out.$i")" = "$(dg "$W/par.same")" ] || bad="$bad same.$i"
    [ "$(cat "$W/par.out.$i")" = "$(dg "$W/par.$i")" ] || bad="$bad distinct.$i"
    req GET "/v2/lib/par/blobs/$(dg "$W/par.$i")"
    [ "$(bsha)" = "$(dg "$W/par.$i")" ] || bad="$bad get.$i"
done
t_eq "12 parallel uploads all succeed" "" "$bad"
req GET "/v2/lib/par/blobs/$(dg "$W/par.same")"
t_body "blob pushed 6 times in parallel is intact" "$W/par.same"

# the same 1 MiB chunk PATCHed twice at once into one session: exactly one may land
gen "$W/par.chunk" $((1 << 20)) 27
req POST "/v2/lib/par/blobs/uploads/" -H 'Content-Length: 0'
LOC=$(abs_url "$(hdr Location)")
for i in 0 1; do
    curl -s -g --max-time 30 -H 'Expect:' -o /dev/null -w '%{http_code}' -X PATCH -H 'Content-Type: application/octet-stream' \
        -H "Content-Range: 0-$(((1 << 20) - 1))" --data-binary "@$W/par.chunk" "$LOC" >"$W/par.patch.$i" &
    pids[i]=$!
done
wait "${pids[0]}" "${pids[1]}"
t_eq "two concurrent PATCHes of the same range: exactly one 202" 1 "$(cat "$W/par.patch.0" "$W/par.patch.1" | grep -o 202 | wc -l)"
req GET "$LOC"
t_hdr "after concurrent PATCHes the session holds the chunk once" Range "0-$(((1 << 20) - 1))"
req PUT "$(with_q "$LOC" "digest=$(dg "$W/par.chunk")")" -H 'Content-Length: 0'
t_st "session after concurrent PATCHes completes -> 201" 201

# five manifests PUT to one tag at once: the tag ends on one of them, served consistently
seed_repo lib/par || t_fail "seed lib/par" "upload failed"
pids=()
for i in 0 1 2 3 4; do
    mk_image "$W/race.$i.json" "$W/cfg.json" "$W/layer.bin" "\"annotations\":{\"race\":\"$i\"}"
    curl -s -g --max-time 30 -H 'Expect:' -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: $MT_OCI" \
        --data-binary "@$W/race.$i.json" "$BERTH_URL/v2/lib/par/manifests/race" >"$W/race.out.$i" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
t_eq "five concurrent PUTs to one tag -> 201 each" "201 201 201 201 201" "$(cat "$W"/race.out.* | sed 's/201/& /g; s/ $//')"
get_manifest GET lib/par race
RD=$(hdr Docker-Content-Digest)
t_eq "raced tag serves the manifest its Docker-Content-Digest names" "$RD" "$(bsha)"
t_eq "raced tag is one of the five" 1 "$(for i in 0 1 2 3 4; do dg "$W/race.$i.json"; done | grep -cx "$RD")"
req GET /v2/lib/par/tags/list
t_eq "raced tag listed once" '["race"]' "$(jb .tags)"

# wrong digest at the final PUT
req POST "/v2/$R/blobs/uploads/" -H 'Content-Length: 0'
LOC=$(abs_url "$(hdr Location)")
req PUT "$(with_q "$LOC" "digest=$(dg "$W/c1")")" -H 'Content-Type: application/octet-stream' --data-binary "@$W/c3"
t_err "PUT with a digest that does not match -> 400 DIGEST_INVALID" 400 DIGEST_INVALID
req GET "/v2/$R/blobs/$(dg "$W/c1")"
t_err "mismatched PUT stored nothing under the claimed digest" 404 BLOB_UNKNOWN
req GET "/v2/$R/blobs/$(dg "$W/c3")"
t_err "mismatched PUT stored nothing under the real digest" 404 BLOB_UNKNOWN

# cancel, unknown and foreign sessions
req POST "/v2/$R/blobs/uploads/" -H 'Content-Length: 0'
LOC=$(abs_url "$(hdr Location)")
UUID=$(hdr Docker-Upload-UUID)
req PATCH "$LOC" -H 'Content-Type: application/octet-stream' -H 'Content-Range: 0-99' --data-binary "@$W/c1"
[ -n "$(hdr Location)" ] && LOC=$(abs_url "$(hdr Location)")
if [ -n "$UUID" ]; then
    req GET "/v2/lib/b/blobs/uploads/$UUID"
    t_err "session of lib/a is unknown under lib/b" 404 BLOB_UPLOAD_UNKNOWN
else
    t_fail "session of lib/a is unknown under lib/b" "no Docker-Upload-UUID"
fi
req DELETE "$LOC"
t_st "DELETE upload session -> 204" 204
req GET "$LOC"
t_err "GET cancelled session -> 404 BLOB_UPLOAD_UNKNOWN" 404 BLOB_UPLOAD_UNKNOWN
req PATCH "$LOC" -H 'Content-Type: application/octet-stream' --data-binary "@$W/c2"
t_err "PATCH cancelled session -> 404 BLOB_UPLOAD_UNKNOWN" 404 BLOB_UPLOAD_UNKNOWN
req GET "/v2/$R/blobs/uploads/$ZERO_UUID"
t_err "GET unknown upload uuid -> 404 BLOB_UPLOAD_UNKNOWN" 404 BLOB_UPLOAD_UNKNOWN
req PATCH "/v2/$R/blobs/uploads/$ZERO_UUID" -H 'Content-Type: application/octet-stream' --data-binary "@$W/c1"
t_err "PATCH unknown upload uuid -> 404 BLOB_UPLOAD_UNKNOWN" 404 BLOB_UPLOAD_UNKNOWN
req PUT "/v2/$R/blobs/uploads/$ZERO_UUID?digest=$(dg "$W/c1")" -H 'Content-Type: application/octet-stream' --data-binary "@$W/c1"
t_err "PUT unknown upload uuid -> 404 BLOB_UPLOAD_UNKNOWN" 404 BLOB_UPLOAD_UNKNOWN
req DELETE "/v2/$R/blobs/uploads/$ZERO_UUID"
t_err "DELETE unknown upload uuid -> 404 BLOB_UPLOAD_UNKNOWN" 404 BLOB_UPLOAD_UNKNOWN

# --- sha512 ----------------------------------------------------------------------------------
D512=sha512:$(sha512sum "$W/s512.bin" | cut -d' ' -f1)
req POST "/v2/$R/blobs/uploads/?digest-algorithm=sha512" -H 'Content-Length: 0'
t_st "POST ?digest-algorithm=sha512 -> 202" 202
LOC=$(abs_url "$(hdr Location)")
req PUT "$(with_q "$LOC" "digest=$D512")" -H 'Content-Type: application/octet-stream' --data-binary "@$W/s512.bin"
t_st "PUT ?digest=sha512:... -> 201" 201
t_hdr "sha512 PUT Docker-Content-Digest" Docker-Content-Digest "$D512"
req GET "/v2/$R/blobs/$D512"
t_st "GET blob by sha512 digest -> 200" 200
t_body "sha512 blob bytes" "$W/s512.bin"
t_hdr "GET sha512 blob Docker-Content-Digest" Docker-Content-Digest "$D512"
req HEAD "/v2/$R/blobs/$D512"
t_hdr "HEAD sha512 blob Content-Length" Content-Length 999

# --- malformed digests -----------------------------------------------------------------------
req POST "/v2/$R/blobs/uploads/?digest-algorithm=md5" -H 'Content-Length: 0'
t_err "POST ?digest-algorithm=md5 (unsupported) -> 400" 400 '[A-Z_]+'
H63=$(t_sha256 "$W/c1" | cut -c1-63)
HUP=$(t_sha256 "$W/c1" | tr a-f A-F)
req POST "/v2/$R/blobs/uploads/" -H 'Content-Length: 0'
LOC=$(abs_url "$(hdr Location)")
req PUT "$(with_q "$LOC" "digest=sha256:xyz")" -H 'Content-Type: application/octet-stream' --data-binary "@$W/c1"
t_err "PUT ?digest=sha256:xyz -> 400 DIGEST_INVALID" 400 DIGEST_INVALID
req POST "/v2/$R/blobs/uploads/?digest=md5:d41d8cd98f00b204e9800998ecf8427e" -H 'Content-Type: application/octet-stream' --data-binary "@$W/c1"
t_err "POST ?digest=md5:... -> 400 DIGEST_INVALID" 400 DIGEST_INVALID
req POST "/v2/$R/blobs/uploads/?digest=sha256:$H63" -H 'Content-Type: application/octet-stream' --data-binary "@$W/c1"
t_err "POST ?digest= with 63 hex chars -> 400 DIGEST_INVALID" 400 DIGEST_INVALID
for bad in sha256:xyz "md5:d41d8cd98f00b204e9800998ecf8427e" "sha256:$H63" "sha256:$HUP" "nocolon"; do
    req GET "/v2/$R/blobs/$bad"
    t_err "GET blob $bad -> 400 DIGEST_INVALID" 400 DIGEST_INVALID
done
req HEAD "/v2/$R/blobs/sha256:xyz"
t_st "HEAD blob sha256:xyz -> 400" 400
req GET "/v2/$R/manifests/sha256:xyz" -H "Accept: $ACCEPT"
t_err "GET manifest sha256:xyz -> 400 DIGEST_INVALID" 400 DIGEST_INVALID
req POST "/v2/lib/b/blobs/uploads/?mount=sha256:xyz&from=lib/a" -H 'Content-Length: 0'
t_st "mount=sha256:xyz -> 400 or 202, never 5xx" "400|202"

# --- blob DELETE (enabled) -------------------------------------------------------------------
DDEL=$(upload_blob lib/del "$W/del.bin") || t_fail "seed lib/del" "upload failed"
req DELETE "/v2/lib/del/blobs/$DDEL"
t_st "DELETE blob -> 202" 202
req GET "/v2/lib/del/blobs/$DDEL"
t_err "GET deleted blob -> 404 BLOB_UNKNOWN" 404 BLOB_UNKNOWN
req HEAD "/v2/lib/del/blobs/$DDEL"
t_st "HEAD deleted blob -> 404" 404
req DELETE "/v2/lib/del/blobs/$DDEL"
t_err "DELETE deleted blob -> 404 BLOB_UNKNOWN" 404 BLOB_UNKNOWN
t_eq "re-upload a deleted blob" "$DDEL" "$(upload_blob lib/del "$W/del.bin")"
req GET "/v2/lib/del/blobs/$DDEL"
t_body "re-uploaded blob readable" "$W/del.bin"

# --- manifests -------------------------------------------------------------------------------
R=lib/img
seed_repo $R || t_fail "seed $R" "upload failed"
upload_blob $R "$W/layer2.bin" >/dev/null || t_fail "seed $R layer2" "upload failed"
# odd spacing, tabs, unusual key order, trailing newline: the registry must keep every byte
printf '{\n   "config" : %s,\n\t"layers":[ %s ] ,\n "mediaType":"%s",   "schemaVersion" : 2 ,"annotations":{"z":"1","a":"2"}\n}\n' \
    "$(desc "$MT_CFG" "$W/cfg.json")" "$(desc "$MT_LAYER" "$W/layer.bin")" "$MT_OCI" >"$W/m1.json"
M1=$(dg "$W/m1.json")
M1S=$(sz "$W/m1.json")
put_manifest $R v1 "$W/m1.json"
t_st "PUT manifest by tag -> 201" 201
t_nonempty "PUT manifest has Location" Location
t_hdr "PUT manifest Docker-Content-Digest is sha256 of the bytes" Docker-Content-Digest "$M1"
MLOC=$(hdr Location)
if [ -n "$MLOC" ]; then
    req GET "$MLOC" -H "Accept: $ACCEPT"
    t_hdr "PUT manifest Location serves the manifest" Docker-Content-Digest "$M1"
else
    t_fail "PUT manifest Location serves the manifest" "no Location"
fi
for ref in v1 "$M1"; do
    what=tag
    [ "$ref" = "$M1" ] && what=digest
    get_manifest GET $R "$ref"
    t_st "GET manifest by $what -> 200" 200
    t_body "GET manifest by $what: exact bytes (whitespace and key order kept)" "$W/m1.json"
    t_hdr "GET manifest by $what Content-Type" Content-Type "$MT_OCI"
    t_hdr "GET manifest by $what Docker-Content-Digest" Docker-Content-Digest "$M1"
    t_hdr "GET manifest by $what Content-Length" Content-Length "$M1S"
    get_manifest HEAD $R "$ref"
    t_st "HEAD manifest by $what -> 200" 200
    t_hdr "HEAD manifest by $what Content-Type" Content-Type "$MT_OCI"
    t_hdr "HEAD manifest by $what Docker-Content-Digest" Docker-Content-Digest "$M1"
    t_hdr "HEAD manifest by $what Content-Length" Content-Length "$M1S"
    t_eq "HEAD manifest by $what sends no body" "200 0" "$(raw_head "/v2/$R/manifests/$ref")"
done

mk_image "$W/m2.json" "$W/cfg.json" "$W/layer2.bin"
M2=$(dg "$W/m2.json")
put_manifest $R "$M2" "$W/m2.json"
t_st "PUT manifest by digest -> 201" 201
t_hdr "PUT manifest by digest Docker-Content-Digest" Docker-Content-Digest "$M2"
put_manifest $R v2 "$W/m2.json"
t_st "PUT same manifest under a tag -> 201" 201

# a manifest without a mediaType field is served with the Content-Type it was pushed with
printf '{"schemaVersion":2,"config":%s,"layers":[%s]}' "$(desc "$MT_CFG" "$W/cfg.json")" "$(desc "$MT_LAYER" "$W/layer2.bin")" >"$W/nomt.json"
put_manifest $R nomt "$W/nomt.json"
t_st "PUT manifest without mediaType -> 201" 201
get_manifest GET $R nomt
t_body "manifest without mediaType: exact bytes" "$W/nomt.json"
t_hdr "manifest without mediaType: Content-Type from the PUT" Content-Type "$MT_OCI"

# manifests are per repository too
get_manifest GET lib/b "$M1"
t_err "manifest of lib/img is unknown in lib/b" 404 MANIFEST_UNKNOWN

# OCI index
printf '{"schemaVersion":2,"mediaType":"%s","manifests":[%s,%s]}' "$MT_IDX" \
    "$(desc "$MT_OCI" "$W/m1.json" '"platform":{"architecture":"amd64","os":"linux"}')" \
    "$(desc "$MT_OCI" "$W/m2.json" '"platform":{"architecture":"arm64","os":"linux"}')" >"$W/idx.json"
put_manifest $R multi "$W/idx.json" "$MT_IDX"
t_st "PUT OCI index -> 201" 201
t_hdr "PUT OCI index Docker-Content-Digest" Docker-Content-Digest "$(dg "$W/idx.json")"
get_manifest GET $R multi
t_st "GET OCI index -> 200" 200
t_body "GET OCI index exact bytes" "$W/idx.json"
t_hdr "GET OCI index Content-Type" Content-Type "$MT_IDX"
printf '{"schemaVersion":2,"mediaType":"%s","manifests":[%s,{"mediaType":"%s","digest":"%s","size":500}]}' "$MT_IDX" \
    "$(desc "$MT_OCI" "$W/m1.json")" "$MT_OCI" "$NOPE" >"$W/idxbad.json"
put_manifest $R badidx "$W/idxbad.json" "$MT_IDX"
t_err "index with a missing child -> 400 MANIFEST_BLOB_UNKNOWN" 400 MANIFEST_BLOB_UNKNOWN

# Docker schema2 + manifest list
printf '{"schemaVersion":2,"mediaType":"%s","config":%s,"layers":[%s]}' "$MT_D2" \
    "$(desc "$MT_D2CFG" "$W/cfg.json")" "$(desc "$MT_D2LAYER" "$W/layer.bin")" >"$W/d2.json"
put_manifest $R d2 "$W/d2.json" "$MT_D2"
t_st "PUT Docker schema2 manifest -> 201" 201
t_hdr "PUT schema2 Docker-Content-Digest" Docker-Content-Digest "$(dg "$W/d2.json")"
get_manifest GET $R d2
t_body "GET schema2 exact bytes" "$W/d2.json"
t_hdr "GET schema2 Content-Type" Content-Type "$MT_D2"
printf '{"schemaVersion":2,"mediaType":"%s","manifests":[%s]}' "$MT_DL" \
    "$(desc "$MT_D2" "$W/d2.json" '"platform":{"architecture":"amd64","os":"linux"}')" >"$W/dl.json"
put_manifest $R dl "$W/dl.json" "$MT_DL"
t_st "PUT Docker manifest list -> 201" 201
get_manifest GET $R dl
t_body "GET manifest list exact bytes" "$W/dl.json"
t_hdr "GET manifest list Content-Type" Content-Type "$MT_DL"
get_manifest HEAD $R "$(dg "$W/dl.json")"
t_hdr "HEAD manifest list by digest Content-Type" Content-Type "$MT_DL"

# missing blobs, invalid bodies
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"%s","size":10},"layers":[%s]}' \
    "$MT_OCI" "$MT_CFG" "$NOPE" "$(desc "$MT_LAYER" "$W/layer.bin")" >"$W/nocfg.json"
put_manifest $R nocfg "$W/nocfg.json"
t_err "manifest with a missing config -> 400 MANIFEST_BLOB_UNKNOWN" 400 MANIFEST_BLOB_UNKNOWN
printf '{"schemaVersion":2,"mediaType":"%s","config":%s,"layers":[%s,{"mediaType":"%s","digest":"%s","size":10}]}' \
    "$MT_OCI" "$(desc "$MT_CFG" "$W/cfg.json")" "$(desc "$MT_LAYER" "$W/layer.bin")" "$MT_LAYER" "$NOPE" >"$W/nolayer.json"
put_manifest $R nolayer "$W/nolayer.json"
t_err "manifest with a missing layer -> 400 MANIFEST_BLOB_UNKNOWN" 400 MANIFEST_BLOB_UNKNOWN
mk_image "$W/foreign.json" "$W/cfg.json" "$W/blob1k.bin" # blob1k lives in lib/a only
put_manifest $R foreign "$W/foreign.json"
t_err "manifest using another repo's blob -> 400 MANIFEST_BLOB_UNKNOWN" 400 MANIFEST_BLOB_UNKNOWN
get_manifest GET $R nocfg
t_err "rejected manifest's tag does not exist" 404 MANIFEST_UNKNOWN
printf '{"schemaVersion":2,"mediaType":"%s","config":' "$MT_OCI" >"$W/broken.json"
put_manifest $R broken "$W/broken.json"
t_err "invalid JSON manifest -> 400 MANIFEST_INVALID" 400 MANIFEST_INVALID

# 4 MiB limit: exactly 4 MiB is fine, one byte more is 413
"$PY" - "$W/m2.json" "$W/big.json" "$W/toobig.json" <<'PY'
import sys
b = open(sys.argv[1], "rb").read().rstrip()
assert b.endswith(b"}")
for path, n in ((sys.argv[2], 4 << 20), (sys.argv[3], (4 << 20) + 1)):
    open(path, "wb").write(b[:-1] + b" " * (n - len(b)) + b"}")
PY
put_manifest $R big "$W/big.json"
t_st "PUT a manifest of exactly 4 MiB -> 201" 201
get_manifest GET $R big
t_body "4 MiB manifest exact bytes" "$W/big.json"
: >"$W/h"
: >"$W/b"
ST=$(curl -s -g --max-time 30 -o "$W/b" -D "$W/h" -w '%{http_code}' -X PUT -H "Content-Type: $MT_OCI" \
    --data-binary "@$W/toobig.json" "$BERTH_URL/v2/$R/manifests/toobig")
parse_headers
t_err "PUT a manifest of 4 MiB + 1 -> 413" 413 '[A-Z_]+'
get_manifest GET $R toobig
t_err "oversized manifest was not stored" 404 MANIFEST_UNKNOWN

# a manifest PUT with a chunked body (no Content-Length), and the size limit on such bodies
mk_image "$W/mte.json" "$W/cfg.json" "$W/layer.bin" '"annotations":{"n":"te"}'
req PUT "/v2/$R/manifests/chunked" -H "Content-Type: $MT_OCI" -H 'Transfer-Encoding: chunked' --data-binary "@$W/mte.json"
t_st "PUT manifest with Transfer-Encoding: chunked -> 201" 201
t_hdr "chunked manifest Docker-Content-Digest" Docker-Content-Digest "$(dg "$W/mte.json")"
get_manifest GET $R chunked
t_body "chunked manifest exact bytes" "$W/mte.json"
req PUT "/v2/$R/manifests/toobig2" -H "Content-Type: $MT_OCI" -H 'Transfer-Encoding: chunked' --data-binary "@$W/toobig.json"
t_err "PUT a 4 MiB + 1 manifest with a chunked body -> 413" 413 '[A-Z_]+'
get_manifest GET $R toobig2
t_err "oversized chunked manifest was not stored" 404 MANIFEST_UNKNOWN
req GET "/v2/$R/manifests/v1" # curl's default Accept: */*
t_st "GET manifest with Accept: */* -> 200" 200
t_body "GET manifest with Accept: */* returns the manifest" "$W/m1.json"

# PUT by a digest that does not match the body
put_manifest $R "$M1" "$W/m2.json"
t_err "PUT manifest by a mismatched digest -> 400 DIGEST_INVALID" 400 DIGEST_INVALID

# ?tag= on PUT by digest
mk_image "$W/m3.json" "$W/cfg.json" "$W/layer.bin" '"annotations":{"n":"3"}'
M3=$(dg "$W/m3.json")
put_manifest $R "$M3?tag=ta&tag=tb" "$W/m3.json"
t_st "PUT by digest with ?tag=ta&tag=tb -> 201" 201
t_eq "response has OCI-Tag for ta and tb" "ta tb" "$(hdrs OCI-Tag | tr ',' '\n' | sed 's/^ *//; s/ *$//' | grep . | sort | tr '\n' ' ' | sed 's/ $//')"
for t in ta tb; do
    get_manifest GET $R $t
    t_hdr "tag $t from ?tag= resolves" Docker-Content-Digest "$M3"
done

# subject that does not exist (yet)
SUBJ=sha256:$(printf 'a subject never pushed' | sha256sum | cut -d' ' -f1)
mk_image "$W/m4.json" "$W/cfg.json" "$W/layer.bin" "\"subject\":{\"mediaType\":\"$MT_OCI\",\"digest\":\"$SUBJ\",\"size\":1234}"
M4=$(dg "$W/m4.json")
put_manifest $R "$M4" "$W/m4.json"
t_st "manifest with a missing subject -> 201" 201
t_hdr "missing subject: OCI-Subject header" OCI-Subject "$SUBJ"
req GET "/v2/$R/referrers/$SUBJ"
t_eq "referrers of the missing subject list the manifest" "[\"$M4\"]" "$(jb '[.manifests[].digest]')"

# unknown manifests
get_manifest GET $R nosuchtag
t_err "GET unknown tag -> 404 MANIFEST_UNKNOWN" 404 MANIFEST_UNKNOWN
get_manifest HEAD $R nosuchtag
t_st "HEAD unknown tag -> 404" 404
get_manifest GET $R "$NOPE"
t_err "GET unknown manifest digest -> 404 MANIFEST_UNKNOWN" 404 MANIFEST_UNKNOWN
get_manifest GET no/such/repo latest
t_err "GET manifest of an unknown repo -> 404" 404 "MANIFEST_UNKNOWN|NAME_UNKNOWN"
# a malformed reference names no manifest: reads answer 404 as the conformance suite expects
get_manifest GET $R .notatag
t_err "GET manifest by a malformed reference -> 404 MANIFEST_UNKNOWN" 404 MANIFEST_UNKNOWN
get_manifest HEAD $R -notatag
t_st "HEAD manifest by a malformed reference -> 404" 404

# retag
put_manifest $R v1 "$W/m2.json"
t_st "re-PUT tag v1 with another manifest -> 201" 201
get_manifest GET $R v1
t_hdr "tag v1 moved" Docker-Content-Digest "$M2"
get_manifest GET $R "$M1"
t_st "old manifest still readable by digest" 200

# DELETE by tag, by digest
put_manifest $R todel "$W/m2.json"
req DELETE "/v2/$R/manifests/todel"
t_st "DELETE manifest by tag -> 202" 202
get_manifest GET $R todel
t_err "deleted tag -> 404 MANIFEST_UNKNOWN" 404 MANIFEST_UNKNOWN
get_manifest GET $R "$M2"
t_st "DELETE by tag keeps the manifest" 200
get_manifest GET $R v2
t_hdr "DELETE by tag keeps other tags" Docker-Content-Digest "$M2"
mk_image "$W/m5.json" "$W/cfg.json" "$W/layer.bin" '"annotations":{"n":"5"}'
M5=$(dg "$W/m5.json")
put_manifest $R gone "$W/m5.json"
req DELETE "/v2/$R/manifests/$M5"
t_st "DELETE manifest by digest -> 202" 202
get_manifest GET $R "$M5"
t_err "GET deleted manifest -> 404 MANIFEST_UNKNOWN" 404 MANIFEST_UNKNOWN
get_manifest GET $R gone
t_err "tag of a deleted manifest -> 404 MANIFEST_UNKNOWN" 404 MANIFEST_UNKNOWN
req DELETE "/v2/$R/manifests/$M5"
t_err "DELETE deleted manifest -> 404 MANIFEST_UNKNOWN" 404 MANIFEST_UNKNOWN
put_manifest $R "$M5" "$W/m5.json"
t_st "re-PUT a deleted manifest by digest -> 201" 201
get_manifest GET $R "$M5"
t_body "re-PUT deleted manifest readable" "$W/m5.json"
req GET "/v2/$R/tags/list"
if jb '.tags' | grep -q '"gone"'; then t_fail "tags/list drops tags of deleted manifests" "$(snippet)"; else t_ok "tags/list drops tags of deleted manifests"; fi

# --- tags ------------------------------------------------------------------------------------
R=tags/t
seed_repo $R || t_fail "seed $R" "upload failed"
mk_image "$W/mt.json" "$W/cfg.json" "$W/layer.bin"
bad=""
for t in b 10 latest a B 9 v1.0 _x A-1 z; do
    put_manifest $R "$t" "$W/mt.json"
    [ "$ST" = 201 ] || bad="$bad $t:$ST"
done
t_eq "PUT 10 tags -> 201 each" "" "$bad"
ALL='["10","9","A-1","B","_x","a","b","latest","v1.0","z"]'
req GET "/v2/$R/tags/list"
t_st "GET tags/list -> 200" 200
t_eq "tags/list name" '"tags/t"' "$(jb .name)"
t_eq "tags/list sorted in byte order" "$ALL" "$(jb .tags)"
req GET "/v2/$R/tags/list?n=2"
t_eq "tags/list?n=2 returns the first two" '["10","9"]' "$(jb .tags)"
if hdr Link | grep -q 'rel="next"'; then t_ok "tags/list?n=2 Link has rel=\"next\""; else t_fail "tags/list?n=2 Link has rel=\"next\"" "Link [$(hdr Link)]"; fi
case $(link_next) in *last=*) t_ok "tags/list?n=2 Link has last=" ;; *) t_fail "tags/list?n=2 Link has last=" "Link [$(hdr Link)]" ;; esac
t_eq "following tags Links yields the full list" "$(jq -r '.[]' <<<"$ALL")" "$(paginate "/v2/$R/tags/list?n=2" .tags)"
t_eq "following tags Links with n=3 yields the full list" "$(jq -r '.[]' <<<"$ALL")" "$(paginate "/v2/$R/tags/list?n=3" .tags)"
req GET "/v2/$R/tags/list?n=2"
case $(link_next) in *n=2*) t_ok "tags/list?n=2 Link keeps n=2" ;; *) t_fail "tags/list?n=2 Link keeps n=2" "Link [$(hdr Link)]" ;; esac
put_manifest $R latest "$W/mt.json"
t_st "re-PUT an existing tag with the same manifest -> 201" 201
req GET "/v2/$R/tags/list?n=1000"
t_eq "idempotent re-PUT adds no duplicate tag" "$ALL" "$(jb .tags)"
req GET "/v2/$R/tags/list?last=zzz"
t_st "tags/list?last past the end -> 200" 200
t_eq "tags/list?last past the end: no tags" 0 "$(jb '.tags // [] | length')"
t_eq "tags/list?last past the end: no Link" "" "$(hdr Link)"
for q in n=abc n=-1; do
    req GET "/v2/$R/tags/list?$q"
    t_st "tags/list?$q -> 200 or 400, never 5xx" "200|400"
done
req GET "/v2/$R/tags/list?last=B"
t_eq "tags/list?last=B starts after B" '["_x","a","b","latest","v1.0","z"]' "$(jb .tags)"
req GET "/v2/$R/tags/list?last=B&n=3"
t_eq "tags/list?last=B&n=3" '["_x","a","b"]' "$(jb .tags)"
req GET "/v2/$R/tags/list?n=10"
t_eq "tags/list?n=<all> returns everything" "$ALL" "$(jb .tags)"
if [ -z "$(hdr Link)" ]; then t_ok "no Link when n covers the rest"; else
    req GET "$(link_next)"
    t_eq "no Link when n covers the rest (or an empty next page)" '[]' "$(jb '.tags // []')"
fi
req GET "/v2/no/such/repo/tags/list"
t_err "tags/list of an unknown repo -> 404 NAME_UNKNOWN" 404 NAME_UNKNOWN

# --- referrers -------------------------------------------------------------------------------
R=ref/app
seed_repo $R || t_fail "seed $R" "upload failed"
for f in empty.json sbom.txt sig.txt acfg.json; do upload_blob $R "$W/$f" >/dev/null || t_fail "seed $R $f" "upload failed"; done
mk_image "$W/subj.json" "$W/cfg.json" "$W/layer.bin" '"annotations":{"role":"subject"}'
MS=$(dg "$W/subj.json")
put_manifest $R v1 "$W/subj.json"
t_st "PUT referrers subject -> 201" 201
SUBJ_DESC=$(desc "$MT_OCI" "$W/subj.json")
EMPTY_DESC=$(desc "$MT_EMPTY" "$W/empty.json")
printf '{"schemaVersion":2,"mediaType":"%s","artifactType":"application/vnd.example.sbom","config":%s,"layers":[%s],"subject":%s,"annotations":{"org.example.kind":"sbom","org.opencontainers.image.created":"2024-01-01T00:00:00Z"}}' \
    "$MT_OCI" "$EMPTY_DESC" "$(desc text/plain "$W/sbom.txt")" "$SUBJ_DESC" >"$W/a1.json"
printf '{"schemaVersion":2,"mediaType":"%s","artifactType":"application/vnd.example.sig","config":%s,"layers":[%s],"subject":%s,"annotations":{"org.example.kind":"sig"}}' \
    "$MT_OCI" "$EMPTY_DESC" "$(desc text/plain "$W/sig.txt")" "$SUBJ_DESC" >"$W/a2.json"
printf '{"schemaVersion":2,"mediaType":"%s","config":%s,"layers":[%s],"subject":%s,"annotations":{"org.example.kind":"cfg"}}' \
    "$MT_OCI" "$(desc application/vnd.example.cfg+json "$W/acfg.json")" "$(desc text/plain "$W/sbom.txt")" "$SUBJ_DESC" >"$W/a3.json"
A1=$(dg "$W/a1.json")
A2=$(dg "$W/a2.json")
A3=$(dg "$W/a3.json")
for a in a1 a2 a3; do
    put_manifest $R "$(dg "$W/$a.json")" "$W/$a.json"
    t_st "PUT artifact $a -> 201" 201
    t_hdr "PUT artifact $a OCI-Subject" OCI-Subject "$MS"
done
# an index can be a referrer too
printf '{"schemaVersion":2,"mediaType":"%s","artifactType":"application/vnd.example.bundle","manifests":[%s],"subject":%s,"annotations":{"org.example.kind":"bundle"}}' \
    "$MT_IDX" "$(desc "$MT_OCI" "$W/subj.json")" "$SUBJ_DESC" >"$W/a4.json"
A4=$(dg "$W/a4.json")
put_manifest $R "$A4" "$W/a4.json" "$MT_IDX"
t_st "PUT index artifact with a subject -> 201" 201
t_hdr "PUT index artifact OCI-Subject" OCI-Subject "$MS"
put_manifest $R "$A1" "$W/a1.json"
t_st "re-PUT artifact a1 -> 201" 201
put_manifest $R a1tag "$W/a1.json"
t_st "PUT artifact a1 under a tag -> 201" 201
req GET "/v2/$R/referrers/$MS"
t_st "GET referrers -> 200" 200
case $(hdr Content-Type) in
    "$MT_IDX"*) t_ok "referrers Content-Type is the OCI index type" ;;
    *) t_fail "referrers Content-Type is the OCI index type" "got [$(hdr Content-Type)]" ;;
esac
t_eq "referrers schemaVersion" 2 "$(jb .schemaVersion)"
t_eq "referrers mediaType" "\"$MT_IDX\"" "$(jb .mediaType)"
t_eq "referrers lists each of the four artifacts once" "$(printf '%s\n' "$A1" "$A2" "$A3" "$A4" | sort | jq -R . | jq -sc .)" "$(jb '[.manifests[].digest] | sort')"
# ref_desc ARTIFACT FILE ARTIFACT_TYPE: the descriptor for FILE in the last referrers response.
ref_desc() {
    local d want
    d=$(dg "$W/$1.json")
    want=$(jq -cS --arg d "$d" --argjson s "$(sz "$W/$1.json")" --arg at "$2" \
        '{mediaType: .mediaType, digest: $d, size: $s, artifactType: $at, annotations: .annotations}' "$W/$1.json")
    t_eq "referrers descriptor of $1" "$want" \
        "$(jq -cS --arg d "$d" '.manifests[] | select(.digest == $d) | {mediaType, digest, size, artifactType, annotations}' "$W/b" 2>/dev/null)"
}
ref_desc a1 application/vnd.example.sbom
ref_desc a2 application/vnd.example.sig
ref_desc a3 application/vnd.example.cfg+json
ref_desc a4 application/vnd.example.bundle
req GET "/v2/$R/referrers/$MS?artifactType=application/vnd.example.sbom"
t_st "filtered referrers -> 200" 200
t_eq "artifactType filter keeps only the sbom" "[\"$A1\"]" "$(jb '[.manifests[].digest]')"
t_hdr "filtered referrers OCI-Filters-Applied" OCI-Filters-Applied artifactType
req GET "/v2/$R/referrers/$MS?artifactType=application%2Fvnd.example.sbom"
t_eq "percent-encoded artifactType filter" "[\"$A1\"]" "$(jb '[.manifests[].digest]')"
req GET "/v2/$R/referrers/$MS?artifactType=application/vnd.example.none"
t_eq "filter matching nothing -> empty manifests" '[]' "$(jb .manifests)"
req GET "/v2/$R/referrers/$A1"
t_st "referrers of a manifest without referrers -> 200" 200
t_eq "referrers of a manifest without referrers: empty list" '[]' "$(jb .manifests)"
req GET "/v2/$R/referrers/$NOPE"
t_st "referrers of an unknown digest -> 200" 200
t_eq "referrers of an unknown digest: empty list" '[]' "$(jb .manifests)"
t_eq "empty referrers schemaVersion" 2 "$(jb .schemaVersion)"
req GET "/v2/$R/referrers/sha256:xyz"
t_err "referrers of a malformed digest -> 400 DIGEST_INVALID" 400 DIGEST_INVALID
req DELETE "/v2/$R/manifests/$A2"
t_st "DELETE an artifact -> 202" 202
req GET "/v2/$R/referrers/$MS"
t_eq "deleted artifact leaves the referrers list" "$(printf '%s\n' "$A1" "$A3" "$A4" | sort | jq -R . | jq -sc .)" "$(jb '[.manifests[].digest] | sort')"
req GET "/v2/lib/b/referrers/$MS"
t_st "referrers are per repository -> 200" 200
t_eq "referrers of ref/app's subject from lib/b: empty" '[]' "$(jb .manifests)"

# --- names -----------------------------------------------------------------------------------
# valid names that contain route words or many components
mk_image "$W/mn.json" "$W/cfg.json" "$W/layer.bin"
DCFG=$(dg "$W/cfg.json")
for n in a/b/c x/manifests/y x/blobs/uploads y/tags/list z/referrers/q my-app.v2/sub_dir/x__y; do
    if seed_repo "$n"; then t_ok "upload blobs to $n"; else t_fail "upload blobs to $n"; fi
    put_manifest "$n" t "$W/mn.json"
    t_st "PUT manifest to $n -> 201" 201
    get_manifest GET "$n" t
    t_hdr "GET manifest from $n" Docker-Content-Digest "$(dg "$W/mn.json")"
    req GET "/v2/$n/blobs/$DCFG"
    t_body "GET blob from $n" "$W/cfg.json"
    req GET "/v2/$n/tags/list"
    t_eq "tags/list of $n" "{\"name\":\"$n\",\"tags\":[\"t\"]}" "$(jb '{name, tags}')"
done

# deleting in one repository leaves the same content in others alone (content is shared on disk)
MN=$(dg "$W/mn.json")
req DELETE "/v2/a/b/c/manifests/$MN"
t_st "DELETE a manifest in a/b/c -> 202" 202
get_manifest GET x/manifests/y t
t_hdr "same manifest in x/manifests/y unaffected" Docker-Content-Digest "$MN"
req DELETE "/v2/a/b/c/blobs/$DCFG"
t_st "DELETE a blob in a/b/c -> 202" 202
req GET "/v2/x/manifests/y/blobs/$DCFG"
t_body "same blob in x/manifests/y unaffected" "$W/cfg.json"
req GET "/v2/a/b/c/blobs/$DCFG"
t_err "blob gone from a/b/c" 404 BLOB_UNKNOWN
req POST "/v2/lib/c/blobs/uploads/?mount=$DCFG&from=a/b/c" -H 'Content-Length: 0'
t_st "mount from a repo whose copy was deleted -> 202 session" 202

# more valid grammar: repeated dashes, double underscore; a single 255-char component
n=a--b/c__d
if seed_repo $n; then t_ok "upload blobs to $n"; else t_fail "upload blobs to $n"; fi
put_manifest $n t "$W/mn.json"
t_st "PUT manifest to $n -> 201" 201
N255=$(printf 'a%.0s' $(seq 1 255))
req POST "/v2/$N255/blobs/uploads/?digest=$DCFG" -H 'Content-Type: application/octet-stream' --data-binary "@$W/cfg.json"
t_st "POST blob to a 255-char name -> 201 (or 400 if over berth's limit), never 5xx" "201|400"

# 128-char tag is valid
T128=$(printf 'a%.0s' $(seq 1 128))
put_manifest tags/t "$T128" "$W/mt.json"
t_st "128-char tag -> 201" 201
get_manifest GET tags/t "$T128"
t_st "128-char tag resolves" 200

SNAP_BEFORE=$(fs_snapshot)
N300=$(printf 'abcdefghi/%.0s' $(seq 1 30) | head -c 299)x
bad_names=(
    "a/../b"
    "a/%2e%2e/b"
    "a/%2E%2E/berthescape"
    "a%2Fb"
    "..%2f..%2f..%2fberthescape"
    "a/..%2f..%2f..%2f..%2fberthescape"
    "Upper/Case"
    "/x"
    "a/./b"
    "$N300"
)
for n in "${bad_names[@]}"; do
    short=${n:0:40}
    req GET "/v2/$n/tags/list"
    t_err "bad name [$short]: GET tags/list -> 400 NAME_INVALID" 400 NAME_INVALID
    req POST "/v2/$n/blobs/uploads/?digest=$(dg "$W/c1")" -H 'Content-Type: application/octet-stream' --data-binary "@$W/c1"
    t_err "bad name [$short]: POST blob -> 400 NAME_INVALID" 400 NAME_INVALID
    req POST "/v2/$n/blobs/uploads/" -H 'Content-Length: 0'
    t_err "bad name [$short]: POST session -> 400 NAME_INVALID" 400 NAME_INVALID
    put_manifest "$n" latest "$W/mn.json"
    t_err "bad name [$short]: PUT manifest -> 400 NAME_INVALID" 400 NAME_INVALID
    req GET "/v2/$n/blobs/$DCFG"
    t_err "bad name [$short]: GET blob -> 400 NAME_INVALID" 400 NAME_INVALID
done
# more of the grammar: checked on two endpoints only
for n in a___b a- -a a..b .a a/; do
    req GET "/v2/$n/tags/list"
    t_err "bad name [$n]: GET tags/list -> 400 NAME_INVALID" 400 NAME_INVALID
    put_manifest "$n" latest "$W/mn.json"
    t_err "bad name [$n]: PUT manifest -> 400 NAME_INVALID" 400 NAME_INVALID
done
for t in "$(printf 'a%.0s' $(seq 1 129))" .tag -tag; do
    put_manifest tags/t "$t" "$W/mt.json"
    t_err "bad tag [${t:0:20}]: PUT manifest -> 400" 400 "NAME_INVALID|MANIFEST_INVALID|TAG_INVALID"
done
# traversal through an upload id
for u in "..%2f..%2f..%2fberthescape" "../../../../berthescape"; do
    req PATCH "/v2/lib/a/blobs/uploads/$u" -H 'Content-Type: application/octet-stream' --data-binary "@$W/c1"
    t_err "upload id [$u]: PATCH -> 400/404" "400|404" "BLOB_UPLOAD_UNKNOWN|BLOB_UPLOAD_INVALID|NAME_INVALID|NAME_UNKNOWN|NOT_FOUND|UNSUPPORTED"
done
t_eq "bad names created nothing outside the data dir" "$SNAP_BEFORE" "$(fs_snapshot)"
t_eq "no berthescape file anywhere near the data dir" "" \
    "$(find "$T_TMP" /tmp -maxdepth 4 -name 'berthescape*' 2>/dev/null; ls -d /berthescape* 2>/dev/null)"

# --- catalog (server A: sorted, holds what was pushed, nothing invalid) ------------------------
req GET /v2/_catalog
t_st "GET /v2/_catalog -> 200" 200
t_eq "catalog is sorted" true "$(jb '.repositories == (.repositories | sort)')"
t_eq "catalog holds the pushed repositories" true \
    "$(jb '.repositories as $r | ["lib/a", "lib/img", "tags/t", "ref/app", "x/manifests/y", "x/blobs/uploads", "a--b/c__d"] | all(. as $n | $r | index([$n]))')"
t_eq "catalog holds no invalid name" '[]' "$(jb '[.repositories[] | select(test("[A-Z]|\\.\\.|^/|//|berthescape"))]')"

# --- one keep-alive connection survives error responses that carry request bodies ------------
gen "$W/junk64k" 65536 30
ka=$(curl -s -g --max-time 30 -H 'Expect:' -o /dev/null -w '%{http_code} ' -X PATCH -H 'Content-Type: application/octet-stream' \
    --data-binary "@$W/junk64k" "$BERTH_URL/v2/lib/a/blobs/uploads/$ZERO_UUID" \
    --next -s -o /dev/null -w '%{http_code} ' "$BERTH_URL/v2/" \
    --next -s -H 'Expect:' -o /dev/null -w '%{http_code} ' -X PUT -H "Content-Type: $MT_OCI" --data-binary "@$W/junk64k" \
    "$BERTH_URL/v2/Bad/Name/manifests/x" \
    --next -s -o /dev/null -w '%{http_code} ' -X PUT -H "Content-Type: $MT_OCI" --data-binary "@$W/broken.json" \
    "$BERTH_URL/v2/lib/img/manifests/broken" \
    --next -s -o "$W/b" -w '%{http_code}' "$BERTH_URL/v2/lib/img/tags/list")
t_eq "requests after errors on one connection: statuses" "404 200 400 400 200" "$ka"
t_eq "requests after errors on one connection: last body intact" '"lib/img"' "$(jb .name)"

# --- errors are JSON everywhere ----------------------------------------------------------------
req GET /v2/lib/a/bogus/endpoint
t_err "unknown /v2 route -> 404 with a JSON error" "404|400" '[A-Z_]+'
req DELETE /v2/tags/t/tags/list
t_err "wrong method on tags/list -> 404/405 with a JSON error" "404|405" '[A-Z_]+'

t_check "server A: clean shutdown on SIGTERM" berth_stop

# ---------------------------------------------------------------------------------------------
# server B: no config file, deletes disabled by default

start_or_die B "$T_TMP/b"
CAT='["a","b","b.c","b/x","c/one","m-1","zeta"]'
bad=""
for n in zeta b/x a c/one b.c m-1 b; do
    seed_repo "$n" || bad="$bad $n:blobs"
    put_manifest "$n" t "$W/mn.json"
    [ "$ST" = 201 ] || bad="$bad $n:$ST"
done
t_eq "server B: seed 7 repositories" "" "$bad"
MN=$(dg "$W/mn.json")
req DELETE "/v2/c/one/blobs/$DCFG"
t_err "deletes disabled: DELETE blob -> 405 UNSUPPORTED" 405 UNSUPPORTED
req GET "/v2/c/one/blobs/$DCFG"
t_st "deletes disabled: blob still there" 200
req DELETE "/v2/c/one/manifests/$MN"
t_err "deletes disabled: DELETE manifest by digest -> 405 UNSUPPORTED" 405 UNSUPPORTED
req DELETE "/v2/c/one/manifests/t"
t_err "deletes disabled: DELETE manifest by tag -> 405 UNSUPPORTED" 405 UNSUPPORTED
get_manifest GET c/one t
t_hdr "deletes disabled: tag still resolves" Docker-Content-Digest "$MN"

req GET /v2/_catalog
t_eq "catalog lists exactly the repositories, byte-sorted" "$CAT" "$(jb .repositories)"
req GET "/v2/_catalog?n=3"
t_eq "catalog?n=3 returns the first three" '["a","b","b.c"]' "$(jb .repositories)"
if hdr Link | grep -q 'rel="next"'; then t_ok "catalog?n=3 Link has rel=\"next\""; else t_fail "catalog?n=3 Link has rel=\"next\"" "Link [$(hdr Link)]"; fi
case $(link_next) in *last=*) t_ok "catalog?n=3 Link has last=" ;; *) t_fail "catalog?n=3 Link has last=" "Link [$(hdr Link)]" ;; esac
t_eq "following catalog Links yields the full list" "$(jq -r '.[]' <<<"$CAT")" "$(paginate "/v2/_catalog?n=3" .repositories)"
t_eq "following catalog Links with n=1 yields the full list" "$(jq -r '.[]' <<<"$CAT")" "$(paginate "/v2/_catalog?n=1" .repositories)"
req GET "/v2/_catalog?last=b.c"
t_eq "catalog?last=b.c starts after b.c" '["b/x","c/one","m-1","zeta"]' "$(jb .repositories)"
req GET "/v2/_catalog?last=b.c&n=2"
t_eq "catalog?last=b.c&n=2" '["b/x","c/one"]' "$(jb .repositories)"
req GET "/v2/_catalog?n=abc"
t_st "catalog?n=abc -> 200 or 400, never 5xx" "200|400"

t_check "server B: clean shutdown on SIGTERM" berth_stop
start_or_die "B (restart on the same data)" "$T_TMP/b"
get_manifest GET b/x t
t_body "manifest survives a restart" "$W/mn.json"
req GET "/v2/b/x/blobs/$DCFG"
t_body "blob survives a restart" "$W/cfg.json"
req GET /v2/_catalog
t_eq "catalog survives a restart" "$CAT" "$(jb .repositories)"
t_check "server B (restarted): clean shutdown on SIGTERM" berth_stop

# ---------------------------------------------------------------------------------------------
# server C: the environment overrides the config file

mkdir -p "$T_TMP/c"
cat >"$T_TMP/c/config.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $T_TMP/c/data
  delete:
    enabled: false
YML
export REGISTRY_STORAGE_DELETE_ENABLED=true
start_or_die C "$T_TMP/c"
unset REGISTRY_STORAGE_DELETE_ENABLED
req GET /v2/_catalog
t_eq "catalog of an empty registry" '{"repositories":[]}' "$(jb '{repositories}')"
DDEL=$(upload_blob env/x "$W/del.bin") || t_fail "seed env/x" "upload failed"
req DELETE "/v2/env/x/blobs/$DDEL"
t_st "REGISTRY_STORAGE_DELETE_ENABLED=true overrides the file: DELETE blob -> 202" 202
req GET "/v2/env/x/blobs/$DDEL"
t_err "env-enabled delete removed the blob" 404 BLOB_UNKNOWN
t_check "server C: clean shutdown on SIGTERM" berth_stop

t_finish
