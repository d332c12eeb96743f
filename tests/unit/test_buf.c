/*
 * test_buf: the capped buffer's helpers for hot paths — decimal integers without printf and
 * reserving room once — write exactly what printf would and respect the cap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"

static void test_append_i64_writes_what_printf_writes(void **state) {
        static const int64_t values[] = {
                0, 1, -1, 9, 10, -10, 1234567890, -987654321012LL, INT64_MAX, INT64_MIN};
        af_buf_t b;
        char want[512] = "";
        af_buf_init(&b, 1024);
        for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
                size_t n = strlen(want);
                snprintf(want + n, sizeof(want) - n, "%lld,", (long long) values[i]);
                assert_int_equal(af_buf_append_i64(&b, values[i]), AF_OK);
                assert_int_equal(af_buf_append(&b, ",", 1), AF_OK);
        }
        assert_string_equal(af_buf_str(&b), want);
        assert_int_equal(b.len, strlen(want));
        af_buf_free(&b);
}

static void test_append_i64_respects_the_cap(void **state) {
        af_buf_t b;
        af_buf_init(&b, 3);
        assert_int_equal(af_buf_append_i64(&b, 123), AF_OK);
        assert_int_equal(af_buf_append_i64(&b, 4), AF_ERR_TOO_LARGE);
        assert_null(b.data); /* a failed append frees the buffer */
        af_buf_free(&b);
}

static void test_reserve_allocates_once(void **state) {
        af_buf_t b;
        af_buf_init(&b, 100);
        assert_int_equal(af_buf_reserve(&b, 40), AF_OK);
        assert_non_null(b.data);
        assert_string_equal(af_buf_str(&b), "");
        char *data = b.data;
        for (int i = 0; i < 40; i++)
                assert_int_equal(af_buf_append(&b, "x", 1), AF_OK);
        assert_ptr_equal(b.data, data); /* no reallocation within what was reserved */
        assert_int_equal(b.len, 40);
        /* Past the cap: refused, and the buffer is kept as it was. */
        assert_int_equal(af_buf_reserve(&b, 61), AF_ERR_TOO_LARGE);
        assert_int_equal(b.len, 40);
        assert_int_equal(af_buf_reserve(&b, 60), AF_OK);
        af_buf_free(&b);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_append_i64_writes_what_printf_writes),
                cmocka_unit_test(test_append_i64_respects_the_cap),
                cmocka_unit_test(test_reserve_allocates_once),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
