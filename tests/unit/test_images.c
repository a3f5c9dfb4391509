/* Unit tests for src/margo/images: reference normalisation, compose files, and a chart archive
 * (values, annotation, templates, a subchart directory and a nested subchart .tgz) built here. */
#include "margo/images.h"
#include "unit.h"
#include "util/err.h"
#include "util/tar.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static bool norm_is(const char *in, const char *want)
{
    char out[512];
    int rc = image_ref_normalize(in, out, sizeof out);
    if (rc < 0 || strcmp(out, want)) {
        printf("  normalize '%s': rc %d, got '%s', want '%s' (%s)\n", in, rc, rc < 0 ? "" : out,
               want, berr_msg());
        return false;
    }
    return true;
}

static bool norm_fails(const char *in)
{
    char out[512];
    return image_ref_normalize(in, out, sizeof out) == -BERR_BAD_REQUEST;
}

static bool list_is(const img_list *l, const char *const *want, size_t n)
{
    bool ok = l->n == n;
    for (size_t i = 0; ok && i < n; i++)
        ok = !strcmp(l->items[i], want[i]);
    if (!ok) {
        printf("  list has %zu:\n", l->n);
        for (size_t i = 0; i < l->n; i++)
            printf("    %s\n", l->items[i]);
    }
    return ok;
}

static bool list_has(const img_list *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->items[i], s)) return true;
    return false;
}

static void test_normalize(void)
{
    CHECK(norm_is("nginx", "docker.io/library/nginx:latest"));
    CHECK(norm_is("nginx:1.25", "docker.io/library/nginx:1.25"));
    CHECK(norm_is("library/nginx", "docker.io/library/nginx:latest"));
    CHECK(norm_is("docker.io/nginx", "docker.io/library/nginx:latest"));
    CHECK(norm_is("index.docker.io/nginx:1", "docker.io/library/nginx:1"));
    CHECK(norm_is("bitnami/redis:7.2", "docker.io/bitnami/redis:7.2"));
    CHECK(norm_is("ghcr.io/org/app:v1", "ghcr.io/org/app:v1"));
    CHECK(norm_is("localhost:5000/a/b", "localhost:5000/a/b:latest"));
    CHECK(norm_is("localhost/a", "localhost/a:latest"));
    CHECK(norm_is("localhost:5000/x:1", "localhost:5000/x:1"));
    CHECK(norm_is("host:5000/x@sha256:" HEX64, "host:5000/x@sha256:" HEX64));
    CHECK(norm_is("ghcr.io/a/b:v2@sha256:" HEX64, "ghcr.io/a/b:v2@sha256:" HEX64));
    CHECK(norm_is("nginx@sha256:" HEX64, "docker.io/library/nginx@sha256:" HEX64));
    CHECK(norm_is("[::1]:5000/x", "[::1]:5000/x:latest"));
    CHECK(norm_fails("Nginx"));
    CHECK(norm_fails("ghcr.io/Org/app:v1"));
    CHECK(norm_fails(""));
    CHECK(norm_fails("nginx:"));
    CHECK(norm_fails("nginx:-x"));
    CHECK(norm_fails("nginx@sha256:abc"));
    CHECK(norm_fails("host:99999/x"));
    CHECK(norm_fails("a..b.io/x"));
    CHECK(norm_fails("{{ .Values.image }}"));
    CHECK(norm_fails("ghcr.io/"));
    /* the message names the reference */
    image_ref_normalize("Upper/Case", (char[64]){0}, 64);
    CHECK(strstr(berr_msg(), "Upper/Case") != NULL);
    char small[16];
    CHECK(image_ref_normalize("nginx", small, sizeof small) == -BERR_BAD_REQUEST);
}

static void test_lists(void)
{
    img_list l = {0};
    for (int i = 0; i < 40; i++) {
        char s[16];
        snprintf(s, sizeof s, "x%d", i % 20);
        CHECK(img_list_add(&l, s) == 0);
    }
    CHECK(l.n == 20);
    CHECK_STR(l.items[0], "x0");
    CHECK_STR(l.items[19], "x19");
    img_list_free(&l);
    CHECK(l.n == 0 && l.items == NULL);
}

