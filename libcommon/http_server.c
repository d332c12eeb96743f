/*
 * http_server: the coordinator's API (and the simagent's and workers' metrics endpoints) on
 * libevent's evhttp, on the process's loop.
 *
 * One generic evhttp callback does everything evhttp does not: routing by method + pattern
 * (http_route.c), percent-decoding, query parsing, bearer authentication, and JSON errors
 * {"code","message"} for 400/401/404/405/413. A handler answers at once or keeps the request
 * and answers later (after a Kafka delivery report); if the client goes away first, the
 * request's on_close hook runs and the request is freed, or, without a hook, it is kept until
 * the handler answers, and that answer is dropped.
 *
 * Body cap: evhttp answers an oversize body itself with an HTML page. To give every client a
 * JSON 413, evhttp's own limit is set above max_body_bytes (server_hard_body(): the larger
 * of 4 x the cap and the cap + 1 MiB) and the callback enforces max_body_bytes; only a body
 * past evhttp's hard limit still gets evhttp's own (non-JSON) 413 and the connection closed,
 * which bounds memory per connection.
 *
 * Client gone: libevent 2.1 stops reading a connection while its request waits for an answer,
 * so evhttp alone never notices a client that hangs up; an EV_CLOSED watch on the socket
 * (epoll reports it) does, while the answer is deferred.
 *
 * Out of descriptors: libevent's listener retries a failing accept() on every loop turn (its
 * socket stays readable while clients wait in the backlog) and, without an error callback,
 * warns each time: one core spinning and a flooded log, exactly when the process is already
 * in trouble. server_accept_error() stops watching the socket for AF_HTTP_ACCEPT_PAUSE_MS
 * instead, warns at most once per AF_HTTP_ACCEPT_WARN_MS, and the waiting clients are served
 * once descriptors are free again.
 *
 * Everything here runs on the loop thread; evhttp allocates per request, we add one small
 * af_http_req_t and serve the body from evhttp's own input buffer (no copy).
 *
 * Per-request cost (the simagent answers the workers' every integration call here, on the
 * machine it measures): an answer is written straight into evhttp's output buffer; Date and
 * Content-Length are added here from a per-server date cache and a digit loop, so that evhttp
 * does not format them with printf on every reply (req_add_framing()); the peer address is
 * formatted only when asked for.
 */
#include "http_server.h"

#include <arpa/inet.h>
#include <sys/queue.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h> /* the request's HTTP version: no accessor in libevent 2.1 */
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "buf.h"
#include "clock.h"
#include "http_route.h"
#include "jsonfmt.h"
#include "log.h"
#include "utf8.h"

#define AF_HTTP_SERVER_DEFAULT_MAX_BODY    (1024 * 1024)
#define AF_HTTP_SERVER_DEFAULT_MAX_HEADERS (64 * 1024)
#define AF_HTTP_SERVER_DEFAULT_TIMEOUT_MS  30000
#define AF_HTTP_ACCEPT_PAUSE_MS            250
#define AF_HTTP_ACCEPT_WARN_MS             10000

/* evhttp's hard body limit for a JSON cap c: max(4c, c + 1 MiB), saturating. */
static size_t server_hard_body(size_t cap) {
        size_t a = cap > SIZE_MAX / 4 ? SIZE_MAX : cap * 4;
        size_t b = cap > SIZE_MAX - (1u << 20) ? SIZE_MAX : cap + (1u << 20);
        return a > b ? a : b;
}

typedef struct af_http_route_entry_s {
        char *method;
        char *pattern;
        bool auth_required;
        af_http_handler_t *handler;
        void *opaque;
} af_http_route_entry_t;

