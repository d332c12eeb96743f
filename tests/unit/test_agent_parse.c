/*
 * test_agent_parse: the worker reads chat-completions replies with tool calls and final
 * answers, and refuses every malformed shape with a message naming the field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

/* The worker's stage is compiled in: it is not part of libcommon. */
#include "../../worker/agent_parse.c"

static af_err_t parse(const char *body, af_chat_reply_t *r, char *errstr, size_t n) {
        return af_chat_reply_parse(body, strlen(body), r, errstr, n);
}

static void test_tool_calls_are_parsed(void **state) {
        const char *body =
                "{\"id\":\"x\",\"choices\":[{\"index\":0,\"finish_reason\":\"tool_calls\","
                "\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
                "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"rules_check\","
                "\"arguments\":\"{\\\"claim_id\\\":\\\"C1\\\",\\\"amount\\\":12}\"}},"
                "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"crm_update\","
                "\"arguments\":{\"status\":\"triaged\"}}}]}}],"
                "\"usage\":{\"prompt_tokens\":350,\"completion_tokens\":60,\"total_tokens\":410}}";
        af_chat_reply_t r;
        char errstr[256] = "";
        assert_int_equal(parse(body, &r, errstr, sizeof(errstr)), AF_OK);
        assert_int_equal(r.call_cnt, 2);
        assert_null(r.content);
        assert_string_equal(r.finish_reason, "tool_calls");
        assert_string_equal(r.calls[0].id, "call_1");
        assert_string_equal(r.calls[0].name, "rules_check");
        assert_string_equal(json_string_value(json_object_get(r.calls[0].args, "claim_id")), "C1");
        assert_int_equal(json_integer_value(json_object_get(r.calls[0].args, "amount")), 12);
        assert_string_equal(r.calls[1].name, "crm_update");
        assert_string_equal(json_string_value(json_object_get(r.calls[1].args, "status")),
                            "triaged");
        assert_int_equal(r.prompt_tokens, 350);
        assert_int_equal(r.completion_tokens, 60);
        assert_string_equal(json_string_value(json_object_get(r.message, "role")), "assistant");
        af_chat_reply_clear(&r);
        af_chat_reply_clear(NULL);
}

static void test_final_content_is_parsed(void **state) {
        const char *body = "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":"
                           "\"{\\\"decision\\\":\\\"approve\\\",\\\"confidence\\\":0.9}\"},"
                           "\"finish_reason\":\"stop\"}]}";
        af_chat_reply_t r;
        json_t *out = NULL;
        char errstr[256] = "";
        assert_int_equal(parse(body, &r, errstr, sizeof(errstr)), AF_OK);
        assert_int_equal(r.call_cnt, 0);
        assert_int_equal(r.prompt_tokens, 0);
        assert_int_equal(af_chat_output_parse(r.content, &out, errstr, sizeof(errstr)), AF_OK);
        assert_string_equal(json_string_value(json_object_get(out, "decision")), "approve");
        json_decref(out);
        af_chat_reply_clear(&r);
}

static void test_bad_tool_arguments_are_kept_for_the_model(void **state) {
        const char *body = "{\"choices\":[{\"message\":{\"tool_calls\":["
                           "{\"id\":\"c1\",\"function\":{\"name\":\"t\",\"arguments\":\"{oops\"}},"
                           "{\"id\":\"c2\",\"function\":{\"name\":\"t\",\"arguments\":\"[1]\"}},"
                           "{\"id\":\"c3\",\"function\":{\"name\":\"t\",\"arguments\":\"\"}}]}}]}";
        af_chat_reply_t r;
        char errstr[256] = "";
        assert_int_equal(parse(body, &r, errstr, sizeof(errstr)), AF_OK);
        assert_int_equal(r.call_cnt, 3);
        assert_null(r.calls[0].args);
        assert_non_null(strstr(r.calls[0].args_error, "not valid JSON"));
        assert_null(r.calls[1].args);
        assert_non_null(strstr(r.calls[1].args_error, "must be a JSON object"));
        assert_non_null(r.calls[2].args);
        assert_int_equal(json_object_size(r.calls[2].args), 0);
        af_chat_reply_clear(&r);
}

