/* test_trust: the Notary Project and Sigstore-bundle verifiers (trust/notary.c, trust/sigstore.c)
 * on artifacts in the formats notation and cosign write, made here: X.509 chains by openssl
 * (root, intermediate, code-signing leaves; an expiring leaf; a leaf of another CA; leaves
 * without codeSigning or digitalSignature), envelopes and bundles by tests/fixtures/
 * notary_sign.py and sigstore_sign.py, read back through a blob callback over the files. */
#include "trust/verify.h"
#include "unit.h"
#include "util/err.h"
#include "util/tlslazy.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <limits.h>
#include <nettle/sha2.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char dir[PATH_MAX];
static const char *py = "python3";
static char subject[80];
static const int64_t subject_size = 1234;
static const char *subject_mt = "application/vnd.oci.image.manifest.v1+json";
static int64_t now;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc != 0) printf("command failed (%d): %s\n", rc, cmd);
    return rc;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f) return NULL;
    char *buf = fstat(fileno(f), &st) == 0 ? malloc((size_t)st.st_size + 1) : NULL;
    *len = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    return buf;
}

static void sha256_hex(const void *data, size_t len, char *out /* 72 */)
{
    struct sha256_ctx c;
    uint8_t d[32];
    sha256_init(&c);
    sha256_update(&c, len, data);
    sha256_digest(&c, sizeof d, d);
    strcpy(out, "sha256:");
    for (int i = 0; i < 32; i++)
        snprintf(out + 7 + 2 * i, 3, "%02x", d[i]);
}

/* The blob callback: OUT/blobs/sha256/<hex>, checked against its digest like a store would. */
static int read_blob(void *arg, const char *digest, size_t max, char **out, size_t *outlen)
{
    char path[PATH_MAX + 128], got[80];
    if (strncmp(digest, "sha256:", 7)) return berr_set(BERR_DIGEST_INVALID, "bad digest");
    snprintf(path, sizeof path, "%s/blobs/sha256/%s", (const char *)arg, digest + 7);
    size_t len;
    char *b = slurp(path, &len);
    if (!b) return berr_set(BERR_BLOB_UNKNOWN, "no blob %s", digest);
    sha256_hex(b, len, got);
    if (len > max || strcmp(got, digest)) {
        free(b);
        return berr_set(BERR_DIGEST_INVALID, "blob %s does not match", digest);
    }
    *out = b;
    *outlen = len;
    return 0;
}

typedef int (*verify_fn)(const trust_sig *, const trust_material *, trust_result *);

/* Runs a verifier on the artifact in dir/name against the subject; 1/0/-berr. */
static int run(verify_fn fn, const char *name, const trust_material *m, int64_t at,
               trust_result *res)
{
    char sd[PATH_MAX + 64], mp[PATH_MAX + 80], sig_digest[80];
    snprintf(sd, sizeof sd, "%s/%s", dir, name);
    snprintf(mp, sizeof mp, "%s/manifest.json", sd);
    size_t len = 0;
    char *man = slurp(mp, &len);
    if (!man) {
        printf("no manifest for %s\n", name);
        return -1000;
    }
    sha256_hex(man, len, sig_digest);
    trust_sig s = {.subject_digest = subject,
                   .subject_media_type = subject_mt,
                   .subject_size = subject_size,
                   .sig_digest = sig_digest,
                   .sig_manifest = man,
                   .sig_manifest_len = len,
                   .read_blob = read_blob,
                   .read_arg = sd,
                   .now = at};
    memset(res, 0x5a, sizeof *res);
    int rc = fn(&s, m, res);
    free(man);
    return rc;
}

/* expects rc, and for a refusal that the reason holds `want` */
static void expect(verify_fn fn, const char *name, const trust_material *m, int64_t at, int want_rc,
                   const char *want)
{
    trust_result res;
    int rc = run(fn, name, m, at, &res);
    bool ok = rc == want_rc && (rc != 0 || (want && strstr(res.reason, want))) &&
              (rc != 1 || (res.signer[0] && (!want || strstr(res.signer, want))));
    CHECK(ok);
    if (!ok)
        printf("  %s: rc %d (want %d), reason '%.*s', signer '%.*s' (want '%s')\n", name, rc,
               want_rc, (int)sizeof res.reason, res.reason, (int)sizeof res.signer, res.signer,
               want ? want : "");
}

