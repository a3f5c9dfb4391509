/*
 * trust/sigstore: Sigstore bundles (protobuf-specs Bundle v0.3, JSON) as cosign v3 stores them:
 * a referrer of the subject whose layer is application/vnd.dev.sigstore.bundle.v0.3+json.
 * Verified offline against the policy's public keys only.
 *
 * Invariants:
 * - Only key-based bundles are accepted: verificationMaterial.publicKey. A bundle whose material
 *   is a certificate or chain (keyless, Fulcio) is refused as unsupported: no Fulcio root is
 *   configured and nothing is fetched.
 * - Transparency-log entries and RFC 3161 timestamps (tlogEntries, timestampVerificationData) are
 *   ignored: they are neither required nor checked (no Rekor key, no network). The signature and
 *   what it names are the whole verdict.
 * - dsseEnvelope: payloadType application/vnd.in-toto+json; one of its signatures must verify
 *   over DSSE's PAE with one of the keys, and the in-toto statement's subject must name the
 *   manifest (digest.sha256). messageSignature: the message is the subject manifest itself: its
 *   messageDigest must be the manifest's digest and the signature must verify over that digest
 *   (ECDSA, RSA PKCS#1 v1.5; Ed25519 signs messages, not digests, so it cannot be checked here).
 * - The signature is checked before the statement is read, so a changed payload reads as a
 *   signature that no key verifies.
 */
#include "trust/verify.h"
#include "util/err.h"
#include "util/log.h"
#include "util/tlslazy.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <nettle/base64.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUNDLE_MT "application/vnd.dev.sigstore.bundle.v0.3+json"
#define BUNDLE_MT_ALT "application/vnd.dev.sigstore.bundle+json;version=0.3"
#define INTOTO_TYPE "application/vnd.in-toto+json"
#define BUNDLE_MAX (4u << 20)

static int fail(trust_result *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(trust_result *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->reason, sizeof res->reason, fmt, ap);
    va_end(ap);
    return 0;
}

/* standard base64 (protobuf JSON's bytes), padded or not: a malloc'd buffer, or NULL */
static unsigned char *b64_decode(const char *in, size_t *outlen)
{
    size_t n = strlen(in);
    char *padded = malloc(n + 4);
    if (!padded) return NULL;
    memcpy(padded, in, n);
    while (n % 4)
        padded[n++] = '=';
    size_t dl = BASE64_DECODE_LENGTH(n);
    unsigned char *out = malloc(dl + 1);
    struct base64_decode_ctx ctx;
    base64_decode_init(&ctx);
    bool ok = out && base64_decode_update(&ctx, &dl, out, n, padded) && base64_decode_final(&ctx);
    free(padded);
    if (!ok) {
        free(out);
        return NULL;
    }
    *outlen = dl;
    return out;
}

/* The signature algorithm cosign uses with a key: ECDSA with the curve's hash, RSA PKCS#1 v1.5
 * SHA-256, Ed25519. For a digest signature (hash_ok false for Ed25519) the hash must match. */
static gnutls_sign_algorithm_t key_sign_algo(gnutls_pubkey_t pub, gnutls_digest_algorithm_t *hash)
{
    unsigned bits = 0;
    int pk = gnutls_pubkey_get_pk_algorithm(pub, &bits);
    switch (pk) {
    case GNUTLS_PK_ECDSA:
        *hash = bits > 384 ? GNUTLS_DIG_SHA512 : bits > 256 ? GNUTLS_DIG_SHA384 : GNUTLS_DIG_SHA256;
        return gnutls_pk_to_sign(GNUTLS_PK_ECDSA, *hash);
    case GNUTLS_PK_RSA:
        *hash = GNUTLS_DIG_SHA256;
        return GNUTLS_SIGN_RSA_SHA256;
    case GNUTLS_PK_EDDSA_ED25519:
        *hash = GNUTLS_DIG_UNKNOWN;
        return GNUTLS_SIGN_EDDSA_ED25519;
    default:
        *hash = GNUTLS_DIG_UNKNOWN;
        return GNUTLS_SIGN_UNKNOWN;
    }
}

/* DSSE's pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body */
static unsigned char *pae(const char *type, const unsigned char *body, size_t blen, size_t *outlen)
{
    size_t tl = strlen(type), cap = tl + blen + 64;
    unsigned char *out = malloc(cap);
    if (!out) return NULL;
    int h = snprintf((char *)out, cap, "DSSEv1 %zu %s %zu ", tl, type, blen);
    memcpy(out + h, body, blen);
    *outlen = (size_t)h + blen;
    return out;
}