struct af_http_server_s {
        af_loop_t *loop;
        struct evhttp *http;
        struct evhttp_bound_socket *sock;
        af_http_server_opts_t opts;
        af_http_req_t *dispatching; /* the request inside its handler, until answered */
        af_http_route_entry_t *routes;
        size_t route_cnt;
        af_http_auth_cb_t *auth_cb;
        void *auth_opaque;
        bool closing;    /* af_http_server_closing(): answers are written at once */
        char date[64];   /* Date header value (RFC 1123, as evhttp writes it) for date_sec */
        time_t date_sec; /* unix s that date shows; 0 before the first answer */
        af_timer_t *accept_resume; /* watches the socket again after a failed accept() */
        uint64_t accept_failures;  /* since the last warning */
        int64_t accept_warned_ms;  /* monotonic; 0: never */
        af_http_server_t *next;    /* in servers */
};

/* libevent calls a listener's error callback with the listener's user data, which is
 * evhttp's (its struct evhttp): servers are found by it here. All on the loop thread. */
static af_http_server_t *servers;

struct af_http_req_s {
        af_http_server_t *srv;
        struct evhttp_request *evreq; /* NULL once the client went away */
        char *path;                   /* decoded */
        struct evkeyvalq query;
        af_http_params_t params;
        const char *body; /* points into evhttp's input buffer */
        size_t body_len;
        char peer[64];   /* "addr:port", formatted on the first af_http_req_peer(); "" before */
        bool has_date;   /* the handler added a Date header itself */
        bool has_length; /* ... a Content-Length or Transfer-Encoding header */
        void *user;
        void (*user_free)(void *);
        void (*on_close)(af_http_req_t *req, void *opaque);
        void *on_close_opaque;
        bool closed;            /* client gone: the answer is dropped */
        struct event *close_ev; /* EV_CLOSED watch while an answer is deferred */
};

/* ---- request life-cycle ------------------------------------------------------------------- */

static void req_free(af_http_req_t *req) {
        if (!req)
                return;
        if (req->close_ev)
                event_free(req->close_ev);
        if (!req->closed && req->srv->dispatching == req)
                req->srv->dispatching = NULL;
        if (req->user_free)
                req->user_free(req->user);
        af_http_params_clear(&req->params);
        evhttp_clear_headers(&req->query);
        free(req->path);
        free(req);
}

/* Format the peer of evcon into req->peer, unless done already. */
static void req_fill_peer(af_http_req_t *req, struct evhttp_connection *evcon) {
        char *addr = NULL;
        ev_uint16_t port = 0;
        if (req->peer[0] || !evcon)
                return;
        evhttp_connection_get_peer(evcon, &addr, &port);
        snprintf(req->peer, sizeof(req->peer), "%s:%u", addr ? addr : "?", (unsigned) port);
}

/* evhttp connection close callback, set while a request waits for its answer. */
static void req_conn_close_cb(struct evhttp_connection *evcon, void *arg) {
        af_http_req_t *req = arg;
        struct evhttp_request *evreq = req->evreq;

        /* Last chance: af_http_req_peer() still answers once the connection is gone. */
        req_fill_peer(req, evcon);
        req->evreq = NULL;
        req->closed = true;
        if (req->close_ev) {
                event_free(req->close_ev);
                req->close_ev = NULL;
        }
        /* When the peer closed (EOF, timeout) evhttp has already detached the unanswered
         * request from the connection and leaves it to us; when the server itself is being
         * freed, the request is still attached and evhttp frees it right after this. */
        if (evreq && !evhttp_request_get_connection(evreq))
                evhttp_request_free(evreq);
        if (req->on_close) {
                req->on_close(req, req->on_close_opaque);
                req_free(req);
        }
        /* else: kept until the handler answers (the answer is then dropped). */
}

/* The peer hung up while its answer is deferred. libevent 2.1 stops reading a connection
 * while a request waits for its answer (and reading then would abort on pipelined bytes), so
 * evhttp alone never notices; this EV_CLOSED watch does, and frees the connection, which runs
 * req_conn_close_cb. */
static void req_close_event_cb(evutil_socket_t fd, short what, void *arg) {
        af_http_req_t *req = arg;
        struct evhttp_connection *evcon =
                req->evreq ? evhttp_request_get_connection(req->evreq) : NULL;
        if (evcon)
                evhttp_connection_free(evcon);
}

/* Watch for the peer going away while req waits (only where the backend reports early
 * close, as epoll does; elsewhere a vanished client is noticed when the answer is sent). */
