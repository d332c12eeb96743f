/*
 * Unit tests of loop: timers (one-shot, repeating, restart), signals delivered as callbacks,
 * the opt-in epoll changelist, what a loop sets up for its process (libevent's messages in our
 * log, the descriptor limit).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"

typedef struct {
        af_loop_t *loop;
        int fired;
        int stop_after;
} tick_t;

static void on_tick(void *opaque) {
        tick_t *t = opaque;
        if (++t->fired == t->stop_after)
                af_loop_stop(t->loop);
}

static void test_repeating_timer_fires_until_stopped(void **state) {
        af_loop_t *loop = af_loop_new(NULL, 0);
        tick_t t = {loop, 0, 3};
        af_timer_t *tm = af_timer_new(loop, on_tick, &t);
        af_timer_start(tm, 1, true /*repeat*/);
        assert_true(af_timer_pending(tm));
        assert_int_equal(af_loop_run(loop), 0);
        assert_int_equal(t.fired, 3);
        af_timer_stop(tm);
        assert_false(af_timer_pending(tm));
        af_timer_destroy(tm);
        af_loop_destroy(loop);
}

static void on_signal(af_loop_t *loop, int signo, void *opaque) {
        *(int *) opaque = signo;
        af_loop_stop(loop);
}

static void raise_term(void *opaque) {
        raise(SIGUSR1);
}

static void test_signal_is_a_loop_callback(void **state) {
        af_loop_t *loop = af_loop_new(NULL, 0);
        int got = 0;
        assert_int_equal(af_loop_on_signal(loop, SIGUSR1, on_signal, &got), 0);
        af_timer_t *tm = af_timer_new(loop, raise_term, NULL);
        af_timer_start(tm, 0, false);
        af_loop_run(loop);
        assert_int_equal(got, SIGUSR1);
        af_timer_destroy(tm);
        af_loop_destroy(loop);
}

static void on_readable(evutil_socket_t fd, short what, void *arg) {
        char c;
        tick_t *t = arg;
        if (read(fd, &c, 1) == 1)
                t->fired++;
        af_loop_stop(t->loop);
}

/* With the option the base is libevent's epoll-with-changelist (where epoll is the backend),
 * without it a plain one whatever the environment says otherwise; both serve timers and fd
 * events alike. */
static void test_epoll_changelist_is_opt_in(void **state) {
        char errstr[128];
        int sv[2];
        unsetenv("EVENT_EPOLL_USE_CHANGELIST");
        af_loop_t *plain = af_loop_new(errstr, sizeof(errstr));
        af_loop_t *loop = af_loop_new_opts(&(af_loop_opts_t){.epoll_changelist = true}, errstr,
                                           sizeof(errstr));
        assert_non_null(plain);
        assert_non_null(loop);
        const char *method = event_base_get_method(af_loop_base(loop));
        if (!strncmp(method, "epoll", 5)) {
                assert_string_equal(method, "epoll (with changelist)");
                assert_string_equal(event_base_get_method(af_loop_base(plain)), "epoll");
        }

        tick_t t = {loop, 0, 2};
        af_timer_t *tm = af_timer_new(loop, on_tick, &t);
        af_timer_start(tm, 1, true /*repeat*/);
        assert_int_equal(af_loop_run(loop), 0);
        assert_int_equal(t.fired, 2);
        af_timer_destroy(tm);

        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        t.fired = 0;
        struct event *ev = event_new(af_loop_base(loop), sv[0], EV_READ, on_readable, &t);
        event_add(ev, NULL);
        assert_int_equal(write(sv[1], "x", 1), 1);
        assert_int_equal(af_loop_run(loop), 0);
        assert_int_equal(t.fired, 1);
        event_free(ev);
        close(sv[0]);
        close(sv[1]);
        af_loop_destroy(loop);
        af_loop_destroy(plain);
        af_loop_destroy(af_loop_new_opts(NULL, errstr, sizeof(errstr)));
}

/* A new loop raises the soft descriptor limit to the hard one, and what libevent has to say
 * (here: epoll refusing a descriptor that is not open) is a line of our log, not a bare
 * "[warn]" line on stderr. */
static void test_loop_sets_up_its_process(void **state) {
        struct rlimit saved, rl;
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
        if (saved.rlim_max > 64) {
                rl = saved;
                rl.rlim_cur = 64;
                assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
        }
        FILE *log = tmpfile();
        assert_non_null(log);
        af_log_init("test", AF_LOG_WARN);
        af_log_set_output(log);
        af_loop_t *loop = af_loop_new(NULL, 0);
        assert_non_null(loop);
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
        assert_true(rl.rlim_cur == saved.rlim_max);

        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        close(sv[0]);
        close(sv[1]);
        tick_t t = {loop, 0, 1};
        struct event *ev = event_new(af_loop_base(loop), sv[0], EV_READ, on_readable, &t);
        assert_int_equal(event_add(ev, NULL), -1); /* libevent warns here */
        event_free(ev);
        af_loop_destroy(loop);

        char line[1024] = "";
        rewind(log);
        bool found = false;
        while (!found && fgets(line, sizeof(line), log))
                found = strstr(line, "\"level\":\"warn\"") && strstr(line, "\"msg\":\"libevent: ");
        assert_true(found);
        af_log_set_output(stderr);
        af_log_init("test", AF_LOG_OFF);
        fclose(log);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_epoll_changelist_is_opt_in),
                cmocka_unit_test(test_repeating_timer_fires_until_stopped),
                cmocka_unit_test(test_signal_is_a_loop_callback),
                cmocka_unit_test(test_loop_sets_up_its_process),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
