/*
 * Unit tests of the pure parts of libcommon/redis.c: the SHA-1 names of scripts (what
 * EVALSHA sends must be what Redis computes, or every script run pays a NOSCRIPT round
 * trip), which Redis error replies are transient, that a client pointed at nothing fails
 * its commands with a retriable error from the loop, never inside the call, how INFO's
 * redis_version is read, and that the handshake leaves a server older than 6.2 (a fake one
 * on a socket, answering in RESP) and comes up on a newer one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop.h"
#include "redis.h"
#include "support/support.h"

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

static void test_info_version(void **state) {
        static const char info[] = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n";
        assert_int_equal(af_redis_info_version(info, strlen(info)), 70015);
        static const char old[] = "redis_version:6.0.16\r\n";
        assert_int_equal(af_redis_info_version(old, strlen(old)), 60016);
        assert_true(af_redis_info_version(old, strlen(old)) < AF_REDIS_MIN_VERSION);
        static const char exact[] = "# Server\nredis_version:6.2.0";
        assert_int_equal(af_redis_info_version(exact, strlen(exact)), AF_REDIS_MIN_VERSION);
        static const char *const bad[] = {
                "",
                "# Server\r\n",
                "redis_version:\r\n",
                "redis_version:7\r\n",
                "redis_version:7.0\r\n",
                "redis_version:7.x.1\r\n",
                "redis_version:7.100.1\r\n",
                "x_redis_version:7.0.15\r\n", /* not at a line's start */
                "redis_version:7.0.",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (af_redis_info_version(bad[i], strlen(bad[i])) != -1)
                        fail_msg("\"%s\" read as a version", bad[i]);
        /* Only the bytes given are read: the version cut short is not a version. */
        assert_int_equal(af_redis_info_version(info, 24), -1);
}

/* An array header asks hiredis 0.14 to allocate the array at once. Uncapped, the reader takes
 * "*999999999" (8 GB, which Linux grants lazily) and waits for its elements; capped, it
 * fails at the header. */
static void test_reader_refuses_huge_arrays(void **state) {
        static const char ok[] = "*2\r\n:1\r\n$1\r\nx\r\n";
        char huge[32];
        void *reply = NULL;
        redisReader *rd = redisReaderCreate();
        assert_non_null(rd);
        af_redis_reader_cap(rd);
        af_redis_reader_cap(rd); /* twice is harmless */
        assert_int_equal(redisReaderFeed(rd, ok, sizeof(ok) - 1), REDIS_OK);
        assert_int_equal(redisReaderGetReply(rd, &reply), REDIS_OK);
        assert_non_null(reply);
        assert_int_equal(((redisReply *) reply)->elements, 2);
        freeReplyObject(reply);
        reply = NULL;
        snprintf(huge, sizeof(huge), "*%d\r\n", 999999999);
        assert_int_equal(redisReaderFeed(rd, huge, strlen(huge)), REDIS_OK);
        assert_int_equal(redisReaderGetReply(rd, &reply), REDIS_ERR);
        assert_null(reply);
        redisReaderFree(rd);

        /* At the cap itself an array is still read. */
        rd = redisReaderCreate();
        af_redis_reader_cap(rd);
        snprintf(huge, sizeof(huge), "*%d\r\n", AF_REDIS_MAX_ELEMENTS);
        assert_int_equal(redisReaderFeed(rd, huge, strlen(huge)), REDIS_OK);
        assert_int_equal(redisReaderGetReply(rd, &reply), REDIS_OK); /* waiting for elements */
        assert_null(reply);
        redisReaderFree(rd);
}

/* ---- the handshake against a fake server that says which version it is ------------------- */

typedef struct {
        int listen_fd;
        const char *version;
        atomic_bool handshake_answered;
        atomic_bool client_closed; /* the client hung up after the answer */
} fake_t;

/* Accept one connection, read until the handshake's PING, answer INFO and PING in order, then
 * wait (up to 10 s) for the client to hang up. */
