/*
 * Fuzzes the bundle reader (layout_open, src/bundle/layout.c: libarchive tar (plain, gzip,
 * zstd), blob names and hashes, index.json, ref.name parsing and the manifest walk) that
 * `berth bundle import|serve|verify` run on a technician's archive before anything is written.
 * The input is the archive, handed over as a memfd opened by its /proc/self/fd path; inputs of
 * odd length are read as `bundle serve` reads them (in place: plain tar, hashed at the offsets).
 *
 * Invariants: 0, -BERR_BAD_REQUEST or -BERR_DIGEST_INVALID (-BERR_INTERNAL only for out of
 * memory), with a message on failure; on success a non-empty plan whose every step has a valid
 * repository name, a valid tag or none, and a manifest found in the bundle by its digest, whose
 * bytes hash to it; children are planned before the indexes that list them (every step's
 * manifest appears after the steps of the manifests it lists, in the same repository);
 * layout_free/layout_plan_free release everything (LeakSanitizer); no crash, no hang.
 */
#include "bundle/layout.h"
#include "fuzz.h"
#include "util/err.h"
#include "util/log.h"
#include "util/ref.h"

#include <sys/mman.h>
#include <unistd.h>

static int fd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    log_set_level(LOG_ERROR);
    fd = memfd_create("berth-fuzz-bundle", 0);
    if (fd < 0) abort();
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return 0;
}

/* True when step i's manifest lists digest d as a child. */
static bool lists(const step *s, const char *d)
{
    json_t *j = json_loads(s->m->mem, 0, NULL);
    bool found = false;
    size_t k;
    json_t *c;
    json_array_foreach(json_object_get(j, "manifests"), k, c)
    {
        const char *cd = json_string_value(json_object_get(c, "digest"));
        if (cd && !strcmp(cd, d)) found = true;
    }
    json_decref(j);
    return found;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size) abort();
    bundle b;
    plan p;
    int tfd;
    berr_clear();
    int rc = layout_open(path, &b, &p, "fuzz/default", size % 2 == 1, &tfd);
    FUZZ_ASSERT(rc == 0 || rc == -BERR_BAD_REQUEST || rc == -BERR_DIGEST_INVALID ||
                rc == -BERR_INTERNAL);
    if (rc < 0) {
        FUZZ_ASSERT(berr_msg()[0]);
    } else {
        FUZZ_ASSERT(p.n > 0);
        for (size_t i = 0; i < p.n; i++) {
            const step *s = &p.v[i];
            FUZZ_ASSERT(ref_name_valid(s->repo));
            FUZZ_ASSERT(!s->tag[0] || ref_tag_valid(s->tag));
            FUZZ_ASSERT(s->m && s->m->mem && layout_find(&b, s->m->digest) == s->m);
            for (size_t k = 0; k < s->nblobs; k++)
                FUZZ_ASSERT(s->blobs[k]->used &&
                            layout_find(&b, s->blobs[k]->digest) == s->blobs[k]);
            char d[DIGEST_STR_MAX];
            digest_algo algo;
            FUZZ_ASSERT(digest_parse(s->m->digest, &algo) == 0);
            digest_buf(algo, s->m->mem, (size_t)s->m->size, d);
            FUZZ_ASSERT(!strcmp(d, s->m->digest));
            /* an index's children come before it */
            for (size_t k = i + 1; k < p.n; k++)
                if (!strcmp(p.v[k].repo, s->repo) && p.v[k].m != s->m && lists(s, p.v[k].m->digest))
                    FUZZ_ASSERT(0 && "a child planned after its index");
        }
    }
    if (tfd >= 0) close(tfd);
    layout_plan_free(&p);
    layout_free(&b);
    return 0;
}
