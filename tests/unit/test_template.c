/*
 * test_template: {{...}} substitution renders payload, args and task fields with the
 * encoding of where they go (URL, JSON body, header, text), and an unknown or missing
 * variable is refused with a message that names it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "template.h"

typedef struct {
        json_t *payload;
        json_t *args;
        af_template_vars_t vars;
        af_buf_t out;
        char errstr[512];
} fx_t;

static int fx_setup(void **state) {
        static fx_t fx;
        json_error_t jerr;
        memset(&fx, 0, sizeof(fx));
        fx.payload = json_loads("{\"claim_id\":\"C 1/2?\",\"amount\":172.46,\"ok\":true,"
                                "\"patient\":{\"name\":\"Zoé \\\"Z\\\"\",\"ids\":[7,8]},"
                                "\"note\":\"a\\r\\nX-Evil: 1\"}",
                                0, &jerr);
        fx.args = json_loads("{\"status\":\"triaged\"}", 0, &jerr);
        assert_non_null(fx.payload);
        assert_non_null(fx.args);
        fx.vars.payload = fx.payload;
        fx.vars.args = fx.args;
        fx.vars.task_id = "01J0TASK";
        fx.vars.tenant = "acme-health";
        fx.vars.task_type = "crm.update";
        fx.vars.attempt = 2;
        af_buf_init(&fx.out, 4096);
        *state = &fx;
        return 0;
}

static int fx_teardown(void **state) {
        fx_t *fx = *state;
        json_decref(fx->payload);
        json_decref(fx->args);
        af_buf_free(&fx->out);
        return 0;
}

static const char *render(fx_t *fx, const char *tmpl, af_template_mode_t mode, af_err_t want) {
        af_buf_reset(&fx->out);
        fx->errstr[0] = '\0';
        assert_int_equal(
                af_template_render(tmpl, mode, &fx->vars, &fx->out, fx->errstr, sizeof(fx->errstr)),
                want);
        return af_buf_str(&fx->out);
}

/* A claim's amount goes out as it came in (172.46), not as jansson's default 17 digits of its
 * nearest double (172.46000000000001), in a URL as in a body. */
static void test_numbers_keep_their_digits(void **state) {
        fx_t *fx = *state;
        assert_string_equal(render(fx, "{\"a\":{{payload.amount}}}", AF_TEMPLATE_JSON, AF_OK),
                            "{\"a\":172.46}");
        assert_non_null(
                strstr(render(fx, "{{payload}}", AF_TEMPLATE_JSON, AF_OK), "\"amount\":172.46,"));
}

static void test_url_values_are_percent_encoded(void **state) {
        fx_t *fx = *state;
        assert_string_equal(render(fx, "http://h/crm/claims/{{payload.claim_id}}?t={{ task.id }}",
                                   AF_TEMPLATE_URL, AF_OK),
                            "http://h/crm/claims/C%201%2F2%3F?t=01J0TASK");
        assert_string_equal(render(fx, "/a/{{payload.amount}}/{{payload.ok}}/{{task.attempt}}",
                                   AF_TEMPLATE_URL, AF_OK),
                            "/a/172.46/true/2");
}

static void test_url_refuses_objects(void **state) {
        fx_t *fx = *state;
        render(fx, "/x/{{payload.patient}}", AF_TEMPLATE_URL, AF_ERR_INVALID);
        assert_non_null(strstr(fx->errstr, "{{payload.patient}}"));
        assert_non_null(strstr(fx->errstr, "URL"));
}

static void test_json_body_encodes_every_value(void **state) {
        fx_t *fx = *state;
        const char *s = render(fx,
                               "{\"id\":{{payload.claim_id}},\"name\":{{payload.patient.name}},"
                               "\"n\":{{payload.patient.ids.1}},\"args\":{{args}},"
                               "\"s\":{{args.status}}}",
                               AF_TEMPLATE_JSON, AF_OK);
        assert_string_equal(s, "{\"id\":\"C 1/2?\",\"name\":\"Zoé \\\"Z\\\"\",\"n\":8,"
                               "\"args\":{\"status\":\"triaged\"},\"s\":\"triaged\"}");
        json_error_t jerr;
        json_t *j = json_loads(s, 0, &jerr);
        assert_non_null(j);
        json_decref(j);
}

static void test_whole_payload_in_body(void **state) {
        fx_t *fx = *state;
        const char *s = render(fx, "{{payload}}", AF_TEMPLATE_JSON, AF_OK);
        json_error_t jerr;
        json_t *j = json_loads(s, 0, &jerr);
        assert_non_null(j);
        assert_true(json_equal(j, fx->payload));
        json_decref(j);
}

static void test_text_writes_strings_raw(void **state) {
        fx_t *fx = *state;
        assert_string_equal(render(fx,
                                   "Tenant {{task.tenant}}: claim {{payload.claim_id}} "
                                   "ids {{payload.patient.ids}}",
                                   AF_TEMPLATE_TEXT, AF_OK),
                            "Tenant acme-health: claim C 1/2? ids [7,8]");
}

static void test_header_refuses_line_breaks(void **state) {
        fx_t *fx = *state;
        assert_string_equal(render(fx, "Bearer {{task.tenant}}", AF_TEMPLATE_HEADER, AF_OK),
                            "Bearer acme-health");
        render(fx, "{{payload.note}}", AF_TEMPLATE_HEADER, AF_ERR_INVALID);
        assert_non_null(strstr(fx->errstr, "line break"));
}

