/* Unit tests for the events table (event notifications, src/notify/) through the store_meta_ops
 * boundary, on SQLite: an event row commits exactly when the change it reports commits (every
 * statement of each write is failed in turn with meta_sql_fail_at: no failure leaves an event,
 * the success leaves exactly its events); events carry the thread's request context; nothing is
 * written while notifications are off; berth's own actions are named (margo.push, chart.upload,
 * chart.delete, fill, evict, bundle.import); cursors only move forward; the backlog bound names the
 * right seq; pruning removes only acknowledged rows. */
#include "unit.h"
#include "store/internal.h"
#include "store/sqldrv.h"
#include "util/err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *dg(char c)
{
    static char buf[256][80];
    char *b = buf[(unsigned char)c];
    memcpy(b, "sha256:", 7);
    memset(b + 7, c, 64);
    b[71] = '\0';
    return b;
}

static int place_ok(void *arg)
{
    (void)arg;
    return 0;
}

/* Every event after seq `after`. */
static store_event_list all_after(store_meta *m, int64_t after)
{
    store_event_list l = {0};
    CHECK(m->ops->events_read(m, after, 1000, &l) == 0);
    return l;
}

static size_t count_events(store_meta *m)
{
    store_event_list l = all_after(m, 0);
    size_t n = l.n;
    store_event_list_free(&l);
    return n;
}