/* The in-toto statement names the subject (a subject entry whose digest.sha256 is its hex). */
static const char *statement_names(const unsigned char *p, size_t n, const char *subject, char *buf,
                                   size_t cap)
{
    json_t *st = json_loadb((const char *)p, n, 0, NULL);
    const char *why = NULL;
    const char *type = json_string_value(json_object_get(st, "_type"));
    json_t *subj = json_object_get(st, "subject");
    if (!type || strncmp(type, "https://in-toto.io/Statement/", 29) || !json_is_array(subj)) {
        why = "unsupported envelope: the DSSE payload is not an in-toto statement";
        goto out;
    }
    const char *hex = !strncmp(subject, "sha256:", 7) ? subject + 7 : NULL;
    size_t i;
    json_t *s;
    const char *named = NULL;
    json_array_foreach(subj, i, s)
    {
        const char *d = json_string_value(json_object_get(json_object_get(s, "digest"), "sha256"));
        if (d && !named) named = d;
        if (d && hex && !strcmp(d, hex)) goto out;
    }
    snprintf(buf, cap, "other digest: the statement's subject is sha256:%s, not %s",
             named ? named : "(none)", subject);
    why = buf;
out:
    json_decref(st);
    return why;
}

static int verify_dsse(const trust_sig *s, const trust_material *m, json_t *env, trust_result *res)
{
    const char *ptype = json_string_value(json_object_get(env, "payloadType"));
    const char *p64 = json_string_value(json_object_get(env, "payload"));
    json_t *sigs = json_object_get(env, "signatures");
    if (!ptype || !p64 || !json_array_size(sigs))
        return fail(res, "unsupported envelope: the DSSE envelope lacks payload or signatures");
    if (strcmp(ptype, INTOTO_TYPE))
        return fail(res, "unsupported envelope: DSSE payloadType %s", ptype);
    size_t plen = 0, elen = 0;
    unsigned char *payload = b64_decode(p64, &plen);
    if (!payload) return fail(res, "unsupported envelope: the DSSE payload is not base64");
    unsigned char *enc = pae(ptype, payload, plen, &elen);
    const char *signer = NULL;
    size_t i;
    json_t *sj;
    json_array_foreach(sigs, i, sj)
    {
        const char *sb = json_string_value(json_object_get(sj, "sig"));
        size_t sl = 0;
        unsigned char *sig = sb ? b64_decode(sb, &sl) : NULL;
        for (size_t k = 0; sig && enc && !signer && k < m->nkeys; k++) {
            if (!m->keys[k] || !m->keys[k]->pub) continue;
            gnutls_digest_algorithm_t h;
            gnutls_sign_algorithm_t a = key_sign_algo(m->keys[k]->pub, &h);
            gnutls_datum_t d = {enc, (unsigned)elen}, sd = {sig, (unsigned)sl};
            if (a != GNUTLS_SIGN_UNKNOWN &&
                gnutls_pubkey_verify_data2(m->keys[k]->pub, a, 0, &d, &sd) >= 0)
                signer = m->keys[k]->name;
        }
        free(sig);
        if (signer) break;
    }
    free(enc);
    int rc;
    char buf[400];
    const char *why;
    if (!signer) {
        rc = fail(res,
                  "wrong key or tampered payload: the DSSE signature verifies with none of the "
                  "policy's %zu key(s)",
                  m->nkeys);
    } else if ((why = statement_names(payload, plen, s->subject_digest, buf, sizeof buf))) {
        rc = fail(res, "%s", why);
    } else {
        snprintf(res->signer, sizeof res->signer, "%s", signer ? signer : "?");
        rc = 1;
    }
    free(payload);
    return rc;
}

