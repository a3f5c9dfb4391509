/*
 * ui: the read-only web view under /ui/ and `berth status`. Both show one summary, built once by
 * ui_collect as JSON (repositories and tags, Helm charts, margo applications, the mirror cache,
 * upstreams, pins, the last gc and fsck): the page is that JSON rendered as HTML (html.c), the
 * terminal shows it as text or prints it (cli.c), so the numbers cannot differ.
 *
 * State kept for the view (state.c), as small JSON files in <root>/ui-state/, each replaced
 * whole (temporary file, fsync, rename), so a reader sees the previous or the next version:
 *  - gc.json, fsck.json: the last gc and fsck run (by any process: `berth gc`, the server);
 *  - pulls.json: the last pull of each repository:reference, noted in memory on each manifest
 *    GET (a lock and a table slot, no I/O) and written at most every few seconds by one thread;
 *  - runtime.json: what only the server knows (cache hits and misses, upstream states), written
 *    by the same thread, so `berth status` reads it without asking the server.
 */
#ifndef BERTH_UI_H
#define BERTH_UI_H

#include "config.h"
#include "http/http.h"
#include "store/store.h"

#include <jansson.h>
#include <stdbool.h>

/* Router for /ui (a redirect), /ui/ (the page), /ui/signin and /ui/status.json; serve.c's route
 * table gives them GET and HEAD and their access (signed in, or some anonymous access). */
enum { UI_ROOT, UI_PAGE, UI_SIGNIN, UI_JSON };
extern const http_router ui_router;
extern const http_handler ui_page_h, ui_json_h, ui_signin_h, ui_redirect_h;

/* Which repositories the viewer may see (NULL: all, for `berth status`). */
typedef bool (*ui_visible_fn)(void *arg, const char *repo);
/* The whole summary as JSON (new reference), or NULL with the error set. live: this process is
 * the server (counters and upstream states are its own), else they come from runtime.json. */
json_t *ui_collect(store *st, const config *cfg, ui_visible_fn visible, void *arg, bool live);

/* "1.5 MiB"; "2026-12-07 19:55:01 UTC" from milliseconds ("never" for 0) (html.c). */
void ui_fmt_size(char *out, size_t len, uint64_t n);
void ui_fmt_time(char *out, size_t len, int64_t ms);

/* `berth status [-c config.yml] [--json]`; argv after "status". */
int ui_status_cli(int argc, char **argv);

/* ---- state.c ---- */
/* Notes a pull of repo:ref (a tag or a digest) now; cheap, for the request path. */
void ui_pull_note(const char *repo, const char *ref);
/* The server's background writer of pulls.json and runtime.json (every few seconds): started
 * by ui_start when the server has mirrors, else by the first pull noted or page shown (ui_shown).
 */
void ui_start(const config *cfg, store *st);
void ui_shown(void);
void ui_stop(void);
/* Writes pending pulls and the runtime snapshot now (live: this process is the server). */
void ui_flush(store *st, const config *cfg);
/* Last pulls: {"repo\tref": ms}, merged from the file and memory (new reference). */
json_t *ui_pulls(store *st);
/* Records the end of a gc (not a dry run) or fsck, from store/gc.c and store/fsck.c. */
void ui_state_gc(store *st, const store_gc_opts *o, int rc);
void ui_state_fsck(store *st, long blobs, long manifests, long problems, int rc);
/* A state file's JSON (new reference), or NULL when it was never written. */
json_t *ui_state_read(store *st, const char *name);
/* The runtime part (cache counters, upstreams) as this server sees it now. */
json_t *ui_runtime(const config *cfg);

#endif
