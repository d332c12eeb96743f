/*
 * Integration test of http_server <-> http_client on one loop, over real loopback sockets:
 * 1,000 requests in flight at once each answered exactly once with its own id, deferred
 * replies, the client's response cap and timeout, the server's body cap (413 JSON), unknown
 * routes (404 JSON), bad bearer tokens (401 JSON) and a refused connection (retriable
 * transport error). Needs no Kafka or Redis, so it never skips.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/support.h"
#include "http_client.h"
#include "http_server.h"
#include "loop.h"

#define N_INFLIGHT  1000
#define MAX_BODY    (64 * 1024)
#define WATCHDOG_MS 60000 /* only to end a hung run; never a timing assertion */

typedef struct {
        af_loop_t *loop;
        af_http_server_t *srv;
        af_http_client_t *hc;
        af_timer_t *watchdog;
        char base[64];   /* http://127.0.0.1:port */
        int outstanding; /* responses still expected */
        bool watchdog_fired;
        /* deferred route */
        af_http_req_t *deferred[16];
        int deferred_cnt;
        af_timer_t *deferred_timer;
        /* never-answering route */
        af_http_req_t *never;
        int never_closed;
} fx_t;

/* ---- server handlers ----------------------------------------------------------------------- */

static void h_echo(af_http_req_t *req, void *opaque) {
        size_t len;
        const char *body = af_http_req_body(req, &len);
        af_http_reply_json(
                req, 200,
                json_pack("{s:s, s:s%}", "id", af_http_req_param(req, "id"), "body", body, len));
}

static void deferred_answer(void *opaque) {
        fx_t *fx = opaque;
        for (int i = 0; i < fx->deferred_cnt; i++)
                af_http_reply_json(
                        fx->deferred[i], 202,
                        json_pack("{s:s}", "deferred", af_http_req_param(fx->deferred[i], "id")));
        fx->deferred_cnt = 0;
}

static void h_deferred(af_http_req_t *req, void *opaque) {
        fx_t *fx = opaque;
        fx->deferred[fx->deferred_cnt++] = req;
        /* Answer from a later loop iteration, as after a Kafka delivery report. */
        af_timer_start(fx->deferred_timer, 5, false);
}

static void h_big(af_http_req_t *req, void *opaque) {
        static char big[8192];
        memset(big, 'x', sizeof(big));
        af_http_reply(req, 200, "text/plain", big, sizeof(big));
}

static void never_on_close(af_http_req_t *req, void *opaque) {
        fx_t *fx = opaque;
        fx->never_closed++;
        fx->never = NULL;
        if (fx->outstanding == 0)
                af_loop_stop(fx->loop);
}

static void h_never(af_http_req_t *req, void *opaque) {
        fx_t *fx = opaque;
        fx->never = req;
        af_http_req_on_close(req, never_on_close, fx);
}

static bool auth_cb(af_http_req_t *req, const char *bearer, void *opaque) {
        return bearer && !strcmp(bearer, "good-token");
}

static void h_secure(af_http_req_t *req, void *opaque) {
        af_http_reply(req, 200, "text/plain", "ok", 2);
}

/* ---- fixture ------------------------------------------------------------------------------- */

static void on_watchdog(void *opaque) {
        fx_t *fx = opaque;
        fx->watchdog_fired = true;
        af_loop_stop(fx->loop);
}