static void test_compose(void)
{
    const char yml[] = "services:\n"
                       "  web:\n"
                       "    image: nginx\n"
                       "  app:\n"
                       "    build: .\n"
                       "  api:\n"
                       "    image: \"ghcr.io/org/api:${TAG:-1.0}\"\n"
                       "  db:\n"
                       "    image: postgres:${UNSET}\n"
                       "  cache:\n"
                       "    image: redis:${REDIS_TAG-7}\n"
                       "  nested:\n"
                       "    image: ${REG:-${REG2:-quay.io}}/team/x:${V:-2}\n"
                       "  bare:\n"
                       "    image: $IMAGE\n"
                       "  again:\n"
                       "    image: docker.io/library/nginx:latest\n";
    img_list found = {0}, unres = {0};
    CHECK(images_from_compose(yml, sizeof yml - 1, &found, &unres) == 0);
    const char *want[] = {"docker.io/library/nginx:latest", "ghcr.io/org/api:1.0",
                          "docker.io/library/redis:7", "quay.io/team/x:2"};
    CHECK(list_is(&found, want, 4));
    const char *want_u[] = {"postgres:${UNSET}", "$IMAGE"};
    CHECK(list_is(&unres, want_u, 2));
    img_list_free(&found);
    img_list_free(&unres);

    const char bad[] = "services: [unclosed\n";
    CHECK(images_from_compose(bad, sizeof bad - 1, &found, &unres) == -BERR_BAD_REQUEST);
    const char none[] = "name: x\n";
    CHECK(images_from_compose(none, sizeof none - 1, &found, &unres) == 0);
    CHECK(found.n == 0 && unres.n == 0);
    img_list_free(&found);
    img_list_free(&unres);
}