static void req_watch_close(af_http_req_t *req) {
        struct event_base *base = af_loop_base(req->srv->loop);
        struct evhttp_connection *evcon = evhttp_request_get_connection(req->evreq);
        struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
        if (!bev || !(event_base_get_features(base) & EV_FEATURE_EARLY_CLOSE))
                return;
        req->close_ev = event_new(base, bufferevent_getfd(bev), EV_CLOSED, req_close_event_cb, req);
        if (req->close_ev)
                event_add(req->close_ev, NULL);
}

/* Add the Date and Content-Length headers that evhttp would add to this answer, so that it
 * finds them and skips its own. evhttp (libevent 2.1.12, evhttp_make_header_response) adds
 * Date to every HTTP/1.x answer with x >= 1, then Content-Length (the output buffer's length)
 * when the status carries a body (not 1xx, 204 or 304) and the request is not HEAD or
 * CONNECT, each unless the answer has one already (for the length: a Content-Length or a
 * Transfer-Encoding); it formats both with gmtime and printf on every reply, 7 % of the
 * instructions of a simagent /noop request. Here the date comes from a per-server cache
 * refreshed at most once a second, formatted by evhttp's own evutil_date_rfc1123, and the
 * length from a digit loop; both are appended to the same header list in the same order, so
 * the bytes on the wire are the same. HTTP/1.0 answers are left to evhttp: no Date, and a
 * keep-alive one gets "Connection: keep-alive" before its Content-Length. The body must be
 * in the output buffer already. */
static void req_add_framing(af_http_req_t *req, int status) {
        struct evhttp_request *evreq = req->evreq;
        struct evkeyvalq *headers = evhttp_request_get_output_headers(evreq);
        enum evhttp_cmd_type cmd = evhttp_request_get_command(evreq);
        af_http_server_t *srv = req->srv;
        char len[AF_I64_STR_SIZE];

        if (evreq->major != 1 || evreq->minor < 1)
                return;
        if (!req->has_date) {
                time_t now = time(NULL);
                struct tm tm;
                if (now != srv->date_sec && gmtime_r(&now, &tm)) {
                        evutil_date_rfc1123(srv->date, sizeof(srv->date), &tm);
                        srv->date_sec = now;
                }
                if (srv->date_sec) /* else evhttp adds its own */
                        evhttp_add_header(headers, "Date", srv->date);
        }
        if (!req->has_length && status != 204 && status != 304 && (status < 100 || status >= 200) &&
            cmd != EVHTTP_REQ_HEAD && cmd != EVHTTP_REQ_CONNECT) {
                af_i64_to_str(len, (int64_t) evbuffer_get_length(
                                           evhttp_request_get_output_buffer(evreq)));
                evhttp_add_header(headers, "Content-Length", len);
        }
}

/* Send the answer, whose body is in evhttp's output buffer already, and free req. */
static void req_send(af_http_req_t *req, int status) {
        struct evhttp_request *evreq = req->evreq;
        if (req->closed || !evreq)
                goto out;
        struct evhttp_connection *evcon = evhttp_request_get_connection(evreq);
        if (evcon)
                evhttp_connection_set_closecb(evcon, NULL, NULL);
        req_add_framing(req, status);
        evhttp_send_reply(evreq, status, NULL /*standard phrase*/, NULL /*body sent as is*/);
        if (req->srv->closing && evcon) {
                /* No loop turn will come to write it: hand the socket what it takes now. */
                struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
                if (bev)
                        evbuffer_write(bufferevent_get_output(bev), bufferevent_getfd(bev));
        }
out:
        req_free(req);
}

void af_http_server_closing(af_http_server_t *srv) {
        if (srv)
                srv->closing = true;
}

/* ---- routing ------------------------------------------------------------------------------- */

/* @returns the bearer token of an "Authorization: Bearer <token>" header, or NULL. */
static const char *req_bearer(const af_http_req_t *req) {
        const char *h = af_http_req_header(req, "Authorization");
        if (!h || strncasecmp(h, "Bearer ", 7))
                return NULL;
        h += 7;
        while (*h == ' ')
                h++;
        return *h ? h : NULL;
}

