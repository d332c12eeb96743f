/*
 * Unit tests of libcommon's small building blocks: err, utf8, buf, ids, backoff, crypto, clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backoff.h"
#include "buf.h"
#include "clock.h"
#include "crypto.h"
#include "err.h"
#include "ids.h"
#include "utf8.h"

static void test_err_strings_cover_every_code(void **state) {
        for (int e = 0; e < AF_ERR__CNT; e++) {
                assert_non_null(af_err2str((af_err_t) e));
                assert_string_not_equal(af_err2code((af_err_t) e), "unknown");
        }
        assert_string_equal(af_err2code((af_err_t) 999), "unknown");
        assert_true(af_err_is_retriable_default(AF_ERR_TIMEOUT));
        assert_false(af_err_is_retriable_default(AF_ERR_INVALID));
}

/* Every byte outside a well-formed sequence becomes '?'; well-formed characters of 1-4 bytes
 * stay as they are. */
static void test_utf8_repair_and_valid(void **state) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                {"plain ascii", "plain ascii"},
                {"\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                 "\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
                {"cut \xc3", "cut ?"},              /* a sequence cut short at the end */
                {"cut \xe2\x82", "cut ??"},         /* ... of three bytes */
                {"stray \x80\xbf x", "stray ?? x"}, /* continuation bytes alone */
                {"overlong \xc0\x80 \xe0\x80\xaf", "overlong ?? ???"},
                {"surrogate \xed\xa0\x80", "surrogate ???"},
                {"too high \xf4\x90\x80\x80", "too high ????"},
                {"\xff\xfe", "??"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char buf[64];
                snprintf(buf, sizeof(buf), "%s", cases[i].in);
                bool ok = !strcmp(cases[i].in, cases[i].out);
                assert_true((af_utf8_prefix(cases[i].in, strlen(cases[i].in)) ==
                             strlen(cases[i].in)) == ok);
                af_utf8_repair(buf);
                assert_string_equal(buf, cases[i].out);
                assert_int_equal(af_utf8_prefix(buf, strlen(buf)), strlen(buf));
        }
        assert_int_equal(af_utf8_prefix("a\0b", 3), 1); /* NUL is not text */
        assert_int_equal(af_utf8_prefix("x\xc3\xa9", 2), 1);
        assert_int_equal(af_utf8_prefix("x\xc3\xa9y\xff", 5), 4);
}

/* An error message that quotes input cut to a byte length is still UTF-8: the cut half of a
 * character does not survive (it would make the message unusable in protobuf and JSON). */
static void test_error_messages_are_utf8(void **state) {
        char errstr[64];
        af_error_t e;
        af_errstr(AF_ERR_INVALID, errstr, sizeof(errstr), "type \"%.5s\"", "abcd\xc3\xa9");
        assert_string_equal(errstr, "type \"abcd?\"");
        af_errstr(AF_ERR_INVALID, errstr, 7, "%s", "abcde\xc3\xa9"); /* cut by the buffer */
        assert_string_equal(errstr, "abcde?");
        af_error_set(&e, AF_ERR_UPSTREAM, "answer %s", "\xff ok \xc3\xa9");
        assert_string_equal(e.msg, "answer ? ok \xc3\xa9");
}

/* A wrapped error keeps its cause's code, retriable flag and HTTP status; the message says
 * what was called first. */
static void test_error_wrap_prefixes_the_cause(void **state) {
        af_error_t cause, e;
        af_error_set_retriable(&cause, AF_ERR_TRANSPORT, true, "Couldn't connect to server");
        cause.http_status = 0;
        af_error_wrap(&e, &cause, "integration %s", "crm_update");
        assert_int_equal(e.err, AF_ERR_TRANSPORT);
        assert_true(e.retriable);
        assert_string_equal(e.msg, "integration crm_update: Couldn't connect to server");
        cause.http_status = 503;
        af_error_wrap(&cause, &cause, "model m"); /* in place */
        assert_string_equal(cause.msg, "model m: Couldn't connect to server");
        assert_int_equal(cause.http_status, 503);
}

static void test_error_carries_retriable_flag(void **state) {
        af_error_t e;
        af_error_set(&e, AF_ERR_TRANSPORT, "connect to %s failed", "crm");
        assert_true(af_error_is_retriable(&e));
        assert_string_equal(e.msg, "connect to crm failed");
        af_error_set_retriable(&e, AF_ERR_UPSTREAM, true, "http 503");
        assert_true(af_error_is_retriable(&e));
        af_error_clear(&e);
        assert_false(af_error_is_retriable(&e));
}

