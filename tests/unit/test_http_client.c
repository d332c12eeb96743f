/*
 * Unit tests of http_client against a stub that speaks real HTTP (plain evhttp on loopback)
 * and records the exact request it got: method, path, headers (no "Expect"), body; response
 * fields (status, Content-Type, Retry-After as seconds and as a date, any header by name);
 * keep-alive reuse; cancellation reported from the loop; destroy cancelling what is in flight; the
 * response cap by Content-Length and by a chunked body; the default timeout; refused URLs; no
 * "Expect: 100-continue" for large bodies either; per-request options (URL, timeout, cap)
 * that a pooled handle keeps are replaced when they change; an idle connection the server
 * closed is noticed and replaced.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_client.h"
#include "log.h"
#include "loop.h"

#define WATCHDOG_MS 30000 /* ends a hung run; never a timing assertion */

typedef struct {
        af_loop_t *loop;
        struct evhttp *stub;
        int port;
        af_http_client_t *hc;
        af_timer_t *watchdog;
        bool watchdog_fired;
        /* what the stub saw last */
        int hits;
        char method[16];
        char path[128];
        char body[256];
        size_t body_len; /* all of it, beyond what body holds */
        char expect[64];
        struct evhttp_connection *conn; /* of the last request */
        char custom[64];
        char ctype_in[64];
        char peer[64];
        char first_peer[64];
        bool same_peer; /* every request came over the first connection */
        /* what the stub answers */
        int status;
        const char *retry_after; /* header value or NULL */
        size_t resp_len;         /* bytes of 'y' */
        bool chunked;
        struct evhttp_request *held[8]; /* /hold requests, never answered */
        int held_cnt;
        /* client side */
        int outstanding;
} fx_t;

static void copy_header(struct evhttp_request *r, const char *name, char *dst, size_t n) {
        const char *v = evhttp_find_header(evhttp_request_get_input_headers(r), name);
        snprintf(dst, n, "%s", v ? v : "");
}

static void stub_cb(struct evhttp_request *r, void *arg) {
        fx_t *fx = arg;
        char *addr = NULL;
        ev_uint16_t port = 0;
        fx->hits++;
        switch (evhttp_request_get_command(r)) {
        case EVHTTP_REQ_GET:
                snprintf(fx->method, sizeof(fx->method), "GET");
                break;
        case EVHTTP_REQ_POST:
                snprintf(fx->method, sizeof(fx->method), "POST");
                break;
        case EVHTTP_REQ_PUT:
                snprintf(fx->method, sizeof(fx->method), "PUT");
                break;
        case EVHTTP_REQ_DELETE:
                snprintf(fx->method, sizeof(fx->method), "DELETE");
                break;
        case EVHTTP_REQ_HEAD:
                snprintf(fx->method, sizeof(fx->method), "HEAD");
                break;
        default:
                snprintf(fx->method, sizeof(fx->method), "OTHER");
                break;
        }
        snprintf(fx->path, sizeof(fx->path), "%s", evhttp_request_get_uri(r));
        struct evbuffer *in = evhttp_request_get_input_buffer(r);
        size_t n = evbuffer_get_length(in);
        fx->body_len = n;
        if (n >= sizeof(fx->body))
                n = sizeof(fx->body) - 1;
        evbuffer_copyout(in, fx->body, n);
        fx->body[n] = '\0';
        copy_header(r, "Expect", fx->expect, sizeof(fx->expect));
        copy_header(r, "X-Agentfleet-Task", fx->custom, sizeof(fx->custom));
        copy_header(r, "Content-Type", fx->ctype_in, sizeof(fx->ctype_in));
        fx->conn = evhttp_request_get_connection(r);
        evhttp_connection_get_peer(fx->conn, &addr, &port);
        snprintf(fx->peer, sizeof(fx->peer), "%s:%u", addr, port);
        if (!fx->first_peer[0]) {
                snprintf(fx->first_peer, sizeof(fx->first_peer), "%s", fx->peer);
                fx->same_peer = true;
        } else if (strcmp(fx->first_peer, fx->peer)) {
                fx->same_peer = false;
        }

        if (!strcmp(fx->path, "/hold")) {
                if (fx->held_cnt < 8)
                        fx->held[fx->held_cnt++] = r;
                return;
        }
        struct evkeyvalq *out = evhttp_request_get_output_headers(r);
        evhttp_add_header(out, "Content-Type", "application/json; charset=utf-8");
        if (fx->retry_after)
                evhttp_add_header(out, "Retry-After", fx->retry_after);
        struct evbuffer *buf = evbuffer_new();
        for (size_t i = 0; i < fx->resp_len; i++)
                evbuffer_add(buf, "y", 1);
        if (fx->chunked) {
                evhttp_send_reply_start(r, fx->status, NULL);
                evhttp_send_reply_chunk(r, buf);
                evhttp_send_reply_end(r);
        } else {
                evhttp_send_reply(r, fx->status, NULL, buf);
        }
        evbuffer_free(buf);
}

