/*
 * strbuf: a growing, NUL-terminated text buffer (see strbuf.c).
 */
#ifndef BERTH_STRBUF_H
#define BERTH_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *buf; /* malloc'd, NUL-terminated; the owner frees it */
    size_t len, cap;
    bool oom; /* an append failed: the text is incomplete */
} strbuf;

void strbuf_add(strbuf *b, const char *s, size_t n);
void strbuf_addf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
