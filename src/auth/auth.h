/*
 * auth: who is asking, and may they. Basic sign-in against a registry:2 htpasswd file (bcrypt
 * entries, re-read when the file changes), then berth's per-repository policies (`access:`).
 * Every API (OCI, Helm, mirror fills) asks the same question: may this identity do this action
 * (pull, push, delete) on this repository.
 */
#ifndef BERTH_AUTH_H
#define BERTH_AUTH_H

#include "http/http.h"

/* The hooks the server calls (http.h): identify (once per request, from the Authorization
 * header; a password check is left to identify_slow, on a worker), check (a route's access),
 * challenge, done. With auth off every request passes. */
extern const http_auth_hooks auth_hooks;
/* Whether the caller signed in, and its name (NULL when anonymous). */
bool auth_signed_in(const http_req *r);
const char *auth_user(const http_req *r);
/* May the request's identity do action (CONFIG_PULL...) on repo? (true when auth is off) */
bool auth_allowed(const http_req *r, const char *repo, unsigned action);
/* The same, as an error for a handler to return: -BERR_UNAUTHORIZED or -BERR_DENIED. */
int auth_require(http_req *r, const char *repo, unsigned action);
/* Whether the caller may push to at least one repository (checked before a body whose target
 * repository is only known from its content, a Helm chart upload, is read at all). */
bool auth_may_push_somewhere(const http_req *r);
void auth_free_cache(void);

/* token.c: verifies a JWT (signature against rootcertbundle, iss, aud, exp, nbf); fills sub and
 * *access (the access claim, a json_t array to json_decref). */
#include <jansson.h>
int auth_token_verify(const config *cfg, const char *jwt, char *sub, size_t sublen,
                      json_t **access);
/* What an access claim grants on repo. */
unsigned auth_token_actions(json_t *access, const char *repo);
void auth_token_free(void);

#endif