static void expect_invalid(const char *body, const char *needle) {
        af_chat_reply_t r;
        char errstr[256] = "";
        assert_int_equal(parse(body, &r, errstr, sizeof(errstr)), AF_ERR_INVALID);
        if (!strstr(errstr, needle))
                fail_msg("errstr \"%s\" lacks \"%s\"", errstr, needle);
        /* A failed parse leaves nothing to free. */
        assert_null(r.root);
        assert_null(r.calls);
}

static void test_malformed_replies_are_precise(void **state) {
        expect_invalid("not json", "not JSON");
        expect_invalid("", "not JSON");
        expect_invalid("[1,2]", "not a JSON object");
        expect_invalid("{}", "choices: missing or empty");
        expect_invalid("{\"choices\":[]}", "choices: missing or empty");
        expect_invalid("{\"choices\":[{}]}", "choices[0].message: missing");
        expect_invalid("{\"choices\":[{\"message\":{\"content\":7}}]}",
                       "choices[0].message.content: not a string");
        expect_invalid("{\"choices\":[{\"message\":{\"role\":\"assistant\"},"
                       "\"finish_reason\":\"length\"}]}",
                       "neither content nor tool_calls (finish_reason length)");
        expect_invalid("{\"choices\":[{\"message\":{\"tool_calls\":{}}}]}",
                       "tool_calls: not an array");
        expect_invalid("{\"choices\":[{\"message\":{\"tool_calls\":[{\"function\":"
                       "{\"name\":\"x\"}}]}}]}",
                       "tool_calls[0].id: missing");
        expect_invalid("{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"a\","
                       "\"function\":{\"name\":\"x\"}},{\"id\":\"b\",\"function\":{}}]}}]}",
                       "tool_calls[1].function.name: missing");
        expect_invalid("{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"a\"}]}}]}",
                       "tool_calls[0].function: missing");
        expect_invalid("{\"choices\":[{\"message\":{\"content\":\"x\"}}],"
                       "\"usage\":{\"prompt_tokens\":-5}}",
                       "negative token count");
}

static void test_final_answer_must_be_a_json_object(void **state) {
        json_t *out = (json_t *) 1;
        char errstr[256] = "";
        assert_int_equal(
                af_chat_output_parse("I approve this claim.", &out, errstr, sizeof(errstr)),
                AF_ERR_INVALID);
        assert_null(out);
        assert_non_null(strstr(errstr, "final answer is not JSON"));
        assert_int_equal(af_chat_output_parse("[\"approve\"]", &out, errstr, sizeof(errstr)),
                         AF_ERR_INVALID);
        assert_non_null(strstr(errstr, "not an object"));
        assert_int_equal(af_chat_output_parse(NULL, &out, errstr, sizeof(errstr)), AF_ERR_INVALID);
}

static void test_fenced_final_answer_is_accepted(void **state) {
        json_t *out = NULL;
        char errstr[256] = "";
        assert_int_equal(af_chat_output_parse("```json\n{\"decision\":\"deny\"}\n```\n", &out,
                                              errstr, sizeof(errstr)),
                         AF_OK);
        assert_string_equal(json_string_value(json_object_get(out, "decision")), "deny");
        json_decref(out);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_tool_calls_are_parsed),
                cmocka_unit_test(test_final_content_is_parsed),
                cmocka_unit_test(test_bad_tool_arguments_are_kept_for_the_model),
                cmocka_unit_test(test_malformed_replies_are_precise),
                cmocka_unit_test(test_final_answer_must_be_a_json_object),
                cmocka_unit_test(test_fenced_final_answer_is_accepted),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
