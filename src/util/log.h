/*
 * log: structured, line-oriented logging to stderr in logfmt (`time=... level=... msg=...`).
 * Each line is formatted into one buffer and written with a single write(2), so lines from
 * concurrent threads never interleave. Levels follow registry:2's log.level names.
 */
#ifndef BERTH_LOG_H
#define BERTH_LOG_H

#include <stddef.h>

typedef enum { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG } log_level;

void log_set_level(log_level lvl);
log_level log_get_level(void);
/* Parses "error", "warn"/"warning", "info", "debug"; returns -1 when unknown. */
int log_parse_level(const char *s);
/* Writes one line. Control characters anywhere in it (a newline in a logged name) are written
 * escaped (\n, \xNN), so no value can start a line of its own. */
void log_msg(log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A value to log inside double quotes (a request path, a user name: what a client chose): '"' and
 * '\\' escaped with a backslash, control characters as \n or \xNN; cut to fit cap. Returns out. */
const char *log_value(const char *in, char *out, size_t cap);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
