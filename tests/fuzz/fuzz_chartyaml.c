/*
 * Fuzzes Chart.yaml reading (src/helm/chart.c): the input is the file's text (as in a chart
 * archive, or the signed part of a .prov), read by yamlj_parse (libyaml -> jansson) and
 * checked by helm_chart_check_meta, the path every uploaded or mirrored chart takes.
 *
 * Invariants:
 *  - yamlj_parse returns 0 with a JSON object, or -BERR_BAD_REQUEST with no object and a
 *    message; helm_chart_check_meta returns 0 or -BERR_BAD_REQUEST;
 *  - accepted metadata has apiVersion v1 or v2, a name that passes helm_name_valid and equals the
 *    "name" string, a version that passes semver_valid and equals the "version" string, and
 *    a tag that is the version with '+' written '_' (a valid OCI tag);
 *  - the metadata rendered as YAML the way index.yaml entries are (yamlj_value, src/helm/
 *    index.c) reads back as the same JSON: what berth serves to Helm clients means what the
 *    chart said;
 *  - nothing leaks (LeakSanitizer).
 */
#include "fuzz.h"
#include "helm/helm.h"
#include "util/err.h"
#include "util/log.h"
#include "util/ref.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    log_set_level(LOG_ERROR);
    return 0;
}

static void check_info(json_t *meta, const helm_chart_info *info)
{
    const char *api = json_string_value(json_object_get(meta, "apiVersion"));
    FUZZ_ASSERT(api && (!strcmp(api, "v1") || !strcmp(api, "v2")));
    FUZZ_ASSERT(helm_name_valid(info->name));
    FUZZ_ASSERT(!strcmp(info->name, json_string_value(json_object_get(meta, "name"))));
    FUZZ_ASSERT(semver_valid(info->version));
    FUZZ_ASSERT(!strcmp(info->version, json_string_value(json_object_get(meta, "version"))));
    FUZZ_ASSERT(strlen(info->tag) == strlen(info->version));
    for (size_t i = 0; info->version[i]; i++)
        FUZZ_ASSERT(info->tag[i] == (info->version[i] == '+' ? '_' : info->version[i]));
    FUZZ_ASSERT(!strchr(info->tag, '+') && ref_tag_valid(info->tag));
}

/* index.yaml is rendered from the JSON: reading the rendering back must give the JSON again */
static void check_render(json_t *meta)
{
    strbuf b = {0};
    yamlj_value(&b, meta, 0);
    FUZZ_ASSERT(!b.oom);
    json_t *back = NULL;
    int rc = yamlj_parse(b.buf ? b.buf : "", b.len, "rendered", &back);
    if (rc < 0 || !json_equal(meta, back)) {
        fprintf(stderr, "rendered YAML (%s):\n%s\n", rc < 0 ? berr_msg() : "reads back different",
                b.buf ? b.buf : "");
    }
    FUZZ_ASSERT(rc == 0);
    FUZZ_ASSERT(json_equal(meta, back));
    json_decref(back);
    free(b.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *meta = (json_t *)1;
    berr_clear();
    int rc = yamlj_parse((const char *)data, size, "Chart.yaml", &meta);
    FUZZ_ASSERT(rc == 0 || rc == -BERR_BAD_REQUEST);
    if (rc < 0) {
        FUZZ_ASSERT(meta == NULL && berr_msg()[0]);
        return 0;
    }
    FUZZ_ASSERT(json_is_object(meta));
    check_render(meta);

    helm_chart_info info;
    memset(&info, 0x5a, sizeof info); /* check_meta must not rely on a zeroed info */
    info.meta = meta;
    rc = helm_chart_check_meta(meta, &info);
    FUZZ_ASSERT(rc == 0 || rc == -BERR_BAD_REQUEST);
    if (rc == 0) check_info(meta, &info);
    helm_chart_info_free(&info);
    FUZZ_ASSERT(info.meta == NULL);
    return 0;
}
