/*
 * s3: see s3.h. One libcurl easy handle per thread for S3 (kept alive between requests, so a
 * blob streamed in 8 MiB range GETs reuses one connection).
 */
#include "store/s3.h"
#include "util/curlx.h"
#include "util/err.h"
#include "util/log.h"

#include <ctype.h>
#include <expat.h>
#include <nettle/hmac.h>
#include <nettle/sha2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define XML_MAX (8u << 20)
#define COPY_MAX (5ULL << 30) /* CopyObject's limit; larger objects are copied in parts */
#define COPY_PART (1ULL << 30)

struct s3 {
    char *base;   /* scheme://host[:port] */
    char *host;   /* host[:port], for presigned URLs */
    char *bucket; /* percent-encoded */
    char *prefix; /* "root/" or "" */
    char *access, *secret, *region;
    char sigv4[128];
    bool skipverify;
};

static pthread_key_t s3_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void make_key(void)
{
    curlx_key_create(&s3_key);
}

/* ---- encoding ---- */

static bool unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* RFC 3986 percent-encoding with upper-case hex; '/' kept when keep_slash. */
static void enc(const char *in, bool keep_slash, char *out, size_t outlen)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < outlen; p++) {
        if (unreserved(*p) || (keep_slash && *p == '/')) {
            out[o++] = (char)*p;
        } else {
            snprintf(out + o, outlen - o, "%%%02X", *p);
            o += 3;
        }
    }
    out[o] = '\0';
}

int s3_open(s3 **out, const config_s3 *c)
{
    int rc = curlx_init();
    if (rc < 0) return rc;
    pthread_once(&key_once, make_key);
    s3 *s = calloc(1, sizeof *s);
    if (!s) return berr_set(BERR_INTERNAL, "out of memory");
    const char *region = c->region && *c->region ? c->region : "us-east-1";
    char base[1024];
    if (c->regionendpoint && *c->regionendpoint) {
        if (strstr(c->regionendpoint, "://"))
            snprintf(base, sizeof base, "%s", c->regionendpoint);
        else
            snprintf(base, sizeof base, "%s://%s", c->secure ? "https" : "http", c->regionendpoint);
    } else {
        snprintf(base, sizeof base, "https://s3.%s.amazonaws.com", region);
    }
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        base[--bl] = '\0';
    const char *h = strstr(base, "://") + 3;
    if (strchr(h, '/')) {
        free(s);
        return berr_set(BERR_CONFIG,
                        "storage.s3.regionendpoint: '%s' has a path; give "
                        "scheme://host[:port] (berth uses path-style URLs)",
                        c->regionendpoint);
    }
    char bucket[512], prefix[1024] = "";
    enc(c->bucket, false, bucket, sizeof bucket);
    if (c->rootdirectory) {
        const char *r = c->rootdirectory;
        while (*r == '/')
            r++;
        size_t rl = strlen(r);
        while (rl > 0 && r[rl - 1] == '/')
            rl--;
        if (rl) snprintf(prefix, sizeof prefix, "%.*s/", (int)rl, r);
    }
    s->base = strdup(base);
    s->host = strdup(h);
    s->bucket = strdup(bucket);
    s->prefix = strdup(prefix);
    s->access = strdup(c->accesskey);
    s->secret = strdup(c->secretkey);
    s->region = strdup(region);
    s->skipverify = c->skipverify;
    snprintf(s->sigv4, sizeof s->sigv4, "aws:amz:%s:s3", region);
    if (!s->base || !s->host || !s->bucket || !s->prefix || !s->access || !s->secret ||
        !s->region) {
        s3_close(s);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    *out = s;
    return 0;
}

void s3_close(s3 *s)
{
    if (!s) return;
    free(s->base);
    free(s->host);
    free(s->bucket);
    free(s->prefix);
    free(s->access);
    free(s->secret);
    free(s->region);
    free(s);
}

/* ---- XML (expat): each element's text, at its end ---- */

typedef struct {
    void (*cb)(void *arg, const char *name, const char *text);
    void *arg;
    char text[2048];
    size_t len;
} xml_walk;

static void XMLCALL x_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    (void)name;
    (void)attrs;
    ((xml_walk *)ud)->len = 0;
}

