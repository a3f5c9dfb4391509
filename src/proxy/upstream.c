/*
 * upstream: see upstream.h. One libcurl easy handle per thread (kept in a pthread key, so
 * connections to an upstream are reused by that thread and freed when it ends). Tokens are cached
 * process-wide by (mirror, scope) until shortly before they expire.
 * libcurl is loaded on first use (util/curlx.h).
 */
#include "proxy/upstream.h"
#include "util/curlx.h"
#include "util/err.h"
#include "util/log.h"
#include "util/metrics.h"

#include <ctype.h>
#include <jansson.h>
#include <nettle/base64.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MANIFEST_MAX (4 * 1024 * 1024)
#define ERRBODY_MAX (64 * 1024)

static pthread_key_t curl_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void make_key(void)
{
    curlx_key_create(&curl_key);
}

int upstream_global_init(void)
{
    int rc = curlx_init();
    if (rc == 0) pthread_once(&key_once, make_key);
    return rc;
}

static CURL *thread_curl(void)
{
    if (upstream_global_init() < 0) return NULL;
    return curlx_thread_handle(curl_key);
}

/* ---- token cache ---- */

typedef struct token {
    char *key; /* mirror \n scope */
    char *value;
    time_t expires;
    struct token *next;
} token;

static pthread_mutex_t tok_mu = PTHREAD_MUTEX_INITIALIZER;
static token *tokens;

static char *token_get(const char *key)
{
    char *v = NULL;
    time_t now = time(NULL);
    pthread_mutex_lock(&tok_mu);
    for (token *t = tokens; t; t = t->next)
        if (!strcmp(t->key, key) && t->expires > now) v = strdup(t->value);
    pthread_mutex_unlock(&tok_mu);
    return v;
}

/* Forgets a token the upstream refused (rotated keys, revoked), so the next one is fetched. */
static void token_drop(const char *key)
{
    pthread_mutex_lock(&tok_mu);
    for (token *t = tokens; t; t = t->next)
        if (!strcmp(t->key, key)) t->expires = 0;
    pthread_mutex_unlock(&tok_mu);
}

static void token_put(const char *key, const char *value, long ttl)
{
    pthread_mutex_lock(&tok_mu);
    token *t = tokens;
    while (t && strcmp(t->key, key))
        t = t->next;
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t) abort();
        t->key = strdup(key);
        t->next = tokens;
        tokens = t;
    }
    free(t->value);
    t->value = strdup(value);
    t->expires = time(NULL) + (ttl > 30 ? ttl - 10 : ttl);
    pthread_mutex_unlock(&tok_mu);
}

/* ---- each upstream's last failure (upstream.h) ---- */

#define STATES_MAX 64
typedef struct {
    char name[128];
    upstream_state s;
} state_rec;
static state_rec states[STATES_MAX];
static size_t nstates;
static pthread_mutex_t state_mu = PTHREAD_MUTEX_INITIALIZER;

/* "scheme://host[:port]" of url, for the error text (never a path, query or credentials). */
static void url_base(const char *url, char *out, size_t len)
{
    const char *p = strstr(url, "://");
    const char *host = p ? p + 3 : url;
    const char *at = strchr(host, '@'), *end = host + strcspn(host, "/?#");
    if (at && at < end) host = at + 1;
    snprintf(out, len, "%.*s%.*s", p ? (int)(p + 3 - url) : 0, url, (int)(end - host), host);
}

/* Records how one exchange (after its auth retry) with m's upstream at url ended: rc and cc are
 * perform's result and libcurl's code, os_errno the socket's error. */
