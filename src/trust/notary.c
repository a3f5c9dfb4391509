/*
 * trust/notary: Notary Project signatures (signature specification v1): a referrer whose
 * artifactType (or, in the older layout, config mediaType) is application/vnd.cncf.notary.signature
 * and whose single layer is a JWS (application/jose+json, flattened JSON serialization) or a
 * COSE_Sign1 (application/cose) envelope over the payload {"targetArtifact": descriptor}.
 *
 * Invariants:
 * - The envelope is parsed by jansson (JWS) or libcbor (COSE); certificates by GnuTLS; nothing
 *   here decodes ASN.1 or does cryptography by hand.
 * - Checks follow the trust policy's validation steps, each at the level signatureVerification
 *   gives it: integrity (the envelope's signature with the x5c leaf's key, the protected header's
 *   critical parameters, the certificate requirements: leaf keyUsage digitalSignature, EKU
 *   codeSigning when EKU is present, CA constraints on the others, and the payload's
 *   targetArtifact naming the subject's digest, size and mediaType) is always enforced;
 *   authenticity (the x5c chain verifies to a trust store of the scheme's type, the leaf's
 *   subject matches a trustedIdentity) is enforced by strict and permissive, logged by audit;
 *   authentic timestamp (every certificate of the chain valid at `now` for notary.x509, at the
 *   authentic signing time for notary.x509.signingAuthority) and expiry (io.cncf.notary.expiry)
 *   are enforced by strict only, logged otherwise; signatureVerification.override
 *   (trust_material.override) sets authenticity, authentic timestamp or expiry to enforced or
 *   logged whatever the level. skip verifies nothing.
 * - RFC 3161 timestamp countersignatures (io.cncf.notary.timestamp) are not read: a notary.x509
 *   signature is then judged as the specification judges one without a timestamp (its chain
 *   must be valid now). Revocation is not checked (offline). Verification plugins are refused.
 * - Times come only from the envelope and sig->now, never from the system clock.
 */
#include "trust/verify.h"
#include "util/err.h"
#include "util/log.h"
#include "util/cborlazy.h"
#include "util/tlslazy.h"

#include <cbor.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <jansson.h>
#include <nettle/base64.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define NOTARY_ARTIFACT "application/vnd.cncf.notary.signature"
#define NOTARY_PAYLOAD "application/vnd.cncf.notary.payload.v1+json"
#define MT_JWS "application/jose+json"
#define MT_COSE "application/cose"
#define H_SCHEME "io.cncf.notary.signingScheme"
#define H_TIME "io.cncf.notary.signingTime"
#define H_EXPIRY "io.cncf.notary.expiry"
#define H_AUTHTIME "io.cncf.notary.authenticSigningTime"
#define H_PLUGIN "io.cncf.notary.verificationPlugin"
#define H_PLUGINVER "io.cncf.notary.verificationPluginMinVersion"
#define ENVELOPE_MAX (4u << 20)
#define MAX_CERTS 10

/* the algorithms the specification allows, with their key requirements */
typedef struct {
    const char *jws;
    int cose;
    bool ec;
    unsigned bits; /* the key size the algorithm goes with (Algorithm Selection) */
    gnutls_digest_algorithm_t hash;
    gnutls_sign_algorithm_t rsa_sign; /* RSASSA-PSS */
} alg_info;

static const alg_info algs[] = {
    {"PS256", -37, false, 2048, GNUTLS_DIG_SHA256, GNUTLS_SIGN_RSA_PSS_SHA256},
    {"PS384", -38, false, 3072, GNUTLS_DIG_SHA384, GNUTLS_SIGN_RSA_PSS_SHA384},
    {"PS512", -39, false, 4096, GNUTLS_DIG_SHA512, GNUTLS_SIGN_RSA_PSS_SHA512},
    {"ES256", -7, true, 256, GNUTLS_DIG_SHA256, GNUTLS_SIGN_UNKNOWN},
    {"ES384", -35, true, 384, GNUTLS_DIG_SHA384, GNUTLS_SIGN_UNKNOWN},
    {"ES512", -36, true, 521, GNUTLS_DIG_SHA512, GNUTLS_SIGN_UNKNOWN},
};

/* What either envelope format yields. */
typedef struct {
    const alg_info *alg;
    char scheme[64];
    int64_t signing_time, expiry, auth_time; /* 0: absent */
    unsigned char *payload, *tbs, *sig;
    size_t payload_len, tbs_len, sig_len;
    gnutls_datum_t der[MAX_CERTS];
    size_t ncerts;
} envelope;

static void env_free(envelope *e)
{
    free(e->payload);
    free(e->tbs);
    free(e->sig);
    for (size_t i = 0; i < e->ncerts; i++)
        free(e->der[i].data);
}

static int fail(trust_result *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(trust_result *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->reason, sizeof res->reason, fmt, ap);
    va_end(ap);
    return 0;
}

/* Base64 (url: the URL alphabet) without or with padding: a malloc'd buffer, or NULL. */
static unsigned char *b64_decode(bool url, const char *in, size_t n, size_t *outlen)
{
    char *padded = malloc(n + 4);
    if (!padded) return NULL;
    memcpy(padded, in, n);
    while (n % 4)
        padded[n++] = '=';
    unsigned char *out = malloc(BASE64_DECODE_LENGTH(n) + 1);
    struct base64_decode_ctx ctx;
    if (url)
        base64url_decode_init(&ctx);
    else
        base64_decode_init(&ctx);
    size_t dl = BASE64_DECODE_LENGTH(n);
    bool ok = out && base64_decode_update(&ctx, &dl, out, n, padded) && base64_decode_final(&ctx);
    free(padded);
    if (!ok) {
        free(out);
        return NULL;
    }
    *outlen = dl;
    return out;
}