static void XMLCALL x_chars(void *ud, const XML_Char *s, int len)
{
    xml_walk *w = ud;
    size_t n = (size_t)len;
    if (w->len + n >= sizeof w->text) n = sizeof w->text - 1 - w->len;
    memcpy(w->text + w->len, s, n);
    w->len += n;
}

static void XMLCALL x_end(void *ud, const XML_Char *name)
{
    xml_walk *w = ud;
    w->text[w->len] = '\0';
    w->cb(w->arg, name, w->text);
    w->len = 0;
}

static int xml_each(const char *body, size_t len, void (*cb)(void *, const char *, const char *),
                    void *arg)
{
    XML_Parser p = XML_ParserCreate(NULL);
    if (!p) return berr_set(BERR_INTERNAL, "out of memory");
    xml_walk w = {.cb = cb, .arg = arg};
    XML_SetUserData(p, &w);
    XML_SetElementHandler(p, x_start, x_end);
    XML_SetCharacterDataHandler(p, x_chars);
    int ok = XML_Parse(p, body, (int)len, 1) == XML_STATUS_OK;
    XML_ParserFree(p);
    return ok ? 0 : berr_set(BERR_IO, "S3 answered with malformed XML");
}

typedef struct {
    const char *prefix;
    s3_answer *a;
    int (*cb)(void *, const char *, uint64_t, int64_t);
    void *arg;
    char key[2048];
    uint64_t size;
    int64_t mtime;
    int rc;
} answer_walk;

static int64_t parse_time(const char *t)
{
    struct tm tm = {0};
    if (!strptime(t, "%Y-%m-%dT%H:%M:%S", &tm)) return 0;
    return (int64_t)timegm(&tm);
}

static void answer_cb(void *arg, const char *name, const char *text)
{
    answer_walk *w = arg;
    s3_answer *a = w->a;
    if (!strcmp(name, "Code"))
        snprintf(a->code, sizeof a->code, "%s", text);
    else if (!strcmp(name, "Message"))
        snprintf(a->message, sizeof a->message, "%s", text);
    else if (!strcmp(name, "UploadId"))
        snprintf(a->upload_id, sizeof a->upload_id, "%s", text);
    else if (!strcmp(name, "ETag"))
        snprintf(a->etag, sizeof a->etag, "%s", text);
    else if (!strcmp(name, "NextContinuationToken"))
        snprintf(a->next, sizeof a->next, "%s", text);
    else if (!strcmp(name, "IsTruncated"))
        a->truncated = !strcmp(text, "true");
    else if (!strcmp(name, "Error"))
        a->error = true;
    else if (!strcmp(name, "Key"))
        snprintf(w->key, sizeof w->key, "%s", text);
    else if (!strcmp(name, "Size"))
        w->size = strtoull(text, NULL, 10);
    else if (!strcmp(name, "LastModified"))
        w->mtime = parse_time(text);
    else if (!strcmp(name, "Contents")) {
        size_t pl = strlen(w->prefix);
        if (w->rc == 0 && w->cb && !strncmp(w->key, w->prefix, pl))
            w->rc = w->cb(w->arg, w->key + pl, w->size, w->mtime);
        w->key[0] = '\0';
        w->size = 0;
        w->mtime = 0;
    }
}

int s3_parse(const char *prefix, const char *xml, size_t len, s3_answer *out,
             int (*cb)(void *arg, const char *key, uint64_t size, int64_t mtime), void *arg)
{
    memset(out, 0, sizeof *out);
    answer_walk w = {.prefix = prefix, .a = out, .cb = cb, .arg = arg};
    int rc = xml_each(xml, len, answer_cb, &w);
    return rc < 0 ? rc : w.rc;
}

/* ---- requests ---- */

