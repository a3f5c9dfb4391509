/*
 * ui cli: `berth status [-c config.yml] [--json]`. Reads the store directly (it may run beside
 * the server, as `berth gc` does) through the same ui_collect as the web view; what only the
 * server knows (cache hits and misses, upstream states) comes from the snapshot the server
 * writes every few seconds (runtime.json), shown with its time. --json prints the summary the
 * web view's /ui/status.json serves. Exit status 0, or 1 when the store cannot be read.
 */
#include "ui/ui.h"
#include "util/err.h"
#include "util/log.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static json_int_t num(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static void print_text(FILE *f, json_t *s)
{
    char h[64], t[64];
    size_t i, k;
    json_t *r, *x;
    json_t *repos = json_object_get(s, "repositories");
    fprintf(f, "Repositories (%zu)\n", json_array_size(repos));
    json_array_foreach(repos, i, r)
    {
        ui_fmt_size(h, sizeof h, (uint64_t)num(r, "size"));
        fprintf(f, "  %s%s%s%s  %s\n", str(r, "name"), *str(r, "mirror") ? "  (mirror of " : "",
                str(r, "mirror"), *str(r, "mirror") ? ")" : "", h);
        json_array_foreach(json_object_get(r, "tags"), k, x)
        {
            ui_fmt_size(h, sizeof h, (uint64_t)num(x, "size"));
            ui_fmt_time(t, sizeof t, num(x, "last_pull"));
            fprintf(f, "    %-20s %-10s %10s (%" PRId64 " B)  last pull %s  ", str(x, "tag"),
                    str(x, "kind"), h, (int64_t)num(x, "size"), t);
            size_t p;
            json_t *pl;
            json_array_foreach(json_object_get(x, "platforms"), p, pl)
                fprintf(f, "%s%s", p ? "," : "", json_string_value(pl));
            fputc('\n', f);
        }
    }
    json_t *charts = json_object_get(s, "charts");
    fprintf(f, "Helm charts (%zu)\n", json_array_size(charts));
    json_array_foreach(charts, i, x)
        fprintf(f, "  %-24s %-12s %s\n", str(x, "name"), str(x, "version"), str(x, "repository"));
    json_t *apps = json_object_get(s, "apps");
    fprintf(f, "margo applications (%zu)\n", json_array_size(apps));
    json_array_foreach(apps, i, x)
        fprintf(f, "  %-24s %-12s %s:%s  %s\n", str(x, "name"), str(x, "version"),
                str(x, "repository"), str(x, "tag"), str(x, "description"));
    json_t *c = json_object_get(s, "cache");
    char hl[64];
    ui_fmt_size(h, sizeof h, (uint64_t)num(c, "used"));
    ui_fmt_size(hl, sizeof hl, (uint64_t)num(c, "limit"));
    fprintf(f, "Mirror cache\n  used %s (%" PRId64 " B) of %s (%" PRId64 " B)\n", h,
            (int64_t)num(c, "used"), num(c, "limit") ? hl : "no limit", (int64_t)num(c, "limit"));
    json_t *ratio = json_object_get(c, "hit_ratio");
    ui_fmt_time(t, sizeof t, num(c, "runtime_as_of"));
    if (json_is_number(ratio))
        fprintf(f, "  hit ratio %.1f%% (%" PRId64 " hits, %" PRId64 " misses; server as of %s)\n",
                100.0 * json_number_value(ratio), (int64_t)num(c, "hits"),
                (int64_t)num(c, "misses"), t);
    else
        fprintf(f, "  hit ratio: no requests yet (server as of %s)\n", t);
    json_t *ups = json_object_get(s, "upstreams");
    fprintf(f, "Upstreams (%zu)\n", json_array_size(ups));
    json_array_foreach(ups, i, x)
    {
        fprintf(f, "  %-24s %-4s errors %" PRId64, str(x, "mirror"), str(x, "state"),
                (int64_t)num(x, "errors"));
        if (*str(x, "last_error")) fprintf(f, "  last error: %s", str(x, "last_error"));
        if (num(x, "last_error_at") > 0) {
            ui_fmt_time(t, sizeof t, num(x, "last_error_at"));
            fprintf(f, " (%s, %s)", str(x, "last_error_kind"), t);
        }
        fputc('\n', f);
    }
    json_t *pins = json_object_get(s, "pins");
    fprintf(f, "Pinned (%zu patterns):", json_array_size(json_object_get(pins, "patterns")));
    json_array_foreach(json_object_get(pins, "repositories"), i, x)
        fprintf(f, " %s", json_string_value(x));
    fputc('\n', f);
    json_t *gc = json_object_get(s, "gc"), *fsck = json_object_get(s, "fsck");
    if (json_is_object(gc)) {
        ui_fmt_time(t, sizeof t, num(gc, "finished"));
        fprintf(f,
                "Last gc: %s, %s, removed %" PRId64 " manifests, %" PRId64 " blobs (%" PRId64
                " B)\n",
                t, json_is_true(json_object_get(gc, "ok")) ? "ok" : "failed",
                (int64_t)num(gc, "manifests_removed"), (int64_t)num(gc, "blobs_removed"),
                (int64_t)num(gc, "bytes_removed"));
    } else {
        fprintf(f, "Last gc: never\n");
    }
    if (json_is_object(fsck)) {
        ui_fmt_time(t, sizeof t, num(fsck, "finished"));
        fprintf(f,
                "Last fsck: %s, %" PRId64 " blobs, %" PRId64 " manifests, %" PRId64 " problems\n",
                t, (int64_t)num(fsck, "blobs"), (int64_t)num(fsck, "manifests"),
                (int64_t)num(fsck, "problems"));
    } else {
        fprintf(f, "Last fsck: never\n");
    }
}

int ui_status_cli(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *path = NULL;
    bool json = false;
    int c;
    optind = 1;
    /* argv[0] is "status" */
    while ((c = getopt_long(argc, argv, "c:jh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            puts("usage: berth status [-c config.yml] [--json]");
            return 0;
        default:
            fputs("usage: berth status [-c config.yml] [--json]\n", stderr);
            return 2;
        }
    }
    if (!path && optind < argc) path = argv[optind];
    config cfg;
    if (config_load(&cfg, path) < 0) {
        fprintf(stderr, "berth status: %s\n", berr_msg());
        return 1;
    }
    log_set_level((log_level)cfg.log_level);
    store *st;
    if (store_open(&st, &cfg) < 0) {
        fprintf(stderr, "berth status: %s\n", berr_msg());
        config_free(&cfg);
        return 1;
    }
    json_t *s = ui_collect(st, &cfg, NULL, NULL, false);
    int rc = 0;
    if (!s) {
        fprintf(stderr, "berth status: %s\n", berr_msg());
        rc = 1;
    } else if (json) {
        char *text = json_dumps(s, JSON_INDENT(1) | JSON_SORT_KEYS);
        if (text) puts(text);
        free(text);
    } else {
        print_text(stdout, s);
    }
    json_decref(s);
    store_close(st);
    config_free(&cfg);
    return rc;
}