/* RFC 3339 ("2022-08-29T13:50:00-07:00", fraction allowed) to unix seconds; -1 when malformed. */
static int64_t rfc3339(const char *s)
{
    struct tm tm = {0};
    int n = 0;
    if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 ||
        !n)
        return -1;
    const char *p = s + n;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int hh, mm, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &hh, &mm, &k) != 2 || k != 5) return -1;
        off = (hh * 60 + mm) * 60 * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1;
    }
    if (*p) return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) - off;
}

static bool crit_known(const char *k)
{
    return !strcmp(k, H_SCHEME) || !strcmp(k, H_EXPIRY) || !strcmp(k, H_AUTHTIME);
}

static const char *crit_check(const char *const *crit, size_t n, const envelope *e)
{
    bool scheme = false, expiry = false, auth = false;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(crit[i], H_PLUGIN) || !strcmp(crit[i], H_PLUGINVER))
            return "the signature requires a verification plugin";
        if (!crit_known(crit[i])) return "the protected header names an unknown critical parameter";
        scheme |= !strcmp(crit[i], H_SCHEME);
        expiry |= !strcmp(crit[i], H_EXPIRY);
        auth |= !strcmp(crit[i], H_AUTHTIME);
    }
    if (!scheme) return "crit does not name " H_SCHEME;
    if ((expiry && !e->expiry) || (auth && !e->auth_time))
        return "crit names a header the protected header lacks";
    if (e->expiry && !expiry) return "crit does not name " H_EXPIRY;
    if (e->auth_time && !auth) return "crit does not name " H_AUTHTIME;
    if (strcmp(e->scheme, "notary.x509") && strcmp(e->scheme, "notary.x509.signingAuthority"))
        return "unknown signing scheme";
    if (!strcmp(e->scheme, "notary.x509") && !e->signing_time)
        return "the protected header has no " H_TIME;
    if (!strcmp(e->scheme, "notary.x509.signingAuthority") && !e->auth_time)
        return "notary.x509.signingAuthority without " H_AUTHTIME;
    return NULL;
}

/* ---- JWS (signature-envelope-jws.md) ---- */

static const char *parse_jws(const char *blob, size_t len, envelope *e)
{
    json_t *root = json_loadb(blob, len, 0, NULL);
    const char *why = NULL;
    json_t *prot = NULL;
    if (!json_is_object(root)) {
        why = "the JWS envelope is not a JSON object";
        goto out;
    }
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v)
    {
        if (strcmp(k, "payload") && strcmp(k, "protected") && strcmp(k, "header") &&
            strcmp(k, "signature")) {
            why = "the JWS has a member besides payload, protected, header and signature (only "
                  "the flattened serialization is allowed)";
            goto out;
        }
    }
    const char *pb64 = json_string_value(json_object_get(root, "protected"));
    const char *yb64 = json_string_value(json_object_get(root, "payload"));
    const char *sb64 = json_string_value(json_object_get(root, "signature"));
    json_t *x5c = json_object_get(json_object_get(root, "header"), "x5c");
    if (!pb64 || !yb64 || !sb64 || !json_is_array(x5c) || !json_array_size(x5c)) {
        why = "the JWS lacks protected, payload, signature or header.x5c";
        goto out;
    }
    size_t pl;
    unsigned char *p = b64_decode(true, pb64, strlen(pb64), &pl);
    e->payload = b64_decode(true, yb64, strlen(yb64), &e->payload_len);
    e->sig = b64_decode(true, sb64, strlen(sb64), &e->sig_len);
    if (p) prot = json_loadb((char *)p, pl, 0, NULL);
    free(p);
    if (!json_is_object(prot) || !e->payload || !e->sig) {
        why = "the JWS's protected header, payload or signature is not valid base64url JSON";
        goto out;
    }
    size_t nx = json_array_size(x5c);
    if (nx > MAX_CERTS) {
        why = "x5c holds too many certificates";
        goto out;
    }
    for (size_t i = 0; i < nx; i++) {
        const char *c = json_string_value(json_array_get(x5c, i));
        size_t dl;
        unsigned char *d = c ? b64_decode(false, c, strlen(c), &dl) : NULL;
        if (!d) {
            why = "an x5c entry is not base64";
            goto out;
        }
        e->der[e->ncerts++] = (gnutls_datum_t){d, (unsigned)dl};
    }
    e->tbs_len = strlen(pb64) + 1 + strlen(yb64);
    e->tbs = malloc(e->tbs_len + 1);
    if (!e->tbs) {
        why = "out of memory";
        goto out;
    }
    snprintf((char *)e->tbs, e->tbs_len + 1, "%s.%s", pb64, yb64);

    const char *alg = json_string_value(json_object_get(prot, "alg"));
    for (size_t i = 0; alg && i < sizeof algs / sizeof algs[0]; i++)
        if (!strcmp(alg, algs[i].jws)) e->alg = &algs[i];
    if (!e->alg) {
        why = "the JWS alg is not one the Notary Project allows (PS256/384/512, ES256/384/512)";
        goto out;
    }
    const char *cty = json_string_value(json_object_get(prot, "cty"));
    if (!cty || strcmp(cty, NOTARY_PAYLOAD)) {
        why = "the JWS cty is not " NOTARY_PAYLOAD;
        goto out;
    }
    const char *scheme = json_string_value(json_object_get(prot, H_SCHEME));
    snprintf(e->scheme, sizeof e->scheme, "%s", scheme ? scheme : "");
    const char *t;
    if ((t = json_string_value(json_object_get(prot, H_TIME))) &&
        (e->signing_time = rfc3339(t)) < 0)
        e->signing_time = 0;
    if ((t = json_string_value(json_object_get(prot, H_EXPIRY))) && (e->expiry = rfc3339(t)) <= 0) {
        why = "the JWS expiry is not an RFC 3339 time";
        goto out;
    }
    if ((t = json_string_value(json_object_get(prot, H_AUTHTIME))) &&
        (e->auth_time = rfc3339(t)) <= 0) {
        why = "the JWS authenticSigningTime is not an RFC 3339 time";
        goto out;
    }
    json_t *crit = json_object_get(prot, "crit");
    size_t nc = json_array_size(crit);
    if (!json_is_array(crit) || !nc || nc > 16) {
        why = "the JWS protected header has no crit list";
        goto out;
    }
    const char *names[16];
    for (size_t i = 0; i < nc; i++)
        if (!(names[i] = json_string_value(json_array_get(crit, i)))) {
            why = "a JWS crit entry is not a string";
            goto out;
        }
    why = crit_check(names, nc, e);
