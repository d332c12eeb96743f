/*
 * log: JSON-lines logger with secret redaction.
 */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "utf8.h"

af_log_level_t af_log_level_cur = AF_LOG_INFO;

static char log_component[64] = "agentfleet";
static FILE *log_out;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char **log_secrets;
static size_t log_secret_cnt;

static const char *level_names[] = {"debug", "info", "warn", "error", "off"};

void af_log_init(const char *component, af_log_level_t level) {
        snprintf(log_component, sizeof(log_component), "%s", component);
        af_log_level_cur = level;
}

int af_log_level_parse(const char *s) {
        for (int i = 0; i <= AF_LOG_OFF; i++)
                if (!strcmp(s, level_names[i]))
                        return i;
        return -1;
}

void af_log_set_output(FILE *f) {
        log_out = f;
}

void af_log_redact_add(const char *secret) {
        if (!secret || strlen(secret) < 4)
                return;
        pthread_mutex_lock(&log_lock);
        for (size_t i = 0; i < log_secret_cnt; i++)
                if (!strcmp(log_secrets[i], secret))
                        goto out;
        char **n = realloc(log_secrets, (log_secret_cnt + 1) * sizeof(*n));
        if (n) {
                log_secrets = n;
                if ((log_secrets[log_secret_cnt] = strdup(secret)))
                        log_secret_cnt++;
        }
out:
        pthread_mutex_unlock(&log_lock);
}

void af_log_redact_clear(void) {
        pthread_mutex_lock(&log_lock);
        for (size_t i = 0; i < log_secret_cnt; i++)
                free(log_secrets[i]);
        free(log_secrets);
        log_secrets = NULL;
        log_secret_cnt = 0;
        pthread_mutex_unlock(&log_lock);
}

/* Caller holds log_lock. */
static void redact_locked(char *s) {
        static const char mark[] = "[redacted]";
        for (size_t i = 0; i < log_secret_cnt; i++) {
                const char *sec = log_secrets[i];
                size_t sl = strlen(sec);
                char *p;
                while ((p = strstr(s, sec))) {
                        /* The mark is never longer than a secret (>= 4) when sl >= 10; for
                         * shorter secrets write a short mark that fits in place. */
                        const char *m = sl >= sizeof(mark) - 1 ? mark : "***";
                        size_t ml = strlen(m);
                        memcpy(p, m, ml);
                        memmove(p + ml, p + sl, strlen(p + sl) + 1);
                }
        }
}

void af_log_redact(char *s) {
        pthread_mutex_lock(&log_lock);
        redact_locked(s);
        pthread_mutex_unlock(&log_lock);
}

/* Append s as a JSON string body (without quotes). */
static void json_escape(af_buf_t *b, const char *s) {
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                switch (c) {
                case '"':
                        af_buf_puts(b, "\\\"");
                        break;
                case '\\':
                        af_buf_puts(b, "\\\\");
                        break;
                case '\n':
                        af_buf_puts(b, "\\n");
                        break;
                case '\r':
                        af_buf_puts(b, "\\r");
                        break;
                case '\t':
                        af_buf_puts(b, "\\t");
                        break;
                default:
                        if (c < 0x20)
                                af_buf_printf(b, "\\u%04x", c);
                        else
                                af_buf_append(b, s, 1);
                }
        }
}

void af_log_write(af_log_level_t level, const char *task_id, const char *trace_id, const char *fmt,
                  ...) {
        char msg[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);

        af_buf_t b;
        af_buf_init(&b, 16384);
        pthread_mutex_lock(&log_lock);
        /* Secrets are found in the message as written (before escaping or repair changes
         * their bytes); then the line is made UTF-8, because it is JSON and may quote input
         * that is not text. */
        redact_locked(msg);
        af_utf8_repair(msg);
        af_buf_printf(&b,
                      "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\","
                      "\"component\":\"",
                      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                      tm.tm_sec, ts.tv_nsec / 1000000, level_names[level]);
        json_escape(&b, log_component);
        af_buf_puts(&b, "\",\"msg\":\"");
        json_escape(&b, msg);
        af_buf_puts(&b, "\"");
        if (task_id && *task_id) {
                af_buf_puts(&b, ",\"task_id\":\"");
                json_escape(&b, task_id);
                af_buf_puts(&b, "\"");
        }
        if (trace_id && *trace_id) {
                af_buf_puts(&b, ",\"trace_id\":\"");
                json_escape(&b, trace_id);
                af_buf_puts(&b, "\"");
        }
        af_buf_puts(&b, "}\n");

        if (b.data) {
                fputs(b.data, log_out ? log_out : stderr);
                fflush(log_out ? log_out : stderr);
        }
        pthread_mutex_unlock(&log_lock);
        af_buf_free(&b);
}
