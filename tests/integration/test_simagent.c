/*
 * test_simagent: the real agentfleet-simagent binary, started on an ephemeral port and driven
 * over HTTP with libcommon's http_client, answers the claims-triage conversation, serves the
 * integrations with exact side-effect accounting (replays, duplicates, stale fences), and
 * injects the faults it is told to (429 with Retry-After, 5xx, hangs, bad API key).
 * It needs neither Kafka nor Redis, so it never skips.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "http_client.h"
#include "loop.h"

#define MAX_ARGS 16

/* One running simagent process. */
typedef struct sim_proc_s {
        pid_t pid;
        int port;
        char out_path[600]; /* its stdout: the "listening" line */
        char base[64];      /* http://127.0.0.1:port */
} sim_proc_t;

static af_loop_t *loop;
static af_http_client_t *hc;
static sim_proc_t sim; /* the default instance, shared by most tests */

/* ---- process --------------------------------------------------------------------------- */

/* Start the binary with --port 0 and extra arguments (NULL-terminated); wait for its
 * listening line. Fails the test if it does not come within 20 s. */
static void sim_start(sim_proc_t *p, const char *const *extra) {
        const char *bindir = getenv("AF_BINARY_DIR");
        char bin[512];
        const char *argv[MAX_ARGS + 4];
        int argc = 0;
        FILE *f;
        char line[512];

        snprintf(bin, sizeof(bin), "%s/agentfleet-simagent", bindir ? bindir : ".");
        assert_int_equal(access(bin, X_OK), 0);
        snprintf(p->out_path, sizeof(p->out_path), "%s/test_simagent.out.XXXXXX",
                 bindir ? bindir : ".");
        int fd = mkstemp(p->out_path);
        assert_true(fd >= 0);

        argv[argc++] = bin;
        argv[argc++] = "--port";
        argv[argc++] = "0";
        for (int i = 0; extra && extra[i] && argc < MAX_ARGS; i++)
                argv[argc++] = extra[i];
        argv[argc] = NULL;

        p->pid = fork();
        assert_true(p->pid >= 0);
        if (p->pid == 0) {
                /* Die with the test, even when an assertion ends it early. */
                prctl(PR_SET_PDEATHSIG, SIGTERM);
                dup2(fd, STDOUT_FILENO);
                execv(bin, (char *const *) argv);
                _exit(127);
        }
        close(fd);
        p->port = 0;
        for (int tries = 0; tries < 400 && !p->port; tries++) {
                struct timespec ts = {0, 50 * 1000 * 1000};
                int status;
                if ((f = fopen(p->out_path, "r"))) {
                        while (fgets(line, sizeof(line), f)) {
                                char *s = strstr(line, "\"port\":");
                                if (strstr(line, "\"listening\"") && s)
                                        p->port = atoi(s + 7);
                        }
                        fclose(f);
                }
                assert_int_equal(waitpid(p->pid, &status, WNOHANG), 0); /* still alive */
                if (!p->port)
                        nanosleep(&ts, NULL);
        }
        assert_true(p->port > 0);
        snprintf(p->base, sizeof(p->base), "http://127.0.0.1:%d", p->port);
}