static void on_watchdog(void *opaque) {
        fx_t *fx = opaque;
        fx->watchdog_fired = true;
        af_loop_stop(fx->loop);
}

static int setup(void **state) {
        char errstr[256];
        fx_t *fx = calloc(1, sizeof(*fx));
        fx->loop = af_loop_new(errstr, sizeof(errstr));
        fx->stub = evhttp_new(af_loop_base(fx->loop));
        evhttp_set_gencb(fx->stub, stub_cb, fx);
        evhttp_set_allowed_methods(fx->stub, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                                     EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD);
        struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(fx->stub, "127.0.0.1", 0);
        assert_non_null(bs);
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *) &ss, &sl);
        fx->port = ntohs(((struct sockaddr_in *) &ss)->sin_port);
        af_http_client_opts_t co = {.default_timeout_ms = 10000,
                                    .default_max_response_bytes = 4096,
                                    .max_host_connections = 1};
        fx->hc = af_http_client_new(fx->loop, &co, errstr, sizeof(errstr));
        assert_non_null(fx->hc);
        fx->watchdog = af_timer_new(fx->loop, on_watchdog, fx);
        fx->status = 200;
        *state = fx;
        return 0;
}

static int teardown(void **state) {
        fx_t *fx = *state;
        af_http_client_destroy(fx->hc);
        evhttp_free(fx->stub); /* frees the held requests with their connections */
        af_timer_destroy(fx->watchdog);
        af_loop_destroy(fx->loop);
        free(fx);
        return 0;
}

static void run(fx_t *fx) {
        fx->watchdog_fired = false;
        af_timer_start(fx->watchdog, WATCHDOG_MS, false);
        if (fx->outstanding > 0)
                af_loop_run(fx->loop);
        af_timer_stop(fx->watchdog);
        assert_false(fx->watchdog_fired);
}

typedef struct {
        fx_t *fx;
        int calls;
        af_err_t err;
        bool retriable;
        int status;
        char body[8192];
        size_t body_len;
        char ctype[64];
        int64_t retry_after_ms;
        int64_t elapsed_ms;
        char retry_after_hdr[64]; /* af_http_response_header(resp, "retry-after"), or "" */
        bool no_such_header;      /* af_http_response_header(resp, "x-none") was NULL */
} result_t;

