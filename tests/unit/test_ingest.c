/*
 * The ingest hooks (src/registry/ingest.h), on a real store in a temporary directory: hooks run
 * in the fixed order (validation, then policy, then after the commit; by order number within a
 * phase, whatever the order of registration), see the source and the store request, a refusal
 * stops the ingest with its error and nothing is stored (and no later hook runs), an after-commit
 * hook's failure does not undo or fail the ingest (it sees the manifest stored), and an invalid
 * manifest is refused before any hook runs.
 */
#include "unit.h"

#include "config.h"
#include "registry/ingest.h"
#include "store/store.h"
#include "util/digest.h"
#include "util/err.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char trace[256];
static const char *refuse_in; /* the hook name that refuses, or NULL */
static int committed_seen;
static ingest_source seen_source;

static int hook(ingest_ctx *c, void *arg)
{
    const char *name = arg;
    strncat(trace, name, sizeof trace - strlen(trace) - 2);
    strcat(trace, " ");
    seen_source = c->in->source;
    if (c->put == NULL || strcmp(c->put->repo, c->in->repo) != 0)
        return berr_set(BERR_INTERNAL, "hook %s: no store request", name);
    if (name[0] == 'c') {
        store_manifest m;
        committed_seen = store_manifest_get(c->st, c->in->repo, c->in->digest, &m);
        if (committed_seen == 0) store_manifest_free(&m);
        return berr_set(BERR_INTERNAL, "an after-commit hook fails");
    }
    if (refuse_in && !strcmp(refuse_in, name)) return berr_set(BERR_DENIED, "refused by %s", name);
    return 0;
}

static int ingest(store *st, const config *cfg, const char *repo, const char *tag, int seed)
{
    char content[256], digest[DIGEST_STR_MAX];
    snprintf(content, sizeof content,
             "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
             "\"manifests\":[],\"annotations\":{\"seed\":\"%d\"}}",
             seed);
    digest_buf(DIGEST_SHA256, content, strlen(content), digest);
    const char *tags[1] = {tag};
    ingest_req q = {.source = INGEST_BUNDLE,
                    .repo = repo,
                    .content = content,
                    .len = strlen(content),
                    .digest = digest,
                    .tags = tags,
                    .ntags = 1};
    trace[0] = '\0';
    committed_seen = 1;
    return ingest_manifest(st, cfg, &q, NULL);
}

static bool tagged(store *st, const char *repo, const char *tag)
{
    store_manifest m;
    if (store_manifest_get(st, repo, tag, &m) < 0) return false;
    store_manifest_free(&m);
    return true;
}

int main(void)
{
    log_set_level(LOG_ERROR);
    char dir[] = "/tmp/berth-ingest-XXXXXX";
    if (!mkdtemp(dir)) return 2;
    config cfg;
    CHECK(config_load(&cfg, NULL) == 0);
    free(cfg.root);
    cfg.root = strdup(dir);
    store *st = NULL;
    CHECK(store_open(&st, &cfg) == 0);
    if (!st) UNIT_DONE();

    /* registered out of order: run by phase, then order, then registration */
    CHECK(ingest_hook_add(INGEST_COMMITTED, 0, "c0", hook, "c0") == 0);
    CHECK(ingest_hook_add(INGEST_POLICY, 0, "p0", hook, "p0") == 0);
    CHECK(ingest_hook_add(INGEST_VALIDATE, 500, "v500", hook, "v500") == 0);
    CHECK(ingest_hook_add(INGEST_VALIDATE, 50, "v50", hook, "v50") == 0);
    CHECK(ingest_hook_add(INGEST_VALIDATE, 50, "v50b", hook, "v50b") == 0);
    CHECK(ingest_hook_add(INGEST_NPHASES, 0, "bad", hook, "bad") < 0);

    CHECK(ingest(st, &cfg, "t/app", "v1", 1) == 0);
    CHECK_STR(trace, "v50 v50b v500 p0 c0 ");
    CHECK(seen_source == INGEST_BUNDLE);
    CHECK(committed_seen == 0); /* the after-commit hook saw the manifest stored */
    CHECK(tagged(st, "t/app", "v1"));

    /* a validation hook refuses: its error, no later hook, nothing stored */
    refuse_in = "v50b";
    int rc = ingest(st, &cfg, "t/app", "v2", 2);
    CHECK(rc == -BERR_DENIED);
    CHECK(strstr(berr_msg(), "refused by v50b") != NULL);
    CHECK_STR(trace, "v50 v50b ");
    CHECK(!tagged(st, "t/app", "v2"));

    /* the policy refuses: after every validation hook, before the commit */
    refuse_in = "p0";
    CHECK(ingest(st, &cfg, "t/app", "v3", 3) == -BERR_DENIED);
    CHECK_STR(trace, "v50 v50b v500 p0 ");
    CHECK(!tagged(st, "t/app", "v3"));

    /* an invalid manifest is refused before any hook */
    refuse_in = NULL;
    trace[0] = '\0';
    const char *bad = "{\"schemaVersion\":1}";
    char bd[DIGEST_STR_MAX];
    digest_buf(DIGEST_SHA256, bad, strlen(bad), bd);
    ingest_req q = {
        .source = INGEST_PUSH, .repo = "t/app", .content = bad, .len = strlen(bad), .digest = bd};
    CHECK(ingest_manifest(st, &cfg, &q, NULL) == -BERR_MANIFEST_INVALID);
    CHECK_STR(trace, "");

    CHECK_STR(ingest_source_name(INGEST_HELM_MIRROR), "helm-mirror");

    store_close(st);
    config_free(&cfg);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) CHECK(0);
    UNIT_DONE();
}
