/*
 * yamlj: YAML read into JSON and JSON written as YAML (see yamlj.c).
 */
#ifndef BERTH_YAMLJ_H
#define BERTH_YAMLJ_H

#include "util/strbuf.h"

#include <jansson.h>

/* Parses YAML text (Chart.yaml, margo.yaml, a compose file, a .prov's signed part) into a JSON
 * object; what names the document in messages. -BERR_BAD_REQUEST naming the line or the rule. */
int yamlj_parse(const char *text, size_t len, const char *what, json_t **out);
/* Renders a JSON value as block YAML at indent. */
void yamlj_value(strbuf *b, json_t *v, int indent);
void yamlj_scalar(strbuf *b, json_t *v);
/* A mapping key at indent, and its ':' (what follows is the caller's). */
void yamlj_key(strbuf *b, const char *k, int indent);
/* A mapping as a list item at indent ("- key: ...", keys sorted). */
void yamlj_list_item(strbuf *b, json_t *o, int indent);

#endif
