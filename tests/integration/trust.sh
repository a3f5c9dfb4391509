#!/usr/bin/env bash
# Trust at the site boundary (issue 20, docs/trust.md): signatures in cosign's exact key-based
# layout (tests/fixtures/cosign_sign.py: the .sig tag, simple-signing payload, base64 annotation;
# ECDSA P-256, RSA and Ed25519 keys) checked by `trust:` policies. Pulls in an enforcing policy
# are denied (403 DENIED, naming the policy and what is missing) until an accepted signature of
# the manifest, or of an index that holds it, is there; a signature by the wrong key, over
# another digest, or with a tampered payload is refused with the reason named; `warn` serves and
# logs; push-then-sign releases; gc keeps signatures while their subject lives; `berth verify`
# prints who signed and exits non-zero when the policy is not met; bundle import refuses a
# bundle whose signature was removed and writes nothing; a mirror fill from a real
# docker-registry brings the upstream's signatures and drops unsigned content; containerd (ctr)
# and podman pull through the enforcing mirror: signed arrives, unsigned is denied.
#
# containerd and podman fall back to public registries, so the whole script runs in a network
# namespace of its own with only the loopback up.
if [ -z "${TRUST_NETNS:-}" ]; then
    exec unshare --net --mount env TRUST_NETNS=1 bash "$0" "$@"
fi
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"
ip link set lo up
t_need_tools jq curl skopeo docker-registry python3

SIGN="python3 $T_ROOT/tests/fixtures/cosign_sign.py"
MK="python3 $T_ROOT/tests/fixtures/mkimage.py"
SK=(skopeo --insecure-policy)
NOTLS=(--src-tls-verify=false --dest-tls-verify=false)
W=$T_TMP/work
mkdir -p "$W"
for k in good other rsa ed; do
    case $k in rsa) ty=rsa ;; ed) ty=ed25519 ;; *) ty=ecdsa ;; esac
    $SIGN keygen "$W/$k" --type $ty || t_fail "keygen $k"
done

# ---- the upstream (a real docker-registry) with a signed and an unsigned image ----------------
registry_start "$T_TMP/reg"
RG=127.0.0.1:$REG_PORT
D_UPS=$($MK image "$W/ups" --layers 1 --seed 41 --tag v1 --size 3000)
D_UPU=$($MK image "$W/upu" --layers 1 --seed 42 --tag v1 --size 3000)
"${SK[@]}" copy -q "${NOTLS[@]}" "oci:$W/ups:v1" "docker://$RG/library/signed:v1" || t_fail "seed upstream signed"
"${SK[@]}" copy -q "${NOTLS[@]}" "oci:$W/upu:v1" "docker://$RG/library/unsigned:v1" || t_fail "seed upstream unsigned"
$SIGN sign "$REG_URL" library/signed "$D_UPS" --key "$W/good/cosign.key" \
    --reference docker.io/library/signed >/dev/null || t_fail "sign upstream image"

mkdir -p "$T_TMP/berth"
CFG=$T_TMP/berth/config.yml
DP=$(t_port)
# a notifications endpoint (tests/fixtures/receiver.py records what it acknowledges): denials are
# reported as events
RXP=$(t_port)
echo ok >"$W/rx.mode"
python3 "$T_ROOT/tests/fixtures/receiver.py" "$RXP" "$W/rx.events" "$W/rx.mode" 2>/dev/null &
T_PIDS+=("$!")
cat >"$CFG" <<YML
version: 0.1
http:
  debug:
    addr: 127.0.0.1:$DP
    prometheus: {enabled: true, path: /metrics}
storage:
  delete:
    enabled: true
notifications:
  endpoints:
    - {name: rx, url: "http://127.0.0.1:$RXP/events", backoff: 100ms}
mirrors:
  docker.io:
    urls: [$REG_URL]
    repositories: ["library/*"]
trust:
  keys:
    release: $W/good/cosign.pub
    rsa: $W/rsa/cosign.pub
    ed: $W/ed/cosign.pub
  policies:
    - name: apps
      repositories: ["apps/*"]
      mode: enforce
      keys: [release]
    - name: soft
      repositories: ["soft/*"]
      mode: warn
      keys: [release]
    - name: rsa-ed
      repositories: ["multi/*"]
      keys: [rsa, ed]
    - name: hub
      repositories: ["docker.io/library/*"]
      keys: [release]
