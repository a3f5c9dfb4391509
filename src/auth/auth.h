/*
 * auth: who is asking, and may they. Basic sign-in against a registry:2 htpasswd file (bcrypt
 * entries, re-read when the file changes), then berth's per-repository policies (`access:`).
 * Every API (OCI, Helm, mirror fills) asks the same question: may this identity do this action
 * (pull, push, delete) on this repository.
 */
#ifndef BERTH_AUTH_H
#define BERTH_AUTH_H

#include "http/http.h"

/* Signs the request in (from its Authorization header) and checks what its route needs: an OCI
 * route its repository and the method's action; other routes only that the caller is known or
 * anonymous access is on (their handlers ask auth_allowed per item). 0, or -BERR_UNAUTHORIZED
 * (the response then carries the challenge) / -BERR_DENIED. No-op when auth is off. */
int auth_request(http_req *r);
/* May the request's identity do action (CONFIG_PULL...) on repo? (true when auth is off) */
bool auth_allowed(const http_req *r, const char *repo, unsigned action);
/* The same, as an error for a handler to return: -BERR_UNAUTHORIZED or -BERR_DENIED. */
int auth_require(http_req *r, const char *repo, unsigned action);
/* The challenge for a 401 (WWW-Authenticate value): Basic, or Bearer with the scope the request
 * needs. */
void auth_challenge(const http_req *r, char *out, size_t len);
/* Whether auth_request will check a password with bcrypt (a Basic sign-in not remembered from
 * before): the server then runs it on a worker thread, off the event loop. */
bool auth_slow(http_req *r);
/* Whether the caller may push to at least one repository (checked before a body whose target
 * repository is only known from its content, a Helm chart upload, is read at all). */
bool auth_may_push_somewhere(const http_req *r);
/* Releases what auth_request attached to the request. */
void auth_request_done(http_req *r);
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
