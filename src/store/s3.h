/*
 * s3: the S3 protocol as berth's blob backend needs it (store/blobs3.c), over libcurl
 * (util/curlx.h). Requests are signed with SigV4 by libcurl (CURLOPT_AWS_SIGV4, with the payload
 * declared UNSIGNED-PAYLOAD); presigned GET URLs are signed here (nettle HMAC-SHA256). URLs are
 * path-style, <endpoint>/<bucket>/<root>/<key>, the key percent-encoded except A-Za-z0-9-._~/
 * and query strings written already canonical (sorted, encoded): what RGW and AWS both verify.
 * Response XML (upload ids, listings, errors) is read with expat.
 *
 * Keys passed in are relative to storage.s3.rootdirectory. Errors: a 404 is -BERR_BLOB_UNKNOWN,
 * an unreachable endpoint, a timeout or a 5xx -BERR_UNAVAILABLE, anything else -BERR_IO naming
 * the S3 error code; idempotent requests are retried twice on the unreachable cases.
 */
#ifndef BERTH_S3_H
#define BERTH_S3_H

#include "config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct s3 s3;

/* Receives a GET's bytes; a negative return aborts the transfer. */
typedef int (*s3_sink)(void *arg, const char *data, size_t len);

int s3_open(s3 **out, const config_s3 *c);
void s3_close(s3 *s);
/* HEAD of the bucket: 0 when the endpoint answers and the bucket is there. */
int s3_check(s3 *s);
int s3_put(s3 *s, const char *key, const void *data, size_t len);
/* Size of an object; -BERR_BLOB_UNKNOWN when absent. */
int s3_head(s3 *s, const char *key, uint64_t *size);
/* Bytes [off, off+len) of an object into sink (len 0: to the end). */
int s3_get(s3 *s, const char *key, uint64_t off, uint64_t len, s3_sink sink, void *arg);
/* A small object into memory (at most max bytes; larger is -BERR_TOO_LARGE). */
int s3_get_mem(s3 *s, const char *key, size_t max, char **out, size_t *len);
/* Deletes an object (absent is fine). */
int s3_delete(s3 *s, const char *key);
/* Server-side copy of an object of size bytes (multipart copy past 5 GiB). */
int s3_copy(s3 *s, const char *src, const char *dst, uint64_t size);

/* Multipart uploads. Part numbers start at 1; etags are kept by the caller. */
#define S3_ID_MAX 256
#define S3_ETAG_MAX 80
int s3_mpu_create(s3 *s, const char *key, char *id);
int s3_mpu_part(s3 *s, const char *key, const char *id, int n, const void *data, size_t len,
                char *etag);
int s3_mpu_complete(s3 *s, const char *key, const char *id, char (*etags)[S3_ETAG_MAX], int n);
int s3_mpu_abort(s3 *s, const char *key, const char *id);
/* Aborts every multipart upload of key (ones whose id was lost with a killed process). */
int s3_mpu_abort_all(s3 *s, const char *key);

/* Every object under prefix: cb(arg, key relative to the root, size, last-modified as epoch
 * seconds); cb returns 0 to go on. */
int s3_list(s3 *s, const char *prefix,
            int (*cb)(void *arg, const char *key, uint64_t size, int64_t mtime), void *arg);

/* What berth reads from S3's XML answers (exposed for the fuzz target). */
typedef struct {
    bool error; /* an <Error> answer (a copy may carry one with status 200) */
    char code[128], message[512];
    char upload_id[S3_ID_MAX]; /* CreateMultipartUpload */
    char etag[S3_ETAG_MAX];    /* UploadPartCopy */
    char next[2048];           /* ListObjectsV2: continuation token */
    bool truncated;
} s3_answer;
/* Parses an answer; each listed object (<Contents>) whose key starts with prefix goes to cb
 * (may be NULL) with the prefix removed. 0, -BERR_IO for malformed XML, or cb's non-zero return
 * (which stops the walk). */
int s3_parse(const char *prefix, const char *xml, size_t len, s3_answer *out,
             int (*cb)(void *arg, const char *key, uint64_t size, int64_t mtime), void *arg);

/* A presigned GET URL for key valid for expires seconds. */
int s3_presign(s3 *s, const char *key, long expires, char *url, size_t urllen);

#endif
