#!/usr/bin/env bash
# Trust, Notary Project and Sigstore bundles end to end (issue 20, docs/trust.md,
# docs/trust-formats.md): images pushed to berth and signed as notation signs them (JWS and COSE
# referrers, tests/fixtures/notary_sign.py, X.509 chains made here by openssl: a root, an
# intermediate, code-signing leaves) and as cosign v3 does (a Sigstore bundle referrer,
# tests/fixtures/sigstore_sign.py), checked by a `trust:` config in the Notary trust-policy form
# (trustStores "ca:<name>", trustedIdentities, signatureVerification {level, override}). Through
# the HTTP API: signed content is served; a wrong CA, an expired leaf, an untrusted identity,
# another digest and a tampered payload are each denied (403 DENIED) with the reason named;
# `berth verify` names the signer. Attestations: a policy that requires a scanner's report (a
# referrer of a given artifactType, itself signed) keeps a signed image quarantined until the
# signed report is pushed. Denials are counted in /metrics (berth_trust_denials_total).
. "$(dirname "$0")/../lib.sh"
. "$T_ROOT/tests/fixtures/pushlib.sh"
t_need_tools jq curl openssl python3

# the fixtures need python3-cryptography and python3-cbor2 (scripts/deps.sh): Debian's python3
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
NS="$PY $T_ROOT/tests/fixtures/notary_sign.py"
SS="$PY $T_ROOT/tests/fixtures/sigstore_sign.py"
CS="$PY $T_ROOT/tests/fixtures/cosign_sign.py"
W=$T_TMP/work
P=$W/pki
mkdir -p "$P"

# ---- a PKI made by openssl: acme root -> intermediate -> leaves; an evil root of the same name --
(
    cd "$P" || exit 1
    printf '[req]\ndistinguished_name=dn\n[dn]\n' >req.cnf
    printf 'basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' >ca.ext
    printf 'basicConstraints=CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' >leaf.ext
    EC=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    DN="/C=US/ST=WA/L=Seattle/O=acme"
    for r in root evil; do
        openssl req -config req.cnf -x509 "${EC[@]}" -keyout $r.key -out $r.pem -days 3650 \
            -subj "$DN/CN=acme root" -addext basicConstraints=critical,CA:true \
            -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null || exit 1
    done
    openssl req -config req.cnf -new "${EC[@]}" -keyout inter.key -out inter.csr -subj "$DN/CN=acme signing CA" 2>/dev/null &&
        openssl x509 -req -in inter.csr -CA root.pem -CAkey root.key -set_serial 2 -days 3650 \
            -extfile ca.ext -out inter.pem 2>/dev/null || exit 1
    leaf() { # NAME CA KEYOPTS CN
        openssl req -config req.cnf -new $3 -keyout $1.key -out $1.csr -subj "$DN/CN=$4" 2>/dev/null &&
            openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -set_serial $((RANDOM + 10)) \
                -days 3650 -extfile leaf.ext -out $1.pem 2>/dev/null
    }
    leaf signer inter "${EC[*]}" "berth signer" || exit 1
    leaf rsasigner inter "-newkey rsa:3072 -nodes" "berth signer" || exit 1
    leaf intruder inter "${EC[*]}" "intruder" || exit 1
    leaf evilsigner evil "${EC[*]}" "berth signer" || exit 1
    # an expired leaf: openssl ca with explicit dates in the past
    mkdir -p ca && : >ca/index.txt && echo 1000 >ca/serial
    printf '[ca]\ndefault_ca=c\n[c]\ndir=ca\ndatabase=ca/index.txt\nserial=ca/serial\nnew_certs_dir=ca\ndefault_md=sha256\npolicy=p\nunique_subject=no\ncopy_extensions=none\n[p]\ncommonName=supplied\n' >ca.cnf
    openssl req -config req.cnf -new "${EC[@]}" -keyout old.key -out old.csr -subj "$DN/CN=berth signer" 2>/dev/null &&
        openssl ca -batch -config ca.cnf -cert inter.pem -keyfile inter.key -in old.csr -out old.pem \
            -preserveDN -startdate 20200101000000Z -enddate 20210101000000Z -extfile leaf.ext -notext 2>/dev/null || exit 1
) || t_fail "openssl makes the test PKI"
# (a precondition, not a check of berth)
openssl x509 -in "$P/old.pem" -noout -checkend 0 >/dev/null && t_fail "openssl made an expired leaf"
$CS keygen "$W/sk" --type ecdsa && $CS keygen "$W/scan" --type ecdsa && $CS keygen "$W/rogue" --type ecdsa ||
    t_fail "cosign-style keys"