static void on_done(const af_http_response_t *resp, const af_error_t *err, void *opaque) {
        result_t *r = opaque;
        r->calls++;
        r->err = err->err;
        r->retriable = af_error_is_retriable(err);
        if (resp) {
                r->status = resp->status;
                snprintf(r->body, sizeof(r->body), "%s", resp->body);
                r->body_len = resp->body_len;
                snprintf(r->ctype, sizeof(r->ctype), "%s",
                         resp->content_type ? resp->content_type : "");
                r->retry_after_ms = resp->retry_after_ms;
                r->elapsed_ms = resp->elapsed_ms;
                const char *h = af_http_response_header(resp, "retry-after");
                snprintf(r->retry_after_hdr, sizeof(r->retry_after_hdr), "%s", h ? h : "");
                r->no_such_header = af_http_response_header(resp, "x-none") == NULL;
        }
        if (r->fx && --r->fx->outstanding == 0)
                af_loop_stop(r->fx->loop);
}

static uint64_t send_req(fx_t *fx, result_t *r, const char *method, const char *path,
                         const char *const *headers, const char *body, int64_t timeout_ms,
                         size_t cap) {
        char url[128];
        uint64_t id = 0;
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", fx->port, path);
        af_http_request_t req = {.method = method,
                                 .url = url,
                                 .headers = headers,
                                 .body = body,
                                 .body_len = body ? strlen(body) : 0,
                                 .timeout_ms = timeout_ms,
                                 .max_response_bytes = cap};
        memset(r, 0, sizeof(*r));
        r->fx = fx;
        assert_int_equal(af_http_client_send(fx->hc, &req, on_done, r, &id), AF_OK);
        assert_int_equal(r->calls, 0);
        assert_true(id > 0);
        fx->outstanding++;
        return id;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_exact_request_is_sent(void **state) {
        fx_t *fx = *state;
        result_t r;
        const char *const hdrs[] = {"Content-Type: application/json", "X-Agentfleet-Task: 01TASK",
                                    NULL};
        char body[64];
        snprintf(body, sizeof(body), "{\"claim_id\":\"C-1\"}");
        send_req(fx, &r, "PUT", "/crm/claims/C-1?x=1", hdrs, body, 0, 0);
        body[0] = 'X'; /* the client copied the body at send */
        fx->status = 201;
        fx->resp_len = 3;
        run(fx);
        assert_int_equal(fx->hits, 1);
        assert_string_equal(fx->method, "PUT");
        assert_string_equal(fx->path, "/crm/claims/C-1?x=1");
        assert_string_equal(fx->body, "{\"claim_id\":\"C-1\"}");
        assert_string_equal(fx->custom, "01TASK");
        assert_string_equal(fx->ctype_in, "application/json");
        assert_string_equal(fx->expect, ""); /* no 100-continue round trip */
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.err, AF_OK);
        assert_int_equal(r.status, 201);
        assert_string_equal(r.body, "yyy");
        assert_int_equal(r.body_len, 3);
        assert_string_equal(r.ctype, "application/json; charset=utf-8");
        assert_int_equal(r.retry_after_ms, -1);
        assert_true(r.elapsed_ms >= 0);
}

static void test_post_without_body_and_get(void **state) {
        fx_t *fx = *state;
        result_t r;
        send_req(fx, &r, "POST", "/noop", NULL, NULL, 0, 0);
        run(fx);
        assert_string_equal(fx->method, "POST");
        assert_string_equal(fx->body, "");
        assert_int_equal(r.status, 200);
        send_req(fx, &r, NULL /*GET*/, "/stats", NULL, NULL, 0, 0);
        run(fx);
        assert_string_equal(fx->method, "GET");
        assert_int_equal(r.body_len, 0);
        assert_string_equal(r.body, "");
}

/* Pooled handles keep the options of their last request: whatever the order of methods,
 * bodies and headers, each request goes out as asked, with nothing left from the one
 * before on the same handle (one connection, requests one after the other). */