static void note(const config_mirror *m, const char *url, int rc, CURLcode cc, long os_errno,
                 long status)
{
    const char *kind = NULL;
    char why[200];
    if (rc == 0 &&
        (status >= 500 || status == 429 || status == 401 || status == 403 || status == 0)) {
        kind = "http";
        snprintf(why, sizeof why, "HTTP %ld", status);
    } else if (rc < 0 && rc != -BERR_IO) {
        if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
            cc == CURLE_COULDNT_RESOLVE_PROXY) {
            kind = "connect";
            snprintf(why, sizeof why, "connection failed: %s",
                     os_errno ? strerror((int)os_errno) : curl_easy_strerror(cc));
        } else if (cc == CURLE_OPERATION_TIMEDOUT) {
            kind = "timeout";
            snprintf(why, sizeof why, "timed out: no answer in time");
        } else if (cc == CURLE_SSL_CONNECT_ERROR || cc == CURLE_PEER_FAILED_VERIFICATION ||
                   cc == CURLE_SSL_CERTPROBLEM || cc == CURLE_SSL_CACERT_BADFILE) {
            kind = "tls";
            snprintf(why, sizeof why, "TLS: %s", curl_easy_strerror(cc));
        } else if (cc != CURLE_OK) {
            kind = "other";
            snprintf(why, sizeof why, "%s", curl_easy_strerror(cc));
        }
    }
    if (!kind) return;
    metrics_upstream_error(m->name, kind);
    char base[600];
    url_base(url, base, sizeof base);
    pthread_mutex_lock(&state_mu);
    state_rec *r = NULL;
    for (size_t i = 0; i < nstates && !r; i++)
        if (!strcmp(states[i].name, m->name)) r = &states[i];
    if (!r && nstates < STATES_MAX) {
        r = &states[nstates++];
        snprintf(r->name, sizeof r->name, "%s", m->name);
    }
    if (r) {
        r->s.errors++;
        snprintf(r->s.last_error, sizeof r->s.last_error, "%s (%s)", why, base);
        snprintf(r->s.last_error_kind, sizeof r->s.last_error_kind, "%s", kind);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r->s.last_error_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    pthread_mutex_unlock(&state_mu);
}

void upstream_state_read(const char *mirror, upstream_state *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&state_mu);
    for (size_t i = 0; i < nstates; i++)
        if (!strcmp(states[i].name, mirror)) *out = states[i].s;
    pthread_mutex_unlock(&state_mu);
}

/* ---- challenge parsing: scheme k="v", k=v, ... ---- */

bool upstream_parse_challenge(const char *h, upstream_challenge *c)
{
    memset(c, 0, sizeof *c);
    while (*h == ' ')
        h++;
    size_t n = strcspn(h, " ");
    if (n == 0 || n >= sizeof c->scheme) return false;
    memcpy(c->scheme, h, n);
    h += n;
    while (*h) {
        while (*h == ' ' || *h == ',')
            h++;
        const char *eq = strchr(h, '=');
        if (!eq) break;
        char key[32];
        size_t kl = (size_t)(eq - h);
        if (kl >= sizeof key) return false;
        memcpy(key, h, kl);
        key[kl] = '\0';
        h = eq + 1;
        char val[512];
        size_t vl = 0;
        if (*h == '"') {
            h++;
            while (*h && *h != '"' && vl < sizeof val - 1) {
                if (*h == '\\' && h[1]) h++;
                val[vl++] = *h++;
            }
            if (*h == '"') h++;
        } else {
            while (*h && *h != ',' && *h != ' ' && vl < sizeof val - 1)
                val[vl++] = *h++;
        }
        val[vl] = '\0';
        if (!strcasecmp(key, "realm"))
            snprintf(c->realm, sizeof c->realm, "%s", val);
        else if (!strcasecmp(key, "service"))
            snprintf(c->service, sizeof c->service, "%s", val);
        else if (!strcasecmp(key, "scope"))
            snprintf(c->scope, sizeof c->scope, "%s", val);
    }
    return true;
}

/* ---- one HTTP exchange ---- */

typedef struct {
    CURL *curl;
    upstream_resp *out;
    upstream_sink sink;
    void *arg;
    size_t limit;     /* for buffered bodies */
    size_t delivered; /* bytes handed to sink */
    bool sink_failed;
    char challenge[1024];
    /* a request body (berth's own client: upstream_send) */
    const char *method;
    const void *body;
    size_t body_len;
    const char *body_type;
    upstream_source source; /* a streamed request body of body_len bytes (instead of body) */
    void *source_arg;
    long limit_ms; /* > 0: the whole exchange within this (a cached tag's check, a probe) */
    uint64_t from; /* > 0: Range: bytes=from- (a fill resumed after a cut) */
    CURLcode cc;   /* the last exchange's libcurl result, and its socket error */
    long os_errno;
} xfer;

