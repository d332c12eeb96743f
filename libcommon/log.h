/*
 * log: structured logs, one JSON object per line on stderr:
 *   {"ts":"2026-11-25T10:00:00.123Z","level":"info","component":"worker","msg":"...",
 *    "task_id":"...","trace_id":"..."}
 *
 * The level is checked before anything is formatted (af_log* are macros). Values registered
 * with af_log_redact_add() (every secret setting, every resolved API key) are replaced by
 * "[redacted]" in every line, wherever they appear, so a secret cannot leak through a
 * message that happens to quote it.
 */
#ifndef AF_LOG_H
#define AF_LOG_H

#include <stdbool.h>
#include <stdio.h>

typedef enum {
        AF_LOG_DEBUG = 0,
        AF_LOG_INFO,
        AF_LOG_WARN,
        AF_LOG_ERROR,
        AF_LOG_OFF,
} af_log_level_t;

extern af_log_level_t af_log_level_cur;

/* Set the component name (copied) and minimum level. Call once at start; not thread-safe. */
void af_log_init(const char *component, af_log_level_t level);
/* Parse "debug|info|warn|error|off"; @returns -1 if unknown. */
int af_log_level_parse(const char *s);
/* Send lines to f instead of stderr (tests). */
void af_log_set_output(FILE *f);
/* Never print this value (copied; values shorter than 4 bytes are ignored). */
void af_log_redact_add(const char *secret);
void af_log_redact_clear(void);
/* Replace every registered secret in s (in place, may shorten it). */
void af_log_redact(char *s);

void af_log_write(af_log_level_t level, const char *task_id, const char *trace_id, const char *fmt,
                  ...) __attribute__((format(printf, 4, 5)));

#define af_log_enabled(level) ((level) >= af_log_level_cur)
#define af_log(level, ...)                                                                         \
        do {                                                                                       \
                if (af_log_enabled(level))                                                         \
                        af_log_write(level, NULL, NULL, __VA_ARGS__);                              \
        } while (0)
#define af_log_task(level, task_id, trace_id, ...)                                                 \
        do {                                                                                       \
                if (af_log_enabled(level))                                                         \
                        af_log_write(level, task_id, trace_id, __VA_ARGS__);                       \
        } while (0)
#define af_debug(...) af_log(AF_LOG_DEBUG, __VA_ARGS__)
#define af_info(...)  af_log(AF_LOG_INFO, __VA_ARGS__)
#define af_warn(...)  af_log(AF_LOG_WARN, __VA_ARGS__)
#define af_error(...) af_log(AF_LOG_ERROR, __VA_ARGS__)

#endif
