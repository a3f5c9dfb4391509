/*
 * trust/cosign: cosign's classic key-based signatures, and the public keys they are checked
 * against.
 *
 * A cosign signature of manifest D is an OCI image manifest (tagged sha256-<hex of D>.sig in D's
 * repository) whose layers each carry one signature: the layer (media type
 * application/vnd.dev.cosign.simplesigning.v1+json) is the "simple signing" payload
 *   {"critical":{"identity":{"docker-reference":...},"image":{"docker-manifest-digest":D},
 *    "type":"cosign container image signature"},"optional":...}
 * and its annotation dev.cosignproject.cosign/signature is the base64 signature over the
 * payload's exact bytes: ECDSA (ASN.1 DER) with SHA-256, RSA PKCS#1 v1.5 with SHA-256, or pure
 * Ed25519, by the key's type. Invariants: a layer is accepted only when its signature verifies
 * under one configured key AND the signed payload names the subject's digest (a valid signature
 * of another image is refused, naming the digest it signs); the payload is read only through the
 * caller's blob callback, which checks it against its digest; nothing here touches the network or
 * global state. GnuTLS does the cryptography and the key parsing (tlslazy loads it on first use).
 */
#include "trust/verify.h"
#include "util/err.h"
#include "util/log.h"
#include "util/tlslazy.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <nettle/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MT_SIMPLESIGNING "application/vnd.dev.cosign.simplesigning.v1+json"
#define ANN_SIGNATURE "dev.cosignproject.cosign/signature"
#define COSIGN_TYPE "cosign container image signature"
#define PAYLOAD_MAX ((size_t)1 << 20)

int trust_key_load(trust_key *k)
{
    int rc = tlslazy_load();
    if (rc < 0) return rc;
    gnutls_datum_t pem = {NULL, 0};
    int g = gnutls_load_file(k->path, &pem);
    if (g < 0) return berr_set(BERR_CONFIG, "trust key %s: cannot read %s", k->name, k->path);
    gnutls_pubkey_t pub = NULL;
    g = gnutls_pubkey_init(&pub);
    if (g >= 0) g = gnutls_pubkey_import(pub, &pem, GNUTLS_X509_FMT_PEM);
    gnutls_free(pem.data);
    if (g < 0) {
        if (pub) gnutls_pubkey_deinit(pub);
        return berr_set(BERR_CONFIG, "trust key %s: %s is not a PEM public key: %s", k->name,
                        k->path, gnutls_strerror(g));
    }
    int alg = gnutls_pubkey_get_pk_algorithm(pub, NULL);
    if (alg != GNUTLS_PK_EC && alg != GNUTLS_PK_RSA && alg != GNUTLS_PK_EDDSA_ED25519) {
        gnutls_pubkey_deinit(pub);
        return berr_set(BERR_CONFIG, "trust key %s: %s is neither ECDSA, RSA nor Ed25519", k->name,
                        k->path);
    }
    k->pub = pub;
    return 0;
}

void trust_key_free(trust_key *k)
{
    if (!k) return;
    if (k->pub) gnutls_pubkey_deinit((gnutls_pubkey_t)k->pub);
    free(k->name);
    free(k->path);
    memset(k, 0, sizeof *k);
}

/* Whether sig (raw bytes) is key's signature over data. */
static bool key_verifies(const trust_key *k, const char *data, size_t len, const unsigned char *sig,
                         size_t siglen)
{
    gnutls_pubkey_t pub = (gnutls_pubkey_t)k->pub;
    if (!pub) return false;
    gnutls_sign_algorithm_t algo;
    switch (gnutls_pubkey_get_pk_algorithm(pub, NULL)) {
    case GNUTLS_PK_EC:
        algo = GNUTLS_SIGN_ECDSA_SHA256;
        break;
    case GNUTLS_PK_RSA:
        algo = GNUTLS_SIGN_RSA_SHA256;
        break;
    case GNUTLS_PK_EDDSA_ED25519:
        algo = GNUTLS_SIGN_EDDSA_ED25519;
        break;
    default:
        return false;
    }
    gnutls_datum_t d = {(unsigned char *)data, (unsigned)len};
    gnutls_datum_t s = {(unsigned char *)sig, (unsigned)siglen};
    return gnutls_pubkey_verify_data2(pub, algo, 0, &d, &s) >= 0;
}

static int b64_decode(const char *in, unsigned char **out, size_t *outlen)
{
    size_t n = strlen(in);
    unsigned char *buf = malloc(BASE64_DECODE_LENGTH(n) + 1);
    if (!buf) return berr_set(BERR_INTERNAL, "out of memory");
    struct base64_decode_ctx ctx;
    base64_decode_init(&ctx);
    size_t dl = BASE64_DECODE_LENGTH(n);
    if (!base64_decode_update(&ctx, &dl, buf, n, in) || !base64_decode_final(&ctx)) {
        free(buf);
        return -1;
    }
    *out = buf;
    *outlen = dl;
    return 0;
}