out:
    json_decref(prot);
    json_decref(root);
    return why;
}

/* ---- COSE_Sign1 (signature-envelope-cose.md, RFC 9052) ---- */

static bool cbor_is_text(const cbor_item_t *it, const char *s)
{
    return cbor_isa_string(it) && cbor_string_is_definite(it) &&
           cbor_string_length(it) == strlen(s) && !memcmp(cbor_string_handle(it), s, strlen(s));
}

static bool cbor_label(const cbor_item_t *it, int64_t v)
{
    if (cbor_isa_uint(it)) return v >= 0 && cbor_get_int(it) == (uint64_t)v;
    if (cbor_isa_negint(it)) return v < 0 && cbor_get_int(it) == (uint64_t)(-1 - v);
    return false;
}

static bool cbor_bytes(const cbor_item_t *it)
{
    return cbor_isa_bytestring(it) && cbor_bytestring_is_definite(it);
}

/* a COSE time: tag 1 around an integer (seconds since the epoch) */
static int64_t cbor_time(const cbor_item_t *it)
{
    if (!cbor_isa_tag(it) || cbor_tag_value(it) != 1) return -1;
    cbor_item_t *v = cbor_tag_item(it);
    int64_t t = cbor_isa_uint(v) ? (int64_t)cbor_get_int(v) : -1;
    cbor_decref(&v);
    return t > 0 ? t : -1;
}

static char *cbor_text_dup(const cbor_item_t *it)
{
    if (!cbor_isa_string(it) || !cbor_string_is_definite(it)) return NULL;
    return strndup((const char *)cbor_string_handle(it), cbor_string_length(it));
}

/* x5chain (label 33): one certificate as a byte string, or an array of them */
static const char *cose_certs(cbor_item_t *v, envelope *e)
{
    cbor_item_t **certs = &v;
    size_t nx = 1;
    if (cbor_isa_array(v)) {
        certs = cbor_array_handle(v);
        nx = cbor_array_size(v);
    }
    if (e->ncerts + nx > MAX_CERTS) return "x5chain holds too many certificates";
    for (size_t j = 0; j < nx; j++) {
        if (!cbor_bytes(certs[j])) return "an x5chain entry is not a byte string";
        size_t dl = cbor_bytestring_length(certs[j]);
        unsigned char *d = malloc(dl ? dl : 1);
        if (!d) return "out of memory";
        memcpy(d, cbor_bytestring_handle(certs[j]), dl);
        e->der[e->ncerts++] = (gnutls_datum_t){d, (unsigned)dl};
    }
    return NULL;
}

static const char *parse_cose_protected(const unsigned char *p, size_t n, envelope *e)
{
    struct cbor_load_result lr;
    cbor_item_t *m = cbor_load(p, n, &lr);
    const char *why = NULL;
    char *names[16] = {0};
    size_t nc = 0;
    bool has_crit = false, cty_ok = false;
    if (!m || lr.error.code != CBOR_ERR_NONE || lr.read != n || !cbor_isa_map(m)) {
        why = "the COSE protected header is not a CBOR map";
        goto out;
    }
    struct cbor_pair *kv = cbor_map_handle(m);
    for (size_t i = 0; i < cbor_map_size(m) && !why; i++) {
        const cbor_item_t *k = kv[i].key, *v = kv[i].value;
        if (cbor_label(k, 1)) {
            for (size_t a = 0; a < sizeof algs / sizeof algs[0]; a++)
                if (cbor_label(v, algs[a].cose)) e->alg = &algs[a];
        } else if (cbor_label(k, 2)) {
            has_crit = cbor_isa_array(v) && cbor_array_size(v) && cbor_array_size(v) <= 16;
            for (size_t j = 0; has_crit && j < cbor_array_size(v); j++)
                if (!(names[nc++] = cbor_text_dup(cbor_array_handle(v)[j])))
                    why = "a COSE crit entry is not a text label";
        } else if (cbor_label(k, 33)) {
            why = cose_certs(kv[i].value, e);
        } else if (cbor_label(k, 3)) {
            cty_ok = cbor_is_text(v, NOTARY_PAYLOAD);
        } else if (cbor_is_text(k, H_SCHEME)) {
            char *s = cbor_text_dup(v);
            snprintf(e->scheme, sizeof e->scheme, "%s", s ? s : "");
            free(s);
        } else if (cbor_is_text(k, H_TIME)) {
            if ((e->signing_time = cbor_time(v)) < 0) why = "the COSE signingTime is not a time";
        } else if (cbor_is_text(k, H_EXPIRY)) {
            if ((e->expiry = cbor_time(v)) < 0) why = "the COSE expiry is not a time";
        } else if (cbor_is_text(k, H_AUTHTIME)) {
            if ((e->auth_time = cbor_time(v)) < 0)
                why = "the COSE authenticSigningTime is not a time";
        }
    }
    if (why) goto out;
    if (!e->alg) {
        why = "the COSE alg is not one the Notary Project allows (PS256/384/512, ES256/384/512)";
    } else if (!cty_ok) {
        why = "the COSE content type is not " NOTARY_PAYLOAD;
    } else if (!has_crit) {
        why = "the COSE protected header has no crit list";
    } else {
        why = crit_check((const char *const *)names, nc, e);
    }
out:
    for (size_t i = 0; i < nc; i++)
        free(names[i]);
    if (m) cbor_decref(&m);
    return why;
}