typedef struct {
    const char *method;
    const char *key;   /* relative to the root; NULL: the bucket itself */
    const char *query; /* canonical, without '?' */
    const void *body;  /* PUT/POST body */
    size_t body_len;
    const char *const *headers; /* extra headers (signed too) */
    uint64_t range_off, range_len;
    bool range;
    s3_sink sink; /* 2xx body goes here; else it is buffered */
    void *sink_arg;
    /* out */
    long status;
    char etag[S3_ETAG_MAX];
    uint64_t length;
    char *buf; /* buffered body */
    size_t len;
    bool sink_failed, sunk;
} s3_req;

typedef struct {
    const char *data;
    size_t len, off;
} body_src;

static size_t read_cb(char *buf, size_t size, size_t n, void *ud)
{
    body_src *b = ud;
    size_t want = size * n, left = b->len - b->off;
    if (want > left) want = left;
    memcpy(buf, b->data + b->off, want);
    b->off += want;
    return want;
}

typedef struct {
    s3_req *q;
    CURL *c;
} wctx;

static size_t write_cb(char *data, size_t size, size_t n, void *ud)
{
    wctx *w = ud;
    s3_req *q = w->q;
    size_t len = size * n;
    long status = 0;
    curl_easy_getinfo(w->c, CURLINFO_RESPONSE_CODE, &status);
    if (q->sink && status >= 200 && status < 300) {
        q->sunk = true;
        if (q->sink(q->sink_arg, data, len) < 0) {
            q->sink_failed = true;
            return 0;
        }
        return len;
    }
    if (q->len + len > XML_MAX) return 0;
    char *nb = realloc(q->buf, q->len + len + 1);
    if (!nb) return 0;
    q->buf = nb;
    memcpy(q->buf + q->len, data, len);
    q->len += len;
    q->buf[q->len] = '\0';
    return len;
}

static size_t header_cb(char *data, size_t size, size_t n, void *ud)
{
    s3_req *q = ud;
    size_t len = size * n;
    if (len > 5 && !strncasecmp(data, "ETag:", 5)) {
        const char *v = data + 5;
        while (*v == ' ')
            v++;
        size_t vl = (size_t)(data + len - v);
        while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
            vl--;
        if (vl < sizeof q->etag) {
            memcpy(q->etag, v, vl);
            q->etag[vl] = '\0';
        }
    }
    return len;
}

static int s3_do_once(s3 *s, s3_req *q)
{
    CURL *c = curlx_thread_handle(s3_key);
    if (!c) return berr_set(BERR_UNAVAILABLE, "S3: libcurl could not be loaded");
    free(q->buf);
    q->buf = NULL;
    q->len = 0;
    q->etag[0] = '\0';
    q->status = 0;
    char key[4096] = "", url[8192];
    if (q->key) {
        char full[4096];
        snprintf(full, sizeof full, "%s%s", s->prefix, q->key);
        enc(full, true, key, sizeof key);
    }
    snprintf(url, sizeof url, "%s/%s%s%s%s%s", s->base, s->bucket, q->key ? "/" : "", key,
             q->query ? "?" : "", q->query ? q->query : "");
    /* no "Expect:" here to suppress 100-continue: libcurl 7.88 would sign the empty header it
     * never sends (403); RGW and AWS answer the 100 CONTINUE */
    struct curl_slist *h = curl_slist_append(NULL, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    for (size_t i = 0; q->headers && q->headers[i]; i++)
        h = curl_slist_append(h, q->headers[i]);
    char range[96];
    if (q->range) {
        if (q->range_len)
            snprintf(range, sizeof range, "Range: bytes=%llu-%llu",
                     (unsigned long long)q->range_off,
                     (unsigned long long)(q->range_off + q->range_len - 1));
        else
            snprintf(range, sizeof range, "Range: bytes=%llu-", (unsigned long long)q->range_off);
        h = curl_slist_append(h, range);
    }
    body_src src = {q->body, q->body_len, 0};
    wctx w = {q, c};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(c, CURLOPT_USERNAME, s->access);
    curl_easy_setopt(c, CURLOPT_PASSWORD, s->secret);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &w);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, q);
    if (s->skipverify) {
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (!strcmp(q->method, "HEAD")) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (!strcmp(q->method, "PUT")) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
        curl_easy_setopt(c, CURLOPT_READDATA, &src);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)q->body_len);
    } else if (!strcmp(q->method, "POST")) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->body ? (const char *)q->body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
    } else if (strcmp(q->method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
    }
    CURLcode cc = curl_easy_perform(c);
    curl_slist_free_all(h);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &q->status);
    curl_off_t cl = -1;
    curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    q->length = cl > 0 ? (uint64_t)cl : 0;
    if (q->sink_failed) return berr_set(BERR_IO, "S3 %s %s: the receiver stopped", q->method, url);
    if (cc != CURLE_OK)
        return berr_set(BERR_UNAVAILABLE, "S3 %s %s: %s", q->method, url, curl_easy_strerror(cc));
    if (q->status >= 200 && q->status < 300) return 0;
    s3_answer e = {0};
    if (q->buf) s3_parse("", q->buf, q->len, &e, NULL, NULL);
    if (q->status == 404)
        return berr_set(BERR_BLOB_UNKNOWN, "S3 %s %s: 404 %s", q->method, url, e.code);
    if (q->status == 416) return berr_set(BERR_RANGE_INVALID, "S3: range not satisfiable");
    if (q->status >= 500 || q->status == 429 || q->status == 0)
        return berr_set(BERR_UNAVAILABLE, "S3 %s %s: %ld %s %s", q->method, url, q->status, e.code,
                        e.message);
    return berr_set(BERR_IO, "S3 %s %s: %ld %s %s", q->method, url, q->status, e.code, e.message);
}

