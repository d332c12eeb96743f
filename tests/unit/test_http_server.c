/*
 * Unit tests of http_server over loopback (driven by http_client on the same loop): request
 * accessors (decoded path, {params}, query, headers, peer, body), 400 for undecodable paths,
 * 405 vs 404, the auth hook (bearer extraction, identity attached with set_user), user data
 * freed exactly once, deferred answers whose client went away (with and without an on_close
 * hook), on_close at server destroy, refused route patterns, a busy port; the answer's bytes
 * on the wire (Date and Content-Length as evhttp itself would write them), read by a raw
 * socket client.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"
#include "http_server.h"
#include "log.h"
#include "loop.h"

#define WATCHDOG_MS 30000 /* ends a hung run; never a timing assertion */

typedef struct {
        af_loop_t *loop;
        af_http_server_t *srv;
        af_http_client_t *hc;
        af_timer_t *watchdog;
        af_timer_t *poll; /* re-armed by the stop_when_* pollers */
        bool watchdog_fired;
        int outstanding;
        char bearer_seen[64];
        bool bearer_was_null;
        int user_freed;
        af_http_req_t *held;
        int held_closed;
} fx_t;

static fx_t *g_fx; /* for free functions that get no opaque */

static void user_free(void *p) {
        g_fx->user_freed++;
        free(p);
}

/* ---- handlers ------------------------------------------------------------------------------ */

static void h_inspect(af_http_req_t *req, void *opaque) {
        size_t len;
        const char *body = af_http_req_body(req, &len);
        const char *st = af_http_req_query(req, "status");
        const char *hdr = af_http_req_header(req, "x-test"); /* case-insensitive */
        const char *user = af_http_req_user(req);
        af_http_reply_json(req, 200,
                           json_pack("{s:s, s:s, s:s?, s:s?, s:s?, s:s%, s:b, s:s?}", "method",
                                     af_http_req_method(req), "path", af_http_req_path(req), "id",
                                     af_http_req_param(req, "id"), "status", st, "header", hdr,
                                     "body", body, len, "peer",
                                     strncmp(af_http_req_peer(req), "127.0.0.1:", 10) == 0, "user",
                                     user));
}

static void h_hold(af_http_req_t *req, void *opaque) {
        fx_t *fx = opaque;
        fx->held = req;
        af_http_req_set_user(req, strdup("held"), user_free);
}

static void held_on_close(af_http_req_t *req, void *opaque) {
        fx_t *fx = opaque;
        fx->held_closed++;
        fx->held = NULL;
        af_loop_stop(fx->loop);
}

static void h_hold_notify(af_http_req_t *req, void *opaque) {
        h_hold(req, opaque);
        af_http_req_on_close(req, held_on_close, opaque);
}

static void h_bad_utf8(af_http_req_t *req, void *opaque) {
        af_http_reply_error(req, 422, "invalid", "field \xff\xfe is bad");
}

static void h_own_date(af_http_req_t *req, void *opaque) {
        af_http_req_add_header(req, "date", "Thu, 01 Jan 1970 00:00:00 GMT");
        af_http_reply(req, 200, "text/plain", "own", 3);
}

static void h_no_content(af_http_req_t *req, void *opaque) {
        af_http_reply(req, 204, NULL, NULL, 0);
}

static bool auth_cb(af_http_req_t *req, const char *bearer, void *opaque) {
        fx_t *fx = opaque;
        fx->bearer_was_null = bearer == NULL;
        snprintf(fx->bearer_seen, sizeof(fx->bearer_seen), "%s", bearer ? bearer : "");
        if (!bearer || strcmp(bearer, "t0k3n"))
                return false;
        af_http_req_set_user(req, strdup("alice"), user_free);
        return true;
}

/* ---- fixture ------------------------------------------------------------------------------- */

static void on_watchdog(void *opaque) {
        fx_t *fx = opaque;
        fx->watchdog_fired = true;
        af_loop_stop(fx->loop);
}

