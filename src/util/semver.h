/*
 * semver: SemVer 2.0.0 validity and precedence (see semver.c).
 */
#ifndef BERTH_SEMVER_H
#define BERTH_SEMVER_H

#include <stdbool.h>

#define SEMVER_MAX 128 /* longest version accepted */

/* Strict SemVer 2.0.0 (no leading "v"), at most SEMVER_MAX characters. */
bool semver_valid(const char *v);
/* SemVer precedence (build metadata ignored, then compared as text for a stable order). */
int semver_cmp(const char *a, const char *b);

#endif
