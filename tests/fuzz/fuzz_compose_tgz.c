/*
 * Fuzzes compose archive checking and extraction (tar_scan with links allowed inside the
 * directory, then tar_extract, src/util/tar.c), as `berth compose pull` does. The input is an
 * archive (.tgz), or "TAR:" and a tar stream that the target wraps in a stored gzip (fuzz.h).
 *
 * Invariants: tar_scan answers 0, -BERR_BAD_REQUEST or -BERR_INTERNAL (out of memory); an
 * accepted archive extracts into <tmp>/a/b/out and nothing at all appears outside that directory
 * (no entry written through a link, whatever the links lead to); no crash, leak or hang.
 */
#include "fuzz.h"
#include "util/err.h"
#include "util/log.h"
#include "util/tar.h"

#include <ftw.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int fd = -1;
static char root[64], out[128];
static int outside;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    log_set_level(LOG_ERROR);
    fd = memfd_create("berth-fuzz-compose", 0);
    snprintf(root, sizeof root, "/tmp/berth-fuzz-compose.XXXXXX");
    if (fd < 0 || !mkdtemp(root)) abort();
    snprintf(out, sizeof out, "%s/a/b/out", root);
    return 0;
}

/* Counts paths below root that are neither out (and what is in it) nor one of its parents. */
static int look(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    size_t rl = strlen(root), ol = strlen(out), pl = strlen(p);
    bool parent = pl <= ol && !strncmp(out, p, pl) && (out[pl] == '/' || out[pl] == '\0');
    bool inside = !strncmp(p, out, ol) && (p[ol] == '\0' || p[ol] == '/');
    if (!parent && !inside && !strncmp(p, root, rl)) outside++;
    return 0;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    if (strcmp(p, root)) remove(p);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_tgz_to_fd(fd, data, size);
    tar_scan_opts o = {.what = "compose archive",
                       .max_uncompressed = 1 << 20,
                       .symlinks_inside = true,
                       .no_special_bits = true,
                       .capture = "compose.yaml",
                       .capture_max = 65536};
    berr_clear();
    int rc = tar_scan(fd, &o);
    FUZZ_ASSERT(rc == 0 || rc == -BERR_BAD_REQUEST || rc == -BERR_INTERNAL);
    if (rc < 0) {
        FUZZ_ASSERT(o.captured == NULL && berr_msg()[0]);
        return 0;
    }
    tar_scan_free(&o);
    char mk[160];
    snprintf(mk, sizeof mk, "%s/a", root);
    mkdir(mk, 0700);
    snprintf(mk, sizeof mk, "%s/a/b", root);
    mkdir(mk, 0700);
    FUZZ_ASSERT(mkdir(out, 0700) == 0);
    tar_extract(fd, out); /* may fail (a name twice): what matters is where it writes */
    outside = 0;
    nftw(root, look, 16, FTW_PHYS);
    FUZZ_ASSERT(outside == 0);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