/* What the payload claims: 1 when it is a cosign payload for subject, else 0 with why. */
static int payload_matches(const char *payload, size_t len, const char *subject, char *why,
                           size_t whylen)
{
    json_t *j = json_loadb(payload, len, 0, NULL);
    const char *type = json_string_value(json_object_get(json_object_get(j, "critical"), "type"));
    const char *dg = json_string_value(json_object_get(
        json_object_get(json_object_get(j, "critical"), "image"), "docker-manifest-digest"));
    int ok = 0;
    if (!j)
        snprintf(why, whylen, "the signed payload is not JSON");
    else if (!type || strcasecmp(type, COSIGN_TYPE) != 0)
        snprintf(why, whylen, "the signed payload is not a cosign image signature (type %s)",
                 type ? type : "missing");
    else if (!dg)
        snprintf(why, whylen, "the signed payload names no docker-manifest-digest");
    else if (strcmp(dg, subject) != 0)
        snprintf(why, whylen, "signed for another digest: the payload names %.80s, not %.80s", dg,
                 subject);
    else
        ok = 1;
    json_decref(j);
    return ok;
}

static void key_names(const trust_material *m, char *out, size_t len)
{
    size_t o = 0;
    out[0] = 0;
    for (size_t i = 0; i < m->nkeys && o < len; i++)
        o += (size_t)snprintf(out + o, len - o, "%s'%s'", i ? ", " : "", m->keys[i]->name);
}

int trust_verify_cosign(const trust_sig *sig, const trust_material *m, trust_result *res)
{
    memset(res, 0, sizeof *res);
    json_error_t je;
    json_t *man = json_loadb(sig->sig_manifest, sig->sig_manifest_len, 0, &je);
    if (!man) {
        snprintf(res->reason, sizeof res->reason, "cosign signature %.80s is not JSON",
                 sig->sig_digest);
        return 0;
    }
    json_t *layers = json_object_get(man, "layers");
    size_t i, nsig = 0;
    json_t *l;
    int verdict = 0, rc = 0;
    char keys[200];
    key_names(m, keys, sizeof keys);
    json_array_foreach(layers, i, l)
    {
        const char *mt = json_string_value(json_object_get(l, "mediaType"));
        const char *dg = json_string_value(json_object_get(l, "digest"));
        if (!mt || strcmp(mt, MT_SIMPLESIGNING) != 0 || !dg) continue;
        nsig++;
        const char *b64 =
            json_string_value(json_object_get(json_object_get(l, "annotations"), ANN_SIGNATURE));
        if (!b64) {
            snprintf(res->reason, sizeof res->reason,
                     "cosign signature %.80s: layer %zu carries no %s annotation", sig->sig_digest,
                     i, ANN_SIGNATURE);
            continue;
        }
        unsigned char *raw = NULL;
        size_t rawlen = 0;
        if (b64_decode(b64, &raw, &rawlen) < 0) {
            snprintf(res->reason, sizeof res->reason,
                     "cosign signature %.80s: layer %zu: the signature is not base64",
                     sig->sig_digest, i);
            continue;
        }
        char *payload = NULL;
        size_t plen = 0;
        rc = sig->read_blob(sig->read_arg, dg, PAYLOAD_MAX, &payload, &plen);
        if (rc < 0) {
            free(raw);
            break;
        }
        const trust_key *by = NULL;
        for (size_t k = 0; k < m->nkeys && !by; k++)
            if (key_verifies(m->keys[k], payload, plen, raw, rawlen)) by = m->keys[k];
        free(raw);
        char why[300];
        if (!by) {
            snprintf(res->reason, sizeof res->reason,
                     "cosign signature %.80s does not verify with key %s: signed by another "
                     "key, or the payload was altered",
                     sig->sig_digest, m->nkeys ? keys : "(none configured)");
        } else if (!payload_matches(payload, plen, sig->subject_digest, why, sizeof why)) {
            snprintf(res->reason, sizeof res->reason, "cosign signature %.80s (key '%s'): %s",
                     sig->sig_digest, by->name, why);
        } else {
            snprintf(res->signer, sizeof res->signer, "key '%s'", by->name);
            res->reason[0] = 0;
            verdict = 1;
        }
        free(payload);
        if (verdict) break;
    }
    json_decref(man);
    if (rc < 0) return rc;
    if (!verdict && !nsig)
        snprintf(res->reason, sizeof res->reason, "%.80s is not a cosign signature: no %s layer",
                 sig->sig_digest, MT_SIMPLESIGNING);
    return verdict;
}