/* SIGTERM it; it must exit 0. */
static void sim_stop(sim_proc_t *p) {
        int status = -1;

        assert_int_equal(kill(p->pid, SIGTERM), 0);
        assert_int_equal(waitpid(p->pid, &status, 0), p->pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        unlink(p->out_path);
}

/* ---- HTTP, synchronously on the loop ------------------------------------------------------ */

typedef struct call_s {
        int pending; /* calls not yet answered (shared by a batch) */
        af_err_t err;
        int status;
        json_t *body; /* parsed response, or NULL */
        int64_t retry_after_ms;
        char raw[64];    /* the body as sent (truncated), for exact-answer checks */
        char ctype[64];  /* Content-Type, or "" */
        int *batch_left; /* for batches: counter to decrement, else NULL */
} call_t;

static void call_done(const af_http_response_t *resp, const af_error_t *err, void *opaque) {
        call_t *c = opaque;

        c->err = err->err;
        if (resp) {
                c->status = resp->status;
                c->body = json_loadb(resp->body, resp->body_len, 0, NULL);
                c->retry_after_ms = resp->retry_after_ms;
                snprintf(c->raw, sizeof(c->raw), "%.*s", (int) resp->body_len, resp->body);
                snprintf(c->ctype, sizeof(c->ctype), "%s",
                         resp->content_type ? resp->content_type : "");
        }
        if (--*c->batch_left == 0)
                af_loop_stop(loop);
}

/* Start one request; headers is a NULL-terminated "Name: value" list or NULL. */
static void call_start(call_t *c, int *left, const sim_proc_t *p, const char *method,
                       const char *path, const char *const *headers, const char *body,
                       int64_t timeout_ms) {
        char url[256];
        af_http_request_t req = {
                .method = method,
                .url = url,
                .headers = headers,
                .body = body,
                .body_len = body ? strlen(body) : 0,
                .timeout_ms = timeout_ms,
        };

        memset(c, 0, sizeof(*c));
        c->batch_left = left;
        snprintf(url, sizeof(url), "%s%s", p->base, path);
        assert_int_equal(af_http_client_send(hc, &req, call_done, c, NULL), AF_OK);
        (*left)++;
}

static void call_wait(int *left) {
        while (*left > 0)
                assert_int_equal(af_loop_run(loop), 0);
}

/* One request, answered. @returns the status; *bodyp gets the parsed body (caller decrefs). */
static int http(const sim_proc_t *p, const char *method, const char *path,
                const char *const *headers, const char *body, json_t **bodyp) {
        call_t c;
        int left = 0;

        call_start(&c, &left, p, method, path, headers, body, 10000);
        call_wait(&left);
        assert_int_equal(c.err, AF_OK);
        if (bodyp)
                *bodyp = c.body;
        else
                json_decref(c.body);
        return c.status;
}

static json_t *stats(const sim_proc_t *p) {
        json_t *s = NULL;

        assert_int_equal(http(p, "GET", "/stats", NULL, NULL, &s), 200);
        assert_non_null(s);
        return s;
}

static json_int_t stat_of(json_t *s, const char *name) {
        json_t *v = json_object_get(s, name);

        assert_true(json_is_integer(v));
        return json_integer_value(v);
}

static void reset(const sim_proc_t *p) {
        assert_int_equal(http(p, "POST", "/stats/reset", NULL, NULL, NULL), 200);
}

/* ---- the claims conversation --------------------------------------------------------------- */

#define TOOLS                                                                                      \
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"rules_check\","                \
        "\"parameters\":{\"type\":\"object\"}}},{\"type\":\"function\",\"function\":"              \
        "{\"name\":\"crm_update\"}},{\"type\":\"function\",\"function\":"                          \
        "{\"name\":\"ticket_create\"}}]"

#define CLAIM                                                                                      \
        "{\\\"claim_id\\\":\\\"CLM-1001\\\",\\\"amount\\\":740.25,\\\"currency\\\":\\\"EUR\\\","   \
        "\\\"diagnosis_codes\\\":[\\\"S93.4\\\"],\\\"service_date\\\":\\\"2024-11-02\\\"}"

#define FIRST_TURN                                                                                 \
        "{\"model\":\"sim-triage-1\",\"temperature\":0,\"messages\":["                             \
        "{\"role\":\"system\",\"content\":\"You triage health insurance claims.\"},"               \
        "{\"role\":\"user\",\"content\":\"" CLAIM "\"}]," TOOLS "}"

static const char *const json_headers[] = {"Content-Type: application/json", NULL};

static json_t *tool_call(json_t *resp, size_t i, const char **namep) {
        json_t *call = json_array_get(
                json_object_get(json_object_get(json_array_get(json_object_get(resp, "choices"), 0),
                                                "message"),
                                "tool_calls"),
                i);
        json_t *fn = json_object_get(call, "function");
        json_t *args;

        *namep = json_string_value(json_object_get(fn, "name"));
        args = json_loads(json_string_value(json_object_get(fn, "arguments")), 0, NULL);
        assert_non_null(args); /* arguments are a JSON string that parses */
        return args;
}

static void test_chat_with_tools_returns_tool_calls(void **state) {
        json_t *resp = NULL, *args;
        const char *name;

        assert_int_equal(
                http(&sim, "POST", "/v1/chat/completions", json_headers, FIRST_TURN, &resp), 200);
        assert_non_null(resp);
        assert_string_equal(json_string_value(json_object_get(resp, "object")), "chat.completion");
        assert_string_equal(
                json_string_value(json_object_get(
                        json_array_get(json_object_get(resp, "choices"), 0), "finish_reason")),
                "tool_calls");
        args = tool_call(resp, 0, &name);
        assert_string_equal(name, "rules_check");
        assert_string_equal(json_string_value(json_object_get(args, "claim_id")), "CLM-1001");
        json_decref(args);
        args = tool_call(resp, 1, &name);
        assert_string_equal(name, "crm_update");
        assert_string_equal(json_string_value(json_object_get(args, "status")), "triaged");
        assert_string_equal(json_string_value(json_object_get(args, "claim_id")), "CLM-1001");
        json_decref(args);
        assert_true(json_integer_value(
                            json_object_get(json_object_get(resp, "usage"), "total_tokens")) > 0);
        json_decref(resp);
}

static void test_follow_up_with_tool_results_returns_final_json(void **state) {
        const char *body =
                "{\"model\":\"sim-triage-1\",\"messages\":["
                "{\"role\":\"system\",\"content\":\"You triage health insurance claims.\"},"
                "{\"role\":\"user\",\"content\":\"" CLAIM "\"},"
                "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
                "{\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"rules_check\","
                "\"arguments\":\"{}\"}},"
                "{\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"crm_update\","
                "\"arguments\":\"{}\"}}]},"
                "{\"role\":\"tool\",\"tool_call_id\":\"call_a\",\"content\":"
                "\"{\\\"passed\\\":true,\\\"violations\\\":[]}\"},"
                "{\"role\":\"tool\",\"tool_call_id\":\"call_b\",\"content\":"
                "\"{\\\"applied\\\":true}\"}]," TOOLS "}";
        json_t *resp = NULL, *msg, *out;
        const char *decision;

        assert_int_equal(http(&sim, "POST", "/v1/chat/completions", json_headers, body, &resp),
                         200);
        msg = json_object_get(json_array_get(json_object_get(resp, "choices"), 0), "message");
        assert_null(json_object_get(msg, "tool_calls"));
        out = json_loads(json_string_value(json_object_get(msg, "content")), 0, NULL);
        assert_non_null(out);
        decision = json_string_value(json_object_get(out, "decision"));
        assert_string_equal(decision, "approve");
        assert_string_equal(json_string_value(json_object_get(out, "claim_id")), "CLM-1001");
        assert_true(json_number_value(json_object_get(out, "confidence")) > 0 &&
                    json_number_value(json_object_get(out, "confidence")) <= 1);
        json_decref(out);
        json_decref(resp);
}

static void test_same_request_same_answer(void **state) {
        json_t *a = NULL, *b = NULL;

        assert_int_equal(http(&sim, "POST", "/v1/chat/completions", json_headers, FIRST_TURN, &a),
                         200);
        assert_int_equal(http(&sim, "POST", "/v1/chat/completions", json_headers, FIRST_TURN, &b),
                         200);
        assert_string_not_equal(json_string_value(json_object_get(a, "id")),
                                json_string_value(json_object_get(b, "id")));
        json_object_del(a, "id");
        json_object_del(b, "id");
        json_object_del(a, "created");
        json_object_del(b, "created");
        assert_true(json_equal(a, b));
        json_decref(a);
        json_decref(b);
}

static void test_malformed_chat_gets_openai_400(void **state) {
        const char *bodies[] = {
                "{\"model\": \"sim-triage-1\", \"messages\": [",
                "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                "{\"model\":\"sim-triage-1\"}",
        };

        for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
                json_t *resp = NULL, *err;
                assert_int_equal(
                        http(&sim, "POST", "/v1/chat/completions", json_headers, bodies[i], &resp),
                        400);
                err = json_object_get(resp, "error");
                assert_true(json_is_object(err));
                assert_true(json_string_length(json_object_get(err, "message")) > 0);
                assert_string_equal(json_string_value(json_object_get(err, "type")),
                                    "invalid_request_error");
                assert_true(json_is_string(json_object_get(err, "code")));
                json_decref(resp);
        }
}

/* ---- integrations and side-effect accounting ---------------------------------------------- */

static void test_rules_check_reports_violations(void **state) {
        json_t *resp = NULL;

        assert_int_equal(http(&sim, "POST", "/rules/check", json_headers,
                              "{\"claim_id\":\"CLM-2\",\"amount\":0,\"currency\":\"EUR\","
                              "\"diagnosis_codes\":[\"S93.4\"],\"service_date\":\"2024-01-01\"}",
                              &resp),
                         200);
        assert_true(json_is_false(json_object_get(resp, "passed")));
        assert_int_equal(json_array_size(json_object_get(resp, "violations")), 1);
        json_decref(resp);
        assert_int_equal(http(&sim, "POST", "/rules/check", json_headers, "{oops", &resp), 400);
        assert_string_equal(json_string_value(json_object_get(resp, "code")), "invalid_json");
        json_decref(resp);
}

static void test_same_key_twice_is_applied_once(void **state) {
        const char *const h1[] = {"Idempotency-Key: task-1", "X-Agentfleet-Task: task-1",
                                  "X-Agentfleet-Fence: 1", NULL};
        const char *body = "{\"claim_id\":\"CLM-7\",\"status\":\"triaged\"}";
        json_t *a = NULL, *b = NULL, *s;

        reset(&sim);
        assert_int_equal(http(&sim, "POST", "/crm/claims/CLM-7", h1, body, &a), 200);
        assert_int_equal(http(&sim, "POST", "/crm/claims/CLM-7", h1, body, &b), 200);
        assert_true(json_equal(a, b)); /* the replay is the stored answer */
        s = stats(&sim);
        assert_int_equal(stat_of(s, "applied"), 1);
        assert_int_equal(stat_of(s, "replayed"), 1);
        assert_int_equal(stat_of(s, "duplicates"), 0);
        assert_int_equal(stat_of(s, "max_fence"), 1);
        json_decref(s);
        json_decref(a);
        json_decref(b);
}

static void test_other_key_same_claim_is_a_duplicate(void **state) {
        const char *const h1[] = {"Idempotency-Key: task-1", NULL};
        const char *const h2[] = {"Idempotency-Key: task-2", NULL};
        const char *const t1[] = {"Idempotency-Key: tk-1", NULL};
        const char *const t2[] = {"Idempotency-Key: tk-1", NULL};
        const char *body = "{\"claim_id\":\"CLM-8\",\"status\":\"triaged\"}";
        json_t *s, *t = NULL;

        reset(&sim);
        assert_int_equal(http(&sim, "POST", "/crm/claims/CLM-8", h1, body, NULL), 200);
        assert_int_equal(http(&sim, "POST", "/crm/claims/CLM-8", h2, body, NULL), 200);
        assert_int_equal(http(&sim, "POST", "/tickets", t1, body, &t), 201);
        assert_true(json_is_string(json_object_get(t, "ticket_id")));
        json_decref(t);
        assert_int_equal(http(&sim, "POST", "/tickets", t2, body, NULL), 201);
        s = stats(&sim);
        assert_int_equal(stat_of(s, "applied"), 3);
        assert_int_equal(stat_of(s, "replayed"), 1);
        assert_int_equal(stat_of(s, "duplicates"), 1);
        assert_int_equal(json_integer_value(
                                 json_object_get(json_object_get(s, "endpoints"), "ticket_create")),
                         2);
        json_decref(s);
}

static void test_stale_fence_is_refused_409(void **state) {
        const char *const h5[] = {"Idempotency-Key: T9", "X-Agentfleet-Task: T9",
                                  "X-Agentfleet-Fence: 5", NULL};
        const char *const h3[] = {"Idempotency-Key: T9-stale", "X-Agentfleet-Task: T9",
                                  "X-Agentfleet-Fence: 3", NULL};
        const char *const bad[] = {"X-Agentfleet-Fence: five", NULL};
        const char *body = "{\"status\":\"triaged\"}";
        json_t *resp = NULL, *s;

        reset(&sim);
        assert_int_equal(http(&sim, "POST", "/crm/claims/CLM-9", h5, body, NULL), 200);
        assert_int_equal(http(&sim, "POST", "/crm/claims/CLM-9", h3, body, &resp), 409);
        assert_string_equal(json_string_value(json_object_get(resp, "code")), "fenced");
        json_decref(resp);
        assert_int_equal(http(&sim, "POST", "/crm/claims/CLM-9", bad, body, NULL), 400);
        s = stats(&sim);
        assert_int_equal(stat_of(s, "applied"), 1);
        assert_int_equal(stat_of(s, "fenced"), 1);
        assert_int_equal(stat_of(s, "duplicates"), 0);
        assert_int_equal(stat_of(s, "max_fence"), 5);
        json_decref(s);
}

static void test_many_delayed_requests_in_flight(void **state) {
        enum { N = 200 };
        static call_t calls[N];
        int left = 0;
        json_t *s;

        reset(&sim);
        for (int i = 0; i < N; i++)
                call_start(&calls[i], &left, &sim, "POST", i % 2 ? "/noop" : "/rules/check",
                           json_headers, "{}", 10000);
        call_wait(&left);
        for (int i = 0; i < N; i++) {
                assert_int_equal(calls[i].err, AF_OK);
                assert_int_equal(calls[i].status, 200);
                json_decref(calls[i].body);
        }
        s = stats(&sim);
        assert_int_equal(stat_of(s, "requests"), N);
        assert_int_equal(stat_of(s, "applied"), 0); /* neither has side effects */
        json_decref(s);
}

/* /noop answers a constant without a JSON tree: the exact bytes, its content type, its
 * counters, and its route (first in the table) still refusing other methods. */
static void test_noop_answers_ok_and_is_counted(void **state) {
        const char *const idem[] = {"Content-Type: application/json", "Idempotency-Key: k-noop",
                                    "X-Agentfleet-Fence: 3", NULL};
        call_t c;
        int left = 0;
        json_t *s;

        reset(&sim);
        for (int i = 0; i < 2; i++) {
                call_start(&c, &left, &sim, "POST", "/noop", idem, "{\"claim_id\":\"C-1\"}", 10000);
                call_wait(&left);
                assert_int_equal(c.err, AF_OK);
                assert_int_equal(c.status, 200);
                assert_string_equal(c.raw, "{\"ok\":true}");
                assert_string_equal(c.ctype, "application/json");
                json_decref(c.body);
        }
        assert_int_equal(http(&sim, "GET", "/noop", NULL, NULL, NULL), 405);
        s = stats(&sim);
        assert_int_equal(stat_of(s, "requests"), 2);
        assert_int_equal(
                json_integer_value(json_object_get(json_object_get(s, "endpoints"), "noop")), 2);
        /* No side effect: an Idempotency-Key on /noop is neither applied nor replayed. */
        assert_int_equal(stat_of(s, "applied"), 0);
        assert_int_equal(stat_of(s, "replayed"), 0);
        json_decref(s);
}

/* Faults never touch /noop: it stays a pure measure of agentfleet's own overhead. */
static void test_noop_is_never_faulted(void **state) {
        const char *const args[] = {"--set", "simagent.error_rate=1000", "--set",
                                    "simagent.timeout_rate=1000", NULL};
        sim_proc_t p;
        call_t c;
        int left = 0;
        json_t *s;

        sim_start(&p, args);
        for (int i = 0; i < 3; i++) {
                call_start(&c, &left, &p, "POST", "/noop", json_headers, "{}", 10000);
                call_wait(&left);
                assert_int_equal(c.err, AF_OK);
                assert_int_equal(c.status, 200);
                assert_string_equal(c.raw, "{\"ok\":true}");
                json_decref(c.body);
        }
        s = stats(&p);
        assert_int_equal(
                json_integer_value(json_object_get(json_object_get(s, "faults"), "timeouts")), 0);
        assert_int_equal(
                json_integer_value(json_object_get(json_object_get(s, "faults"), "errors")), 0);
        json_decref(s);
        sim_stop(&p);
}

static void test_healthz_and_models(void **state) {
        json_t *resp = NULL;

        assert_int_equal(http(&sim, "GET", "/healthz", NULL, NULL, &resp), 200);
        assert_string_equal(json_string_value(json_object_get(resp, "status")), "ok");
        json_decref(resp);
        assert_int_equal(http(&sim, "GET", "/v1/models", NULL, NULL, &resp), 200);
        assert_true(json_array_size(json_object_get(resp, "data")) > 0);
        json_decref(resp);
        assert_int_equal(http(&sim, "GET", "/no/such/thing", NULL, NULL, NULL), 404);
}

/* ---- faults: separate instances ----------------------------------------------------------- */

static void test_rate429_mode_sends_retry_after(void **state) {
        const char *const args[] = {"--set", "simagent.rate429=1000", "--set",
                                    "simagent.retry_after=2s", NULL};
        sim_proc_t p;
        call_t c;
        int left = 0;
        json_t *s;

        sim_start(&p, args);
        call_start(&c, &left, &p, "POST", "/v1/chat/completions", json_headers, FIRST_TURN, 10000);
        call_wait(&left);
        assert_int_equal(c.status, 429);
        assert_int_equal(c.retry_after_ms, 2000);
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(c.body, "error"), "code")),
                "rate_limit_exceeded");
        json_decref(c.body);
        call_start(&c, &left, &p, "POST", "/crm/claims/C-1", json_headers, "{}", 10000);
        call_wait(&left);
        assert_int_equal(c.status, 429);
        json_decref(c.body);
        s = stats(&p);
        assert_int_equal(
                json_integer_value(json_object_get(json_object_get(s, "faults"), "rate_limited")),
                2);
        assert_int_equal(stat_of(s, "applied"), 0); /* refused calls apply nothing */
        json_decref(s);
        sim_stop(&p);
}

