/* Unit tests for the metadata backends (src/store/meta_*.c) through the store_meta_ops boundary:
 * one scenario (blobs, manifests with children, tags, charts and their change log, referrers,
 * pagination, gc, mirror eviction, leases, fsck walkers) run unchanged against every backend.
 * SQLite always; PostgreSQL on a throwaway cluster started the way tests/pg.sh does (initdb and
 * pg_ctl as the postgres user), or on the server named by BERTH_TEST_PG_HOST/_PORT/_USER/
 * _PASSWORD/_DBNAME. When PostgreSQL cannot be had, the run says so and counts the skip; with
 * BERTH_TEST_PG=required the skip is a failure instead. A SQLite file from before schema versions
 * were recorded migrates in place. A statement failing at any point of a write (meta_sql_fail_at)
 * leaves nothing of it committed. It is the net under the backends' code:
 * every error code, message fragment and transaction boundary the store relies on is checked. */
#include "unit.h"
#include "store/internal.h"
#include "store/sqldrv.h"
#include "util/err.h"

#include <limits.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int unit_skip;
#define SKIP(...)                                                                                  \
    do {                                                                                           \
        unit_skip++;                                                                               \
        printf("SKIP - ");                                                                         \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
    } while (0)

static const char *backend = "?";
/* rc is -code and the thread's error detail contains msg (NULL: any) */
#define CHECK_ERR(rc, code, msg) CHECK(err_is((rc), (code), (msg), __LINE__))

static bool err_is(int rc, berr code, const char *msg, int line)
{
    if (rc == -(int)code && (!msg || strstr(berr_msg(), msg))) return true;
    printf("  [%s] line %d: got %d \"%s\", want %d \"%s\"\n", backend, line, rc, berr_msg(),
           -(int)code, msg ? msg : "");
    return false;
}

#define OK(expr)                                                                                   \
    do {                                                                                           \
        int ok_rc_ = (expr);                                                                       \
        if (ok_rc_ != 0) printf("  [%s] %s: %d \"%s\"\n", backend, #expr, ok_rc_, berr_msg());     \
        CHECK(ok_rc_ == 0);                                                                        \
    } while (0)

/* "sha256:" and 64 copies of c */
static const char *dg(char c)
{
    static char buf[256][80];
    char *b = buf[(unsigned char)c];
    memcpy(b, "sha256:", 7);
    memset(b + 7, c, 64);
    b[71] = '\0';
    return b;
}

static int placed;
static int place_ok(void *arg)
{
    (void)arg;
    placed++;
    return 0;
}
static int place_fail(void *arg)
{
    (void)arg;
    return berr_set(BERR_IO, "placing failed on purpose");
}

static bool in_list(const store_list *l, const char *v)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->items[i], v)) return true;
    return false;
}

/* a manifest's bytes, with a NUL inside: they travel as bytes, not as a C string */
static const char MAN[] = "{\"schemaVersion\":2,\"x\":\"\0bytes\"}";
#define MAN_LEN (sizeof MAN - 1)
#define MAN_NUL 24

/* How many charts store_meta_ops.charts lists (-1 on error). */
static long ncharts(store_meta *m, const char *prefix, bool exact)
{
    store_chart_list cl = {0};
    long n = m->ops->charts(m, prefix, exact, &cl) == 0 ? (long)cl.n : -1;
    store_chart_list_free(&cl);
    return n;
}

/* How many repositories the chart change log names after since under prefix (-1 on error, or
 * when repo is not among them). */
static long nchanged(store_meta *m, int64_t since, const char *prefix, const char *repo)
{
    store_list l = {0};
    long n = m->ops->charts_changes(m, since, prefix, &l) == 0 ? (long)l.n : -1;
    if (repo && !in_list(&l, repo)) n = -1;
    store_list_free(&l);
    return n;
}

static store_manifest_put_req image(const char *repo, const char *digest, const char **blobs,
                                    size_t nblobs, const char **tags, size_t ntags)
{
    store_manifest_put_req q = {
        .repo = repo,
        .digest = digest,
        .media_type = "application/vnd.oci.image.manifest.v1+json",
        .content = MAN,
        .size = MAN_LEN,
        .blobs = blobs,
        .nblobs = nblobs,
        .tags = tags,
        .ntags = ntags,
    };
    return q;
}

static void man_free(store_manifest *m)
{
    free(m->content);
    free(m->media_type);
    memset(m, 0, sizeof *m);
}

typedef struct {
    store_meta *m;
    int seen;
} locked_ctx;

static int locked_reads(void *arg)
{
    locked_ctx *l = arg;
    uint64_t size = 0;
    /* reads through other calls while the write lock is held (must not wait for the lock) */
    int rc = l->m->ops->blob_lookup(l->m, "a/app", dg('1'), &size);
    if (rc == 0 && size == 10) l->seen++;
    rc = l->m->ops->repo_exists(l->m, "a/app");
    if (rc == 0) l->seen++;
    return 0;
}