static size_t on_read(char *buf, size_t size, size_t n, void *p)
{
    xfer *x = p;
    long got = x->source(x->source_arg, buf, size * n);
    return got < 0 ? CURL_READFUNC_ABORT : (size_t)got;
}

static size_t on_header(char *buf, size_t size, size_t n, void *p)
{
    xfer *x = p;
    size_t len = size * n;
    char line[1200];
    size_t l = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, buf, l);
    line[l] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    if (!strncmp(line, "HTTP/", 5)) { /* a new response (after a redirect): start over */
        x->out->content_type[0] = x->out->digest[0] = x->challenge[0] = x->out->location[0] = '\0';
        x->out->content_length = x->out->range_start = x->out->range_total = -1;
        return len;
    }
    char *colon = strchr(line, ':');
    if (!colon) return len;
    *colon = '\0';
    char *v = colon + 1;
    while (*v == ' ')
        v++;
    if (!strcasecmp(line, "Content-Type"))
        snprintf(x->out->content_type, sizeof x->out->content_type, "%s", v);
    else if (!strcasecmp(line, "Docker-Content-Digest") && digest_parse(v, NULL) == 0)
        snprintf(x->out->digest, sizeof x->out->digest, "%s", v);
    else if (!strcasecmp(line, "WWW-Authenticate"))
        snprintf(x->challenge, sizeof x->challenge, "%s", v);
    else if (!strcasecmp(line, "Content-Length"))
        x->out->content_length = strtoll(v, NULL, 10);
    else if (!strcasecmp(line, "Content-Range")) {
        long long a, b, t;
        if (sscanf(v, "bytes %lld-%lld/%lld", &a, &b, &t) == 3 && a >= 0 && b >= a && t > b) {
            x->out->range_start = a;
            x->out->range_total = t;
        }
    } else if (!strcasecmp(line, "Retry-After"))
        x->out->retry_after = strtol(v, NULL, 10);
    else if (!strcasecmp(line, "Location"))
        snprintf(x->out->location, sizeof x->out->location, "%s", v);
    return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *p)
{
    xfer *x = p;
    size_t len = size * n;
    long status = 0;
    curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &status);
    /* a ranged answer is taken only when it starts where it was asked to */
    if (status == 206 && x->from > 0 && x->out->range_start == (long long)x->from) status = 200;
    if (status == 200 && x->sink) {
        if (x->sink(x->arg, buf, len) < 0) {
            x->sink_failed = true;
            return 0; /* aborts the transfer */
        }
        x->delivered += len;
        return len;
    }
    size_t limit = status == 200 ? x->limit : ERRBODY_MAX;
    if (x->out->len + len > limit) return 0;
    char *nb = realloc(x->out->body, x->out->len + len + 1);
    if (!nb) return 0;
    x->out->body = nb;
    memcpy(nb + x->out->len, buf, len);
    x->out->len += len;
    nb[x->out->len] = '\0';
    return len;
}

