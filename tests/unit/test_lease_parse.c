/*
 * Unit tests of lease reply parsing (libcommon/lease.c): every shape each lease script can
 * return is accepted with the right status, fence and stored result (the usual outcome as a
 * bare integer: acquire's fence, 1 for ok; the rare ones as {'WORD', ...}), and every other
 * shape (wrong type, wrong element count, a status the operation cannot return, a
 * non-positive fence, an integer other than 1) is an error, never a crash or a guess.
 * Replies are built by hand: no Redis needed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "lease.h"

/* ---- hand-built replies ---------------------------------------------------------------- */

static redisReply str_reply(int type, const char *s) {
        redisReply e;
        memset(&e, 0, sizeof(e));
        e.type = type;
        e.str = (char *) s;
        e.len = strlen(s);
        return e;
}

static redisReply int_reply(long long v) {
        redisReply e;
        memset(&e, 0, sizeof(e));
        e.type = REDIS_REPLY_INTEGER;
        e.integer = v;
        return e;
}

static redisReply arr_reply(redisReply **els, size_t n) {
        redisReply a;
        memset(&a, 0, sizeof(a));
        a.type = REDIS_REPLY_ARRAY;
        a.element = els;
        a.elements = n;
        return a;
}

typedef struct {
        af_err_t err;
        af_lease_status_t st;
        int64_t fence;
        const char *data;
        size_t data_len;
        char errstr[200];
} parsed_t;

static parsed_t parse(af_lease_op_t op, const redisReply *reply) {
        parsed_t p;
        memset(&p, 0, sizeof(p));
        p.st = (af_lease_status_t) -1;
        p.err = af_lease_parse_reply(op, reply, &p.st, &p.fence, &p.data, &p.data_len, p.errstr,
                                     sizeof(p.errstr));
        return p;
}

