#!/usr/bin/env bash
# A throwaway S3 endpoint for berth's tests: a single-node Ceph cluster (one mon, one OSD, one
# radosgw, Debian 12's Ceph 16.2.15) on 127.0.0.1, without systemd, everything under one directory.
# Source it after tests/lib.sh:
#
#   . "$(dirname "$0")/../lib.sh"
#   . "$(dirname "$0")/../rgw.sh"
#   rgw_start "$T_TMP/rgw" || { t_fail "rgw start"; t_finish; }
#   ... use RGW_URL RGW_ACCESS_KEY RGW_SECRET_KEY RGW_BUCKET RGW_REGION ...
#   rgw_stop        # optional: the EXIT trap calls it too
#
# rgw_start DIR
#   Starts mon, OSD and radosgw as foreground daemons in the background, each with output in
#   DIR/log, admin sockets in DIR/run, config DIR/ceph.conf, one keyring DIR/keyring (cephx on).
#   Creates an S3 user and a bucket, then exports:
#     RGW_URL         http://127.0.0.1:PORT (path-style: $RGW_URL/BUCKET/KEY)
#     RGW_ACCESS_KEY  RGW_SECRET_KEY  (also AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)
#     RGW_REGION      "default" (RGW's zonegroup; see the SigV4 notes below)
#     RGW_BUCKET      a bucket that exists and is empty
#     RGW_DIR         DIR  (and, not exported, RGW_CEPH=(ceph -c DIR/ceph.conf -n client.admin ...))
#     RGW_PIDS        "RGW_PID OSD_PID MON_PID"
#   Also exports AWS_CONFIG_FILE/AWS_SHARED_CREDENTIALS_FILE pointing into DIR so that
#   `/usr/bin/aws --endpoint-url "$RGW_URL" s3api ...` works without touching ~/.aws.
#   Returns non-zero (after stopping whatever it started, and printing log tails on stderr) on
#   failure. Keep DIR short: admin socket paths must stay under 108 bytes.
#     RGW_START_SECONDS  how long rgw_start took
#   One cluster per shell: a second rgw_start stops the first. It sets `trap 'rgw_stop; t_cleanup'
#   EXIT` (or just rgw_stop without lib.sh) and makes SIGTERM/INT/HUP exit through it, so the
#   daemons die with the test even under timeout(1); a test that sets its own EXIT trap must call
#   rgw_stop itself.
#   Knobs: RGW_STORE=bluestore (default; a sparse file DIR/osd.block of RGW_OSD_SIZE, default 8G)
#          or memstore (all data in the OSD's RAM: fastest start, but RSS grows with the data).
#          RGW_CONF_EXTRA: lines appended to ceph.conf (after [client.rgw]; start with a [section]).
#
# rgw_curl ARGS...   curl signed like berth will sign (SigV4, region, UNSIGNED-PAYLOAD header)
# rgw_aws ARGS...    /usr/bin/aws with --endpoint-url/--region set
#
# rgw_stop
#   Stops radosgw, then the OSD, then the mon (radosgw hangs in shutdown when the OSD is gone),
#   each by PID with SIGTERM, SIGKILL after 10 s, and removes DIR. Safe to call twice or when
#   rgw_start failed half-way. rgw_start installs an EXIT trap that runs rgw_stop before lib.sh's
#   t_cleanup. RGW_KEEP=1 keeps DIR (logs) for debugging.
#
# ---------------------------------------------------------------------------------------------
# SigV4 against RGW 16.2.15 with libcurl 7.88.1's CURLOPT_AWS_SIGV4 (curl --aws-sigv4; Debian 12's
# libcurl3-gnutls that berth links is the same 7.88.1 code) -- what berth's S3 backend must do.
# Every line is checked by tests/integration/rgw_engine.sh; change both together.
#  * CURLOPT_AWS_SIGV4 = "aws:amz:<region>:s3", CURLOPT_USERPWD = "ACCESS:SECRET". RGW checks
#    neither the region nor the service of the credential scope ("us-east-1", "xyz", service "s4"
#    and even plain "aws:amz", where libcurl guesses region "0"/service "127" from 127.0.0.1, all
#    pass), but AWS does: always pass the configured region (RGW's zonegroup is "default").
#  * libcurl 7.88.1 signs only "host;x-amz-date" and hashes the body itself; it does not send
#    x-amz-content-sha256, and without that header RGW answers every request 403
#    SignatureDoesNotMatch. Add the header `x-amz-content-sha256: UNSIGNED-PAYLOAD` (or the real
#    hex SHA-256 of the body): libcurl then signs "host;x-amz-content-sha256;x-amz-date" and uses
#    the header's value as the payload hash. A wrong real hash -> 400 XAmzContentSHA256Mismatch.
#  * Path-style URLs only: http://127.0.0.1:PORT/BUCKET/KEY (no `rgw dns name`, so no virtual
#    hosts). libcurl signs the path exactly as given and RGW re-encodes it, so the key must be
#    percent-encoded (RFC 3986, upper-case hex) for everything but A-Za-z0-9 - . _ ~ and "/":
#    "blobs/sha256%3Aabc%20d%2Be" works, a raw ":" in the path -> 403 SignatureDoesNotMatch.
#  * libcurl 7.88.1 also copies the query string into the canonical request as given: it must
#    already be canonical -- parameters sorted by name, names and values percent-encoded with
#    upper-case hex ("/" too: prefix=a%2Fb), and a flag written with "=" ("?uploads="). Each of
#    unsorted, a raw "/", a lower-case "%2f" or a bare "?uploads" -> 403 SignatureDoesNotMatch.
#      POST   /B/K?uploads=                        CreateMultipartUpload -> <UploadId>2~...</UploadId>
#      PUT    /B/K?partNumber=N&uploadId=ID        UploadPart -> ETag header "\"md5\""
#      GET    /B/K?uploadId=ID                     ListParts
#      POST   /B/K?uploadId=ID  + XML body         CompleteMultipartUpload
#      DELETE /B/K?uploadId=ID                     AbortMultipartUpload -> 204
#      GET    /B?uploads=                          ListMultipartUploads
#      GET    /B?delimiter=%2F&list-type=2&prefix=a%2F   ListObjectsV2
#    Upload ids ("2~" + 32 chars) use only unreserved characters, so they need no encoding.
#    Never send an empty uploadId: "PUT /B/K?partNumber=1&uploadId=" is taken as a plain
#    PutObject and overwrites K (200).
#  * PUT needs a Content-Length (CURLOPT_INFILESIZE_LARGE / POSTFIELDSIZE_LARGE); a chunked body
#    -> 411 MissingContentLength. libcurl's "Expect: 100-continue" is answered (100 CONTINUE).
#    PutObject/UploadPart answer 200 with ETag "\"<md5 hex>\"" (quoted, in the header).
#  * GET with "Range: bytes=A-B" -> 206, Content-Range "bytes A-B/SIZE", exactly those bytes;
#    "bytes=A-" and an end past the size are clamped (206); a start at or past SIZE -> 416
#    InvalidRange. If-None-Match with the ETag -> 304.
#  * HEAD -> 200 with Content-Length/ETag; a missing key -> 404 (use CURLOPT_NOBODY: RGW sends
#    Content-Length: 240 but no body). DELETE -> 204, also for a key that does not exist.
#  * CompleteMultipartUpload body
#      <CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"md5"</ETag></Part>...
#    (ETags as UploadPart returned them, ascending part numbers). Every part but the last must be
#    >= 5 MiB (else 400 EntityTooSmall); a wrong ETag -> 400 InvalidPart. RGW 16.2.15 answers the
#    first Complete with an EMPTY <ETag></ETag> (Red Hat BZ 2266579): HEAD the object for its
#    ETag ("\"md5-of-part-md5s-N\""). A repeated Complete of the same upload (a retry) answers 200
#    with the ETag, unquoted. Parts listed out of order are not refused (no InvalidPartOrder):
#    200 and the object is assembled in part-number order.
#  * Errors are XML <Error><Code>C</Code><Message></Message>[<BucketName>]<RequestId>...
#    </RequestId><HostId>...</HostId></Error> with an empty Message; seen: NoSuchKey 404,
#    NoSuchBucket 404, NoSuchUpload 404 (UploadPart/Abort with an unknown uploadId; but ListParts
#    of a gone upload -> 404 NoSuchKey), SignatureDoesNotMatch 403, InvalidAccessKeyId 403,
#    AccessDenied 403 (unsigned, expired presigned URL), BucketNotEmpty 409, InvalidRange 416,
#    MissingContentLength 411, EntityTooSmall/InvalidPart/XAmzContentSHA256Mismatch 400.
#    PUT of a bucket you already own -> 200.
#  * Presigned URLs (aws s3 presign) are path-style with X-Amz-Algorithm/Credential/Date/Expires/
#    SignedHeaders=host/Signature in the query; plain curl GETs them; another key -> 403
#    SignatureDoesNotMatch, past X-Amz-Expires -> 403 AccessDenied.
# ---------------------------------------------------------------------------------------------