static const char *parse_cose(const char *blob, size_t len, envelope *e)
{
    if (cborlazy_load() < 0) return berr_msg(); /* "cannot load libcbor: ..." */
    struct cbor_load_result lr;
    /* COSE_Sign1's tag 18 is the one byte 0xd2, which libcbor 0.8 (Debian 12) refuses as
     * malformed (it rejects one-byte tags 6 to 20): the tag is taken here, the array by libcbor */
    bool tag18 = len > 1 && (unsigned char)blob[0] == 0xd2;
    if (tag18) blob++, len--;
    cbor_item_t *root = cbor_load((cbor_data)blob, len, &lr), *arr = NULL, *sig_st = NULL;
    const char *why = NULL;
    if (!root || lr.error.code != CBOR_ERR_NONE || lr.read != len) {
        why = "the COSE envelope is not CBOR";
        goto out;
    }
    if (!tag18 && cbor_isa_tag(root) && cbor_tag_value(root) == 18) {
        arr = cbor_tag_item(root); /* tag 18 written in two bytes */
    } else if (tag18 && !cbor_isa_tag(root)) {
        arr = cbor_incref(root);
    } else {
        why = "the COSE envelope is not a COSE_Sign1_Tagged (tag 18)";
        goto out;
    }
    if (!cbor_isa_array(arr) || cbor_array_size(arr) != 4) {
        why = "the COSE_Sign1 is not an array of four";
        goto out;
    }
    cbor_item_t **f = cbor_array_handle(arr);
    if (!cbor_bytes(f[0]) || !cbor_isa_map(f[1]) || !cbor_bytes(f[2]) || !cbor_bytes(f[3])) {
        why = "the COSE_Sign1 fields are not protected, unprotected, payload, signature "
              "(a detached payload is not allowed)";
        goto out;
    }
    if ((why = parse_cose_protected(cbor_bytestring_handle(f[0]), cbor_bytestring_length(f[0]), e)))
        goto out;
    struct cbor_pair *kv = cbor_map_handle(f[1]);
    for (size_t i = 0; i < cbor_map_size(f[1]); i++) {
        if (!cbor_label(kv[i].key, 33)) continue; /* x5chain */
        if (e->ncerts) {
            why = "x5chain is in both headers";
            goto out;
        }
        if ((why = cose_certs(kv[i].value, e))) goto out;
    }
    if (!e->ncerts) {
        why = "the COSE envelope has no x5chain";
        goto out;
    }
    e->payload_len = cbor_bytestring_length(f[2]);
    e->sig_len = cbor_bytestring_length(f[3]);
    e->payload = malloc(e->payload_len + 1);
    e->sig = malloc(e->sig_len + 1);
    if (!e->payload || !e->sig) {
        why = "out of memory";
        goto out;
    }
    memcpy(e->payload, cbor_bytestring_handle(f[2]), e->payload_len);
    memcpy(e->sig, cbor_bytestring_handle(f[3]), e->sig_len);
    /* Sig_structure = ["Signature1", body_protected, external_aad (empty), payload] */
    sig_st = cbor_new_definite_array(4);
    bool ok =
        sig_st && cbor_array_push(sig_st, cbor_move(cbor_build_string("Signature1"))) &&
        cbor_array_push(sig_st, cbor_move(cbor_build_bytestring(cbor_bytestring_handle(f[0]),
                                                                cbor_bytestring_length(f[0])))) &&
        cbor_array_push(sig_st, cbor_move(cbor_build_bytestring((cbor_data) "", 0))) &&
        cbor_array_push(sig_st, cbor_move(cbor_build_bytestring(e->payload, e->payload_len)));
    size_t cap = 0;
    if (!ok || !(e->tbs_len = cbor_serialize_alloc(sig_st, &e->tbs, &cap))) why = "out of memory";
out:
    if (sig_st) cbor_decref(&sig_st);
    if (arr) cbor_decref(&arr);
    if (root) cbor_decref(&root);
    return why;
}

/* ---- certificates ---- */

static void crt_subject(gnutls_x509_crt_t c, char *out, size_t cap)
{
    gnutls_datum_t dn = {0};
    if (gnutls_x509_crt_get_dn3(c, &dn, 0) >= 0)
        snprintf(out, cap, "%.*s", (int)dn.size, (char *)dn.data);
    else
        snprintf(out, cap, "(unreadable subject)");
    gnutls_free(dn.data);
}

/* The leaf requirements: keyUsage present, critical, digitalSignature and no encipherment or
 * certificate signing; basicConstraints, if present, not a CA; extendedKeyUsage, if present,
 * none of anyExtendedKeyUsage, serverAuth, clientAuth, emailProtection, timeStamping. */