static void put(const char *dir, const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    /* parent directories */
    for (char *s = p + strlen(dir) + 1; (s = strchr(s, '/')); s++) {
        *s = '\0';
        mkdir(p, 0755);
        *s = '/';
    }
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    if (fd < 0) return;
    size_t n = strlen(text);
    CHECK(write(fd, text, n) == (ssize_t)n);
    close(fd);
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

static void test_chart(void)
{
    char root[] = "/tmp/berth-unit-XXXXXX";
    CHECK(mkdtemp(root) != NULL);
    char chart[600], nested[600], tgz[600], nested_tgz[700];
    snprintf(chart, sizeof chart, "%s/mychart", root);
    snprintf(nested, sizeof nested, "%s/nested", root);
    snprintf(tgz, sizeof tgz, "%s/mychart-0.1.0.tgz", root);
    mkdir(chart, 0755);
    mkdir(nested, 0755);

    put(chart, "Chart.yaml",
        "apiVersion: v2\n"
        "name: mychart\n"
        "version: 0.1.0\n"
        "appVersion: \"2.4.1\"\n"
        "annotations:\n"
        "  artifacthub.io/images: |\n"
        "    - name: web\n"
        "      image: nginx:1.25\n"
        "    - name: side\n"
        "      image: ghcr.io/org/sidecar:v2\n"
        "      platforms:\n"
        "        - linux/amd64\n");
    put(chart, "values.yaml",
        "# defaults\n"
        "image: busybox:1.36\n"
        "api:\n"
        "  image:\n"
        "    registry: quay.io\n"
        "    repository: org/api\n"
        "    tag: 3\n"
        "worker:\n"
        "  image:\n"
        "    repository: org/worker\n"
        "    pullPolicy: IfNotPresent\n"
        "sidecars:\n"
        "  - name: a\n"
        "    image: redis:7\n"
        "  - name: b\n"
        "    image:\n"
        "      repository: ghcr.io/org/pinned\n"
        "      digest: sha256:" HEX64 "\n"
        "nginx:\n"
        "  image: nginx:1.25\n"
        "placeholder:\n"
        "  image:\n"
        "    repository: \"\"\n"
        "    tag: \"\"\n"
        "templated:\n"
        "  image: \"{{ .Values.x }}\"\n"
        "bad:\n"
        "  image: Upper/Case:1\n");
    put(chart, "templates/deployment.yaml",
        "apiVersion: apps/v1\n"
        "kind: Deployment\n"
        "spec:\n"
        "  template:\n"
        "    spec:\n"
        "      containers:\n"
        "        - name: main\n"
        "          image: \"{{ .Values.image }}\"\n"
        "          imagePullPolicy: Always\n"
        "        - image: \"docker.io/library/alpine:3.19\"  # literal\n"
        "          name: init\n"
        "      # image: commented/out:1\n");
    put(chart, "templates/NOTES.txt", "image: not/a-template:1\n");
    put(chart, "charts/sub/Chart.yaml",
        "apiVersion: v2\nname: sub\nversion: 1.0.0\nappVersion: \"9.9\"\n");
    put(chart, "charts/sub/values.yaml",
        "image:\n  repository: bitnami/postgresql\n  tag: \"16.1\"\n");
    /* a nested subchart archive */
    put(nested, "Chart.yaml", "apiVersion: v2\nname: nested\nversion: 0.1.0\n");
    put(nested, "values.yaml", "cache:\n  image: registry.example.com:5443/team/cache\n");
    put(nested, "templates/job.yaml", "spec:\n  containers:\n  - image: quay.io/nested/tool:1\n");
    snprintf(nested_tgz, sizeof nested_tgz, "%s/charts/nested-0.1.0.tgz", chart);
    CHECK(tar_create(nested, "nested", nested_tgz) == 0);
    CHECK(tar_create(chart, "mychart", tgz) == 0);

    int fd = open(tgz, O_RDONLY);
    CHECK(fd >= 0);
    img_list found = {0}, unres = {0};
    int rc = images_from_chart(fd, &found, &unres);
    CHECK(rc == 0);
    if (rc < 0) printf("  images_from_chart: %s\n", berr_msg());
    /* the top chart in a fixed order: annotation, values, templates */
    const char *want[] = {"docker.io/library/nginx:1.25",     "ghcr.io/org/sidecar:v2",
                          "docker.io/library/busybox:1.36",   "quay.io/org/api:3",
                          "docker.io/org/worker:2.4.1",       "docker.io/library/redis:7",
                          "ghcr.io/org/pinned@sha256:" HEX64, "docker.io/library/alpine:3.19"};
    size_t nwant = sizeof want / sizeof *want;
    CHECK(found.n == nwant + 3);
    img_list top = {.items = found.items, .n = found.n < nwant ? found.n : nwant};
    CHECK(list_is(&top, want, nwant));
    /* then the subcharts, in archive order (directory listing order) */
    CHECK(list_has(&found, "docker.io/bitnami/postgresql:16.1"));
    CHECK(list_has(&found, "registry.example.com:5443/team/cache:latest"));
    CHECK(list_has(&found, "quay.io/nested/tool:1"));
    const char *want_u[] = {"{{ .Values.x }}", "Upper/Case:1"};
    CHECK(list_is(&unres, want_u, 2));
    img_list_free(&found);
    img_list_free(&unres);

    /* read again from a non-zero offset: the function rewinds */
    CHECK(lseek(fd, 100, SEEK_SET) == 100);
    CHECK(images_from_chart(fd, &found, &unres) == 0);
    CHECK(found.n == nwant + 3);
    img_list_free(&found);
    img_list_free(&unres);
    close(fd);

    /* a broken values.yaml is an error naming the file */
    put(chart, "charts/sub/values.yaml", "image: [unclosed\n");
    unlink(nested_tgz);
    CHECK(tar_create(chart, "mychart", tgz) == 0);
    fd = open(tgz, O_RDONLY);
    CHECK(images_from_chart(fd, &found, &unres) == -BERR_BAD_REQUEST);
    CHECK(strstr(berr_msg(), "mychart/charts/sub/values.yaml") != NULL);
    img_list_free(&found);
    img_list_free(&unres);
    close(fd);

    /* a values.yaml of comments only is fine, and names nothing */
    char empty[600], empty_tgz[600];
    snprintf(empty, sizeof empty, "%s/empty", root);
    snprintf(empty_tgz, sizeof empty_tgz, "%s/empty.tgz", root);
    mkdir(empty, 0755);
    put(empty, "Chart.yaml", "apiVersion: v2\nname: empty\nversion: 0.1.0\n");
    put(empty, "values.yaml", "# nothing here\n---\n");
    CHECK(tar_create(empty, "empty", empty_tgz) == 0);
    fd = open(empty_tgz, O_RDONLY);
    CHECK(images_from_chart(fd, &found, &unres) == 0);
    CHECK(found.n == 0 && unres.n == 0);
    img_list_free(&found);
    img_list_free(&unres);
    close(fd);

    /* not an archive */
    char junk[700];
    snprintf(junk, sizeof junk, "%s/junk", root);
    put(root, "junk", "this is not a tar archive at all, not even close................");
    fd = open(junk, O_RDONLY);
    CHECK(images_from_chart(fd, &found, &unres) < 0);
    img_list_free(&found);
    img_list_free(&unres);
    close(fd);

    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    test_normalize();
    test_lists();
    test_compose();
    test_chart();
    UNIT_DONE();
}
