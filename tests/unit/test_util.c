/* Unit tests for src/util: reference grammar, digests, error table, log formats; config parsing;
 * the Range parser. */
#include "config.h"
#include "registry/httpparse.h"
#include "unit.h"
#include "util/digest.h"
#include "util/err.h"
#include "util/log.h"
#include "util/ref.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_names(void)
{
    CHECK(ref_name_valid("library/nginx"));
    CHECK(ref_name_valid("a"));
    CHECK(ref_name_valid("a.b_c__d---e/f0"));
    CHECK(ref_name_valid("x/manifests/y"));
    CHECK(!ref_name_valid(""));
    CHECK(!ref_name_valid(".."));
    CHECK(!ref_name_valid("a/../b"));
    CHECK(!ref_name_valid("/abs"));
    CHECK(!ref_name_valid("a//b"));
    CHECK(!ref_name_valid("a/"));
    CHECK(!ref_name_valid("Upper"));
    CHECK(!ref_name_valid("a___b"));
    CHECK(!ref_name_valid("a.-b"));
    CHECK(!ref_name_valid("-a"));
    CHECK(!ref_name_valid("a%2e"));
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[299] = '\0';
    CHECK(!ref_name_valid(longname));
    longname[255] = '\0';
    CHECK(ref_name_valid(longname));
}

static void test_tags(void)
{
    CHECK(ref_tag_valid("latest"));
    CHECK(ref_tag_valid("_x"));
    CHECK(ref_tag_valid("1.0-rc.1_A"));
    CHECK(!ref_tag_valid(".hidden"));
    CHECK(!ref_tag_valid("-x"));
    CHECK(!ref_tag_valid("a/b"));
    CHECK(!ref_tag_valid(""));
    char t[140];
    memset(t, 'a', sizeof t - 1);
    t[139] = '\0';
    CHECK(!ref_tag_valid(t));
    t[128] = '\0';
    CHECK(ref_tag_valid(t));
}