/* Retries what never reached the receiver: an unreachable endpoint, a 5xx or a 429. */
static int s3_do(s3 *s, s3_req *q)
{
    int rc = 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        if (attempt) usleep(100000u << attempt);
        rc = s3_do_once(s, q);
        if (rc != -BERR_UNAVAILABLE || q->sunk) break;
    }
    return rc;
}

static void req_free(s3_req *q)
{
    free(q->buf);
    q->buf = NULL;
}

int s3_check(s3 *s)
{
    s3_req q = {.method = "HEAD"};
    int rc = s3_do_once(s, &q);
    req_free(&q);
    if (rc == -BERR_BLOB_UNKNOWN) return berr_set(BERR_UNAVAILABLE, "S3 bucket not found");
    return rc < 0 ? berr_rewrap(BERR_UNAVAILABLE, "blob storage (S3) unreachable: ") : 0;
}

int s3_put(s3 *s, const char *key, const void *data, size_t len)
{
    s3_req q = {.method = "PUT", .key = key, .body = data, .body_len = len};
    int rc = s3_do(s, &q);
    req_free(&q);
    return rc;
}

int s3_head(s3 *s, const char *key, uint64_t *size)
{
    s3_req q = {.method = "HEAD", .key = key};
    int rc = s3_do(s, &q);
    if (rc == 0 && size) *size = q.length;
    req_free(&q);
    return rc;
}

int s3_get(s3 *s, const char *key, uint64_t off, uint64_t len, s3_sink sink, void *arg)
{
    s3_req q = {.method = "GET",
                .key = key,
                .range = off > 0 || len > 0,
                .range_off = off,
                .range_len = len,
                .sink = sink,
                .sink_arg = arg};
    int rc = s3_do(s, &q);
    req_free(&q);
    return rc;
}

typedef struct {
    char *buf;
    size_t len, max;
} membuf;

static int mem_sink(void *arg, const char *data, size_t len)
{
    membuf *m = arg;
    if (m->len + len > m->max) return -1;
    char *nb = realloc(m->buf, m->len + len + 1);
    if (!nb) return -1;
    m->buf = nb;
    memcpy(m->buf + m->len, data, len);
    m->len += len;
    m->buf[m->len] = '\0';
    return 0;
}

int s3_get_mem(s3 *s, const char *key, size_t max, char **out, size_t *len)
{
    membuf m = {.max = max};
    int rc = s3_get(s, key, 0, 0, mem_sink, &m);
    if (rc < 0) {
        bool big = m.len + 1 > m.max && m.buf;
        free(m.buf);
        return big ? berr_set(BERR_TOO_LARGE, "S3 object %s over %zu bytes", key, max) : rc;
    }
    if (!m.buf) m.buf = calloc(1, 1);
    *out = m.buf;
    *len = m.len;
    return 0;
}

