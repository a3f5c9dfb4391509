/*
 * Fault injection below the store (issue 18): each write, fsync, rename and allocation that a
 * push makes (an upload, one large write and small staged ones, a config blob from memory, the
 * manifest and its tag) is made to fail in turn, on a real store in a temporary directory. Every
 * failure must come back as an error (never a crash), and leave the store consistent: either the
 * tag and everything it needs are there and hash right, or the tag is not there at all; berth fsck
 * finds nothing wrong; and the same push succeeds once the fault is gone.
 */
#include "unit.h"

#include "config.h"
#include "store/fault.h"
#include "store/store.h"
#include "util/digest.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

#define LAYER (3u << 20)

static char *layer;

/* One push of a fresh image to repo; 0 or the first error. */
static int push(store *st, const char *repo)
{
    if (getrandom(layer, 64, 0) != 64)
        abort(); /* a new layer each time: nothing is already there */
    char uuid[STORE_UUID_LEN + 1], cfg_json[128];
    store_upload *u = NULL;
    store_new_blob nb[2];
    int rc = store_upload_create(st, repo, DIGEST_SHA256, uuid);
    if (rc == 0) rc = store_upload_open(st, repo, uuid, &u);
    if (rc == 0) rc = store_upload_write(u, layer, 2u << 20);
    for (size_t off = 2u << 20; rc == 0 && off < LAYER; off += 256u << 10) /* staged */
        rc = store_upload_write(u, layer + off, 256u << 10);
    char ld[DIGEST_STR_MAX];
    digest_buf(DIGEST_SHA256, layer, LAYER, ld);
    if (rc == 0) rc = store_upload_place(u, ld, &nb[0]);
    if (u) store_upload_close(u);
    snprintf(cfg_json, sizeof cfg_json, "{\"repo\":\"%s\"}", repo);
    if (rc == 0) rc = store_blob_place_mem(st, cfg_json, strlen(cfg_json), &nb[1]);
    if (rc < 0) return rc;
    char man[1024], md[DIGEST_STR_MAX];
    snprintf(man, sizeof man,
             "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
             "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":"
             "\"%s\",\"size\":%zu},\"layers\":[{\"mediaType\":\"application/"
             "vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"%s\",\"size\":%u}]}",
             nb[1].digest, strlen(cfg_json), ld, LAYER);
    digest_buf(DIGEST_SHA256, man, strlen(man), md);
    const char *blobs[2] = {nb[1].digest, ld}, *tags[1] = {"v1"};
    store_manifest_put_req q = {.repo = repo,
                                .digest = md,
                                .media_type = "application/vnd.oci.image.manifest.v1+json",
                                .content = man,
                                .size = strlen(man),
                                .blobs = blobs,
                                .nblobs = 2,
                                .tags = tags,
                                .ntags = 1,
                                .new_blobs = nb,
                                .nnew_blobs = 2};
    return store_manifest_put(st, &q);
}

/* A blob of repo hashes to its digest. */
static bool blob_ok(store *st, const char *repo, const char *digest)
{
    store_blob b;
    if (store_blob_open(st, repo, digest, &b) < 0) return false;
    char *buf = malloc(b.size ? b.size : 1);
    bool ok = buf && (b.fd < 0 ? (memcpy(buf, b.mem, b.size), true)
                               : pread(b.fd, buf, b.size, (off_t)b.offset) == (ssize_t)b.size);
    char got[DIGEST_STR_MAX];
    if (ok) digest_buf(DIGEST_SHA256, buf, b.size, got);
    ok = ok && !strcmp(got, digest);
    free(buf);
    store_blob_release(&b);
    return ok;
}

/* The tag is there with everything it needs, or not there at all. */
static bool consistent(store *st, const char *repo)
{
    store_manifest m;
    if (store_manifest_get(st, repo, "v1", &m) < 0) return true; /* nothing committed */
    char cfg[DIGEST_STR_MAX] = "", lay[DIGEST_STR_MAX] = "";
    const char *c = strstr(m.content, "\"digest\":\""),
               *l = c ? strstr(c + 10, "\"digest\":\"") : NULL;
    if (c) snprintf(cfg, sizeof cfg, "%.71s", c + 10);
    if (l) snprintf(lay, sizeof lay, "%.71s", l + 10);
    store_manifest_free(&m);
    return blob_ok(st, repo, cfg) && blob_ok(st, repo, lay);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    layer = malloc(LAYER);
    if (!layer || getrandom(layer, 4096, 0) != 4096) return 2;
    for (size_t i = 4096; i < LAYER; i++)
        layer[i] = (char)(layer[i % 4096] ^ (i >> 12));
    char dir[] = "/tmp/berth-faults.XXXXXX";
    if (!mkdtemp(dir)) return 2;
    config cfg;
    CHECK(config_load(&cfg, NULL) == 0);
    free(cfg.root);
    cfg.root = strdup(dir);
    store *st = NULL;
    CHECK(store_open(&st, &cfg) == 0);
    if (!st) UNIT_DONE();
    static const char *const names[] = {"write", "fsync", "rename", "alloc"};
    static const int errs[] = {ENOSPC, EIO, EIO, ENOMEM};
    int runs = 0;
    for (int k = 0; k < STORE_FAULT__COUNT; k++) {
        int fired = 0, refused = 0, bad = 0;
        for (long n = 1; n <= 64; n++) {
            char repo[64];
            snprintf(repo, sizeof repo, "faults/%s-%ld", names[k], n);
            store_fault_arm((store_fault_kind)k, n, errs[k]);
            berr_clear();
            int rc = push(st, repo);
            bool hit = store_fault_fired((store_fault_kind)k);
            store_fault_arm((store_fault_kind)k, 0, 0);
            runs++;
            if (!hit) {
                CHECK(rc == 0); /* past the last call of this kind: the push just works */
                break;
            }
            fired++;
            if (rc < 0) refused++;
            if (!consistent(st, repo)) {
                bad++;
                printf("FAIL - %s fault at call %ld: a committed tag is missing content\n",
                       names[k], n);
            }
            CHECK(push(st, repo) == 0 && consistent(st, repo)); /* works once the fault is gone */
        }
        printf("# %s: %d faults injected, %d pushes refused, %d inconsistent\n", names[k], fired,
               refused, bad);
        CHECK(fired > 0); /* every kind is reached */
        CHECK(bad == 0);
    }
    long problems = -1;
    CHECK(store_fsck(st, &problems) == 0 && problems == 0);
    printf("# %d pushes, fsck: %ld problems\n", runs, problems);
    store_close(st);
    config_free(&cfg);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) CHECK(0);
    free(layer);
    UNIT_DONE();
}
