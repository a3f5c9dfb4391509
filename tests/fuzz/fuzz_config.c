/*
 * Fuzzes the configuration loader (config_load, src/config.c: libyaml, the generic tree, the key
 * table) with the input as the config file, written to a memfd and loaded by its /proc/self/fd
 * path. REGISTRY_* variables are cleared first, so only the file counts. A loaded config has its
 * defaults' invariants (a root and address, health interval and threshold >= 1, every mirror with
 * at least one http(s) URL with a host, headers without CR/LF); config_free releases everything
 * either way.
 */
#include "config.h"
#include "fuzz.h"
#include "util/err.h"
#include "util/log.h"

#include <sys/mman.h>
#include <unistd.h>

extern char **environ;
static int fd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    for (char **e = environ; *e;) {
        if (!strncmp(*e, "REGISTRY_", 9)) {
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)strcspn(*e, "="), *e);
            unsetenv(name);
            e = environ; /* the array may have changed */
        } else {
            e++;
        }
    }
    log_set_level(LOG_ERROR); /* unknown keys are warnings: keep the run quiet */
    fd = memfd_create("berth-fuzz-config", 0);
    if (fd < 0) abort();
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return 0;
}

/* "http(s)://" followed by a host */
static bool http_url(const char *u)
{
    const char *host = !strncmp(u, "http://", 7)    ? u + 7
                       : !strncmp(u, "https://", 8) ? u + 8
                                                    : NULL;
    return host && *host && *host != '/';
}

static void check_mirror(const config_mirror *m)
{
    FUZZ_ASSERT(m->name && m->local && m->nurls >= 1);
    for (size_t i = 0; i < m->nurls; i++)
        FUZZ_ASSERT(m->urls[i] && http_url(m->urls[i]));
    /* the store prefix is a non-empty name component */
    FUZZ_ASSERT(m->local[0] &&
                strspn(m->local, "abcdefghijklmnopqrstuvwxyz0123456789.-") == strlen(m->local));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size) abort();
    config cfg;
    int rc = config_load(&cfg, path);
    FUZZ_ASSERT(rc == 0 || rc == -BERR_CONFIG);
    if (rc == 0) {
        FUZZ_ASSERT(cfg.path && !strcmp(cfg.path, path));
        FUZZ_ASSERT(cfg.root && cfg.addr);
        FUZZ_ASSERT(cfg.log_level >= LOG_ERROR && cfg.log_level <= LOG_DEBUG);
        FUZZ_ASSERT(cfg.health_interval_s >= 1 && cfg.health_threshold >= 1);
        FUZZ_ASSERT((cfg.tls_cert == NULL) == (cfg.tls_key == NULL));
        FUZZ_ASSERT(cfg.connection_limit >= 0 && cfg.connection_limit <= 1000000);
        FUZZ_ASSERT(cfg.threads >= 0 && cfg.threads <= 1000000);
        for (size_t i = 0; i < cfg.nheaders; i++) {
            FUZZ_ASSERT(cfg.headers[i].name && cfg.headers[i].value);
            FUZZ_ASSERT(!strpbrk(cfg.headers[i].name, "\r\n:") &&
                        !strpbrk(cfg.headers[i].value, "\r\n"));
        }
        for (size_t i = 0; i < cfg.nmirrors; i++)
            check_mirror(&cfg.mirrors[i]);
        if (cfg.proxy) check_mirror(cfg.proxy);
        for (size_t i = 0; i < cfg.npins; i++)
            FUZZ_ASSERT(cfg.pins[i]);
    }
    config_free(&cfg);
    return 0;
}