static void test_missing_field_names_it(void **state) {
        fx_t *fx = *state;
        render(fx, "/crm/{{payload.patient.ssn}}", AF_TEMPLATE_URL, AF_ERR_INVALID);
        assert_non_null(strstr(fx->errstr, "{{payload.patient.ssn}} at offset 5"));
        assert_non_null(strstr(fx->errstr, "payload has no field \"ssn\""));
}

static void test_unknown_root_and_task_field(void **state) {
        fx_t *fx = *state;
        render(fx, "x {{secrets.key}}", AF_TEMPLATE_TEXT, AF_ERR_INVALID);
        assert_non_null(strstr(fx->errstr, "{{secrets.key}} at offset 2: unknown variable"));
        render(fx, "{{task.color}}", AF_TEMPLATE_TEXT, AF_ERR_INVALID);
        assert_non_null(strstr(fx->errstr, "unknown task field"));
        render(fx, "{{task.case_key}}", AF_TEMPLATE_TEXT, AF_ERR_INVALID);
        assert_non_null(strstr(fx->errstr, "no value"));
}

static void test_args_absent_outside_tool_calls(void **state) {
        fx_t *fx = *state;
        fx->vars.args = NULL;
        render(fx, "{{args.status}}", AF_TEMPLATE_JSON, AF_ERR_INVALID);
        assert_non_null(strstr(fx->errstr, "no args here"));
        fx->vars.args = fx->args;
}

static void test_syntax_errors(void **state) {
        fx_t *fx = *state;
        render(fx, "abc {{payload.claim_id", AF_TEMPLATE_TEXT, AF_ERR_INVALID);
        assert_non_null(strstr(fx->errstr, "offset 4 is never closed"));
        render(fx, "{{ }}", AF_TEMPLATE_TEXT, AF_ERR_INVALID);
        assert_non_null(strstr(fx->errstr, "empty variable name"));
        render(fx, "{{pay load}}", AF_TEMPLATE_TEXT, AF_ERR_INVALID);
        assert_non_null(strstr(fx->errstr, "bad character"));
        assert_int_equal(
                af_template_check("/x/{{payload.a}}/{{task.id}}", fx->errstr, sizeof(fx->errstr)),
                AF_OK);
        assert_int_equal(af_template_check("/x/{{env.HOME}}", fx->errstr, sizeof(fx->errstr)),
                         AF_ERR_INVALID);
}

static void test_no_variables_is_verbatim(void **state) {
        fx_t *fx = *state;
        assert_string_equal(render(fx, "plain { text } here", AF_TEMPLATE_URL, AF_OK),
                            "plain { text } here");
        assert_string_equal(render(fx, "", AF_TEMPLATE_URL, AF_OK), "");
}

static void test_output_cap_is_enforced(void **state) {
        fx_t *fx = *state;
        af_buf_t small;
        char errstr[256];
        af_buf_init(&small, 8);
        assert_int_equal(af_template_render("{{payload}}", AF_TEMPLATE_JSON, &fx->vars, &small,
                                            errstr, sizeof(errstr)),
                         AF_ERR_TOO_LARGE);
        assert_non_null(strstr(errstr, "size cap"));
        af_buf_free(&small);
}

/* af_template_reads: which templates would read the payload (the worker skips building it
 * for the others). */
static void test_reads_names_the_root_only(void **state) {
        assert_true(af_template_reads("/c/{{payload.claim_id}}", "payload"));
        assert_true(af_template_reads("{{payload}}", "payload"));
        assert_true(af_template_reads("x {{ payload }} y", "payload"));
        assert_true(af_template_reads("{{task.id}}-{{\tpayload.a.0}}", "payload"));
        assert_false(af_template_reads("{{payloads}}", "payload"));
        assert_false(af_template_reads("{{task.id}} payload {{args.x}}", "payload"));
        assert_false(af_template_reads("http://h/noop", "payload"));
        assert_false(af_template_reads("{{payload", "payload")); /* never renders */
        assert_false(af_template_reads("", "payload"));
        assert_false(af_template_reads(NULL, "payload"));
        assert_true(af_template_reads("{{args.x}}", "args"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_url_values_are_percent_encoded),
                cmocka_unit_test(test_numbers_keep_their_digits),
                cmocka_unit_test(test_url_refuses_objects),
                cmocka_unit_test(test_json_body_encodes_every_value),
                cmocka_unit_test(test_whole_payload_in_body),
                cmocka_unit_test(test_text_writes_strings_raw),
                cmocka_unit_test(test_header_refuses_line_breaks),
                cmocka_unit_test(test_missing_field_names_it),
                cmocka_unit_test(test_unknown_root_and_task_field),
                cmocka_unit_test(test_args_absent_outside_tool_calls),
                cmocka_unit_test(test_syntax_errors),
                cmocka_unit_test(test_no_variables_is_verbatim),
                cmocka_unit_test(test_output_cap_is_enforced),
                cmocka_unit_test(test_reads_names_the_root_only),
        };
        return cmocka_run_group_tests(tests, fx_setup, fx_teardown);
}
