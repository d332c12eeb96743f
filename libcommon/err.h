/*
 * err: the one error vocabulary of agentfleet.
 *
 * Every fallible function returns an af_err_t and, where a human needs to know more, fills a
 * caller-supplied `char *errstr, size_t errstr_size` (librdkafka style). An error that has to
 * travel (into a TaskResult, across callbacks) is an af_error_t, which also says whether
 * retrying may help; retry decisions are made from that flag and nowhere else.
 */
#ifndef AF_ERR_H
#define AF_ERR_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
        AF_OK = 0,
        AF_ERR_INVALID,         /* malformed input: bad JSON, bad proto, bad field */
        AF_ERR_CONFIG,          /* bad configuration */
        AF_ERR_NOT_FOUND,       /* unknown id, type, route */
        AF_ERR_EXISTS,          /* already there (idempotency hit, lease held) */
        AF_ERR_TOO_LARGE,       /* over a size cap */
        AF_ERR_UNAUTHENTICATED, /* missing or forged credential */
        AF_ERR_FORBIDDEN,       /* authenticated but not allowed */
        AF_ERR_TIMEOUT,         /* a deadline passed */
        AF_ERR_TRANSPORT,       /* connection refused/reset, DNS, TLS */
        AF_ERR_UNAVAILABLE,     /* dependency down (Redis, Kafka), try later */
        AF_ERR_RATE_LIMITED,    /* 429 or our own limiter */
        AF_ERR_UPSTREAM,        /* remote answered with an error status */
        AF_ERR_NOMEM,
        AF_ERR_STATE, /* wrong state: lease lost, shutting down, cancelled */
        AF_ERR_CANCELLED,
        AF_ERR_INTERNAL,
        AF_ERR_IN_DOUBT, /* it may or may not have happened (a write whose answer never came) */
        AF_ERR__CNT
} af_err_t;

/* @returns a static, human description of err ("timed out"). */
const char *af_err2str(af_err_t err);
/* @returns a static, stable snake_case code for wire and metrics ("timeout"). */
const char *af_err2code(af_err_t err);
/* @returns whether this kind of error is retriable by default (timeouts, transport, 5xx...). */
bool af_err_is_retriable_default(af_err_t err);

/* An error that travels: code, whether to retry, and a message (owned, inline). */
typedef struct af_error_s {
        af_err_t err;
        bool retriable;
        int http_status; /* upstream HTTP status when there was one, else 0 */
        char msg[256];
} af_error_t;

/* Fill e; msg is printf-style. Retriable follows af_err_is_retriable_default(). */
void af_error_set(af_error_t *e, af_err_t err, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/* Same with an explicit retriable flag. */
void af_error_set_retriable(af_error_t *e, af_err_t err, bool retriable, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
void af_error_clear(af_error_t *e);
/* e = cause (code, retriable flag, HTTP status) with its message prefixed: "<fmt...>: <cause's
 * message>", e.g. to name what was called when the cause is a library's own words. e and cause
 * may be the same. */
void af_error_wrap(af_error_t *e, const af_error_t *cause, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static inline bool af_error_is_retriable(const af_error_t *e) {
        return e->err != AF_OK && e->retriable;
}

/* snprintf into errstr if it is not NULL; @returns err so callers can `return af_errstr(...)`. */
af_err_t af_errstr(af_err_t err, char *errstr, size_t errstr_size, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

#endif