static int count_blob(void *arg, const char *digest, uint64_t size)
{
    (void)digest;
    (void)size;
    (*(int *)arg)++;
    return 0;
}

typedef struct {
    int n;
    bool content_ok;
} man_walk;

static int count_manifest(void *arg, const char *repo, const char *digest, const char *content,
                          size_t size)
{
    man_walk *w = arg;
    (void)digest;
    w->n++;
    if (!strcmp(repo, "a/app") && size == MAN_LEN && !memcmp(content, MAN, MAN_LEN))
        w->content_ok = true;
    return 0;
}

static int stop_walk(void *arg, const char *digest, uint64_t size)
{
    (void)digest;
    (void)size;
    (*(int *)arg)++;
    return 7; /* a callback's non-zero return stops the walk and is returned */
}

static void problem(void *arg, const char *p)
{
    store_list_add(arg, p);
}

static void scenario(store_meta *m)
{
    const store_meta_ops *o = m->ops;
    uint64_t size = 0;
    store_list l = {0};

    /* ---- blobs: commit, lookup, link, unlink ---- */
    CHECK_ERR(o->blob_lookup(m, NULL, dg('1'), &size), BERR_BLOB_UNKNOWN, "blob unknown");
    placed = 0;
    OK(o->blob_commit(m, "a/app", dg('1'), 10, place_ok, NULL));
    CHECK(placed == 1);
    size = 0;
    OK(o->blob_lookup(m, "a/app", dg('1'), &size));
    CHECK(size == 10);
    size = 0;
    OK(o->blob_lookup(m, NULL, dg('1'), &size));
    CHECK(size == 10);
    CHECK_ERR(o->blob_lookup(m, "b/app", dg('1'), &size), BERR_BLOB_UNKNOWN, dg('1'));
    /* a failing place step rolls the whole commit back, keeping place's error */
    CHECK_ERR(o->blob_commit(m, "a/app", dg('9'), 5, place_fail, NULL), BERR_IO,
              "placing failed on purpose");
    CHECK_ERR(o->blob_lookup(m, NULL, dg('9'), NULL), BERR_BLOB_UNKNOWN, NULL);
    CHECK_ERR(o->repo_exists(m, "b/app"), BERR_NAME_UNKNOWN, "repository unknown");
    OK(o->blob_link(m, "b/app", "a/app", dg('1')));
    OK(o->blob_lookup(m, "b/app", dg('1'), &size));
    OK(o->repo_exists(m, "b/app"));
    CHECK_ERR(o->blob_link(m, "c/app", "nope/app", dg('1')), BERR_BLOB_UNKNOWN, NULL);
    CHECK_ERR(o->repo_exists(m, "c/app"), BERR_NAME_UNKNOWN, NULL); /* rolled back */
    OK(o->blob_unlink(m, "b/app", dg('1')));
    CHECK_ERR(o->blob_unlink(m, "b/app", dg('1')), BERR_BLOB_UNKNOWN, "blob unknown to registry");
    CHECK_ERR(o->blob_lookup(m, "b/app", dg('1'), &size), BERR_BLOB_UNKNOWN, NULL);
    OK(o->blob_lookup(m, "a/app", dg('1'), &size)); /* the other link stays */

    /* ---- manifests: blobs must be linked; new_blobs are recorded in the same transaction ---- */
    const char *m1_blobs[] = {dg('1'), dg('2')};
    const char *m1_tags[] = {"v1"};
    store_manifest_put_req q = image("a/app", dg('a'), m1_blobs, 2, m1_tags, 1);
    CHECK_ERR(o->manifest_put(m, &q), BERR_MANIFEST_BLOB_UNKNOWN, dg('2'));
    store_new_blob nb = {.size = 20};
    snprintf(nb.digest, sizeof nb.digest, "%s", dg('2'));
    q.new_blobs = &nb;
    q.nnew_blobs = 1;
    OK(o->manifest_put(m, &q));
    OK(o->blob_lookup(m, "a/app", dg('2'), &size));
    CHECK(size == 20);
    store_manifest man = {0};
    OK(o->manifest_get(m, "a/app", "v1", &man));
    CHECK_STR(man.digest, dg('a'));
    CHECK(man.size == MAN_LEN && man.content && !memcmp(man.content, MAN, MAN_LEN));
    CHECK(man.content && man.content[MAN_NUL] == '\0' && man.content[MAN_LEN] == '\0');
    CHECK(man.media_type && !strcmp(man.media_type, q.media_type));
    CHECK(man.checked == 0);
    man_free(&man);
    memset(&man, 0, sizeof man);
    OK(o->manifest_get(m, "a/app", dg('a'), &man));
    CHECK_STR(man.digest, dg('a'));
    CHECK(man.size == MAN_LEN);
    man_free(&man);
    CHECK_ERR(o->manifest_get(m, "a/app", "nope", &man), BERR_MANIFEST_UNKNOWN,
              "manifest unknown to registry");
    CHECK_ERR(o->manifest_get(m, "b/app", dg('a'), &man), BERR_MANIFEST_UNKNOWN, NULL);

    /* a check that fails inside the transaction leaves nothing behind */
    store_manifest_put_req qc = image("a/app", dg('c'), m1_blobs, 2, NULL, 0);
    qc.check = place_fail;
    CHECK_ERR(o->manifest_put(m, &qc), BERR_IO, "placing failed on purpose");
    CHECK_ERR(o->manifest_get(m, "a/app", dg('c'), &man), BERR_MANIFEST_UNKNOWN, NULL);

    /* ---- an index: its children must be manifests of the repository ---- */
    const char *kids_bad[] = {dg('a'), dg('b')};
    const char *idx_tags[] = {"latest"};
    store_manifest_put_req qi = image("a/app", dg('i'), NULL, 0, idx_tags, 1);
    qi.media_type = "application/vnd.oci.image.index.v1+json";
    qi.children = kids_bad;
    qi.nchildren = 2;
    CHECK_ERR(o->manifest_put(m, &qi), BERR_MANIFEST_BLOB_UNKNOWN, dg('b'));
    /* an untagged manifest: the index's second child */
    store_manifest_put_req qb = image("a/app", dg('b'), m1_blobs, 1, NULL, 0);
    OK(o->manifest_put(m, &qb));
    OK(o->manifest_put(m, &qi));
    /* its parents: the tagged index lists both children; nothing lists the index */
    OK(o->manifest_parents(m, "a/app", dg('b'), &l));
    CHECK(l.n == 1 && !strcmp(l.items[0], dg('i')));
    store_list_free(&l);
    memset(&l, 0, sizeof l);
    OK(o->manifest_parents(m, "a/app", dg('i'), &l));
    CHECK(l.n == 0);
    store_list_free(&l);
    memset(&l, 0, sizeof l);
    OK(o->manifest_parents(m, "other/repo", dg('b'), &l));
    CHECK(l.n == 0);
    store_list_free(&l);
    memset(&l, 0, sizeof l);

    /* ---- absent tags: checked in the transaction ---- */
    const char *ab_repos[] = {"x/none", "a/app"};
    const char *ab_tags[] = {"t", "v1"};
    const char *m2_tags[] = {"v2"};
    store_manifest_put_req qa = image("a/app", dg('d'), m1_blobs, 1, m2_tags, 1);
    qa.absent_repos = ab_repos;
    qa.absent_tags = ab_tags;
    qa.nabsent = 2;
    CHECK_ERR(o->manifest_put(m, &qa), BERR_CONFLICT, "a/app:v1 already exists");
    CHECK_ERR(o->manifest_get(m, "a/app", dg('d'), &man), BERR_MANIFEST_UNKNOWN, NULL);
    CHECK_ERR(o->manifest_get(m, "a/app", "v2", &man), BERR_MANIFEST_UNKNOWN, NULL);
    qa.nabsent = 1;
    OK(o->manifest_put(m, &qa));
    OK(o->manifest_get(m, "a/app", "v2", &man));
    CHECK_STR(man.digest, dg('d'));
    man_free(&man);

    /* ---- tags: pagination, deletion ---- */
    const char *more_tags[] = {"t3", "t1", "t2"};
    store_manifest_put_req qt = image("a/app", dg('a'), m1_blobs, 2, more_tags, 3);
    OK(o->manifest_put(m, &qt)); /* the same manifest again: tags move onto it */
    OK(o->tags_list(m, "a/app", NULL, 2, &l));
    CHECK(l.n == 2 && l.more);
    if (l.n == 2) {
        CHECK_STR(l.items[0], "latest");
        CHECK_STR(l.items[1], "t1");
    }
    store_list_free(&l);
    memset(&l, 0, sizeof l);
    OK(o->tags_list(m, "a/app", "t2", 100, &l));
    CHECK(l.n == 3 && !l.more); /* byte order, after "t2" */
    if (l.n == 3) {
        CHECK_STR(l.items[0], "t3");
        CHECK_STR(l.items[1], "v1");
        CHECK_STR(l.items[2], "v2");
    }
    store_list_free(&l);
    memset(&l, 0, sizeof l);
    OK(o->tags_list(m, "a/app", "v2", 10, &l));
    CHECK(l.n == 0 && !l.more);
    store_list_free(&l);
    memset(&l, 0, sizeof l);
    CHECK_ERR(o->tags_list(m, "zz/none", NULL, 10, &l), BERR_NAME_UNKNOWN,
              "repository name not known to registry");
    store_list_free(&l);
    memset(&l, 0, sizeof l);
    OK(o->tag_delete(m, "a/app", "t3"));
    CHECK_ERR(o->tag_delete(m, "a/app", "t3"), BERR_MANIFEST_UNKNOWN, "tag unknown to registry");
    CHECK_ERR(o->manifest_get(m, "a/app", "t3", &man), BERR_MANIFEST_UNKNOWN, NULL);

    /* ---- catalog ---- */
    OK(o->catalog(m, NULL, 1, &l));
    CHECK(l.n == 1 && l.more);
    if (l.n == 1) CHECK_STR(l.items[0], "a/app");
    store_list_free(&l);
    memset(&l, 0, sizeof l);
    OK(o->catalog(m, "a/app", 10, &l));
    CHECK(l.n == 1 && !l.more);
    if (l.n == 1) CHECK_STR(l.items[0], "b/app");
    store_list_free(&l);
    memset(&l, 0, sizeof l);

    /* ---- referrers ---- */
    store_manifest_put_req qr = image("a/app", dg('r'), m1_blobs, 1, NULL, 0);
    qr.subject = dg('a');
    qr.artifact_type = "application/x-sig";
    qr.annotations_json = "{\"k\":\"v\"}";
    OK(o->manifest_put(m, &qr));
    store_referrer_list rl = {0};
    OK(o->referrers(m, "a/app", dg('a'), NULL, &rl));
    CHECK(rl.n == 1);
    if (rl.n == 1) {
        CHECK_STR(rl.items[0].digest, dg('r'));
        CHECK(rl.items[0].size == MAN_LEN);
        CHECK(rl.items[0].artifact_type && !strcmp(rl.items[0].artifact_type, "application/x-sig"));
        CHECK(rl.items[0].annotations_json &&
              !strcmp(rl.items[0].annotations_json, "{\"k\":\"v\"}"));
        CHECK(rl.items[0].media_type && !strcmp(rl.items[0].media_type, qr.media_type));
    }
    store_referrer_list_free(&rl);
    memset(&rl, 0, sizeof rl);
    OK(o->referrers(m, "a/app", dg('a'), "application/other", &rl));
    CHECK(rl.n == 0);
    store_referrer_list_free(&rl);
    memset(&rl, 0, sizeof rl);
    OK(o->referrers(m, "a/app", dg('a'), "application/x-sig", &rl));
    CHECK(rl.n == 1);
    store_referrer_list_free(&rl);
    memset(&rl, 0, sizeof rl);

    /* ---- charts and their change log ---- */
    int64_t gen0 = -1, old0 = -1, gen1 = -1, gen2 = -1;
    OK(o->charts_gen(m, &gen0, &old0));
    const char *chart_tags[] = {"0.1.0"};
    store_manifest_put_req qh = image("charts/team/web", dg('h'), m1_blobs, 1, chart_tags, 1);
    qh.new_blobs = &nb; /* the chart's blob, linked to this repository in the same transaction */
    qh.nnew_blobs = 1;
    qh.blobs = (const char *[]){dg('2')};
    qh.chart_tag = "0.1.0";
    qh.chart_entry = "{\"name\":\"web\",\"version\":\"0.1.0\"}";
    qh.chart_yaml = "- name: web\n  version: 0.1.0\n";
    OK(o->manifest_put(m, &qh));
    OK(o->charts_gen(m, &gen1, NULL));
    CHECK(gen1 > gen0);
    store_chart_list cl = {0};
    OK(o->charts(m, "charts/", false, &cl));
    CHECK(cl.n == 1);
    if (cl.n == 1) {
        CHECK_STR(cl.items[0].repo, "charts/team/web");
        CHECK_STR(cl.items[0].tag, "0.1.0");
        CHECK_STR(cl.items[0].digest, dg('h'));
        CHECK_STR(cl.items[0].entry, qh.chart_entry);
        CHECK_STR(cl.items[0].yaml, qh.chart_yaml);
    }
    store_chart_list_free(&cl);
    CHECK(ncharts(m, "charts/team/web", true) == 1);
    CHECK(ncharts(m, "charts/team/we", true) == 0); /* exact: not a prefix */
    CHECK(ncharts(m, "a/", false) == 0);
    CHECK(nchanged(m, gen0, "charts/", "charts/team/web") == 1);
    CHECK(nchanged(m, gen0, "a/", NULL) == 0);
    /* the tag going away takes the chart out of the index and logs a change */
    OK(o->tag_delete(m, "charts/team/web", "0.1.0"));
    OK(o->charts_gen(m, &gen2, NULL));
    CHECK(gen2 > gen1);
    CHECK(ncharts(m, "charts/", false) == 0);
    CHECK(nchanged(m, gen1, "charts/t", "charts/team/web") == 1);

    /* ---- the write lock: reads inside its callback do not wait for it ---- */
    locked_ctx lc = {.m = m};
    OK(o->locked(m, locked_reads, &lc));
    CHECK(lc.seen == 2);
    CHECK_ERR(o->locked(m, place_fail, NULL), BERR_IO, "placing failed on purpose");

    /* ---- mirrored manifests: blobs arrive later; blob_link_listed; tag_checked ---- */
    const char *mir_blobs[] = {dg('3')};
    const char *mir_tags[] = {"1.0"};
    store_manifest_put_req qm = image("m/mirror", dg('m'), mir_blobs, 1, mir_tags, 1);
    qm.mirrored = true;
    OK(o->manifest_put(m, &qm));
    OK(o->manifest_get(m, "m/mirror", "1.0", &man));
    CHECK(man.checked > 0);
    int64_t checked1 = man.checked;
    man_free(&man);
    usleep(5000);
    OK(o->tag_checked(m, "m/mirror", "1.0"));
    OK(o->manifest_get(m, "m/mirror", "1.0", &man));
    CHECK(man.checked > checked1);
    man_free(&man);
    OK(o->manifest_get(m, "m/mirror", dg('m'), &man)); /* by digest: no check time */
    CHECK(man.checked == 0);
    man_free(&man);
    /* listed but not stored yet */
    CHECK_ERR(o->blob_link_listed(m, "m/mirror", dg('3')), BERR_BLOB_UNKNOWN, dg('3'));
    OK(o->blob_commit(m, "m/other", dg('3'), 30, place_ok, NULL));
    CHECK_ERR(o->blob_lookup(m, "m/mirror", dg('3'), &size), BERR_BLOB_UNKNOWN, NULL);
    OK(o->blob_link_listed(m, "m/mirror", dg('3')));
    OK(o->blob_lookup(m, "m/mirror", dg('3'), &size));
    CHECK(size == 30);
    /* stored but not listed by a manifest of the repository */
    CHECK_ERR(o->blob_link_listed(m, "m/mirror", dg('1')), BERR_BLOB_UNKNOWN, dg('1'));
    CHECK_ERR(o->blob_lookup(m, "m/mirror", dg('1'), &size), BERR_BLOB_UNKNOWN, NULL);

    /* ---- usage, LRU, eviction ---- */
    uint64_t all = 0, mir = 0;
    OK(o->usage(m, &all));
    CHECK(all == 10 + 20 + 30);
    OK(o->mirror_usage(m, &mir));
    CHECK(mir == 0); /* dg('3') is also linked to m/other, a local repository */
    OK(o->repo_mark_mirror(m, "m/other"));
    OK(o->mirror_usage(m, &mir));
    CHECK(mir == 30);
    const char *mir2_blobs[] = {dg('4')};
    store_manifest_put_req qm2 = image("m/mirror", dg('n'), mir2_blobs, 1, NULL, 0);
    qm2.mirrored = true;
    OK(o->manifest_put(m, &qm2));
    CHECK_ERR(o->blob_link_listed(m, "m/mirror", dg('4')), BERR_BLOB_UNKNOWN, NULL);
    OK(o->blob_commit(m, "m/mirror", dg('4'), 40, place_ok, NULL));
    store_access acc[] = {{"m/mirror", dg('m'), store_now() + 1000},
                          {"m/mirror", dg('n'), store_now() + 2000}};
    OK(o->touch(m, acc, 2));
    OK(o->mirror_lru(m, 10, 0, &l));
    CHECK(l.n == 2);
    if (l.n == 2) {
        char want[160];
        snprintf(want, sizeof want, "m/mirror@%s", dg('m'));
        CHECK_STR(l.items[0], want);
    }
    store_list_free(&l);
    memset(&l, 0, sizeof l);
    OK(o->mirror_lru(m, 1, 0, &l));
    CHECK(l.n == 1);
    store_list_free(&l);
    memset(&l, 0, sizeof l);
    OK(o->mirror_evict(m, "m/mirror", dg('m'), &l));
    CHECK_ERR(o->manifest_get(m, "m/mirror", "1.0", &man), BERR_MANIFEST_UNKNOWN, NULL);
    CHECK(in_list(&l, dg('3')) && !in_list(&l, dg('4')) && !in_list(&l, dg('1')));
    store_list_free(&l);
    memset(&l, 0, sizeof l);
    bool removed = false;
    placed = 0;
    OK(o->mirror_blob_remove(m, dg('4'), place_ok, NULL, &removed)); /* still referenced */
    CHECK(!removed && placed == 0);
    OK(o->mirror_blob_remove(m, dg('3'), place_ok, NULL, &removed));
    CHECK(removed && placed == 1);
    CHECK_ERR(o->blob_lookup(m, NULL, dg('3'), &size), BERR_BLOB_UNKNOWN, NULL);
    CHECK_ERR(o->blob_lookup(m, "m/other", dg('3'), &size), BERR_BLOB_UNKNOWN, NULL);
    OK(o->mirror_blob_remove(m, dg('1'), place_ok, NULL, &removed)); /* local: stays */
    CHECK(!removed);
    /* a failing trash step rolls the removal back */
    OK(o->mirror_evict(m, "m/mirror", dg('n'), &l));
    CHECK(in_list(&l, dg('4')));
    store_list_free(&l);
    memset(&l, 0, sizeof l);
    CHECK_ERR(o->mirror_blob_remove(m, dg('4'), place_fail, NULL, &removed), BERR_IO, NULL);
    CHECK(!removed);
    OK(o->blob_lookup(m, "m/mirror", dg('4'), &size));

    /* ---- leases ---- */
    int64_t now = store_now();
    OK(o->lease_take(m, "fill x", "owner-1", now + 60000, now));
    CHECK_ERR(o->lease_take(m, "fill x", "owner-2", now + 60000, now), BERR_CONFLICT,
              "lease fill x is held");
    OK(o->lease_take(m, "fill x", "owner-1", now + 90000, now));           /* renewed */
    OK(o->lease_take(m, "fill y", "owner-2", now + 60000, now));           /* another key */
    OK(o->lease_take(m, "fill x", "owner-2", now + 200000, now + 100000)); /* expired */
    OK(o->lease_drop(m, "fill x", "owner-1")); /* not the owner: nothing */
    CHECK_ERR(o->lease_take(m, "fill x", "owner-1", now + 60000, now), BERR_CONFLICT, NULL);
    OK(o->lease_drop(m, "fill x", "owner-2"));
    OK(o->lease_take(m, "fill x", "owner-1", now + 60000, now));

    /* ---- fsck walkers ---- */
    int nblobs = 0;
    OK(o->each_blob(m, count_blob, &nblobs));
    CHECK(nblobs == 3); /* 1, 2, 4 */
    int stops = 0;
    CHECK(o->each_blob(m, stop_walk, &stops) == 7 && stops == 1);
    man_walk mw = {0};
    OK(o->each_manifest(m, count_manifest, &mw));
    CHECK(mw.n == 6 && mw.content_ok); /* a/app: a b d i r; charts/team/web: h */
    OK(o->check_refs(m, problem, &l));
    CHECK(l.n == 0);
    store_list_free(&l);
    memset(&l, 0, sizeof l);
    OK(o->blob_unlink(m, "a/app", dg('2')));
    OK(o->check_refs(m, problem, &l));
    CHECK(l.n == 1 && l.n == 1 && strstr(l.items[0], "not linked to the repository"));
    store_list_free(&l);
    memset(&l, 0, sizeof l);

    /* ---- manifest delete ---- */
    OK(o->manifest_delete(m, "a/app", dg('d')));
    CHECK_ERR(o->manifest_delete(m, "a/app", dg('d')), BERR_MANIFEST_UNKNOWN,
              "manifest unknown to registry");
    CHECK_ERR(o->manifest_get(m, "a/app", "v2", &man), BERR_MANIFEST_UNKNOWN, NULL);

    /* ---- gc: untagged, unreferenced manifests; then blob candidates ---- */
    int64_t cutoff = store_now() + 60000;
    size_t nrem = 0;
    OK(o->gc_manifests(m, cutoff, true, &nrem, &l)); /* dry run: nothing changes */
    CHECK(nrem == 1);                                /* dg('h'): the chart whose tag was deleted */
    store_list_free(&l);
    memset(&l, 0, sizeof l);
    OK(o->manifest_get(m, "charts/team/web", dg('h'), &man));
    man_free(&man);
    /* untag the index: it goes, then its child dg('b') (untagged) follows, and the referrer
     * dg('r') of dg('a') stays with its tagged subject */
    OK(o->tag_delete(m, "a/app", "latest"));
    OK(o->gc_manifests(m, cutoff, false, &nrem, &l));
    CHECK(nrem == 3); /* h, i, then b */
    CHECK(in_list(&l, dg('4')) && !in_list(&l, dg('1')) && !in_list(&l, dg('2')));
    store_list_free(&l);
    memset(&l, 0, sizeof l);
    CHECK_ERR(o->manifest_get(m, "a/app", dg('i'), &man), BERR_MANIFEST_UNKNOWN, NULL);
    CHECK_ERR(o->manifest_get(m, "a/app", dg('b'), &man), BERR_MANIFEST_UNKNOWN, NULL);
    OK(o->manifest_get(m, "a/app", dg('r'), &man));
    man_free(&man);
    placed = 0;
    OK(o->gc_blob_remove(m, dg('1'), cutoff, place_ok, NULL, &removed)); /* referenced */
    CHECK(!removed && placed == 0);
    CHECK_ERR(o->gc_blob_remove(m, dg('4'), cutoff, place_fail, NULL, &removed), BERR_IO, NULL);
    CHECK(!removed);
    OK(o->blob_lookup(m, NULL, dg('4'), &size));
    OK(o->gc_blob_remove(m, dg('4'), store_now() - 600000, place_ok, NULL, &removed)); /* young */
    CHECK(!removed);
    OK(o->gc_blob_remove(m, dg('4'), cutoff, place_ok, NULL, &removed));
    CHECK(removed && placed == 1);
    CHECK_ERR(o->blob_lookup(m, NULL, dg('4'), &size), BERR_BLOB_UNKNOWN, NULL);
    CHECK_ERR(o->blob_lookup(m, "m/mirror", dg('4'), &size), BERR_BLOB_UNKNOWN, NULL);
    int64_t gen3 = 0;
    OK(o->charts_gen(m, &gen3, NULL));
    CHECK(gen3 > gen2); /* the chart row went with its manifest: logged */
}

