/*
 * test_simagent_chat: simagent's chat-completions model answers the claims-triage
 * conversation the way the worker's agent loop expects (tool_calls first, a JSON decision
 * after the tool results), deterministically, and refuses malformed requests like OpenAI.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../simagent/chat.c"
#include "../../simagent/faults.c"
#include "../../simagent/rules.c"

#define NOW_MS 1749988800000LL /* 2025-06-15 */

#define TOOLS                                                                                      \
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"rules_check\"}},"              \
        "{\"type\":\"function\",\"function\":{\"name\":\"crm_update\"}},"                          \
        "{\"type\":\"function\",\"function\":{\"name\":\"ticket_create\"}}]"

#define GOOD_CLAIM                                                                                 \
        "{\\\"claim_id\\\":\\\"C-7\\\",\\\"amount\\\":900,\\\"currency\\\":\\\"EUR\\\","           \
        "\\\"diagnosis_codes\\\":[\\\"J20.9\\\"],\\\"service_date\\\":\\\"2025-05-01\\\"}"

#define BIG_CLAIM                                                                                  \
        "{\\\"claim_id\\\":\\\"C-8\\\",\\\"amount\\\":25000,\\\"currency\\\":\\\"EUR\\\","         \
        "\\\"diagnosis_codes\\\":[\\\"J20.9\\\"],\\\"service_date\\\":\\\"2025-05-01\\\"}"

#define BAD_CLAIM "{\\\"claim_id\\\":\\\"C-9\\\",\\\"amount\\\":-1,\\\"currency\\\":\\\"EUR\\\"}"

static const af_sim_chat_opts_t opts = {
        .seed = 42,
        .prompt_tokens = 350,
        .completion_tokens = 60,
        .now_ms = NOW_MS,
};

static json_t *respond(const af_sim_chat_opts_t *o, const char *body, int want_status) {
        af_sim_chat_reply_t r;

        af_sim_chat_respond(o, body, strlen(body), "chatcmpl-test", 1700000000, &r);
        assert_non_null(r.body);
        assert_int_equal(r.status, want_status);
        return r.body;
}

static json_t *first_message(json_t *resp) {
        return json_object_get(json_array_get(json_object_get(resp, "choices"), 0), "message");
}

static const char *finish_reason(json_t *resp) {
        return json_string_value(json_object_get(
                json_array_get(json_object_get(resp, "choices"), 0), "finish_reason"));
}

/* The final answer's content parsed as JSON (new reference). */
static json_t *final_content(json_t *resp) {
        const char *text = json_string_value(json_object_get(first_message(resp), "content"));
        json_t *doc;

        assert_non_null(text);
        assert_string_equal(finish_reason(resp), "stop");
        doc = json_loads(text, 0, NULL);
        assert_non_null(doc);
        return doc;
}

static void test_first_turn_calls_rules_check_and_crm_update(void **state) {
        json_t *resp = respond(&opts,
                               "{\"model\":\"sim-triage-1\",\"messages\":["
                               "{\"role\":\"system\",\"content\":\"Triage the claim.\"},"
                               "{\"role\":\"user\",\"content\":\"" GOOD_CLAIM "\"}]," TOOLS "}",
                               200);
        json_t *calls = json_object_get(first_message(resp), "tool_calls");
        json_t *args0, *args1;

        assert_string_equal(json_string_value(json_object_get(resp, "object")), "chat.completion");
        assert_string_equal(finish_reason(resp), "tool_calls");
        assert_int_equal(json_array_size(calls), 2);
        assert_string_equal(json_string_value(json_object_get(json_array_get(calls, 0), "type")),
                            "function");
        assert_string_equal(json_string_value(json_object_get(
                                    json_object_get(json_array_get(calls, 0), "function"), "name")),
                            "rules_check");
        args0 = json_loads(
                json_string_value(json_object_get(
                        json_object_get(json_array_get(calls, 0), "function"), "arguments")),
                0, NULL);
        args1 = json_loads(
                json_string_value(json_object_get(
                        json_object_get(json_array_get(calls, 1), "function"), "arguments")),
                0, NULL);
        assert_non_null(args0);
        assert_non_null(args1);
        assert_string_equal(json_string_value(json_object_get(args0, "claim_id")), "C-7");
        assert_int_equal(json_integer_value(json_object_get(args0, "amount")), 900);
        assert_string_equal(json_string_value(json_object_get(args1, "claim_id")), "C-7");
        assert_string_equal(json_string_value(json_object_get(args1, "status")), "triaged");
        assert_true(json_is_string(json_object_get(json_array_get(calls, 1), "id")));
        json_decref(args0);
        json_decref(args1);
        json_decref(resp);
}