static void server_gen_cb(struct evhttp_request *evreq, void *arg) {
        af_http_server_t *srv = arg;
        af_http_req_t *req = NULL;
        const af_http_route_entry_t *route = NULL;
        bool path_known = false;
        const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(evreq);
        const char *raw_path = uri ? evhttp_uri_get_path(uri) : NULL;
        const char *raw_query = uri ? evhttp_uri_get_query(uri) : NULL;
        struct evhttp_connection *evcon = evhttp_request_get_connection(evreq);
        char allow[128] = "";

        req = calloc(1, sizeof(*req));
        if (!req) {
                evhttp_send_error(evreq, 503, "out of memory");
                return;
        }
        req->srv = srv;
        req->evreq = evreq;
        TAILQ_INIT(&req->query);
        /* From here until the answer, a vanished client must reach us. */
        if (evcon)
                evhttp_connection_set_closecb(evcon, req_conn_close_cb, req);

        if (!raw_path || !*raw_path)
                raw_path = "/";
        req->path = af_http_route_decode(raw_path, strlen(raw_path));
        if (!req->path) {
                af_http_reply_error(req, 400, "invalid_path", "the path does not decode");
                goto out;
        }
        if (raw_query && evhttp_parse_query_str(raw_query, &req->query) < 0) {
                af_http_reply_error(req, 400, "invalid_query", "the query string is malformed");
                goto out;
        }

        const char *method = af_http_req_method(req);
        for (size_t i = 0; i < srv->route_cnt && !route; i++) {
                const af_http_route_entry_t *r = &srv->routes[i];
                switch (af_http_route_match(r->pattern, raw_path, &req->params)) {
                case AF_HTTP_ROUTE_NOMATCH:
                        continue;
                case AF_HTTP_ROUTE_BADPATH:
                        af_http_reply_error(req, 400, "invalid_path",
                                            "a path parameter does not decode");
                        goto out;
                case AF_HTTP_ROUTE_MATCH:
                        break;
                }
                path_known = true;
                if (!strcmp(r->method, method)) {
                        route = r;
                        break;
                }
                size_t used = strlen(allow);
                if (!strstr(allow, r->method))
                        snprintf(allow + used, sizeof(allow) - used, "%s%s", used ? ", " : "",
                                 r->method);
                af_http_params_clear(&req->params);
        }
        if (!route) {
                if (path_known) {
                        af_http_req_add_header(req, "Allow", allow);
                        af_http_reply_error(req, 405, "method_not_allowed",
                                            "%s is not allowed on this path", method);
                } else {
                        af_http_reply_error(req, 404, "not_found", "no route for this path");
                }
                goto out;
        }

        struct evbuffer *in = evhttp_request_get_input_buffer(evreq);
        size_t body_len = evbuffer_get_length(in);
        if (body_len > srv->opts.max_body_bytes) {
                af_http_reply_error(req, 413, "too_large",
                                    "request body of %zu bytes is over the %zu byte limit",
                                    body_len, srv->opts.max_body_bytes);
                goto out;
        }
        /* NUL-terminate in place: handlers get a C string without another copy. */
        if (evbuffer_add(in, "", 1) < 0) {
                af_http_reply_error(req, 503, "unavailable", "out of memory");
                goto out;
        }
        req->body = (const char *) evbuffer_pullup(in, -1);
        req->body_len = body_len;
        if (!req->body) {
                af_http_reply_error(req, 503, "unavailable", "out of memory");
                goto out;
        }

        if (route->auth_required) {
                bool ok = srv->auth_cb && srv->auth_cb(req, req_bearer(req), srv->auth_opaque);
                if (!ok) {
                        af_http_req_add_header(req, "WWW-Authenticate", "Bearer");
                        af_http_reply_error(req, 401, "unauthenticated",
                                            "a valid bearer token is required");
                        goto out;
                }
        }
        srv->dispatching = req;
        route->handler(req, route->opaque);
        if (srv->dispatching == req) {
                /* Not answered yet: the handler keeps req and answers later. */
                srv->dispatching = NULL;
                req_watch_close(req);
        }
out:
        return;
}