int s3_delete(s3 *s, const char *key)
{
    s3_req q = {.method = "DELETE", .key = key};
    int rc = s3_do(s, &q);
    req_free(&q);
    return rc == -BERR_BLOB_UNKNOWN ? 0 : rc;
}

/* A copy answers 200 and may still carry an <Error> body (S3's documented quirk). */
static int copy_result(s3_req *q)
{
    s3_answer e = {0};
    if (q->buf && s3_parse("", q->buf, q->len, &e, NULL, NULL) == 0 && e.error)
        return berr_set(BERR_IO, "S3 copy failed: %s %s", e.code, e.message);
    return 0;
}

static void copy_source(s3 *s, const char *src, char *out, size_t outlen)
{
    char full[4096], k[4096];
    snprintf(full, sizeof full, "%s%s", s->prefix, src);
    enc(full, true, k, sizeof k);
    snprintf(out, outlen, "x-amz-copy-source: /%s/%s", s->bucket, k);
}

int s3_copy(s3 *s, const char *src, const char *dst, uint64_t size)
{
    char hsrc[8300];
    copy_source(s, src, hsrc, sizeof hsrc);
    if (size <= COPY_MAX) {
        const char *hdr[] = {hsrc, NULL};
        s3_req q = {.method = "PUT", .key = dst, .headers = hdr};
        int rc = s3_do(s, &q);
        if (rc == 0) rc = copy_result(&q);
        req_free(&q);
        return rc;
    }
    char id[S3_ID_MAX];
    int rc = s3_mpu_create(s, dst, id);
    if (rc < 0) return rc;
    int n = (int)((size + COPY_PART - 1) / COPY_PART);
    char(*etags)[S3_ETAG_MAX] = calloc((size_t)n, S3_ETAG_MAX);
    if (!etags) rc = berr_set(BERR_INTERNAL, "out of memory");
    for (int i = 0; rc == 0 && i < n; i++) {
        uint64_t a = (uint64_t)i * COPY_PART, b = a + COPY_PART > size ? size : a + COPY_PART;
        char range[96], query[S3_ID_MAX + 64];
        snprintf(range, sizeof range, "x-amz-copy-source-range: bytes=%llu-%llu",
                 (unsigned long long)a, (unsigned long long)(b - 1));
        snprintf(query, sizeof query, "partNumber=%d&uploadId=%s", i + 1, id);
        const char *hdr[] = {hsrc, range, NULL};
        s3_req q = {.method = "PUT", .key = dst, .query = query, .headers = hdr};
        rc = s3_do(s, &q);
        if (rc == 0) rc = copy_result(&q);
        s3_answer m = {0};
        if (rc == 0 && q.buf) s3_parse("", q.buf, q.len, &m, NULL, NULL);
        if (rc == 0 && !m.etag[0]) rc = berr_set(BERR_IO, "S3 part copy: no ETag");
        if (rc == 0) snprintf(etags[i], S3_ETAG_MAX, "%s", m.etag);
        req_free(&q);
    }
    if (rc == 0) rc = s3_mpu_complete(s, dst, id, etags, n);
    if (rc < 0) s3_mpu_abort(s, dst, id);
    free(etags);
    return rc;
}

int s3_mpu_create(s3 *s, const char *key, char *id)
{
    s3_req q = {.method = "POST", .key = key, .query = "uploads="};
    int rc = s3_do(s, &q);
    s3_answer m = {0};
    if (rc == 0) rc = q.buf ? s3_parse("", q.buf, q.len, &m, NULL, NULL) : 0;
    if (rc == 0 && !m.upload_id[0]) rc = berr_set(BERR_IO, "S3 CreateMultipartUpload: no UploadId");
    /* ids are used in query strings as they are: insist that they need no encoding */
    for (const char *p = m.upload_id; rc == 0 && *p; p++)
        if (!unreserved((unsigned char)*p))
            rc = berr_set(BERR_IO, "S3 upload id '%s' needs encoding", m.upload_id);
    if (rc == 0) snprintf(id, S3_ID_MAX, "%s", m.upload_id);
    req_free(&q);
    return rc;
}

