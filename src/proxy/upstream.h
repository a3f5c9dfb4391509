/*
 * upstream: the client side of the mirror. Talks the distribution API to an upstream registry
 * through libcurl: anonymous, Basic, and the Bearer token flow (parse the WWW-Authenticate
 * challenge, fetch a token from the realm for the service and scope, cache it until it expires,
 * retry once). Redirects to blob storage are followed (without our Authorization header when the
 * host changes). A mirror's URLs are tried in order when one cannot be reached or answers 5xx.
 */
#ifndef BERTH_UPSTREAM_H
#define BERTH_UPSTREAM_H

#include "config.h"
#include "util/digest.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    long status;
    char content_type[256];
    char digest[DIGEST_STR_MAX]; /* Docker-Content-Digest, when sent */
    long retry_after;            /* seconds, from a 429 */
    long long content_length;    /* -1 when not announced */
    long long range_start;       /* a 206's Content-Range first byte, -1 when none */
    long long range_total;       /* a 206's Content-Range complete length, -1 when unknown */
    char location[2048];         /* Location, when sent */
    char *body;                  /* buffered body (manifests, error bodies) */
    size_t len;
} upstream_resp;

/* Receives a blob's bytes as they arrive; a negative return aborts the transfer. */
typedef int (*upstream_sink)(void *arg, const char *data, size_t len);

/* Loads libcurl (once); 0, or -BERR_CONFIG when it cannot be loaded. */
int upstream_global_init(void);

/* GET (or HEAD) /v2/<repo>/manifests/<ref>. Returns 0 when an upstream answered (see status),
 * -BERR_UNAVAILABLE when none could be reached in time: the mirror's timeouts, or at most
 * limit_ms in all for each URL when limit_ms > 0 (a cached tag's check). */
int upstream_manifest(const config_mirror *m, const char *repo, const char *ref, bool head,
                      long limit_ms, upstream_resp *out);
/* GET /v2/<repo>/blobs/<digest>, streaming a 200's body into sink. With from > 0, asks for the
 * bytes from that offset on (Range): a 206 whose range_start is from streams only those; an
 * upstream that ignores the Range answers 200 with the whole blob. */
int upstream_blob(const config_mirror *m, const char *repo, const char *digest, uint64_t from,
                  upstream_sink sink, void *arg, upstream_resp *out);
/* GET /v2/ on each URL in turn with at most limit_ms each: 0 once one answers below 500 (an
 * upstream that is reachable again, whether it asks for credentials or not). */
int upstream_ping(const config_mirror *m, long limit_ms, upstream_resp *out);
/* HEAD /v2/<repo>/blobs/<digest> within limit_ms: whether the upstream holds the blob for that
 * repository. */
int upstream_blob_head(const config_mirror *m, const char *repo, const char *digest, long limit_ms,
                       upstream_resp *out);
/* GET /v2/<repo>/tags/list (body buffered). */
int upstream_tags(const config_mirror *m, const char *repo, upstream_resp *out);
/* GET of any URL with the mirror's credentials (Basic), TLS settings and timeouts (for Helm
 * chart repositories): a 200's body goes to sink, or is buffered up to limit when sink is NULL. */
int upstream_get_url(const config_mirror *m, const char *url, upstream_sink sink, void *arg,
                     size_t limit, upstream_resp *out);
/* Any request, with an optional body (berth's own registry client, src/client/): Basic credentials
 * from m, and the Bearer flow when the registry asks for it (the token is then reused for later
 * requests); a 200's body goes to sink or is buffered (up to 4 MiB). */
int upstream_send(const config_mirror *m, const char *method, const char *url, const char *ctype,
                  const void *body, size_t len, const char *accept, upstream_sink sink, void *arg,
                  upstream_resp *out);
/* Supplies a streamed request body: bytes written into buf (at most len), or negative to abort. */
typedef long (*upstream_source)(void *arg, char *buf, size_t len);
/* upstream_send with a body of len bytes read from source (a blob upload). Not retried after a
 * 401: sign in with an earlier request (the POST that starts the upload). */
int upstream_send_stream(const config_mirror *m, const char *method, const char *url,
                         const char *ctype, upstream_source source, void *source_arg, size_t len,
                         upstream_resp *out);
void upstream_resp_free(upstream_resp *r);

/* ---- each upstream's last failure (for the web view, `berth status` and the metrics) ----
 * Every exchange of a mirror with its upstream (a manifest, blob, tags or chart fetch, a probe)
 * that fails is recorded under the mirror's name, after its auth retry: a refused or unreachable
 * connection ("connect"), no answer in time ("timeout"), a TLS failure ("tls"), an answer of 5xx,
 * 429, 401 or 403 ("http"), anything else ("other"). Each is counted in the metric
 * berth_upstream_errors_total{mirror,kind}; the last one's kind, text and time are kept. Not
 * recorded: a 404 (an answer), and failures to store what arrived (not the upstream's). */
typedef struct {
    uint64_t errors;          /* failed exchanges since the server started */
    char last_error[320];     /* the last failure ("" when none), e.g. "connection refused: ..." */
    char last_error_kind[16]; /* its kind */
    int64_t last_error_ms;    /* and when (ms since the epoch) */
} upstream_state;
/* The state of the upstream of the mirror named mirror (all zero when none failed). */
void upstream_state_read(const char *mirror, upstream_state *out);

/* Parses a WWW-Authenticate value into scheme and realm/service/scope (exposed for tests). */
typedef struct {
    char scheme[16];
    char realm[512], service[256], scope[512];
} upstream_challenge;
bool upstream_parse_challenge(const char *header, upstream_challenge *c);

#endif
