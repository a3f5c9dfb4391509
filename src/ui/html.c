/*
 * ui html: the /ui/ routes. GET /ui/ is the summary (ui_collect) as one server-rendered HTML page
 * with inline CSS: no script, no external asset, icons inline as data: URIs, so it works on an
 * air-gapped site and under a Content-Security-Policy that forbids everything else. GET
 * /ui/status.json is the same summary as JSON (what `berth status --json` prints).
 * Invariants: every text taken from the store, the configuration or a package is written
 * through esc() (HTML-escaped, attribute-safe); the routes are "plain" for auth (signed in, or
 * some anonymous access configured) and the summary holds only repositories the caller may pull
 * (auth_allowed per repository, at the source: collect.c).
 */
#include "auth/auth.h"
#include "ui/ui.h"
#include "util/err.h"
#include "util/strbuf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void esc(strbuf *b, const char *s)
{
    if (!s) return;
    for (; *s; s++) {
        switch (*s) {
        case '&':
            strbuf_add(b, "&amp;", 5);
            break;
        case '<':
            strbuf_add(b, "&lt;", 4);
            break;
        case '>':
            strbuf_add(b, "&gt;", 4);
            break;
        case '"':
            strbuf_add(b, "&quot;", 6);
            break;
        case '\'':
            strbuf_add(b, "&#39;", 5);
            break;
        default:
            strbuf_add(b, s, 1);
        }
    }
}

static const char *str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static json_int_t num(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* "1.5 MiB" */
void ui_fmt_size(char *out, size_t len, uint64_t n)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, len, "%" PRIu64 " B", n);
    else
        snprintf(out, len, "%.1f %s", v, units[u]);
}