static int setup(void **state) {
        char errstr[256];
        fx_t *fx = calloc(1, sizeof(*fx));
        g_fx = fx;
        fx->loop = af_loop_new(errstr, sizeof(errstr));
        af_http_server_opts_t so = {.address = "127.0.0.1", .max_body_bytes = 1024};
        fx->srv = af_http_server_new(fx->loop, &so, errstr, sizeof(errstr));
        assert_non_null(fx->srv);
        af_http_server_set_auth(fx->srv, auth_cb, fx);
        af_http_server_route(fx->srv, "GET", "/v1/items/{id}", false, h_inspect, fx);
        af_http_server_route(fx->srv, "POST", "/v1/items/{id}:touch", false, h_inspect, fx);
        af_http_server_route(fx->srv, "GET", "/v1/me", true, h_inspect, fx);
        af_http_server_route(fx->srv, "GET", "/hold", false, h_hold, fx);
        af_http_server_route(fx->srv, "GET", "/hold-notify", false, h_hold_notify, fx);
        af_http_server_route(fx->srv, "GET", "/bad-utf8", false, h_bad_utf8, fx);
        af_http_server_route(fx->srv, "GET", "/own-date", false, h_own_date, fx);
        af_http_server_route(fx->srv, "GET", "/no-content", false, h_no_content, fx);
        af_http_server_route(fx->srv, "GET", "/refused/{", false, h_inspect, fx); /* refused */
        af_http_client_opts_t co = {.default_timeout_ms = 10000};
        fx->hc = af_http_client_new(fx->loop, &co, errstr, sizeof(errstr));
        fx->watchdog = af_timer_new(fx->loop, on_watchdog, fx);
        *state = fx;
        return 0;
}

static int teardown(void **state) {
        fx_t *fx = *state;
        af_http_client_destroy(fx->hc);
        af_http_server_destroy(fx->srv);
        af_timer_destroy(fx->watchdog);
        af_timer_destroy(fx->poll);
        af_loop_destroy(fx->loop);
        free(fx);
        return 0;
}

static void run(fx_t *fx) {
        fx->watchdog_fired = false;
        af_timer_start(fx->watchdog, WATCHDOG_MS, false);
        af_loop_run(fx->loop);
        af_timer_stop(fx->watchdog);
        assert_false(fx->watchdog_fired);
}

typedef struct {
        fx_t *fx;
        int calls;
        af_err_t err;
        int status;
        json_t *json;
        char ctype[64];
} result_t;

static void on_done(const af_http_response_t *resp, const af_error_t *err, void *opaque) {
        result_t *r = opaque;
        r->calls++;
        r->err = err->err;
        if (resp) {
                r->status = resp->status;
                r->json = json_loads(resp->body, 0, NULL);
                snprintf(r->ctype, sizeof(r->ctype), "%s",
                         resp->content_type ? resp->content_type : "");
        }
        if (--r->fx->outstanding == 0)
                af_loop_stop(r->fx->loop);
}

static void call(fx_t *fx, result_t *r, const char *method, const char *path,
                 const char *const *headers, const char *body, int64_t timeout_ms) {
        char url[256];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", af_http_server_port(fx->srv), path);
        af_http_request_t req = {.method = method,
                                 .url = url,
                                 .headers = headers,
                                 .body = body,
                                 .body_len = body ? strlen(body) : 0,
                                 .timeout_ms = timeout_ms};
        memset(r, 0, sizeof(*r));
        r->fx = fx;
        assert_int_equal(af_http_client_send(fx->hc, &req, on_done, r, NULL), AF_OK);
        fx->outstanding++;
        run(fx);
        assert_int_equal(r->calls, 1);
}

static const char *jstr(const result_t *r, const char *key) {
        return json_string_value(json_object_get(r->json, key));
}

/* ---- raw client: the exact bytes of one answer ------------------------------------------- */

typedef struct {
        fx_t *fx;
        char buf[8192];
        size_t len;
} raw_t;

/* @returns whether buf holds a whole answer: the headers, then Content-Length bytes, or, with
 * no Content-Length, everything up to EOF. */
static bool raw_complete(const raw_t *raw, bool eof) {
        const char *end = strstr(raw->buf, "\r\n\r\n");
        const char *cl = strcasestr(raw->buf, "\r\nContent-Length: ");
        if (!end)
                return eof;
        if (!cl || cl > end)
                return eof;
        return raw->len >= (size_t) (end + 4 - raw->buf) + strtoul(cl + 18, NULL, 10);
}

static void raw_read_cb(evutil_socket_t fd, short what, void *arg) {
        raw_t *raw = arg;
        ssize_t n = read(fd, raw->buf + raw->len, sizeof(raw->buf) - 1 - raw->len);
        if (n > 0)
                raw->len += (size_t) n;
        raw->buf[raw->len] = '\0';
        if (raw_complete(raw, n <= 0) || raw->len == sizeof(raw->buf) - 1)
                af_loop_stop(raw->fx->loop);
}

