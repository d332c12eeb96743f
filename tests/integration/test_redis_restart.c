/*
 * Integration test of libcommon/redis.c against a PRIVATE redis-server that this test starts,
 * kills and restarts (a shared server cannot be killed): a steady stream of commands (plain
 * INCRs and a Lua script, alternately) is issued from the loop while the server is SIGKILLed
 * and later restarted on the same port; then the server is frozen with SIGSTOP and thawed.
 *
 * Asserted, per DESIGN.md ("losing Redis may cost time, never a task"):
 * - every command's callback is called exactly once (none lost silently, none twice);
 * - each either succeeded or failed with a retriable error (UNAVAILABLE or TIMEOUT);
 * - commands after the restart succeed again (the client reconnected by itself);
 * - scripts run after the restart and after SCRIPT FLUSH (the NOSCRIPT path);
 * - with a password, AUTH goes first; a wrong one keeps the client down (retriable errors),
 *   and no password ever reaches the log;
 * - a frozen server (SIGSTOP: TCP still accepts) makes commands time out, is not taken for
 *   "up" again until it answers, and the client recovers after it thaws.
 *
 * Progress is driven by counts of outcomes, never by elapsed time; a watchdog only ends a
 * hung run. Runs whenever redis-server is installed (AF_TEST_REDIS_PORT is not needed, but
 * like every Redis test it skips when that variable is unset, the sign that no services were
 * provisioned).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support/support.h"
#include "log.h"
#include "loop.h"
#include "redis.h"

#define MAX_CMDS    200000
#define WATCHDOG_MS 90000 /* only ends a hung run; never a timing assertion */
#define TICK_MS     2     /* issue pace: a steady stream, not a flood */

/* ---- the private server --------------------------------------------------------------- */

typedef struct {
        char bin[256];
        char dir[128];
        int port;
        pid_t pid;
        const char *password; /* --requirepass, or NULL */
} server_t;

static bool find_redis_server(char *out, size_t n) {
        return af_test_find_program("redis-server", out, n);
}

static int free_port(void) {
        int port = af_test_free_port();
        assert_true(port > 0);
        return port;
}

