/*
 * digest: see digest.h. nettle's sha256 uses the CPU's SHA extensions when present (fat build).
 */
#include "util/digest.h"
#include "util/err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const algo_names[] = {"sha256", "sha512"};
static const size_t algo_hexlen[] = {64, 128};

void digest_init(digest_ctx *c, digest_algo algo)
{
    c->algo = algo;
    if (algo == DIGEST_SHA512)
        sha512_init(&c->u.s512);
    else
        sha256_init(&c->u.s256);
}

void digest_update(digest_ctx *c, const void *data, size_t len)
{
    if (c->algo == DIGEST_SHA512)
        sha512_update(&c->u.s512, len, data);
    else
        sha256_update(&c->u.s256, len, data);
}

void digest_final(digest_ctx *c, char *out)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t raw[SHA512_DIGEST_SIZE];
    size_t n;
    if (c->algo == DIGEST_SHA512) {
        n = SHA512_DIGEST_SIZE;
        sha512_digest(&c->u.s512, n, raw);
    } else {
        n = SHA256_DIGEST_SIZE;
        sha256_digest(&c->u.s256, n, raw);
    }
    size_t p = strlen(algo_names[c->algo]);
    memcpy(out, algo_names[c->algo], p);
    out[p++] = ':';
    for (size_t i = 0; i < n; i++) {
        out[p++] = hex[raw[i] >> 4];
        out[p++] = hex[raw[i] & 15];
    }
    out[p] = '\0';
}

void digest_buf(digest_algo algo, const void *data, size_t len, char *out)
{
    digest_ctx c;
    digest_init(&c, algo);
    digest_update(&c, data, len);
    digest_final(&c, out);
}

int digest_file(const char *path, digest_algo algo, char *out, uint64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return berr_set(BERR_IO, "open %s: %s", path, strerror(errno));
    digest_ctx c;
    digest_init(&c, algo);
    /* on the heap, not thread-local: a static TLS block is zeroed into every thread's stack */
    enum { BUFSZ = 1 << 17 };
    uint8_t *buf = malloc(BUFSZ);
    if (!buf) {
        close(fd);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, BUFSZ);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return berr_set(BERR_IO, "read %s: %s", path, strerror(e));
        }
        if (n == 0) break;
        digest_update(&c, buf, (size_t)n);
        total += (uint64_t)n;
    }
    free(buf);
    close(fd);
    digest_final(&c, out);
    if (size) *size = total;
    return 0;
}

int digest_algo_parse(const char *name, digest_algo *algo)
{
    for (int i = 0; i < 2; i++)
        if (!strcmp(name, algo_names[i])) {
            *algo = (digest_algo)i;
            return 0;
        }
    return berr_set(BERR_DIGEST_INVALID, "unsupported digest algorithm");
}

const char *digest_algo_name(digest_algo algo)
{
    return algo_names[algo];
}

int digest_parse(const char *s, digest_algo *algo)
{
    const char *colon = s ? strchr(s, ':') : NULL;
    if (!colon || colon == s || colon - s > 16)
        return berr_set(BERR_DIGEST_INVALID, "invalid digest format");
    char name[17];
    memcpy(name, s, (size_t)(colon - s));
    name[colon - s] = '\0';
    digest_algo a = DIGEST_SHA256;
    if (digest_algo_parse(name, &a) < 0)
        return berr_set(BERR_DIGEST_INVALID, "unsupported digest algorithm %s", name);
    const char *hex = colon + 1;
    size_t n = strlen(hex);
    if (n != algo_hexlen[a]) return berr_set(BERR_DIGEST_INVALID, "invalid digest length");
    for (size_t i = 0; i < n; i++) {
        char ch = hex[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
            return berr_set(BERR_DIGEST_INVALID, "invalid digest: not lowercase hex");
    }
    if (algo) *algo = a;
    return 0;
}

const char *digest_hex(const char *digest)
{
    const char *c = strchr(digest, ':');
    return c ? c + 1 : digest;
}
