/*
 * log: see log.h. The message part is free-form logfmt chosen by the caller (`msg="..." k=v`).
 */
#include "util/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static log_level log_threshold = LOG_INFO;
static const char *const log_names[] = {"error", "warn", "info", "debug"};

void log_set_level(log_level lvl)
{
    log_threshold = lvl;
}

log_level log_get_level(void)
{
    return log_threshold;
}

int log_parse_level(const char *s)
{
    if (!strcasecmp(s, "warning")) return LOG_WARN;
    if (!strcasecmp(s, "fatal") || !strcasecmp(s, "panic")) return LOG_ERROR;
    for (int i = 0; i <= LOG_DEBUG; i++)
        if (!strcasecmp(s, log_names[i])) return i;
    return -1;
}

/* Copies in to out (at most cap - 1 bytes, never cutting an escape), control characters escaped
 * and, when quotes, '"' and '\\' too; returns the length written. */
static size_t escape(const char *in, char *out, size_t cap, bool quotes)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (const unsigned char *c = (const unsigned char *)in; *c; c++) {
        char e[4];
        size_t n = 0;
        if (*c == '\n')
            e[n++] = '\\', e[n++] = 'n';
        else if (*c == '\r')
            e[n++] = '\\', e[n++] = 'r';
        else if (*c == '\t')
            e[n++] = '\\', e[n++] = 't';
        else if (*c < 0x20 || *c == 0x7f)
            e[n++] = '\\', e[n++] = 'x', e[n++] = hex[*c >> 4], e[n++] = hex[*c & 15];
        else if (quotes && (*c == '"' || *c == '\\'))
            e[n++] = '\\', e[n++] = (char)*c;
        else
            e[n++] = (char)*c;
        if (o + n + 1 > cap) break;
        memcpy(out + o, e, n);
        o += n;
    }
    return o;
}

void log_msg(log_level lvl, const char *fmt, ...)
{
    if (lvl > log_threshold) return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "time=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, log_names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len] = '\0';
    char safe[sizeof line * 2];
    len = escape(line, safe, sizeof safe - 1, false);
    safe[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, safe, len);
    (void)w;
}

const char *log_value(const char *in, char *out, size_t cap)
{
    if (cap) out[escape(in, out, cap, true)] = '\0';
    return out;
}