mkdir -p "$T_TMP/berth"
DP=$(t_port)
cat >"$T_TMP/berth/config.yml" <<YML
version: 0.1
http:
  debug:
    addr: 127.0.0.1:$DP
    prometheus: {enabled: true, path: /metrics}
trust:
  keys:
    bundlekey: $W/sk/cosign.pub
    scanner: $W/scan/cosign.pub
  stores:
    acme:
      type: ca
      paths: [$P/root.pem]
  policies:
    - name: notary
      registryScopes: ["signed/*"]
      signatureVerification:
        level: strict
      trustStores: ["ca:acme"]
      trustedIdentities: ["x509.subject: C=US, ST=WA, O=acme, CN=berth signer"]
    - name: legacy
      repositories: ["legacy/*"]
      signatureVerification:
        level: strict
        override: {authenticTimestamp: log}
      trustStores: ["ca:acme"]
      trustedIdentities: ["*"]
    - name: bundles
      repositories: ["bundled/*"]
      keys: [bundlekey]
    - name: scanned
      repositories: ["scanned/*"]
      keys: [bundlekey]
      attestations:
        - artifactType: application/vnd.example.scan-report.v1+json
          keys: [scanner]
YML
berth_start "$T_TMP/berth" || {
    t_fail "berth starts with a Notary-form trust: config"
    t_finish
}
bcfg() { sed "s|^version: 0.1|version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: $T_TMP/berth/data|" "$T_TMP/berth/config.yml"; }
bcfg >"$W/cli.yml"