static void test_error_and_hang_modes(void **state) {
        const char *const err_args[] = {"--set", "simagent.error_rate=1000", NULL};
        const char *const hang_args[] = {"--set", "simagent.timeout_rate=1000", NULL};
        sim_proc_t p;
        call_t c;
        int left = 0;
        json_t *s;

        sim_start(&p, err_args);
        assert_in_range(http(&p, "POST", "/rules/check", json_headers, "{}", NULL), 500, 503);
        sim_stop(&p);

        sim_start(&p, hang_args);
        call_start(&c, &left, &p, "POST", "/tickets", json_headers, "{}", 300 /*ms*/);
        call_wait(&left);
        assert_int_equal(c.err, AF_ERR_TIMEOUT);
        s = stats(&p);
        assert_int_equal(
                json_integer_value(json_object_get(json_object_get(s, "faults"), "timeouts")), 1);
        json_decref(s);
        /* The client gave up and closed: the simagent notices (EV_CLOSED on its epoll
         * changelist) and drops the parked request. */
        for (int tries = 0; tries < 100; tries++) {
                struct timespec ts = {0, 20 * 1000 * 1000};
                json_int_t in_flight;
                s = stats(&p);
                in_flight = stat_of(s, "in_flight");
                json_decref(s);
                if (in_flight == 0)
                        break;
                assert_true(tries < 99);
                nanosleep(&ts, NULL);
        }
        sim_stop(&p); /* a parked request must not keep it from stopping */
}

