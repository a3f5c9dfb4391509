#!/usr/bin/env bash
# Three berth replicas over shared engines: blobs in one S3 bucket (a single-node Ceph RGW,
# tests/rgw.sh), metadata in one PostgreSQL database (tests/pg.sh). Each replica has its own port
# and its own storage.filesystem.rootdirectory, used only as local scratch; nothing but the
# bucket and the database is shared. Real clients throughout:
#   1. skopeo pushes images (three 13 MiB layers: multipart uploads of several parts) to R1 and
#      pulls them from R2 and R3, digests identical; the bucket holds every blob at
#      <root>/blobs/sha256/<2 hex>/<hex> and no upload leftovers (objects under <root>/uploads/,
#      open multipart uploads); no blob file in any replica's scratch directory.
#   2. one chunked upload with curl spread over the replicas: POST on R1, PATCHes with
#      Content-Range (6 MiB, then small ones, so S3 parts cross chunk boundaries) on R2, R3, R1,
#      ..., upload status (Range) read on another replica, an out-of-order chunk refused by a
#      replica that did not take the previous one, PUT ?digest= on R3; the blob read from R1 is
#      the same bytes. A wrong digest at the end: 400 DIGEST_INVALID, nothing visible anywhere.
#   3. Range GETs of a blob through R2 and R3 (a-b, across a part boundary, a-, -n, 416).
#   4. redirect mode: a fourth replica R4 with storage.redirect.disable false answers blob GETs
#      307 to a presigned URL that plain curl (no credentials) fetches, Range included; skopeo
#      pulls through it.
#   5. containerd (ctr, hosts.toml, native snapshotter) pulls through R2 an image pushed to R1,
#      and through R4 (following the presigned redirects) another one; unpacked rootfs checked.
#   6. mirror coalescing: all three replicas mirror one docker-registry upstream (up.example);
#      20 concurrent cold GETs of a 64 MiB blob spread over them: one upstream GET, 20 identical
#      correct bodies, the blob in the bucket, no lease left; skopeo then pulls the image.
#   7. R2 killed with SIGKILL in the middle of pushes to all three: every acknowledged manifest
#      intact through R1, R3 and the restarted R2; `berth fsck` clean.
#   8. `berth gc --grace 0s` again and again (from a fourth config, as from another machine)
#      while pushers, churners and pullers work on all three replicas: every acknowledged push
#      intact, every pull intact, churned-and-deleted manifests 404 with their blobs gone from
#      the bucket, `berth fsck` clean, a dry run finds nothing more.
#
# Knobs: S3R_SECTIONS="1 2 5" runs only those sections (the engines and replicas start anyway;
# each section pushes its own content and restarts a replica an earlier one left down).
# S3R_BACKEND=fs runs the same sections with the replicas sharing one local directory instead
# of the bucket (bucket checks and section 4 skipped): tells a test bug from an S3-backend bug.
# RGW_KEEP=1 T_KEEP=1 keep the logs (replica logs in $T_TMP/rN/berth.log).
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/rgw.sh"
. "$T_ROOT/tests/pg.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"

MK="python3 $T_ROOT/tests/fixtures/mkimage.py"
OCIPUSH="python3 $T_ROOT/tests/fixtures/ocipush.py"
SK=(skopeo --insecure-policy)
NOTLS=(--src-tls-verify=false --dest-tls-verify=false)
CURL=(curl -s --max-time 60)
W=$T_TMP/work
mkdir -p "$W"
S3R_SECTIONS=${S3R_SECTIONS:-1 2 3 4 5 6 7 8}
S3R_BACKEND=${S3R_BACKEND:-s3}
S3ROOT=berth # storage.s3.rootdirectory (/berth) as a key prefix
CHUNK=5242880
MIB=1048576

t_need_tools ceph-mon ceph-osd radosgw radosgw-admin /usr/bin/aws skopeo ctr containerd docker-registry jq

# ---- engines: RGW, PostgreSQL, an upstream registry --------------------------------------------
if ! rgw_start "$T_TMP/rgw"; then
    t_fail "rgw_start"
    t_finish
fi
RGW_LOG=$RGW_DIR/log/client.rgw.log
if ! pg_start; then
    t_fail "PostgreSQL starts"
    t_finish
fi
# rgw.sh and pg.sh each set an EXIT trap; one that stops both (RGW first: its PID files live in
# T_TMP, which t_cleanup removes), then lib.sh's processes and T_TMP
trap 'rgw_stop; pg_stop; t_cleanup' EXIT
S3R_DB=s3replicas
pg_createdb "$S3R_DB" || {
    t_fail "create database $S3R_DB"
    t_finish
}
t_ok "engines up: RGW at $RGW_URL (bucket $RGW_BUCKET, ${RGW_START_SECONDS}s), PostgreSQL $PG_HOST:$PG_PORT/$S3R_DB"

# the upstream of section 6 (a docker-registry with its access log): its URL goes into every
# replica's mirrors: entry, so it starts before them
UPD=$T_TMP/up
registry_start "$UPD" info || t_fail "upstream docker-registry starts" "$(tail -3 "$UPD/registry.log")"
UP_URL=$REG_URL

# ---- replicas ---------------------------------------------------------------------------------
# engine_cfg FILE SCRATCH ADDR REDIRECT_DISABLE: a config over the shared bucket and database
engine_cfg() {
    local storage
    if [ "$S3R_BACKEND" = fs ]; then
        storage="  filesystem:
    rootdirectory: $T_TMP/shared-data"
    else
        storage="  filesystem:
    rootdirectory: $2
  s3:
    accesskey: $RGW_ACCESS_KEY
    secretkey: $RGW_SECRET_KEY
    region: $RGW_REGION
    regionendpoint: $RGW_URL
    bucket: $RGW_BUCKET
    rootdirectory: /$S3ROOT
    secure: false
    forcepathstyle: true
    chunksize: $CHUNK
  redirect:
    disable: $4"
    fi
    cat >"$1" <<YML
version: 0.1
log:
  level: info
storage:
$storage
  delete:
    enabled: true
$(pg_database_yaml "$S3R_DB" "" 8)
http:
  addr: $3
mirrors:
  up.example:
    urls: [$UP_URL]
YML
}