/* Performs one request; returns 0 with out->status set, or -BERR_UNAVAILABLE. */
static int perform(const config_mirror *m, const char *url, bool head, const char *accept,
                   const char *auth, xfer *x, bool blob)
{
    CURL *c = thread_curl();
    if (!c) return berr_set(BERR_INTERNAL, "curl_easy_init failed");
    x->curl = c;
    upstream_resp_free(x->out);
    memset(x->out, 0, sizeof *x->out);
    x->out->content_length = x->out->range_start = x->out->range_total = -1;
    x->challenge[0] = '\0';
    struct curl_slist *hdrs = NULL;
    char h[2200];
    if (x->from > 0) {
        snprintf(h, sizeof h, "Range: bytes=%llu-", (unsigned long long)x->from);
        hdrs = curl_slist_append(hdrs, h);
    }
    if (accept) {
        snprintf(h, sizeof h, "Accept: %s", accept);
        hdrs = curl_slist_append(hdrs, h);
    }
    if (auth) {
        snprintf(h, sizeof h, "Authorization: %s", auth);
        hdrs = curl_slist_append(hdrs, h);
    }
    if (x->body_type) {
        snprintf(h, sizeof h, "Content-Type: %s", x->body_type);
        hdrs = curl_slist_append(hdrs, h);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_NOBODY, head ? 1L : 0L);
    if (x->method && x->source) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, x->method);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, x);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->body_len);
    } else if (x->method) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, x->method);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, x->body ? x->body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
    }
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "berth");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)m->connect_ms);
    if (x->limit_ms > 0) { /* a bounded exchange: connecting included */
        if (x->limit_ms < m->connect_ms)
            curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, x->limit_ms);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, x->limit_ms);
    } else if (blob) { /* a large blob may take long: fail when it stalls, not on total time */
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME,
                         (long)(m->transfer_ms / 1000 > 0 ? m->transfer_ms / 1000 : 1));
    } else {
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(m->connect_ms + m->transfer_ms));
    }
    if (m->ca_file) curl_easy_setopt(c, CURLOPT_CAINFO, m->ca_file);
    if (m->insecure) {
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    /* large reads: each one is hashed, written and handed to streaming readers */
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 512L * 1024);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    CURLcode cc = curl_easy_perform(c);
    curl_slist_free_all(hdrs);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &x->out->status);
    x->cc = cc;
    x->os_errno = 0;
    if (cc != CURLE_OK) curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &x->os_errno);
    if (x->sink_failed) return berr_set(BERR_IO, "storing upstream data failed");
    if (cc != CURLE_OK) {
        /* a 4xx/5xx whose body we stopped reading is still an answer */
        if (x->out->status >= 400 && cc == CURLE_WRITE_ERROR) return 0;
        return berr_set(BERR_UNAVAILABLE, "upstream %s: %s", m->name, curl_easy_strerror(cc));
    }
    return 0;
}

/* "Basic <base64(user:password)>" for a mirror with credentials, else NULL (malloc'd). */
static char *basic_auth(const config_mirror *m)
{
    if (!m->username) return NULL;
    char cred[520];
    int n = snprintf(cred, sizeof cred, "%s:%s", m->username, m->password ? m->password : "");
    if (n < 0 || (size_t)n >= sizeof cred) return NULL;
    char *enc = malloc(BASE64_ENCODE_RAW_LENGTH((size_t)n) + 8);
    if (!enc) return NULL;
    memcpy(enc, "Basic ", 6);
    base64_encode_raw(enc + 6, (size_t)n, (const uint8_t *)cred);
    enc[6 + BASE64_ENCODE_RAW_LENGTH((size_t)n)] = '\0';
    return enc;
}

/* The Authorization value for a request: the cached Bearer token of key, else Basic when the
 * mirror has credentials (sent upfront: it saves a 401 round trip), else NULL (malloc'd). */
static char *auth_for(const config_mirror *m, const char *key)
{
    char *tok = token_get(key);
    if (!tok) return basic_auth(m);
    char *auth = malloc(strlen(tok) + 8);
    if (auth) sprintf(auth, "Bearer %s", tok);
    free(tok);
    return auth;
}

/* Fetches a Bearer token for the challenge; returns a malloc'd "Bearer ..." or NULL. */
static char *fetch_token(const config_mirror *m, const upstream_challenge *ch, const char *scope,
                         long limit_ms)
{
    char key[1024];
    snprintf(key, sizeof key, "%s\n%s", m->name, scope);
    char *cached = token_get(key);
    if (cached) return cached;
    CURL *c = thread_curl();
    if (!c) return NULL;
    char *esc_service = curl_easy_escape(c, ch->service, 0);
    char *esc_scope = curl_easy_escape(c, scope, 0);
    char url[2048];
    snprintf(url, sizeof url, "%s%sservice=%s&scope=%s", ch->realm,
             strchr(ch->realm, '?') ? "&" : "?", esc_service ? esc_service : "",
             esc_scope ? esc_scope : "");
    curl_free(esc_service);
    curl_free(esc_scope);
    upstream_resp r = {0};
    xfer x = {.out = &r, .limit = ERRBODY_MAX, .limit_ms = limit_ms};
    char *basic = basic_auth(m);
    char *result = NULL;
    if (perform(m, url, false, "application/json", basic, &x, false) == 0 && r.status == 200 &&
        r.body) {
        json_t *j = json_loadb(r.body, r.len, 0, NULL);
        const char *t = json_string_value(json_object_get(j, "token"));
        if (!t) t = json_string_value(json_object_get(j, "access_token"));
        json_t *exp = json_object_get(j, "expires_in");
        if (t) {
            token_put(key, t, json_is_integer(exp) ? (long)json_integer_value(exp) : 60);
            size_t len = strlen(t) + 8;
            result = malloc(len);
            if (result) snprintf(result, len, "Bearer %s", t);
        }
        json_decref(j);
    } else {
        log_warn("msg=\"upstream token request failed\" mirror=%s status=%ld", m->name, r.status);
    }
    upstream_resp_free(&r);
    free(basic);
    return result;
}

