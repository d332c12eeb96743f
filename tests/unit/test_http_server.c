/*
 * Unit tests of http_server over loopback (driven by http_client on the same loop): request
 * accessors (decoded path, {params}, query, headers, peer, body), 400 for undecodable paths,
 * 405 vs 404, the auth hook (bearer extraction, identity attached with set_user), user data
 * freed exactly once, deferred answers whose client went away (with and without an on_close
 * hook), on_close at server destroy, refused route patterns, a busy port.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
                cmocka_unit_test_setup_teardown(test_busy_port_is_an_error, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
