/*
 * Unit tests of the pure parts of libcommon/redis.c: the SHA-1 names of scripts (what
 * EVALSHA sends must be what Redis computes, or every script run pays a NOSCRIPT round
 * trip), which Redis error replies are transient, and that a client pointed at nothing fails
 * its commands with a retriable error from the loop, never inside the call.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "loop.h"
#include "redis.h"

static void test_script_sha1_matches_redis(void **state) {
        char sha[41];
        /* SHA-1 of "return 1", as `SCRIPT LOAD "return 1"` answers. */
        af_redis_script_sha1("return 1", 8, sha);
        assert_string_equal(sha, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        af_redis_script_sha1("", 0, sha);
        assert_string_equal(sha, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
}

static void test_transient_errors(void **state) {
        static const char *yes[] = {"LOADING Redis is loading the dataset in memory",
                                    "BUSY Redis is busy running a script.",
                                    "TRYAGAIN Multiple keys request during rehashing",
                                    "MASTERDOWN Link with MASTER is down",
                                    "CLUSTERDOWN The cluster is down",
                                    "READONLY You can't write against a read only replica.",
                                    "LOADING"};
        static const char *no[] = {"ERR unknown command 'FOO'",
                                   "WRONGTYPE Operation against a key holding the wrong kind",
                                   "NOSCRIPT No matching script.",
                                   "BUSYKEY Target key name already exists.",
                                   "NOAUTH Authentication required.",
                                   "LOAD",
                                   ""};
        for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
                assert_true(af_redis_error_is_transient(yes[i], strlen(yes[i])));
        for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
                assert_false(af_redis_error_is_transient(no[i], strlen(no[i])));
        assert_false(af_redis_error_is_transient(NULL, 0));
        /* Length bounds the comparison: a prefix cut short is not the code. */
        assert_false(af_redis_error_is_transient("LOADING", 4));
}

static void test_new_refuses_bad_options(void **state) {
        char errstr[256];
        af_loop_t *loop = af_loop_new(errstr, sizeof(errstr));
        assert_non_null(loop);
        af_redis_opts_t opts = {.host = "127.0.0.1", .port = 0};
        assert_null(af_redis_new(loop, &opts, errstr, sizeof(errstr)));
        assert_non_null(strstr(errstr, "port"));
        opts.host = NULL;
        opts.port = 6379;
        assert_null(af_redis_new(loop, &opts, errstr, sizeof(errstr)));
        assert_non_null(strstr(errstr, "host"));
        af_redis_destroy(NULL);
        af_loop_destroy(loop);
}

/* ---- a client with no server: commands fail from the loop, exactly once -------------------- */

typedef struct {
        af_loop_t *loop;
        int calls;
        int unavailable;
        int invalid;
        bool in_call; /* set while af_redis_command runs: a callback then is re-entrant */
        bool reentrant;
} down_fx_t;

static void down_cb(af_redis_t *r, const redisReply *reply, const af_error_t *err, void *opaque) {
        down_fx_t *fx = opaque;
        fx->calls++;
        if (fx->in_call)
                fx->reentrant = true;
        assert_null(reply);
        if (err->err == AF_ERR_UNAVAILABLE) {
                assert_true(af_error_is_retriable(err));
                fx->unavailable++;
        } else if (err->err == AF_ERR_INVALID) {
                fx->invalid++;
        }
        if (fx->calls == 4)
                af_loop_stop(fx->loop);
}

static void test_commands_fail_from_loop_while_down(void **state) {
        char errstr[256];
        down_fx_t fx = {0};
        fx.loop = af_loop_new(errstr, sizeof(errstr));
        assert_non_null(fx.loop);
        /* Port 1 on loopback: nothing listens, the connect is refused. */
        af_redis_opts_t opts = {.host = "127.0.0.1",
                                .port = 1,
                                .command_timeout_ms = 1000,
                                .reconnect_min_ms = 50,
                                .reconnect_max_ms = 100};
        af_redis_t *r = af_redis_new(fx.loop, &opts, errstr, sizeof(errstr));
        assert_non_null(r);
        assert_false(af_redis_is_up(r));
        int s = af_redis_script_add(r, "return 1");
        assert_true(s >= 0);
        assert_int_equal(af_redis_script_add(r, "return 1"), s); /* same script, same handle */
        assert_int_not_equal(af_redis_script_add(r, "return 2"), s);

        fx.in_call = true;
        af_redis_command(r, down_cb, &fx, "PING");
        const char *argv[2] = {"GET", "k"};
        af_redis_commandv(r, down_cb, &fx, 2, argv, NULL);
        af_redis_script_run(r, s, down_cb, &fx, 0, NULL, 0, NULL);
        af_redis_script_run(r, 99, down_cb, &fx, 0, NULL, 0, NULL); /* no such script */
        fx.in_call = false;
        assert_int_equal(fx.calls, 0);

        assert_int_equal(af_loop_run(fx.loop), 0);
        assert_int_equal(fx.calls, 4);
        assert_int_equal(fx.unavailable, 3);
        assert_int_equal(fx.invalid, 1);
        assert_false(fx.reentrant);
        af_redis_destroy(r);
        af_loop_destroy(fx.loop);
}

static void cancelled_cb(af_redis_t *r, const redisReply *reply, const af_error_t *err,
                         void *opaque) {
        int *n = opaque;
        assert_int_equal(err->err, AF_ERR_CANCELLED);
        (*n)++;
}

static void test_destroy_cancels_queued(void **state) {
        char errstr[256];
        af_loop_t *loop = af_loop_new(errstr, sizeof(errstr));
        af_redis_opts_t opts = {.host = "127.0.0.1", .port = 1};
        af_redis_t *r = af_redis_new(loop, &opts, errstr, sizeof(errstr));
        assert_non_null(r);
        int n = 0;
        af_redis_command(r, cancelled_cb, &n, "PING");
        af_redis_command(r, cancelled_cb, &n, "PING");
        af_redis_destroy(r);
        assert_int_equal(n, 2);
        af_loop_destroy(loop);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_script_sha1_matches_redis),
                cmocka_unit_test(test_transient_errors),
                cmocka_unit_test(test_new_refuses_bad_options),
                cmocka_unit_test(test_commands_fail_from_loop_while_down),
                cmocka_unit_test(test_destroy_cancels_queued),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