static int fx_setup(void **state) {
        char errstr[256];
        fx_t *fx = calloc(1, sizeof(*fx));
        fx->loop = af_loop_new(errstr, sizeof(errstr));
        assert_non_null(fx->loop);
        af_http_server_opts_t so = {.address = "127.0.0.1",
                                    .port = 0,
                                    .max_body_bytes = MAX_BODY,
                                    .max_header_bytes = 16384,
                                    .timeout_ms = 30000};
        fx->srv = af_http_server_new(fx->loop, &so, errstr, sizeof(errstr));
        assert_non_null(fx->srv);
        assert_true(af_http_server_port(fx->srv) > 0);
        snprintf(fx->base, sizeof(fx->base), "http://127.0.0.1:%d", af_http_server_port(fx->srv));
        af_http_server_set_auth(fx->srv, auth_cb, fx);
        af_http_server_route(fx->srv, "POST", "/echo/{id}", false, h_echo, fx);
        af_http_server_route(fx->srv, "POST", "/deferred/{id}", false, h_deferred, fx);
        af_http_server_route(fx->srv, "GET", "/big", false, h_big, fx);
        af_http_server_route(fx->srv, "GET", "/never", false, h_never, fx);
        af_http_server_route(fx->srv, "GET", "/secure", true, h_secure, fx);
        /* 128 keep-alive connections carry the 1,000 requests: curl queues the rest, which is
         * what a worker does against one integration host. */
        af_http_client_opts_t co = {.default_timeout_ms = 30000,
                                    .default_max_response_bytes = 1 << 20,
                                    .max_host_connections = 128};
        fx->hc = af_http_client_new(fx->loop, &co, errstr, sizeof(errstr));
        assert_non_null(fx->hc);
        fx->watchdog = af_timer_new(fx->loop, on_watchdog, fx);
        fx->deferred_timer = af_timer_new(fx->loop, deferred_answer, fx);
        *state = fx;
        return 0;
}

static int fx_teardown(void **state) {
        fx_t *fx = *state;
        af_http_client_destroy(fx->hc);
        af_http_server_destroy(fx->srv);
        af_timer_destroy(fx->watchdog);
        af_timer_destroy(fx->deferred_timer);
        af_loop_destroy(fx->loop);
        free(fx);
        return 0;
}

/* Run until every expected response came (or the watchdog ends a hung run). */
static void fx_run(fx_t *fx) {
        fx->watchdog_fired = false;
        af_timer_start(fx->watchdog, WATCHDOG_MS, false);
        if (fx->outstanding > 0)
                af_loop_run(fx->loop);
        af_timer_stop(fx->watchdog);
        assert_false(fx->watchdog_fired);
}

/* ---- one response, recorded ---------------------------------------------------------------- */

typedef struct {
        fx_t *fx;
        int calls;
        int status;
        af_err_t err;
        bool retriable;
        char body[256];
        char ctype[64];
} result_t;

static void on_result(const af_http_response_t *resp, const af_error_t *err, void *opaque) {
        result_t *r = opaque;
        r->calls++;
        r->err = err->err;
        r->retriable = af_error_is_retriable(err);
        if (resp) {
                r->status = resp->status;
                snprintf(r->body, sizeof(r->body), "%s", resp->body);
                snprintf(r->ctype, sizeof(r->ctype), "%s",
                         resp->content_type ? resp->content_type : "");
        }
        if (--r->fx->outstanding == 0)
                af_loop_stop(r->fx->loop);
}

static void send_one(fx_t *fx, result_t *r, const char *method, const char *path,
                     const char *const *headers, const char *body, size_t body_len,
                     int64_t timeout_ms, size_t max_resp) {
        char url[256];
        snprintf(url, sizeof(url), "%s%s", fx->base, path);
        af_http_request_t req = {.method = method,
                                 .url = url,
                                 .headers = headers,
                                 .body = body,
                                 .body_len = body_len,
                                 .timeout_ms = timeout_ms,
                                 .max_response_bytes = max_resp};
        memset(r, 0, sizeof(*r));
        r->fx = fx;
        assert_int_equal(af_http_client_send(fx->hc, &req, on_result, r, NULL), AF_OK);
        /* Never called from inside send. */
        assert_int_equal(r->calls, 0);
        fx->outstanding++;
}

/* @returns the "code" of a JSON error body (static storage). */
static const char *json_code(const char *body) {
        static char code[64];
        json_t *j = json_loads(body, 0, NULL);
        const char *c = j ? json_string_value(json_object_get(j, "code")) : NULL;
        snprintf(code, sizeof(code), "%s", c ? c : "(none)");
        json_decref(j);
        return code;
}