static const char *exts =
    "printf '[req]\\ndistinguished_name=dn\\n[dn]\\n' >req.cnf && "
    "printf 'basicConstraints=critical,CA:true\\nkeyUsage=critical,keyCertSign,cRLSign\\n"
    "subjectKeyIdentifier=hash\\nauthorityKeyIdentifier=keyid\\n' >ca.ext && "
    "printf 'basicConstraints=CA:false\\nkeyUsage=critical,digitalSignature\\n"
    "extendedKeyUsage=codeSigning\\nsubjectKeyIdentifier=hash\\nauthorityKeyIdentifier=keyid\\n' "
    ">leaf.ext && "
    "printf 'basicConstraints=CA:false\\nkeyUsage=critical,digitalSignature\\n"
    "extendedKeyUsage=serverAuth\\n' >tls.ext && "
    "printf 'basicConstraints=CA:false\\nkeyUsage=critical,keyAgreement\\n"
    "extendedKeyUsage=codeSigning\\n' >noku.ext && "
    "printf 'basicConstraints=CA:false\\nkeyUsage=critical,digitalSignature,keyEncipherment\\n"
    "' >kenc.ext";

static int make_pki(void)
{
    const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    const char *dn = "/C=US/ST=WA/L=Seattle/O=acme";
    /* cd dir; the roots; an intermediate; then leaves: NAME KEYOPTS CA EXT DAYS CN */
    if (sh("cd %s && %s && "
           "openssl req -config req.cnf -x509 %s -keyout root.key -out root.pem -days 3650 "
           "-subj '%s/CN=acme root' -addext basicConstraints=critical,CA:true "
           "-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null && "
           "openssl req -config req.cnf -x509 %s -keyout evil.key -out evil.pem -days 3650 "
           "-subj '%s/CN=acme root' -addext basicConstraints=critical,CA:true "
           "-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null && "
           "openssl req -config req.cnf -new %s -keyout inter.key -out inter.csr "
           "-subj '%s/CN=acme signing CA' 2>/dev/null && "
           "openssl x509 -req -in inter.csr -CA root.pem -CAkey root.key -set_serial 2 "
           "-days 3650 -extfile ca.ext -out inter.pem 2>/dev/null",
           dir, exts, ec, dn, ec, dn, ec, dn))
        return -1;
    static const struct {
        const char *name, *key, *ca, *ext, *cn;
        int days;
    } leaves[] = {
        {"leaf", "ec", "inter", "leaf", "berth signer", 3650},
        {"rsa", "rsa", "inter", "leaf", "berth rsa signer", 3650},
        {"short", "ec", "inter", "leaf", "berth signer", 1},
        {"evilleaf", "ec", "evil", "leaf", "berth signer", 3650},
        {"tls", "ec", "inter", "tls", "berth signer", 3650},
        {"noku", "ec", "inter", "noku", "berth signer", 3650},
        {"kenc", "rsa", "inter", "kenc", "berth signer", 3650},
    };
    for (size_t i = 0; i < sizeof leaves / sizeof leaves[0]; i++) {
        const char *ko = strcmp(leaves[i].key, "rsa") ? ec : "-newkey rsa:3072 -nodes";
        /* the evil CA signs its leaf directly: leaf, then its root */
        const char *ca = !strcmp(leaves[i].ca, "evil") ? "evil" : "inter";
        if (sh("cd %s && openssl req -config req.cnf -new %s -keyout %s.key -out %s.csr "
               "-subj '%s/CN=%s' 2>/dev/null && openssl x509 -req -in %s.csr -CA %s.pem "
               "-CAkey %s.key -set_serial %zu -days %d -extfile %s.ext -out %s.pem 2>/dev/null",
               dir, ko, leaves[i].name, leaves[i].name, dn, leaves[i].cn, leaves[i].name, ca, ca,
               10 + i, leaves[i].days, leaves[i].ext, leaves[i].name))
            return -1;
    }
    /* cosign-style keys for the bundles, and self-signed certificates to load them from */
    return sh("cd %s && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "
              "cs-ec.key && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "
              "cs-rsa.key 2>/dev/null && openssl genpkey -algorithm ED25519 -out cs-ed.key && "
              "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out cs-other.key && "
              "for k in ec rsa ed other; do openssl req -config req.cnf -x509 -key cs-$k.key "
              "-subj /CN=$k -days 10 -out cs-$k.crt || exit 1; done",
              dir);
}

