/*
 * test_watermark: the worker stores an offset only when every earlier offset of its
 * partition is done, whatever order tasks finish in; partitions are independent; a revoked
 * partition's late completions no longer count.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* The worker's stage is compiled in: it is not part of libcommon. */
#include "watermark.h"

static void test_in_order_completions_advance_each_time(void **state) {
        af_watermark_t *wm = af_watermark_new();
        uint32_t ep;
        for (int64_t o = 10; o < 13; o++)
                assert_int_equal(af_watermark_track(wm, 0, 0, o, &ep), AF_OK);
        assert_int_equal(af_watermark_done(wm, 0, 0, ep, 10), 11);
        assert_int_equal(af_watermark_done(wm, 0, 0, ep, 11), 12);
        assert_int_equal(af_watermark_done(wm, 0, 0, ep, 12), 13);
        assert_int_equal(af_watermark_pending(wm), 0);
        af_watermark_destroy(wm);
}

static void test_out_of_order_completions_wait_for_the_head(void **state) {
        af_watermark_t *wm = af_watermark_new();
        uint32_t ep;
        for (int64_t o = 0; o < 5; o++)
                assert_int_equal(af_watermark_track(wm, 0, 3, o, &ep), AF_OK);
        assert_int_equal(af_watermark_done(wm, 0, 3, ep, 3), -1);
        assert_int_equal(af_watermark_done(wm, 0, 3, ep, 1), -1);
        assert_int_equal(af_watermark_done(wm, 0, 3, ep, 4), -1);
        assert_int_equal(af_watermark_pending(wm), 5);
        /* The head finishes: everything up to the next gap (2) is committable. */
        assert_int_equal(af_watermark_done(wm, 0, 3, ep, 0), 2);
        assert_int_equal(af_watermark_done(wm, 0, 3, ep, 2), 5);
        assert_int_equal(af_watermark_pending(wm), 0);
        af_watermark_destroy(wm);
}

/* Offsets need not be consecutive (transaction markers, compaction). */
static void test_gaps_between_offsets(void **state) {
        af_watermark_t *wm = af_watermark_new();
        uint32_t ep;
        assert_int_equal(af_watermark_track(wm, 1, 0, 100, &ep), AF_OK);
        assert_int_equal(af_watermark_track(wm, 1, 0, 105, &ep), AF_OK);
        assert_int_equal(af_watermark_track(wm, 1, 0, 230, &ep), AF_OK);
        assert_int_equal(af_watermark_done(wm, 1, 0, ep, 230), -1);
        assert_int_equal(af_watermark_done(wm, 1, 0, ep, 100), 101);
        assert_int_equal(af_watermark_done(wm, 1, 0, ep, 105), 231);
        af_watermark_destroy(wm);
}

static void test_partitions_are_independent(void **state) {
        af_watermark_t *wm = af_watermark_new();
        uint32_t ep0, ep1, ept;
        assert_int_equal(af_watermark_track(wm, 0, 0, 7, &ep0), AF_OK);
        assert_int_equal(af_watermark_track(wm, 0, 1, 7, &ep1), AF_OK);
        assert_int_equal(af_watermark_track(wm, 1, 0, 7, &ept), AF_OK);
        assert_int_equal(af_watermark_track(wm, 0, 0, 8, &ep0), AF_OK);
        assert_int_equal(af_watermark_done(wm, 0, 0, ep0, 8), -1);
        assert_int_equal(af_watermark_done(wm, 0, 1, ep1, 7), 8);
        assert_int_equal(af_watermark_done(wm, 1, 0, ept, 7), 8);
        assert_int_equal(af_watermark_done(wm, 0, 0, ep0, 7), 9);
        af_watermark_destroy(wm);
}

static void test_redelivered_offset_is_refused(void **state) {
        af_watermark_t *wm = af_watermark_new();
        uint32_t ep;
        assert_int_equal(af_watermark_track(wm, 0, 0, 5, &ep), AF_OK);
        assert_int_equal(af_watermark_track(wm, 0, 0, 5, &ep), AF_ERR_INVALID);
        assert_int_equal(af_watermark_track(wm, 0, 0, 4, &ep), AF_ERR_INVALID);
        af_watermark_destroy(wm);
}

static void test_revoked_partition_ignores_late_completions(void **state) {
        af_watermark_t *wm = af_watermark_new();
        uint32_t old_ep, new_ep;
        assert_int_equal(af_watermark_track(wm, 0, 2, 40, &old_ep), AF_OK);
        assert_int_equal(af_watermark_track(wm, 0, 2, 41, &old_ep), AF_OK);
        assert_true(af_watermark_current(wm, 0, 2, old_ep));
        assert_false(af_watermark_current(wm, 0, 3, old_ep)); /* never tracked */
        af_watermark_revoke(wm, 0, 2);
        assert_false(af_watermark_current(wm, 0, 2, old_ep));
        assert_int_equal(af_watermark_pending(wm), 0);
        assert_int_equal(af_watermark_done(wm, 0, 2, old_ep, 40), -1);
        /* Assigned again, redelivered from the committed offset: a new epoch. */
        af_watermark_assign(wm, 0, 2);
        assert_int_equal(af_watermark_track(wm, 0, 2, 40, &new_ep), AF_OK);
        assert_true(new_ep != old_ep);
        assert_false(af_watermark_current(wm, 0, 2, old_ep));
        assert_true(af_watermark_current(wm, 0, 2, new_ep));
        /* The stale task of the old assignment finishing does not move the new watermark. */
        assert_int_equal(af_watermark_done(wm, 0, 2, old_ep, 40), -1);
        assert_int_equal(af_watermark_done(wm, 0, 2, new_ep, 40), 41);
        af_watermark_destroy(wm);
}

static void test_unknown_offset_is_ignored(void **state) {
        af_watermark_t *wm = af_watermark_new();
        uint32_t ep;
        assert_int_equal(af_watermark_track(wm, 0, 0, 1, &ep), AF_OK);
        assert_int_equal(af_watermark_done(wm, 0, 0, ep, 2), -1);
        assert_int_equal(af_watermark_done(wm, 0, 9, ep, 1), -1);
        assert_int_equal(af_watermark_pending(wm), 1);
        af_watermark_destroy(wm);
        af_watermark_destroy(NULL);
}

/* Many offsets, finished in reverse: memory is reused and the final answer is exact. */
static void test_many_reverse_completions(void **state) {
        af_watermark_t *wm = af_watermark_new();
        uint32_t ep = 0;
        for (int round = 0; round < 3; round++) {
                int64_t base = round * 10000;
                for (int64_t o = 0; o < 5000; o++)
                        assert_int_equal(af_watermark_track(wm, 0, 0, base + o, &ep), AF_OK);
                for (int64_t o = 4999; o > 0; o--)
                        assert_int_equal(af_watermark_done(wm, 0, 0, ep, base + o), -1);
                assert_int_equal(af_watermark_done(wm, 0, 0, ep, base), base + 5000);
                assert_int_equal(af_watermark_pending(wm), 0);
        }
        af_watermark_destroy(wm);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_in_order_completions_advance_each_time),
                cmocka_unit_test(test_out_of_order_completions_wait_for_the_head),
                cmocka_unit_test(test_gaps_between_offsets),
                cmocka_unit_test(test_partitions_are_independent),
                cmocka_unit_test(test_redelivered_offset_is_refused),
                cmocka_unit_test(test_revoked_partition_ignores_late_completions),
                cmocka_unit_test(test_unknown_offset_is_ignored),
                cmocka_unit_test(test_many_reverse_completions),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
