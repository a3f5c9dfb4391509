/*
 * file: small whole-file helpers.
 */
#ifndef BERTH_FILE_H
#define BERTH_FILE_H

#include <stddef.h>

/* The whole file, NUL-terminated (malloc'd), its length in *len when len is non-NULL; NULL when
 * it cannot be read. */
char *file_read_all(const char *path, size_t *len);

/* A mkstemp/mkdtemp template "<dir>/<name>-XXXXXX" in $TMPDIR (when set), else /tmp. */
void file_tmp_template(char *out, size_t len, const char *name);

#endif