int s3_mpu_part(s3 *s, const char *key, const char *id, int n, const void *data, size_t len,
                char *etag)
{
    if (!id || !*id) return berr_set(BERR_INTERNAL, "S3 part without an upload id");
    char query[S3_ID_MAX + 64];
    snprintf(query, sizeof query, "partNumber=%d&uploadId=%s", n, id);
    s3_req q = {.method = "PUT", .key = key, .query = query, .body = data, .body_len = len};
    int rc = s3_do(s, &q);
    if (rc == 0 && !q.etag[0]) rc = berr_set(BERR_IO, "S3 UploadPart: no ETag");
    if (rc == 0) snprintf(etag, S3_ETAG_MAX, "%s", q.etag);
    req_free(&q);
    return rc;
}

int s3_mpu_complete(s3 *s, const char *key, const char *id, char (*etags)[S3_ETAG_MAX], int n)
{
    size_t cap = 128 + (size_t)n * (S3_ETAG_MAX + 80), len = 0;
    char *body = malloc(cap);
    if (!body) return berr_set(BERR_INTERNAL, "out of memory");
    len += (size_t)snprintf(body + len, cap - len, "<CompleteMultipartUpload>");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(body + len, cap - len,
                                "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>", i + 1,
                                etags[i]);
    len += (size_t)snprintf(body + len, cap - len, "</CompleteMultipartUpload>");
    char query[S3_ID_MAX + 32];
    snprintf(query, sizeof query, "uploadId=%s", id);
    const char *hdr[] = {"Content-Type: application/xml", NULL};
    s3_req q = {.method = "POST",
                .key = key,
                .query = query,
                .body = body,
                .body_len = len,
                .headers = hdr};
    int rc = s3_do(s, &q);
    if (rc == 0) rc = copy_result(&q); /* the same 200-with-<Error> quirk */
    req_free(&q);
    free(body);
    return rc;
}

int s3_mpu_abort(s3 *s, const char *key, const char *id)
{
    if (!id || !*id) return 0; /* never an empty uploadId: that would delete key itself */
    char query[S3_ID_MAX + 32];
    snprintf(query, sizeof query, "uploadId=%s", id);
    s3_req q = {.method = "DELETE", .key = key, .query = query};
    int rc = s3_do(s, &q);
    req_free(&q);
    return rc == -BERR_BLOB_UNKNOWN ? 0 : rc;
}

typedef struct {
    s3 *s;
    const char *key; /* full key */
    char cur_key[2048], cur_id[S3_ID_MAX];
    char ids[16][S3_ID_MAX];
    int n;
} mpu_list;

static void mpu_list_cb(void *arg, const char *name, const char *text)
{
    mpu_list *l = arg;
    if (!strcmp(name, "Key"))
        snprintf(l->cur_key, sizeof l->cur_key, "%s", text);
    else if (!strcmp(name, "UploadId"))
        snprintf(l->cur_id, sizeof l->cur_id, "%s", text);
    else if (!strcmp(name, "Upload")) {
        if (!strcmp(l->cur_key, l->key) && l->cur_id[0] && l->n < 16)
            snprintf(l->ids[l->n++], S3_ID_MAX, "%s", l->cur_id);
        l->cur_key[0] = l->cur_id[0] = '\0';
    }
}

int s3_mpu_abort_all(s3 *s, const char *key)
{
    char full[4096], eprefix[8192], query[8300];
    snprintf(full, sizeof full, "%s%s", s->prefix, key);
    enc(full, false, eprefix, sizeof eprefix);
    snprintf(query, sizeof query, "prefix=%s&uploads=", eprefix);
    s3_req q = {.method = "GET", .query = query};
    int rc = s3_do(s, &q);
    mpu_list l = {.s = s, .key = full};
    if (rc == 0 && q.buf) rc = xml_each(q.buf, q.len, mpu_list_cb, &l);
    req_free(&q);
    for (int i = 0; rc == 0 && i < l.n; i++)
        rc = s3_mpu_abort(s, key, l.ids[i]);
    return rc;
}