static int notary(const char *name, const char *format, const char *args)
{
    return sh("%s tests/fixtures/notary_sign.py --format %s --digest %s --size %lld "
              "--media-type %s --out %s/%s %s >/dev/null",
              py, format, subject, (long long)subject_size, subject_mt, dir, name, args);
}

static int sigstore(const char *name, const char *args)
{
    return sh("%s tests/fixtures/sigstore_sign.py --digest %s --size %lld --out %s/%s %s "
              ">/dev/null",
              py, subject, (long long)subject_size, dir, name, args);
}

static trust_store *store(const char *name, const char *type, const char *file)
{
    trust_store *s = calloc(1, sizeof *s);
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    s->name = strdup(name);
    s->type = strdup(type);
    s->paths = calloc(1, sizeof *s->paths);
    s->paths[0] = strdup(p);
    s->npaths = 1;
    return s;
}

static trust_key *key(const char *name)
{
    trust_key *k = calloc(1, sizeof *k);
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/cs-%s.crt", dir, name);
    k->name = strdup(name);
    k->path = strdup(p);
    gnutls_datum_t pem = {0};
    gnutls_x509_crt_t *crts = NULL;
    unsigned n = 0;
    gnutls_pubkey_t pub = NULL;
    if (gnutls_load_file(p, &pem) == 0 &&
        gnutls_x509_crt_list_import2(&crts, &n, &pem, GNUTLS_X509_FMT_PEM, 0) == 0 && n == 1 &&
        gnutls_pubkey_init(&pub) == 0 && gnutls_pubkey_import_x509(pub, crts[0], 0) == 0)
        k->pub = pub;
    for (unsigned i = 0; i < n; i++)
        gnutls_x509_crt_deinit(crts[i]);
    gnutls_free(crts);
    gnutls_free(pem.data);
    CHECK(k->pub != NULL);
    return k;
}

/* The envelope blob, truncated (mut_len) or with one byte changed (mut_pos), for the robustness
 * pass: the verifier must never accept a truncated envelope, nor crash on a changed one. */
static long mut_len = -1, mut_pos = -1;
static int mut_read(void *arg, const char *digest, size_t max, char **out, size_t *outlen)
{
    int rc = read_blob(arg, digest, max, out, outlen);
    if (rc < 0 || *outlen <= 2) return rc; /* the config ("{}") stays as it is */
    if (mut_len >= 0 && (size_t)mut_len < *outlen) *outlen = (size_t)mut_len;
    if (mut_pos >= 0 && (size_t)mut_pos < *outlen) (*out)[mut_pos] ^= 0x21;
    return 0;
}