/* Send request as is and read the answer into raw (NUL-terminated). */
static void raw_call(fx_t *fx, raw_t *raw, const char *request) {
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t) af_http_server_port(fx->srv))};
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        memset(raw, 0, sizeof(*raw));
        raw->fx = fx;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_true(fd >= 0);
        assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(write(fd, request, strlen(request)), (ssize_t) strlen(request));
        struct event *ev =
                event_new(af_loop_base(fx->loop), fd, EV_READ | EV_PERSIST, raw_read_cb, raw);
        event_add(ev, NULL);
        run(fx);
        event_free(ev);
        close(fd);
}

/* @returns how many header lines of answer start with "name: " (any case). */
static int raw_header_count(const char *answer, const char *name) {
        const char *end = strstr(answer, "\r\n\r\n");
        int cnt = 0;
        for (const char *p = strstr(answer, "\r\n"); p && p < end; p = strstr(p + 2, "\r\n"))
                if (!strncasecmp(p + 2, name, strlen(name)) && p[2 + strlen(name)] == ':')
                        cnt++;
        return cnt;
}

/* @returns the unix time of the answer's "Date: " header, or -1 when it does not parse as the
 * RFC 1123 date evhttp writes. */
static time_t raw_date(const char *answer) {
        const char *d = strstr(answer, "\r\nDate: ");
        struct tm tm = {0};
        if (!d)
                return -1;
        const char *end = strptime(d + 8, "%a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        return end ? timegm(&tm) : -1;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_accessors_see_the_decoded_request(void **state) {
        fx_t *fx = *state;
        result_t r;
        const char *const hdrs[] = {"X-Test: yes", NULL};
        call(fx, &r, "GET", "/v1/items/a%2Fb%20c?status=in%20progress&x=1", hdrs, NULL, 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.ctype, "application/json");
        assert_string_equal(jstr(&r, "method"), "GET");
        assert_string_equal(jstr(&r, "path"), "/v1/items/a/b c");
        assert_string_equal(jstr(&r, "id"), "a/b c");
        assert_string_equal(jstr(&r, "status"), "in progress");
        assert_string_equal(jstr(&r, "header"), "yes");
        assert_string_equal(jstr(&r, "body"), "");
        assert_true(json_is_true(json_object_get(r.json, "peer")));
        json_decref(r.json);

        call(fx, &r, "POST", "/v1/items/I7:touch", NULL, "{\"a\":1}", 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(jstr(&r, "id"), "I7");
        assert_string_equal(jstr(&r, "body"), "{\"a\":1}");
        assert_null(jstr(&r, "status"));
        json_decref(r.json);
}

static void test_bad_paths_and_methods(void **state) {
        fx_t *fx = *state;
        result_t r;
        call(fx, &r, "GET", "/v1/items/a%00b", NULL, NULL, 0);
        assert_int_equal(r.status, 400);
        assert_string_equal(jstr(&r, "code"), "invalid_path");
        json_decref(r.json);

        call(fx, &r, "DELETE", "/v1/items/x", NULL, NULL, 0);
        assert_int_equal(r.status, 405);
        assert_string_equal(jstr(&r, "code"), "method_not_allowed");
        json_decref(r.json);

        call(fx, &r, "GET", "/v1/items/x:touch", NULL, NULL, 0);
        assert_int_equal(r.status, 405);
        json_decref(r.json);

        call(fx, &r, "GET", "/refused/x", NULL, NULL, 0);
        assert_int_equal(r.status, 404);
        json_decref(r.json);

        call(fx, &r, "GET", "/v1/items", NULL, NULL, 0);
        assert_int_equal(r.status, 404);
        assert_string_equal(jstr(&r, "code"), "not_found");
        assert_non_null(jstr(&r, "message"));
        json_decref(r.json);
}

static void test_auth_hook_gets_bearer_and_attaches_identity(void **state) {
        fx_t *fx = *state;
        result_t r;
        const char *const good[] = {"Authorization: bearer   t0k3n", NULL};
        const char *const basic[] = {"Authorization: Basic dXNlcjpwdw==", NULL};
        call(fx, &r, "GET", "/v1/me", good, NULL, 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(fx->bearer_seen, "t0k3n");
        assert_string_equal(jstr(&r, "user"), "alice");
        assert_int_equal(fx->user_freed, 1);
        json_decref(r.json);

        call(fx, &r, "GET", "/v1/me", basic, NULL, 0);
        assert_int_equal(r.status, 401);
        assert_true(fx->bearer_was_null);
        assert_string_equal(jstr(&r, "code"), "unauthenticated");
        json_decref(r.json);

        /* Routes without auth never call the hook. */
        fx->bearer_seen[0] = '\0';
        call(fx, &r, "GET", "/v1/items/x", good, NULL, 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(fx->bearer_seen, "");
        json_decref(r.json);
}

static void test_error_message_that_is_not_utf8_is_still_json(void **state) {
        fx_t *fx = *state;
        result_t r;
        call(fx, &r, "GET", "/bad-utf8", NULL, NULL, 0);
        assert_int_equal(r.status, 422);
        assert_string_equal(jstr(&r, "code"), "invalid");
        assert_string_equal(jstr(&r, "message"), "field ?? is bad"); /* the rest kept */
        json_decref(r.json);
}

static void stop_when_closed(void *opaque) {
        fx_t *fx = opaque;
        if (!af_http_req_header(fx->held, "Host"))
                af_loop_stop(fx->loop);
        else
                af_timer_start(fx->poll, 1, false);
}

static void test_deferred_request_whose_client_left_is_dropped(void **state) {
        fx_t *fx = *state;
        result_t r;
        call(fx, &r, "GET", "/hold", NULL, NULL, 100 /*ms*/);
        assert_int_equal(r.err, AF_ERR_TIMEOUT);
        assert_non_null(fx->held);
        /* Let the server notice the close (the request then has no headers any more), then
         * answer late: dropped, freed, no crash. */
        fx->poll = af_timer_new(fx->loop, stop_when_closed, fx);
        af_timer_start(fx->poll, 1, false);
        run(fx);
        assert_null(af_http_req_header(fx->held, "Host"));
        /* The peer is still known once the connection is gone. */
        assert_true(!strncmp(af_http_req_peer(fx->held), "127.0.0.1:", 10));
        assert_int_equal(fx->user_freed, 0);
        af_http_reply_error(fx->held, 500, "late", "too late");
        fx->held = NULL;
        assert_int_equal(fx->user_freed, 1);
}

static void test_on_close_runs_and_frees_the_request(void **state) {
        fx_t *fx = *state;
        result_t r;
        call(fx, &r, "GET", "/hold-notify", NULL, NULL, 100 /*ms*/);
        assert_int_equal(r.err, AF_ERR_TIMEOUT);
        if (fx->held_closed == 0)
                run(fx);
        assert_int_equal(fx->held_closed, 1);
        assert_int_equal(fx->user_freed, 1);
        assert_null(fx->held);
}

static void stop_when_held(void *opaque) {
        fx_t *fx = opaque;
        if (fx->held)
                af_loop_stop(fx->loop);
        else
                af_timer_start(fx->poll, 1, false);
}

static void test_destroy_with_waiting_request_calls_on_close(void **state) {
        fx_t *fx = *state;
        result_t r = {.fx = fx};
        char url[128];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/hold-notify", af_http_server_port(fx->srv));
        af_http_request_t req = {.url = url};
        assert_int_equal(af_http_client_send(fx->hc, &req, on_done, &r, NULL), AF_OK);
        fx->outstanding++;
        fx->poll = af_timer_new(fx->loop, stop_when_held, fx);
        af_timer_start(fx->poll, 1, false);
        run(fx);
        assert_non_null(fx->held);
        af_http_server_destroy(fx->srv);
        fx->srv = NULL;
        assert_int_equal(fx->held_closed, 1);
        assert_int_equal(fx->user_freed, 1);
        /* The client hears the connection go (and r outlives its callback). */
        run(fx);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.err, AF_ERR_TRANSPORT);
}

/* An HTTP/1.1 answer carries one Date (now, RFC 1123) and one Content-Length (the body's),
 * after the handler's headers, in evhttp's own order. */
static void test_http11_answer_has_date_and_content_length(void **state) {
        fx_t *fx = *state;
        raw_t raw;
        const char *head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: ";
        raw_call(fx, &raw, "GET /v1/items/x HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_true(!strncmp(raw.buf, head, strlen(head)));
        assert_int_equal(raw_header_count(raw.buf, "Date"), 1);
        assert_int_equal(raw_header_count(raw.buf, "Content-Length"), 1);
        time_t date = raw_date(raw.buf), now = time(NULL);
        assert_true(date >= now - 2 && date <= now);
        const char *body = strstr(raw.buf, "\r\n\r\n") + 4;
        char want[64];
        snprintf(want, sizeof(want), "GMT\r\nContent-Length: %zu\r\n\r\n", strlen(body));
        assert_non_null(strstr(raw.buf, want));
        assert_int_equal(body[0], '{');

        /* An error answer too, and "Connection: close" still comes last. */
        raw_call(fx, &raw, "GET /nowhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_true(!strncmp(raw.buf, "HTTP/1.1 404 Not Found\r\n", 24));
        assert_int_equal(raw_header_count(raw.buf, "Date"), 1);
        snprintf(want, sizeof(want), "GMT\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                 strlen(strstr(raw.buf, "\r\n\r\n") + 4));
        assert_non_null(strstr(raw.buf, want));
}

/* HTTP/1.0 answers are evhttp's own: no Date; Content-Length only for keep-alive, after
 * "Connection: keep-alive". */
static void test_http10_answer_is_left_to_evhttp(void **state) {
        fx_t *fx = *state;
        raw_t raw;
        raw_call(fx, &raw, "GET /v1/items/x HTTP/1.0\r\n\r\n");
        assert_true(!strncmp(raw.buf, "HTTP/1.0 200 OK\r\n", 17));
        assert_int_equal(raw_header_count(raw.buf, "Date"), 0);
        assert_int_equal(raw_header_count(raw.buf, "Content-Length"), 0);
        assert_non_null(strstr(raw.buf, "\r\n\r\n{"));

        raw_call(fx, &raw, "GET /v1/items/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_int_equal(raw_header_count(raw.buf, "Date"), 0);
        assert_non_null(strstr(raw.buf, "\r\nConnection: keep-alive\r\nContent-Length: "));
}

/* A handler's own Date is not doubled; a status without a body gets no Content-Length. */
static void test_framing_headers_only_where_evhttp_adds_them(void **state) {
        fx_t *fx = *state;
        raw_t raw;
        raw_call(fx, &raw, "GET /own-date HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_int_equal(raw_header_count(raw.buf, "Date"), 1);
        assert_non_null(strstr(raw.buf, "\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"));
        assert_non_null(strstr(raw.buf, "\r\nContent-Length: 3\r\n\r\nown"));

        raw_call(fx, &raw, "GET /no-content HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_true(!strncmp(raw.buf, "HTTP/1.1 204 No Content\r\n", 25));
        assert_int_equal(raw_header_count(raw.buf, "Date"), 1);
        assert_int_equal(raw_header_count(raw.buf, "Content-Length"), 0);
}

static void on_date_poll(void *opaque) {
        af_loop_stop(opaque);
}

/* The cached date follows the clock: it changes within a few seconds. */
static void test_date_follows_the_clock(void **state) {
        fx_t *fx = *state;
        raw_t raw;
        raw_call(fx, &raw, "GET /v1/items/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        time_t first = raw_date(raw.buf), later = first;
        assert_true(first > 0);
        fx->poll = af_timer_new(fx->loop, on_date_poll, fx->loop);
        for (int i = 0; i < 30 && later == first; i++) {
                af_timer_start(fx->poll, 100, false);
                run(fx);
                raw_call(fx, &raw,
                         "GET /v1/items/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                later = raw_date(raw.buf);
        }
        assert_true(later > first);
        assert_true(later <= time(NULL));
}

/* ---- out of descriptors ---------------------------------------------------------------- */

typedef struct {
        fx_t *fx;
        raw_t raw[3];
        int fd[3];
        int answered;
} crowd_t;

static void crowd_read_cb(evutil_socket_t fd, short what, void *arg) {
        crowd_t *c = arg;
        for (int i = 0; i < 3; i++) {
                raw_t *raw = &c->raw[i];
                if (c->fd[i] != fd || raw->len == sizeof(raw->buf) - 1)
                        continue;
                ssize_t n = read(fd, raw->buf + raw->len, sizeof(raw->buf) - 1 - raw->len);
                if (n > 0)
                        raw->len += (size_t) n;
                raw->buf[raw->len] = '\0';
                if (raw_complete(raw, n <= 0) && ++c->answered == 3)
                        af_loop_stop(c->fx->loop);
        }
}

/* @returns how many lines of the log file f contain needle. */
static int log_lines_with(FILE *f, const char *needle) {
        char line[1024];
        int cnt = 0;
        rewind(f);
        while (fgets(line, sizeof(line), f))
                cnt += strstr(line, needle) != NULL;
        return cnt;
}

/* With no descriptor left for accept(), the server stops watching its socket for a while
 * instead of being woken for it on every loop turn (libevent's listener otherwise retries,
 * and warns, as fast as the loop turns: a spinning core and a flooded log), warns once, and
 * serves the waiting clients once descriptors are free again. */
static void test_out_of_descriptors_pauses_accepting_and_recovers(void **state) {
        fx_t *fx = *state;
        crowd_t c = {.fx = fx};
        struct rlimit saved, low;
        FILE *log = tmpfile();
        assert_non_null(log);
        af_log_init("test", AF_LOG_DEBUG);
        af_log_set_output(log);

        /* Three clients connected and waiting in the kernel's backlog, then every descriptor
         * of the process taken by placeholders. */
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t) af_http_server_port(fx->srv)),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        const char *request = "GET /v1/items/x HTTP/1.0\r\n\r\n";
        for (int i = 0; i < 3; i++) {
                c.raw[i].fx = fx;
                c.fd[i] = socket(AF_INET, SOCK_STREAM, 0);
                assert_true(c.fd[i] >= 0);
                assert_int_equal(connect(c.fd[i], (struct sockaddr *) &sa, sizeof(sa)), 0);
                assert_int_equal(write(c.fd[i], request, strlen(request)),
                                 (ssize_t) strlen(request));
        }
        struct event *ev[3];
        for (int i = 0; i < 3; i++) {
                ev[i] = event_new(af_loop_base(fx->loop), c.fd[i], EV_READ | EV_PERSIST,
                                  crowd_read_cb, &c);
                event_add(ev[i], NULL);
        }
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
        low = saved;
        low.rlim_cur = (rlim_t) c.fd[2] + 64;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
        int placeholder[64], held = 0;
        while (held < 64 && (placeholder[held] = open("/dev/null", O_RDONLY)) >= 0)
                held++;
        assert_true(held < 64); /* the limit was reached */

        /* A second of loop turns with nothing to accept with. */
        fx->poll = af_timer_new(fx->loop, on_date_poll, fx->loop);
        af_timer_start(fx->poll, 1000, false);
        run(fx);
        assert_int_equal(c.answered, 0);
        fflush(log);
        assert_int_equal(log_lines_with(log, "Error from accept"), 0);
        assert_int_equal(log_lines_with(log, "cannot accept"), 1);

        /* Descriptors free again: every waiting client is served. */
        while (held > 0)
                close(placeholder[--held]);
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
        run(fx);
        assert_int_equal(c.answered, 3);
        for (int i = 0; i < 3; i++) {
                assert_true(!strncmp(c.raw[i].buf, "HTTP/1.0 200 OK\r\n", 17));
                event_free(ev[i]);
                close(c.fd[i]);
        }
        af_log_set_output(stderr);
        af_log_init("test", AF_LOG_OFF);
        fclose(log);
}

static void test_busy_port_is_an_error(void **state) {
        fx_t *fx = *state;
        char errstr[256] = "";
        af_http_server_opts_t so = {.address = "127.0.0.1", .port = af_http_server_port(fx->srv)};
        assert_null(af_http_server_new(fx->loop, &so, errstr, sizeof(errstr)));
        assert_non_null(strstr(errstr, "cannot listen"));
        so.port = 70000;
        assert_null(af_http_server_new(fx->loop, &so, errstr, sizeof(errstr)));
        af_http_server_destroy(NULL);
}

int main(void) {
        af_log_init("test", AF_LOG_OFF);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_accessors_see_the_decoded_request, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_bad_paths_and_methods, setup, teardown),
                cmocka_unit_test_setup_teardown(test_auth_hook_gets_bearer_and_attaches_identity,
                                                setup, teardown),
                cmocka_unit_test_setup_teardown(test_error_message_that_is_not_utf8_is_still_json,
                                                setup, teardown),
                cmocka_unit_test_setup_teardown(test_deferred_request_whose_client_left_is_dropped,
                                                setup, teardown),
                cmocka_unit_test_setup_teardown(test_on_close_runs_and_frees_the_request, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_destroy_with_waiting_request_calls_on_close,
                                                setup, teardown),
                cmocka_unit_test_setup_teardown(test_http11_answer_has_date_and_content_length,
                                                setup, teardown),
                cmocka_unit_test_setup_teardown(test_http10_answer_is_left_to_evhttp, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_framing_headers_only_where_evhttp_adds_them,
                                                setup, teardown),
                cmocka_unit_test_setup_teardown(test_date_follows_the_clock, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_out_of_descriptors_pauses_accepting_and_recovers, setup, teardown),
                cmocka_unit_test_setup_teardown(test_busy_port_is_an_error, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