/* Fails each statement of an operation in turn (meta_sql_fail_at): every failure returns the
 * injected error and leaves nothing of the operation committed; the operation then succeeds. */
static void faults(store_meta *m)
{
    const store_meta_ops *o = m->ops;
    uint64_t size;
    store_manifest man;
    int n, rc;
    /* a blob commit: its row, repository and link */
    for (n = 1; n < 100; n++) {
        meta_sql_fail_at(n);
        rc = o->blob_commit(m, "f/app", dg('5'), 50, place_ok, NULL);
        meta_sql_fail_at(0);
        if (rc == 0) break;
        CHECK_ERR(rc, BERR_IO, "injected fault");
        CHECK_ERR(o->blob_lookup(m, NULL, dg('5'), &size), BERR_BLOB_UNKNOWN, NULL);
        CHECK_ERR(o->repo_exists(m, "f/app"), BERR_NAME_UNKNOWN, NULL);
    }
    CHECK(n == 4); /* three statements, each failed once */
    OK(o->blob_lookup(m, "f/app", dg('5'), &size));
    /* a manifest put: a new blob, checks, the row, a chart, references and tags */
    int64_t gen0 = 0, gen = 0;
    OK(o->charts_gen(m, &gen0, NULL));
    const char *blobs[] = {dg('5'), dg('6')};
    const char *tags[] = {"0.2.0", "x"};
    store_manifest_put_req q = image("f/app", dg('f'), blobs, 2, tags, 2);
    store_new_blob nb = {.size = 60};
    snprintf(nb.digest, sizeof nb.digest, "%s", dg('6'));
    q.new_blobs = &nb;
    q.nnew_blobs = 1;
    q.chart_tag = "0.2.0";
    q.chart_entry = "{}";
    q.chart_yaml = "- {}\n";
    for (n = 1; n < 100; n++) {
        meta_sql_fail_at(n);
        rc = o->manifest_put(m, &q);
        meta_sql_fail_at(0);
        if (rc == 0) break;
        CHECK_ERR(rc, BERR_IO, "injected fault");
        CHECK_ERR(o->manifest_get(m, "f/app", dg('f'), &man), BERR_MANIFEST_UNKNOWN, NULL);
        CHECK_ERR(o->manifest_get(m, "f/app", "x", &man), BERR_MANIFEST_UNKNOWN, NULL);
        CHECK_ERR(o->blob_lookup(m, NULL, dg('6'), &size), BERR_BLOB_UNKNOWN, NULL);
        OK(o->charts_gen(m, &gen, NULL));
        CHECK(gen == gen0);
    }
    CHECK(n > 12);
    CHECK(ncharts(m, "f/app", true) == 1);
    /* gc: the untagged manifest's removal and the blob listing */
    OK(o->tag_delete(m, "f/app", "x"));
    OK(o->tag_delete(m, "f/app", "0.2.0"));
    int64_t cutoff = store_now() + 60000;
    size_t removed = 0;
    store_list l = {0};
    for (n = 1; n < 100; n++) {
        meta_sql_fail_at(n);
        rc = o->gc_manifests(m, cutoff, false, &removed, &l);
        meta_sql_fail_at(0);
        store_list_free(&l);
        memset(&l, 0, sizeof l);
        if (rc == 0) break;
        CHECK_ERR(rc, BERR_IO, "injected fault");
        OK(o->manifest_get(m, "f/app", dg('f'), &man));
        man_free(&man);
    }
    CHECK(n > 3 && removed >= 1);
    CHECK_ERR(o->manifest_get(m, "f/app", dg('f'), &man), BERR_MANIFEST_UNKNOWN, NULL);
}