push() { # push REPO TAG: a fresh image; prints its digest; its manifest in $W/img-REPO-TAG
    local d=$W/img-${1//\//_}-$2
    mkdir -p "$d"
    pl_rand_blob "$d/l1" 2000 4000
    pl_make_config "$d/c1" "$1:$2"
    pl_push_image "$BERTH_URL" "$1" "$2" "$d" "$d/c1" "$d/l1"
}
push_dir() { # push_dir REPO DIR: the blobs of DIR/blobs/sha256 and DIR/manifest.json, by digest
    local f
    for f in "$2"/blobs/sha256/*; do pl_push_blob "$BERTH_URL" "$1" "$f" || return 1; done
    pl_push_manifest "$BERTH_URL" "$1" "sha256:$(t_sha256 "$2/manifest.json")" "$2/manifest.json"
}
nsign() { # nsign REPO DIGEST NAME FORMAT KEY CERTS... [-- extra args]: a Notary signature referrer
    local repo=$1 dg=$2 name=$3 fmt=$4 key=$5 mf
    shift 5
    local certs=() extra=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do certs+=(--cert "$P/$1.pem"); shift; done
    [ "${1:-}" = -- ] && shift && extra=("$@")
    mf=$W/img-${repo//\//_}-v1/manifest.json
    $NS --format "$fmt" --key "$P/$key.key" "${certs[@]}" --digest "$dg" --size "$(stat -c %s "$mf")" \
        --out "$W/sig-$name" "${extra[@]}" >/dev/null && push_dir "$repo" "$W/sig-$name"
}
get() { # get REPO REF: "<status> <code> <message>"
    curl -s -o "$W/get.out" -w '%{http_code}' -H "$PL_ACCEPT" "$BERTH_URL/v2/$1/manifests/$2" >"$W/get.code"
    printf '%s %s %s' "$(cat "$W/get.code")" "$(jq -r '.errors[0].code // ""' "$W/get.out" 2>/dev/null)" \
        "$(jq -r '.errors[0].message // ""' "$W/get.out" 2>/dev/null)"
}
denied_with() { # denied_with REPO REF TEXT
    local r
    r=$(get "$1" "$2")
    case $r in "403 DENIED "*"$3"*) return 0 ;; esac
    echo "got: $r"
    return 1
}
served() { # served REPO REF DIGEST
    local r
    r=$(get "$1" "$2")
    [ "${r%% *}" = 200 ] && [ "sha256:$(t_sha256 "$W/get.out")" = "$3" ] && return 0
    echo "got: $r"
    return 1
}
# released REPO REF DIGEST BEFORE: denied (403) before the signature was pushed (BEFORE, the
# status then), served with the right bytes after
released() {
    [ "$4" = 403 ] || {
        echo "before the signature: $4, not 403"
        return 1
    }
    served "$1" "$2" "$3"
}
status() { get "$1" "$2" | cut -d' ' -f1; }

# ---- 1. Notary JWS and COSE, good chains: served; berth verify names the signer ----------------
D1=$(push signed/jws v1)
t_check "an unsigned image in policy 'notary' is denied" denied_with signed/jws v1 "trust policy 'notary'"
S1=$(status signed/jws v1)
nsign signed/jws "$D1" jws jws signer signer inter root || t_fail "notation-style JWS signature pushed"
t_check "a JWS signature by a trusted chain and identity: denied before, served after" released signed/jws v1 "$D1" "$S1"
"$BERTH" verify signed/jws:v1 -c "$W/cli.yml" >"$W/v1.out" 2>&1
t_eq "berth verify exits 0 and names the signer and the Notary signature" "0 1" \
    "$? $(grep -c "policy 'notary' (enforce): accepted: signed by .*CN=berth signer.* (Notary signature, referrer" "$W/v1.out")"

D2=$(push signed/cose v1)
S2=$(status signed/cose v1)
nsign signed/cose "$D2" cose cose rsasigner rsasigner inter root || t_fail "notation-style COSE signature pushed"
t_check "a COSE signature (RSA-PSS leaf) by a trusted chain: denied before, served after" released signed/cose v1 "$D2" "$S2"

# ---- 2. each refusal, with its reason named in the DENIED message -----------------------------
D3=$(push signed/wrongca v1)
nsign signed/wrongca "$D3" wrongca jws evilsigner evilsigner evil
t_check "a chain to another root of the same name: denied, 'untrusted CA'" denied_with signed/wrongca v1 "untrusted CA"

D4=$(push signed/expired v1)
nsign signed/expired "$D4" expired jws old old inter root
t_check "an expired leaf: denied, 'expired certificate'" denied_with signed/expired v1 "expired certificate"

D5=$(push signed/identity v1)
nsign signed/identity "$D5" identity cose intruder intruder inter root
t_check "a trusted chain but an identity the policy does not trust: denied, 'untrusted identity'" \
    denied_with signed/identity v1 "untrusted identity"

D6=$(push signed/other v1)
nsign signed/other "$D6" other jws signer signer inter root -- --claim "$D1"
t_check "a valid signature whose payload names another manifest: denied, 'other digest'" \
    denied_with signed/other v1 "other digest"

D7=$(push signed/tamper v1)
nsign signed/tamper "$D7" tamper cose signer signer inter root -- --tamper
t_check "a payload changed after signing: denied, 'tampered payload'" denied_with signed/tamper v1 "tampered payload"
"$BERTH" verify signed/tamper:v1 -c "$W/cli.yml" >"$W/v7.out" 2>&1
t_eq "berth verify of the tampered one exits 1 and lists the refused Notary signature" "1 1" \
    "$? $(grep -c "Notary signature (referrer sha256:.*): refused: .*tampered payload" "$W/v7.out")"

# signatureVerification override (the Notary form): authenticTimestamp logged, not enforced
D8=$(push legacy/app v1)
S8=$(status legacy/app v1)
nsign legacy/app "$D8" legacy jws old old inter root
t_check "with override authenticTimestamp: log, the expired leaf's signature releases the image" released legacy/app v1 "$D8" "$S8"
t_check "and the expiry is logged" grep -q "expired certificate.*logged only" "$T_TMP/berth/berth.log"

# ---- 3. a cosign v3 Sigstore bundle referrer -----------------------------------------------
D9=$(push bundled/app v1)
MF9=$W/img-bundled_app-v1/manifest.json
$SS --key "$W/rogue/cosign.key" --digest "$D9" --size "$(stat -c %s "$MF9")" --out "$W/sb-rogue" >/dev/null &&
    push_dir bundled/app "$W/sb-rogue" || t_fail "a Sigstore bundle by another key pushed"
t_check "a Sigstore bundle by a key the policy does not name: denied, 'wrong key'" denied_with bundled/app v1 "wrong key"
S9=$(status bundled/app v1)
$SS --key "$W/sk/cosign.key" --digest "$D9" --size "$(stat -c %s "$MF9")" --out "$W/sb" >/dev/null &&
    push_dir bundled/app "$W/sb" || t_fail "a Sigstore bundle pushed"
t_check "a Sigstore bundle (DSSE, in-toto statement) by the policy's key: denied before, served after" released bundled/app v1 "$D9" "$S9"
"$BERTH" verify bundled/app:v1 -c "$W/cli.yml" >"$W/v9.out" 2>&1
t_eq "berth verify names the key and the Sigstore bundle" "0 1" \
    "$? $(grep -c "policy 'bundles' (enforce): accepted: signed by bundlekey (Sigstore bundle signature" "$W/v9.out")"

# ---- 4. attestations: quarantined until a scanner pushes a signed report ------------------------
DA=$(push scanned/app v1)
MFA=$W/img-scanned_app-v1/manifest.json
$SS --key "$W/sk/cosign.key" --digest "$DA" --size "$(stat -c %s "$MFA")" --out "$W/sa" >/dev/null &&
    push_dir scanned/app "$W/sa" || t_fail "the image's Sigstore bundle pushed"
t_check "signed, but without the scanner's report: denied, naming the missing attestation" \
    denied_with scanned/app v1 "no attestation of type application/vnd.example.scan-report.v1+json"
report() { # report NAME: a scan report referrer of scanned/app v1; prints its digest
    local d=$W/rep-$1
    mkdir -p "$d"
    printf '{"scanner":"example","result":"%s"}' "$1" >"$d/report.json"
    printf '{}' >"$d/empty.json"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.scan-report.v1+json","config":%s,"layers":[%s],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%d}}' \
        "$(pl_desc application/vnd.oci.empty.v1+json "$d/empty.json")" "$(pl_desc application/json "$d/report.json")" \
        "$DA" "$(stat -c %s "$MFA")" >"$d/manifest.json"
    pl_push_blob "$BERTH_URL" scanned/app "$d/report.json" && pl_push_blob "$BERTH_URL" scanned/app "$d/empty.json" &&
        pl_push_manifest "$BERTH_URL" scanned/app "sha256:$(t_sha256 "$d/manifest.json")" "$d/manifest.json" &&
        echo "sha256:$(t_sha256 "$d/manifest.json")"
}
R1=$(report unsigned)
t_check "an unsigned report: still denied, the report is not accepted" denied_with scanned/app v1 "attestation application/vnd.example.scan-report.v1+json"
$CS sign "$BERTH_URL" scanned/app "$R1" --key "$W/rogue/cosign.key" >/dev/null
t_check "a report signed by a key other than the scanner's: still denied" denied_with scanned/app v1 "does not verify with key 'scanner'"
SA=$(status scanned/app v1)
SR1=$(status scanned/app "$R1")
R2=$(report clean)
$CS sign "$BERTH_URL" scanned/app "$R2" --key "$W/scan/cosign.key" >/dev/null || t_fail "the scanner signs its report"
t_check "the scanner's signed report releases the image" released scanned/app v1 "$DA" "$SA"
t_check "a report is served only when its own signature is accepted (the rogue-signed one: 403)" \
    released scanned/app "$R2" "$R2" "$SR1"
"$BERTH" verify scanned/app:v1 -c "$W/cli.yml" >"$W/va.out" 2>&1
t_eq "berth verify names the attestation and who signed it" "0 1" \
    "$? $(grep -c "accepted: .*attestation application/vnd.example.scan-report.v1+json by key 'scanner'" "$W/va.out")"

# ---- config mistakes in the new fields are refused by name ----------------------------------
badcfg() { # badcfg NAME POLICY-LINE EXPECTED
    printf 'version: 0.1\ntrust:\n  keys: {k: %s}\n  stores: {acme: {type: ca, paths: [%s]}}\n  policies:\n    - %s\n' \
        "$W/sk/cosign.pub" "$P/root.pem" "$2" >"$W/bad-$1.yml"
    "$BERTH" verify signed/x:v1 -c "$W/bad-$1.yml" >"$W/bad-$1.out" 2>&1
    t_eq "config: $1 is refused by name (exit 2)" "2 1" "$? $(grep -cF "$3" "$W/bad-$1.out")"
}
badcfg "an override of an unknown check" \
    '{name: p, registryScopes: ["a/*"], trustStores: ["ca:acme"], signatureVerification: {level: strict, override: {integrity: log}}}' \
    "override.integrity"
badcfg "an override of a skip level" \
    '{name: p, registryScopes: ["a/*"], trustStores: ["ca:acme"], signatureVerification: {level: skip, override: {expiry: log}}}' \
    "a skip level cannot be overridden"
badcfg "an attestation without artifactType" \
    '{name: p, repositories: ["a/*"], keys: [k], attestations: [{keys: [k]}]}' "attestations[0]: names no artifactType"
badcfg "an attestation naming an unknown key" \
    '{name: p, repositories: ["a/*"], keys: [k], attestations: [{artifactType: x/y, keys: [nokey]}]}' "'nokey' is not in trust.keys"

# ---- 5. denials are counted ------------------------------------------------------------------
curl -s "http://127.0.0.1:$DP/metrics" >"$W/metrics.out"
t_check "berth_trust_denials_total counts pull denials by policy" \
    grep -qE '^berth_trust_denials_total\{policy="notary",where="pull"\} [1-9]' "$W/metrics.out"
t_check "and the attestation policy's denials" \
    grep -qE '^berth_trust_denials_total\{policy="scanned",where="pull"\} [1-9]' "$W/metrics.out"
t_check "tags pushed unsigned in scope are counted as held at the push (where push)" \
    grep -qE '^berth_trust_denials_total\{policy="notary",where="push"\} [1-9]' "$W/metrics.out"
t_check "and logged with the tag" grep -q 'trust: pushed, held until its policy accepts it" policy="notary" where=push repo=signed/jws tag=v1' "$T_TMP/berth/berth.log"

t_finish
