/*
 * fsck: verifies the whole store. Every blob row must have its file, of the recorded size, whose
 * content hashes to its name; every stored manifest must hash to its digest; every reference
 * (manifest -> blob, index -> manifest, tag -> manifest, repository -> blob link) must resolve.
 * Each problem is printed on its own line; the caller exits non-zero when there is any.
 * Files in blobs/ that no metadata row knows are reported as notes only (gc removes them).
 */
#include "store/internal.h"
#include "ui/ui.h"
#include "util/err.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    store *s;
    long problems;
    long blobs, manifests;
} fsck_state;

static void problem(fsck_state *st, const char *msg)
{
    st->problems++;
    printf("problem: %s\n", msg);
}

static int check_blob(void *arg, const char *digest, uint64_t size)
{
    fsck_state *st = arg;
    char path[4096], msg[4400], got[DIGEST_STR_MAX];
    digest_algo algo;
    st->blobs++;
    if (digest_parse(digest, &algo) < 0) {
        snprintf(msg, sizeof msg, "blob row with invalid digest %s", digest);
        problem(st, msg);
        return 0;
    }
    uint64_t actual = 0;
    if (blobfs_hash(&st->s->fs, digest, algo, got, &actual, path, sizeof path) < 0) {
        snprintf(msg, sizeof msg, "blob %s: file missing or unreadable (%s)", digest, path);
        problem(st, msg);
    } else if (actual != size) {
        snprintf(msg, sizeof msg, "blob %s: size %llu, recorded %llu", digest,
                 (unsigned long long)actual, (unsigned long long)size);
        problem(st, msg);
    } else if (strcmp(got, digest) != 0) {
        snprintf(msg, sizeof msg, "blob %s: content hashes to %s (corrupt)", digest, got);
        problem(st, msg);
    }
    return 0;
}

static int check_manifest(void *arg, const char *repo, const char *digest, const char *content,
                          size_t size)
{
    fsck_state *st = arg;
    char got[DIGEST_STR_MAX], msg[1024];
    digest_algo algo;
    st->manifests++;
    if (digest_parse(digest, &algo) < 0) {
        snprintf(msg, sizeof msg, "manifest %s@%s: invalid digest", repo, digest);
        problem(st, msg);
        return 0;
    }
    digest_buf(algo, content, size, got);
    if (strcmp(got, digest) != 0) {
        snprintf(msg, sizeof msg, "manifest %s@%s: content hashes to %s (corrupt)", repo, digest,
                 got);
        problem(st, msg);
    }
    return 0;
}

static void ref_problem(void *arg, const char *msg)
{
    problem(arg, msg);
}

int store_fsck(store *s, long *problems)
{
    fsck_state st = {.s = s};
    int rc = s->meta->ops->each_blob(s->meta, check_blob, &st);
    if (rc == 0) rc = s->meta->ops->each_manifest(s->meta, check_manifest, &st);
    if (rc == 0) rc = s->meta->ops->check_refs(s->meta, ref_problem, &st);
    printf("checked %ld blobs, %ld manifests: %ld problems\n", st.blobs, st.manifests, st.problems);
    *problems = st.problems;
    ui_state_fsck(s, st.blobs, st.manifests, st.problems, rc); /* the web view's "last fsck" */
    return rc;
}
