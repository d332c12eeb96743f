/*
 * err: error strings, codes and the default retriable classification. Messages are made
 * well-formed UTF-8 as they are written (af_utf8_repair): they quote outside input, cut to a
 * byte length, and travel in protobuf strings, JSON and audit events.
 */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "utf8.h"

static const struct {
        const char *code;
        const char *desc;
        bool retriable;
} af_err_table[AF_ERR__CNT] = {
        [AF_OK] = {"ok", "success", false},
        [AF_ERR_INVALID] = {"invalid", "invalid input", false},
        [AF_ERR_CONFIG] = {"config", "invalid configuration", false},
        [AF_ERR_NOT_FOUND] = {"not_found", "not found", false},
        [AF_ERR_EXISTS] = {"exists", "already exists", false},
        [AF_ERR_TOO_LARGE] = {"too_large", "too large", false},
        [AF_ERR_UNAUTHENTICATED] = {"unauthenticated", "missing or invalid credential", false},
        [AF_ERR_FORBIDDEN] = {"forbidden", "not allowed", false},
        [AF_ERR_TIMEOUT] = {"timeout", "timed out", true},
        [AF_ERR_TRANSPORT] = {"transport", "connection failed", true},
        [AF_ERR_UNAVAILABLE] = {"unavailable", "dependency unavailable", true},
        [AF_ERR_RATE_LIMITED] = {"rate_limited", "rate limited", true},
        [AF_ERR_UPSTREAM] = {"upstream", "upstream error", false},
        [AF_ERR_NOMEM] = {"nomem", "out of memory", true},
        [AF_ERR_STATE] = {"state", "invalid state", false},
        [AF_ERR_CANCELLED] = {"cancelled", "cancelled", false},
        [AF_ERR_INTERNAL] = {"internal", "internal error", false},
        [AF_ERR_IN_DOUBT] = {"in_doubt", "no answer in time: it may have happened", true},
};

const char *af_err2str(af_err_t err) {
        if ((unsigned) err >= AF_ERR__CNT)
                return "unknown error";
        return af_err_table[err].desc;
}

const char *af_err2code(af_err_t err) {
        if ((unsigned) err >= AF_ERR__CNT)
                return "unknown";
        return af_err_table[err].code;
}

bool af_err_is_retriable_default(af_err_t err) {
        return (unsigned) err < AF_ERR__CNT && af_err_table[err].retriable;
}

static void error_vset(af_error_t *e, af_err_t err, bool retriable, const char *fmt, va_list ap) {
        e->err = err;
        e->retriable = retriable;
        e->http_status = 0;
        vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
        af_utf8_repair(e->msg);
}

void af_error_set(af_error_t *e, af_err_t err, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        error_vset(e, err, af_err_is_retriable_default(err), fmt, ap);
        va_end(ap);
}

void af_error_set_retriable(af_error_t *e, af_err_t err, bool retriable, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        error_vset(e, err, retriable, fmt, ap);
        va_end(ap);
}

void af_error_wrap(af_error_t *e, const af_error_t *cause, const char *fmt, ...) {
        char prefix[sizeof(e->msg)];
        af_error_t c = *cause;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof(prefix), fmt, ap);
        va_end(ap);
        af_error_set_retriable(e, c.err, c.retriable, "%s: %s", prefix, c.msg);
        e->http_status = c.http_status;
}

void af_error_clear(af_error_t *e) {
        memset(e, 0, sizeof(*e));
}

af_err_t af_errstr(af_err_t err, char *errstr, size_t errstr_size, const char *fmt, ...) {
        if (errstr && errstr_size) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(errstr, errstr_size, fmt, ap);
                va_end(ap);
                af_utf8_repair(errstr);
        }
        return err;
}