static void test_mangled(verify_fn fn, const char *name, const trust_material *m)
{
    char sd[PATH_MAX + 64], mp[PATH_MAX + 80];
    snprintf(sd, sizeof sd, "%s/%s", dir, name);
    snprintf(mp, sizeof mp, "%s/manifest.json", sd);
    size_t len = 0, elen = 0;
    char *man = slurp(mp, &len);
    /* the layer's size, from the manifest, to step through the envelope */
    const char *sz = man ? strstr(man, "\"layers\":[{") : NULL;
    sz = sz ? strstr(sz, "\"size\":") : NULL;
    elen = sz ? strtoul(sz + 7, NULL, 10) : 0;
    CHECK(elen > 100);
    trust_sig s = {.subject_digest = subject,
                   .subject_media_type = subject_mt,
                   .subject_size = subject_size,
                   .sig_digest = "sha256:mangled",
                   .sig_manifest = man,
                   .sig_manifest_len = len,
                   .read_blob = mut_read,
                   .read_arg = sd,
                   .now = now};
    int accepted_truncated = 0, bad_rc = 0;
    size_t step = elen / 150 + 1;
    for (size_t i = 0; i < elen; i += step) {
        trust_result res;
        mut_len = (long)i;
        mut_pos = -1;
        int rc = fn(&s, m, &res);
        if (rc == 1) accepted_truncated++;
        if (rc < 0) bad_rc++;
        mut_len = -1;
        mut_pos = (long)i;
        rc = fn(&s, m, &res);
        if (rc < 0) bad_rc++;
    }
    mut_len = mut_pos = -1;
    CHECK(accepted_truncated == 0);
    CHECK(bad_rc == 0);
    free(man);
}