static void *fake_server(void *arg) {
        fake_t *f = arg;
        char buf[4096], reply[512], body[256];
        size_t got = 0;
        int c = accept(f->listen_fd, NULL, NULL);
        if (c < 0)
                return NULL;
        struct timeval tv = {.tv_sec = 10};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        while (got < sizeof(buf) - 1) {
                ssize_t n = read(c, buf + got, sizeof(buf) - 1 - got);
                if (n <= 0)
                        break;
                got += (size_t) n;
                buf[got] = '\0';
                if (strstr(buf, "PING\r\n"))
                        break;
        }
        int blen = snprintf(body, sizeof(body), "# Server\r\nredis_version:%s\r\n", f->version);
        int rlen = snprintf(reply, sizeof(reply), "$%d\r\n%s\r\n+PONG\r\n", blen, body);
        if (write(c, reply, (size_t) rlen) == rlen)
                atomic_store(&f->handshake_answered, true);
        while (read(c, buf, sizeof(buf)) > 0)
                ;
        atomic_store(&f->client_closed, true);
        close(c);
        return NULL;
}

static bool fake_closed(void *arg) {
        return atomic_load(&((fake_t *) arg)->client_closed);
}

static void up_cb(af_redis_t *r, bool up, void *opaque) {
        if (up)
                *(bool *) opaque = true;
}

/* Start the fake server on a free port; @returns the port. */
static int fake_start(fake_t *f, pthread_t *th, const char *version) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t alen = sizeof(a);
        f->version = version;
        atomic_init(&f->handshake_answered, false);
        atomic_init(&f->client_closed, false);
        f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(f->listen_fd >= 0);
        assert_int_equal(bind(f->listen_fd, (struct sockaddr *) &a, sizeof(a)), 0);
        assert_int_equal(listen(f->listen_fd, 4), 0);
        assert_int_equal(getsockname(f->listen_fd, (struct sockaddr *) &a, &alen), 0);
        assert_int_equal(pthread_create(th, NULL, fake_server, f), 0);
        return ntohs(a.sin_port);
}

static void test_handshake_leaves_a_server_too_old(void **state) {
        char errstr[256];
        fake_t f;
        pthread_t th;
        bool up = false;
        int port = fake_start(&f, &th, "6.0.16");
        af_loop_t *loop = af_loop_new(errstr, sizeof(errstr));
        af_redis_opts_t opts = {.host = "127.0.0.1",
                                .port = port,
                                .command_timeout_ms = 5000,
                                .reconnect_min_ms = 60000, /* one attempt is all we watch */
                                .reconnect_max_ms = 60000};
        af_redis_t *r = af_redis_new(loop, &opts, errstr, sizeof(errstr));
        assert_non_null(r);
        af_redis_set_state_cb(r, up_cb, &up);

        assert_true(af_test_loop_until(loop, fake_closed, &f, 10000));
        assert_true(atomic_load(&f.handshake_answered));
        assert_false(up); /* it answered PONG, but the client had already left */
        assert_false(af_redis_is_up(r));
        af_redis_destroy(r);
        af_loop_destroy(loop);
        pthread_join(th, NULL);
        close(f.listen_fd);
}

static void test_handshake_accepts_a_recent_server(void **state) {
        char errstr[256];
        fake_t f;
        pthread_t th;
        bool up = false;
        int port = fake_start(&f, &th, AF_REDIS_MIN_VERSION_TEXT ".0");
        af_loop_t *loop = af_loop_new(errstr, sizeof(errstr));
        af_redis_opts_t opts = {.host = "127.0.0.1", .port = port, .command_timeout_ms = 5000};
        af_redis_t *r = af_redis_new(loop, &opts, errstr, sizeof(errstr));
        assert_non_null(r);
        af_redis_set_state_cb(r, up_cb, &up);

        assert_true(af_test_loop_until(loop, af_test_flag_set, &up, 10000));
        assert_true(af_redis_is_up(r));
        assert_false(atomic_load(&f.client_closed));
        af_redis_destroy(r); /* hangs up: the fake server's thread ends */
        af_loop_destroy(loop);
        pthread_join(th, NULL);
        assert_true(atomic_load(&f.client_closed));
        close(f.listen_fd);
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
                cmocka_unit_test(test_info_version),
                cmocka_unit_test(test_reader_refuses_huge_arrays),
                cmocka_unit_test(test_handshake_leaves_a_server_too_old),
                cmocka_unit_test(test_handshake_accepts_a_recent_server),
                cmocka_unit_test(test_new_refuses_bad_options),
                cmocka_unit_test(test_commands_fail_from_loop_while_down),
                cmocka_unit_test(test_destroy_cancels_queued),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