/* ---- accepting ----------------------------------------------------------------------------- */

static void server_accept_resume(void *opaque) {
        af_http_server_t *srv = opaque;
        evconnlistener_enable(evhttp_bound_socket_get_listener(srv->sock));
}

/* accept() failed with something other than "try again": most often no descriptor left
 * (EMFILE, ENFILE) or no memory for the socket (ENOBUFS, ENOMEM). Retrying at once would fail
 * the same way on every loop turn, so pause; the clients wait in the kernel's backlog. */
static void server_accept_error(struct evconnlistener *lev, void *http) {
        int err = EVUTIL_SOCKET_ERROR();
        af_http_server_t *srv = servers;
        while (srv && srv->http != http)
                srv = srv->next;
        if (!srv) /* cannot happen: every server is in the list from its start */
                return;
        evconnlistener_disable(lev);
        af_timer_start(srv->accept_resume, AF_HTTP_ACCEPT_PAUSE_MS, false);
        srv->accept_failures++;
        int64_t now = af_clock_mono_ms();
        if (srv->accept_warned_ms && now - srv->accept_warned_ms < AF_HTTP_ACCEPT_WARN_MS)
                return;
        char more[64] = "";
        if (srv->accept_failures > 1)
                snprintf(more, sizeof(more), " (%llu such failures since the last warning)",
                         (unsigned long long) srv->accept_failures);
        af_warn("http server on %s:%d cannot accept connections: %s; trying again every %d ms%s",
                srv->opts.address, af_http_server_port(srv), evutil_socket_error_to_string(err),
                AF_HTTP_ACCEPT_PAUSE_MS, more);
        srv->accept_warned_ms = now;
        srv->accept_failures = 0;
}

/* ---- server -------------------------------------------------------------------------------- */

af_http_server_t *af_http_server_new(af_loop_t *loop, const af_http_server_opts_t *opts,
                                     char *errstr, size_t errstr_size) {
        af_http_server_t *srv = calloc(1, sizeof(*srv));
        if (!srv) {
                af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                goto fail;
        }
        srv->loop = loop;
        if (opts)
                srv->opts = *opts;
        if (!srv->opts.address)
                srv->opts.address = "127.0.0.1";
        if (!srv->opts.max_body_bytes)
                srv->opts.max_body_bytes = AF_HTTP_SERVER_DEFAULT_MAX_BODY;
        if (!srv->opts.max_header_bytes)
                srv->opts.max_header_bytes = AF_HTTP_SERVER_DEFAULT_MAX_HEADERS;
        if (srv->opts.timeout_ms <= 0)
                srv->opts.timeout_ms = AF_HTTP_SERVER_DEFAULT_TIMEOUT_MS;
        if (srv->opts.port < 0 || srv->opts.port > 65535) {
                af_errstr(AF_ERR_CONFIG, errstr, errstr_size, "http port %d is not 0..65535",
                          srv->opts.port);
                goto fail;
        }
        srv->http = evhttp_new(af_loop_base(loop));
        if (!srv->http) {
                af_errstr(AF_ERR_INTERNAL, errstr, errstr_size, "evhttp_new failed");
                goto fail;
        }
        size_t hard_body = server_hard_body(srv->opts.max_body_bytes);
        if (hard_body > (size_t) EV_SSIZE_MAX)
                hard_body = (size_t) EV_SSIZE_MAX;
        evhttp_set_max_body_size(srv->http, (ev_ssize_t) hard_body);
        evhttp_set_max_headers_size(srv->http, (ev_ssize_t) srv->opts.max_header_bytes);
        struct timeval tv = {.tv_sec = srv->opts.timeout_ms / 1000,
                             .tv_usec = (srv->opts.timeout_ms % 1000) * 1000};
        evhttp_set_timeout_tv(srv->http, &tv);
        evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                                      EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                                      EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
        evhttp_set_gencb(srv->http, server_gen_cb, srv);
        srv->sock = evhttp_bind_socket_with_handle(srv->http, srv->opts.address,
                                                   (ev_uint16_t) srv->opts.port);
        if (!srv->sock) {
                af_errstr(AF_ERR_TRANSPORT, errstr, errstr_size,
                          "cannot listen on %s:%d (address in use or not local?)",
                          srv->opts.address, srv->opts.port);
                goto fail;
        }
        if (!(srv->accept_resume = af_timer_new(loop, server_accept_resume, srv))) {
                af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                goto fail;
        }
        evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(srv->sock),
                                    server_accept_error);
        srv->next = servers;
        servers = srv;
        af_debug("http server listening on %s:%d", srv->opts.address, af_http_server_port(srv));
        return srv;
