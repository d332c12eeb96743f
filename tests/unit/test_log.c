/*
 * Unit tests of log: JSON lines (UTF-8 whatever the message quotes), level check, secret
 * redaction (also of secrets that escaping or repair would change).
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

#include "log.h"

static char *capture(void (*fn)(void)) {
        char *out = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);
        af_log_set_output(f);
        fn();
        fclose(f);
        af_log_set_output(NULL);
        return out;
}

static void log_one_with_ids(void) {
        af_log_task(AF_LOG_INFO, "01TASK", "trace-1", "claim \"%s\"\n done", "C-1");
}

static void test_log_line_is_json_with_ids(void **state) {
        af_log_init("worker", AF_LOG_INFO);
        char *out = capture(log_one_with_ids);
        json_error_t jerr;
        json_t *o = json_loads(out, 0, &jerr);
        assert_non_null(o);
        assert_string_equal(json_string_value(json_object_get(o, "level")), "info");
        assert_string_equal(json_string_value(json_object_get(o, "component")), "worker");
        assert_string_equal(json_string_value(json_object_get(o, "msg")), "claim \"C-1\"\n done");
        assert_string_equal(json_string_value(json_object_get(o, "task_id")), "01TASK");
        assert_string_equal(json_string_value(json_object_get(o, "trace_id")), "trace-1");
        json_decref(o);
        free(out);
}

static int formatted;
static const char *count_format(void) {
        formatted++;
        return "x";
}
static void log_debug_when_info(void) {
        af_debug("%s", count_format());
}

static void test_log_level_checked_before_formatting(void **state) {
        af_log_init("worker", AF_LOG_INFO);
        formatted = 0;
        char *out = capture(log_debug_when_info);
        assert_int_equal(formatted, 0);
        assert_true(out == NULL || out[0] == '\0');
        free(out);
}

static void log_secret(void) {
        af_info("connecting with password s3cr3t-pass-123 and key sk-abcdef");
}

static void test_log_redacts_registered_secrets(void **state) {
        af_log_init("coordinator", AF_LOG_INFO);
        af_log_redact_add("s3cr3t-pass-123");
        af_log_redact_add("sk-abcdef");
        char *out = capture(log_secret);
        assert_null(strstr(out, "s3cr3t"));
        assert_null(strstr(out, "sk-abcdef"));
        assert_non_null(strstr(out, "[redacted]"));
        free(out);
        af_log_redact_clear();
}

static void log_odd_secrets(void) {
        af_info("password pa\"ss\\word-1 and token t\xffk3n-abcd and \xc3 cut");
}

/* Secrets with a quote, a backslash or a byte that is not UTF-8 are found as the message
 * wrote them; the line is JSON even though the message was not UTF-8. */
static void test_log_redacts_secrets_escaping_would_change(void **state) {
        af_log_init("coordinator", AF_LOG_INFO);
        af_log_redact_add("pa\"ss\\word-1");
        af_log_redact_add("t\xffk3n-abcd");
        char *out = capture(log_odd_secrets);
        json_error_t jerr;
        json_t *o = json_loads(out, 0, &jerr);
        assert_non_null(o);
        assert_string_equal(json_string_value(json_object_get(o, "msg")),
                            "password [redacted] and token [redacted] and ? cut");
        json_decref(o);
        free(out);
        af_log_redact_clear();
}

static void test_log_level_parse(void **state) {
        assert_int_equal(af_log_level_parse("warn"), AF_LOG_WARN);
        assert_int_equal(af_log_level_parse("loud"), -1);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_log_line_is_json_with_ids),
                cmocka_unit_test(test_log_level_checked_before_formatting),
                cmocka_unit_test(test_log_redacts_registered_secrets),
                cmocka_unit_test(test_log_redacts_secrets_escaping_would_change),
                cmocka_unit_test(test_log_level_parse),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