YML
if ! berth_start "$T_TMP/berth"; then
    t_fail "berth starts with a trust: config"
    t_finish
fi
B=127.0.0.1:$BERTH_PORT
bcfg() { sed "s|^storage:|storage:\n  filesystem:\n    rootdirectory: $T_TMP/berth/data|" "$CFG"; }
bcfg >"$W/cli.yml"

# get REPO REF: prints "<status> <OCI error code> <message>" of a manifest GET
get() {
    curl -s -o "$W/get.out" -w '%{http_code}' -H "$PL_ACCEPT" "$BERTH_URL/v2/$1/manifests/$2" >"$W/get.code"
    printf '%s %s %s' "$(cat "$W/get.code")" "$(jq -r '.errors[0].code // ""' "$W/get.out" 2>/dev/null)" \
        "$(jq -r '.errors[0].message // ""' "$W/get.out" 2>/dev/null)"
}
status_of() { get "$1" "$2" | cut -d' ' -f1; }
# denied_with REPO REF TEXT: 403 DENIED whose message holds TEXT
denied_with() {
    local r
    r=$(get "$1" "$2")
    case $r in "403 DENIED "*"$3"*) return 0 ;; esac
    echo "got: $r"
    return 1
}
push() { # push REPO TAG DIR LABEL: a fresh image; prints its digest
    mkdir -p "$3"
    pl_rand_blob "$3/l1" 2000 4000
    pl_make_config "$3/c1" "$4"
    pl_push_image "$BERTH_URL" "$1" "$2" "$3" "$3/c1" "$3/l1"
}

printf 'version: 0.1\nhttp: {addr: "127.0.0.1:%s"}\ntrust:\n  keys: {k: %s}\n  policies:\n    - {name: p, repositories: ["a/*"], keys: [k]}\n' \
    "$(t_port)" "$CFG" >"$W/badkey.yml"
timeout 5 "$BERTH" serve -c "$W/badkey.yml" >"$W/badkey.out" 2>&1
t_eq "a trust key that is not a PEM public key stops berth at start (exit 1)" 1 "$?"
t_check "and says which key" grep -q "trust key k: .* is not a PEM public key" "$W/badkey.out"

# config mistakes are refused by name, never silently ignored
badcfg() { # badcfg NAME POLICY-LINE EXPECTED
    printf 'version: 0.1\ntrust:\n  keys: {release: %s}\n  policies:\n    - %s\n' "$W/good/cosign.pub" "$2" >"$W/bad-$1.yml"
    "$BERTH" verify apps/x:v1 -c "$W/bad-$1.yml" >"$W/bad-$1.out" 2>&1
    t_eq "config: $1 is refused by name (exit 2)" "2 1" "$? $(grep -cF "$3" "$W/bad-$1.out")"
}
badcfg "a key no trust.keys has" '{name: p, repositories: ["a/*"], keys: [nokey]}' "'nokey' is not in trust.keys"
badcfg "a mode other than enforce or warn" '{name: p, repositories: ["a/*"], keys: [release], mode: audit}' "'audit' is not enforce or warn"
badcfg "a policy without repositories" '{name: p, keys: [release]}' "repositories: at least one pattern"
badcfg "an unknown policy key" '{name: p, repositories: ["a/*"], keys: [release], sign: yes}' "trust.policies[0].sign: unknown"

# ---- 1. enforce: unsigned is pushed but not served ----------------------------------------
D1=$(push apps/img v1 "$W/i1" img1)
t_check "an unsigned push to a repository in scope is accepted" test -n "$D1"
t_check "GET of the unsigned manifest: 403 DENIED naming policy 'apps' and the missing signature" \
    denied_with apps/img v1 "trust policy 'apps'"
t_check "the denial says no signature was found" denied_with apps/img v1 "has no signature"
t_eq "HEAD is denied too" 403 "$(curl -s -o /dev/null -w '%{http_code}' -I -H "$PL_ACCEPT" "$BERTH_URL/v2/apps/img/manifests/v1")"
t_eq "by digest as well" 403 "$(status_of apps/img "$D1")"
"$BERTH" verify apps/img:v1 -c "$W/cli.yml" >"$W/v1.out" 2>&1
t_eq "berth verify of the unsigned image exits 1" 1 "$?"
t_check "berth verify says NOT MET" grep -q "policy 'apps' (enforce): NOT MET" "$W/v1.out"
t_eq "a repository no policy covers is served as before" 200 "$(status_of other/x v1 >/dev/null; D=$(push other/x v1 "$W/o1" o1); status_of other/x v1)"