static void test_digests(void)
{
    char out[DIGEST_STR_MAX];
    digest_buf(DIGEST_SHA256, "hello\n", 6, out);
    CHECK_STR(out, "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
    digest_buf(DIGEST_SHA512, "", 0, out);
    CHECK_STR(out,
              "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d8"
              "5f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e");
    /* incremental == one-shot, and a saved context resumes */
    digest_ctx c, saved;
    digest_init(&c, DIGEST_SHA256);
    digest_update(&c, "hel", 3);
    saved = c;
    digest_update(&saved, "lo\n", 3);
    digest_final(&saved, out);
    CHECK_STR(out, "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
    digest_algo a;
    CHECK(digest_parse("sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
                       &a) == 0 &&
          a == DIGEST_SHA256);
    CHECK(digest_parse("sha256:5891B5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
                       &a) == -BERR_DIGEST_INVALID);
    CHECK(digest_parse("sha256:abc", &a) == -BERR_DIGEST_INVALID);
    CHECK(digest_parse("md5:d41d8cd98f00b204e9800998ecf8427e", &a) == -BERR_DIGEST_INVALID);
    CHECK(digest_parse(":abc", &a) == -BERR_DIGEST_INVALID);
    CHECK(digest_parse("nocolon", &a) == -BERR_DIGEST_INVALID);
}

static void test_errors(void)
{
    CHECK(berr_http_status(BERR_BLOB_UNKNOWN) == 404);
    CHECK(berr_http_status(BERR_DIGEST_INVALID) == 400);
    CHECK(berr_http_status(BERR_RANGE_INVALID) == 416);
    CHECK(berr_http_status(BERR_UNSUPPORTED) == 405);
    CHECK(berr_http_status(BERR_TOOMANYREQUESTS) == 429);
    CHECK_STR(berr_code_name(BERR_MANIFEST_BLOB_UNKNOWN), "MANIFEST_BLOB_UNKNOWN");
    CHECK(berr_set(BERR_NAME_INVALID, "x %d", 1) == -BERR_NAME_INVALID);
    CHECK_STR(berr_msg(), "x 1");
}

static void test_config(void)
{
    int64_t v;
    CHECK(config_parse_duration("1h30m", &v) == 0 && v == 5400);
    CHECK(config_parse_duration("168h", &v) == 0 && v == 604800);
    CHECK(config_parse_duration("45", &v) == 0 && v == 45);
    CHECK(config_parse_duration("10x", &v) < 0);
    CHECK(config_parse_size("4MiB", &v) == 0 && v == 4194304);
    CHECK(config_parse_size("20GiB", &v) == 0 && v == 21474836480LL);
    char path[] = "/tmp/berth-unit-XXXXXX";
    int fd = mkstemp(path);
    const char yml[] = "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                       "    rootdirectory: /var/lib/x\n  delete:\n    enabled: true\n"
                       "  cache:\n    blobdescriptor: inmemory\nhttp:\n  addr: :6000\n"
                       "  headers:\n    X-Content-Type-Options: [nosniff]\n";
    CHECK(write(fd, yml, sizeof yml - 1) == (ssize_t)(sizeof yml - 1));
    close(fd);
    log_set_level(LOG_ERROR);
    setenv("REGISTRY_HTTP_ADDR", "127.0.0.1:7000", 1);
    config cfg;
    CHECK(config_load(&cfg, path) == 0);
    CHECK_STR(cfg.root, "/var/lib/x");
    CHECK(cfg.delete_enabled);
    CHECK_STR(cfg.addr, "127.0.0.1:7000");
    CHECK(cfg.log_level == LOG_WARN);
    CHECK(cfg.nheaders == 1 && !strcmp(cfg.headers[0].name, "X-Content-Type-Options"));
    config_free(&cfg);
    unsetenv("REGISTRY_HTTP_ADDR");
    setenv("REGISTRY_STORAGE_DELETE_ENABLED", "maybe", 1);
    CHECK(config_load(&cfg, path) == -BERR_CONFIG);
    config_free(&cfg);
    unsetenv("REGISTRY_STORAGE_DELETE_ENABLED");
    CHECK(config_load(&cfg, "/nonexistent/berth.yml") == -BERR_CONFIG);
    config_free(&cfg);
    unlink(path);
}

/* What one log_info call writes to stderr (captured through a file), in buf. */
static void log_capture(char *buf, size_t len, const char *msg)
{
    char path[] = "/tmp/berth-unit-log-XXXXXX";
    int fd = mkstemp(path), saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    log_info("%s", msg);
    dup2(saved, STDERR_FILENO);
    close(saved);
    ssize_t n = pread(fd, buf, len - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
}

static void test_log(void)
{
    char out[4096];
    log_set_level(LOG_INFO);
    const char *keys[] = {"service", "env"}, *values[] = {"registry", "a b"};
    log_set_fields(keys, values, 2);
    log_set_format(LOG_TEXT);
    log_capture(out, sizeof out, "msg=\"hello\" k=v");
    CHECK(strstr(out, " level=info msg=\"hello\" k=v service=registry env=\"a b\"\n") != NULL);
    log_set_format(LOG_JSON);
    log_capture(out, sizeof out, "msg=\"a \\\"quoted\\\" word\" n=42 err=\"x=y\"");
    json_t *j = json_loads(out, 0, NULL);
    CHECK(j != NULL && out[strlen(out) - 1] == '\n');
    CHECK_STR(json_string_value(json_object_get(j, "level")), "info");
    CHECK_STR(json_string_value(json_object_get(j, "msg")), "a \"quoted\" word");
    CHECK_STR(json_string_value(json_object_get(j, "n")), "42");
    CHECK_STR(json_string_value(json_object_get(j, "err")), "x=y");
    CHECK_STR(json_string_value(json_object_get(j, "env")), "a b");
    CHECK(json_is_string(json_object_get(j, "time")));
    json_decref(j);
    log_capture(out, sizeof out, "not logfmt \xff at all");
    j = json_loads(out, 0, NULL);
    CHECK(j != NULL);
    CHECK_STR(json_string_value(json_object_get(j, "msg")), "not logfmt ? at all");
    json_decref(j);
    CHECK(log_parse_format("json") == LOG_JSON && log_parse_format("text") == LOG_TEXT);
    CHECK(log_parse_format("yaml") < 0);
    log_set_format(LOG_TEXT);
    log_set_fields(NULL, NULL, 0);
    log_set_level(LOG_ERROR);
}

static void test_range(void)
{
    uint64_t off = 0, len = 0;
    CHECK(reg_parse_range("bytes=500-0", 1000, &off, &len) == REG_RANGE_UNSATISFIABLE);
    CHECK(reg_parse_range("bytes=10-19", 1000, &off, &len) == REG_RANGE_OK && off == 10 &&
          len == 10);
    CHECK(reg_parse_range("bytes=5-x", 1000, &off, &len) == REG_RANGE_NONE);
}

int main(void)
{
    test_names();
    test_tags();
    test_digests();
    test_errors();
    test_config();
    test_log();
    test_range();
    UNIT_DONE();
}