static const char *leaf_requirements(gnutls_x509_crt_t c, const char *subj, char *buf, size_t cap)
{
    unsigned ku = 0, kcrit = 0, ca = 0;
    if (gnutls_x509_crt_get_key_usage(c, &ku, &kcrit) < 0 || !kcrit) {
        snprintf(buf, cap, "signing certificate %s has no critical key usage extension", subj);
        return buf;
    }
    if (gnutls_x509_crt_get_basic_constraints(c, NULL, &ca, NULL) >= 0 && ca) {
        snprintf(buf, cap, "signing certificate %s is a CA certificate", subj);
        return buf;
    }
    if (!(ku & GNUTLS_KEY_DIGITAL_SIGNATURE)) {
        snprintf(buf, cap, "signing certificate %s lacks key usage digitalSignature", subj);
        return buf;
    }
    if (ku & (GNUTLS_KEY_KEY_ENCIPHERMENT | GNUTLS_KEY_DATA_ENCIPHERMENT |
              GNUTLS_KEY_KEY_AGREEMENT | GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN |
              GNUTLS_KEY_ENCIPHER_ONLY | GNUTLS_KEY_DECIPHER_ONLY)) {
        snprintf(buf, cap,
                 "signing certificate %s has a key usage besides digitalSignature and "
                 "nonRepudiation",
                 subj);
        return buf;
    }
    for (unsigned k = 0;; k++) {
        char oid[128];
        size_t ol = sizeof oid;
        int r = gnutls_x509_crt_get_key_purpose_oid(c, k, oid, &ol, NULL);
        if (r == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) break;
        if (r < 0) {
            snprintf(buf, cap, "signing certificate %s: unreadable extended key usage", subj);
            return buf;
        }
        if (!strcmp(oid, GNUTLS_KP_ANY) || !strcmp(oid, GNUTLS_KP_TLS_WWW_SERVER) ||
            !strcmp(oid, GNUTLS_KP_TLS_WWW_CLIENT) || !strcmp(oid, GNUTLS_KP_EMAIL_PROTECTION) ||
            !strcmp(oid, GNUTLS_KP_TIME_STAMPING)) {
            snprintf(buf, cap,
                     "signing certificate %s: extended key usage %s is not allowed for code "
                     "signing",
                     subj, oid);
            return buf;
        }
    }
    unsigned bits = 0;
    int pk = gnutls_x509_crt_get_pk_algorithm(c, &bits);
    if ((pk == GNUTLS_PK_RSA && bits < 2048) || (pk == GNUTLS_PK_ECDSA && bits < 256)) {
        snprintf(buf, cap, "signing certificate %s: a %u-bit key is too short", subj, bits);
        return buf;
    }
    return NULL;
}

/* The certificate requirements of the signature specification (the chain in x5c ordered from
 * the leaf to a self-signed root, the leaf's and the CAs' extensions, no SHA-1): NULL or why. */
static const char *crt_requirements(gnutls_x509_crt_t *c, size_t n, char *buf, size_t cap)
{
    for (size_t i = 0; i < n; i++) {
        char subj[200];
        crt_subject(c[i], subj, sizeof subj);
        int sa = gnutls_x509_crt_get_signature_algorithm(c[i]);
        if (sa == GNUTLS_SIGN_RSA_SHA1 || sa == GNUTLS_SIGN_ECDSA_SHA1 ||
            sa == GNUTLS_SIGN_DSA_SHA1) {
            snprintf(buf, cap, "certificate %s is signed with SHA-1", subj);
            return buf;
        }
        if (i == 0) {
            const char *why = leaf_requirements(c[i], subj, buf, cap);
            if (why) return why;
        } else {
            unsigned ku = 0, kcrit = 0, bcrit = 0, ca = 0;
            int pathlen = -1;
            if (gnutls_x509_crt_get_basic_constraints(c[i], &bcrit, &ca, &pathlen) < 0 || !bcrit ||
                !ca) {
                snprintf(buf, cap, "chain certificate %s has no critical basicConstraints CA",
                         subj);
                return buf;
            }
            if (pathlen >= 0 && (size_t)pathlen < i - 1) {
                snprintf(buf, cap, "chain certificate %s: path length %d exceeded", subj, pathlen);
                return buf;
            }
            if (gnutls_x509_crt_get_key_usage(c[i], &ku, &kcrit) < 0 || !kcrit ||
                !(ku & GNUTLS_KEY_KEY_CERT_SIGN)) {
                snprintf(buf, cap, "chain certificate %s lacks critical key usage keyCertSign",
                         subj);
                return buf;
            }
        }
        if (i + 1 < n && !gnutls_x509_crt_check_issuer(c[i], c[i + 1])) {
            snprintf(buf, cap, "x5c is not ordered: %s is not issued by the next certificate",
                     subj);
            return buf;
        }
    }
    unsigned st = 0;
    if (!gnutls_x509_crt_check_issuer(c[n - 1], c[n - 1]) ||
        gnutls_x509_crt_verify(c[n - 1], &c[n - 1], 1, GNUTLS_VERIFY_DISABLE_TIME_CHECKS, &st) <
            0 ||
        st) {
        snprintf(buf, cap, "x5c does not end with a self-signed root certificate");
        return buf;
    }
    return NULL;
}

/* The integrity step: the envelope's signature with the leaf's key. */
static const char *check_signature(const envelope *e, gnutls_x509_crt_t leaf)
{
    gnutls_pubkey_t pub = NULL;
    gnutls_datum_t der = {0};
    const char *why = NULL;
    unsigned bits = 0;
    if (gnutls_pubkey_init(&pub) < 0 || gnutls_pubkey_import_x509(pub, leaf, 0) < 0) {
        why = "unsupported envelope: the signing certificate's key cannot be read";
        goto out;
    }
    int pk = gnutls_pubkey_get_pk_algorithm(pub, &bits);
    gnutls_sign_algorithm_t sa;
    gnutls_datum_t data = {e->tbs, (unsigned)e->tbs_len}, sig = {e->sig, (unsigned)e->sig_len};
    if (e->alg->ec) {
        if (pk != GNUTLS_PK_ECDSA || bits != e->alg->bits) {
            why = "unsupported envelope: the signing key does not match the signature algorithm";
            goto out;
        }
        size_t half = (e->alg->bits + 7) / 8;
        if (e->sig_len != 2 * half) {
            why = "wrong key or tampered payload: the ECDSA signature has the wrong length";
            goto out;
        }
        gnutls_datum_t r = {e->sig, (unsigned)half}, s = {e->sig + half, (unsigned)half};
        if (gnutls_encode_rs_value(&der, &r, &s) < 0) {
            why = "wrong key or tampered payload: the ECDSA signature cannot be encoded";
            goto out;
        }
        sig = der;
        sa = gnutls_pk_to_sign(GNUTLS_PK_ECDSA, e->alg->hash);
    } else {
        if (pk != GNUTLS_PK_RSA || bits != e->alg->bits) {
            why = "unsupported envelope: the signing key does not match the signature algorithm";
            goto out;
        }
        sa = e->alg->rsa_sign;
    }
    if (gnutls_pubkey_verify_data2(pub, sa, 0, &data, &sig) < 0)
        why = "wrong key or tampered payload: the envelope's signature does not verify with the "
              "signing certificate's key";
out:
    gnutls_free(der.data);
    if (pub) gnutls_pubkey_deinit(pub);
    return why;
}