static void test_buf_grows_and_respects_cap(void **state) {
        af_buf_t b;
        af_buf_init(&b, 10);
        assert_int_equal(af_buf_puts(&b, "hello"), AF_OK);
        assert_int_equal(af_buf_printf(&b, "%d", 1234), AF_OK);
        assert_string_equal(af_buf_str(&b), "hello1234");
        assert_int_equal(af_buf_puts(&b, "xy"), AF_ERR_TOO_LARGE);
        /* a failed append frees the buffer: no half message remains */
        assert_int_equal(b.len, 0);
        assert_string_equal(af_buf_str(&b), "");
        af_buf_free(&b);
}

static void test_buf_printf_long_and_steal(void **state) {
        af_buf_t b;
        af_buf_init(&b, 1 << 20);
        char big[1000];
        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        assert_int_equal(af_buf_printf(&b, "<%s>", big), AF_OK);
        assert_int_equal(b.len, 1001);
        size_t len;
        char *p = af_buf_steal(&b, &len);
        assert_int_equal(len, 1001);
        assert_int_equal(p[0], '<');
        free(p);
        assert_null(b.data);
}

static void test_ulid_shape_and_monotonic(void **state) {
        char a[AF_ULID_LEN + 1], b[AF_ULID_LEN + 1];
        af_ulid_new_at(a, 1700000000000);
        for (int i = 0; i < 1000; i++) {
                af_ulid_new_at(b, 1700000000000); /* same millisecond */
                assert_true(af_ulid_valid(b));
                assert_true(strcmp(a, b) < 0);
                memcpy(a, b, sizeof(a));
        }
        assert_int_equal(af_ulid_time_ms(b), 1700000000000);
        assert_false(af_ulid_valid("not-a-ulid"));
        assert_false(af_ulid_valid("8ZZZZZZZZZZZZZZZZZZZZZZZZZ")); /* time overflow */
        assert_false(af_ulid_valid("01ARZ3NDEKTSV4RRFFQ69G5FAU")); /* U not in alphabet */
}

/* The 80 random bits, most significant first, 5 at a time: the plain definition. */
static void ulid_rand_reference(const uint8_t r[10], char out[17]) {
        static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        for (int i = 0; i < 16; i++) {
                int v = 0;
                for (int k = 0; k < 5; k++) {
                        int bit = i * 5 + k;
                        v = (v << 1) | ((r[bit / 8] >> (7 - bit % 8)) & 1);
                }
                out[i] = crockford[v];
        }
        out[16] = '\0';
}

static void test_ulid_encode_matches_definition(void **state) {
        const uint8_t known[10] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF, 0x01, 0x23};
        char got[AF_ULID_LEN + 1], want[17];
        af_ulid_encode(got, 1700000000000, known);
        assert_string_equal(got, "01HF7YAT0004HMASW9NF6YY093");
        for (int n = 0; n < 2000; n++) {
                uint8_t r[10];
                af_random_bytes(r, sizeof(r));
                af_ulid_encode(got, 1700000000000 + n, r);
                ulid_rand_reference(r, want);
                assert_string_equal(got + 10, want);
                assert_int_equal(af_ulid_time_ms(got), 1700000000000 + n);
        }
}

static void test_ulid_time_prefix_cuts_by_time(void **state) {
        char prefix[11], early[AF_ULID_LEN + 1], late[AF_ULID_LEN + 1];
        af_ulid_time_prefix(1900000000000, prefix);
        assert_int_equal(strlen(prefix), 10);
        af_ulid_new_at(early, 1899999999999);
        memcpy(late, early, sizeof(late));
        memcpy(late, prefix, 10); /* same random part, minted at the cut */
        assert_true(strcmp(early, prefix) < 0);
        assert_true(strcmp(late, prefix) > 0);
        assert_int_equal(af_ulid_time_ms(late), 1900000000000);
}

static void test_ulid_clock_step_back_keeps_order(void **state) {
        char a[AF_ULID_LEN + 1], b[AF_ULID_LEN + 1];
        af_ulid_new_at(a, 1800000000000);
        af_ulid_new_at(b, 1799999999000); /* wall clock stepped back */
        assert_true(strcmp(a, b) < 0);
}