static void test_api_key_is_enforced(void **state) {
        const char *const args[] = {"--set", "simagent.api_key=sk-sim-test-key", NULL};
        const char *const good[] = {"Authorization: Bearer sk-sim-test-key", NULL};
        const char *const wrong[] = {"Authorization: Bearer sk-nope", NULL};
        sim_proc_t p;
        json_t *resp = NULL;

        sim_start(&p, args);
        assert_int_equal(http(&p, "POST", "/v1/chat/completions", NULL, FIRST_TURN, &resp), 401);
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(resp, "error"), "code")),
                "invalid_api_key");
        json_decref(resp);
        assert_int_equal(http(&p, "POST", "/v1/chat/completions", wrong, FIRST_TURN, NULL), 401);
        assert_int_equal(http(&p, "POST", "/v1/chat/completions", good, FIRST_TURN, NULL), 200);
        /* Integrations are not behind the LLM's key. */
        assert_int_equal(http(&p, "POST", "/noop", NULL, "{}", NULL), 200);
        sim_stop(&p);
}

static int setup(void **state) {
        char errstr[256];
        af_http_client_opts_t co = {.default_timeout_ms = 10000};

        loop = af_loop_new(errstr, sizeof(errstr));
        if (!loop)
                return -1;
        hc = af_http_client_new(loop, &co, errstr, sizeof(errstr));
        if (!hc)
                return -1;
        sim_start(&sim, NULL);
        return 0;
}

static int teardown(void **state) {
        sim_stop(&sim);
        af_http_client_destroy(hc);
        af_loop_destroy(loop);
        return 0;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_chat_with_tools_returns_tool_calls),
                cmocka_unit_test(test_follow_up_with_tool_results_returns_final_json),
                cmocka_unit_test(test_same_request_same_answer),
                cmocka_unit_test(test_malformed_chat_gets_openai_400),
                cmocka_unit_test(test_rules_check_reports_violations),
                cmocka_unit_test(test_same_key_twice_is_applied_once),
                cmocka_unit_test(test_other_key_same_claim_is_a_duplicate),
                cmocka_unit_test(test_stale_fence_is_refused_409),
                cmocka_unit_test(test_many_delayed_requests_in_flight),
                cmocka_unit_test(test_noop_answers_ok_and_is_counted),
                cmocka_unit_test(test_healthz_and_models),
                cmocka_unit_test(test_rate429_mode_sends_retry_after),
                cmocka_unit_test(test_error_and_hang_modes),
                cmocka_unit_test(test_noop_is_never_faulted),
                cmocka_unit_test(test_api_key_is_enforced),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