/* Runs a request against each URL in turn, answering auth challenges once. */
static int request(const config_mirror *m, const char *repo, const char *path, bool head,
                   const char *accept, long limit_ms, uint64_t from, upstream_sink sink, void *arg,
                   upstream_resp *out)
{
    char scope[400];
    snprintf(scope, sizeof scope, "repository:%s:pull", repo);
    char key[1024];
    snprintf(key, sizeof key, "%s\n%s", m->name, scope);
    int rc = berr_set(BERR_UNAVAILABLE, "upstream %s has no URL", m->name);
    for (size_t i = 0; i < m->nurls; i++) {
        char url[2048];
        snprintf(url, sizeof url, "%s/v2/%s/%s", m->urls[i], repo, path);
        xfer x = {.out = out,
                  .sink = sink,
                  .arg = arg,
                  .limit = MANIFEST_MAX,
                  .limit_ms = limit_ms,
                  .from = from};
        char *auth = auth_for(m, key);
        rc = perform(m, url, head, accept, auth, &x, sink != NULL);
        if (rc == 0 && out->status == 401 && x.challenge[0] && x.delivered == 0) {
            upstream_challenge ch;
            char *retry = NULL;
            if (upstream_parse_challenge(x.challenge, &ch)) {
                if (!strcasecmp(ch.scheme, "Bearer") && ch.realm[0]) {
                    char tkey[1024];
                    snprintf(tkey, sizeof tkey, "%s\n%s", m->name, ch.scope[0] ? ch.scope : scope);
                    if (auth) token_drop(tkey); /* the token we sent was refused */
                    retry = fetch_token(m, &ch, ch.scope[0] ? ch.scope : scope, limit_ms);
                } else if (!strcasecmp(ch.scheme, "Basic") && !auth)
                    retry = basic_auth(m);
            }
            if (retry) rc = perform(m, url, head, accept, retry, &x, sink != NULL);
            free(retry);
        }
        free(auth);
        note(m, url, rc, x.cc, x.os_errno, out->status);
        if (rc == 0 && out->status < 500) return 0;
        if (x.delivered > 0) break; /* bytes already went to the sink: no second source */
        if (rc == -BERR_IO) return rc;
    }
    if (rc == 0) return 0; /* a 5xx answer from the last URL */
    return rc;
}

static const char manifest_accept[] =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json";

int upstream_manifest(const config_mirror *m, const char *repo, const char *ref, bool head,
                      long limit_ms, upstream_resp *out)
{
    char path[400];
    snprintf(path, sizeof path, "manifests/%s", ref);
    memset(out, 0, sizeof *out);
    return request(m, repo, path, head, manifest_accept, limit_ms, 0, NULL, NULL, out);
}

int upstream_blob(const config_mirror *m, const char *repo, const char *digest, uint64_t from,
                  upstream_sink sink, void *arg, upstream_resp *out)
{
    char path[400];
    snprintf(path, sizeof path, "blobs/%s", digest);
    memset(out, 0, sizeof *out);
    return request(m, repo, path, false, NULL, 0, from, sink, arg, out);
}

int upstream_blob_head(const config_mirror *m, const char *repo, const char *digest, long limit_ms,
                       upstream_resp *out)
{
    char path[400];
    snprintf(path, sizeof path, "blobs/%s", digest);
    memset(out, 0, sizeof *out);
    return request(m, repo, path, true, NULL, limit_ms, 0, NULL, NULL, out);
}

int upstream_tags(const config_mirror *m, const char *repo, upstream_resp *out)
{
    memset(out, 0, sizeof *out);
    return request(m, repo, "tags/list?n=10000", false, "application/json", 0, 0, NULL, NULL, out);
}