# R_PORT/R_URL/R_HP/R_PID indexed by replica number (4 is the redirect-mode one)
R_PORT=() R_URL=() R_HP=() R_PID=()
replica_launch() { # replica_launch N [REDIRECT_DISABLE]: writes rN's config (once) and starts it
    local n=$1 d=$T_TMP/r$1
    mkdir -p "$d/scratch"
    if [ -z "${R_PORT[$n]:-}" ]; then
        R_PORT[$n]=$(t_port)
        engine_cfg "$d/config.yml" "$d/scratch" "127.0.0.1:${R_PORT[$n]}" "${2:-true}"
    fi
    R_URL[$n]=http://127.0.0.1:${R_PORT[$n]}
    R_HP[$n]=127.0.0.1:${R_PORT[$n]}
    echo "--- start $(date +%T)" >>"$d/berth.log"
    "$BERTH" serve -c "$d/config.yml" >>"$d/berth.log" 2>&1 &
    R_PID[$n]=$!
    T_PIDS+=("$!")
}
replica_wait() { # replica_wait N: 0 once rN answers /v2/ 200
    local n=$1 i
    for i in $(seq 1 300); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "${R_URL[$n]}/v2/")" = 200 ] && return 0
        kill -0 "${R_PID[$n]}" 2>/dev/null || break
        sleep 0.1
    done
    echo "# replica $n did not start; its log:"
    tail -8 "$T_TMP/r$n/berth.log" | sed 's/^/#   /'
    return 1
}
replica_up() { # replica_up N: (re)starts rN unless it is running and answering
    if [ -n "${R_PID[$1]:-}" ] && kill -0 "${R_PID[$1]}" 2>/dev/null &&
        [ "$(curl -s -o /dev/null -w '%{http_code}' "${R_URL[$1]}/v2/")" = 200 ]; then
        return 0
    fi
    [ -n "${R_PID[$1]:-}" ] && kill -KILL "${R_PID[$1]}" 2>/dev/null && wait "${R_PID[$1]}" 2>/dev/null
    replica_launch "$@"
    replica_wait "$1"
}
# the gc/fsck config: as from another machine (its own scratch directory, no server)
TOOLS_CFG=$T_TMP/tools.yml
mkdir -p "$T_TMP/tools"
engine_cfg "$TOOLS_CFG" "$T_TMP/tools" 127.0.0.1:1 true

# three replicas starting together (they migrate the schema once, under a lock)
for n in 1 2 3; do replica_launch "$n"; done
up=0
for n in 1 2 3; do replica_wait "$n" && up=$((up + 1)); done
if [ "$up" != 3 ]; then
    t_fail "three replicas start over the bucket and the database" "$up of 3 answer /v2/"
    t_finish
fi
t_ok "three replicas serve /v2/ ($BERTH, storage: $S3R_BACKEND)"
t_eq "... over one database (schema migrated once)" 3 "$(pg_psql "$S3R_DB" "SELECT count(*) FROM schema_version")"

