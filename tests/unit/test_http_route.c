/*
 * Unit tests of http_route: literal and {param} patterns, captures ending at '/' or ':',
 * per-capture percent-decoding (an encoded '/' stays inside its segment), refusal of %00,
 * empty segments, and pattern validation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "http_route.h"

static void test_literal_pattern_matches_exactly(void **state) {
        af_http_params_t p;
        assert_int_equal(af_http_route_match("/healthz", "/healthz", &p), AF_HTTP_ROUTE_MATCH);
        assert_int_equal(p.cnt, 0);
        assert_int_equal(af_http_route_match("/healthz", "/healthz/", &p), AF_HTTP_ROUTE_NOMATCH);
        assert_int_equal(af_http_route_match("/healthz", "/health", &p), AF_HTTP_ROUTE_NOMATCH);
        assert_int_equal(af_http_route_match("/v1/tasks", "/v1/tasks/x", &p),
                         AF_HTTP_ROUTE_NOMATCH);
}

static void test_param_captures_one_segment(void **state) {
        af_http_params_t p;
        assert_int_equal(af_http_route_match("/v1/tasks/{id}", "/v1/tasks/01HXYZ", &p),
                         AF_HTTP_ROUTE_MATCH);
        assert_string_equal(af_http_params_get(&p, "id"), "01HXYZ");
        assert_null(af_http_params_get(&p, "other"));
        af_http_params_clear(&p);
        assert_int_equal(af_http_route_match("/v1/tasks/{id}", "/v1/tasks/a/b", &p),
                         AF_HTTP_ROUTE_NOMATCH);
        assert_int_equal(af_http_route_match("/v1/tasks/{id}", "/v1/tasks/", &p),
                         AF_HTTP_ROUTE_NOMATCH);
}

static void test_param_ends_at_colon_for_custom_methods(void **state) {
        af_http_params_t p;
        assert_int_equal(af_http_route_match("/v1/tasks/{id}:cancel", "/v1/tasks/T1:cancel", &p),
                         AF_HTTP_ROUTE_MATCH);
        assert_string_equal(af_http_params_get(&p, "id"), "T1");
        af_http_params_clear(&p);
        /* The plain GET route must not swallow the custom method. */
        assert_int_equal(af_http_route_match("/v1/tasks/{id}", "/v1/tasks/T1:cancel", &p),
                         AF_HTTP_ROUTE_NOMATCH);
        assert_int_equal(af_http_route_match("/v1/tasks/{id}:cancel", "/v1/tasks/T1:approve", &p),
                         AF_HTTP_ROUTE_NOMATCH);
        assert_int_equal(af_http_route_match("/v1/tasks/{id}:cancel", "/v1/tasks/:cancel", &p),
                         AF_HTTP_ROUTE_NOMATCH);
}

static void test_several_params(void **state) {
        af_http_params_t p;
        assert_int_equal(af_http_route_match("/v1/workflows/{name}/runs/{run}",
                                             "/v1/workflows/claims/runs/R9", &p),
                         AF_HTTP_ROUTE_MATCH);
        assert_int_equal(p.cnt, 2);
        assert_string_equal(af_http_params_get(&p, "name"), "claims");
        assert_string_equal(af_http_params_get(&p, "run"), "R9");
        af_http_params_clear(&p);
}

static void test_params_are_decoded_after_splitting(void **state) {
        af_http_params_t p;
        assert_int_equal(af_http_route_match("/v1/tasks/{id}", "/v1/tasks/a%2Fb%20c+d", &p),
                         AF_HTTP_ROUTE_MATCH);
        assert_string_equal(af_http_params_get(&p, "id"), "a/b c+d");
        af_http_params_clear(&p);
        assert_int_equal(af_http_route_match("/v1/tasks/{id}", "/v1/tasks/a%3Ab", &p),
                         AF_HTTP_ROUTE_MATCH);
        assert_string_equal(af_http_params_get(&p, "id"), "a:b");
        af_http_params_clear(&p);
}

static void test_nul_in_param_is_bad_path(void **state) {
        af_http_params_t p;
        assert_int_equal(af_http_route_match("/v1/tasks/{id}", "/v1/tasks/a%00b", &p),
                         AF_HTTP_ROUTE_BADPATH);
        assert_int_equal(p.cnt, 0);
        /* Only when the rest of the path matches: otherwise another route may be right. */
        assert_int_equal(af_http_route_match("/v1/tasks/{id}", "/v1/tasks/a%00b/x", &p),
                         AF_HTTP_ROUTE_NOMATCH);
}

static void test_decode(void **state) {
        char *s = af_http_route_decode("a%41%zz", 7);
        assert_string_equal(s, "aA%zz");
        free(s);
        s = af_http_route_decode("abc", 2);
        assert_string_equal(s, "ab");
        free(s);
        assert_null(af_http_route_decode("%00", 3));
}

/* A string without '%' is copied as is ('+' stays '+'), what evhttp's decoder would give. */
static void test_decode_without_percent_is_a_copy(void **state) {
        char *s = af_http_route_decode("/v1/a+b:c", 9);
        assert_string_equal(s, "/v1/a+b:c");
        free(s);
        s = af_http_route_decode("", 0);
        assert_string_equal(s, "");
        free(s);
        s = af_http_route_decode("xyz%", 3); /* the '%' is past len */
        assert_string_equal(s, "xyz");
        free(s);
}

static void test_pattern_validation(void **state) {
        char errstr[256];
        assert_true(af_http_route_valid("/v1/tasks/{id}:cancel", errstr, sizeof(errstr)));
        assert_true(af_http_route_valid("/", errstr, sizeof(errstr)));
        assert_false(af_http_route_valid("v1/tasks", errstr, sizeof(errstr)));
        assert_false(af_http_route_valid("/v1/{", errstr, sizeof(errstr)));
        assert_false(af_http_route_valid("/v1/{}", errstr, sizeof(errstr)));
        assert_false(af_http_route_valid("/v1/{a-b}", errstr, sizeof(errstr)));
        assert_false(af_http_route_valid("/v1/}", errstr, sizeof(errstr)));
        assert_false(af_http_route_valid("/v1/{a}{b}", errstr, sizeof(errstr)));
        assert_non_null(strstr(errstr, "two captures"));
        assert_false(af_http_route_valid("/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}", errstr,
                                         sizeof(errstr)));
        assert_false(af_http_route_valid(NULL, errstr, sizeof(errstr)));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_literal_pattern_matches_exactly),
                cmocka_unit_test(test_param_captures_one_segment),
                cmocka_unit_test(test_param_ends_at_colon_for_custom_methods),
                cmocka_unit_test(test_several_params),
                cmocka_unit_test(test_params_are_decoded_after_splitting),
                cmocka_unit_test(test_nul_in_param_is_bad_path),
                cmocka_unit_test(test_decode),
                cmocka_unit_test(test_decode_without_percent_is_a_copy),
                cmocka_unit_test(test_pattern_validation),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