RGW_DIR=""
RGW_PIDS=""

_rgw_port() {
    if declare -F t_port >/dev/null; then t_port; else
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
    fi
}

_rgw_log_tails() {
    local f
    for f in "$RGW_DIR"/log/*.log "$RGW_DIR"/log/*.out; do
        [ -s "$f" ] || continue
        echo "--- $f" >&2
        case $f in *.out) tail -15 "$f" ;; *) tail -5 "$f" ;; esac >&2
    done
}

# _rgw_kill PID: SIGTERM, wait up to 10 s, then SIGKILL; reaps it when it is this shell's child
# (bash reaps background children itself, so kill -0 fails as soon as it has exited).
_rgw_kill() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null
        sleep 0.1
    fi
    wait "$pid" 2>/dev/null
    return 0
}

rgw_stop() {
    local d=${RGW_DIR:-} name
    [ -n "$d" ] || return 0
    for name in rgw osd mon; do
        [ -f "$d/$name.pid" ] && _rgw_kill "$(cat "$d/$name.pid")"
    done
    [ -n "${RGW_KEEP:-}" ] || rm -rf "$d"
    RGW_DIR=""
    RGW_PIDS=""
    return 0
}

# _rgw_bg NAME CMD...: runs CMD in the background, output to DIR/log/NAME.out, PID to DIR/NAME.pid.
_rgw_bg() {
    local name=$1
    shift
    "$@" </dev/null >>"$RGW_DIR/log/$name.out" 2>&1 &
    echo $! >"$RGW_DIR/$name.pid"
}

rgw_start() {
    local t0
    t0=$(date +%s.%N)
    # one retry: a port from _rgw_port can be taken by someone else before a daemon binds it
    _rgw_start_once "$1" || {
        echo "rgw_start: retrying once" >&2
        _rgw_start_once "$1"
    } || return 1
    RGW_START_SECONDS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
    export RGW_START_SECONDS
}

_rgw_start_once() {
    local d=$1
    rgw_stop
    mkdir -p "$d" || return 1
    d=$(cd "$d" && pwd)
    if [ ${#d} -gt 60 ]; then
        echo "rgw_start: $d is too long for admin sockets (keep it under 60 chars)" >&2
        return 1
    fi
    # a cluster directory left behind (RGW_KEEP, a killed test) cannot be reused: start afresh
    [ -f "$d/ceph.conf" ] && { rm -rf "$d" && mkdir -p "$d" || return 1; }
    RGW_DIR=$d
    # stop everything on exit, before lib.sh's t_cleanup (which kills its PIDs all at once)
    if declare -F t_cleanup >/dev/null; then
        trap 'rgw_stop; t_cleanup' EXIT
    else
        trap 'rgw_stop' EXIT
    fi
    # bash skips the EXIT trap when a signal kills it (timeout(1) sends SIGTERM): turn those into exits
    trap 'exit 143' TERM
    trap 'exit 130' INT
    trap 'exit 129' HUP
    mkdir -p "$d/log" "$d/run" "$d/mon" "$d/osd/0" "$d/rgw" "$d/crash" || return 1
    local store=${RGW_STORE:-bluestore}
    local mon_port rgw_port fsid osd_uuid
    mon_port=$(_rgw_port)
    rgw_port=$(_rgw_port)
    fsid=$(cat /proc/sys/kernel/random/uuid)
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    local conf=$d/ceph.conf
    cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
mon initial members = a
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $d/keyring
run dir = $d/run
# admin sockets for the daemons only (a global one would make every ceph CLI call create one)
admin socket =
log file = $d/log/\$name.log
log to stderr = false
err to stderr = true
log to syslog = false
crash dir = $d/crash
ms bind msgr1 = false
ms bind ipv6 = false
public addr = 127.0.0.1
cluster addr = 127.0.0.1
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon allow pool size one = true
mon allow pool delete = true
mon data avail crit = 0
mon data avail warn = 0
paxos propose interval = 0.1
objecter tick interval = 0.5
mon osd auto mark new in = true
osd crush chooseleaf type = 0
auth allow insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false

[mon]
admin socket = $d/run/\$name.asok
mon data = $d/mon/\$id
mon cluster log file = $d/log/cluster.log

[osd]
admin socket = $d/run/\$name.asok
osd data = $d/osd/\$id
osd objectstore = $store
osd journal size = 100
osd crush update on start = true
osd max object name len = 460
osd max object namespace len = 64
bluestore block path = $d/osd.block
bluestore block create = true
bluestore block size = ${RGW_OSD_SIZE:-8G}
bluestore fsck on mkfs = false
bluestore fsck on mount = false
bluestore cache autotune = false
bluestore cache size = 128M
osd memory target = 939524096
bdev aio poll ms = 20
osd op num shards = 2
osd op num threads per shard = 2
memstore device bytes = ${RGW_OSD_SIZE:-8G}

[client.rgw]
admin socket = $d/run/\$name.asok
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $d/rgw
rgw gc obj min wait = 10
rgw gc processor period = 10
rgw enable usage log = false
rgw thread pool size = 64
${RGW_CONF_EXTRA:-}
CONF
    local k=$d/keyring
    {
        ceph-authtool --create-keyring "$k" --gen-key -n mon. --cap mon 'allow *' &&
            ceph-authtool "$k" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
                --cap mds 'allow *' --cap mgr 'allow *' &&
            ceph-authtool "$k" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap osd 'allow *' \
                --cap mgr 'allow profile osd' &&
            ceph-authtool "$k" --gen-key -n client.rgw --cap mon 'allow rw' --cap osd 'allow rwx' \
                --cap mgr 'allow rw' &&
            monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$d/monmap" &&
            ceph-mon -c "$conf" --mkfs -i a --monmap "$d/monmap" --keyring "$k"
    } >>"$d/log/setup.out" 2>&1 || {
        echo "rgw_start: mon mkfs failed" >&2
        _rgw_log_tails
        rgw_stop
        return 1
    }
    _rgw_bg mon ceph-mon -c "$conf" -f -i a
    RGW_CEPH=(ceph -c "$conf" -n client.admin --connect-timeout 10)
    # the mon answers within a fraction of a second; register the OSD (gets id 0)
    local id=""
    for _ in $(seq 1 100); do
        id=$(timeout 15 "${RGW_CEPH[@]}" osd new "$osd_uuid" 2>>"$d/log/setup.out") && break
        kill -0 "$(cat "$d/mon.pid")" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$id" != 0 ]; then
        echo "rgw_start: mon did not come up (osd new gave [$id])" >&2
        _rgw_log_tails
        rgw_stop
        return 1
    fi
    if ! ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$d/log/setup.out" 2>&1; then
        echo "rgw_start: osd mkfs failed" >&2
        _rgw_log_tails
        rgw_stop
        return 1
    fi
    _rgw_bg osd ceph-osd -c "$conf" -f -i 0
    # radosgw waits for the OSD itself (it creates its pools at start), so start it right away
    _rgw_bg rgw radosgw -c "$conf" -f -n client.rgw
    RGW_PIDS="$(cat "$d/rgw.pid") $(cat "$d/osd.pid") $(cat "$d/mon.pid")"
    RGW_URL=http://127.0.0.1:$rgw_port
    local ok=""
    for _ in $(seq 1 300); do
        if curl -s -o /dev/null -m 2 "$RGW_URL/"; then
            ok=1
            break
        fi
        local p
        for p in $RGW_PIDS; do kill -0 "$p" 2>/dev/null || break 2; done
        sleep 0.1
    done
    if [ -z "$ok" ]; then
        echo "rgw_start: radosgw did not answer on $RGW_URL" >&2
        _rgw_log_tails
        rgw_stop
        return 1
    fi
    RGW_ACCESS_KEY=$(head -c 15 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
    RGW_SECRET_KEY=$(head -c 30 /dev/urandom | base64 | tr -d '/+=\n')
    if ! radosgw-admin -c "$conf" -n client.admin user create --uid=berth --display-name=berth \
        --access-key="$RGW_ACCESS_KEY" --secret-key="$RGW_SECRET_KEY" >>"$d/log/setup.out" 2>&1; then
        echo "rgw_start: radosgw-admin user create failed" >&2
        _rgw_log_tails
        rgw_stop
        return 1
    fi
    RGW_REGION=default
    RGW_BUCKET=berth-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
    export RGW_URL RGW_ACCESS_KEY RGW_SECRET_KEY RGW_REGION RGW_BUCKET RGW_DIR RGW_PIDS
    export AWS_ACCESS_KEY_ID=$RGW_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$RGW_SECRET_KEY
    export AWS_DEFAULT_REGION=$RGW_REGION AWS_EC2_METADATA_DISABLED=true
    export AWS_CONFIG_FILE=$d/aws.config AWS_SHARED_CREDENTIALS_FILE=$d/aws.credentials
    printf '[default]\nregion = %s\ns3 =\n  addressing_style = path\n' "$RGW_REGION" >"$AWS_CONFIG_FILE"
    : >"$AWS_SHARED_CREDENTIALS_FILE"
    # the new user's key can take a moment to be visible to radosgw: retry the bucket creation
    local code=""
    for _ in $(seq 1 50); do
        code=$(rgw_curl -o "$d/log/mkbucket.out" -w '%{http_code}' -X PUT "$RGW_URL/$RGW_BUCKET")
        [ "$code" = 200 ] && break
        sleep 0.1
    done
    if [ "$code" != 200 ]; then
        echo "rgw_start: creating bucket $RGW_BUCKET answered $code" >&2
        cat "$d/log/mkbucket.out" >&2
        _rgw_log_tails
        rgw_stop
        return 1
    fi
    return 0
}

# rgw_curl ARGS...: curl with SigV4 as berth will sign through libcurl (see the notes above).
rgw_curl() {
    curl -sS --aws-sigv4 "aws:amz:$RGW_REGION:s3" --user "$RGW_ACCESS_KEY:$RGW_SECRET_KEY" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}

# rgw_aws ARGS...: the real AWS CLI against the endpoint.
rgw_aws() {
    /usr/bin/aws --endpoint-url "$RGW_URL" --region "$RGW_REGION" "$@"
}

# rgw_berth_wrapper FILE [INNER]
#   Writes an executable FILE that runs berth (INNER, default $BERTH: e.g. pg_berth_wrapper's
#   script, for S3 blobs + PostgreSQL metadata) with its blobs in this RGW bucket: the
#   storage.s3 keys as REGISTRY_STORAGE_S3_* variables, one key prefix per storage directory (so a
#   restarted berth finds its blobs, and suites running side by side do not meet), and
#   storage.redirect.disable so blob GETs stream through berth as the suites expect.
rgw_berth_wrapper() {
    local inner=${2:-$BERTH}
    {
        printf '#!/usr/bin/env bash\nreal=%q\n' "$(realpath "$inner")"
        t_wrapper_head
        cat <<SH
export REGISTRY_STORAGE_S3_ACCESSKEY=$RGW_ACCESS_KEY
export REGISTRY_STORAGE_S3_SECRETKEY=$RGW_SECRET_KEY
export REGISTRY_STORAGE_S3_REGION=$RGW_REGION
export REGISTRY_STORAGE_S3_REGIONENDPOINT=$RGW_URL
export REGISTRY_STORAGE_S3_BUCKET=$RGW_BUCKET
export REGISTRY_STORAGE_S3_SECURE=false
export REGISTRY_STORAGE_S3_ROOTDIRECTORY=/r-\$(printf '%s' "\$root" | md5sum | cut -c1-16)
export REGISTRY_STORAGE_REDIRECT_DISABLE=\${REGISTRY_STORAGE_REDIRECT_DISABLE:-true}
exec "\$real" "\$@"
SH
    } >"$1"
    chmod +x "$1"
}