/* Opens a backend, runs the scenario and the fault walk on it, and opens it again to find its
 * data; true when it opened. */
static bool run_backend(const char *name, int (*open)(store_meta **m, void *arg), void *arg)
{
    store_meta *m = NULL;
    backend = name;
    int rc = open(&m, arg);
    if (rc != 0) printf("  [%s] open: %s\n", name, berr_msg());
    CHECK(rc == 0);
    if (rc != 0) return false;
    scenario(m);
    faults(m);
    m->ops->close(m);
    rc = open(&m, arg); /* reopened: the data and the schema are there */
    CHECK(rc == 0);
    if (rc == 0) {
        uint64_t size = 0;
        OK(m->ops->blob_lookup(m, "a/app", dg('1'), &size));
        CHECK(size == 10);
        m->ops->close(m);
    }
    return true;
}

static int open_pg(store_meta **m, void *arg)
{
    return store_meta_pg_open(m, arg);
}

static int open_sqlite(store_meta **m, void *arg)
{
    return store_meta_sqlite_open(m, arg);
}

/* ---- PostgreSQL: a throwaway cluster, as tests/pg.sh starts one ---- */

static char pg_dir[512], pg_bin[512], pg_port[16];

static bool pg_cluster_start(char *why, size_t wlen)
{
    if (access("tests/pg.sh", R_OK) != 0) {
        snprintf(why, wlen, "tests/pg.sh not found (run from the repository root)");
        return false;
    }
    if (geteuid() != 0) {
        snprintf(why, wlen, "not root: cannot run initdb as the postgres user");
        return false;
    }
    char out[] = "/tmp/berth-unit-pg.XXXXXX";
    int fd = mkstemp(out);
    if (fd < 0) {
        snprintf(why, wlen, "mkstemp failed");
        return false;
    }
    close(fd);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "bash -c '. tests/lib.sh; . tests/pg.sh; pg_start >&2 && "
             "echo \"$PG_DIR $PG_PORT $PG_BIN\"' >%s 2>%s.err",
             out, out);
    int rc = system(cmd);
    FILE *f = fopen(out, "r");
    bool ok = rc == 0 && f && fscanf(f, "%511s %15s %511s", pg_dir, pg_port, pg_bin) == 3;
    if (f) fclose(f);
    if (!ok) {
        char err[300] = "";
        snprintf(cmd, sizeof cmd, "%s.err", out);
        f = fopen(cmd, "r");
        if (f) {
            size_t n = fread(err, 1, sizeof err - 1, f);
            err[n] = '\0';
            err[strcspn(err, "\n")] = '\0';
            fclose(f);
        }
        snprintf(why, wlen, "pg_start failed: %s", err[0] ? err : "no detail");
        pg_dir[0] = '\0';
    }
    unlink(out);
    snprintf(cmd, sizeof cmd, "%s.err", out);
    unlink(cmd);
    return ok;
}

