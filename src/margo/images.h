/*
 * margo/images: the container images a margo application component runs, for `berth app
 * closure`. A compose.yaml names them in services.<name>.image; a Helm chart in its Chart.yaml
 * annotation artifacthub.io/images, in values.yaml (any key "image"), in literal `image:` lines of
 * its templates, and the same again in its subcharts (directories or nested .tgz). Every reference
 * found is normalised the way Docker reads it (docker.io/library/nginx:latest); what cannot be
 * resolved without rendering (a ${VAR} without default, a templated value) is reported raw.
 */
#ifndef BERTH_MARGO_IMAGES_H
#define BERTH_MARGO_IMAGES_H

#include <stddef.h>

/* A list of strings, de-duplicated, in the order first found. Zero-initialise; free with
 * img_list_free. */
typedef struct {
    char **items;
    size_t n, cap;
} img_list;

void img_list_free(img_list *l);
/* Copies s into l unless it is there already. 0, or -BERR_INTERNAL (out of memory). */
int img_list_add(img_list *l, const char *s);

/* Normalises a Docker-style image reference to host/repository[:tag][@digest]: no host means
 * docker.io (index.docker.io is docker.io too), a one-component docker.io name gets library/,
 * neither tag nor digest means :latest ("nginx" -> "docker.io/library/nginx:latest",
 * "ghcr.io/a/b@sha256:..." kept, "localhost:5000/x:1" host kept). The host is the first component
 * when it contains '.' or ':' or is "localhost". The repository must be lower-case
 * (ref_name_valid), the tag ref_tag_valid, the digest one berth can verify (digest_parse).
 * 0, or -BERR_BAD_REQUEST naming the reference (also when out is too small). */
int image_ref_normalize(const char *in, char *out, size_t len);

/* compose.yaml text: every services.<name>.image, normalised, into found. ${VAR:-default} and
 * ${VAR-default} take the default (defaults may nest), $$ is a '$'; a value still holding a
 * variable without default ($VAR, ${VAR}, ${VAR:?e}, ${VAR:+x}...) or that does not normalise goes
 * raw into unresolved. A service without image (build: only) is skipped. 0, or -BERR_BAD_REQUEST
 * (invalid YAML). */
int images_from_compose(const char *yaml, size_t len, img_list *found, img_list *unresolved);

/* A Helm chart archive (.tgz, also plain or zstd tar) read from fd (from offset 0): images from
 *  1. Chart.yaml annotation "artifacthub.io/images" (a YAML list of {name, image, platforms}),
 *  2. values.yaml: every key "image", at any depth, whose value is a string "repo[:tag]" or a map
 *     with repository (+ registry, tag, digest; registry and repository joined with '/'); a map
 *     without tag and without digest takes the chart's appVersion as tag (Helm convention);
 *     empty strings are placeholders and skipped; global.imageRegistry is not applied,
 *  3. templates/ (any depth) *.yaml|yml|tpl: literal lines `image: <ref>` / `- image: <ref>`,
 *     optionally quoted, that hold no "{{",
 *  4. subcharts: directories <chart>/charts/<sub>/ and archives <chart>/charts/<sub>.tgz (up to
 *     4 levels of nested archives).
 * Order: the top chart first, then subcharts as they appear; within a chart 1, 2, 3. References
 * that fail normalisation go raw into unresolved. Bounded: files over 4 MiB are skipped, reading
 * stops after 20000 entries (nested archives included). 0, -BERR_BAD_REQUEST (not an archive,
 * invalid Chart.yaml/values.yaml naming the file), -BERR_TOO_LARGE (over 64 MiB of YAML kept),
 * -BERR_UNAVAILABLE (no libarchive), -BERR_IO. */
int images_from_chart(int fd, img_list *found, img_list *unresolved);

#endif
