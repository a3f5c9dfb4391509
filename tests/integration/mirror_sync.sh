#!/usr/bin/env bash
# berth sync: pre-seeds the mirror from a list (tag, digest, tag pattern, platform filter) so the
# site keeps working offline; a second run fetches nothing (resumable); failures exit non-zero.
. "$(dirname "$0")/../lib.sh"

registry_start "$T_TMP/up"
python3 "$T_ROOT/tests/fixtures/mkimage.py" image "$T_TMP/app" --layers 2 --seed 61 --tag v1 >/dev/null
python3 "$T_ROOT/tests/fixtures/mkimage.py" index "$T_TMP/multi" --arches amd64,arm64 --seed 62 >/dev/null
up=docker://127.0.0.1:$REG_PORT
skopeo copy -q --dest-tls-verify=false "oci:$T_TMP/app:v1" "$up/org/app:v1"
skopeo copy -q --all --dest-tls-verify=false "oci:$T_TMP/multi" "$up/org/multi:v1"
skopeo copy -q --all --dest-tls-verify=false "oci:$T_TMP/multi" "$up/org/multi:v2"
skopeo copy -q --all --dest-tls-verify=false "oci:$T_TMP/multi" "$up/org/multi:old"
app_digest=$(curl -s -o /dev/null -D - -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "$REG_URL/v2/org/app/manifests/v1" | tr -d '\r' | awk 'tolower($1)=="docker-content-digest:"{print $2}')

mkdir -p "$T_TMP/b"
cat >"$T_TMP/b/config.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $T_TMP/b/data
mirrors:
  ghcr.io:
    urls: [$REG_URL]
    revalidate: 1s
    timeout: {connect: 1s, transfer: 10s}
  quay.io:
    urls: [$REG_URL]
    repositories: ["org/app"]
YML
cat >"$T_TMP/list.yml" <<YML
images:
  - ghcr.io/org/app@$app_digest
  - ref: ghcr.io/org/multi
    tags: "v*"
    platforms: [linux/arm64]
YML
"$BERTH" sync -c "$T_TMP/b/config.yml" "$T_TMP/list.yml" >"$T_TMP/sync1.out" 2>&1
t_eq "sync: exit 0" 0 "$?"
t_check "sync: reports the fetched blobs" grep -q '^fetched ' "$T_TMP/sync1.out"
t_check "sync: both matching tags (v1, v2) synced" bash -c "grep -q 'ghcr.io/org/multi:v1' $T_TMP/sync1.out && grep -q 'ghcr.io/org/multi:v2' $T_TMP/sync1.out"
t_check "sync: the tag not matching the pattern (old) skipped" bash -c "! grep -q 'multi:old' $T_TMP/sync1.out"
"$BERTH" sync -c "$T_TMP/b/config.yml" "$T_TMP/list.yml" >"$T_TMP/sync2.out" 2>&1
t_eq "sync again: exit 0" 0 "$?"
t_check "sync again: nothing fetched (resumable)" grep -q 'fetched 0 blobs' "$T_TMP/sync2.out"

# a mirror's repositories patterns: quay.io serves only org/app
berth_start "$T_TMP/b"
t_eq "repositories: a served name pulls" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/quay.io/org/app/manifests/v1")"
t_eq "repositories: another name is not mirrored (404)" 404 "$(curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/quay.io/org/multi/manifests/v1")"
t_eq "repositories: not mirrored through ns either" 404 "$(curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/org/multi/manifests/v1?ns=quay.io")"
t_eq "repositories: and not writable under the mirror's name" 403 "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$BERTH_URL/v2/quay.io/org/multi/blobs/uploads/")"
printf 'images:\n  - quay.io/org/multi:v1\n' >"$T_TMP/q.yml"
"$BERTH" sync -c "$T_TMP/b/config.yml" "$T_TMP/q.yml" >"$T_TMP/syncq.out" 2>&1
t_check "repositories: sync refuses a name the mirror does not serve" grep -q 'not among the repositories mirror quay.io serves' "$T_TMP/syncq.out"