/* Blocking PING with a short timeout: set-up only, outside the loop under test. */
static bool server_answers(int port) {
        struct timeval tv = {0, 200000};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        bool ok = false;
        if (c && !c->err) {
                redisSetTimeout(c, tv);
                redisReply *rep = redisCommand(c, "PING");
                ok = rep &&
                     ((rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0) ||
                      (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOAUTH", 6) == 0));
                if (rep)
                        freeReplyObject(rep);
        }
        if (c)
                redisFree(c);
        return ok;
}

/* Every private server started and not yet killed, so a failed test (cmocka jumps out of
 * it) still leaves no redis-server and no temp folder behind: see teardown(). */
static struct {
        pid_t pid; /* > 0 running, -1 killed (its folder is still to remove), 0 free */
        char dir[128];
} started[4];

static void started_set(const server_t *s) {
        for (size_t i = 0; i < sizeof(started) / sizeof(started[0]); i++)
                if (started[i].pid == 0 || strcmp(started[i].dir, s->dir) == 0) {
                        started[i].pid = s->pid;
                        snprintf(started[i].dir, sizeof(started[i].dir), "%s", s->dir);
                        return;
                }
}

static void started_clear(pid_t pid) {
        for (size_t i = 0; i < sizeof(started) / sizeof(started[0]); i++)
                if (started[i].pid == pid)
                        started[i].pid = -1;
}

static void remove_dir(const char *dir) {
        static const char *const files[] = {"redis.log", "client.log", "dump.rdb"};
        char path[256];
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
                unlink(path);
        }
        rmdir(dir);
}

static int teardown(void **state) {
        for (size_t i = 0; i < sizeof(started) / sizeof(started[0]); i++) {
                if (started[i].pid > 0) {
                        kill(started[i].pid, SIGCONT);
                        kill(started[i].pid, SIGKILL);
                        waitpid(started[i].pid, NULL, 0);
                }
                if (started[i].pid != 0)
                        remove_dir(started[i].dir);
                started[i].pid = 0;
        }
        return 0;
}

/* @returns how many NOSCRIPT errors the server answered (INFO errorstats), -1 if unknown. */
static long server_noscript_count(int port) {
        struct timeval tv = {1, 0};
        long n = -1;
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        if (c && !c->err) {
                redisReply *rep = redisCommand(c, "INFO errorstats");
                if (rep && rep->type == REDIS_REPLY_STRING) {
                        const char *p = strstr(rep->str, "errorstat_NOSCRIPT:count=");
                        n = p ? atol(p + strlen("errorstat_NOSCRIPT:count=")) : 0;
                }
                if (rep)
                        freeReplyObject(rep);
        }
        if (c)
                redisFree(c);
        return n;
}

static void server_start(server_t *s) {
        char port[16];
        snprintf(port, sizeof(port), "%d", s->port);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                char log[256];
                snprintf(log, sizeof(log), "%s/redis.log", s->dir);
                if (s->password)
                        execl(s->bin, s->bin, "--port", port, "--bind", "127.0.0.1", "--dir",
                              s->dir, "--save", "", "--appendonly", "no", "--daemonize", "no",
                              "--logfile", log, "--requirepass", s->password, (char *) NULL);
                else
                        execl(s->bin, s->bin, "--port", port, "--bind", "127.0.0.1", "--dir",
                              s->dir, "--save", "", "--appendonly", "no", "--daemonize", "no",
                              "--logfile", log, (char *) NULL);
                _exit(127);
        }
        s->pid = pid;
        started_set(s);
        /* Poll until it answers (bounded: 10 s in 20 ms steps). */
        for (int i = 0; i < 500; i++) {
                if (server_answers(s->port))
                        return;
                int st;
                if (waitpid(pid, &st, WNOHANG) == pid)
                        fail_msg("redis-server exited at start (see %s/redis.log)", s->dir);
                struct timespec ts = {0, 20 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        fail_msg("redis-server on port %d never answered", s->port);
}

static void server_kill(server_t *s) {
        if (s->pid <= 0)
                return;
        kill(s->pid, SIGCONT); /* a frozen server must be able to die */
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        started_clear(s->pid);
        s->pid = 0;
}

/* ---- the command stream ---------------------------------------------------------------- */

typedef enum {
        PH_WARMUP,    /* until enough successes */
        PH_KILLED,    /* server SIGKILLed: until enough failures */
        PH_RESTARTED, /* server back: until enough successes, scripts included */
        PH_FLUSHED,   /* SCRIPT FLUSH sent: until scripts succeed again */
        PH_FROZEN,    /* SIGSTOP: until commands time out and the client gives up on it */
        PH_THAWED,    /* SIGCONT: until enough successes */
        PH_DRAIN,     /* stop issuing, wait for every callback */
} phase_t;

typedef struct {
        af_loop_t *loop;
        af_redis_t *r;
        server_t srv;
        af_timer_t *tick;
        af_timer_t *watchdog;
        bool watchdog_fired;
        int script;
        phase_t phase;

        unsigned char *calls; /* per command id: times its callback ran */
        int issued;
        int outstanding;
        int bad_errors; /* not ok and not retriable UNAVAILABLE/TIMEOUT */
        char bad_msg[320];
        int ok_in_phase, ok_script_in_phase, failed_in_phase, timeouts_in_phase;
        int ok_total, unavailable_total, timeout_total;
        int ups, downs;
        bool flush_done;
        bool use_stop; /* run the freeze phase too */
} fx_t;

static fx_t fx;

static void reset_phase(phase_t ph) {
        fx.phase = ph;
        fx.ok_in_phase = fx.ok_script_in_phase = fx.failed_in_phase = 0;
        fx.timeouts_in_phase = 0;
}

static void reply_cb(af_redis_t *r, const redisReply *reply, const af_error_t *err, void *opaque) {
        intptr_t id = (intptr_t) opaque;
        bool is_script = id & 1;
        fx.calls[id]++;
        fx.outstanding--;
        if (err->err == AF_OK) {
                /* INCR and the script both answer an integer. */
                if (!reply || reply->type != REDIS_REPLY_INTEGER) {
                        fx.bad_errors++;
                        snprintf(fx.bad_msg, sizeof(fx.bad_msg), "non-integer reply");
                }
                fx.ok_total++;
                fx.ok_in_phase++;
                if (is_script)
                        fx.ok_script_in_phase++;
        } else if ((err->err == AF_ERR_UNAVAILABLE || err->err == AF_ERR_TIMEOUT) &&
                   af_error_is_retriable(err) && !reply) {
                fx.failed_in_phase++;
                if (err->err == AF_ERR_TIMEOUT) {
                        fx.timeout_total++;
                        fx.timeouts_in_phase++;
                } else {
                        fx.unavailable_total++;
                }
        } else {
                fx.bad_errors++;
                snprintf(fx.bad_msg, sizeof(fx.bad_msg), "%s: %s", af_err2code(err->err), err->msg);
        }
        if (fx.phase == PH_DRAIN && fx.outstanding == 0)
                af_loop_stop(fx.loop);
}

static void flush_cb(af_redis_t *r, const redisReply *reply, const af_error_t *err, void *opaque) {
        /* Retried from the tick until it lands. */
        fx.flush_done = err->err == AF_OK;
}

static void issue_one(void) {
        if (fx.issued >= MAX_CMDS)
                return;
        intptr_t id = fx.issued++;
        fx.outstanding++;
        if (id & 1) {
                const char *keys[1] = {"af:test:restart:script"};
                const char *args[1] = {"1"};
                af_redis_script_run(fx.r, fx.script, reply_cb, (void *) id, 1, keys, 1, args);
        } else {
                af_redis_command(fx.r, reply_cb, (void *) id, "INCR %s", "af:test:restart:plain");
        }
}

static void tick_fire(void *opaque) {
        /* A bad outcome ends the run at once; the asserts after the loop report it. */
        if (fx.bad_errors && fx.phase != PH_DRAIN)
                reset_phase(PH_DRAIN);
        switch (fx.phase) {
        case PH_WARMUP:
                if (fx.ok_in_phase >= 200) {
                        server_kill(&fx.srv);
                        reset_phase(PH_KILLED);
                }
                break;
        case PH_KILLED:
                if (fx.failed_in_phase >= 100) {
                        server_start(&fx.srv);
                        reset_phase(PH_RESTARTED);
                }
                break;
        case PH_RESTARTED:
                if (fx.ok_in_phase >= 200 && fx.ok_script_in_phase >= 50) {
                        reset_phase(PH_FLUSHED);
                        fx.flush_done = false;
                }
                break;
        case PH_FLUSHED:
                if (!fx.flush_done) {
                        af_redis_command(fx.r, flush_cb, NULL, "SCRIPT FLUSH");
                        fx.ok_in_phase = fx.ok_script_in_phase = 0;
                } else if (fx.ok_script_in_phase >= 20) {
                        if (fx.use_stop) {
                                kill(fx.srv.pid, SIGSTOP);
                                reset_phase(PH_FROZEN);
                        } else {
                                reset_phase(PH_DRAIN);
                        }
                }
                break;
        case PH_FROZEN:
                /* The commands in flight time out; then the client closes the silent
                 * connection and, its handshake unanswered, stays down (UNAVAILABLE). */
                if (fx.timeouts_in_phase >= 1 && fx.failed_in_phase >= 100) {
                        kill(fx.srv.pid, SIGCONT);
                        reset_phase(PH_THAWED);
                }
                break;
        case PH_THAWED:
                if (fx.ok_in_phase >= 200)
                        reset_phase(PH_DRAIN);
                break;
        case PH_DRAIN:
                break;
        }
        if (fx.phase == PH_DRAIN) {
                af_timer_stop(fx.tick);
                if (fx.outstanding == 0)
                        af_loop_stop(fx.loop);
                return;
        }
        issue_one();
}

static void state_cb(af_redis_t *r, bool up, void *opaque) {
        if (up)
                fx.ups++;
        else
                fx.downs++;
}

static void watchdog_fire(void *opaque) {
        fx.watchdog_fired = true;
        af_loop_stop(fx.loop);
}

static void run_scenario(bool use_stop) {
        char errstr[256];
        memset(&fx, 0, sizeof(fx));
        fx.use_stop = use_stop;
        fx.calls = calloc(MAX_CMDS, 1);
        assert_non_null(fx.calls);
        assert_true(find_redis_server(fx.srv.bin, sizeof(fx.srv.bin)));
        snprintf(fx.srv.dir, sizeof(fx.srv.dir), "/tmp/af-redis-restart-XXXXXX");
        assert_non_null(mkdtemp(fx.srv.dir));
        fx.srv.port = free_port();
        server_start(&fx.srv);

        fx.loop = af_loop_new(errstr, sizeof(errstr));
        assert_non_null(fx.loop);
        af_redis_opts_t opts = {.host = "127.0.0.1",
                                .port = fx.srv.port,
                                .command_timeout_ms = 300,
                                .reconnect_min_ms = 20,
                                .reconnect_max_ms = 200};
        fx.r = af_redis_new(fx.loop, &opts, errstr, sizeof(errstr));
        assert_non_null(fx.r);
        af_redis_set_state_cb(fx.r, state_cb, NULL);
        fx.script = af_redis_script_add(fx.r, "return redis.call('INCRBY', KEYS[1], ARGV[1])");
        assert_true(fx.script >= 0);

        fx.tick = af_timer_new(fx.loop, tick_fire, NULL);
        fx.watchdog = af_timer_new(fx.loop, watchdog_fire, NULL);
        af_timer_start(fx.tick, TICK_MS, true);
        af_timer_start(fx.watchdog, WATCHDOG_MS, false);
        assert_int_equal(af_loop_run(fx.loop), 0);

        printf("# issued %d: ok %d, unavailable %d, timeout %d; ups %d downs %d; phase %d\n",
               fx.issued, fx.ok_total, fx.unavailable_total, fx.timeout_total, fx.ups, fx.downs,
               fx.phase);
        if (fx.watchdog_fired)
                fail_msg("watchdog: stuck in phase %d with %d outstanding", fx.phase,
                         fx.outstanding);
        if (fx.bad_errors)
                fail_msg("%d commands ended badly, last: %s", fx.bad_errors, fx.bad_msg);
        assert_int_equal(fx.phase, PH_DRAIN);
        assert_int_equal(fx.outstanding, 0);
        for (int i = 0; i < fx.issued; i++)
                if (fx.calls[i] != 1)
                        fail_msg("command %d: callback ran %d times", i, fx.calls[i]);
        assert_true(fx.unavailable_total >= 100); /* the outage was seen... */
        assert_true(fx.ups >= 2);                 /* ...and recovered from */
        assert_true(fx.downs >= 1);
        if (use_stop)
                assert_true(fx.timeout_total >= 1);
        assert_true(af_redis_is_up(fx.r));
        /* The SCRIPT FLUSH phase really went through NOSCRIPT -> EVAL (no caller saw it:
         * bad_errors is 0): the server counted the NOSCRIPT it answered. */
        assert_true(server_noscript_count(fx.srv.port) >= 1);

        af_redis_destroy(fx.r);
        af_timer_destroy(fx.tick);
        af_timer_destroy(fx.watchdog);
        af_loop_destroy(fx.loop);
        server_kill(&fx.srv);
        char path[sizeof(fx.srv.dir) + 16];
        snprintf(path, sizeof(path), "%s/redis.log", fx.srv.dir);
        unlink(path);
        rmdir(fx.srv.dir);
        free(fx.calls);
}

/* ---- AUTH: the right password connects, a wrong one never comes up, neither is logged ---- */

#define GOOD_PASSWORD "good-secret-8c1f"
#define BAD_PASSWORD  "bad-secret-77d0"

typedef struct {
        af_loop_t *loop;
        af_redis_t *r;
        int ups;
        int replies;
        af_err_t last_err;
        int failures;
        af_timer_t *tick;
} auth_fx_t;

static void auth_state_cb(af_redis_t *r, bool up, void *opaque) {
        auth_fx_t *a = opaque;
        if (up) {
                a->ups++;
                af_loop_stop(a->loop);
        }
}

static void auth_reply_cb(af_redis_t *r, const redisReply *reply, const af_error_t *err,
                          void *opaque) {
        auth_fx_t *a = opaque;
        a->replies++;
        a->last_err = err->err;
        if (err->err != AF_OK)
                a->failures++;
        if (err->err == AF_OK || a->failures >= 30)
                af_loop_stop(a->loop);
}

static void auth_tick(void *opaque) {
        auth_fx_t *a = opaque;
        af_redis_command(a->r, auth_reply_cb, a, "PING");
}

static void auth_watchdog(void *opaque) {
        af_loop_stop(opaque); /* only ends a hung run; the asserts then fail */
}

static void auth_run(server_t *srv, const char *password, auth_fx_t *a) {
        char errstr[256];
        memset(a, 0, sizeof(*a));
        a->loop = af_loop_new(errstr, sizeof(errstr));
        assert_non_null(a->loop);
        af_redis_opts_t opts = {.host = "127.0.0.1",
                                .port = srv->port,
                                .password = password,
                                .command_timeout_ms = 1000,
                                .reconnect_min_ms = 20,
                                .reconnect_max_ms = 100};
        a->r = af_redis_new(a->loop, &opts, errstr, sizeof(errstr));
        assert_non_null(a->r);
        af_redis_set_state_cb(a->r, auth_state_cb, a);
        a->tick = af_timer_new(a->loop, auth_tick, a);
        af_timer_t *watchdog = af_timer_new(a->loop, auth_watchdog, a->loop);
        af_timer_start(watchdog, 20000, false);
        if (strcmp(password, GOOD_PASSWORD) == 0) {
                assert_int_equal(af_loop_run(a->loop), 0); /* until up */
                assert_int_equal(a->ups, 1);
                af_redis_command(a->r, auth_reply_cb, a, "PING");
                assert_int_equal(af_loop_run(a->loop), 0);
                assert_int_equal(a->last_err, AF_OK);
        } else {
                /* Commands keep failing, retriably, while the client retries the handshake. */
                af_timer_start(a->tick, 10, true);
                assert_int_equal(af_loop_run(a->loop), 0);
                assert_int_equal(a->failures, 30);
                assert_int_equal(a->last_err, AF_ERR_UNAVAILABLE);
                assert_int_equal(a->ups, 0);
                assert_false(af_redis_is_up(a->r));
        }
        af_timer_destroy(watchdog);
        af_timer_destroy(a->tick);
        af_redis_destroy(a->r);
        af_loop_destroy(a->loop);
}

static void test_auth_and_password_never_logged(void **state) {
        server_t srv = {.password = GOOD_PASSWORD};
        assert_true(find_redis_server(srv.bin, sizeof(srv.bin)));
        snprintf(srv.dir, sizeof(srv.dir), "/tmp/af-redis-auth-XXXXXX");
        assert_non_null(mkdtemp(srv.dir));
        srv.port = free_port();
        server_start(&srv);

        char logpath[sizeof(srv.dir) + 16];
        snprintf(logpath, sizeof(logpath), "%s/client.log", srv.dir);
        FILE *logf = fopen(logpath, "w+");
        assert_non_null(logf);
        af_log_init("test", AF_LOG_DEBUG); /* the most talkative level still hides it */
        af_log_set_output(logf);

        auth_fx_t a;
        auth_run(&srv, GOOD_PASSWORD, &a);
        auth_run(&srv, BAD_PASSWORD, &a);

        af_log_set_output(stderr);
        af_log_init("test", AF_LOG_INFO);
        fflush(logf);
        rewind(logf);
        char line[2048];
        bool saw_auth_failed = false;
        while (fgets(line, sizeof(line), logf)) {
                assert_null(strstr(line, GOOD_PASSWORD));
                assert_null(strstr(line, BAD_PASSWORD));
                if (strstr(line, "AUTH failed"))
                        saw_auth_failed = true;
        }
        assert_true(saw_auth_failed);
        fclose(logf);
        unlink(logpath);
        server_kill(&srv);
        snprintf(logpath, sizeof(logpath), "%s/redis.log", srv.dir);
        unlink(logpath);
        rmdir(srv.dir);
}

static void test_survives_kill_and_restart(void **state) {
        run_scenario(false);
}

static void test_survives_kill_restart_and_freeze(void **state) {
        run_scenario(true);
}

int main(void) {
        char bin[256];
        if (!getenv("AF_TEST_REDIS_PORT")) {
                printf("SKIP: AF_TEST_REDIS_PORT is not set\n");
                return 0;
        }
        if (!find_redis_server(bin, sizeof(bin))) {
                printf("FAIL: redis-server not found on PATH or in /usr/bin\n");
                return 1;
        }
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_teardown(test_survives_kill_and_restart, teardown),
                cmocka_unit_test_teardown(test_survives_kill_restart_and_freeze, teardown),
                cmocka_unit_test_teardown(test_auth_and_password_never_logged, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