static void test_backoff_bounds_and_overflow(void **state) {
        for (uint32_t attempt = 1; attempt < 100; attempt++) {
                int64_t lo = af_backoff_delay_ms_r(attempt, 100, 60000, 0);
                int64_t hi = af_backoff_delay_ms_r(attempt, 100, 60000, UINT64_MAX);
                assert_true(lo >= 50 && lo <= 60000);
                assert_true(hi >= lo && hi <= 60000);
        }
        assert_int_equal(af_backoff_delay_ms_r(1, 100, 60000, 0), 50);
        assert_int_equal(af_backoff_delay_ms_r(UINT32_MAX, 100, 60000, 0), 30000);
        assert_true(af_backoff_delay_ms_r(UINT32_MAX, 100, 60000, UINT64_MAX) <= 60000);
        int64_t d = af_backoff_delay_ms(5, 10, 1000);
        assert_true(d >= 80 && d <= 160);
}

/* crypto.c keeps the last key's HMAC state per thread: a change of key (same length, other
 * length, empty) must never reuse it, and repeating a key must give the same MAC. */
static void test_hmac_key_changes_do_not_reuse_state(void **state) {
        static const char *want_jefe =
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        static const char *want_key = /* RFC 4231 test case 1: 20 bytes of 0x0b, "Hi There" */
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7";
        char key1[20], hex[AF_SHA256_HEX_LEN + 1], empty_first[AF_SHA256_HEX_LEN + 1];
        memset(key1, 0x0b, sizeof(key1));
        af_hmac_sha256_hex("", 0, "x", 1, empty_first);
        for (int round = 0; round < 3; round++) {
                af_hmac_sha256_hex("Jefe", 4, "what do ya want for nothing?", 28, hex);
                assert_string_equal(hex, want_jefe);
                af_hmac_sha256_hex(key1, sizeof(key1), "Hi There", 8, hex);
                assert_string_equal(hex, want_key);
                af_hmac_sha256_hex("Jeff", 4, "what do ya want for nothing?", 28, hex);
                assert_string_not_equal(hex, want_jefe);
                af_hmac_sha256_hex("", 0, "x", 1, hex);
                assert_string_equal(hex, empty_first);
        }
        af_sha256_hex("abc", 3, hex);
        assert_string_equal(hex,
                            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        af_sha256_hex("", 0, hex);
        assert_string_equal(hex,
                            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_sha256_and_hmac_vectors(void **state) {
        char hex[AF_SHA256_HEX_LEN + 1];
        af_sha256_hex("abc", 3, hex);
        assert_string_equal(hex,
                            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        /* RFC 4231 test case 2 */
        af_hmac_sha256_hex("Jefe", 4, "what do ya want for nothing?", 28, hex);
        assert_string_equal(hex,
                            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        uint8_t raw[32];
        assert_true(af_hex_decode(hex, raw, 32));
        assert_false(af_hex_decode("zz", raw, 1));
        assert_false(af_hex_decode("abcd", raw, 1)); /* trailing bytes */
        assert_true(af_const_eq("abc", "abc", 3));
        assert_false(af_const_eq("abc", "abd", 3));
}

static void test_clock_monotonic(void **state) {
        int64_t a = af_clock_mono_us(), b = af_clock_mono_us();
        assert_true(b >= a);
        assert_true(af_clock_wall_ms() > 1700000000000LL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_err_strings_cover_every_code),
                cmocka_unit_test(test_error_carries_retriable_flag),
                cmocka_unit_test(test_error_wrap_prefixes_the_cause),
                cmocka_unit_test(test_utf8_repair_and_valid),
                cmocka_unit_test(test_error_messages_are_utf8),
                cmocka_unit_test(test_buf_grows_and_respects_cap),
                cmocka_unit_test(test_buf_printf_long_and_steal),
                cmocka_unit_test(test_ulid_shape_and_monotonic),
                cmocka_unit_test(test_ulid_encode_matches_definition),
                cmocka_unit_test(test_ulid_time_prefix_cuts_by_time),
                cmocka_unit_test(test_ulid_clock_step_back_keeps_order),
                cmocka_unit_test(test_backoff_bounds_and_overflow),
                cmocka_unit_test(test_sha256_and_hmac_vectors),
                cmocka_unit_test(test_hmac_key_changes_do_not_reuse_state),
                cmocka_unit_test(test_clock_monotonic),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
