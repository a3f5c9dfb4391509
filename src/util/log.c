/*
 * log: see log.h. The message part is free-form logfmt chosen by the caller (`msg="..." k=v`).
 * The JSON form splits it back into keys (a bare value runs to the next space, a quoted one to
 * the next unescaped quote) and encodes them with jansson; text that does not read as logfmt
 * lands whole in "msg", so nothing is ever lost.
 */
#include "util/log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static log_level log_threshold = LOG_INFO;
static log_format log_fmt = LOG_TEXT;
static const char *const log_names[] = {"error", "warn", "info", "debug"};
static char **field_keys, **field_values;
static size_t nfields;
static char field_text[1024]; /* " k=v ..." for the text form */

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

int log_parse_format(const char *s)
{
    if (!strcasecmp(s, "text")) return LOG_TEXT;
    if (!strcasecmp(s, "json") || !strcasecmp(s, "logstash")) return LOG_JSON;
    return -1;
}

void log_set_format(log_format f)
{
    log_fmt = f;
}

void log_set_fields(const char *const *keys, const char *const *values, size_t n)
{
    for (size_t i = 0; i < nfields; i++) {
        free(field_keys[i]);
        free(field_values[i]);
    }
    free(field_keys);
    free(field_values);
    field_keys = field_values = NULL;
    nfields = 0;
    field_text[0] = '\0';
    if (!n) return;
    field_keys = calloc(n, sizeof *field_keys);
    field_values = calloc(n, sizeof *field_values);
    if (!field_keys || !field_values) abort();
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        field_keys[i] = strdup(keys[i]);
        field_values[i] = strdup(values[i]);
        bool quote = !*values[i] || strpbrk(values[i], " \"=\t") != NULL;
        int w = snprintf(field_text + used, sizeof field_text - used,
                         quote ? " %s=\"%s\"" : " %s=%s", keys[i], values[i]);
        if (w > 0 && (size_t)w < sizeof field_text - used) used += (size_t)w;
    }
    nfields = n;
}

/* One logfmt pair at *p: key into key[], value (unquoted, unescaped) into val[]. */
static bool logfmt_pair(const char **p, char *key, size_t klen, char *val, size_t vlen)
{
    const char *s = *p;
    while (*s == ' ')
        s++;
    size_t k = strcspn(s, "= \"");
    if (!k || s[k] != '=' || k >= klen) return false;
    memcpy(key, s, k);
    key[k] = '\0';
    s += k + 1;
    size_t n = 0;
    if (*s == '"') {
        for (s++; *s && *s != '"'; s++) {
            if (*s == '\\' && s[1]) s++;
            if (n + 1 < vlen) val[n++] = *s;
        }
        if (*s != '"') return false;
        s++;
    } else {
        for (; *s && *s != ' '; s++)
            if (n + 1 < vlen) val[n++] = *s;
    }
    val[n] = '\0';
    *p = s;
    return true;
}

/* A JSON string of s; bytes that are not UTF-8 become '?' (a log line is never dropped). */
static json_t *jstr(char *s)
{
    json_t *j = json_string(s);
    if (j) return j;
    for (char *c = s; *c; c++)
        if ((unsigned char)*c >= 0x80) *c = '?';
    return json_string(s);
}

/* The JSON line for one message, newline-terminated; NULL when out of memory. */
static char *json_line(const char *stamp, log_level lvl, const char *text, size_t *len)
{
    json_t *o = json_object();
    json_object_set_new(o, "time", json_string(stamp));
    json_object_set_new(o, "level", json_string(log_names[lvl]));
    char key[64], val[2048];
    const char *p = text;
    bool ok = true;
    json_t *kv = json_object();
    while (ok && *p) {
        if ((ok = logfmt_pair(&p, key, sizeof key, val, sizeof val)))
            json_object_set_new(kv, key, jstr(val));
        while (*p == ' ')
            p++;
    }
    if (!ok) { /* not logfmt: the whole text is the message */
        json_object_clear(kv);
        char copy[2048];
        snprintf(copy, sizeof copy, "%s", text);
        json_object_set_new(kv, "msg", jstr(copy));
    }
    json_object_update(o, kv);
    json_decref(kv);
    for (size_t i = 0; i < nfields; i++)
        if (!json_object_get(o, field_keys[i]))
            json_object_set_new(o, field_keys[i], json_string(field_values[i]));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(o);
    if (!s) return NULL;
    *len = strlen(s);
    char *nl = realloc(s, *len + 2);
    if (!nl) {
        free(s);
        return NULL;
    }
    nl[(*len)++] = '\n';
    nl[*len] = '\0';
    return nl;
}

void log_msg(log_level lvl, const char *fmt, ...)
{
    if (lvl > log_threshold) return;
    char line[2048], stamp[40], text[1800];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    size_t len;
    char *js = log_fmt == LOG_JSON ? json_line(stamp, lvl, text, &len) : NULL;
    if (js) { /* one write of the whole object: never cut into invalid JSON */
        ssize_t w = write(STDERR_FILENO, js, len);
        (void)w;
        free(js);
        return;
    }
    len = (size_t)snprintf(line, sizeof line, "time=%s level=%s %s%s", stamp, log_names[lvl], text,
                           field_text);
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
