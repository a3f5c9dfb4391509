/*
 * log: see log.h. The message part is free-form logfmt chosen by the caller (`msg="..." k=v`).
 */
#include "util/log.h"

#include <stdarg.h>
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
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
