/*
 * test_simagent_ledger: the side-effect accounting that the demo's "duplicate side effects:
 * 0" rests on — replays by key, duplicates by business entity, stale fences refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../simagent/ledger.c"

/* Check, and record when told to apply. @returns the verdict. */
static af_sim_ledger_verdict_t apply(af_sim_ledger_t *l, const char *key, const char *entity,
                                     const char *task, int64_t fence, const char *body) {
        af_sim_effect_t e = {.idem_key = key, .entity = entity, .task_id = task, .fence = fence};
        int status = 0;
        const char *stored = NULL;
        int64_t highest = -1;
        af_sim_ledger_verdict_t v = af_sim_ledger_check(l, &e, &status, &stored, &highest);

        if (v == AF_SIM_LEDGER_APPLY)
                af_sim_ledger_record(l, &e, 200, body);
        return v;
}

static void test_same_key_is_replayed_with_stored_answer(void **state) {
        af_sim_ledger_t *l = af_sim_ledger_new();
        af_sim_effect_t e = {.idem_key = "k1", .entity = "crm_update:C-1:triaged", .fence = -1};
        af_sim_ledger_stats_t st;
        int status = 0;
        const char *stored = NULL;
        int64_t highest = 0;

        assert_int_equal(apply(l, "k1", "crm_update:C-1:triaged", NULL, -1, "{\"n\":1}"),
                         AF_SIM_LEDGER_APPLY);
        assert_int_equal(af_sim_ledger_check(l, &e, &status, &stored, &highest),
                         AF_SIM_LEDGER_REPLAY);
        assert_int_equal(status, 200);
        assert_string_equal(stored, "{\"n\":1}");
        af_sim_ledger_stats(l, &st);
        assert_int_equal(st.applied, 1);
        assert_int_equal(st.replayed, 1);
        assert_int_equal(st.duplicates, 0);
        af_sim_ledger_destroy(l);
}

static void test_other_key_same_entity_is_a_duplicate(void **state) {
        af_sim_ledger_t *l = af_sim_ledger_new();
        af_sim_ledger_stats_t st;

        apply(l, "k1", "crm_update:C-1:triaged", NULL, -1, "{}");
        apply(l, "k2", "crm_update:C-1:triaged", NULL, -1, "{}");
        apply(l, "k3", "crm_update:C-2:triaged", NULL, -1, "{}"); /* other claim: fine */
        apply(l, "k4", "crm_update:C-1:closed", NULL, -1, "{}");  /* other operation */
        af_sim_ledger_stats(l, &st);
        assert_int_equal(st.applied, 4);
        assert_int_equal(st.duplicates, 1);
        af_sim_ledger_destroy(l);
}

static void test_no_key_applies_every_time(void **state) {
        af_sim_ledger_t *l = af_sim_ledger_new();
        af_sim_ledger_stats_t st;

        apply(l, NULL, "ticket_create:C-1:default", NULL, -1, "{}");
        apply(l, NULL, "ticket_create:C-1:default", NULL, -1, "{}");
        apply(l, NULL, NULL, NULL, -1, "{}");
        af_sim_ledger_stats(l, &st);
        assert_int_equal(st.applied, 3);
        assert_int_equal(st.replayed, 0);
        assert_int_equal(st.duplicates, 1);
        af_sim_ledger_destroy(l);
}

static void test_stale_fence_is_refused(void **state) {
        af_sim_ledger_t *l = af_sim_ledger_new();
        af_sim_effect_t e = {
                .idem_key = "k2", .entity = "crm_update:C-1:triaged", .task_id = "T1", .fence = 3};
        af_sim_ledger_stats_t st;
        int status = 0;
        const char *stored = NULL;
        int64_t highest = 0;

        assert_int_equal(apply(l, "k1", "crm_update:C-1:triaged", "T1", 5, "{}"),
                         AF_SIM_LEDGER_APPLY);
        assert_int_equal(af_sim_ledger_check(l, &e, &status, &stored, &highest),
                         AF_SIM_LEDGER_FENCED);
        assert_int_equal(highest, 5);
        /* The same fence, or a higher one, may still apply (counted as a duplicate). */
        assert_int_equal(apply(l, "k3", "crm_update:C-1:triaged", "T1", 5, "{}"),
                         AF_SIM_LEDGER_APPLY);
        assert_int_equal(apply(l, "k4", "crm_update:C-1:triaged", "T1", 6, "{}"),
                         AF_SIM_LEDGER_APPLY);
        assert_int_equal(apply(l, "k5", "crm_update:C-1:triaged", "T1", 5, "{}"),
                         AF_SIM_LEDGER_FENCED);
        /* Fences of another task's lease are not comparable: not refused. */
        assert_int_equal(apply(l, "k6", "crm_update:C-1:triaged", "T2", 1, "{}"),
                         AF_SIM_LEDGER_APPLY);
        af_sim_ledger_stats(l, &st);
        assert_int_equal(st.fenced, 2);
        assert_int_equal(st.max_fence, 6);
        assert_int_equal(st.applied, 4);
        af_sim_ledger_destroy(l);
}

static void test_replay_wins_over_fence(void **state) {
        af_sim_ledger_t *l = af_sim_ledger_new();
        af_sim_ledger_stats_t st;

        apply(l, "k1", "crm_update:C-1:triaged", "T1", 2, "{}");
        apply(l, "k2", "crm_update:C-1:triaged", "T1", 4, "{}");
        /* A stale holder retrying its own key gets its stored answer: nothing is applied. */
        assert_int_equal(apply(l, "k1", "crm_update:C-1:triaged", "T1", 2, "{}"),
                         AF_SIM_LEDGER_REPLAY);
        af_sim_ledger_stats(l, &st);
        assert_int_equal(st.applied, 2);
        af_sim_ledger_destroy(l);
}

static void test_reset_forgets_everything(void **state) {
        af_sim_ledger_t *l = af_sim_ledger_new();
        af_sim_ledger_stats_t st;

        apply(l, "k1", "crm_update:C-1:triaged", "T1", 9, "{}");
        af_sim_ledger_reset(l);
        af_sim_ledger_stats(l, &st);
        assert_int_equal(st.applied + st.max_fence + st.duplicates, 0);
        assert_int_equal(apply(l, "k1", "crm_update:C-1:triaged", "T1", 1, "{}"),
                         AF_SIM_LEDGER_APPLY);
        af_sim_ledger_destroy(l);
        af_sim_ledger_destroy(NULL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_same_key_is_replayed_with_stored_answer),
                cmocka_unit_test(test_other_key_same_entity_is_a_duplicate),
                cmocka_unit_test(test_no_key_applies_every_time),
                cmocka_unit_test(test_stale_fence_is_refused),
                cmocka_unit_test(test_replay_wins_over_fence),
                cmocka_unit_test(test_reset_forgets_everything),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
