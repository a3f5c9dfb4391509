/*
 * trust/cli: `berth verify REF [-c config.yml]`. Reads the store named by the config (it may run
 * beside a serving berth), checks the manifest REF names against the policy covering its
 * repository, and prints every signature examined and the verdict. Exit status: 0 when the
 * policy is met (or no policy covers the repository), 1 when it is not, 2 on usage or errors.
 * Invariant: it writes nothing to the store.
 */
#include "config.h"
#include "store/store.h"
#include "trust/trust.h"
#include "util/err.h"
#include "util/ref.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_line(void *arg, const char *line)
{
    (void)arg;
    printf("  %s\n", line);
}

/* "repo:tag", "repo@digest" or "repo" (latest) into repo and ref. */
static int split_ref(const char *s, char *repo, size_t rlen, char *ref, size_t flen)
{
    const char *at = strchr(s, '@');
    const char *slash = strrchr(s, '/');
    const char *colon = strrchr(s, ':');
    if (at) {
        snprintf(repo, rlen, "%.*s", (int)(at - s), s);
        snprintf(ref, flen, "%s", at + 1);
    } else if (colon && (!slash || colon > slash)) {
        snprintf(repo, rlen, "%.*s", (int)(colon - s), s);
        snprintf(ref, flen, "%s", colon + 1);
    } else {
        snprintf(repo, rlen, "%s", s);
        snprintf(ref, flen, "latest");
    }
    return ref_name_valid(repo) && (ref_is_digest(ref) || ref_tag_valid(ref)) ? 0 : -1;
}

int trust_verify_cli(int argc, char **argv)
{
    const char *cfg_path = NULL, *refarg = NULL;
    for (int i = 0; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc)
            cfg_path = argv[++i];
        else if (argv[i][0] != '-' && !refarg)
            refarg = argv[i];
        else
            refarg = NULL, i = argc;
    }
    char repo[512], ref[256];
    if (!refarg || split_ref(refarg, repo, sizeof repo, ref, sizeof ref) < 0) {
        fputs("usage: berth verify REPOSITORY[:TAG|@DIGEST] [-c config.yml]\n", stderr);
        return 2;
    }
    config cfg;
    if (config_load(&cfg, cfg_path) < 0) {
        fprintf(stderr, "berth verify: %s\n", berr_msg());
        return 2;
    }
    store *st = NULL;
    int rc = store_open(&st, &cfg);
    store_manifest m = {0};
    if (rc == 0) rc = store_manifest_get(st, repo, ref, &m);
    int status = 2;
    if (rc == 0) {
        printf("%s@%s (%s)\n", repo, m.digest, m.media_type ? m.media_type : "");
        const config_trust_policy *p = trust_policy_for(&cfg, repo);
        trust_source src;
        trust_store_source(st, &src);
        trust_verdict v;
        if (!p) {
            printf("no trust policy covers %s: nothing to verify\n", repo);
            status = 0;
        } else if ((rc = trust_check(&cfg, &src, repo, m.digest, m.media_type, m.content, m.size,
                                     &v, print_line, NULL)) == 0) {
            const char *mode = p->warn ? "warn" : "enforce";
            if (v.accepted) {
                printf("policy '%s' (%s): accepted: signed by %s\n", p->name, mode, v.signer);
                status = 0;
            } else {
                printf("policy '%s' (%s): NOT MET: %s\n", p->name, mode, v.reason);
                status = 1;
            }
        }
    }
    if (rc < 0) fprintf(stderr, "berth verify: %s: %s\n", refarg, berr_msg());
    store_manifest_free(&m);
    if (st) store_close(st);
    config_free(&cfg);
    return status;
}