static void test_pooled_handle_carries_nothing_over(void **state) {
        fx_t *fx = *state;
        result_t r;
        static const char *const t1[] = {"X-Agentfleet-Task: T1", NULL};
        static const char *const t2[] = {"X-Agentfleet-Task: T2", NULL};
        static const struct {
                const char *method, *path, *body;
                const char *const *headers;
                const char *want_method, *want_custom;
        } steps[] = {
                {"POST", "/a", "one", t1, "POST", "T1"},
                {"POST", "/b", NULL, NULL, "POST", ""},
                {"DELETE", "/c", "two", t2, "DELETE", "T2"},
                {"DELETE", "/d", NULL, NULL, "DELETE", ""},
                {"GET", "/e", NULL, t1, "GET", "T1"},
                {"HEAD", "/f", NULL, NULL, "HEAD", ""},
                {"GET", "/g", NULL, NULL, "GET", ""},
                {"PUT", "/h", "three", NULL, "PUT", ""},
                {"POST", "/i", "four", t2, "POST", "T2"},
                {"POST", "/j", "five", NULL, "POST", ""},
                {"DELETE", "/k", NULL, NULL, "DELETE", ""},
        };
        fx->resp_len = 2;
        for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
                send_req(fx, &r, steps[i].method, steps[i].path, steps[i].headers, steps[i].body, 0,
                         0);
                run(fx);
                assert_int_equal(fx->hits, (int) i + 1);
                assert_string_equal(fx->method, steps[i].want_method);
                assert_string_equal(fx->path, steps[i].path);
                assert_string_equal(fx->body, steps[i].body ? steps[i].body : "");
                assert_string_equal(fx->custom, steps[i].want_custom);
                assert_int_equal(r.status, 200);
                /* HEAD gets no body; the GET after it must get its own again. */
                assert_string_equal(r.body, strcmp(steps[i].method, "HEAD") ? "yy" : "");
        }
        assert_true(fx->same_peer);
}

static void test_retry_after_seconds_and_date(void **state) {
        fx_t *fx = *state;
        result_t r;
        fx->status = 429;
        fx->retry_after = "7";
        send_req(fx, &r, "GET", "/rate", NULL, NULL, 0, 0);
        run(fx);
        assert_int_equal(r.err, AF_OK); /* any HTTP answer is OK: the caller judges it */
        assert_int_equal(r.status, 429);
        assert_int_equal(r.retry_after_ms, 7000);
        assert_string_equal(r.retry_after_hdr, "7"); /* any header, by name in any case */
        assert_true(r.no_such_header);

        char date[64];
        time_t later = time(NULL) + 120;
        struct tm tm;
        gmtime_r(&later, &tm);
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        fx->retry_after = date;
        send_req(fx, &r, "GET", "/rate", NULL, NULL, 0, 0);
        run(fx);
        /* 120 s ahead at whole-second resolution: anything in (100 s, 121 s]. */
        assert_true(r.retry_after_ms > 100000 && r.retry_after_ms <= 121000);

        fx->retry_after = "Mon, 01 Jan 2001 00:00:00 GMT";
        send_req(fx, &r, "GET", "/rate", NULL, NULL, 0, 0);
        run(fx);
        assert_int_equal(r.retry_after_ms, 0);

        fx->retry_after = "soon";
        send_req(fx, &r, "GET", "/rate", NULL, NULL, 0, 0);
        run(fx);
        assert_int_equal(r.retry_after_ms, -1);
}

static void test_connection_is_reused(void **state) {
        fx_t *fx = *state;
        result_t r;
        for (int i = 0; i < 5; i++) {
                send_req(fx, &r, "POST", "/noop", NULL, "{}", 0, 0);
                run(fx);
                assert_int_equal(r.status, 200);
        }
        assert_int_equal(fx->hits, 5);
        assert_true(fx->same_peer);
}

static void test_cancel_reports_from_the_loop(void **state) {
        fx_t *fx = *state;
        result_t r;
        uint64_t id = send_req(fx, &r, "GET", "/hold", NULL, NULL, 0, 0);
        assert_int_equal(af_http_client_in_flight(fx->hc), 1);
        af_http_client_cancel(fx->hc, id);
        assert_int_equal(r.calls, 0);
        af_http_client_cancel(fx->hc, id);     /* twice is harmless */
        af_http_client_cancel(fx->hc, 999999); /* unknown id too */
        run(fx);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.err, AF_ERR_CANCELLED);
        assert_int_equal(af_http_client_in_flight(fx->hc), 0);
}