fail:
        af_http_server_destroy(srv);
        return NULL;
}

void af_http_server_destroy(af_http_server_t *srv) {
        if (!srv)
                return;
        for (af_http_server_t **p = &servers; *p; p = &(*p)->next)
                if (*p == srv) {
                        *p = srv->next;
                        break;
                }
        af_timer_destroy(srv->accept_resume);
        /* Open connections close here: waiting requests get their on_close. */
        if (srv->http)
                evhttp_free(srv->http);
        for (size_t i = 0; i < srv->route_cnt; i++) {
                free(srv->routes[i].method);
                free(srv->routes[i].pattern);
        }
        free(srv->routes);
        free(srv);
}

int af_http_server_port(const af_http_server_t *srv) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int port = -1;
        if (!srv || !srv->sock)
                goto out;
        evutil_socket_t fd = evhttp_bound_socket_get_fd(srv->sock);
        if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0)
                goto out;
        if (ss.ss_family == AF_INET)
                port = ntohs(((struct sockaddr_in *) &ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
                port = ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
out:
        return port;
}

void af_http_server_set_auth(af_http_server_t *srv, af_http_auth_cb_t *cb, void *opaque) {
        srv->auth_cb = cb;
        srv->auth_opaque = opaque;
}

void af_http_server_route(af_http_server_t *srv, const char *method, const char *pattern,
                          bool auth_required, af_http_handler_t *handler, void *opaque) {
        char errstr[256];
        af_http_route_entry_t *routes;

        if (!af_http_route_valid(pattern, errstr, sizeof(errstr)) || !method || !handler) {
                /* A programming error, caught by the first test that uses the route. */
                af_error("http route %s %s refused: %s", method ? method : "?",
                         pattern ? pattern : "?", handler ? errstr : "no handler");
                return;
        }
        routes = realloc(srv->routes, (srv->route_cnt + 1) * sizeof(*routes));
        if (!routes) {
                af_error("http route %s %s refused: out of memory", method, pattern);
                return;
        }
        srv->routes = routes;
        af_http_route_entry_t *r = &srv->routes[srv->route_cnt];
        r->method = strdup(method);
        r->pattern = strdup(pattern);
        if (!r->method || !r->pattern) {
                free(r->method);
                free(r->pattern);
                af_error("http route %s %s refused: out of memory", method, pattern);
                return;
        }
        r->auth_required = auth_required;
        r->handler = handler;
        r->opaque = opaque;
        srv->route_cnt++;
}

/* ---- request accessors --------------------------------------------------------------------- */

const char *af_http_req_method(const af_http_req_t *req) {
        if (!req->evreq)
                return "?";
        switch (evhttp_request_get_command(req->evreq)) {
        case EVHTTP_REQ_GET:
                return "GET";
        case EVHTTP_REQ_POST:
                return "POST";
        case EVHTTP_REQ_HEAD:
                return "HEAD";
        case EVHTTP_REQ_PUT:
                return "PUT";
        case EVHTTP_REQ_DELETE:
                return "DELETE";
        case EVHTTP_REQ_OPTIONS:
                return "OPTIONS";
        case EVHTTP_REQ_TRACE:
                return "TRACE";
        case EVHTTP_REQ_CONNECT:
                return "CONNECT";
        case EVHTTP_REQ_PATCH:
                return "PATCH";
        }
        return "?";
}

const char *af_http_req_path(const af_http_req_t *req) {
        return req->path;
}

const char *af_http_req_param(const af_http_req_t *req, const char *name) {
        return af_http_params_get(&req->params, name);
}

const char *af_http_req_query(const af_http_req_t *req, const char *name) {
        return evhttp_find_header(&req->query, name);
}

const char *af_http_req_header(const af_http_req_t *req, const char *name) {
        if (!req->evreq)
                return NULL;
        return evhttp_find_header(evhttp_request_get_input_headers(req->evreq), name);
}

const char *af_http_req_body(const af_http_req_t *req, size_t *lenp) {
        if (lenp)
                *lenp = req->body ? req->body_len : 0;
        return req->body ? req->body : "";
}

const char *af_http_req_peer(const af_http_req_t *req) {
        /* Formatted on demand (only the auth-denied path reads it): the cache is not part of
         * what the caller sees as the request, and no af_http_req_t is ever made const. */
        af_http_req_t *r = (af_http_req_t *) req;
        if (r->evreq)
                req_fill_peer(r, evhttp_request_get_connection(r->evreq));
        return r->peer;
}

void af_http_req_set_user(af_http_req_t *req, void *user, void (*free_fn)(void *)) {
        if (req->user_free && req->user != user)
                req->user_free(req->user);
        req->user = user;
        req->user_free = free_fn;
}

void *af_http_req_user(const af_http_req_t *req) {
        return req->user;
}

void af_http_req_on_close(af_http_req_t *req, void (*cb)(af_http_req_t *req, void *opaque),
                          void *opaque) {
        req->on_close = cb;
        req->on_close_opaque = opaque;
}

/* ---- answers ------------------------------------------------------------------------------- */

void af_http_req_add_header(af_http_req_t *req, const char *name, const char *value) {
        if (!req->evreq)
                return;
        /* req_add_framing() must not add a second one. The first letter spares the common
         * headers (Content-Type, Location...) most of the comparisons. */
        char c = (char) (name[0] | 0x20);
        if (c == 'd' && !strcasecmp(name, "Date"))
                req->has_date = true;
        else if ((c == 'c' && !strcasecmp(name, "Content-Length")) ||
                 (c == 't' && !strcasecmp(name, "Transfer-Encoding")))
                req->has_length = true;
        evhttp_add_header(evhttp_request_get_output_headers(req->evreq), name, value);
}

void af_http_reply(af_http_req_t *req, int status, const char *content_type, const char *body,
                   size_t len) {
        if (!req->closed && req->evreq) {
                /* Straight into evhttp's output buffer: no buffer of our own to fill and move. */
                if (len)
                        evbuffer_add(evhttp_request_get_output_buffer(req->evreq), body, len);
                if (content_type)
                        af_http_req_add_header(req, "Content-Type", content_type);
        }
        req_send(req, status);
}

static int reply_json_dump_cb(const char *data, size_t size, void *arg) {
        return evbuffer_add(arg, data, size);
}

void af_http_reply_json(af_http_req_t *req, int status, json_t *body) {
        if (!req->closed && req->evreq) {
                struct evbuffer *buf = evhttp_request_get_output_buffer(req->evreq);
                /* Serialized straight into evhttp's output buffer, no intermediate string. */
                if (body && json_dump_callback(body, reply_json_dump_cb, buf,
                                               af_json_flags(body, JSON_COMPACT)) < 0) {
                        evbuffer_drain(buf, evbuffer_get_length(buf));
                        evbuffer_add_printf(buf, "{\"code\":\"internal\",\"message\":\"reply did "
                                                 "not serialize\"}");
                        status = 500;
                }
                af_http_req_add_header(req, "Content-Type", "application/json");
        }
        json_decref(body);
        req_send(req, status);
}

void af_http_reply_error(af_http_req_t *req, int status, const char *code, const char *fmt, ...) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        af_utf8_repair(msg); /* it may quote input that is not UTF-8, or cut a character */
        af_http_reply_json(req, status, json_pack("{s:s, s:s}", "code", code, "message", msg));
}
