/*
 * Unit tests of loop: timers (one-shot, repeating, restart), signals delivered as callbacks,
 * the opt-in epoll changelist.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_epoll_changelist_is_opt_in),
                cmocka_unit_test(test_repeating_timer_fires_until_stopped),
                cmocka_unit_test(test_signal_is_a_loop_callback),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