static void test_default_timeout_applies(void **state) {
        fx_t *fx = *state;
        char errstr[256];
        af_http_client_opts_t co = {.default_timeout_ms = 100};
        af_http_client_t *hc = af_http_client_new(fx->loop, &co, errstr, sizeof(errstr));
        result_t r = {.fx = fx};
        char url[64];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/hold", fx->port);
        af_http_request_t req = {.url = url};
        assert_int_equal(af_http_client_send(hc, &req, on_done, &r, NULL), AF_OK);
        fx->outstanding++;
        run(fx);
        assert_int_equal(r.err, AF_ERR_TIMEOUT);
        assert_true(r.retriable);
        af_http_client_destroy(hc);
}

static void test_destroy_cancels_in_flight(void **state) {
        fx_t *fx = *state;
        char errstr[256];
        af_http_client_t *hc = af_http_client_new(fx->loop, NULL, errstr, sizeof(errstr));
        result_t r = {0};
        char url[64];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/hold", fx->port);
        af_http_request_t req = {.url = url};
        assert_int_equal(af_http_client_send(hc, &req, on_done, &r, NULL), AF_OK);
        af_http_client_destroy(hc);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.err, AF_ERR_CANCELLED);
        af_http_client_destroy(NULL);
}

static void test_response_cap_by_length_and_by_chunks(void **state) {
        fx_t *fx = *state;
        result_t r;
        fx->resp_len = 100;
        send_req(fx, &r, "GET", "/x", NULL, NULL, 0, 100 /*exactly the cap*/);
        run(fx);
        assert_int_equal(r.err, AF_OK);
        assert_int_equal(r.body_len, 100);

        send_req(fx, &r, "GET", "/x", NULL, NULL, 0, 99);
        run(fx);
        assert_int_equal(r.err, AF_ERR_TOO_LARGE);
        assert_false(r.retriable);

        fx->chunked = true; /* no Content-Length: the write callback must stop it */
        fx->resp_len = 5000;
        send_req(fx, &r, "GET", "/x", NULL, NULL, 0, 0 /*client default 4096*/);
        run(fx);
        assert_int_equal(r.err, AF_ERR_TOO_LARGE);
}

/* A large body goes out at once, without "Expect: 100-continue" (curl asks for it over 1 MiB
 * and would wait a second for the 100 evhttp never sends), and so do small ones after it on
 * the same handle. */
static void test_no_expect_for_any_body_size(void **state) {
        fx_t *fx = *state;
        result_t r;
        static const size_t sizes[] = {2 * 1024 * 1024, 1025, 1024, 10, 1536 * 1024};
        fx->resp_len = 2;
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                char *body = malloc(sizes[i] + 1);
                memset(body, 'b', sizes[i]);
                body[sizes[i]] = '\0';
                send_req(fx, &r, "POST", "/big", NULL, body, 0, 0);
                free(body);
                run(fx);
                assert_int_equal(r.status, 200);
                assert_int_equal(fx->body_len, sizes[i]);
                assert_string_equal(fx->expect, "");
        }
        assert_true(fx->same_peer);
}

/* Timeout, cap and URL are set on a pooled handle only when they differ from its last
 * request's: each request still gets its own. */
