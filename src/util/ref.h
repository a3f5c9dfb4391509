/*
 * ref: the distribution-spec grammar for repository names and tags. A name or tag that passes
 * these checks contains only [a-z0-9._-/] (names) or [A-Za-z0-9._-] (tags) with no empty, "." or
 * ".." component, so it is always safe to use as a key and never escapes a directory.
 */
#ifndef BERTH_REF_H
#define BERTH_REF_H

#include <stdbool.h>
#include <stddef.h>

#define REF_NAME_MAX 255
#define REF_TAG_MAX 128

/* name: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*, <= 255 chars */
bool ref_name_valid(const char *name);
/* tag: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127} */
bool ref_tag_valid(const char *tag);
/* A reference that looks like a digest (contains ':'). */
bool ref_is_digest(const char *ref);
/* An original name (host/repo, or a plain repo) as a store repository: a first component that
 * is a registry host (has '.' or ':' or is localhost) keeps its place, ':' written '-' (where the
 * mirror and bundle imports keep content). */
void ref_store_name(const char *name, char *out, size_t len);

#endif