static void test_notary(const char *fmt)
{
    char a[PATH_MAX * 3], n[64];
    const char *leaf = "--key %1$s/leaf.key --cert %1$s/leaf.pem --cert %1$s/inter.pem "
                       "--cert %1$s/root.pem";
#define SIGN(suffix, ...)                                                                          \
    do {                                                                                           \
        snprintf(a, sizeof a, __VA_ARGS__);                                                        \
        snprintf(n, sizeof n, "%s-%s", fmt, suffix);                                               \
        CHECK(notary(n, fmt, a) == 0);                                                             \
    } while (0)
#define NAME(suffix) (snprintf(n, sizeof n, "%s-%s", fmt, suffix), n)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    SIGN("good", leaf, dir);
    char extra[PATH_MAX * 2 + 64];
    snprintf(extra, sizeof extra, "%s --legacy", leaf);
    SIGN("legacy", extra, dir);
    snprintf(extra, sizeof extra, "%s --tamper", leaf);
    SIGN("tamper", extra, dir);
    snprintf(extra, sizeof extra, "%s --expiry %lld --signing-time %lld", leaf, (long long)now - 60,
             (long long)now - 3600);
    SIGN("expiry", extra, dir);
    snprintf(extra, sizeof extra, "%s --expiry %lld", leaf, (long long)now + 86400);
    SIGN("future", extra, dir);
    snprintf(extra, sizeof extra, "%s --crit-extra io.cncf.notary.verificationPlugin", leaf);
    SIGN("plugin", extra, dir);
    snprintf(extra, sizeof extra, "%s --envelope-type application/pkcs7-signature", leaf);
    SIGN("pkcs7", extra, dir);
    /* the leaf certificate with another key's signature */
    SIGN("wrongkey",
         "--key %1$s/tls.key --cert %1$s/leaf.pem --cert %1$s/inter.pem --cert %1$s/root.pem", dir);
    SIGN("noroot", "--key %1$s/leaf.key --cert %1$s/leaf.pem --cert %1$s/inter.pem", dir);
    SIGN("kenc",
         "--key %1$s/kenc.key --cert %1$s/kenc.pem --cert %1$s/inter.pem --cert %1$s/root.pem",
         dir);
    SIGN("rsa", "--key %1$s/rsa.key --cert %1$s/rsa.pem --cert %1$s/inter.pem --cert %1$s/root.pem",
         dir);
    SIGN("short",
         "--key %1$s/short.key --cert %1$s/short.pem --cert %1$s/inter.pem --cert %1$s/root.pem",
         dir);
    SIGN("evil", "--key %1$s/evilleaf.key --cert %1$s/evilleaf.pem --cert %1$s/evil.pem", dir);
    SIGN("tls", "--key %1$s/tls.key --cert %1$s/tls.pem --cert %1$s/inter.pem --cert %1$s/root.pem",
         dir);
    SIGN("noku",
         "--key %1$s/noku.key --cert %1$s/noku.pem --cert %1$s/inter.pem --cert %1$s/root.pem",
         dir);
#pragma GCC diagnostic pop
    /* another subject: same signer, other digest */
    char keep[80];
    snprintf(keep, sizeof keep, "%s", subject);
    sha256_hex("another manifest", 16, subject);
    SIGN("other", leaf, dir);
    snprintf(subject, sizeof subject, "%s", keep);

    trust_store *ca = store("acme", "ca", "root.pem");
    CHECK(trust_store_load(ca) == 0);
    const char *ids[] = {"x509.subject: C=US, ST=WA, L=Seattle, O=acme, CN=berth signer"};
    const char *subset[] = {"x509.subject: O=acme, C=US, ST=WA"};
    const char *no_st[] = {"x509.subject: O=acme, C=US, CN=berth signer"};
    const char *escaped[] = {"x509.subject: C=US, ST=WA, O=acme, CN=berth\\, signer"};
    const char *other_id[] = {"x509.subject: C=US, ST=WA, L=Seattle, O=acme, CN=someone else"};
    const char *any[] = {"*"};
    trust_store *stores[] = {ca};
    trust_material strict = {.stores = stores, .nstores = 1, .identities = ids, .nidentities = 1};
    trust_material perm = strict, audit = strict, skip = strict, sub = strict, wrongid = strict,
                   star = strict, nostore = strict, nost = strict, esc = strict;
    nost.identities = no_st;
    esc.identities = escaped;
    perm.level = TRUST_LEVEL_PERMISSIVE;
    audit.level = TRUST_LEVEL_AUDIT;
    skip.level = TRUST_LEVEL_SKIP;
    sub.identities = subset;
    wrongid.identities = other_id;
    star.identities = any;
    nostore.nstores = 0;

    expect(trust_verify_notary, NAME("good"), &strict, now, 1, "CN=berth signer");
    expect(trust_verify_notary, NAME("good"), &sub, now, 1, "CN=berth signer");
    expect(trust_verify_notary, NAME("good"), &star, now, 1, "O=acme");
    expect(trust_verify_notary, NAME("legacy"), &strict, now, 1, "CN=berth signer");
    expect(trust_verify_notary, NAME("rsa"), &sub, now, 1, "CN=berth rsa signer");
    expect(trust_verify_notary, NAME("rsa"), &strict, now, 0, "untrusted identity");
    expect(trust_verify_notary, NAME("future"), &strict, now, 1, "CN=berth signer");
    expect(trust_verify_notary, NAME("good"), &wrongid, now, 0, "untrusted identity");
    expect(trust_verify_notary, NAME("good"), &nost, now, 0, "untrusted identity");
    expect(trust_verify_notary, NAME("good"), &esc, now, 0, "untrusted identity");
    expect(trust_verify_notary, NAME("good"), &nostore, now, 0, "untrusted CA");
    expect(trust_verify_notary, NAME("noroot"), &strict, now, 0, "self-signed root");
    expect(trust_verify_notary, NAME("kenc"), &strict, now, 0, "key usage besides");
    expect(trust_verify_notary, NAME("other"), &strict, now, 0, "other digest");
    expect(trust_verify_notary, NAME("tamper"), &strict, now, 0, "tampered payload");
    expect(trust_verify_notary, NAME("wrongkey"), &strict, now, 0, "wrong key");
    expect(trust_verify_notary, NAME("evil"), &strict, now, 0, "untrusted CA");
    expect(trust_verify_notary, NAME("tls"), &strict, now, 0, "extended key usage");
    expect(trust_verify_notary, NAME("noku"), &strict, now, 0, "digitalSignature");
    expect(trust_verify_notary, NAME("plugin"), &strict, now, 0, "verification plugin");
    expect(trust_verify_notary, NAME("pkcs7"), &strict, now, 0, "unsupported envelope");
    /* the short-lived leaf: valid today, expired in three days */
    expect(trust_verify_notary, NAME("short"), &strict, now, 1, "CN=berth signer");
    expect(trust_verify_notary, NAME("short"), &strict, now + 3 * 86400, 0, "expired certificate");
    expect(trust_verify_notary, NAME("expiry"), &strict, now, 0, "signature expiry passed");
    /* the levels: permissive logs expiry, audit also authenticity; integrity always holds */
    expect(trust_verify_notary, NAME("short"), &perm, now + 3 * 86400, 1, "CN=berth signer");
    expect(trust_verify_notary, NAME("expiry"), &perm, now, 1, "CN=berth signer");
    expect(trust_verify_notary, NAME("evil"), &perm, now, 0, "untrusted CA");
    expect(trust_verify_notary, NAME("good"), &perm, now, 1, "CN=berth signer");
    expect(trust_verify_notary, NAME("evil"), &audit, now, 1, "CN=berth signer");
    expect(trust_verify_notary, NAME("tls"), &perm, now, 0, "extended key usage");
    expect(trust_verify_notary, NAME("tls"), &audit, now, 1, "CN=berth signer");
    expect(trust_verify_notary, NAME("good"), &wrongid, now, 0, "untrusted identity");
    audit.identities = other_id;
    expect(trust_verify_notary, NAME("good"), &audit, now, 1, "CN=berth signer");
    expect(trust_verify_notary, NAME("tamper"), &audit, now, 0, "tampered payload");
    expect(trust_verify_notary, NAME("other"), &audit, now, 0, "other digest");
    expect(trust_verify_notary, NAME("tamper"), &skip, now, 1, "skip");
    /* signatureVerification.override: each check set apart from its level (1 log, 2 enforce) */
    trust_material ov = strict;
    ov.override[2] = 1; /* strict, expiry logged */
    expect(trust_verify_notary, NAME("expiry"), &ov, now, 1, "CN=berth signer");
    expect(trust_verify_notary, NAME("short"), &ov, now + 3 * 86400, 0, "expired certificate");
    ov.override[1] = 1; /* and the authentic timestamp */
    expect(trust_verify_notary, NAME("short"), &ov, now + 3 * 86400, 1, "CN=berth signer");
    trust_material ova = audit;
    ova.override[0] = 2; /* audit, authenticity enforced */
    expect(trust_verify_notary, NAME("evil"), &ova, now, 0, "untrusted CA");
    trust_material ovp = perm;
    ovp.override[2] = 2; /* permissive, expiry enforced */
    expect(trust_verify_notary, NAME("expiry"), &ovp, now, 0, "signature expiry passed");
    test_mangled(trust_verify_notary, NAME("good"), &strict);
    /* a Sigstore verifier does not take a Notary signature */
    expect(trust_verify_sigstore, NAME("good"), &strict, now, 0, "unsupported envelope");
    trust_store_free(ca);
    free(ca);
#undef SIGN
#undef NAME
}

