/*
 * httpparse: the pure parsers behind the byte-range headers of the blob API, kept out of the
 * handlers so they can be tested and fuzzed on plain strings (tests/fuzz/fuzz_range.c).
 */
#ifndef BERTH_HTTPPARSE_H
#define BERTH_HTTPPARSE_H

#include <stdbool.h>
#include <stdint.h>

typedef enum { REG_RANGE_NONE, REG_RANGE_OK, REG_RANGE_UNSATISFIABLE } reg_range_result;

/* Range request header of a GET (RFC 9110): "bytes=a-b", "bytes=a-", "bytes=-n" against a body
 * of size bytes. REG_RANGE_OK stores a window with off + len <= size and len >= 1; anything else,
 * including multiple ranges or a NULL header, is REG_RANGE_NONE (answer the whole body). */
reg_range_result reg_parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len);

/* Content-Range of an upload chunk: "a-b", "bytes a-b", "bytes=a-b", optionally "/total".
 * Stores the inclusive bounds and returns true when well formed; it does not check a <= b or
 * where the session stands (the handler does). */
bool reg_parse_content_range(const char *h, uint64_t *first, uint64_t *last);

#endif