/* A one-word reply {word} for op. */
static parsed_t parse_word(af_lease_op_t op, const char *word) {
        redisReply w = str_reply(REDIS_REPLY_STRING, word);
        redisReply *els[1] = {&w};
        redisReply a = arr_reply(els, 1);
        return parse(op, &a);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_acquire_acquired_is_bare_fence(void **state) {
        redisReply f = int_reply(7);
        parsed_t p = parse(AF_LEASE_OP_ACQUIRE, &f);
        assert_int_equal(p.err, AF_OK);
        assert_int_equal(p.st, AF_LEASE_ACQUIRED);
        assert_int_equal(p.fence, 7);
        assert_null(p.data);
        /* The shape the scripts sent before ({'ACQUIRED', n}) is no longer one they send. */
        redisReply w = str_reply(REDIS_REPLY_STRING, "ACQUIRED");
        redisReply *els[2] = {&w, &f};
        redisReply a = arr_reply(els, 2);
        assert_int_equal(parse(AF_LEASE_OP_ACQUIRE, &a).err, AF_ERR_UPSTREAM);
}

static void test_ok_is_integer_one(void **state) {
        af_lease_op_t ops[3] = {AF_LEASE_OP_RENEW, AF_LEASE_OP_FINISH, AF_LEASE_OP_RELEASE};
        redisReply one = int_reply(1), zero = int_reply(0), two = int_reply(2), neg = int_reply(-1);
        for (int i = 0; i < 3; i++) {
                parsed_t p = parse(ops[i], &one);
                assert_int_equal(p.err, AF_OK);
                assert_int_equal(p.st, AF_LEASE_OK);
                assert_null(p.data);
                assert_int_equal(parse(ops[i], &zero).err, AF_ERR_UPSTREAM);
                assert_int_equal(parse(ops[i], &two).err, AF_ERR_UPSTREAM);
                p = parse(ops[i], &neg);
                assert_int_equal(p.err, AF_ERR_UPSTREAM);
                assert_non_null(strstr(p.errstr, "expected 1"));
                /* "OK" as a word is not what the scripts send. */
                assert_int_equal(parse_word(ops[i], "OK").err, AF_ERR_UPSTREAM);
        }
        /* A cancel is a plain SET: an integer is not its +OK. */
        assert_int_equal(parse(AF_LEASE_OP_CANCEL, &one).err, AF_ERR_UPSTREAM);
}

static void test_acquire_done_carries_binary_result(void **state) {
        static const char result[] = {'\x08', '\x01', '\0', '\x12', 'x'};
        redisReply w = str_reply(REDIS_REPLY_STRING, "DONE");
        redisReply d;
        memset(&d, 0, sizeof(d));
        d.type = REDIS_REPLY_STRING;
        d.str = (char *) result;
        d.len = sizeof(result);
        redisReply *els[2] = {&w, &d};
        redisReply a = arr_reply(els, 2);
        parsed_t p = parse(AF_LEASE_OP_ACQUIRE, &a);
        assert_int_equal(p.err, AF_OK);
        assert_int_equal(p.st, AF_LEASE_DONE);
        assert_int_equal(p.data_len, sizeof(result));
        assert_memory_equal(p.data, result, sizeof(result));
}

static void test_one_word_statuses_per_op(void **state) {
        assert_int_equal(parse_word(AF_LEASE_OP_ACQUIRE, "HELD").st, AF_LEASE_HELD);
        assert_int_equal(parse_word(AF_LEASE_OP_ACQUIRE, "CANCELLED").st, AF_LEASE_CANCELLED);
        assert_int_equal(parse_word(AF_LEASE_OP_RENEW, "LOST").st, AF_LEASE_LOST);
        assert_int_equal(parse_word(AF_LEASE_OP_RENEW, "CANCELLED").st, AF_LEASE_CANCELLED);
        assert_int_equal(parse_word(AF_LEASE_OP_FINISH, "LOST").st, AF_LEASE_LOST);
        assert_int_equal(parse_word(AF_LEASE_OP_RELEASE, "LOST").st, AF_LEASE_LOST);
        /* Status replies are accepted like bulk strings. */
        redisReply w = str_reply(REDIS_REPLY_STATUS, "LOST");
        redisReply *els[1] = {&w};
        redisReply a = arr_reply(els, 1);
        assert_int_equal(parse(AF_LEASE_OP_RELEASE, &a).err, AF_OK);
}

static void test_status_foreign_to_op_is_error(void **state) {
        /* A finish must never be told "acquired", an acquire never "ok" or "lost". */
        assert_int_equal(parse_word(AF_LEASE_OP_ACQUIRE, "OK").err, AF_ERR_UPSTREAM);
        assert_int_equal(parse_word(AF_LEASE_OP_ACQUIRE, "LOST").err, AF_ERR_UPSTREAM);
        assert_int_equal(parse_word(AF_LEASE_OP_FINISH, "CANCELLED").err, AF_ERR_UPSTREAM);
        assert_int_equal(parse_word(AF_LEASE_OP_RELEASE, "HELD").err, AF_ERR_UPSTREAM);
        assert_int_equal(parse_word(AF_LEASE_OP_RENEW, "DONE").err, AF_ERR_UPSTREAM);
        parsed_t p = parse_word(AF_LEASE_OP_RENEW, "MAYBE");
        assert_int_equal(p.err, AF_ERR_UPSTREAM);
        assert_non_null(strstr(p.errstr, "unknown status"));
        /* Case and length matter: "ok" and "OKAY" are not "OK". */
        assert_int_equal(parse_word(AF_LEASE_OP_RENEW, "ok").err, AF_ERR_UPSTREAM);
        assert_int_equal(parse_word(AF_LEASE_OP_RENEW, "OKAY").err, AF_ERR_UPSTREAM);
}

static void test_wrong_shapes_are_errors(void **state) {
        /* NULL reply, non-array, empty array, NULL element. */
        assert_int_equal(parse(AF_LEASE_OP_RENEW, NULL).err, AF_ERR_UPSTREAM);
        redisReply s = str_reply(REDIS_REPLY_STATUS, "OK");
        assert_int_equal(parse(AF_LEASE_OP_RENEW, &s).err, AF_ERR_UPSTREAM);
        redisReply empty = arr_reply(NULL, 0);
        assert_int_equal(parse(AF_LEASE_OP_RENEW, &empty).err, AF_ERR_UPSTREAM);
        redisReply *nul[1] = {NULL};
        redisReply a_nul = arr_reply(nul, 1);
        assert_int_equal(parse(AF_LEASE_OP_RENEW, &a_nul).err, AF_ERR_UPSTREAM);
        /* First element an integer. */
        redisReply i = int_reply(1);
        redisReply *ie[1] = {&i};
        redisReply a_int = arr_reply(ie, 1);
        assert_int_equal(parse(AF_LEASE_OP_RENEW, &a_int).err, AF_ERR_UPSTREAM);
        /* Nil reply. */
        redisReply nil;
        memset(&nil, 0, sizeof(nil));
        nil.type = REDIS_REPLY_NIL;
        assert_int_equal(parse(AF_LEASE_OP_ACQUIRE, &nil).err, AF_ERR_UPSTREAM);
}

static void test_acquired_needs_positive_integer_fence(void **state) {
        redisReply zero = int_reply(0);
        redisReply neg = int_reply(-3);
        redisReply *bad[2] = {&zero, &neg};
        for (int i = 0; i < 2; i++) {
                parsed_t p = parse(AF_LEASE_OP_ACQUIRE, bad[i]);
                assert_int_equal(p.err, AF_ERR_UPSTREAM);
                assert_non_null(strstr(p.errstr, "fence"));
        }
        /* A fence as text, bare or in an array, is not an integer fence. */
        redisReply text = str_reply(REDIS_REPLY_STRING, "7");
        assert_int_equal(parse(AF_LEASE_OP_ACQUIRE, &text).err, AF_ERR_UPSTREAM);
        redisReply *els[1] = {&text};
        redisReply a1 = arr_reply(els, 1);
        assert_int_equal(parse(AF_LEASE_OP_ACQUIRE, &a1).err, AF_ERR_UPSTREAM);
}

static void test_done_needs_string_result(void **state) {
        redisReply w = str_reply(REDIS_REPLY_STRING, "DONE");
        redisReply i = int_reply(5);
        redisReply *els[2] = {&w, &i};
        redisReply a = arr_reply(els, 2);
        assert_int_equal(parse(AF_LEASE_OP_ACQUIRE, &a).err, AF_ERR_UPSTREAM);
        redisReply *one[1] = {&w};
        redisReply a1 = arr_reply(one, 1);
        assert_int_equal(parse(AF_LEASE_OP_ACQUIRE, &a1).err, AF_ERR_UPSTREAM);
        /* HELD with an extra element is a shape we never send. */
        redisReply h = str_reply(REDIS_REPLY_STRING, "HELD");
        redisReply *he[2] = {&h, &i};
        redisReply ah = arr_reply(he, 2);
        assert_int_equal(parse(AF_LEASE_OP_ACQUIRE, &ah).err, AF_ERR_UPSTREAM);
}

static void test_cancel_expects_plain_ok(void **state) {
        redisReply ok = str_reply(REDIS_REPLY_STATUS, "OK");
        parsed_t p = parse(AF_LEASE_OP_CANCEL, &ok);
        assert_int_equal(p.err, AF_OK);
        assert_int_equal(p.st, AF_LEASE_OK);
        redisReply nil;
        memset(&nil, 0, sizeof(nil));
        nil.type = REDIS_REPLY_NIL;
        assert_int_equal(parse(AF_LEASE_OP_CANCEL, &nil).err, AF_ERR_UPSTREAM);
        redisReply other = str_reply(REDIS_REPLY_STATUS, "QUEUED");
        assert_int_equal(parse(AF_LEASE_OP_CANCEL, &other).err, AF_ERR_UPSTREAM);
}

static void test_status_names(void **state) {
        assert_string_equal(af_lease_status2str(AF_LEASE_ACQUIRED), "acquired");
        assert_string_equal(af_lease_status2str(AF_LEASE_LOST), "lost");
        assert_string_equal(af_lease_status2str((af_lease_status_t) 99), "unknown");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_acquire_acquired_is_bare_fence),
                cmocka_unit_test(test_ok_is_integer_one),
                cmocka_unit_test(test_acquire_done_carries_binary_result),
                cmocka_unit_test(test_one_word_statuses_per_op),
                cmocka_unit_test(test_status_foreign_to_op_is_error),
                cmocka_unit_test(test_wrong_shapes_are_errors),
                cmocka_unit_test(test_acquired_needs_positive_integer_fence),
                cmocka_unit_test(test_done_needs_string_result),
                cmocka_unit_test(test_cancel_expects_plain_ok),
                cmocka_unit_test(test_status_names),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
