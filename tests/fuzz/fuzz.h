/*
 * Shared helpers of berth's libFuzzer targets (tests/fuzz/fuzz_*.c, built by tests/fuzz/fuzz.mk).
 * FUZZ_ASSERT reports a broken invariant and aborts, which libFuzzer records as a crash with the
 * input saved as an artifact.
 */
#ifndef BERTH_FUZZ_H
#define BERTH_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The input as a C string: the bytes before the first NUL (headers and names never hold one). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* RFC 1952 gzip member holding p[0..n) in stored deflate blocks (RFC 1951 BTYPE 00), with the
 * right CRC: targets that read .tgz inputs wrap "TAR:"-prefixed inputs in it, so mutations of the
 * tar headers are not lost to CRC mismatches. */
static inline uint32_t fuzz_crc32(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static inline void fuzz_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16),
    p[3] = (uint8_t)(v >> 24);
}

static inline uint8_t *fuzz_gzip_stored(const uint8_t *p, size_t n, size_t *outlen)
{
    size_t blocks = n / 65535 + 1;
    uint8_t *out = malloc(10 + blocks * 5 + n + 8), *o = out;
    if (!out) abort();
    static const uint8_t hdr[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    memcpy(o, hdr, 10);
    o += 10;
    size_t off = 0;
    do {
        size_t k = n - off < 65535 ? n - off : 65535;
        *o++ = off + k == n ? 1 : 0; /* BFINAL, BTYPE 00 */
        o[0] = (uint8_t)k, o[1] = (uint8_t)(k >> 8);
        o[2] = (uint8_t)~k, o[3] = (uint8_t)(~k >> 8);
        o += 4;
        memcpy(o, p + off, k);
        o += k;
        off += k;
    } while (off < n);
    fuzz_le32(o, fuzz_crc32(p, n));
    fuzz_le32(o + 4, (uint32_t)n);
    o += 8;
    *outlen = (size_t)(o - out);
    return out;
}

/* Writes an archive input to fd (truncated first): as it is, or, for "TAR:" and a tar stream,
 * wrapped in a stored gzip. */
static inline void fuzz_tgz_to_fd(int fd, const uint8_t *data, size_t size)
{
    uint8_t *wrapped = NULL;
    if (size >= 4 && !memcmp(data, "TAR:", 4)) {
        wrapped = fuzz_gzip_stored(data + 4, size - 4, &size);
        data = wrapped;
    }
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size) abort();
    free(wrapped);
}

#endif