/* targetArtifact must name the subject: digest, size and mediaType. */
static const char *check_payload(const envelope *e, const trust_sig *s, char *buf, size_t cap)
{
    json_t *p = json_loadb((const char *)e->payload, e->payload_len, 0, NULL);
    json_t *t = json_object_get(p, "targetArtifact");
    const char *why = NULL;
    const char *dg = json_string_value(json_object_get(t, "digest"));
    const char *mt = json_string_value(json_object_get(t, "mediaType"));
    json_t *sz = json_object_get(t, "size");
    if (!json_is_object(t) || !dg || !mt || !json_is_integer(sz)) {
        why = "unsupported envelope: the payload has no targetArtifact descriptor";
    } else if (strcmp(dg, s->subject_digest)) {
        snprintf(buf, cap, "other digest: the signature is for %s, not %s", dg, s->subject_digest);
        why = buf;
    } else if (json_integer_value(sz) != s->subject_size) {
        snprintf(buf, cap, "other digest: the signature names size %lld, the manifest has %lld",
                 (long long)json_integer_value(sz), (long long)s->subject_size);
        why = buf;
    } else if (!s->subject_media_type || strcmp(mt, s->subject_media_type)) {
        snprintf(buf, cap, "other digest: the signature names media type %s, the manifest is %s",
                 mt, s->subject_media_type ? s->subject_media_type : "(none)");
        why = buf;
    }
    json_decref(p);
    return why;
}

/* Authenticity: the chain verifies to one of the trust stores of the scheme's type. */
static const char *check_chain(gnutls_x509_crt_t *c, size_t n, const trust_material *m,
                               const char *type, char *buf, size_t cap)
{
    unsigned flags = GNUTLS_VERIFY_DISABLE_TIME_CHECKS | GNUTLS_VERIFY_DISABLE_TRUSTED_TIME_CHECKS;
    unsigned status = GNUTLS_CERT_SIGNER_NOT_FOUND;
    size_t tried = 0;
    for (size_t i = 0; i < m->nstores; i++) {
        const trust_store *st = m->stores[i];
        if (!st || !st->list || !st->type || strcmp(st->type, type)) continue;
        tried++;
        unsigned v = 0;
        if (gnutls_x509_trust_list_verify_crt2(st->list, c, n, NULL, 0, flags, &v, NULL) < 0)
            v = GNUTLS_CERT_INVALID;
        if (!v) return NULL;
        status = v;
    }
    if (!tried) {
        snprintf(buf, cap, "untrusted CA: the policy has no trust store of type %s", type);
        return buf;
    }
    if (status & GNUTLS_CERT_SIGNER_NOT_FOUND) {
        snprintf(buf, cap,
                 "untrusted CA: the certificate chain does not lead to the policy's "
                 "trust stores");
        return buf;
    }
    gnutls_datum_t out = {0};
    gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0);
    snprintf(buf, cap, "untrusted CA: the certificate chain does not verify: %s",
             out.data ? (char *)out.data : "invalid");
    gnutls_free(out.data);
    return buf;
}

static const struct {
    const char *name, *oid;
} dn_names[] = {
    {"C", "2.5.4.6"},
    {"ST", "2.5.4.8"},
    {"S", "2.5.4.8"},
    {"L", "2.5.4.7"},
    {"O", "2.5.4.10"},
    {"OU", "2.5.4.11"},
    {"CN", "2.5.4.3"},
    {"SERIALNUMBER", "2.5.4.5"},
    {"STREET", "2.5.4.9"},
    {"DC", "0.9.2342.19200300.100.1.25"},
    {"EMAILADDRESS", "1.2.840.113549.1.9.1"},
    {"E", "1.2.840.113549.1.9.1"},
    {"UID", "0.9.2342.19200300.100.1.1"},
    {"POSTALCODE", "2.5.4.17"},
    {"T", "2.5.4.12"},
    {"TITLE", "2.5.4.12"},
};

/* Does the leaf hold attribute key (a DN short name) with value val? -1: unknown key. */
static int leaf_has(gnutls_x509_crt_t leaf, const char *key, const char *val)
{
    const char *oid = NULL;
    for (size_t i = 0; i < sizeof dn_names / sizeof dn_names[0]; i++)
        if (!strcasecmp(key, dn_names[i].name)) oid = dn_names[i].oid;
    if (!oid) return -1;
    for (unsigned idx = 0;; idx++) {
        char buf[512];
        size_t bl = sizeof buf;
        if (gnutls_x509_crt_get_dn_by_oid(leaf, oid, idx, 0, buf, &bl) < 0) return 0;
        if (!strcmp(buf, val)) return 1;
    }
}

/* "x509.subject: C=US, ST=WA, O=acme, CN=x": every attribute named must be in the leaf's subject
 * with that value (the Notary Project's subset match; C, ST and O must be named; \, \; \\ and
 * an escaped space are escapes); 1, 0, or -1 when malformed. */