/* milliseconds since the epoch -> "2026-12-07 19:55:01 UTC", or "never" for 0 */
void ui_fmt_time(char *out, size_t len, int64_t ms)
{
    if (ms <= 0) {
        snprintf(out, len, "never");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static void size_cell(strbuf *b, uint64_t n)
{
    char h[64];
    ui_fmt_size(h, sizeof h, n);
    strbuf_addf(b, "<td class=num data-bytes=\"%" PRIu64 "\">%s <small>%" PRIu64 " B</small></td>",
                n, h, n);
}

static void time_cell(strbuf *b, int64_t ms)
{
    char t[64];
    ui_fmt_time(t, sizeof t, ms);
    strbuf_addf(b, "<td class=time>%s</td>", t);
}

static const char css[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f6f8;color:#1d2733}"
    "header{background:#123b5c;color:#fff;padding:14px 24px}header h1{margin:0;font-size:22px}"
    "header p{margin:4px 0 0;color:#cfe0ee}header a{color:#fff}main{padding:16px 24px}"
    "section{background:#fff;border:1px solid #d5dde5;border-radius:6px;margin:0 0 16px;"
    "padding:12px 16px}h2{font-size:17px;margin:4px 0 8px;color:#123b5c}table+h2{margin-top:16px}"
    "table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;"
    "border-bottom:1px solid #e6ebf0;vertical-align:top}th{background:#eef3f7}"
    ".num{text-align:right;white-space:nowrap}small{color:#6b7b8c}"
    ".cards{display:flex;flex-wrap:wrap;gap:12px;margin:0 0 16px}.card{background:#fff;"
    "border:1px solid #d5dde5;border-radius:6px;padding:10px 16px;min-width:130px}"
    ".card b{display:block;font-size:22px;color:#123b5c}"
    ".bar{background:#e3e9ef;border-radius:4px;height:14px;width:320px;overflow:hidden}"
    ".bar div{background:#2f8f5b;height:14px}.bar div.full{background:#c0392b}"
    ".up{color:#fff;background:#2f8f5b;border-radius:3px;padding:1px 6px}"
    ".down{color:#fff;background:#c0392b;border-radius:3px;padding:1px 6px}"
    ".kind{background:#e8eef5;border-radius:3px;padding:1px 5px;font-size:12px;white-space:nowrap}"
    "img.icon{width:40px;height:40px;object-fit:contain;background:#eef3f7;border-radius:4px}"
    "code{font-size:12px;color:#4a5a6a}.empty{color:#6b7b8c;font-style:italic}";

static void card(strbuf *b, const char *id, const char *label, const char *value)
{
    strbuf_addf(b, "<div class=card id=\"card-%s\"><b>", id);
    esc(b, value);
    strbuf_addf(b, "</b>%s</div>", label);
}

/* A cell holding s, escaped. */
static void text_cell(strbuf *b, const char *s)
{
    strbuf_addf(b, "<td>");
    esc(b, s);
    strbuf_addf(b, "</td>");
}

/* Opens a listing: its section and heading, then the table's header row, or the empty note
 * (and the section closed) when there are no rows: false. */
static bool listing_start(strbuf *b, const char *id, const char *title, size_t rows,
                          const char *empty, const char *header)
{
    strbuf_addf(b, "<section id=%s><h2>%s</h2>", id, title);
    if (!rows) {
        strbuf_addf(b, "<p class=empty>%s</p></section>", empty);
        return false;
    }
    strbuf_addf(b, "<table>%s", header);
    return true;
}

static void render_repos(strbuf *b, json_t *repos)
{
    if (!listing_start(b, "repositories", "Repositories and tags", json_array_size(repos),
                       "No repositories.",
                       "<tr><th>Repository</th><th>Tag</th><th>Kind</th><th>Platforms</th>"
                       "<th>Size</th><th>Last pull</th><th>Digest</th></tr>"))
        return;
    size_t i, k;
    json_t *r, *t;
    json_array_foreach(repos, i, r)
    {
        json_t *tags = json_object_get(r, "tags");
        if (!json_array_size(tags)) {
            strbuf_addf(b, "<tr class=repo><td>");
            esc(b, str(r, "name"));
            strbuf_addf(b, "</td><td colspan=6 class=empty>no tags</td></tr>");
        }
        json_array_foreach(tags, k, t)
        {
            strbuf_addf(b, "<tr class=tag data-ref=\"");
            esc(b, str(r, "name"));
            strbuf_add(b, ":", 1);
            esc(b, str(t, "tag"));
            strbuf_addf(b, "\"><td>");
            if (k == 0) {
                esc(b, str(r, "name"));
                if (str(r, "mirror")) {
                    strbuf_addf(b, " <small>mirror of ");
                    esc(b, str(r, "mirror"));
                    strbuf_addf(b, "%s</small>",
                                json_is_true(json_object_get(r, "pinned")) ? ", pinned" : "");
                }
            }
            strbuf_addf(b, "</td><td>");
            esc(b, str(t, "tag"));
            strbuf_addf(b, "</td><td><span class=kind>");
            esc(b, str(t, "kind"));
            strbuf_addf(b, "</span></td><td class=platforms>");
            size_t p;
            json_t *pl;
            json_array_foreach(json_object_get(t, "platforms"), p, pl)
            {
                if (p) strbuf_addf(b, ", ");
                esc(b, json_string_value(pl));
            }
            strbuf_addf(b, "</td>");
            size_cell(b, (uint64_t)num(t, "size"));
            time_cell(b, num(t, "last_pull"));
            strbuf_addf(b, "<td><code title=\"");
            esc(b, str(t, "digest"));
            strbuf_addf(b, "\">");
            const char *d = str(t, "digest");
            char shortd[20] = "";
            if (d) snprintf(shortd, sizeof shortd, "%.19s", d);
            esc(b, shortd);
            strbuf_addf(b, "</code></td></tr>");
        }
    }
    strbuf_addf(b, "</table></section>");
}

static void render_charts(strbuf *b, json_t *charts)
{
    if (!listing_start(b, "charts", "Helm charts", json_array_size(charts), "No charts.",
                       "<tr><th>Chart</th><th>Version</th><th>App version</th>"
                       "<th>Repository</th><th>Description</th></tr>"))
        return;
    static const char *const fields[] = {"name", "version", "app_version", "repository",
                                         "description"};
    size_t i;
    json_t *c;
    json_array_foreach(charts, i, c)
    {
        strbuf_addf(b, "<tr class=chart>");
        for (size_t f = 0; f < sizeof fields / sizeof *fields; f++)
            text_cell(b, str(c, fields[f]));
        strbuf_addf(b, "</tr>");
    }
    strbuf_addf(b, "</table></section>");
}

static void render_apps(strbuf *b, json_t *apps)
{
    if (!listing_start(b, "apps", "margo applications", json_array_size(apps),
                       "No application packages.",
                       "<tr><th></th><th>Application</th><th>Version</th>"
                       "<th>Description</th><th>Package</th><th>Last pull</th></tr>"))
        return;
    size_t i;
    json_t *a;
    json_array_foreach(apps, i, a)
    {
        strbuf_addf(b, "<tr class=app><td>");
        if (str(a, "icon")) {
            strbuf_addf(b, "<img class=icon alt=\"icon\" src=\"");
            esc(b, str(a, "icon"));
            strbuf_addf(b, "\">");
        }
        strbuf_addf(b, "</td><td><b>");
        esc(b, str(a, "name"));
        strbuf_addf(b, "</b><br><small>");
        esc(b, str(a, "id"));
        strbuf_addf(b, "</small></td>");
        text_cell(b, str(a, "version"));
        text_cell(b, str(a, "description"));
        strbuf_addf(b, "<td>");
        esc(b, str(a, "repository"));
        strbuf_add(b, ":", 1);
        esc(b, str(a, "tag"));
        strbuf_addf(b, "</td>");
        time_cell(b, num(a, "last_pull"));
        strbuf_addf(b, "</tr>");
    }
    strbuf_addf(b, "</table></section>");
}

static void render_cache(strbuf *b, json_t *s)
{
    json_t *c = json_object_get(s, "cache");
    uint64_t used = (uint64_t)num(c, "used"), limit = (uint64_t)num(c, "limit");
    char hu[64], hl[64];
    ui_fmt_size(hu, sizeof hu, used);
    ui_fmt_size(hl, sizeof hl, limit);
    strbuf_addf(b, "<section id=cache><h2>Mirror cache</h2><table>");
    strbuf_addf(b,
                "<tr><th>Used</th><td id=cache-used data-bytes=\"%" PRIu64 "\">%s <small>%" PRIu64
                " B</small></td></tr>",
                used, hu, used);
    if (limit) {
        double pct = 100.0 * (double)used / (double)limit;
        strbuf_addf(b,
                    "<tr><th>Limit (cache.maxsize)</th><td id=cache-limit data-bytes=\"%" PRIu64
                    "\">%s <small>%" PRIu64 " B</small> &mdash; <span id=cache-pct>%.1f%%</span> "
                    "used<div class=bar><div%s style=\"width:%.1f%%\"></div></div></td></tr>",
                    limit, hl, limit, pct, pct >= 90 ? " class=full" : "", pct > 100 ? 100 : pct);
    } else {
        strbuf_addf(b, "<tr><th>Limit (cache.maxsize)</th><td id=cache-limit>none</td></tr>");
    }
    json_t *ratio = json_object_get(c, "hit_ratio");
    strbuf_addf(b, "<tr><th>Hit ratio</th><td id=hit-ratio>");
    if (json_is_number(ratio))
        strbuf_addf(b, "%.1f%%", 100.0 * json_number_value(ratio));
    else
        strbuf_addf(b, "no requests yet");
    strbuf_addf(b,
                " <small>(<span id=hits>%lld</span> hits, <span id=misses>%lld</span> misses)"
                "</small></td></tr></table>",
                (long long)num(c, "hits"), (long long)num(c, "misses"));

    strbuf_addf(b, "<h2>Upstreams</h2>");
    json_t *ups = json_object_get(s, "upstreams");
    if (!json_array_size(ups)) {
        strbuf_addf(b, "<p class=empty>No upstreams configured.</p>");
    } else {
        strbuf_addf(b, "<table><tr><th>Mirror</th><th>URLs</th><th>State</th><th>Last error</th>"
                       "<th>Last success</th><th>Errors</th><th>Fetched</th></tr>");
        size_t i;
        json_t *u;
        json_array_foreach(ups, i, u)
        {
            strbuf_addf(b, "<tr class=upstream data-mirror=\"");
            esc(b, str(u, "mirror"));
            strbuf_addf(b, "\"><td>");
            esc(b, str(u, "mirror"));
            strbuf_addf(b, "</td><td>");
            size_t k;
            json_t *url;
            json_array_foreach(json_object_get(u, "urls"), k, url)
            {
                if (k) strbuf_addf(b, "<br>");
                esc(b, json_string_value(url));
            }
            const char *state = str(u, "state");
            bool up = state && !strcmp(state, "up");
            strbuf_addf(b, "</td><td><span class=%s>%s</span></td><td>", up ? "up" : "down",
                        up ? "up" : "down");
            esc(b, str(u, "last_error"));
            if (num(u, "last_error_at") > 0) { /* when, and its kind */
                char t[64];
                ui_fmt_time(t, sizeof t, num(u, "last_error_at"));
                strbuf_addf(b, "<br><small class=error-at>");
                esc(b, str(u, "last_error_kind"));
                strbuf_addf(b, ", %s</small>", t);
            }
            strbuf_addf(b, "</td>");
            time_cell(b, num(u, "last_success"));
            strbuf_addf(b, "<td class=num>%lld</td>", (long long)num(u, "errors"));
            size_cell(b, (uint64_t)num(u, "fetched_bytes"));
            strbuf_addf(b, "</tr>");
        }
        strbuf_addf(b, "</table>");
    }
    json_t *pins = json_object_get(s, "pins");
    strbuf_addf(b, "<h2>Pinned content</h2><p>Patterns (cache.pin): ");
    size_t i;
    json_t *p;
    if (!json_array_size(json_object_get(pins, "patterns"))) strbuf_addf(b, "none");
    json_array_foreach(json_object_get(pins, "patterns"), i, p)
    {
        if (i) strbuf_addf(b, ", ");
        strbuf_addf(b, "<code>");
        esc(b, json_string_value(p));
        strbuf_addf(b, "</code>");
    }
    strbuf_addf(b, "</p><ul id=pinned>");
    json_array_foreach(json_object_get(pins, "repositories"), i, p)
    {
        strbuf_addf(b, "<li>");
        esc(b, json_string_value(p));
        strbuf_addf(b, "</li>");
    }
    strbuf_addf(b, "</ul></section>");
}

static void render_maint(strbuf *b, json_t *s)
{
    strbuf_addf(b, "<section id=maintenance><h2>Maintenance</h2><table>");
    json_t *gc = json_object_get(s, "gc"), *fsck = json_object_get(s, "fsck");
    char t[64], h[64];
    strbuf_addf(b, "<tr id=gc><th>Last gc</th>");
    if (json_is_object(gc)) {
        ui_fmt_time(t, sizeof t, num(gc, "finished"));
        ui_fmt_size(h, sizeof h, (uint64_t)num(gc, "bytes_removed"));
        strbuf_addf(b,
                    "<td>%s: %s, removed %lld manifests, %lld blobs (%s, %lld B), %lld orphan "
                    "files",
                    t, json_is_true(json_object_get(gc, "ok")) ? "ok" : "failed",
                    (long long)num(gc, "manifests_removed"), (long long)num(gc, "blobs_removed"), h,
                    (long long)num(gc, "bytes_removed"), (long long)num(gc, "files_removed"));
        if (str(gc, "error") && *str(gc, "error")) {
            strbuf_addf(b, " &mdash; ");
            esc(b, str(gc, "error"));
        }
        strbuf_addf(b, "</td></tr>");
    } else {
        strbuf_addf(b, "<td class=empty>never run</td></tr>");
    }
    strbuf_addf(b, "<tr id=fsck><th>Last fsck</th>");
    if (json_is_object(fsck)) {
        ui_fmt_time(t, sizeof t, num(fsck, "finished"));
        strbuf_addf(b, "<td>%s: %s, checked %lld blobs, %lld manifests: %lld problems", t,
                    json_is_true(json_object_get(fsck, "ok")) ? "ok" : "problems found",
                    (long long)num(fsck, "blobs"), (long long)num(fsck, "manifests"),
                    (long long)num(fsck, "problems"));
        if (str(fsck, "error") && *str(fsck, "error")) {
            strbuf_addf(b, " &mdash; ");
            esc(b, str(fsck, "error"));
        }
        strbuf_addf(b, "</td></tr>");
    } else {
        strbuf_addf(b, "<td class=empty>never run</td></tr>");
    }
    strbuf_addf(b, "</table></section>");
}

static void render(strbuf *b, json_t *s, const char *user)
{
    json_t *repos = json_object_get(s, "repositories");
    size_t ntags = 0, i;
    json_t *r;
    json_array_foreach(repos, i, r) ntags += json_array_size(json_object_get(r, "tags"));
    char t[64];
    ui_fmt_time(t, sizeof t, num(s, "generated"));
    strbuf_addf(b,
                "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
                "<title>berth</title><style>%s</style></head><body><header><h1>berth</h1>"
                "<p>What this site holds, as of %s &middot; viewing as ",
                css, t);
    esc(b, user && *user ? user : "anonymous");
    if (!user || !*user) strbuf_addf(b, " &middot; <a href=\"/ui/signin\">sign in</a>");
    strbuf_addf(b, "</p></header><main><div class=cards>");
    char v[64];
    snprintf(v, sizeof v, "%zu", json_array_size(repos));
    card(b, "repositories", "repositories", v);
    snprintf(v, sizeof v, "%zu", ntags);
    card(b, "tags", "tags", v);
    snprintf(v, sizeof v, "%zu", json_array_size(json_object_get(s, "charts")));
    card(b, "charts", "chart versions", v);
    snprintf(v, sizeof v, "%zu", json_array_size(json_object_get(s, "apps")));
    card(b, "apps", "margo packages", v);
    json_t *ups = json_object_get(s, "upstreams"), *u;
    size_t down = 0;
    json_array_foreach(ups, i, u) down += str(u, "state") && !strcmp(str(u, "state"), "down");
    snprintf(v, sizeof v, "%zu of %zu", down, json_array_size(ups));
    card(b, "down", "upstreams down", v);
    strbuf_addf(b, "</div>");
    if (json_is_true(json_object_get(s, "truncated")))
        strbuf_addf(b, "<p class=empty>Only the first repositories and tags are shown.</p>");
    render_repos(b, repos);
    render_charts(b, json_object_get(s, "charts"));
    render_apps(b, json_object_get(s, "apps"));
    render_cache(b, s);
    render_maint(b, s);
    strbuf_addf(b, "</main></body></html>\n");
}

static bool may_pull(void *arg, const char *repo)
{
    return auth_allowed(arg, repo, CONFIG_PULL);
}

static int reply(http_req *r, bool json)
{
    ui_shown();                 /* from now on the writer keeps the state files current */
    ui_flush(r->store, r->cfg); /* `berth status` then reads what this page shows */
    json_t *s = ui_collect(r->store, r->cfg, may_pull, r, true);
    if (!s) return berr_rewrap(BERR_INTERNAL, "web view: ");
    strbuf b = {0};
    if (json) {
        char *text = json_dumps(s, JSON_INDENT(1) | JSON_SORT_KEYS);
        if (text) strbuf_addf(&b, "%s\n", text);
        free(text);
    } else {
        render(&b, s, auth_signed_in(r) ? auth_user(r) : NULL);
    }
    json_decref(s);
    if (b.oom || !b.buf) {
        free(b.buf);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    int rc = http_reply_owned(r, 200, json ? "application/json" : "text/html; charset=utf-8", b.buf,
                              b.len);
    if (rc == 0) {
        http_add_header(r, "Content-Security-Policy",
                        "default-src 'none'; img-src data:; style-src 'unsafe-inline'");
        http_add_header(r, "X-Content-Type-Options", "nosniff");
        http_add_header(r, "Cache-Control", "no-store");
    }
    return rc;
}

static int page_end(http_req *r)
{
    return reply(r, false);
}

static int json_end(http_req *r)
{
    return reply(r, true);
}

/* /ui/signin: the page, after a sign-in (a browser asks for credentials on the challenge; the
 * page itself answers anonymous callers when some anonymous access is configured). */
static int signin_end(http_req *r)
{
    if (r->cfg->auth.enabled && !auth_signed_in(r))
        return berr_set(BERR_UNAUTHORIZED, "sign in to see what you may pull");
    return reply(r, false);
}

static int redirect_end(http_req *r)
{
    int rc = http_reply(r, 301, NULL, NULL, 0);
    if (rc == 0) http_add_header(r, "Location", "/ui/");
    return rc;
}

const http_handler ui_page_h = {.end = page_end, .offload = true};
const http_handler ui_json_h = {.end = json_end, .offload = true};
const http_handler ui_signin_h = {.end = signin_end, .offload = true};
const http_handler ui_redirect_h = {.end = redirect_end};

static int ui_match(http_req *r, int *endpoint)
{
    if (!strcmp(r->path, "/ui"))
        *endpoint = UI_ROOT;
    else if (!strcmp(r->path, "/ui/") || !strcmp(r->path, "/ui/index.html"))
        *endpoint = UI_PAGE;
    else if (!strcmp(r->path, "/ui/signin"))
        *endpoint = UI_SIGNIN;
    else if (!strcmp(r->path, "/ui/status.json"))
        *endpoint = UI_JSON;
    else
        return 0;
    return 1;
}

const http_router ui_router = {.name = "ui", .match = ui_match, .plain_errors = true};