static void test_sigstore(void)
{
    char a[PATH_MAX + 128];
#define SIGN(name, ...)                                                                            \
    do {                                                                                           \
        snprintf(a, sizeof a, __VA_ARGS__);                                                        \
        CHECK(sigstore(name, a) == 0);                                                             \
    } while (0)
    SIGN("ss-ec", "--key %s/cs-ec.key", dir);
    SIGN("ss-rsa", "--key %s/cs-rsa.key", dir);
    SIGN("ss-ed", "--key %s/cs-ed.key", dir);
    SIGN("ss-msg-ec", "--key %s/cs-ec.key --mode message", dir);
    SIGN("ss-msg-rsa", "--key %s/cs-rsa.key --mode message", dir);
    SIGN("ss-tamper", "--key %s/cs-ec.key --tamper", dir);
    SIGN("ss-msg-tamper", "--key %s/cs-ec.key --mode message --tamper", dir);
    char other[80];
    sha256_hex("another manifest", 16, other);
    SIGN("ss-other", "--key %s/cs-ec.key --statement-digest %s", dir, other);
    SIGN("ss-msg-other", "--key %s/cs-ec.key --mode message --statement-digest %s", dir, other);
    SIGN("ss-keyless", "--key %s/cs-ec.key --keyless", dir);
#undef SIGN
    trust_key *ec = key("ec"), *rsa = key("rsa"), *ed = key("ed"), *oth = key("other");
    trust_key *all[] = {oth, ec, rsa, ed}, *only_other[] = {oth};
    trust_material m = {.keys = all, .nkeys = 4}, wrong = {.keys = only_other, .nkeys = 1};
    expect(trust_verify_sigstore, "ss-ec", &m, now, 1, "ec");
    expect(trust_verify_sigstore, "ss-rsa", &m, now, 1, "rsa");
    expect(trust_verify_sigstore, "ss-ed", &m, now, 1, "ed");
    expect(trust_verify_sigstore, "ss-msg-ec", &m, now, 1, "ec");
    expect(trust_verify_sigstore, "ss-msg-rsa", &m, now, 1, "rsa");
    expect(trust_verify_sigstore, "ss-ec", &wrong, now, 0, "wrong key");
    expect(trust_verify_sigstore, "ss-msg-ec", &wrong, now, 0, "wrong key");
    expect(trust_verify_sigstore, "ss-tamper", &m, now, 0, "tampered payload");
    expect(trust_verify_sigstore, "ss-msg-tamper", &m, now, 0, "tampered payload");
    expect(trust_verify_sigstore, "ss-other", &m, now, 0, "other digest");
    expect(trust_verify_sigstore, "ss-msg-other", &m, now, 0, "other digest");
    expect(trust_verify_sigstore, "ss-keyless", &m, now, 0, "unsupported envelope");
    test_mangled(trust_verify_sigstore, "ss-ec", &m);
    test_mangled(trust_verify_sigstore, "ss-msg-rsa", &m);
    /* a Notary verifier does not take a bundle */
    expect(trust_verify_notary, "ss-ec", &m, now, 0, "unsupported envelope");
    trust_key *keys[] = {ec, rsa, ed, oth};
    for (size_t i = 0; i < 4; i++) {
        if (keys[i]->pub) gnutls_pubkey_deinit(keys[i]->pub);
        free(keys[i]->name);
        free(keys[i]->path);
        free(keys[i]);
    }
}

