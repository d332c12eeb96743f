/*
 * test_simagent_rules: simagent's claim rule check accepts a good claim and names each rule
 * a bad claim breaks, so the triage agent's "deny" path rests on checks that can fail.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

/* simagent's logic is compiled in: it is not part of libcommon. */
#include "../../simagent/rules.c"

/* 2025-06-15T12:00:00Z */
#define NOW_MS 1749988800000LL

static json_t *check(const char *claim_json) {
        json_t *doc = json_loads(claim_json, 0, NULL);
        json_t *out;

        assert_non_null(doc);
        out = af_sim_rules_check(af_sim_rules_claim(doc), NOW_MS);
        json_decref(doc);
        assert_non_null(out);
        return out;
}

/* @returns whether the result lists a violation of rule. */
static bool violated(const json_t *out, const char *rule) {
        json_t *v;
        size_t i;

        json_array_foreach(json_object_get(out, "violations"), i,
                           v) if (strcmp(json_string_value(json_object_get(v, "rule")), rule) ==
                                  0) return true;
        return false;
}

static void test_good_claim_passes(void **state) {
        json_t *out = check("{\"claim_id\":\"C-1\",\"amount\":120.5,\"currency\":\"EUR\","
                            "\"diagnosis_codes\":[\"J20.9\",\"M54\"],"
                            "\"service_date\":\"2025-06-15\"}");

        assert_true(json_is_true(json_object_get(out, "passed")));
        assert_int_equal(json_array_size(json_object_get(out, "violations")), 0);
        assert_string_equal(json_string_value(json_object_get(out, "claim_id")), "C-1");
        json_decref(out);
}

static void test_wrapped_claim_is_found(void **state) {
        json_t *out = check("{\"claim\":{\"claim_id\":\"C-2\",\"amount\":1,\"currency\":"
                            "\"USD\",\"diagnosis_codes\":[\"A00\"],\"date\":\"2024-01-01\"}}");

        assert_true(json_is_true(json_object_get(out, "passed")));
        json_decref(out);
}

static void test_each_rule_is_named(void **state) {
        json_t *out = check("{\"amount\":-5,\"currency\":\"XYZ\",\"diagnosis_codes\":[],"
                            "\"service_date\":\"2025-06-16\"}");

        assert_true(json_is_false(json_object_get(out, "passed")));
        assert_true(violated(out, "claim_id_present"));
        assert_true(violated(out, "amount_positive"));
        assert_true(violated(out, "currency_known"));
        assert_true(violated(out, "diagnosis_codes_present"));
        assert_true(violated(out, "service_date_not_future"));
        assert_true(json_is_null(json_object_get(out, "claim_id")));
        json_decref(out);
}

static void test_bad_formats_are_refused(void **state) {
        json_t *out = check("{\"claim_id\":\"C-3\",\"amount\":\"12\",\"currency\":\"EUR\","
                            "\"diagnosis_codes\":[\"not-a-code\"],"
                            "\"service_date\":\"2025-02-29\"}");

        assert_true(violated(out, "amount_positive"));
        assert_true(violated(out, "diagnosis_code_format"));
        assert_true(violated(out, "service_date_valid")); /* 2025 is not a leap year */
        assert_false(violated(out, "currency_known"));
        json_decref(out);
}

static void test_missing_fields_and_non_object(void **state) {
        json_t *out = check("{\"claim_id\":\"C-4\"}");
        json_t *arr = json_array();
        json_t *out2;

        assert_true(violated(out, "amount_present"));
        assert_true(violated(out, "service_date_present"));
        json_decref(out);
        out2 = af_sim_rules_check(arr, NOW_MS);
        assert_true(violated(out2, "claim_object"));
        assert_null(af_sim_rules_claim(arr));
        json_decref(out2);
        json_decref(arr);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_good_claim_passes),
                cmocka_unit_test(test_wrapped_claim_is_found),
                cmocka_unit_test(test_each_rule_is_named),
                cmocka_unit_test(test_bad_formats_are_refused),
                cmocka_unit_test(test_missing_fields_and_non_object),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