static void pg_cluster_stop(void)
{
    if (!pg_dir[0] || strncmp(pg_dir, "/tmp/berth-pg.", 14) != 0) return;
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "runuser -u postgres -- %s/pg_ctl -D %s/data -m fast -w stop >/dev/null 2>&1; "
             "rm -rf %s",
             pg_bin, pg_dir, pg_dir);
    if (system(cmd) != 0) printf("  (stopping the PostgreSQL cluster failed)\n");
}

static void run_pg(void)
{
    const char *host = getenv("BERTH_TEST_PG_HOST");
    bool required = getenv("BERTH_TEST_PG") && !strcmp(getenv("BERTH_TEST_PG"), "required");
    config_database db = {.enabled = true, .sslmode = "disable", .maxopen = 4};
    char why[512];
    if (host && *host) {
        db.host = (char *)host;
        db.port = getenv("BERTH_TEST_PG_PORT") ? atoi(getenv("BERTH_TEST_PG_PORT")) : 5432;
        db.user = getenv("BERTH_TEST_PG_USER");
        db.password = getenv("BERTH_TEST_PG_PASSWORD");
        db.dbname = getenv("BERTH_TEST_PG_DBNAME");
    } else if (pg_cluster_start(why, sizeof why)) {
        db.host = pg_dir; /* its socket directory: local connections are trusted */
        db.port = atoi(pg_port);
        db.user = "postgres";
        db.dbname = "berth";
    } else {
        if (required) {
            printf("FAIL - postgres backend required (BERTH_TEST_PG=required): %s\n", why);
            unit_fail++;
        } else {
            SKIP("test_meta: the PostgreSQL backend: %s", why);
        }
        return;
    }
    run_backend("postgres", open_pg, &db);
    pg_cluster_stop();
}

