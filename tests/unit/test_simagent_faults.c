/*
 * test_simagent_faults: simagent's fault and latency sequence is a pure function of the seed
 * and the request number, honours each rate, and keeps delays inside mean +- jitter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../simagent/faults.c"

#define DRAWS 10000

static void count(af_sim_faults_t *f, int n, int counts[5]) {
        af_sim_fault_t d;

        memset(counts, 0, 5 * sizeof(int));
        for (int i = 0; i < n; i++) {
                af_sim_faults_next(f, &d);
                counts[d.kind]++;
        }
}

static void test_same_seed_same_sequence_and_reset_replays(void **state) {
        af_sim_faults_opts_t o = {.seed = 7,
                                  .latency_ms = 50,
                                  .jitter_ms = 40,
                                  .error_rate = 200,
                                  .rate429 = 100,
                                  .timeout_rate = 50};
        af_sim_faults_t a, b;
        af_sim_fault_t da[64], db;
        int differs_from_other_seed = 0;

        af_sim_faults_init(&a, &o);
        af_sim_faults_init(&b, &o);
        for (int i = 0; i < 64; i++) {
                af_sim_faults_next(&a, &da[i]);
                af_sim_faults_next(&b, &db);
                assert_int_equal(da[i].kind, db.kind);
                assert_int_equal(da[i].delay_ms, db.delay_ms);
        }
        af_sim_faults_reset(&a);
        for (int i = 0; i < 64; i++) {
                af_sim_faults_next(&a, &db);
                assert_int_equal(da[i].kind, db.kind);
                assert_int_equal(da[i].delay_ms, db.delay_ms);
        }
        o.seed = 8;
        af_sim_faults_init(&b, &o);
        for (int i = 0; i < 64; i++) {
                af_sim_faults_next(&b, &db);
                differs_from_other_seed += db.delay_ms != da[i].delay_ms;
        }
        assert_true(differs_from_other_seed > 32);
}

static void test_full_rates_always_apply(void **state) {
        af_sim_faults_opts_t o = {.seed = 1, .rate429 = 1000};
        af_sim_faults_t f;
        int c[5];

        af_sim_faults_init(&f, &o);
        count(&f, 200, c);
        assert_int_equal(c[AF_SIM_FAULT_429], 200);

        o = (af_sim_faults_opts_t){.seed = 1, .timeout_rate = 1000, .rate429 = 1000};
        af_sim_faults_init(&f, &o);
        count(&f, 200, c);
        assert_int_equal(c[AF_SIM_FAULT_HANG], 200); /* a hang wins over a 429 */

        o = (af_sim_faults_opts_t){.seed = 1, .error_rate = 1000};
        af_sim_faults_init(&f, &o);
        count(&f, 200, c);
        assert_int_equal(c[AF_SIM_FAULT_500] + c[AF_SIM_FAULT_503], 200);
        assert_true(c[AF_SIM_FAULT_500] > 0 && c[AF_SIM_FAULT_503] > 0);
}

static void test_zero_rates_never_fault(void **state) {
        af_sim_faults_opts_t o = {.seed = 3, .latency_ms = 20};
        af_sim_faults_t f;
        af_sim_fault_t d;

        af_sim_faults_init(&f, &o);
        for (int i = 0; i < DRAWS; i++) {
                af_sim_faults_next(&f, &d);
                assert_int_equal(d.kind, AF_SIM_FAULT_NONE);
                assert_int_equal(d.delay_ms, 20); /* no jitter: exactly the mean */
        }
}

static void test_partial_rate_is_about_right(void **state) {
        af_sim_faults_opts_t o = {.seed = 42, .error_rate = 100, .rate429 = 50};
        af_sim_faults_t f;
        int c[5];

        af_sim_faults_init(&f, &o);
        count(&f, DRAWS, c);
        /* Deterministic for this seed; the bounds only guard against a broken draw. */
        assert_in_range(c[AF_SIM_FAULT_429], DRAWS * 30 / 1000, DRAWS * 70 / 1000);
        assert_in_range(c[AF_SIM_FAULT_500] + c[AF_SIM_FAULT_503], DRAWS * 70 / 1000,
                        DRAWS * 130 / 1000);
}

static void test_delay_stays_within_jitter(void **state) {
        af_sim_faults_opts_t o = {.seed = 9, .latency_ms = 10, .jitter_ms = 30};
        af_sim_faults_t f;
        af_sim_fault_t d;
        int64_t lo = 1000, hi = -1;

        af_sim_faults_init(&f, &o);
        for (int i = 0; i < DRAWS; i++) {
                af_sim_faults_next(&f, &d);
                assert_in_range(d.delay_ms, 0, 40); /* 10 +- 30, clamped at 0 */
                lo = d.delay_ms < lo ? d.delay_ms : lo;
                hi = d.delay_ms > hi ? d.delay_ms : hi;
        }
        assert_int_equal(lo, 0);
        assert_int_equal(hi, 40);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_same_seed_same_sequence_and_reset_replays),
                cmocka_unit_test(test_full_rates_always_apply),
                cmocka_unit_test(test_zero_rates_never_fault),
                cmocka_unit_test(test_partial_rate_is_about_right),
                cmocka_unit_test(test_delay_stays_within_jitter),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
