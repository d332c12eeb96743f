/*
 * Unit tests of loop: timers (one-shot, repeating, restart), signals delivered as callbacks.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

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

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_repeating_timer_fires_until_stopped),
                cmocka_unit_test(test_signal_is_a_loop_callback),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
