/*
 * http_server: evhttp on the loop with routing ("/v1/tasks/{id}:cancel" patterns), a bearer
 * authentication hook, a body size cap (413 before the body is parsed), and JSON errors
 * `{"code": "...", "message": "..."}` with the right status. A handler may answer later
 * (after a Kafka delivery report): the request stays valid until it is answered.
 */
#ifndef AF_HTTP_SERVER_H
#define AF_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "loop.h"

typedef struct af_http_server_s af_http_server_t;
typedef struct af_http_req_s af_http_req_t;

typedef void(af_http_handler_t)(af_http_req_t *req, void *opaque);
/* Authenticate a bearer token (NULL when the header is missing or not "Bearer ...").
 * @returns true to let the request through (the hook may attach identity with
 * af_http_req_set_user); false answers 401 {"code":"unauthenticated"}. */
typedef bool(af_http_auth_cb_t)(af_http_req_t *req, const char *bearer, void *opaque);

typedef struct af_http_server_opts_s {
        const char *address; /* "127.0.0.1" */
        int port;            /* 0 = ephemeral (see af_http_server_port) */
        size_t max_body_bytes;
        size_t max_header_bytes;
        int64_t timeout_ms; /* idle/read timeout per connection */
} af_http_server_opts_t;

af_http_server_t *af_http_server_new(af_loop_t *loop, const af_http_server_opts_t *opts,
                                     char *errstr, size_t errstr_size);
void af_http_server_destroy(af_http_server_t *srv); /* NULL is fine */
/* The process is tearing down and its loop will not run again: from now on an answer is
 * written to its socket at once (as much as the socket takes), not on a later loop turn, so
 * that answers given during teardown reach their clients before the server is destroyed. */
void af_http_server_closing(af_http_server_t *srv); /* NULL is fine */
int af_http_server_port(const af_http_server_t *srv);
void af_http_server_set_auth(af_http_server_t *srv, af_http_auth_cb_t *cb, void *opaque);
/* Route method + pattern; {name} captures one path segment up to '/' or ':'.
 * Unmatched paths answer 404, a known path with another method 405. */
void af_http_server_route(af_http_server_t *srv, const char *method, const char *pattern,
                          bool auth_required, af_http_handler_t *handler, void *opaque);

/* ---- request accessors (valid until the request is answered) ------------------------------ */
const char *af_http_req_method(const af_http_req_t *req);
const char *af_http_req_path(const af_http_req_t *req);                    /* decoded, no query */
const char *af_http_req_param(const af_http_req_t *req, const char *name); /* {name} */
const char *af_http_req_query(const af_http_req_t *req, const char *name); /* ?name= */
const char *af_http_req_header(const af_http_req_t *req, const char *name);
const char *af_http_req_body(const af_http_req_t *req, size_t *lenp); /* NUL-terminated */
const char *af_http_req_peer(const af_http_req_t *req);
void af_http_req_set_user(af_http_req_t *req, void *user, void (*free_fn)(void *));
void *af_http_req_user(const af_http_req_t *req);
/* Called if the client goes away before the answer; the request must not be answered then. */
void af_http_req_on_close(af_http_req_t *req, void (*cb)(af_http_req_t *req, void *opaque),
                          void *opaque);

/* ---- answers (exactly one per request; frees the request) -------------------------------- */
void af_http_reply(af_http_req_t *req, int status, const char *content_type, const char *body,
                   size_t len);
/* Serializes body (reference stolen). */
void af_http_reply_json(af_http_req_t *req, int status, json_t *body);
/* {"code": code, "message": printf(fmt, ...)} */
void af_http_reply_error(af_http_req_t *req, int status, const char *code, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* Add a response header before replying. */
void af_http_req_add_header(af_http_req_t *req, const char *name, const char *value);

#endif