static void test_only_offered_tools_are_called(void **state) {
        json_t *resp = respond(&opts,
                               "{\"model\":\"sim-triage-1\",\"messages\":["
                               "{\"role\":\"user\",\"content\":\"Please triage: " GOOD_CLAIM
                               " thanks\"}],\"tools\":[{\"type\":\"function\",\"function\":"
                               "{\"name\":\"crm_update\"}}]}",
                               200);
        json_t *calls = json_object_get(first_message(resp), "tool_calls");

        assert_int_equal(json_array_size(calls), 1);
        assert_string_equal(json_string_value(json_object_get(
                                    json_object_get(json_array_get(calls, 0), "function"), "name")),
                            "crm_update");
        json_decref(resp);

        /* No tools at all: straight to the decision. */
        resp = respond(&opts,
                       "{\"model\":\"sim-triage-1\",\"messages\":[{\"role\":\"user\","
                       "\"content\":\"" GOOD_CLAIM "\"}]}",
                       200);
        json_t *out = final_content(resp);
        assert_string_equal(json_string_value(json_object_get(out, "decision")), "approve");
        json_decref(out);
        json_decref(resp);
}

/* A second turn: the claim, the model's tool calls, and tool results. */
static json_t *second_turn(const af_sim_chat_opts_t *o, const char *claim,
                           const char *rules_result) {
        char body[4096];

        snprintf(body, sizeof(body),
                 "{\"model\":\"sim-triage-1\",\"messages\":["
                 "{\"role\":\"user\",\"content\":\"%s\"},"
                 "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\","
                 "\"type\":\"function\",\"function\":{\"name\":\"rules_check\","
                 "\"arguments\":\"{}\"}}]},"
                 "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"%s\"}]," TOOLS "}",
                 claim, rules_result);
        return respond(o, body, 200);
}

static void test_tool_results_give_a_json_decision(void **state) {
        json_t *resp = second_turn(&opts, GOOD_CLAIM, "{\\\"passed\\\":true}");
        json_t *out = final_content(resp);
        double conf = json_number_value(json_object_get(out, "confidence"));

        assert_string_equal(json_string_value(json_object_get(out, "decision")), "approve");
        assert_string_equal(json_string_value(json_object_get(out, "claim_id")), "C-7");
        assert_true(conf >= 0.86 && conf <= 0.98);
        assert_true(json_is_string(json_object_get(out, "reason")));
        json_decref(out);
        json_decref(resp);
}

static void test_big_amount_goes_to_review_and_rule_failures_deny(void **state) {
        json_t *resp = second_turn(&opts, BIG_CLAIM, "{\\\"passed\\\":true}");
        json_t *out = final_content(resp);
        double conf = json_number_value(json_object_get(out, "confidence"));

        assert_string_equal(json_string_value(json_object_get(out, "decision")), "review");
        assert_true(conf >= 0.55 && conf < 0.8);
        json_decref(out);
        json_decref(resp);

        resp = second_turn(&opts, BAD_CLAIM, "{\\\"passed\\\":false}");
        out = final_content(resp);
        assert_string_equal(json_string_value(json_object_get(out, "decision")), "deny");
        assert_string_equal(json_string_value(json_object_get(out, "claim_id")), "C-9");
        json_decref(out);
        json_decref(resp);

        /* The rule check tool says no even though the claim looks fine: deny. */
        resp = second_turn(&opts, GOOD_CLAIM, "{\\\"passed\\\":false,\\\"violations\\\":[]}");
        out = final_content(resp);
        assert_string_equal(json_string_value(json_object_get(out, "decision")), "deny");
        json_decref(out);
        json_decref(resp);
}

#define FRAUD_CLAIM                                                                                \
        "{\\\"claim_id\\\":\\\"C-5\\\",\\\"amount\\\":300,\\\"currency\\\":\\\"EUR\\\","           \
        "\\\"diagnosis_codes\\\":[\\\"J20.9\\\"],\\\"service_date\\\":\\\"2025-05-01\\\","         \
        "\\\"notes\\\":\\\"Invoice looks altered, possible fraud\\\"}"

static void test_fraud_notes_open_a_ticket_and_go_to_review(void **state) {
        json_t *resp = respond(&opts,
                               "{\"model\":\"sim-triage-1\",\"messages\":[{\"role\":\"user\","
                               "\"content\":\"" FRAUD_CLAIM "\"}]," TOOLS "}",
                               200);
        json_t *calls = json_object_get(first_message(resp), "tool_calls");
        json_t *fn = json_object_get(json_array_get(calls, 2), "function");
        json_t *args, *out;

        assert_int_equal(json_array_size(calls), 3);
        assert_string_equal(json_string_value(json_object_get(fn, "name")), "ticket_create");
        args = json_loads(json_string_value(json_object_get(fn, "arguments")), 0, NULL);
        assert_string_equal(json_string_value(json_object_get(args, "type")), "fraud_suspicion");
        assert_string_equal(json_string_value(json_object_get(args, "claim_id")), "C-5");
        json_decref(args);
        json_decref(resp);

        resp = second_turn(&opts, FRAUD_CLAIM, "{\\\"passed\\\":true}");
        out = final_content(resp);
        assert_string_equal(json_string_value(json_object_get(out, "decision")), "review");
        assert_true(json_number_value(json_object_get(out, "confidence")) < 0.8);
        json_decref(out);
        json_decref(resp);
}