int main(void)
{
    char dir[] = "/tmp/berth-test-events.XXXXXX", path[256];
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/metadata.db", dir);
    store_meta *m;
    CHECK(store_meta_sqlite_open(&m, path) == 0);
    const store_meta_ops *o = m->ops;
    int n, rc;

    /* off: no event rows */
    store_events_enable(false, false, false, "edge:5000", "inst-1");
    CHECK(o->blob_commit(m, "e/app", dg('1'), 10, place_ok, NULL) == 0);
    CHECK(count_events(m) == 0);

    store_events_enable(true, true, true, "edge:5000", "inst-1");
    store_event_context(&(store_event_ctx){.actor = "alice",
                                           .request_id = "req-1",
                                           .addr = "10.0.0.7:5555",
                                           .host = "edge:5000",
                                           .method = "PUT",
                                           .useragent = "ua/1"});
    /* a blob commit: each failing statement leaves no event; the success leaves one */
    for (n = 1; n < 100; n++) {
        meta_sql_fail_at(n);
        rc = o->blob_commit(m, "e/app", dg('2'), 20, place_ok, NULL);
        meta_sql_fail_at(0);
        if (rc == 0) break;
        CHECK(count_events(m) == 0);
    }
    CHECK(n > 4); /* the event's own statements were failed too */
    store_event_list l = all_after(m, 0);
    CHECK(l.n == 1);
    if (l.n == 1) {
        store_event *e = &l.items[0];
        CHECK_STR(e->action, "push");
        CHECK_STR(e->repo, "e/app");
        CHECK_STR(e->digest, dg('2'));
        CHECK(e->size == 20);
        CHECK(e->uuid && strlen(e->uuid) == 36);
        json_t *ctx = json_loads(e->context, 0, NULL);
        CHECK_STR(json_string_value(json_object_get(json_object_get(ctx, "actor"), "name")) ?: "",
                  "alice");
        CHECK_STR(json_string_value(json_object_get(json_object_get(ctx, "request"), "useragent"))
                      ?: "",
                  "ua/1");
        CHECK_STR(json_string_value(json_object_get(json_object_get(ctx, "source"), "instanceID"))
                      ?: "",
                  "inst-1");
        json_decref(ctx);
    }
    int64_t first = l.n ? l.items[0].seq : 0;
    store_event_list_free(&l);

    /* a manifest put with two tags: two events (one per tag), both or none */
    static const char man[] = "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"c\",\"size\":20,"
                              "\"digest\":\"sha256:2\"},\"layers\":[]}";
    const char *blobs[] = {dg('2')};
    const char *tags[] = {"v1", "latest"};
    store_manifest_put_req q = {.repo = "e/app",
                                .digest = dg('f'),
                                .media_type = "application/vnd.oci.image.manifest.v1+json",
                                .content = man,
                                .size = sizeof man - 1,
                                .blobs = blobs,
                                .nblobs = 1,
                                .tags = tags,
                                .ntags = 2};
    for (n = 1; n < 100; n++) {
        meta_sql_fail_at(n);
        rc = o->manifest_put(m, &q);
        meta_sql_fail_at(0);
        if (rc == 0) break;
        CHECK(count_events(m) == 1);
    }
    l = all_after(m, first);
    CHECK(l.n == 2);
    if (l.n == 2) {
        CHECK_STR(l.items[0].action, "push");
        CHECK_STR(l.items[0].tag ?: "", "v1");
        CHECK_STR(l.items[1].tag ?: "", "latest");
        CHECK(l.items[0].seq < l.items[1].seq);
        CHECK(strcmp(l.items[0].uuid, l.items[1].uuid) != 0);
        CHECK(l.items[0].refs && strstr(l.items[0].refs, "sha256:2"));
    }
    store_event_list_free(&l);

    /* a mount, a tag delete, a manifest delete, a pull, an eviction-free repo */
    CHECK(o->blob_link(m, "e/other", "e/app", dg('2')) == 0);
    CHECK(o->tag_delete(m, "e/app", "latest") == 0);
    CHECK(o->manifest_delete(m, "e/app", dg('f')) == 0);
    CHECK(o->event_note(m, "pull", "e/other", dg('2'), "application/octet-stream", 20, NULL) == 0);
    /* a failed change writes nothing */
    CHECK(o->tag_delete(m, "e/app", "nope") < 0);
    l = all_after(m, 0);
    CHECK(l.n == 7);
    if (l.n == 7) {
        CHECK_STR(l.items[3].action, "mount");
        CHECK(strstr(l.items[3].context, "\"fromRepository\":\"e/app\"") != NULL);
        CHECK_STR(l.items[4].action, "delete");
        CHECK_STR(l.items[4].tag ?: "", "latest");
        CHECK(l.items[4].digest == NULL);
        CHECK_STR(l.items[5].action, "delete");
        CHECK_STR(l.items[5].digest ?: "", dg('f'));
        CHECK_STR(l.items[6].action, "pull");
    }
    int64_t s3 = l.n == 7 ? l.items[2].seq : 0, s5 = l.n == 7 ? l.items[4].seq : 0;
    store_event_list_free(&l);

    /* a process-wide action names its pushes */
    store_event_context(&(store_event_ctx){.action = "bundle.import"});
    CHECK(o->blob_commit(m, "e/b", dg('3'), 30, place_ok, NULL) == 0);
    store_event_context(NULL);
    l = all_after(m, 0);
    CHECK(l.n == 8 && !strcmp(l.items[7].action, "bundle.import"));
    store_event_list_free(&l);

    /* berth's own actions: a margo package, a chart, a mirror fill and its eviction */
    store_manifest_put_req mq = {.repo = "e/margo",
                                 .digest = dg('a'),
                                 .media_type = "application/vnd.oci.image.manifest.v1+json",
                                 .artifact_type = "application/vnd.margo.app.v1+json",
                                 .content = man,
                                 .size = sizeof man - 1};
    CHECK(o->manifest_put(m, &mq) == 0);
    store_manifest_put_req cq = mq;
    cq.repo = "e/chart";
    cq.digest = dg('b');
    cq.artifact_type = NULL;
    cq.chart_tag = "0.1.0";
    cq.chart_entry = "{}";
    cq.chart_yaml = "name: c";
    CHECK(o->manifest_put(m, &cq) == 0);
    store_manifest_put_req fq = mq;
    fq.repo = "ghcr.io/x";
    fq.digest = dg('c');
    fq.artifact_type = NULL;
    fq.mirrored = true;
    CHECK(o->manifest_put(m, &fq) == 0);
    CHECK(o->blob_commit(m, "ghcr.io/x", dg('4'), 40, place_ok, NULL) == 0);
    store_list freed = {0};
    CHECK(o->mirror_evict(m, "ghcr.io/x", dg('c'), &freed) == 0);
    store_list_free(&freed);
    CHECK(o->manifest_delete(m, "e/chart", dg('b')) == 0);
    /* a blob delete (its link to the repository) */
    CHECK(o->blob_unlink(m, "ghcr.io/x", dg('4')) == 0);
    CHECK(o->blob_unlink(m, "ghcr.io/x", dg('4')) < 0);
    l = all_after(m, 0);
    const char *want[] = {"margo.push", "chart.upload", "fill",  "fill",
                          "evict",      "chart.delete", "delete"};
    CHECK(l.n == 15);
    for (size_t i = 0; l.n == 15 && i < 7; i++)
        CHECK_STR(l.items[8 + i].action, want[i]);
    if (l.n == 15) CHECK_STR(l.items[14].digest ?: "", dg('4'));
    store_event_list_free(&l);

    /* cursors: a new endpoint starts at 0 and only moves forward */
    int64_t cur = -1;
    CHECK(o->event_cursor(m, "rx", &cur) == 0 && cur == 0);
    CHECK(o->event_cursor_set(m, "rx", s5) == 0);
    CHECK(o->event_cursor(m, "rx", &cur) == 0 && cur == s5);
    CHECK(o->event_cursor_set(m, "rx", s3) == 0);
    CHECK(o->event_cursor(m, "rx", &cur) == 0 && cur == s5);

    /* the backlog after s3: 12 events; keeping 2 drops through the 10th of them */
    int64_t count = 0, drop_to = 0;
    CHECK(o->events_backlog(m, s3, 2, &count, &drop_to) == 0);
    CHECK(count == 12);
    l = all_after(m, s3);
    CHECK(l.n == 12 && drop_to == l.items[9].seq);
    store_event_list_free(&l);
    CHECK(o->events_backlog(m, s3, 20, &count, &drop_to) == 0 && drop_to == s3);

    /* pruning removes what every endpoint has, and nothing after it */
    CHECK(o->events_prune(m, s5) == 0);
    l = all_after(m, 0);
    CHECK(l.n == 10 && l.items[0].seq > s5);
    store_event_list_free(&l);

    /* seq only grows: a new event after pruning gets a higher seq than any before */
    CHECK(o->event_note(m, "pull", "e/other", dg('2'), "application/octet-stream", 20, NULL) == 0);
    l = all_after(m, 0);
    CHECK(l.n == 11 && l.items[10].seq > l.items[9].seq);
    store_event_list_free(&l);

    o->close(m);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    UNIT_DONE();
}