# an image cannot pass for a signature: a subject field, or one signature-typed layer beside its
# filesystem layers, does not exempt it from the policy
jq -c --arg d "$D1" --argjson n "$(stat -c %s "$W/i1/manifest.json")" \
    '. + {subject: {mediaType: .mediaType, digest: $d, size: $n}}' "$W/i1/manifest.json" >"$W/smug1.json"
pl_push_manifest "$BERTH_URL" apps/img smug1 "$W/smug1.json" || t_fail "push an image with a subject field"
t_check "an unsigned image with a subject field is still denied" denied_with apps/img smug1 "has no signature"
jq -c '.layers += [.config + {mediaType: "application/vnd.dev.cosign.simplesigning.v1+json"}]' \
    "$W/i1/manifest.json" >"$W/smug2.json"
pl_push_manifest "$BERTH_URL" apps/img smug2 "$W/smug2.json" || t_fail "push an image with a signature-typed layer"
t_check "an unsigned image with an extra simple-signing layer is still denied" denied_with apps/img smug2 "trust policy 'apps'"

# ---- 2. signatures that must be refused, each with its reason ------------------------------
$SIGN sign "$BERTH_URL" apps/img "$D1" --key "$W/other/cosign.key" >/dev/null
t_check "signed by another key: denied, 'does not verify with key 'release''" \
    denied_with apps/img v1 "does not verify with key 'release'"
$SIGN sign "$BERTH_URL" apps/img "$D1" --key "$W/good/cosign.key" --claim "$D_UPS" >/dev/null
t_check "a valid signature over another digest: denied, naming the digest it signs" \
    denied_with apps/img v1 "signed for another digest: the payload names $D_UPS"
$SIGN sign "$BERTH_URL" apps/img "$D1" --key "$W/good/cosign.key" --tamper >/dev/null
t_check "a tampered payload: denied, the signature does not cover it" \
    denied_with apps/img v1 "does not verify with key 'release'"
"$BERTH" verify apps/img:v1 -c "$W/cli.yml" >"$W/v2.out" 2>&1
t_eq "berth verify with only a tampered signature exits 1" 1 "$?"
t_check "berth verify lists the refused cosign signature" grep -q "cosign signature (tag sha256-${D1#sha256:}.sig): refused" "$W/v2.out"