static void test_pooled_handle_per_request_options(void **state) {
        fx_t *fx = *state;
        result_t r;
        fx->resp_len = 50;
        send_req(fx, &r, "GET", "/a", NULL, NULL, 0, 0);
        run(fx);
        assert_int_equal(r.err, AF_OK);
        send_req(fx, &r, "GET", "/hold", NULL, NULL, 100 /*ms*/, 0);
        run(fx);
        assert_int_equal(r.err, AF_ERR_TIMEOUT);
        send_req(fx, &r, "GET", "/a", NULL, NULL, 0, 0);
        run(fx);
        assert_int_equal(r.err, AF_OK);
        assert_string_equal(fx->path, "/a");
        send_req(fx, &r, "GET", "/a", NULL, NULL, 0, 49);
        run(fx);
        assert_int_equal(r.err, AF_ERR_TOO_LARGE);
        send_req(fx, &r, "GET", "/a", NULL, NULL, 0, 0);
        run(fx);
        assert_int_equal(r.err, AF_OK);
        assert_int_equal(r.body_len, 50);
        send_req(fx, &r, "GET", "/b", NULL, NULL, 0, 0);
        run(fx);
        assert_string_equal(fx->path, "/b");
        send_req(fx, &r, "GET", "/b", NULL, NULL, 0, 0);
        run(fx);
        assert_string_equal(fx->path, "/b");
        assert_int_equal(fx->hits, 7);
}

static void on_pause(void *opaque) {
        af_loop_stop(opaque);
}

/* A server closing an idle keep-alive connection fails no request: curl finds it dead before
 * reuse and connects again, and the fd number (often the same) gets a fresh watch. */
static void test_idle_connection_closed_by_server(void **state) {
        fx_t *fx = *state;
        result_t r;
        send_req(fx, &r, "POST", "/noop", NULL, "{}", 0, 0);
        run(fx);
        assert_int_equal(r.status, 200);
        evhttp_connection_free(fx->conn); /* the server drops the idle connection */
        fx->conn = NULL;
        af_timer_t *pause = af_timer_new(fx->loop, on_pause, fx->loop);
        af_timer_start(pause, 50, false);
        af_loop_run(fx->loop); /* the client sees the close while the connection is idle */
        af_timer_destroy(pause);
        for (int i = 0; i < 3; i++) {
                send_req(fx, &r, "POST", "/noop", NULL, "{}", 0, 0);
                run(fx);
                assert_int_equal(r.err, AF_OK);
                assert_int_equal(r.status, 200);
        }
        assert_int_equal(fx->hits, 4);
        assert_false(fx->same_peer); /* a new connection after the close */
}

static void test_bad_requests(void **state) {
        fx_t *fx = *state;
        result_t r = {.fx = fx};
        af_http_request_t no_url = {.method = "GET"};
        assert_int_equal(af_http_client_send(fx->hc, &no_url, on_done, &r, NULL), AF_ERR_INVALID);
        assert_int_equal(af_http_client_send(NULL, &no_url, on_done, &r, NULL), AF_ERR_INVALID);
        assert_int_equal(r.calls, 0);
        /* Only http and https: a templated URL must never read a local file. */
        af_http_request_t file = {.url = "file:///etc/passwd"};
        assert_int_equal(af_http_client_send(fx->hc, &file, on_done, &r, NULL), AF_OK);
        assert_int_equal(r.calls, 0);
        fx->outstanding++;
        run(fx);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.err, AF_ERR_INVALID);
        assert_false(r.retriable);
}

int main(void) {
        af_log_init("test", AF_LOG_OFF);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_exact_request_is_sent, setup, teardown),
                cmocka_unit_test_setup_teardown(test_post_without_body_and_get, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pooled_handle_carries_nothing_over, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_retry_after_seconds_and_date, setup, teardown),
                cmocka_unit_test_setup_teardown(test_connection_is_reused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cancel_reports_from_the_loop, setup, teardown),
                cmocka_unit_test_setup_teardown(test_default_timeout_applies, setup, teardown),
                cmocka_unit_test_setup_teardown(test_destroy_cancels_in_flight, setup, teardown),
                cmocka_unit_test_setup_teardown(test_response_cap_by_length_and_by_chunks, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_no_expect_for_any_body_size, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pooled_handle_per_request_options, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_idle_connection_closed_by_server, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