/* The file's PRAGMA user_version, after setting it to set (when set >= 0); -1 on error. */
static int user_version(const char *path, int set)
{
    sqlite3 *db = NULL;
    int v = -1;
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", set);
    if (sqlite3_open(path, &db) == SQLITE_OK &&
        (set < 0 || sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK)) {
        sqlite3_stmt *s = NULL;
        if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK &&
            sqlite3_step(s) == SQLITE_ROW)
            v = sqlite3_column_int(s, 0);
        sqlite3_finalize(s);
    }
    sqlite3_close(db);
    return v;
}

static void run_sqlite(void)
{
    char dir[] = "/tmp/berth-unit-meta.XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/metadata.db", dir);
    if (run_backend("sqlite", open_sqlite, path)) {
        /* the schema version is recorded; a database from before versions were recorded
         * (user_version 0, the tables of version 1) migrates in place, keeping its rows */
        store_meta *m = NULL;
        int v = user_version(path, -1);
        CHECK(v >= 1);
        CHECK(user_version(path, 0) == 0);
        int rc = store_meta_sqlite_open(&m, path);
        CHECK(rc == 0);
        if (rc == 0) {
            uint64_t size = 0;
            OK(m->ops->blob_lookup(m, "a/app", dg('1'), &size));
            CHECK(size == 10);
            int64_t gen = 0;
            OK(m->ops->charts_gen(m, &gen, NULL));
            CHECK(gen > 0);
            m->ops->close(m);
        }
        CHECK(user_version(path, -1) == v);
    }
    /* a path that cannot be opened: an I/O error, not a crash */
    snprintf(path, sizeof path, "%s/no/such/dir/metadata.db", dir);
    store_meta *m = NULL;
    CHECK_ERR(store_meta_sqlite_open(&m, path), BERR_IO, "open metadata database");
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("  (rm -rf %s failed)\n", dir);
}

int main(void)
{
    run_sqlite();
    run_pg();
    if (unit_skip) printf("%d skipped\n", unit_skip);
    UNIT_DONE();
}