static int verify_message(const trust_sig *s, const trust_material *m, json_t *ms,
                          trust_result *res)
{
    json_t *md = json_object_get(ms, "messageDigest");
    const char *alg = json_string_value(json_object_get(md, "algorithm"));
    const char *d64 = json_string_value(json_object_get(md, "digest"));
    const char *s64 = json_string_value(json_object_get(ms, "signature"));
    if (!alg || !d64 || !s64)
        return fail(res, "unsupported envelope: the messageSignature lacks digest or signature");
    if (strcmp(alg, "SHA2_256"))
        return fail(res,
                    "unsupported envelope: message digest algorithm %s (the manifest's "
                    "digest is SHA-256)",
                    alg);
    size_t dl = 0, sl = 0;
    unsigned char *dig = b64_decode(d64, &dl), *sig = b64_decode(s64, &sl);
    const char *signer = NULL;
    bool ed = false;
    for (size_t k = 0; dig && sig && dl == 32 && k < m->nkeys && !signer; k++) {
        if (!m->keys[k] || !m->keys[k]->pub) continue;
        gnutls_digest_algorithm_t h;
        gnutls_sign_algorithm_t a = key_sign_algo(m->keys[k]->pub, &h);
        if (a == GNUTLS_SIGN_EDDSA_ED25519) ed = true;
        if (h != GNUTLS_DIG_SHA256) continue;
        gnutls_datum_t hd = {dig, (unsigned)dl}, sd = {sig, (unsigned)sl};
        if (gnutls_pubkey_verify_hash2(m->keys[k]->pub, a, 0, &hd, &sd) >= 0)
            signer = m->keys[k]->name;
    }
    int rc;
    char hex[65];
    for (size_t i = 0; dig && dl == 32 && i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", dig[i]);
    if (!dig || !sig || dl != 32) {
        rc = fail(res, "unsupported envelope: the messageSignature's digest or signature is not "
                       "base64 of the right length");
    } else if (!signer) {
        rc = fail(res,
                  "wrong key or tampered payload: the message signature verifies with none of "
                  "the policy's %zu key(s)%s",
                  m->nkeys, ed ? " (Ed25519 keys cannot verify a digest signature)" : "");
    } else if (strncmp(s->subject_digest, "sha256:", 7) || strcmp(s->subject_digest + 7, hex)) {
        rc = fail(res, "other digest: the message signature is for sha256:%s, not %s", hex,
                  s->subject_digest);
    } else {
        snprintf(res->signer, sizeof res->signer, "%s", signer);
        rc = 1;
    }
    free(dig);
    free(sig);
    return rc;
}

static int verify_bundle(const trust_sig *s, const trust_material *m, const char *blob, size_t len,
                         trust_result *res)
{
    json_t *b = json_loadb(blob, len, 0, NULL);
    int rc;
    const char *mt = json_string_value(json_object_get(b, "mediaType"));
    json_t *vm = json_object_get(b, "verificationMaterial");
    json_t *dsse = json_object_get(b, "dsseEnvelope"),
           *msg = json_object_get(b, "messageSignature");
    if (!json_is_object(b) || !mt || (strcmp(mt, BUNDLE_MT) && strcmp(mt, BUNDLE_MT_ALT))) {
        rc = fail(res, "unsupported envelope: not a Sigstore bundle v0.3 (mediaType %s)",
                  mt ? mt : "missing");
    } else if (!json_is_object(json_object_get(vm, "publicKey"))) {
        rc = fail(res, "unsupported envelope: the bundle's verification material is a "
                       "certificate (keyless signing needs Fulcio and Rekor: only key-based "
                       "bundles are verified offline)");
    } else if (!m->nkeys) {
        rc = fail(res, "wrong key: the policy names no public keys");
    } else if (json_is_object(dsse) && !msg) {
        rc = verify_dsse(s, m, dsse, res);
    } else if (json_is_object(msg) && !dsse) {
        rc = verify_message(s, m, msg, res);
    } else {
        rc = fail(res, "unsupported envelope: the bundle holds neither one dsseEnvelope nor one "
                       "messageSignature");
    }
    json_decref(b);
    return rc;
}

int trust_verify_sigstore(const trust_sig *sig, const trust_material *m, trust_result *res)
{
    res->signer[0] = res->reason[0] = 0;
    int rc = tlslazy_load();
    if (rc < 0) return rc;
    json_t *man = json_loadb(sig->sig_manifest, sig->sig_manifest_len, 0, NULL);
    json_t *layers = json_object_get(man, "layers");
    json_t *l;
    size_t i;
    const char *dg = NULL;
    json_int_t size = 0;
    json_array_foreach(layers, i, l)
    {
        const char *lmt = json_string_value(json_object_get(l, "mediaType"));
        if (lmt && (!strcmp(lmt, BUNDLE_MT) || !strcmp(lmt, BUNDLE_MT_ALT))) {
            dg = json_string_value(json_object_get(l, "digest"));
            size = json_integer_value(json_object_get(l, "size"));
            break;
        }
    }
    char *blob = NULL;
    size_t blen = 0;
    if (!dg) {
        rc = fail(res, "unsupported envelope: the artifact has no " BUNDLE_MT " layer");
    } else if (size <= 0 || size > BUNDLE_MAX) {
        rc = fail(res, "unsupported envelope: the bundle's size is out of bounds");
    } else if ((rc = sig->read_blob(sig->read_arg, dg, (size_t)size, &blob, &blen)) >= 0) {
        rc = verify_bundle(sig, m, blob, blen, res);
    }
    free(blob);
    json_decref(man);
    return rc;
}
