/*
 * http_client: curl multi on the loop (TRAPS.md: one timer replaced on every TIMERFUNCTION
 * call, zero timeouts deferred to a zero-delay event, no socket_action from inside the socket
 * callback, info_read drained after every action). Many requests in flight on one thread,
 * each with its own timeout and response size cap; connections are reused.
 */
#ifndef AF_HTTP_CLIENT_H
#define AF_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "loop.h"

typedef struct af_http_client_s af_http_client_t;

typedef struct af_http_request_s {
        const char *method; /* "GET", "POST", ... */
        const char *url;
        const char *const *headers; /* "Name: value" strings, NULL-terminated, or NULL */
        const char *body;           /* may be NULL */
        size_t body_len;
        int64_t timeout_ms;        /* whole request; 0 = client default */
        size_t max_response_bytes; /* 0 = client default */
} af_http_request_t;

typedef struct af_http_response_s {
        int status;       /* HTTP status */
        const char *body; /* NUL-terminated */
        size_t body_len;
        const char *content_type; /* or NULL */
        int64_t retry_after_ms;   /* parsed Retry-After (seconds or date), -1 if absent */
        int64_t elapsed_ms;
        void *handle; /* for af_http_response_header() */
} af_http_response_t;

/* The value of response header name (any case; the first one when repeated), or NULL. Valid
 * inside the done callback only, like the response itself. */
const char *af_http_response_header(const af_http_response_t *resp, const char *name);

/* Called exactly once per accepted request, from the loop, never from inside send.
 * Any HTTP response is err->err == AF_OK (the caller judges the status). Otherwise resp is
 * NULL and err says: AF_ERR_TIMEOUT, AF_ERR_TRANSPORT (retriable), AF_ERR_TOO_LARGE (response
 * over the cap), AF_ERR_CANCELLED. */
typedef void(af_http_done_cb_t)(const af_http_response_t *resp, const af_error_t *err,
                                void *opaque);

typedef struct af_http_client_opts_s {
        int64_t default_timeout_ms;
        size_t default_max_response_bytes;
        long max_host_connections; /* 0 = unlimited */
} af_http_client_opts_t;

af_http_client_t *af_http_client_new(af_loop_t *loop, const af_http_client_opts_t *opts,
                                     char *errstr, size_t errstr_size);
/* In-flight requests complete with AF_ERR_CANCELLED. NULL is fine. */
void af_http_client_destroy(af_http_client_t *hc);
/* Start a request (everything in req is copied). @returns AF_OK and sets *idp (may be NULL)
 * for af_http_client_cancel, or an error (cb not called). */
af_err_t af_http_client_send(af_http_client_t *hc, const af_http_request_t *req,
                             af_http_done_cb_t *cb, void *opaque, uint64_t *idp);
/* Abort a request in flight; its callback is called with AF_ERR_CANCELLED. */
void af_http_client_cancel(af_http_client_t *hc, uint64_t id);
int af_http_client_in_flight(const af_http_client_t *hc);

#endif