/* ---- tests --------------------------------------------------------------------------------- */

typedef struct {
        fx_t *fx;
        int idx;
        int calls;
        bool ok;
} echo_t;

static void on_echo(const af_http_response_t *resp, const af_error_t *err, void *opaque) {
        echo_t *e = opaque;
        char want_id[32], want_body[64];
        e->calls++;
        snprintf(want_id, sizeof(want_id), "req-%d", e->idx);
        snprintf(want_body, sizeof(want_body), "payload-%d", e->idx);
        if (err->err == AF_OK && resp->status == 200) {
                json_t *j = json_loads(resp->body, 0, NULL);
                const char *id = json_string_value(json_object_get(j, "id"));
                const char *body = json_string_value(json_object_get(j, "body"));
                e->ok = id && body && !strcmp(id, want_id) && !strcmp(body, want_body) &&
                        resp->content_type && !strcmp(resp->content_type, "application/json");
                json_decref(j);
        }
        if (--e->fx->outstanding == 0)
                af_loop_stop(e->fx->loop);
}

static void test_thousand_requests_in_flight_each_answered_once(void **state) {
        fx_t *fx = *state;
        echo_t *e = calloc(N_INFLIGHT, sizeof(*e));
        const char *const headers[] = {"Content-Type: text/plain", NULL};
        for (int i = 0; i < N_INFLIGHT; i++) {
                char url[128], body[64];
                snprintf(url, sizeof(url), "%s/echo/req-%d", fx->base, i);
                int n = snprintf(body, sizeof(body), "payload-%d", i);
                af_http_request_t req = {.method = "POST",
                                         .url = url,
                                         .headers = headers,
                                         .body = body,
                                         .body_len = (size_t) n};
                e[i].fx = fx;
                e[i].idx = i;
                assert_int_equal(af_http_client_send(fx->hc, &req, on_echo, &e[i], NULL), AF_OK);
                fx->outstanding++;
        }
        assert_int_equal(af_http_client_in_flight(fx->hc), N_INFLIGHT);
        fx_run(fx);
        for (int i = 0; i < N_INFLIGHT; i++) {
                assert_int_equal(e[i].calls, 1);
                assert_true(e[i].ok);
        }
        assert_int_equal(af_http_client_in_flight(fx->hc), 0);
        free(e);
}

static void test_deferred_replies_arrive(void **state) {
        fx_t *fx = *state;
        result_t r[3];
        for (int i = 0; i < 3; i++) {
                char path[64];
                snprintf(path, sizeof(path), "/deferred/d%d", i);
                send_one(fx, &r[i], "POST", path, NULL, "{}", 2, 0, 0);
        }
        fx_run(fx);
        for (int i = 0; i < 3; i++) {
                char want[64];
                snprintf(want, sizeof(want), "{\"deferred\":\"d%d\"}", i);
                assert_int_equal(r[i].calls, 1);
                assert_int_equal(r[i].err, AF_OK);
                assert_int_equal(r[i].status, 202);
                assert_string_equal(r[i].body, want);
        }
}

static void test_response_over_cap_is_too_large(void **state) {
        fx_t *fx = *state;
        result_t r;
        send_one(fx, &r, "GET", "/big", NULL, NULL, 0, 0, 1024 /*cap*/);
        fx_run(fx);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.err, AF_ERR_TOO_LARGE);
        assert_false(r.retriable);
}

static void test_unanswered_request_times_out_and_server_sees_close(void **state) {
        fx_t *fx = *state;
        result_t r;
        send_one(fx, &r, "GET", "/never", NULL, NULL, 0, 200 /*ms*/, 0);
        fx_run(fx);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.err, AF_ERR_TIMEOUT);
        assert_true(r.retriable);
        /* curl dropped the connection: the waiting request hears about it, once. */
        fx->watchdog_fired = false;
        af_timer_start(fx->watchdog, WATCHDOG_MS, false);
        if (fx->never_closed == 0)
                af_loop_run(fx->loop);
        af_timer_stop(fx->watchdog);
        assert_false(fx->watchdog_fired);
        assert_int_equal(fx->never_closed, 1);
        assert_null(fx->never);
}