static void test_store_load(void)
{
    trust_store *missing = store("gone", "ca", "no-such.pem");
    CHECK(trust_store_load(missing) < 0);
    trust_store_free(missing);
    free(missing);
    trust_store *badtype = store("x", "root", "root.pem");
    CHECK(trust_store_load(badtype) < 0);
    trust_store_free(badtype);
    free(badtype);
    trust_store *notpem = store("x", "ca", "req.cnf");
    CHECK(trust_store_load(notpem) < 0);
    trust_store_free(notpem);
    free(notpem);
    /* a directory of certificates, as notation keeps its trust stores */
    CHECK(sh("mkdir -p %1$s/tsdir && cp %1$s/root.pem %1$s/evil.pem %1$s/tsdir/", dir) == 0);
    trust_store *d = store("dir", "ca", "tsdir");
    CHECK(trust_store_load(d) == 0 && d->list);
    trust_store_free(d);
    free(d);
}

int main(void)
{
    if (access("/usr/bin/python3", X_OK) == 0) py = "/usr/bin/python3";
    snprintf(dir, sizeof dir, "%s/berth-trust-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir) || tlslazy_load() < 0) {
        printf("setup failed\n");
        return 1;
    }
    sha256_hex("the subject manifest", 20, subject);
    if (make_pki() != 0) {
        printf("cannot make the test PKI with openssl\n");
        CHECK(0);
        UNIT_DONE();
    }
    now = (int64_t)time(NULL) + 2; /* every certificate is valid from before now */
    test_store_load();
    test_notary("jws");
    test_notary("cose");
    test_sigstore();
    sh("rm -rf %s", dir);
    UNIT_DONE();
}