static int identity_match(gnutls_x509_crt_t leaf, const char *id)
{
    if (!strcmp(id, "*")) return 1;
    const char *pfx = "x509.subject:";
    if (strncmp(id, pfx, strlen(pfx))) return -1;
    const char *p = id + strlen(pfx);
    int nattr = 0;
    bool c = false, st = false, o = false, mismatch = false;
    while (*p) {
        char key[32], val[512];
        size_t kl = 0, vl = 0;
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p) break;
        while (*p && *p != '=' && kl + 1 < sizeof key)
            key[kl++] = *p++;
        if (*p != '=') return -1;
        p++;
        while (kl && key[kl - 1] == ' ')
            kl--;
        key[kl] = 0;
        size_t keep = 0; /* escaped characters are kept even when spaces */
        while (*p == ' ')
            p++;
        while (*p && *p != ',' && vl + 1 < sizeof val) {
            bool esc = *p == '\\' && p[1];
            if (esc) p++;
            val[vl++] = *p++;
            if (esc) keep = vl;
        }
        if (*p && *p != ',') return -1; /* too long */
        while (vl > keep && val[vl - 1] == ' ')
            vl--;
        val[vl] = 0;
        int r = leaf_has(leaf, key, val);
        if (r < 0) return -1;
        c |= !strcasecmp(key, "C");
        st |= !strcasecmp(key, "ST") || !strcasecmp(key, "S");
        o |= !strcasecmp(key, "O");
        if (!r) mismatch = true;
        nattr++;
    }
    if (!c || !st || !o) return -1; /* the specification's minimum: C, ST and O */
    return mismatch ? 0 : 1;
}

static const char *level_name(trust_level l)
{
    return l == TRUST_LEVEL_STRICT       ? "strict"
           : l == TRUST_LEVEL_PERMISSIVE ? "permissive"
           : l == TRUST_LEVEL_AUDIT      ? "audit"
                                         : "skip";
}

/* A failed check the level enforces refuses the signature; one it only logs is logged. */
static bool enforced(const trust_sig *s, const trust_material *m, bool enforce, const char *why)
{
    if (enforce) return true;
    log_warn("trust: notary signature %s on %s: %s (logged only: signatureVerification %s)",
             s->sig_digest ? s->sig_digest : "?", s->subject_digest, why, level_name(m->level));
    return false;
}

static int verify_envelope(const trust_sig *s, const trust_material *m, const envelope *e,
                           trust_result *res)
{
    gnutls_x509_crt_t crt[MAX_CERTS];
    size_t n = 0;
    int rc = 0;
    char buf[400];
    const char *why;
    for (; n < e->ncerts; n++) {
        if (gnutls_x509_crt_init(&crt[n]) < 0) break;
        if (gnutls_x509_crt_import(crt[n], &e->der[n], GNUTLS_X509_FMT_DER) < 0) {
            gnutls_x509_crt_deinit(crt[n]);
            rc = fail(res, "unsupported envelope: x5c certificate %zu is not DER X.509", n);
            goto out;
        }
    }
    if (n != e->ncerts) {
        rc = fail(res, "out of memory");
        goto out;
    }
    /* integrity: always enforced */
    if ((why = check_signature(e, crt[0]))) {
        rc = fail(res, "%s", why);
        goto out;
    }
    if ((why = check_payload(e, s, buf, sizeof buf))) {
        rc = fail(res, "%s", why);
        goto out;
    }
    char subj[256];
    crt_subject(crt[0], subj, sizeof subj);
    /* authenticity: strict and permissive; the chain's requirements, its trust, the identity */
    bool authentic = m->level == TRUST_LEVEL_STRICT || m->level == TRUST_LEVEL_PERMISSIVE;
    if (m->override[0]) authentic = m->override[0] == 2;
    bool sa = !strcmp(e->scheme, "notary.x509.signingAuthority");
    char req[400];
    if ((why = crt_requirements(crt, n, buf, sizeof buf))) {
        snprintf(req, sizeof req, "invalid certificate chain: %s", why);
        if (enforced(s, m, authentic, req)) {
            rc = fail(res, "%s", req);
            goto out;
        }
    }
    if ((why = check_chain(crt, n, m, sa ? "signingAuthority" : "ca", buf, sizeof buf)) &&
        enforced(s, m, authentic, why)) {
        rc = fail(res, "%s", why);
        goto out;
    }
    int idm = 0;
    for (size_t i = 0; i < m->nidentities && idm != 1; i++) {
        int r = identity_match(crt[0], m->identities[i]);
        if (r < 0)
            log_warn("trust: trustedIdentity '%s' is not '*' or 'x509.subject: C=.., ST=.., "
                     "O=.., ...'",
                     m->identities[i]);
        if (r > 0) idm = 1;
    }
    if (!idm) {
        snprintf(buf, sizeof buf, "untrusted identity: signer %s is not a trusted identity", subj);
        if (enforced(s, m, authentic, buf)) {
            rc = fail(res, "%s", buf);
            goto out;
        }
    }
    /* expiry and authentic timestamp: strict only */
    bool strict = m->level == TRUST_LEVEL_STRICT, ts_enforced = strict, exp_enforced = strict;
    if (m->override[1]) ts_enforced = m->override[1] == 2;
    if (m->override[2]) exp_enforced = m->override[2] == 2;
    if (e->expiry && s->now >= e->expiry) {
        snprintf(buf, sizeof buf, "signature expiry passed: the signature expired %lld s ago",
                 (long long)(s->now - e->expiry));
        if (enforced(s, m, exp_enforced, buf)) {
            rc = fail(res, "%s", buf);
            goto out;
        }
    }
    int64_t at = sa ? e->auth_time : s->now;
    for (size_t i = 0; i < n; i++) {
        int64_t from = gnutls_x509_crt_get_activation_time(crt[i]);
        int64_t to = gnutls_x509_crt_get_expiration_time(crt[i]);
        if (at >= from && at <= to) continue;
        char cs[200];
        crt_subject(crt[i], cs, sizeof cs);
        snprintf(buf, sizeof buf, "expired certificate: %s is %s at %s", cs,
                 at < from ? "not yet valid" : "expired", sa ? "the signing time" : "this time");
        if (enforced(s, m, ts_enforced, buf)) {
            rc = fail(res, "%s", buf);
            goto out;
        }
        break;
    }
    snprintf(res->signer, sizeof res->signer, "%s", subj);
    rc = 1;
out:
    for (size_t i = 0; i < n; i++)
        gnutls_x509_crt_deinit(crt[i]);
    return rc;
}

