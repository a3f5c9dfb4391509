/*
 * margo: checks of margo's own artifacts when they are pushed (see margo.c): Application Packages
 * (margo.yaml and its resources) and Compose Archives.
 */
#ifndef BERTH_MARGO_H
#define BERTH_MARGO_H

#include "config.h"
#include "store/store.h"

#include <jansson.h>

#define MARGO_MT_APP "application/vnd.margo.app.v1+json"
#define MARGO_MT_APP_OLD "application/vnd.org.margo.app.v1+json"
#define MARGO_MT_COMPOSE "application/vnd.org.margo.component.compose+json"

/* For a manifest PUT: 0 when it is not a margo artifact or passes; -BERR_MANIFEST_INVALID naming
 * the rule and field; -BERR_MANIFEST_BLOB_UNKNOWN when a layer it must read is missing. */
int margo_check_manifest(store *s, const config *cfg, const char *repo, const char *content,
                         size_t len, const char *const *tags, size_t ntags);
/* Registers margo_check_manifest as an ingest validation hook (registry/ingest.h, order 100). */
void margo_ingest_register(void);
/* `berth app push|pull|inspect` (cli.c); argv after "app". */
int margo_cli(int argc, char **argv);
/* `berth compose push|pull` (cli.c); argv after "compose". */
int margo_compose_cli(int argc, char **argv);
/* Checks a parsed margo.yaml; sets *version to metadata.version (pointing into d). The error
 * (MANIFEST_INVALID) lists the findings, each naming the field and the value. */
int margo_check_description(json_t *d, const char **version);
/* Every finding of a parsed margo.yaml, a new JSON array of strings (empty when valid). */
json_t *margo_description_findings(json_t *d);
/* margo.yaml text to JSON; a syntax error names the line, its text and what was expected
 * (-BERR_BAD_REQUEST). */
int margo_yaml(const char *text, size_t len, json_t **out);

#endif
