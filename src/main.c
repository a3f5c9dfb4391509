/*
 * main: command-line dispatch. `berth serve` runs the registry; `berth gc` and `berth fsck`
 * work on the same store, and may run while a server is serving it. Every subcommand takes
 * -c config.yml (registry:2 format). The server thread model: libmicrohttpd's threads serve
 * requests; one maintenance thread checks storage health and purges stale uploads; the main
 * thread waits for SIGTERM/SIGINT and shuts down cleanly, letting in-flight requests finish.
 */
#include "auth/auth.h"
#include "bundle/bundle.h"
#include "clientcfg.h"
#include "config.h"
#include "helm/helm.h"
#include "http/http.h"
#include "margo/margo.h"
#include "registry/registry.h"
#include "serve.h"
#include "proxy/upstream.h"
#include "store/store.h"
#include "trust/trust.h"
#include "ui/ui.h"
#include "util/err.h"
#include "util/log.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fputs("usage: berth <command> [-c config.yml] [options]\n"
          "commands:\n"
          "  serve               run the registry\n"
          "  app push DIR REF | pull REF DIR | inspect REF [--user U:P]\n"
          "                      margo application packages to and from any registry\n"
          "  app closure REF [--registry URL] [--platform OS/ARCH,...] [--json]\n"
          "                      everything a package needs offline: components, images\n"
          "  bundle create -o FILE [--closure] [--platform ...] [--registry URL] REF...\n"
          "  bundle import FILE (-c config.yml | --to URL)\n"
          "  bundle serve FILE|DIR [--addr HOST:PORT] [-c config.yml]\n"
          "                      air-gap bundles: OCI image layout archives\n"
          "  verify REF [-c config.yml]\n"
          "                      check REF's signatures against its trust policy\n"
          "  compose push DIR REF:REVISION | pull REF DIR [--user U:P]\n"
          "                      margo compose archives to and from any registry\n"
          "  gc [--dry-run] [--grace DURATION]\n"
          "                      remove unreferenced blobs and untagged manifests (online)\n"
          "  fsck                re-hash every blob, check every reference; non-zero on problems\n"
          "  status [--json]     what the store holds, cache, upstreams, last gc and fsck\n"
          "  migrate             create or upgrade the metadata schema (database:) and exit\n"
          "  sync [-c config.yml] list.yml\n"
          "                      pull the listed images into the mirror ahead of time\n"
          "  client-config --for containerd|k3s|docker|podman --endpoint URL\n"
          "                [--registries docker.io,ghcr.io,...]\n"
          "                      print the client files that use berth as a mirror\n"
          "  version             print the version\n"
          "Run `berth serve --help` for the configuration keys.\n",
          f);
}

typedef struct {
    const char *config;
    bool dry_run;
    const char *grace;
    bool help;
    const char *client, *endpoint, *registries;
    const char *positional; /* first non-option argument */
} cli;

static int parse_cli(int argc, char **argv, cli *o)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},     {"dry-run", no_argument, NULL, 'n'},
        {"grace", required_argument, NULL, 'g'},      {"help", no_argument, NULL, 'h'},
        {"for", required_argument, NULL, 'f'},        {"endpoint", required_argument, NULL, 'e'},
        {"registries", required_argument, NULL, 'r'}, {NULL, 0, NULL, 0}};
    memset(o, 0, sizeof *o);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:nh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config = optarg;
            break;
        case 'n':
            o->dry_run = true;
            break;
        case 'g':
            o->grace = optarg;
            break;
        case 'h':
            o->help = true;
            break;
        case 'f':
            o->client = optarg;
            break;
        case 'e':
            o->endpoint = optarg;
            break;
        case 'r':
            o->registries = optarg;
            break;
        default:
            return -1;
        }
    }
    if (optind < argc) o->positional = argv[optind];
    return 0;
}

static int load(const cli *o, config *cfg)
{
    int rc = config_load(cfg, o->config);
    if (rc < 0) {
        fprintf(stderr, "berth: %s\n", berr_msg());
        return rc;
    }
    log_set_level((log_level)cfg->log_level);
    return 0;
}

/* ---- serve ---- */

static int cmd_serve(const cli *o)
{
    if (o->help) {
        puts("usage: berth serve [-c config.yml]\n");
        config_print_keys();
        return 0;
    }
    config cfg;
    if (load(o, &cfg) < 0) return 1;
    if (cfg.trust.npolicies && trust_load(&cfg) < 0) { /* trust: keys load at start, or no start */
        config_free(&cfg);
        return 1;
    }
    serve_block_signals();
    if ((cfg.nmirrors || cfg.proxy || cfg.helm.nupstreams) && upstream_global_init() < 0) {
        log_error("msg=\"mirrors are configured but libcurl cannot be loaded\"");
        config_free(&cfg);
        return 1;
    }
    store *st;
    if (store_open(&st, &cfg) < 0) {
        log_error("msg=\"cannot open storage\" root=%s err=\"%s\"", cfg.root, berr_msg());
        config_free(&cfg);
        return 1;
    }
    int rc = serve_run(&cfg, st);
    store_close(st);
    config_free(&cfg);
    return rc < 0 ? 1 : 0;
}

/* ---- gc, fsck ---- */

