/*
 * Fuzzes chart archive inspection (helm_chart_inspect, src/helm/chart.c: libarchive gzip + tar,
 * path checks, the size limit, Chart.yaml). The input is handed over in a memfd, as an upload's
 * file is. Two forms, so the fuzzer reaches the tar layer as well as the gzip one:
 *  - the input as it is (a .tgz, or anything else: the seeds are real chart archives);
 *  - "TAR:" followed by a tar stream, which the target wraps in a gzip of stored (uncompressed)
 *    deflate blocks with the right CRC, so mutations of the tar headers are not lost to CRC
 *    mismatches.
 * max_uncompressed is 1 MiB, so a bomb is refused early and no input can take long.
 *
 * Invariants: 0 or -BERR_BAD_REQUEST (-BERR_INTERNAL only for out of memory); on success a JSON
 * object whose name passes helm_name_valid and version semver_valid, equal to info's strings,
 * and info's tag is the version with '+' written '_'; on failure a message and no metadata;
 * helm_chart_info_free releases everything (LeakSanitizer); no crash, no hang.
 */
#include "fuzz.h"
#include "helm/helm.h"
#include "util/err.h"
#include "util/log.h"

#include <sys/mman.h>
#include <unistd.h>

#define MAX_UNCOMPRESSED (1 << 20)

static int fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    log_set_level(LOG_ERROR);
    fd = memfd_create("berth-fuzz-chart", 0);
    if (fd < 0) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_tgz_to_fd(fd, data, size);

    helm_chart_info info;
    memset(&info, 0x5a, sizeof info); /* inspect must initialise it itself */
    berr_clear();
    int rc = helm_chart_inspect(fd, MAX_UNCOMPRESSED, &info);
    FUZZ_ASSERT(rc == 0 || rc == -BERR_BAD_REQUEST || rc == -BERR_INTERNAL);
    if (rc == 0) {
        FUZZ_ASSERT(json_is_object(info.meta));
        const char *name = json_string_value(json_object_get(info.meta, "name"));
        const char *version = json_string_value(json_object_get(info.meta, "version"));
        FUZZ_ASSERT(name && !strcmp(name, info.name) && helm_name_valid(info.name));
        FUZZ_ASSERT(version && !strcmp(version, info.version) && semver_valid(info.version));
        FUZZ_ASSERT(strlen(info.tag) == strlen(info.version));
        for (size_t i = 0; info.version[i]; i++)
            FUZZ_ASSERT(info.tag[i] == (info.version[i] == '+' ? '_' : info.version[i]));
    } else {
        FUZZ_ASSERT(info.meta == NULL && berr_msg()[0]);
    }
    helm_chart_info_free(&info);
    FUZZ_ASSERT(info.meta == NULL);
    return 0;
}