static void test_same_request_same_answer(void **state) {
        const char *body = "{\"model\":\"sim-triage-1\",\"messages\":[{\"role\":\"user\","
                           "\"content\":\"" GOOD_CLAIM "\"}]," TOOLS "}";
        af_sim_chat_opts_t other = opts;
        json_t *a = respond(&opts, body, 200);
        json_t *b = respond(&opts, body, 200);
        json_t *c;

        assert_true(json_equal(a, b));
        other.seed = 43;
        c = respond(&other, body, 200);
        /* Another seed: another run (tool call ids and token counts move). */
        assert_false(json_equal(a, c));
        json_decref(a);
        json_decref(b);
        json_decref(c);
}

static void test_usage_is_consistent(void **state) {
        json_t *resp = second_turn(&opts, GOOD_CLAIM, "{\\\"passed\\\":true}");
        json_t *usage = json_object_get(resp, "usage");
        json_int_t p = json_integer_value(json_object_get(usage, "prompt_tokens"));
        json_int_t c = json_integer_value(json_object_get(usage, "completion_tokens"));

        assert_int_equal(json_integer_value(json_object_get(usage, "total_tokens")), p + c);
        assert_in_range(p, 350 - 35, 350 + 35 + 40); /* 3 messages: one beyond the first two */
        assert_in_range(c, 60 - 12, 60 + 12);
        json_decref(resp);
}

static void test_generic_model_answers_ok(void **state) {
        json_t *resp = respond(&opts,
                               "{\"model\":\"gpt-4o-mini\",\"temperature\":0.2,\"messages\":"
                               "[{\"role\":\"user\",\"content\":\"hello\"}]}",
                               200);
        json_t *out = final_content(resp);

        assert_true(json_is_true(json_object_get(out, "ok")));
        assert_string_equal(json_string_value(json_object_get(resp, "model")), "gpt-4o-mini");
        json_decref(out);
        json_decref(resp);
}

/* A 400 whose error object has a message, the type invalid_request_error and this code. */
static void expect_400(const char *body, const char *code, const char *param) {
        json_t *resp = respond(&opts, body, 400);
        json_t *err = json_object_get(resp, "error");

        assert_true(json_is_string(json_object_get(err, "message")));
        assert_string_equal(json_string_value(json_object_get(err, "type")),
                            "invalid_request_error");
        assert_string_equal(json_string_value(json_object_get(err, "code")), code);
        if (param)
                assert_string_equal(json_string_value(json_object_get(err, "param")), param);
        json_decref(resp);
}

static void test_malformed_requests_get_openai_errors(void **state) {
        expect_400("{\"model\":", "invalid_json", NULL);
        expect_400("[1,2]", "invalid_json", NULL);
        expect_400("", "invalid_json", NULL);
        expect_400("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                   "missing_required_parameter", "model");
        expect_400("{\"model\":\"m\"}", "missing_required_parameter", "messages");
        expect_400("{\"model\":\"m\",\"messages\":[]}", "empty_array", "messages");
        expect_400("{\"model\":\"m\",\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}",
                   "invalid_value", "messages[0].role");
        expect_400("{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}",
                   "missing_required_parameter", "messages[0].content");
        expect_400("{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",
                   "missing_required_parameter", "messages[0].tool_call_id");
        expect_400("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                   "\"tools\":[{\"type\":\"retrieval\"}]}",
                   "invalid_value", "tools[0]");
        expect_400("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                   "\"temperature\":3}",
                   "invalid_value", "temperature");
        expect_400("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                   "\"stream\":true}",
                   "unsupported_value", "stream");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_first_turn_calls_rules_check_and_crm_update),
                cmocka_unit_test(test_only_offered_tools_are_called),
                cmocka_unit_test(test_tool_results_give_a_json_decision),
                cmocka_unit_test(test_big_amount_goes_to_review_and_rule_failures_deny),
                cmocka_unit_test(test_fraud_notes_open_a_ticket_and_go_to_review),
                cmocka_unit_test(test_same_request_same_answer),
                cmocka_unit_test(test_usage_is_consistent),
                cmocka_unit_test(test_generic_model_answers_ok),
                cmocka_unit_test(test_malformed_requests_get_openai_errors),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