# ---- helpers ----------------------------------------------------------------------------------
s3mode() { [ "$S3R_BACKEND" != fs ]; }
# blob_key DIGEST: the object key a blob is stored under
blob_key() {
    local h=${1#sha256:}
    echo "$S3ROOT/blobs/sha256/${h:0:2}/$h"
}
# aws_rows OUT ARGS...: the AWS CLI's text rows for ARGS (all pages), tabs made spaces, in OUT
aws_rows() {
    local out=$1 rc
    shift
    rgw_aws "$@" --output text >"$out.raw" 2>"$out.err"
    rc=$?
    tr '\t' ' ' <"$out.raw" | grep -v '^None$' >"$out"
    return $rc
}
# bucket_ls PREFIX OUT: "KEY SIZE" for every object under PREFIX
bucket_ls() {
    aws_rows "$2" s3api list-objects-v2 --bucket "$RGW_BUCKET" --prefix "$1" --query 'Contents[].[Key,Size]'
}
# bucket_mpu OUT: "KEY UPLOADID" of every open multipart upload under the root
bucket_mpu() {
    aws_rows "$1" s3api list-multipart-uploads --bucket "$RGW_BUCKET" --prefix "$S3ROOT/" \
        --query 'Uploads[].[Key,UploadId]'
}
# blobs_in_bucket LISTING FILE_OF_DIGESTS: every digest (with the size its file in DIR has, when
# "DIGEST SIZE" lines are given) is an object at blob_key; prints what is missing
blobs_in_bucket() {
    local d s miss=0 k
    while read -r d s; do
        k=$(blob_key "$d")
        if ! grep -q "^$k " "$1"; then
            echo "no object $k"
            miss=1
        elif [ -n "$s" ] && ! grep -qx "$k $s" "$1"; then
            echo "object $k has size $(grep "^$k " "$1" | cut -d' ' -f2), want $s"
            miss=1
        fi
    done <"$2"
    return $miss
}
# not_in_scratch DIGEST...: no file named by a digest's hex in any replica's scratch directory
not_in_scratch() {
    local d f
    for d in "$@"; do
        f=$(find "$T_TMP"/r[1-4]/scratch -name "*${d#sha256:}*" -print -quit 2>/dev/null)
        [ -z "$f" ] || { echo "found $f"; return 1; }
    done
}
# rgw_mark: a position in RGW's log (its access lines name every S3 request berth makes)
rgw_mark() { wc -l <"$RGW_LOG"; }
# rgw_parts_since MARK: "UPLOADID NPARTS KEY" for each multipart upload that got successful
# UploadPart requests after MARK (Ceph writes its log asynchronously: give it a moment)
rgw_parts_since() {
    sleep 1
    python3 - "$RGW_LOG" "$1" <<'PY'
import re, sys, urllib.parse
lines = open(sys.argv[1], errors="replace").read().splitlines()[int(sys.argv[2]):]
ups = {}
for l in lines:
    m = re.search(r'"PUT (\S+) HTTP/[\d.]+" (\d+)', l)
    if not m or m.group(2) != "200":
        continue
    path, _, q = m.group(1).partition("?")
    p = dict(urllib.parse.parse_qsl(q, keep_blank_values=True))
    if "uploadId" in p and "partNumber" in p:
        ups.setdefault(p["uploadId"], [set(), path])[0].add(int(p["partNumber"]))
for u, (s, path) in ups.items():
    print(u, len(s), path)
PY
}
# layout_ok LAYOUT TAG WANT: the layout names WANT for TAG and holds every blob reachable from it intact
layout_ok() {
    local got d
    got=$($MK digest "$1" --tag "$2") || return 1
    [ "$got" = "$3" ] || { echo "layout $1:$2 has $got, want $3"; return 1; }
    for d in $(pl_blob_digests "$1" "$3"); do
        [ "sha256:$(t_sha256 "$1/blobs/sha256/${d#sha256:}")" = "$d" ] || { echo "bad/missing blob $d in $1"; return 1; }
    done
}
# sizes_of LAYOUT DIGEST: "DIGEST SIZE" of the manifest's config and layers, and the manifest
sizes_of() {
    local f=$1/blobs/sha256/${2#sha256:}
    jq -r '.config, .layers[] | "\(.digest) \(.size)"' "$f"
    echo "$2 $(stat -c %s "$f")"
}
# locpath HDRFILE: the Location header's path and query (the next request may go elsewhere)
locpath() { pl_header "$1" location | sed -E 's#^https?://[^/]+##'; }
# slice_sha FILE OFF LEN: sha256 of LEN bytes of FILE from OFF
slice_sha() { tail -c +$(($2 + 1)) "$1" | head -c "$3" | sha256sum | cut -d' ' -f1; }
# code_of URL [curl args]: the HTTP status
code_of() {
    local u=$1
    shift
    "${CURL[@]}" -o /dev/null -w '%{http_code}' "$@" "$u"
}
# vres FILE: "N failures" from ocipush.py verify, plus the first failure
vres() {
    local r f
    r=$(tail -1 "$1" | grep -o '[0-9]* failures')
    f=$(grep -m1 FAILED "$1")
    echo "${r:-no result: $(tail -c 200 "$1")}${f:+ first: $f}"
}
# replica_errors: the warn/error lines the replicas logged since the section began
declare -A LOGMARK
log_marks() {
    local n
    for n in 1 2 3 4; do LOGMARK[$n]=$(cat "$T_TMP/r$n/berth.log" 2>/dev/null | wc -l); done
}
replica_errors() {
    local n
    for n in 1 2 3 4; do
        [ -f "$T_TMP/r$n/berth.log" ] || continue
        tail -n +$((${LOGMARK[$n]:-0} + 1)) "$T_TMP/r$n/berth.log" | grep -E 'level=(error|warn)' |
            grep -v 'unknown configuration key' | head -"${1:-6}" | sed "s/^/#   r$n: /"
    done
}
section_on() { case " $S3R_SECTIONS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# run_section N TITLE: runs sN with every replica up; prints its tally, time and, when anything
# failed, the replicas' warn/error lines meanwhile
SUMMARY=""
run_section() {
    local sec=$1 f0=$T_FAIL p0=$T_PASS t0=$SECONDS r
    section_on "$sec" || return 0
    echo "# ---- section $sec: $2"
    for r in 1 2 3; do replica_up "$r" || t_fail "section $sec: replica $r (re)starts"; done
    log_marks
    "s$sec"
    SUMMARY+="# section $sec ($2): $((T_PASS - p0)) passed, $((T_FAIL - f0)) failed, $((SECONDS - t0))s"$'\n'
    if [ "$T_FAIL" != "$f0" ]; then
        echo "# section $sec: replicas' warn/error lines meanwhile:"
        replica_errors 8
    fi
}

# ---- 1. skopeo: push to R1, pull from R2 and R3; the bucket holds the blobs, no leftovers ----
s1() {
    local big small mark out n
    big=$($MK image "$W/s1big" --layers 3 --seed 101 --tag v1 --size $((13 * MIB)))
    small=$($MK image "$W/s1small" --layers 3 --seed 102 --tag v1 --size 40000)
    mark=$(rgw_mark)
    t_check "skopeo copy: 3 x 13 MiB layers -> R1" "${SK[@]}" copy -q "${NOTLS[@]}" "oci:$W/s1big:v1" "docker://${R_HP[1]}/s1/big:v1"
    t_check "skopeo copy: 3 small layers -> R1" "${SK[@]}" copy -q "${NOTLS[@]}" "oci:$W/s1small:v1" "docker://${R_HP[1]}/s1/small:v1"
    if s3mode; then
        rgw_parts_since "$mark" >"$W/s1.parts"
        n=$(awk '$2 >= 3' "$W/s1.parts" | wc -l)
        t_check "multipart uploads of >= 3 parts of $CHUNK bytes for the 13 MiB layers (RGW log: $n of 3; $(awk '{print $2}' "$W/s1.parts" | sort -n | tr '\n' ' '))" test "$n" -ge 3
    fi
    for n in 2 3; do
        t_check "skopeo copy R$n -> oci (big), --preserve-digests" "${SK[@]}" copy -q --preserve-digests "${NOTLS[@]}" \
            "docker://${R_HP[$n]}/s1/big:v1" "oci:$W/s1big-r$n:v1"
        t_check "... the same manifest digest and every blob intact" layout_ok "$W/s1big-r$n" v1 "$big"
        t_check "skopeo copy R$n -> oci (small)" "${SK[@]}" copy -q --preserve-digests "${NOTLS[@]}" \
            "docker://${R_HP[$n]}/s1/small:v1" "oci:$W/s1small-r$n:v1"
        t_check "... the same manifest digest and every blob intact" layout_ok "$W/s1small-r$n" v1 "$small"
    done
    s3mode || return 0
    { sizes_of "$W/s1big" "$big"; sizes_of "$W/s1small" "$small"; } | grep -v " $" >"$W/s1.sizes"
    # the manifests are metadata; the config and layers are blobs
    grep -v -e "^$big " -e "^$small " "$W/s1.sizes" >"$W/s1.blobsizes"
    if bucket_ls "$S3ROOT/" "$W/s1.ls"; then
        t_check "the bucket holds every pushed blob at $S3ROOT/blobs/sha256/<2 hex>/<hex> with its size ($(wc -l <"$W/s1.blobsizes") blobs; $(wc -l <"$W/s1.ls") objects)" \
            blobs_in_bucket "$W/s1.ls" "$W/s1.blobsizes"
        t_eq "no upload leftovers under $S3ROOT/uploads/" "" "$(grep "^$S3ROOT/uploads/" "$W/s1.ls" | head -3 | tr '\n' ' ')"
    else
        t_fail "aws s3api list-objects-v2" "$(tail -c 300 "$W/s1.ls.err")"
    fi
    if bucket_mpu "$W/s1.mpu"; then
        t_eq "no open multipart uploads after the pushes" "" "$(head -3 "$W/s1.mpu" | tr '\n' ' ')"
    else
        t_fail "aws s3api list-multipart-uploads" "$(tail -c 300 "$W/s1.mpu.err")"
    fi
    t_check "no blob is a file in any replica's scratch directory" not_in_scratch $(cut -d' ' -f1 "$W/s1.blobsizes")
}

# ---- 2. one chunked upload spread over the replicas -------------------------------------------
s2() {
    local d=$W/s2 i n code loc size off uuid want mark sizes=(6291456 1048576 1048576 1048576 1048576 1048576 307200 12345)
    local order=(2 3 1 2 3 1 2 3) repo=s2/chunked
    mkdir -p "$d"
    : >"$d/all"
    for i in "${!sizes[@]}"; do
        head -c "${sizes[$i]}" /dev/urandom >"$d/c$i"
        cat "$d/c$i" >>"$d/all"
    done
    size=$(stat -c %s "$d/all")
    want=sha256:$(t_sha256 "$d/all")
    mark=$(rgw_mark)
    code=$("${CURL[@]}" -D "$d/post.h" -o /dev/null -w '%{http_code}' -X POST "${R_URL[1]}/v2/$repo/blobs/uploads/")
    loc=$(locpath "$d/post.h")
    uuid=$(pl_header "$d/post.h" docker-upload-uuid)
    t_eq "POST on R1 starts an upload (202 with a Location)" "202 yes" "$code $([ -n "$loc" ] && echo yes)"
    [ -n "$loc" ] || return 0
    off=0
    local codes="" ranges="" wantcodes="" wantranges=""
    for i in "${!sizes[@]}"; do
        n=${order[$i]}
        code=$("${CURL[@]}" -D "$d/p$i.h" -o "$d/p$i.body" -w '%{http_code}' -X PATCH \
            -H 'Content-Type: application/octet-stream' -H "Content-Range: $off-$((off + sizes[i] - 1))" \
            --data-binary "@$d/c$i" "${R_URL[$n]}$loc")
        off=$((off + sizes[i]))
        codes+="$code "
        wantcodes+="202 "
        ranges+="$(pl_header "$d/p$i.h" range) "
        wantranges+="0-$((off - 1)) "
        [ "$code" = 202 ] || echo "# PATCH $i on R$n: $code $(head -c 300 "$d/p$i.body")"
        [ -n "$(locpath "$d/p$i.h")" ] && loc=$(locpath "$d/p$i.h")
        if [ "$i" = 0 ]; then
            # R3 never saw this session: a chunk that does not continue it is refused with where it stands
            head -c 100 "$d/c7" >"$d/c100"
            code=$("${CURL[@]}" -D "$d/bad.h" -o /dev/null -w '%{http_code}' -X PATCH \
                -H 'Content-Type: application/octet-stream' -H "Content-Range: 0-99" \
                --data-binary "@$d/c100" "${R_URL[3]}$loc")
            t_eq "a chunk at offset 0 after 6 MiB on R2, sent to R3: 416 with Range 0-$((off - 1))" \
                "416 0-$((off - 1))" "$code $(pl_header "$d/bad.h" range)"
        fi
        if [ "$i" = 3 ] || [ "$i" = 7 ]; then
            # status on a replica that did not take this chunk
            local other=$(((n % 3) + 1))
            code=$("${CURL[@]}" -D "$d/st$i.h" -o /dev/null -w '%{http_code}' "${R_URL[$other]}$loc")
            t_eq "upload status on R$other after chunk $((i + 1)) (sent to R$n): 204, Range 0-$((off - 1))" \
                "204 0-$((off - 1))" "$code $(pl_header "$d/st$i.h" range)"
        fi
    done
    t_eq "8 PATCHes with Content-Range over R2, R3, R1, ... all 202" "$wantcodes" "$codes"
    t_eq "... each answered with the session's Range" "$wantranges" "$ranges"
    code=$("${CURL[@]}" -D "$d/put.h" -o "$d/put.body" -w '%{http_code}' -X PUT -H 'Content-Length: 0' \
        "${R_URL[3]}$loc$(pl_sep "$loc")digest=$want")
    t_eq "PUT ?digest= on R3 completes it: 201, Docker-Content-Digest" "201 $want" "$code $(pl_header "$d/put.h" docker-content-digest)"
    [ "$code" = 201 ] || echo "# PUT: $(head -c 300 "$d/put.body")"
    code=$("${CURL[@]}" -o "$d/get1" -w '%{http_code}' "${R_URL[1]}/v2/$repo/blobs/$want")
    t_eq "GET from R1: 200, the same $size bytes" "200 ${want#sha256:}" "$code $(t_sha256 "$d/get1")"
    code=$("${CURL[@]}" -I -D "$d/head2.h" -o /dev/null -w '%{http_code}' "${R_URL[2]}/v2/$repo/blobs/$want")
    t_eq "HEAD on R2: 200, Content-Length $size" "200 $size" "$code $(pl_header "$d/head2.h" content-length)"
    t_eq "the finished session is gone (R2: 404)" 404 "$(code_of "${R_URL[2]}$loc")"
    if s3mode; then
        rgw_parts_since "$mark" >"$d/parts"
        t_check "one multipart upload of >= 3 parts carried it (RGW log: $(awk '{print $2}' "$d/parts" | tr '\n' ' '))" \
            test "$(awk '$2 >= 3' "$d/parts" | wc -l)" -ge 1
        bucket_ls "$S3ROOT/" "$d/ls"
        echo "$want $size" >"$d/want"
        t_check "the bucket holds it at $(blob_key "$want") with size $size" blobs_in_bucket "$d/ls" "$d/want"
        t_eq "no objects left under $S3ROOT/uploads/${uuid:-<uuid>}" "" "$(grep "^$S3ROOT/uploads/${uuid:-NONE}" "$d/ls" | head -3 | tr '\n' ' ')"
        bucket_mpu "$d/mpu"
        t_eq "no open multipart upload left" "" "$(head -3 "$d/mpu" | tr '\n' ' ')"
    fi

    # a wrong digest at the end: 400 DIGEST_INVALID; nothing becomes visible
    head -c $((6 * MIB)) /dev/urandom >"$d/w0"
    head -c 200000 /dev/urandom >"$d/w1"
    head -c 3000 /dev/urandom >"$d/w2"
    cat "$d/w0" "$d/w1" "$d/w2" >"$d/wall"
    local real wrong
    real=sha256:$(t_sha256 "$d/wall")
    wrong=sha256:$(head -c 32 /dev/urandom | sha256sum | cut -d' ' -f1)
    code=$("${CURL[@]}" -D "$d/wpost.h" -o /dev/null -w '%{http_code}' -X POST "${R_URL[2]}/v2/$repo/blobs/uploads/")
    loc=$(locpath "$d/wpost.h")
    codes="$code "
    code=$("${CURL[@]}" -D "$d/wp0.h" -o /dev/null -w '%{http_code}' -X PATCH -H 'Content-Type: application/octet-stream' \
        -H "Content-Range: 0-$((6 * MIB - 1))" --data-binary "@$d/w0" "${R_URL[3]}$loc")
    codes+="$code "
    loc=$(locpath "$d/wp0.h")
    code=$("${CURL[@]}" -D "$d/wp1.h" -o /dev/null -w '%{http_code}' -X PATCH -H 'Content-Type: application/octet-stream' \
        -H "Content-Range: $((6 * MIB))-$((6 * MIB + 200000 - 1))" --data-binary "@$d/w1" "${R_URL[1]}$loc")
    codes+="$code"
    loc=$(locpath "$d/wp1.h")
    t_eq "another upload: POST on R2, PATCH 6 MiB on R3, PATCH on R1" "202 202 202" "$codes"
    code=$("${CURL[@]}" -o "$d/wput.body" -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
        --data-binary "@$d/w2" "${R_URL[3]}$loc$(pl_sep "$loc")digest=$wrong")
    t_eq "PUT ?digest=<wrong> (with the last chunk) on R3: 400 DIGEST_INVALID" "400 DIGEST_INVALID" \
        "$code $(jq -r '.errors[0].code' "$d/wput.body" 2>/dev/null)"
    codes=""
    for n in 1 2 3; do
        codes+="$(code_of "${R_URL[$n]}/v2/$repo/blobs/$wrong" -I)/$(code_of "${R_URL[$n]}/v2/$repo/blobs/$real" -I) "
    done
    t_eq "neither the claimed nor the real digest is served by any replica" "404/404 404/404 404/404 " "$codes"
    if s3mode; then
        bucket_ls "$S3ROOT/blobs/" "$d/ls2"
        t_eq "... nor an object in the bucket" "" "$(grep -e "${wrong#sha256:}" -e "${real#sha256:}" "$d/ls2" | tr '\n' ' ')"
        uuid=$(pl_header "$d/wpost.h" docker-upload-uuid)
        bucket_ls "$S3ROOT/uploads/" "$d/ls3"
        bucket_mpu "$d/mpu3"
        echo "# after the refused PUT: $(grep -c "/${uuid:-NONE}/" "$d/ls3") objects under $S3ROOT/uploads/$uuid/, $(grep -c "/${uuid:-NONE}/" "$d/mpu3") open multipart uploads for it"
    fi
}

# ---- 3. Range GETs of a blob through replicas -------------------------------------------------
s3() {
    local d=$W/s3 size want code n a
    mkdir -p "$d"
    head -c $((11 * MIB + 4321)) /dev/urandom >"$d/blob"
    size=$(stat -c %s "$d/blob")
    want=sha256:$(t_sha256 "$d/blob")
    t_check "upload an 11 MiB blob to R1 (POST + PATCH + PUT)" pl_push_blob "${R_URL[1]}" s3/range "$d/blob" patch
    for n in 2 3; do
        local u=${R_URL[$n]}/v2/s3/range/blobs/$want
        code=$("${CURL[@]}" -H 'Range: bytes=100-199' -D "$d/h" -o "$d/r" -w '%{http_code}' "$u")
        t_eq "R$n: bytes=100-199 -> 206, Content-Range, the bytes" "206 bytes 100-199/$size $(slice_sha "$d/blob" 100 100)" \
            "$code $(pl_header "$d/h" content-range) $(t_sha256 "$d/r")"
        a=$((CHUNK - 1000))
        code=$("${CURL[@]}" -H "Range: bytes=$a-$((a + 2999))" -D "$d/h" -o "$d/r" -w '%{http_code}' "$u")
        t_eq "R$n: 3000 bytes across the first part boundary -> 206, the bytes" "206 bytes $a-$((a + 2999))/$size $(slice_sha "$d/blob" "$a" 3000)" \
            "$code $(pl_header "$d/h" content-range) $(t_sha256 "$d/r")"
        a=$((size - 5000))
        code=$("${CURL[@]}" -H "Range: bytes=$a-" -D "$d/h" -o "$d/r" -w '%{http_code}' "$u")
        t_eq "R$n: bytes=$a- -> 206, the last 5000 bytes" "206 bytes $a-$((size - 1))/$size $(slice_sha "$d/blob" "$a" 5000)" \
            "$code $(pl_header "$d/h" content-range) $(t_sha256 "$d/r")"
        code=$("${CURL[@]}" -H "Range: bytes=-777" -D "$d/h" -o "$d/r" -w '%{http_code}' "$u")
        t_eq "R$n: bytes=-777 -> 206, the last 777 bytes" "206 bytes $((size - 777))-$((size - 1))/$size $(slice_sha "$d/blob" $((size - 777)) 777)" \
            "$code $(pl_header "$d/h" content-range) $(t_sha256 "$d/r")"
        code=$("${CURL[@]}" -H "Range: bytes=0-" -D "$d/h" -o "$d/r" -w '%{http_code}' "$u")
        t_eq "R$n: bytes=0- -> 206, all of it" "206 bytes 0-$((size - 1))/$size ${want#sha256:}" \
            "$code $(pl_header "$d/h" content-range) $(t_sha256 "$d/r")"
        code=$("${CURL[@]}" -H "Range: bytes=$size-" -D "$d/h" -o /dev/null -w '%{http_code}' "$u")
        t_eq "R$n: bytes=$size- -> 416, Content-Range bytes */$size" "416 bytes */$size" "$code $(pl_header "$d/h" content-range)"
        code=$("${CURL[@]}" -D "$d/h" -o "$d/r" -w '%{http_code}' "$u")
        t_eq "R$n: no Range -> 200, Content-Length, all of it" "200 $size ${want#sha256:}" \
            "$code $(pl_header "$d/h" content-length) $(t_sha256 "$d/r")"
    done
}

# ---- 4. redirect mode: 307 to a presigned URL -------------------------------------------------
r4_up() { replica_up 4 false; }
s4() {
    local d=$W/s4 size want code loc dimg
    if ! s3mode; then
        t_skip "section 4, redirect mode" "it needs storage.s3"
        return 0
    fi
    mkdir -p "$d"
    r4_up || { t_fail "R4 (storage.redirect.disable: false) starts"; return 0; }
    head -c $((7 * MIB + 99)) /dev/urandom >"$d/blob"
    size=$(stat -c %s "$d/blob")
    want=sha256:$(t_sha256 "$d/blob")
    t_check "upload a 7 MiB blob to R1" pl_push_blob "${R_URL[1]}" s4/redir "$d/blob" patch
    local u=${R_URL[4]}/v2/s4/redir/blobs/$want
    code=$("${CURL[@]}" -D "$d/h" -o /dev/null -w '%{http_code}' "$u")
    loc=$(pl_header "$d/h" location)
    t_eq "R4: GET blob -> 307" 307 "$code"
    t_check "... Location is a presigned URL of the blob's object ($(echo "$loc" | cut -c1-90)...)" \
        bash -c '[[ "$1" == "$2"* ]] && [[ "$1" == *X-Amz-Signature=* ]]' _ "$loc" "$RGW_URL/$RGW_BUCKET/$(blob_key "$want")?"
    code=$(curl -s --max-time 60 -o "$d/direct" -w '%{http_code}' "$loc")
    t_eq "plain curl (no credentials) GETs the Location: 200, the right bytes" "200 ${want#sha256:}" "$code $(t_sha256 "$d/direct")"
    code=$(curl -s --max-time 60 -L -o "$d/follow" -w '%{http_code}' "$u")
    t_eq "curl -L through R4: 200, the right bytes" "200 ${want#sha256:}" "$code $(t_sha256 "$d/follow")"
    code=$(curl -s --max-time 60 -L -H 'Range: bytes=5242000-5243999' -D "$d/rh" -o "$d/range" -w '%{http_code}' "$u")
    t_eq "curl -L -H 'Range: bytes=5242000-5243999' through R4: 206, the bytes" \
        "206 bytes 5242000-5243999/$size $(slice_sha "$d/blob" 5242000 2000)" \
        "$code $(pl_header "$d/rh" content-range) $(t_sha256 "$d/range")"
    code=$(curl -s --max-time 60 -L -H 'Range: bytes=-100' -o "$d/range" -w '%{http_code}' "$u")
    t_eq "curl -L -H 'Range: bytes=-100' through R4: 206, the last 100 bytes" "206 $(slice_sha "$d/blob" $((size - 100)) 100)" \
        "$code $(t_sha256 "$d/range")"
    t_eq "R4: an unknown blob is 404 (no redirect)" 404 "$(code_of "${R_URL[4]}/v2/s4/redir/blobs/sha256:$(printf '%064d' 0)")"
    # a real client through the redirects
    dimg=$($MK image "$d/img" --layers 2 --seed 401 --tag v1 --size $((6 * MIB)))
    t_check "skopeo push to R1" "${SK[@]}" copy -q "${NOTLS[@]}" "oci:$d/img:v1" "docker://${R_HP[1]}/s4/img:v1"
    t_check "skopeo pull through R4 (blobs redirected)" "${SK[@]}" copy -q --preserve-digests "${NOTLS[@]}" \
        "docker://${R_HP[4]}/s4/img:v1" "oci:$d/img-r4:v1"
    t_check "... the same manifest digest and every blob intact" layout_ok "$d/img-r4" v1 "$dimg"
}

# ---- 5. containerd pulls through replicas ----------------------------------------------------
s5() {
    local d=$W/s5 C=$T_TMP/ctd dimg dimg2 ref chain src hp
    mkdir -p "$d"
    dimg=$($MK image "$d/img" --layers 2 --seed 501 --tag v1 --size $((6 * MIB)))
    t_check "skopeo push an image (2 x 6 MiB layers) to R1" "${SK[@]}" copy -q "${NOTLS[@]}" "oci:$d/img:v1" "docker://${R_HP[1]}/s5/img:v1"
    mkdir -p "$C/hosts/via-r2.example:5000"
    cat >"$C/hosts/via-r2.example:5000/hosts.toml" <<EOF
server = "http://via-r2.example:5000"

[host."http://${R_HP[2]}"]
  capabilities = ["pull", "resolve"]
EOF
    containerd_start "$C" || { t_fail "private containerd starts" "$(tail -3 "$C/containerd.log")"; return 0; }
    ref=via-r2.example:5000/s5/img:v1
    t_check "ctr images pull through R2 (hosts.toml, native snapshotter)" "${CTR[@]}" images pull --print-chainid \
        --hosts-dir "$C/hosts" --snapshotter native "$ref"
    cp "$T_TMP/.check.out" "$d/pull.out"
    t_eq "ctr images ls: the pushed digest" "$dimg" "$("${CTR[@]}" images ls 2>&1 | awk -v r="$ref" '$1==r {print $3}')"
    t_check "ctr images check: complete" bash -c "$(printf '%q ' "${CTR[@]}") images check 2>&1 | grep -F '$ref' | grep -q complete"
    t_ctr_rootfs "the unpacked rootfs equals the layers' files" "$d/img" "$dimg" "$d/pull.out" "$d"
    if s3mode && r4_up; then
        # containerd following R4's 307s to presigned URLs (another image: nothing cached in containerd)
        dimg2=$($MK image "$d/img2" --layers 2 --seed 502 --tag v1 --size $((6 * MIB)))
        t_check "skopeo push another image to R3" "${SK[@]}" copy -q "${NOTLS[@]}" "oci:$d/img2:v1" "docker://${R_HP[3]}/s5/img2:v1"
        mkdir -p "$C/hosts/via-r4.example:5000"
        printf 'server = "http://via-r4.example:5000"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' \
            "${R_HP[4]}" >"$C/hosts/via-r4.example:5000/hosts.toml"
        ref=via-r4.example:5000/s5/img2:v1
        t_check "ctr images pull through R4 (blobs redirected to presigned URLs)" "${CTR[@]}" images pull \
            --hosts-dir "$C/hosts" --snapshotter native "$ref"
        t_eq "ctr images ls: its digest" "$dimg2" "$("${CTR[@]}" images ls 2>&1 | awk -v r="$ref" '$1==r {print $3}')"
        t_check "ctr images check: complete" bash -c "$(printf '%q ' "${CTR[@]}") images check 2>&1 | grep -F '$ref' | grep -q complete"
    fi
    kill "$CTD_PID" 2>/dev/null
    wait "$CTD_PID" 2>/dev/null
}

# ---- 6. mirror coalescing over the replicas ---------------------------------------------------
s6() {
    local d=$W/s6 dbig dman i u pids=() n
    mkdir -p "$d/co" "$d/img"
    head -c $((64 * MIB)) /dev/urandom >"$d/big"
    dbig=sha256:$(t_sha256 "$d/big")
    pl_make_config "$d/config" s6
    dman=$(pl_push_image "$UP_URL" org/big v1 "$d/img" "$d/config" "$d/big")
    t_check "fixture: a 64 MiB single-layer image in the upstream ($dman)" test -n "$dman"
    for i in $(seq 1 20); do
        n=$((i % 3 + 1))
        if [ $((i % 2)) = 0 ]; then u="${R_URL[$n]}/v2/org/big/blobs/$dbig?ns=up.example"; else u="${R_URL[$n]}/v2/up.example/org/big/blobs/$dbig"; fi
        t_fetch "$d/co" "$i" "$u" &
        pids+=("$!")
    done
    wait "${pids[@]}"
    # client i went to replica R(i % 3 + 1)
    t_check "20 concurrent cold GETs over R1, R2, R3: all 200 with the exact 64 MiB" \
        t_fetched_all "$d/co" 20 "${dbig#sha256:}"
    sleep 0.3
    t_eq "... the upstream saw exactly one GET of the blob" 1 "$(grep -c "\"GET /v2/org/big/blobs/$dbig " "$UPD/registry.log")"
    t_eq "... no lease left once the fill committed" 0 "$(pg_psql "$S3R_DB" "SELECT count(*) FROM leases")"
    if s3mode; then
        bucket_ls "$(blob_key "$dbig")" "$d/ls"
        echo "$dbig $((64 * MIB))" >"$d/want"
        t_check "... the blob is an object in the bucket" blobs_in_bucket "$d/ls" "$d/want"
        t_check "... and not a file in any scratch directory" not_in_scratch "$dbig"
    fi
    t_check "skopeo pulls the mirrored image through R3" "${SK[@]}" copy -q --preserve-digests "${NOTLS[@]}" \
        "docker://${R_HP[3]}/up.example/org/big:v1" "oci:$d/pulled:v1"
    t_eq "... the upstream's manifest digest" "$dman" "$($MK digest "$d/pulled" --tag v1 2>&1)"
    t_eq "... the layer intact" "${dbig#sha256:}" "$(t_sha256 "$d/pulled/blobs/sha256/${dbig#sha256:}" 2>&1)"
    t_eq "... still one upstream GET of the blob" 1 "$(grep -c "\"GET /v2/org/big/blobs/$dbig " "$UPD/registry.log")"
}

# push_loops NAME SEED: on each replica one pusher of small layers and one with layers up to
# 6 MB (multipart); until $W/NAME.stop exists; acknowledged manifests in $W/NAME.acked.rN[ab]
push_loops() {
    local n
    LP=()
    head -c 40000 /dev/urandom >"$W/$1.shared"
    for n in 1 2 3; do
        $OCIPUSH push-loop "${R_URL[$n]}" "$1/r${n}a" --seed $(($2 + n)) --max-size 40000 --shared "$W/$1.shared" \
            --acked "$W/$1.acked.r${n}a" --blobs "$W/$1.blobs.r${n}a" --stop "$W/$1.stop" >"$W/$1.push.r${n}a" 2>&1 &
        LP+=($!)
        $OCIPUSH push-loop "${R_URL[$n]}" "$1/r${n}b" --seed $(($2 + 10 + n)) --max-size 6000000 \
            --acked "$W/$1.acked.r${n}b" --blobs "$W/$1.blobs.r${n}b" --stop "$W/$1.stop" >"$W/$1.push.r${n}b" 2>&1 &
        LP+=($!)
    done
    T_PIDS+=("${LP[@]}")
}
acked_by() { cat "$W/$1".acked.r"$2"* 2>/dev/null | wc -l; }

# ---- 7. a replica killed with SIGKILL in the middle of pushes to all three --------------------
s7() {
    local n i
    push_loops kill 700
    for i in $(seq 1 200); do
        [ "$(acked_by kill 1)" -ge 2 ] && [ "$(acked_by kill 2)" -ge 2 ] && [ "$(acked_by kill 3)" -ge 2 ] && break
        sleep 0.1
    done
    # an upload session begun on R2, one 6 MiB chunk acknowledged, is to outlive R2
    head -c $((6 * MIB)) /dev/urandom >"$W/kill.c0"
    head -c 777777 /dev/urandom >"$W/kill.c1"
    local loc code codes want
    want=sha256:$(cat "$W/kill.c0" "$W/kill.c1" | sha256sum | cut -d' ' -f1)
    code=$("${CURL[@]}" -D "$W/kill.post.h" -o /dev/null -w '%{http_code}' -X POST "${R_URL[2]}/v2/kill/session/blobs/uploads/")
    loc=$(locpath "$W/kill.post.h")
    codes="$code "
    code=$("${CURL[@]}" -D "$W/kill.p0.h" -o /dev/null -w '%{http_code}' -X PATCH -H 'Content-Type: application/octet-stream' \
        -H "Content-Range: 0-$((6 * MIB - 1))" --data-binary "@$W/kill.c0" "${R_URL[2]}$loc")
    codes+="$code"
    [ -n "$(locpath "$W/kill.p0.h")" ] && loc=$(locpath "$W/kill.p0.h")
    sleep 1
    local before=$(acked_by kill 2)
    kill -KILL "${R_PID[2]}"
    wait "${R_PID[2]}" 2>/dev/null
    echo "# R2 killed with SIGKILL after $before acknowledged manifests"
    sleep 2
    touch "$W/kill.stop"
    for p in "${LP[@]}"; do wait "$p"; done
    t_check "all three acknowledged pushes before the kill ($(acked_by kill 1) + $before + $(acked_by kill 3))" \
        test "$(acked_by kill 1)" -gt 0 -a "$before" -gt 0 -a "$(acked_by kill 3)" -gt 0
    t_check "... R1 and R3 kept acknowledging after it" test "$(acked_by kill 1)" -gt 2 -a "$(acked_by kill 3)" -gt 2
    cat "$W"/kill.acked.* >"$W/kill.acked"
    for n in 1 3; do
        $OCIPUSH verify "${R_URL[$n]}" "$W/kill.acked" >"$W/kill.verify.r$n" 2>&1
        t_eq "every acknowledged manifest ($(wc -l <"$W/kill.acked")) intact through R$n" "0 failures" "$(vres "$W/kill.verify.r$n")"
    done
    if s3mode; then
        bucket_mpu "$W/kill.mpu"
        echo "# after the SIGKILL: $(wc -l <"$W/kill.mpu") open multipart uploads, $(bucket_ls "$S3ROOT/uploads/" "$W/kill.up"; wc -l <"$W/kill.up") objects under $S3ROOT/uploads/"
    fi
    t_eq "a session begun on R2 (POST, PATCH 6 MiB) before the kill" "202 202" "$codes"
    code=$("${CURL[@]}" -D "$W/kill.p1.h" -o /dev/null -w '%{http_code}' -X PATCH -H 'Content-Type: application/octet-stream' \
        -H "Content-Range: $((6 * MIB))-$((6 * MIB + 777777 - 1))" --data-binary "@$W/kill.c1" "${R_URL[1]}$loc")
    [ -n "$(locpath "$W/kill.p1.h")" ] && loc=$(locpath "$W/kill.p1.h")
    codes="$code $(pl_header "$W/kill.p1.h" range) "
    codes+=$("${CURL[@]}" -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Length: 0' "${R_URL[3]}$loc$(pl_sep "$loc")digest=$want")
    t_eq "... continues on R1 after R2's death (PATCH 202, Range) and completes on R3 (201)" "202 0-$((6 * MIB + 777777 - 1)) 201" "$codes"
    code=$("${CURL[@]}" -o "$W/kill.got" -w '%{http_code}' "${R_URL[1]}/v2/kill/session/blobs/$want")
    t_eq "... the blob is the bytes sent to both" "200 ${want#sha256:}" "$code $(t_sha256 "$W/kill.got")"
    t_check "berth fsck beside R1 and R3, R2 down: exit 0" "$BERTH" fsck -c "$TOOLS_CFG"
    cp "$T_TMP/.check.out" "$W/kill.fsck1"
    if replica_up 2; then
        t_ok "R2 restarts on its port after the SIGKILL"
        $OCIPUSH verify "${R_URL[2]}" "$W/kill.acked" >"$W/kill.verify.r2" 2>&1
        t_eq "... every acknowledged manifest intact through the restarted R2" "0 failures" "$(vres "$W/kill.verify.r2")"
        t_check "... it takes a push again" pl_push_blob "${R_URL[2]}" kill/after "$W/kill.shared" patch
    else
        t_fail "R2 restarts on its port after the SIGKILL"
    fi
    t_check "berth fsck with all three up: exit 0" "$BERTH" fsck -c "$TOOLS_CFG"
}

# ---- 8. gc while pushes and pulls run on all three -------------------------------------------
s8() {
    local d=$W/s8 k1 k2 i n gcrc="" runs=0 deadline rc
    mkdir -p "$d"
    k1=$($MK image "$d/k1" --layers 2 --seed 801 --tag v1 --size 3000000)
    k2=$($MK index "$d/k2" --arches amd64,arm64 --seed 802 --tag v1)
    t_check "keep: an image pushed to R1" "${SK[@]}" copy -q "${NOTLS[@]}" "oci:$d/k1:v1" "docker://${R_HP[1]}/s8/keep:v1"
    t_check "keep: an index pushed to R3" "${SK[@]}" copy -q --all "${NOTLS[@]}" "oci:$d/k2:v1" "docker://${R_HP[3]}/s8/keepidx:v1"
    printf '%s\n' "s8/keep v1 $k1" "s8/keepidx v1 $k2" >"$d/keep.refs"
    for i in 1 2 3 4; do
        head -c $((3000 * i)) /dev/urandom >"$d/contested$i"
        pl_push_blob "${R_URL[2]}" s8/orphan "$d/contested$i" put
    done
    rm -f "$W/gcl.stop"
    push_loops gcl 800
    for n in 1 3; do
        $OCIPUSH churn "${R_URL[$n]}" "gcl/churn$n" --seed $((850 + n)) --reuse-from s8/orphan --reuse "$d"/contested* \
            --acked "$W/gcl.acked.c$n" --errors "$d/churn.errors.$n" --deleted "$d/churn.deleted.$n" --stop "$W/gcl.stop" >"$d/churn.$n" 2>&1 &
        LP+=($!)
    done
    for n in 1 2 3; do
        $OCIPUSH pull-loop "${R_URL[$n]}" --refs "$d/keep.refs" --stop "$W/gcl.stop" --errors "$d/pull.errors.$n" >"$d/pull.$n" 2>&1 &
        LP+=($!)
    done
    T_PIDS+=("${LP[@]}")
    for _ in $(seq 1 100); do
        [ "$(cat "$W"/gcl.acked.* 2>/dev/null | wc -l)" -ge 6 ] && break
        sleep 0.1
    done
    # gc from the tools config again and again until at least 6 runs are done and the churners
    # have turned 8 manifests into garbage (at most 60 s)
    deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ]; do
        runs=$((runs + 1))
        "$BERTH" gc -c "$TOOLS_CFG" --grace 0s >"$d/gc.$runs.out" 2>&1
        rc=$?
        gcrc+=$rc
        [ $rc = 0 ] || echo "# gc run $runs exit $rc: $(tail -3 "$d/gc.$runs.out" | tr '\n' ' ')"
        [ $runs -ge 6 ] && [ "$(cat "$d"/churn.deleted.* 2>/dev/null | wc -l)" -ge 8 ] && break
        sleep 0.2
    done
    touch "$W/gcl.stop"
    for p in "${LP[@]}"; do wait "$p"; done
    t_eq "$runs gc --grace 0s runs beside three loaded replicas exit 0" "$(printf '0%.0s' $(seq 1 $runs))" "$gcrc"
    echo "# gc: $(grep -h '^removed' "$d"/gc.*.out | awk '{m+=$2; b+=$4} END {print m+0 " manifests, " b+0 " blobs removed over the runs"}')"
    t_check "pushes acknowledged by all three meanwhile ($(acked_by gcl 1) + $(acked_by gcl 2) + $(acked_by gcl 3))" \
        test "$(acked_by gcl 1)" -gt 0 -a "$(acked_by gcl 2)" -gt 0 -a "$(acked_by gcl 3)" -gt 0
    t_check "churners deleted manifests while gc ran ($(cat "$d"/churn.deleted.* 2>/dev/null | wc -l) >= 8)" \
        test "$(cat "$d"/churn.deleted.* 2>/dev/null | wc -l)" -ge 8
    cat "$d"/pull.errors.* >"$d/pull.errors" 2>/dev/null
    local pulls
    pulls=$(cat "$d"/pull.? | awk '$1=="pulls" {s+=$2} END {print s+0}')
    t_eq "pulls of the kept images on all three during gc ($pulls) all intact" "0" \
        "$(wc -l <"$d/pull.errors")$(head -1 "$d/pull.errors" | sed 's/^/ first: /')"
    t_check "... and there were pulls" test "$pulls" -gt 0
    cat "$d"/churn.errors.* >"$d/churn.errors" 2>/dev/null
    t_eq "churned manifests read back intact right after their 201" "0" \
        "$(wc -l <"$d/churn.errors")$(head -1 "$d/churn.errors" | sed 's/^/ first: /')"
    # every acknowledged push, read through the next replica
    for n in 1 2 3; do
        cat "$W"/gcl.acked.r"$n"* "$W"/gcl.acked.c"$n" 2>/dev/null >"$d/acked.$n"
        local via=$((n % 3 + 1))
        $OCIPUSH verify "${R_URL[$via]}" "$d/acked.$n" >"$d/verify.$n" 2>&1
        t_eq "every push acknowledged by R$n during gc ($(wc -l <"$d/acked.$n")) intact through R$via" "0 failures" "$(vres "$d/verify.$n")"
    done
    t_check "gc --grace 0s after the load exits 0" "$BERTH" gc -c "$TOOLS_CFG" --grace 0s
    cat "$d"/churn.deleted.* >"$d/deleted" 2>/dev/null
    local gone=0 total m c repo
    total=$(wc -l <"$d/deleted")
    s3mode && bucket_ls "$S3ROOT/blobs/" "$d/ls"
    while read -r repo m c; do
        [ "$(code_of "${R_URL[2]}/v2/$repo/manifests/$m" -H "$PL_ACCEPT")" = 404 ] || continue
        [ "$(code_of "${R_URL[2]}/v2/$repo/blobs/$c" -I)" = 404 ] || continue
        if s3mode; then grep -q "^$(blob_key "$c") " "$d/ls" && continue; fi
        gone=$((gone + 1))
    done <"$d/deleted"
    t_eq "every churned-and-deleted manifest 404, its config blob 404$(s3mode && echo ' and gone from the bucket')" "$total" "$gone"
    $OCIPUSH verify "${R_URL[2]}" "$d/keep.refs" >"$d/verify.keep" 2>&1
    t_eq "the kept image and index intact after gc" "0 failures" "$(vres "$d/verify.keep")"
    t_check "berth fsck after gc: exit 0" "$BERTH" fsck -c "$TOOLS_CFG"
    t_eq "gc --dry-run finds nothing more" "would remove 0 manifests, 0 blobs (0 bytes), 0 orphan files" \
        "$("$BERTH" gc -c "$TOOLS_CFG" --grace 0s --dry-run 2>/dev/null | tail -1)"
}

run_section 1 "skopeo push to R1, pull from R2/R3; bucket layout"
run_section 2 "chunked upload spread over the replicas"
run_section 3 "Range GETs"
run_section 4 "redirect mode"
run_section 5 "containerd"
run_section 6 "mirror coalescing"
run_section 7 "SIGKILL during pushes"
run_section 8 "gc under load"

printf '%s' "$SUMMARY"
codes=""
for n in 1 2 3; do codes+="$(code_of "${R_URL[$n]}/v2/") "; done
t_eq "all three replicas still serve" "200 200 200 " "$codes"
for n in 1 2 3; do
    echo "# r$n log: $(grep -c 'level=error' "$T_TMP/r$n/berth.log") error lines, $(grep -c 'level=warn' "$T_TMP/r$n/berth.log") warn lines"
done
echo "# total ${SECONDS}s"
t_finish
