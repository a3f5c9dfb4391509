/*
 * file: see file.h.
 */
#include "util/file.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *file_read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0, got;
    char tmp[65536];
    while ((got = fread(tmp, 1, sizeof tmp, f)) > 0) {
        if (n + got + 1 > cap) {
            cap = (n + got + 1) * 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        memcpy(buf + n, tmp, got);
        n += got;
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return NULL;
    }
    if (!buf) buf = calloc(1, 1);
    if (buf) buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

void file_tmp_template(char *out, size_t len, const char *name)
{
    const char *dir = getenv("TMPDIR");
    snprintf(out, len, "%s/%s-XXXXXX", dir && *dir ? dir : "/tmp", name);
}
