/*
 * auth/token: bearer tokens of the distribution token spec (auth.token: realm, service, issuer,
 * rootcertbundle), so berth can sit behind an existing token service (docker_auth, Harbor's
 * core, GitLab, ...). A token is a JWT signed RS256/384/512 or ES256/384: its signature must
 * verify with the public key of one of the certificates in rootcertbundle (GnuTLS does the
 * cryptography; JOSE's raw r||s ECDSA signatures are re-encoded as DER for it), its iss must be
 * the issuer, its aud the service, and exp/nbf must hold (60 s of clock skew allowed). Its
 * `access` claim then says what the bearer may do: [{type: repository, name, actions}].
 */
#include "auth/auth.h"
#include "util/err.h"
#include "util/log.h"
#include "util/tlslazy.h"

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <jansson.h>
#include <nettle/base64.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SKEW_S 60

static pthread_once_t once = PTHREAD_ONCE_INIT;
static gnutls_pubkey_t *keys;
static unsigned nkeys;
static const config *bundle_cfg;

static void load_bundle(void)
{
    gnutls_datum_t pem = {0};
    if (tlslazy_load() < 0) {
        log_error("msg=\"auth.token: every token is refused\" err=\"%s\"", berr_msg());
        return;
    }
    if (gnutls_load_file(bundle_cfg->auth.token_bundle, &pem) < 0) {
        log_error("msg=\"auth.token.rootcertbundle unreadable: every token is refused\"");
        return;
    }
    gnutls_x509_crt_t *crts = NULL;
    unsigned n = 0;
    if (gnutls_x509_crt_list_import2(&crts, &n, &pem, GNUTLS_X509_FMT_PEM, 0) < 0) n = 0;
    gnutls_free(pem.data);
    keys = calloc(n ? n : 1, sizeof *keys);
    for (unsigned i = 0; keys && i < n; i++) {
        gnutls_pubkey_t k;
        if (gnutls_pubkey_init(&k) == 0 && gnutls_pubkey_import_x509(k, crts[i], 0) == 0)
            keys[nkeys++] = k;
        gnutls_x509_crt_deinit(crts[i]);
    }
    gnutls_free(crts);
    log_info("msg=\"token signing certificates loaded\" count=%u", nkeys);
}

/* base64url without padding -> bytes (malloc'd). */
static uint8_t *b64url(const char *s, size_t n, size_t *out_len)
{
    struct base64_decode_ctx ctx;
    base64url_decode_init(&ctx);
    uint8_t *out = malloc(BASE64_DECODE_LENGTH(n) + 1);
    size_t len = BASE64_DECODE_LENGTH(n);
    if (!out) return NULL;
    if (!base64_decode_update(&ctx, &len, out, n, s)) {
        free(out);
        return NULL;
    }
    /* JOSE omits the padding, which nettle's final check expects: accept any tail it left */
    out[len] = '\0';
    *out_len = len;
    return out;
}

static bool verify_sig(const char *alg, const uint8_t *data, size_t dlen, const uint8_t *sig,
                       size_t slen)
{
    gnutls_sign_algorithm_t a;
    size_t half = 0;
    if (!strcmp(alg, "RS256"))
        a = GNUTLS_SIGN_RSA_SHA256;
    else if (!strcmp(alg, "RS384"))
        a = GNUTLS_SIGN_RSA_SHA384;
    else if (!strcmp(alg, "RS512"))
        a = GNUTLS_SIGN_RSA_SHA512;
    else if (!strcmp(alg, "ES256"))
        a = GNUTLS_SIGN_ECDSA_SHA256, half = 32;
    else if (!strcmp(alg, "ES384"))
        a = GNUTLS_SIGN_ECDSA_SHA384, half = 48;
    else
        return false; /* "none", HS*: never */
    gnutls_datum_t d = {(unsigned char *)data, (unsigned)dlen};
    gnutls_datum_t s = {(unsigned char *)sig, (unsigned)slen}, der = {0};
    if (half) {
        if (slen != 2 * half) return false;
        gnutls_datum_t r = {(unsigned char *)sig, (unsigned)half};
        gnutls_datum_t ss = {(unsigned char *)sig + half, (unsigned)half};
        if (gnutls_encode_rs_value(&der, &r, &ss) < 0) return false;
        s = der;
    }
    bool ok = false;
    for (unsigned i = 0; i < nkeys && !ok; i++)
        ok = gnutls_pubkey_verify_data2(keys[i], a, 0, &d, &s) >= 0;
    gnutls_free(der.data);
    return ok;
}