# ---- 3. the right signature releases it (push, then sign) ----------------------------------
$SIGN sign "$BERTH_URL" apps/img "$D1" --key "$W/good/cosign.key" --reference "$B/apps/img" >/dev/null
t_eq "signed with the policy's key: served (push-then-sign releases)" 200 "$(status_of apps/img v1)"
t_eq "the served bytes are the pushed manifest" "$D1" "sha256:$(t_sha256 "$W/get.out")"
t_eq "the signature itself is served (signatures travel with their subject)" 200 \
    "$(status_of apps/img "sha256-${D1#sha256:}.sig")"
"$BERTH" verify apps/img:v1 -c "$W/cli.yml" >"$W/v3.out" 2>&1
t_eq "berth verify of the signed image exits 0" 0 "$?"
t_check "berth verify names the key and the signature" grep -q "policy 'apps' (enforce): accepted: signed by key 'release' (cosign signature, tag sha256-" "$W/v3.out"
"$BERTH" verify other/x:v1 -c "$W/cli.yml" >"$W/v4.out" 2>&1
t_eq "berth verify outside every policy: exit 0, says so" "0 1" "$? $(grep -c 'no trust policy covers other/x' "$W/v4.out")"
for i in 1 2 3 4 5; do curl -s -o /dev/null -H "$PL_ACCEPT" "$BERTH_URL/v2/apps/img/manifests/v1"; done
t_eq "warm pulls stay served" 200 "$(status_of apps/img v1)"

# ---- 4. warn serves and logs -------------------------------------------------------------
push soft/img v1 "$W/s1" soft1 >/dev/null
t_eq "warn policy: unsigned is served" 200 "$(status_of soft/img v1)"
t_check "warn policy: the log names the policy" grep -q 'trust: serving content its policy does not accept (mode warn).*policy="soft"' "$T_TMP/berth/berth.log"

# ---- 5. RSA and Ed25519 keys (as cosign writes them) ------------------------------------------
DR=$(push multi/rsa v1 "$W/m1" m1)
$SIGN sign "$BERTH_URL" multi/rsa "$DR" --key "$W/rsa/cosign.key" >/dev/null
t_eq "RSA (PKCS#1 v1.5, SHA-256) signature accepted" 200 "$(status_of multi/rsa v1)"
DE=$(push multi/ed v1 "$W/m2" m2)
$SIGN sign "$BERTH_URL" multi/ed "$DE" --key "$W/ed/cosign.key" >/dev/null
t_eq "Ed25519 signature accepted" 200 "$(status_of multi/ed v1)"
DX=$(push multi/ec v1 "$W/m3" m3)
$SIGN sign "$BERTH_URL" multi/ec "$DX" --key "$W/good/cosign.key" >/dev/null
t_check "an ECDSA key that this policy does not name: denied" denied_with multi/ec v1 "trust policy 'rsa-ed'"

# ---- 6. index-held signatures ------------------------------------------------------------
D_IDX=$($MK index "$W/idx" --arches amd64,arm64 --seed 31 --tag multi)
D_ARM=$(jq -r '.manifests[] | select(.platform.architecture=="arm64") | .digest' "$W/idx/blobs/sha256/${D_IDX#sha256:}")
t_check "skopeo copy --all of an index into apps/idx (pushes are not gated)" \
    "${SK[@]}" copy -q --all "${NOTLS[@]}" "oci:$W/idx:multi" "docker://$B/apps/idx:v1"
t_check "a child of an unsigned index is denied" denied_with apps/idx "$D_ARM" "no signature"
$SIGN sign "$BERTH_URL" apps/idx "$D_IDX" --key "$W/good/cosign.key" >/dev/null
t_eq "the index's signature releases a child pulled first, by digest" 200 "$(status_of apps/idx "$D_ARM")"
t_eq "and the index" 200 "$(status_of apps/idx v1)"
"$BERTH" verify "apps/idx@$D_ARM" -c "$W/cli.yml" >"$W/v5.out" 2>&1
t_eq "berth verify of the child names the index" "0 1" "$? $(grep -c "via index $D_IDX" "$W/v5.out")"

# ---- 7. gc keeps signatures while their subject lives ------------------------------------
DR2=$(push apps/ref v1 "$W/r1" r1)
$SIGN sign "$BERTH_URL" apps/ref "$DR2" --key "$W/good/cosign.key" --referrer --subject-file "$W/r1/manifest.json" >/dev/null
t_eq "a cosign signature found as a referrer (OCI 1.1 mode) is accepted" 200 "$(status_of apps/ref v1)"
"$BERTH" gc --grace 0s -c "$W/cli.yml" >"$W/gc.out" 2>&1
t_check "berth gc --grace 0s ran" grep -q . "$W/gc.out"
"$BERTH" verify apps/ref:v1 -c "$W/cli.yml" >"$W/v6.out" 2>&1
t_eq "after gc the referrer signature is still there (berth verify: 0)" 0 "$?"
"$BERTH" verify apps/img:v1 -c "$W/cli.yml" >"$W/v7.out" 2>&1
t_eq "after gc the .sig tag signature is still there (berth verify: 0)" 0 "$?"

# ---- 8. bundles: a signed application imports; without its signature it is refused --------
"$BERTH" bundle create -c "$W/cli.yml" -o "$W/b.tar" apps/ref:v1 >"$W/bc.out" 2>&1
t_check "bundle create of the signed apps/ref:v1 (its referrer signature rides along)" test -s "$W/b.tar"
mkdir -p "$W/bx" && tar -xf "$W/b.tar" -C "$W/bx"
jq '.manifests |= map(select(.annotations["io.berth.bundle.repository"] == null))' "$W/bx/index.json" >"$W/bx/i2" &&
    mv "$W/bx/i2" "$W/bx/index.json"
tar -cf "$W/nosig.tar" -C "$W/bx" .
t_check "the same bundle without its signature entry was made" test "$(tar -xOf "$W/nosig.tar" ./index.json | jq '.manifests|length')" -lt "$(tar -xOf "$W/b.tar" index.json | jq '.manifests|length')"
tcfg() { sed -e "s|^storage:|storage:\n  filesystem:\n    rootdirectory: $1|" "$CFG" >"$2"; }
tcfg "$W/t2" "$W/t2.yml"
tcfg "$W/t3" "$W/t3.yml"
"$BERTH" bundle verify "$W/b.tar" -c "$W/t2.yml" >"$W/bv1.out" 2>&1
t_eq "berth bundle verify of the signed bundle: exit 0, accepted by key 'release'" "0 1" "$? $(grep -c "policy 'apps': accepted: signed by key 'release'" "$W/bv1.out")"
"$BERTH" bundle verify "$W/nosig.tar" -c "$W/t3.yml" >"$W/bv2.out" 2>&1
t_eq "berth bundle verify of the stripped bundle: exit 1, NOT MET" "1 1" "$? $(grep -c "apps/ref:v1.*NOT MET.*has no signature" "$W/bv2.out")"
t_check "bundle import of the signed bundle into an enforcing store" "$BERTH" bundle import "$W/b.tar" -c "$W/t2.yml"
"$BERTH" verify apps/ref:v1 -c "$W/t2.yml" >/dev/null 2>&1
t_eq "the imported image verifies there" 0 "$?"
"$BERTH" bundle import "$W/nosig.tar" -c "$W/t3.yml" >"$W/bi.out" 2>&1
t_eq "bundle import of the bundle without its signature: refused (exit 1)" 1 "$?"
t_check "the refusal names the policy and the missing signature" grep -q "trust policy 'apps' refuses apps/ref:v1.*has no signature" "$W/bi.out"
t_eq "nothing was written: no blob in the target store" 0 "$(find "$W/t3" -path '*/blobs/*' -type f 2>/dev/null | wc -l)"
"$BERTH" verify apps/ref:v1 -c "$W/t3.yml" >/dev/null 2>&1
t_eq "nothing was written: the manifest is unknown there (berth verify: 2)" 2 "$?"

# cosign's classic .sig tag rides along in a bundle too, and recreates its tag on import
"$BERTH" bundle create -c "$W/cli.yml" -o "$W/c.tar" multi/rsa:v1 >"$W/cc.out" 2>&1
t_eq "bundle create of multi/rsa:v1 carries its tag sha256-<hex>.sig" 1 \
    "$(tar -xOf "$W/c.tar" index.json | jq --arg t "multi/rsa:sha256-${DR#sha256:}.sig" '[.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t)] | length')"
t_check "bundle import of it into an enforcing store" "$BERTH" bundle import "$W/c.tar" -c "$W/t2.yml"
"$BERTH" verify multi/rsa:v1 -c "$W/t2.yml" >"$W/cv.out" 2>&1
t_eq "the imported image verifies there by its .sig tag" "0 1" "$? $(grep -c "accepted: signed by key 'rsa' (cosign signature, tag sha256-" "$W/cv.out")"

# ---- 9. mirror fill from a real docker-registry ----------------------------------------
code=$(curl -s -o "$W/m1.out" -w '%{http_code}' -H "$PL_ACCEPT" "$BERTH_URL/v2/library/signed/manifests/v1?ns=docker.io")
t_eq "mirror: the upstream's signed image is served" "200 $D_UPS" "$code sha256:$(t_sha256 "$W/m1.out")"
"$BERTH" verify docker.io/library/signed:v1 -c "$W/cli.yml" >"$W/mv1.out" 2>&1
t_eq "mirror: its .sig came with it (berth verify in the mirror store: 0)" 0 "$?"
code=$(curl -s -o "$W/m2.out" -w '%{http_code}' -H "$PL_ACCEPT" "$BERTH_URL/v2/library/unsigned/manifests/v1?ns=docker.io")
t_eq "mirror: the upstream's unsigned image is denied" "403 DENIED" "$code $(jq -r '.errors[0].code' "$W/m2.out")"
t_check "mirror: the denial names policy 'hub' and the missing signature" grep -q "trust policy 'hub' denies docker.io/library/unsigned.*has no signature" "$W/m2.out"
"$BERTH" verify docker.io/library/unsigned:v1 -c "$W/cli.yml" >/dev/null 2>&1
t_eq "mirror: the unsigned manifest was not kept (berth verify: unknown, 2)" 2 "$?"

curl -s "http://127.0.0.1:$DP/metrics" >"$W/metrics.out"
t_check "metrics: the mirror fill's denial is counted (berth_trust_denials_total, where fill)" \
    grep -qE '^berth_trust_denials_total\{policy="hub",where="fill"\} [1-9]' "$W/metrics.out"
t_check "metrics: pull denials are counted by policy (where pull)" \
    grep -qE '^berth_trust_denials_total\{policy="apps",where="pull"\} [1-9]' "$W/metrics.out"
t_check "log: the denial names the policy and where" \
    grep -q 'trust: denied" policy="hub" where=fill repo=docker.io/library/unsigned' "$T_TMP/berth/berth.log"

# denials as notification events: a pull denied, a fill refused, a tag pushed unsigned (held)
for _ in $(seq 1 50); do
    grep -q '"trust.deny.fill"' "$W/rx.events" 2>/dev/null && break
    sleep 0.2
done
evs() { jq -r --arg a "$1" 'select(.event.action == $a) | .event.target.repository' "$W/rx.events" 2>/dev/null | sort -u | tr '\n' ' '; }
t_check "events: a denied pull is reported (trust.deny.pull, apps/...)" bash -c "[[ '$(evs trust.deny.pull)' == *apps/* ]]"
t_check "events: the refused fill is reported (trust.deny.fill, docker.io/library/unsigned)" \
    bash -c "[[ '$(evs trust.deny.fill)' == *docker.io/library/unsigned* ]]"
t_check "events: a tag pushed unsigned into an enforcing scope is reported as held (trust.hold)" \
    bash -c "[[ '$(evs trust.hold)' == *apps/* ]]"
t_eq "events: a signed pull reports no denial (docker.io/library/signed)" "" \
    "$(jq -r 'select(.event.action | startswith("trust.")) | .event.target.repository' "$W/rx.events" | grep -x docker.io/library/signed)"

# ---- 10. containerd and podman pull through the enforcing mirror ---------------------------
if command -v containerd >/dev/null && command -v ctr >/dev/null; then
    C=$T_TMP/ctd
    mkdir -p "$C/hosts/docker.io"
    printf 'server = "https://registry-1.docker.io"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$B" >"$C/hosts/docker.io/hosts.toml"
    containerd_start "$C"
    t_check "ctr pulls the signed image through berth" "${CTR[@]}" images pull --hosts-dir "$C/hosts" \
        --snapshotter native docker.io/library/signed:v1
    "${CTR[@]}" images pull --hosts-dir "$C/hosts" --snapshotter native docker.io/library/unsigned:v1 >"$C/deny.out" 2>&1
    t_eq "ctr pull of the unsigned image fails" 1 "$?"
    t_check "ctr's error shows berth's denial (403 Forbidden)" grep -qE "403" "$C/deny.out"
    grep -E "403|denied|DENIED" "$C/deny.out" | tail -2 | sed 's/^/# ctr: /' 
    kill "$CTD_PID" 2>/dev/null
    wait "$CTD_PID" 2>/dev/null
else
    t_skip "containerd pulls (containerd not installed)"
fi
if command -v podman >/dev/null; then
    podman_cmd "$T_TMP/pod"
    "$BERTH" client-config --for podman --endpoint "$BERTH_URL" --registries docker.io >"$T_TMP/pod/registries.conf"
    export CONTAINERS_REGISTRIES_CONF=$T_TMP/pod/registries.conf
    t_check "podman pulls the signed image through berth" "${PODMAN[@]}" pull -q docker.io/library/signed:v1
    "${PODMAN[@]}" pull -q docker.io/library/unsigned:v1 >"$T_TMP/pod/deny.out" 2>&1
    t_eq "podman pull of the unsigned image fails" 125 "$?"
    t_check "podman's error shows the denial" grep -qiE "denied|403" "$T_TMP/pod/deny.out"
    tail -2 "$T_TMP/pod/deny.out" | sed 's/^/# podman: /' 
    unset CONTAINERS_REGISTRIES_CONF
else
    t_skip "podman pulls (podman not installed)"
fi

t_finish