int trust_verify_notary(const trust_sig *sig, const trust_material *m, trust_result *res)
{
    res->signer[0] = res->reason[0] = 0;
    int rc = tlslazy_load();
    if (rc < 0) return rc;
    json_t *man = json_loadb(sig->sig_manifest, sig->sig_manifest_len, 0, NULL);
    const char *at = json_string_value(json_object_get(man, "artifactType"));
    const char *ct =
        json_string_value(json_object_get(json_object_get(man, "config"), "mediaType"));
    json_t *layers = json_object_get(man, "layers");
    json_t *l = json_array_get(layers, 0);
    const char *lmt = json_string_value(json_object_get(l, "mediaType"));
    const char *ldg = json_string_value(json_object_get(l, "digest"));
    json_t *lsz = json_object_get(l, "size");
    char *blob = NULL;
    size_t blen = 0;
    envelope e = {0};
    if (!json_is_object(man) ||
        !((at && !strcmp(at, NOTARY_ARTIFACT)) || (ct && !strcmp(ct, NOTARY_ARTIFACT)))) {
        rc = fail(res, "unsupported envelope: not a Notary Project signature artifact");
        goto out;
    }
    if (json_array_size(layers) != 1 || !lmt || !ldg || !json_is_integer(lsz)) {
        rc = fail(res, "unsupported envelope: a Notary Project signature has exactly one layer");
        goto out;
    }
    bool jws = !strcmp(lmt, MT_JWS), cose = !strcmp(lmt, MT_COSE);
    if (!jws && !cose) {
        rc = fail(res, "unsupported envelope: signature envelope type %s", lmt);
        goto out;
    }
    if (json_integer_value(lsz) <= 0 || json_integer_value(lsz) > ENVELOPE_MAX) {
        rc = fail(res, "unsupported envelope: the envelope's size is out of bounds");
        goto out;
    }
    if (m->level == TRUST_LEVEL_SKIP) {
        snprintf(res->signer, sizeof res->signer, "(not verified: signatureVerification skip)");
        rc = 1;
        goto out;
    }
    if ((rc = sig->read_blob(sig->read_arg, ldg, (size_t)json_integer_value(lsz), &blob, &blen)) <
        0)
        goto out;
    const char *why = jws ? parse_jws(blob, blen, &e) : parse_cose(blob, blen, &e);
    if (why) {
        rc = fail(res, "unsupported envelope: %s", why);
        goto out;
    }
    rc = verify_envelope(sig, m, &e, res);
out:
    env_free(&e);
    free(blob);
    json_decref(man);
    return rc;
}

static int store_err(berr code, const char *fmt, const char *name, const char *path)
{
    int rc = berr_set(code, fmt, name ? name : "?", path ? path : "");
    log_error("%s", berr_msg());
    return rc;
}

int trust_store_load(trust_store *s)
{
    int rc = tlslazy_load();
    if (rc < 0) return rc;
    if (!s->type ||
        (strcmp(s->type, "ca") && strcmp(s->type, "signingAuthority") && strcmp(s->type, "tsa")))
        return store_err(BERR_CONFIG, "trust store %s: type must be ca, signingAuthority or tsa%s",
                         s->name, "");
    gnutls_x509_trust_list_t list;
    if (gnutls_x509_trust_list_init(&list, 0) < 0)
        return store_err(BERR_INTERNAL, "trust store %s: out of memory%s", s->name, "");
    size_t total = 0;
    for (size_t i = 0; i < s->npaths; i++) {
        struct stat st;
        int r;
        if (stat(s->paths[i], &st) < 0) {
            gnutls_x509_trust_list_deinit(list, 1);
            return store_err(BERR_CONFIG, "trust store %s: cannot read %s", s->name, s->paths[i]);
        }
        if (S_ISDIR(st.st_mode))
            r = gnutls_x509_trust_list_add_trust_dir(list, s->paths[i], NULL, GNUTLS_X509_FMT_PEM,
                                                     0, 0);
        else
            r = gnutls_x509_trust_list_add_trust_file(list, s->paths[i], NULL, GNUTLS_X509_FMT_PEM,
                                                      0, 0);
        if (r <= 0) {
            gnutls_x509_trust_list_deinit(list, 1);
            return store_err(BERR_CONFIG, "trust store %s: no PEM certificate in %s", s->name,
                             s->paths[i]);
        }
        total += (size_t)r;
    }
    if (!total) {
        gnutls_x509_trust_list_deinit(list, 1);
        return store_err(BERR_CONFIG, "trust store %s: no certificates%s", s->name, "");
    }
    s->list = list;
    return 0;
}

void trust_store_free(trust_store *s)
{
    if (!s) return;
    if (s->list) gnutls_x509_trust_list_deinit(s->list, 1);
    s->list = NULL;
    for (size_t i = 0; i < s->npaths; i++)
        free(s->paths[i]);
    free(s->paths);
    free(s->name);
    free(s->type);
    s->paths = NULL;
    s->name = s->type = NULL;
    s->npaths = 0;
}