int upstream_ping(const config_mirror *m, long limit_ms, upstream_resp *out)
{
    memset(out, 0, sizeof *out);
    int rc = berr_set(BERR_UNAVAILABLE, "upstream %s has no URL", m->name);
    for (size_t i = 0; i < m->nurls; i++) {
        char url[2048];
        snprintf(url, sizeof url, "%s/v2/", m->urls[i]);
        xfer x = {.out = out, .limit = ERRBODY_MAX, .limit_ms = limit_ms};
        rc = perform(m, url, false, "application/json", NULL, &x, false);
        /* a probe asks without credentials: a 401 or 403 is an answer */
        note(m, url, rc, x.cc, x.os_errno,
             out->status == 401 || out->status == 403 ? 200 : out->status);
        if (rc == 0 && out->status > 0 && out->status < 500) return 0;
        if (rc == 0)
            rc = berr_set(BERR_UNAVAILABLE, "upstream %s answered %ld", m->name, out->status);
    }
    return rc;
}

int upstream_get_url(const config_mirror *m, const char *url, upstream_sink sink, void *arg,
                     size_t limit, upstream_resp *out)
{
    memset(out, 0, sizeof *out);
    xfer x = {.out = out, .sink = sink, .arg = arg, .limit = limit};
    char *auth = basic_auth(m);
    int rc = perform(m, url, false, NULL, auth, &x, sink != NULL);
    free(auth);
    note(m, url, rc, x.cc, x.os_errno, out->status);
    return rc;
}

/* berth's own client: the Bearer token last granted for a registry (by scope), sent with every
 * later request to it until one is refused. */
static char client_scope[600];

static int send_req(const config_mirror *m, const char *method, const char *url, const char *ctype,
                    const void *body, size_t len, upstream_source source, void *source_arg,
                    const char *accept, upstream_sink sink, void *arg, upstream_resp *out)
{
    memset(out, 0, sizeof *out);
    xfer x = {.out = out,
              .sink = sink,
              .arg = arg,
              .limit = MANIFEST_MAX,
              .method = strcmp(method, "GET") ? method : NULL,
              .body = body,
              .body_len = len,
              .body_type = ctype,
              .source = source,
              .source_arg = source_arg};
    bool head = !strcmp(method, "HEAD");
    char key[1024];
    pthread_mutex_lock(&tok_mu);
    snprintf(key, sizeof key, "%s\n%s", m->name, client_scope);
    pthread_mutex_unlock(&tok_mu);
    char *auth = auth_for(m, key);
    bool had_token = auth && !strncmp(auth, "Bearer ", 7);
    int rc = perform(m, url, head, accept, auth, &x, sink != NULL);
    upstream_challenge ch;
    /* a streamed body cannot be sent twice: its caller signs in with an earlier request */
    if (rc == 0 && out->status == 401 && !source && x.delivered == 0 && x.challenge[0] &&
        upstream_parse_challenge(x.challenge, &ch) && !strcasecmp(ch.scheme, "Bearer") &&
        ch.realm[0]) {
        if (had_token) token_drop(key);
        char *retry = fetch_token(m, &ch, ch.scope, 0);
        if (retry) {
            pthread_mutex_lock(&tok_mu);
            snprintf(client_scope, sizeof client_scope, "%s", ch.scope);
            pthread_mutex_unlock(&tok_mu);
            rc = perform(m, url, head, accept, retry, &x, sink != NULL);
            free(retry);
        }
    }
    free(auth);
    return rc;
}

int upstream_send(const config_mirror *m, const char *method, const char *url, const char *ctype,
                  const void *body, size_t len, const char *accept, upstream_sink sink, void *arg,
                  upstream_resp *out)
{
    return send_req(m, method, url, ctype, body, len, NULL, NULL, accept, sink, arg, out);
}

int upstream_send_stream(const config_mirror *m, const char *method, const char *url,
                         const char *ctype, upstream_source source, void *source_arg, size_t len,
                         upstream_resp *out)
{
    return send_req(m, method, url, ctype, NULL, len, source, source_arg, NULL, NULL, NULL, out);
}

void upstream_resp_free(upstream_resp *r)
{
    free(r->body);
    r->body = NULL;
    r->len = 0;
}
