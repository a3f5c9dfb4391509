/*
 * log: structured, line-oriented logging to stderr, in logfmt (`time=... level=... msg=...`, the
 * default, registry:2's "text") or one JSON object a line (log.formatter: json, as registry:2's
 * logrus JSON formatter: "time", "level", "msg" and the other keys). Callers always write the
 * message part as logfmt (`msg="..." k=v`); the JSON form is parsed out of it. Fields set with
 * log_set_fields (log.fields) are added to every line. Each line is formatted into one buffer
 * and written with a single write(2), so lines from concurrent threads never interleave. Levels
 * follow registry:2's log.level names.
 */
#ifndef BERTH_LOG_H
#define BERTH_LOG_H

#include <stddef.h>

typedef enum { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG } log_level;
typedef enum { LOG_TEXT = 0, LOG_JSON } log_format;

void log_set_level(log_level lvl);
log_level log_get_level(void);
/* Parses "error", "warn"/"warning", "info", "debug"; returns -1 when unknown. */
int log_parse_level(const char *s);
/* Parses "text" and "json" ("logstash", JSON lines too); returns -1 when unknown. */
int log_parse_format(const char *s);
void log_set_format(log_format f);
/* Fields added to every line (copied; replaces any set before; n = 0 clears). Not thread-safe:
 * set once at start, before threads log. */
void log_set_fields(const char *const *keys, const char *const *values, size_t n);
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
