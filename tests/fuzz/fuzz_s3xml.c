/*
 * Fuzzes the reading of S3's XML answers (src/store/s3.c, s3_parse: expat underneath): listings,
 * multipart answers, errors, in any bytes. Every key handed to the walker lies inside the root
 * prefix (it arrives without it), every field is a terminated string within its buffer, a walker
 * that stops the walk is obeyed, and nothing leaks or crashes.
 */
#include "fuzz.h"
#include "store/s3.h"
#include "util/err.h"

typedef struct {
    size_t n, stop_at;
} walk;

static int each(void *arg, const char *key, uint64_t size, int64_t mtime)
{
    (void)size;
    (void)mtime;
    walk *w = arg;
    FUZZ_ASSERT(key != NULL);
    FUZZ_ASSERT(strlen(key) < 2048);
    w->n++;
    return w->n == w->stop_at ? 1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20)) return 0;
    s3_answer a;
    walk w = {0, size % 3 == 0 ? 2 : 0}; /* sometimes the walker stops after two keys */
    int rc = s3_parse("root/", (const char *)data, size, &a, each, &w);
    FUZZ_ASSERT(rc == 0 || rc == 1 || rc == -BERR_IO);
    if (rc == 1) FUZZ_ASSERT(w.n == w.stop_at);
    if (w.stop_at) FUZZ_ASSERT(w.n <= w.stop_at);
    FUZZ_ASSERT(memchr(a.code, 0, sizeof a.code) && memchr(a.message, 0, sizeof a.message));
    FUZZ_ASSERT(memchr(a.upload_id, 0, sizeof a.upload_id) && memchr(a.etag, 0, sizeof a.etag));
    FUZZ_ASSERT(memchr(a.next, 0, sizeof a.next));
    berr_clear();
    return 0;
}