static bool aud_has(json_t *aud, const char *service)
{
    if (json_is_string(aud)) return !strcmp(json_string_value(aud), service);
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v) if (json_is_string(v) &&
                                      !strcmp(json_string_value(v), service)) return true;
    return false;
}

int auth_token_verify(const config *cfg, const char *jwt, char *sub, size_t sublen, json_t **access)
{
    bundle_cfg = cfg;
    pthread_once(&once, load_bundle);
    *access = NULL;
    const char *d1 = strchr(jwt, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d1 || !d2 || strchr(d2 + 1, '.') || strlen(jwt) > 16384)
        return berr_set(BERR_UNAUTHORIZED, "malformed token");
    size_t hl, pl, sl;
    uint8_t *h = b64url(jwt, (size_t)(d1 - jwt), &hl);
    uint8_t *p = b64url(d1 + 1, (size_t)(d2 - d1 - 1), &pl);
    uint8_t *s = b64url(d2 + 1, strlen(d2 + 1), &sl);
    json_t *hdr = h ? json_loadb((const char *)h, hl, 0, NULL) : NULL;
    json_t *cl = p ? json_loadb((const char *)p, pl, 0, NULL) : NULL;
    int rc = 0;
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    if (!hdr || !cl || !s || !alg)
        rc = berr_set(BERR_UNAUTHORIZED, "malformed token");
    else if (!verify_sig(alg, (const uint8_t *)jwt, (size_t)(d2 - jwt), s, sl))
        rc = berr_set(BERR_UNAUTHORIZED, "token signature not valid");
    if (rc == 0) {
        time_t now = time(NULL);
        const char *iss = json_string_value(json_object_get(cl, "iss"));
        json_t *exp = json_object_get(cl, "exp"), *nbf = json_object_get(cl, "nbf");
        if (!iss || !cfg->auth.token_issuer || strcmp(iss, cfg->auth.token_issuer))
            rc = berr_set(BERR_UNAUTHORIZED, "token from another issuer");
        else if (!cfg->auth.token_service ||
                 !aud_has(json_object_get(cl, "aud"), cfg->auth.token_service))
            rc = berr_set(BERR_UNAUTHORIZED, "token for another service");
        else if (!json_is_integer(exp) || json_integer_value(exp) + SKEW_S < now)
            rc = berr_set(BERR_UNAUTHORIZED, "token expired");
        else if (json_is_integer(nbf) && json_integer_value(nbf) - SKEW_S > now)
            rc = berr_set(BERR_UNAUTHORIZED, "token not valid yet");
    }
    if (rc == 0) {
        const char *sb = json_string_value(json_object_get(cl, "sub"));
        snprintf(sub, sublen, "%s", sb && *sb ? sb : "token");
        json_t *acc = json_object_get(cl, "access");
        *access = json_is_array(acc) ? json_incref(acc) : json_array();
    }
    json_decref(hdr);
    json_decref(cl);
    free(h);
    free(p);
    free(s);
    return rc;
}

unsigned auth_token_actions(json_t *access, const char *repo)
{
    unsigned a = 0;
    size_t i, j;
    json_t *e, *act;
    json_array_foreach(access, i, e)
    {
        const char *type = json_string_value(json_object_get(e, "type"));
        const char *name = json_string_value(json_object_get(e, "name"));
        if (!type || !name || strcmp(type, "repository") || strcmp(name, repo)) continue;
        json_array_foreach(json_object_get(e, "actions"), j, act)
        {
            const char *s = json_string_value(act);
            if (!s) continue;
            if (!strcmp(s, "pull")) a |= CONFIG_PULL;
            if (!strcmp(s, "push")) a |= CONFIG_PUSH;
            if (!strcmp(s, "delete")) a |= CONFIG_DELETE;
            if (!strcmp(s, "*")) a |= CONFIG_PULL | CONFIG_PUSH | CONFIG_DELETE;
        }
    }
    return a;
}

void auth_token_free(void)
{
    for (unsigned i = 0; i < nkeys; i++)
        gnutls_pubkey_deinit(keys[i]);
    free(keys);
    keys = NULL;
    nkeys = 0;
}