/* ---- listing ---- */

int s3_list(s3 *s, const char *prefix,
            int (*cb)(void *arg, const char *key, uint64_t size, int64_t mtime), void *arg)
{
    char full[4096], eprefix[8192], token[4096] = "";
    snprintf(full, sizeof full, "%s%s", s->prefix, prefix);
    enc(full, false, eprefix, sizeof eprefix);
    for (;;) {
        char query[16384];
        /* sorted by name: continuation-token, list-type, prefix */
        if (token[0])
            snprintf(query, sizeof query, "continuation-token=%s&list-type=2&prefix=%s", token,
                     eprefix);
        else
            snprintf(query, sizeof query, "list-type=2&prefix=%s", eprefix);
        s3_req q = {.method = "GET", .query = query};
        int rc = s3_do(s, &q);
        s3_answer w = {0};
        if (rc == 0 && q.buf) rc = s3_parse(s->prefix, q.buf, q.len, &w, cb, arg);
        req_free(&q);
        if (rc) return rc < 0 ? rc : 0;
        if (!w.truncated || !w.next[0]) return 0;
        enc(w.next, false, token, sizeof token);
    }
}

/* ---- presigned URLs (SigV4 query signing) ---- */

static void hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void hmac(const uint8_t *key, size_t klen, const char *msg, uint8_t *out)
{
    struct hmac_sha256_ctx c;
    hmac_sha256_set_key(&c, klen, key);
    hmac_sha256_update(&c, strlen(msg), (const uint8_t *)msg);
    hmac_sha256_digest(&c, SHA256_DIGEST_SIZE, out);
}

int s3_presign(s3 *s, const char *key, long expires, char *url, size_t urllen)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char date[16], stamp[32];
    strftime(date, sizeof date, "%Y%m%d", &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    char full[4096], path[8192], cred[512], ecred[1024], query[2048];
    snprintf(full, sizeof full, "%s%s", s->prefix, key);
    enc(full, true, path, sizeof path);
    snprintf(cred, sizeof cred, "%s/%s/%s/s3/aws4_request", s->access, date, s->region);
    enc(cred, false, ecred, sizeof ecred);
    snprintf(query, sizeof query,
             "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=%s&X-Amz-Date=%s&X-Amz-Expires=%ld"
             "&X-Amz-SignedHeaders=host",
             ecred, stamp, expires);
    size_t creq_len = strlen(path) + strlen(query) + strlen(s->host) + strlen(s->bucket) + 128;
    char *creq = malloc(creq_len);
    if (!creq) return berr_set(BERR_INTERNAL, "out of memory");
    snprintf(creq, creq_len, "GET\n/%s/%s\n%s\nhost:%s\n\nhost\nUNSIGNED-PAYLOAD", s->bucket, path,
             query, s->host);
    uint8_t h[SHA256_DIGEST_SIZE];
    struct sha256_ctx sc;
    sha256_init(&sc);
    sha256_update(&sc, strlen(creq), (const uint8_t *)creq);
    sha256_digest(&sc, sizeof h, h);
    free(creq);
    char hh[2 * SHA256_DIGEST_SIZE + 1], sts[512];
    hex(h, sizeof h, hh);
    snprintf(sts, sizeof sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/s3/aws4_request\n%s", stamp, date,
             s->region, hh);
    char k0[300];
    snprintf(k0, sizeof k0, "AWS4%s", s->secret);
    uint8_t k1[32], k2[32], k3[32], k4[32], sig[32];
    hmac((const uint8_t *)k0, strlen(k0), date, k1);
    hmac(k1, 32, s->region, k2);
    hmac(k2, 32, "s3", k3);
    hmac(k3, 32, "aws4_request", k4);
    hmac(k4, 32, sts, sig);
    char sighex[65];
    hex(sig, 32, sighex);
    int n = snprintf(url, urllen, "%s/%s/%s?%s&X-Amz-Signature=%s", s->base, s->bucket, path, query,
                     sighex);
    return n > 0 && (size_t)n < urllen ? 0 : berr_set(BERR_INTERNAL, "presigned URL too long");
}