berth_stop

# a stalled upstream (accepts, never answers): a cached tag due for revalidation is still
# served, bounded by the mirror's timeouts, not by the stall
SP=$(t_port)
python3 "$T_ROOT/tests/fixtures/mirror_stallproxy.py" "$SP" "$REG_PORT" "$T_TMP/stall" &
T_PIDS+=("$!")
t_wait_http "http://127.0.0.1:$SP/v2/"
mkdir -p "$T_TMP/s"
cat >"$T_TMP/s/config.yml" <<YML
version: 0.1
mirrors:
  ghcr.io:
    urls: [http://127.0.0.1:$SP]
    revalidate: 1s
    timeout: {connect: 1s, transfer: 2s}
YML
berth_start "$T_TMP/s"
t_eq "stall: tag cached while the upstream answers" 200 "$(curl -s -o "$T_TMP/s1" -w '%{http_code}' "$BERTH_URL/v2/ghcr.io/org/app/manifests/v1")"
touch "$T_TMP/stall"
sleep 1.2
t_eq "stall: the cached tag is served when its check stalls" 200 \
    "$(curl -s -m 20 -o "$T_TMP/s2" -w '%{http_code}' "$BERTH_URL/v2/ghcr.io/org/app/manifests/v1")"
t_eq "stall: with the same bytes" "$(t_sha256 "$T_TMP/s1")" "$(t_sha256 "$T_TMP/s2")"
t_check "stall: the outage was logged" grep -q 'upstream unavailable' "$T_TMP/s/berth.log"
code=$(curl -s -m 20 -o "$T_TMP/s3" -w '%{http_code}' "$BERTH_URL/v2/ghcr.io/org/never/manifests/v1")
t_check "stall: an uncached tag gets an error, not a hang ($code)" bash -c "[ $code -ge 500 ] && jq -e '.errors[0].code' $T_TMP/s3"
berth_stop
rm -f "$T_TMP/stall"

# offline: the upstream goes away; what was synced is served
kill "$REG_PID"; wait "$REG_PID" 2>/dev/null
berth_start "$T_TMP/b"
t_check "offline: synced image by digest pulls" skopeo copy -q --src-tls-verify=false \
    "docker://127.0.0.1:$BERTH_PORT/ghcr.io/org/app@$app_digest" "oci:$T_TMP/o-app:x"
t_check "offline: synced arm64 platform pulls" skopeo copy -q --src-tls-verify=false --override-arch arm64 \
    "docker://127.0.0.1:$BERTH_PORT/ghcr.io/org/multi:v2" "oci:$T_TMP/o-arm:x"
t_check "offline: amd64 was filtered out, so it cannot pull" bash -c "! skopeo copy -q --src-tls-verify=false --override-arch amd64 \
    docker://127.0.0.1:$BERTH_PORT/ghcr.io/org/multi:v2 oci:$T_TMP/o-amd:x"
berth_stop

# a failing entry makes sync exit non-zero, naming it
printf 'images:\n  - ghcr.io/org/missing:v1\n  - unknown.example/none/x:v1\n' >"$T_TMP/bad.yml"
"$BERTH" sync -c "$T_TMP/b/config.yml" "$T_TMP/bad.yml" >"$T_TMP/sync3.out" 2>&1
t_eq "sync: failures exit 1" 1 "$?"
t_check "sync: names the unreachable entry" grep -q 'ghcr.io/org/missing' "$T_TMP/sync3.out"
t_check "sync: names the unconfigured registry" grep -q 'unknown.example/none/x:v1: the registry is not one of the configured mirrors' "$T_TMP/sync3.out"
printf 'storage:\n  filesystem:\n    rootdirectory: %s\n' "$T_TMP/b/data" >"$T_TMP/fsck.yml"
t_check "fsck clean after sync" "$BERTH" fsck -c "$T_TMP/fsck.yml"
t_finish