static void test_oversize_body_gets_413_json(void **state) {
        fx_t *fx = *state;
        result_t r;
        size_t len = MAX_BODY + 1;
        char *body = malloc(len);
        memset(body, 'a', len);
        send_one(fx, &r, "POST", "/echo/x", NULL, body, len, 0, 0);
        free(body); /* the client copied it */
        fx_run(fx);
        assert_int_equal(r.err, AF_OK);
        assert_int_equal(r.status, 413);
        assert_string_equal(r.ctype, "application/json");
        assert_string_equal(json_code(r.body), "too_large");

        /* Exactly at the cap is fine. */
        body = malloc(MAX_BODY);
        memset(body, 'b', MAX_BODY);
        send_one(fx, &r, "POST", "/echo/x", NULL, body, MAX_BODY, 0, 0);
        free(body);
        fx_run(fx);
        assert_int_equal(r.status, 200);
}

static void test_unknown_route_gets_404_json(void **state) {
        fx_t *fx = *state;
        result_t r;
        send_one(fx, &r, "GET", "/nope/nothing", NULL, NULL, 0, 0, 0);
        fx_run(fx);
        assert_int_equal(r.status, 404);
        assert_string_equal(r.ctype, "application/json");
        assert_string_equal(json_code(r.body), "not_found");

        send_one(fx, &r, "DELETE", "/big", NULL, NULL, 0, 0, 0);
        fx_run(fx);
        assert_int_equal(r.status, 405);
        assert_string_equal(json_code(r.body), "method_not_allowed");
}

static void test_bad_bearer_gets_401_json(void **state) {
        fx_t *fx = *state;
        result_t r;
        const char *const bad[] = {"Authorization: Bearer wrong-token", NULL};
        const char *const good[] = {"Authorization: Bearer good-token", NULL};
        send_one(fx, &r, "GET", "/secure", bad, NULL, 0, 0, 0);
        fx_run(fx);
        assert_int_equal(r.status, 401);
        assert_string_equal(r.ctype, "application/json");
        assert_string_equal(json_code(r.body), "unauthenticated");

        send_one(fx, &r, "GET", "/secure", NULL, NULL, 0, 0, 0);
        fx_run(fx);
        assert_int_equal(r.status, 401);

        send_one(fx, &r, "GET", "/secure", good, NULL, 0, 0, 0);
        fx_run(fx);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "ok");
}

static void test_refused_connection_is_retriable_transport(void **state) {
        fx_t *fx = *state;
        result_t r;
        char url[64];
        /* A port that was just free: nothing listens there now. */
        int port = af_test_free_port();
        assert_true(port > 0);
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", port);
        af_http_request_t req = {.method = "GET", .url = url};
        memset(&r, 0, sizeof(r));
        r.fx = fx;
        assert_int_equal(af_http_client_send(fx->hc, &req, on_result, &r, NULL), AF_OK);
        fx->outstanding++;
        fx_run(fx);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.err, AF_ERR_TRANSPORT);
        assert_true(r.retriable);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_thousand_requests_in_flight_each_answered_once),
                cmocka_unit_test(test_deferred_replies_arrive),
                cmocka_unit_test(test_response_over_cap_is_too_large),
                cmocka_unit_test(test_unanswered_request_times_out_and_server_sees_close),
                cmocka_unit_test(test_oversize_body_gets_413_json),
                cmocka_unit_test(test_unknown_route_gets_404_json),
                cmocka_unit_test(test_bad_bearer_gets_401_json),
                cmocka_unit_test(test_refused_connection_is_retriable_transport),
        };
        return cmocka_run_group_tests(tests, fx_setup, fx_teardown);
}