static int cmd_gc(const cli *o)
{
    config cfg;
    if (load(o, &cfg) < 0) return 1;
    store_gc_opts g = {.grace_s = cfg.gc_grace_s, .dry_run = o->dry_run};
    if (o->grace && config_parse_duration(o->grace, &g.grace_s) < 0) {
        fprintf(stderr, "berth gc: invalid --grace '%s'\n", o->grace);
        config_free(&cfg);
        return 2;
    }
    store *st;
    if (store_open(&st, &cfg) < 0) {
        fprintf(stderr, "berth gc: %s\n", berr_msg());
        config_free(&cfg);
        return 1;
    }
    int rc = store_gc(st, &g);
    printf("%s%zu manifests, %zu blobs (%llu bytes), %zu orphan files\n",
           g.dry_run ? "would remove " : "removed ", g.manifests_removed, g.blobs_removed,
           (unsigned long long)g.bytes_removed, g.files_removed);
    if (rc < 0) fprintf(stderr, "berth gc: %s\n", berr_msg());
    store_close(st);
    config_free(&cfg);
    return rc < 0 ? 1 : 0;
}

static int cmd_fsck(const cli *o)
{
    config cfg;
    if (load(o, &cfg) < 0) return 1;
    store *st;
    if (store_open(&st, &cfg) < 0) {
        fprintf(stderr, "berth fsck: %s\n", berr_msg());
        config_free(&cfg);
        return 1;
    }
    long problems = 0;
    int rc = store_fsck(st, &problems);
    if (rc < 0) fprintf(stderr, "berth fsck: %s\n", berr_msg());
    store_close(st);
    config_free(&cfg);
    return (rc < 0 || problems > 0) ? 1 : 0;
}

/* Opening the store applies the metadata migrations (PostgreSQL: under an advisory lock, so
 * several processes may run it at once). */
static int cmd_migrate(const cli *o)
{
    config cfg;
    if (load(o, &cfg) < 0) return 1;
    store *st;
    if (store_open(&st, &cfg) < 0) {
        fprintf(stderr, "berth migrate: %s\n", berr_msg());
        config_free(&cfg);
        return 1;
    }
    store_close(st);
    printf("metadata schema up to date (%s)\n", cfg.database.enabled ? "postgres" : "sqlite");
    config_free(&cfg);
    return 0;
}

/* The registries come from --registries, else from the config's mirrors, else docker.io. */
static int cmd_client_config(const cli *o)
{
    if (!o->client || !o->endpoint) {
        fputs("usage: berth client-config --for containerd|k3s|docker|podman --endpoint URL "
              "[--registries a,b] [-c config.yml]\n",
              stderr);
        return 2;
    }
    const char *regs[64];
    size_t n = 0;
    char buf[2048] = "";
    config cfg = {0};
    bool have_cfg = false;
    if (o->registries) {
        snprintf(buf, sizeof buf, "%s", o->registries);
        char *save = NULL;
        for (char *t = strtok_r(buf, ",", &save); t && n < 64; t = strtok_r(NULL, ",", &save))
            regs[n++] = t;
    } else if (o->config) {
        if (load(o, &cfg) < 0) return 1;
        have_cfg = true;
        for (size_t i = 0; i < cfg.nmirrors && n < 64; i++)
            regs[n++] = cfg.mirrors[i].name;
    }
    if (n == 0) regs[n++] = "docker.io";
    int rc = clientcfg_print(stdout, o->client, o->endpoint, regs, n);
    if (have_cfg) config_free(&cfg);
    if (rc < 0) fprintf(stderr, "berth client-config: unknown client '%s'\n", o->client);
    return rc < 0 ? 2 : 0;
}

static int cmd_sync(const cli *o)
{
    if (!o->positional) {
        fputs("usage: berth sync -c config.yml list.yml\n", stderr);
        return 2;
    }
    config cfg;
    if (load(o, &cfg) < 0) return 1;
    signal(SIGPIPE, SIG_IGN);
    if (upstream_global_init() < 0) {
        fprintf(stderr, "berth sync: %s\n", berr_msg());
        config_free(&cfg);
        return 1;
    }
    store *st;
    if (store_open(&st, &cfg) < 0) {
        fprintf(stderr, "berth sync: %s\n", berr_msg());
        config_free(&cfg);
        return 1;
    }
    int rc = reg_sync(st, &cfg, o->positional);
    if (rc < 0) fprintf(stderr, "berth sync: %s\n", berr_msg());
    store_close(st);
    config_free(&cfg);
    return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("berth %s\n", BERTH_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "app") && argc > 2 && !strcmp(argv[2], "closure"))
        return bundle_closure_cli(argc - 3, argv + 3);
    if (!strcmp(cmd, "app")) return margo_cli(argc - 2, argv + 2);
    if (!strcmp(cmd, "bundle") && argc > 2 && !strcmp(argv[2], "verify"))
        return trust_bundle_cli(argc - 2, argv + 2);
    if (!strcmp(cmd, "bundle")) return bundle_cli(argc - 2, argv + 2);
    if (!strcmp(cmd, "verify")) return trust_verify_cli(argc - 2, argv + 2);
    if (!strcmp(cmd, "compose")) return margo_compose_cli(argc - 2, argv + 2);
    if (!strcmp(cmd, "status")) return ui_status_cli(argc - 1, argv + 1);
    cli o;
    if (parse_cli(argc - 1, argv + 1, &o) < 0) {
        usage(stderr);
        return 2;
    }
    /* registry:2 style: `serve config.yml` */
    if (strcmp(cmd, "sync") != 0 && !o.config) o.config = o.positional;
    if (!strcmp(cmd, "serve")) return cmd_serve(&o);
    if (!strcmp(cmd, "sync")) return cmd_sync(&o);
    if (!strcmp(cmd, "gc")) return cmd_gc(&o);
    if (!strcmp(cmd, "fsck")) return cmd_fsck(&o);
    if (!strcmp(cmd, "migrate")) return cmd_migrate(&o);
    if (!strcmp(cmd, "client-config")) return cmd_client_config(&o);
    fprintf(stderr, "berth: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
