/*
 * Integration test of libcommon/lease.c on a real Redis (AF_TEST_REDIS_PORT): the lease life
 * cycle a worker relies on — acquire, held by another, renew, finish with a binary TaskResult,
 * DONE re-delivers exactly those bytes, a holder whose lease expired is LOST and cannot
 * publish, the fencing number grows across owners, a cancel request reaches both the
 * holder (renew) and the next acquirer, and of many racing acquirers exactly one wins; what an
 * acquire answers when several of done, cancel and a live lease exist at once (done, then
 * cancel, then held), that only acquisitions move the fence, which carries on from whatever
 * the fence key holds and never falls back once that key is gone (Redis's clock seeds it),
 * that a finished task keeps only its done record, and the keys' ttls. Each case uses fresh
 * ULID task ids, so runs never see each other's keys.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "lease.h"
#include "loop.h"
#include "redis.h"

#define WATCHDOG_MS 20000 /* only ends a hung run; never a timing assertion */

typedef struct {
        af_loop_t *loop;
        af_redis_t *r;
        af_timer_t *watchdog;
        af_timer_t *sleeper;
        bool watchdog_fired;
        /* last lease callback */
        int calls;
        bool in_call;
        bool reentrant;
        af_lease_status_t st;
        bool has_err;
        af_error_t err;
        char data[512];
        size_t data_len;
        char cancel_task[64];
        /* last plain command */
        char reply_str[512];
        int reply_type;
        long long reply_int;
} fx_t;

static fx_t fx;

static void watchdog_fire(void *opaque) {
        fx.watchdog_fired = true;
        af_loop_stop(fx.loop);
}

static void stop_fire(void *opaque) {
        af_loop_stop(fx.loop);
}

static void state_cb(af_redis_t *r, bool up, void *opaque) {
        if (up)
                af_loop_stop(fx.loop);
}

static void run(void) {
        af_timer_start(fx.watchdog, WATCHDOG_MS, false);
        assert_int_equal(af_loop_run(fx.loop), 0);
        af_timer_stop(fx.watchdog);
        assert_false(fx.watchdog_fired);
}

static void sleep_ms(int64_t ms) {
        af_timer_start(fx.sleeper, ms, false);
        run();
}

static void lease_cb(af_lease_t *lease, af_lease_status_t st, const char *data, size_t len,
                     const af_error_t *err, void *opaque) {
        fx.calls++;
        if (fx.in_call)
                fx.reentrant = true;
        fx.st = st;
        fx.has_err = err != NULL;
        if (err)
                fx.err = *err;
        fx.data_len = 0;
        if (data) {
                assert_true(len <= sizeof(fx.data));
                memcpy(fx.data, data, len);
                fx.data_len = len;
        }
        if (lease)
                snprintf(fx.cancel_task, sizeof(fx.cancel_task), "%s", lease->task_id);
        af_loop_stop(fx.loop);
}

/* Each helper runs one operation to its callback and checks it came exactly once, from the
 * loop, without a Redis error; it returns the status. */
static void finish_op(void) {
        fx.in_call = false;
        run();
        assert_int_equal(fx.calls, 1);
        assert_false(fx.reentrant);
}

static af_lease_status_t op_expect_ok(void) {
        finish_op();
        if (fx.has_err)
                fail_msg("lease error: %s", fx.err.msg);
        return fx.st;
}

#define BEGIN() (fx.calls = 0, fx.in_call = true)

static af_lease_status_t acquire(af_lease_t *l) {
        BEGIN();
        af_lease_acquire(fx.r, l, lease_cb, NULL);
        return op_expect_ok();
}

static af_lease_status_t renew(af_lease_t *l) {
        BEGIN();
        af_lease_renew(fx.r, l, lease_cb, NULL);
        return op_expect_ok();
}

static af_lease_status_t finish(af_lease_t *l, const void *res, size_t len) {
        BEGIN();
        af_lease_finish(fx.r, l, res, len, 60000, lease_cb, NULL);
        return op_expect_ok();
}

static af_lease_status_t release(af_lease_t *l) {
        BEGIN();
        af_lease_release(fx.r, l, lease_cb, NULL);
        return op_expect_ok();
}

static af_lease_status_t cancel(const char *task_id) {
        BEGIN();
        af_lease_request_cancel(fx.r, task_id, 60000, lease_cb, NULL);
        return op_expect_ok();
}

static void cmd_cb(af_redis_t *r, const redisReply *reply, const af_error_t *err, void *opaque) {
        fx.calls++;
        fx.reply_type = reply ? reply->type : -1;
        fx.reply_str[0] = '\0';
        fx.reply_int = reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0;
        if (reply && reply->type == REDIS_REPLY_STRING)
                snprintf(fx.reply_str, sizeof(fx.reply_str), "%.*s", (int) reply->len, reply->str);
        af_loop_stop(fx.loop);
}

/* Run "<cmd> af:{task_id}:what" (GET, PTTL, EXISTS, DEL); its reply in fx. */
static void key_command(const char *cmd, const char *task_id, const char *what) {
        char key[128];
        snprintf(key, sizeof(key), "af:{%s}:%s", task_id, what);
        fx.calls = 0;
        af_redis_command(fx.r, cmd_cb, NULL, "%s %s", cmd, key);
        run();
        assert_int_equal(fx.calls, 1);
}

static void get_key(const char *task_id, const char *what) {
        key_command("GET", task_id, what);
}

/* A command on af:{task_id}:what that answers an integer (PTTL, EXISTS, DEL): that integer. */
static long long key_int(const char *cmd, const char *task_id, const char *what) {
        key_command(cmd, task_id, what);
        assert_int_equal(fx.reply_type, REDIS_REPLY_INTEGER);
        return fx.reply_int;
}

/* SET af:{task_id}:what value [PX ms], as another worker (or an older version) would. */
static void set_key(const char *task_id, const char *what, const char *value, int64_t px_ms) {
        char key[128];
        snprintf(key, sizeof(key), "af:{%s}:%s", task_id, what);
        fx.calls = 0;
        if (px_ms > 0)
                af_redis_command(fx.r, cmd_cb, NULL, "SET %s %s PX %lld", key, value,
                                 (long long) px_ms);
        else
                af_redis_command(fx.r, cmd_cb, NULL, "SET %s %s", key, value);
        run();
        assert_int_equal(fx.calls, 1);
}

static long long now_us_reply;

static void time_cb(af_redis_t *r, const redisReply *reply, const af_error_t *err, void *opaque) {
        fx.calls++;
        now_us_reply = -1;
        if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2)
                now_us_reply = strtoll(reply->element[0]->str, NULL, 10) * 1000000 +
                               strtoll(reply->element[1]->str, NULL, 10);
        af_loop_stop(fx.loop);
}

/* Redis's clock (TIME) in microseconds. */
static long long redis_now_us(void) {
        fx.calls = 0;
        af_redis_command(fx.r, time_cb, NULL, "TIME");
        run();
        assert_int_equal(fx.calls, 1);
        assert_true(now_us_reply > 0);
        return now_us_reply;
}

static void new_lease(af_lease_t *l, const char *task_id, const char *owner, int64_t ttl_ms) {
        memset(l, 0, sizeof(*l));
        snprintf(l->task_id, sizeof(l->task_id), "%s", task_id);
        snprintf(l->owner, sizeof(l->owner), "%s", owner);
        l->ttl_ms = ttl_ms;
}

/* A fresh task id and two workers' leases on it, a and b (30 s each). */
static void new_pair(char id[AF_ULID_LEN + 1], af_lease_t *a, af_lease_t *b) {
        af_ulid_new(id);
        new_lease(a, id, "worker-a", 30000);
        new_lease(b, id, "worker-b", 30000);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_acquire_held_renew_finish_done(void **state) {
        char id[AF_ULID_LEN + 1];
        af_ulid_new(id);
        af_lease_t a, b;
        new_lease(&a, id, "worker-a", 30000);
        new_lease(&b, id, "worker-b:with:colons", 30000);

        assert_int_equal(acquire(&a), AF_LEASE_ACQUIRED);
        assert_true(a.fence >= 1);
        assert_int_equal(strlen(a.token), 32);
        assert_int_equal(strspn(a.token, "0123456789abcdef"), 32);

        /* The stored value names token, fence and owner. */
        char want[256];
        snprintf(want, sizeof(want), "%s:%lld:worker-a", a.token, (long long) a.fence);
        get_key(id, "lease");
        assert_string_equal(fx.reply_str, want);

        assert_int_equal(acquire(&b), AF_LEASE_HELD);
        assert_int_equal(b.token[0], '\0'); /* not filled unless ACQUIRED */
        assert_int_equal(renew(&a), AF_LEASE_OK);
        assert_int_equal(renew(&b), AF_LEASE_LOST); /* b never held it */

        /* A TaskResult is binary: NULs and high bytes must survive. */
        static const unsigned char result[] = {0x08, 0x01, 0x00, 0x12, 0xff, 0x00, 'o', 'k'};
        assert_int_equal(finish(&a, result, sizeof(result)), AF_LEASE_OK);
        get_key(id, "lease");
        assert_int_equal(fx.reply_type, REDIS_REPLY_NIL); /* released */

        assert_int_equal(acquire(&b), AF_LEASE_DONE);
        assert_int_equal(fx.data_len, sizeof(result));
        assert_memory_equal(fx.data, result, sizeof(result));

        /* Once finished, the old token is no longer an owner. */
        assert_int_equal(finish(&a, result, sizeof(result)), AF_LEASE_LOST);
        assert_int_equal(release(&a), AF_LEASE_LOST);
}

static void test_lost_after_expiry_and_fence_grows(void **state) {
        char id[AF_ULID_LEN + 1];
        af_ulid_new(id);
        af_lease_t a, b, c;
        new_lease(&a, id, "worker-a", 100);
        new_lease(&b, id, "worker-b", 30000);
        new_lease(&c, id, "worker-c", 30000);

        assert_int_equal(acquire(&a), AF_LEASE_ACQUIRED);
        sleep_ms(300); /* past a's 100 ms ttl: Redis has expired it */
        assert_int_equal(renew(&a), AF_LEASE_LOST);

        assert_int_equal(acquire(&b), AF_LEASE_ACQUIRED);
        assert_true(b.fence > a.fence);
        assert_string_not_equal(a.token, b.token);

        /* The stale holder can neither publish nor release b's lease. */
        assert_int_equal(finish(&a, "stale", 5), AF_LEASE_LOST);
        get_key(id, "done");
        assert_int_equal(fx.reply_type, REDIS_REPLY_NIL);
        assert_int_equal(release(&a), AF_LEASE_LOST);
        assert_int_equal(renew(&b), AF_LEASE_OK);

        /* Hand back (shutdown): the next owner gets a higher fence again. */
        assert_int_equal(release(&b), AF_LEASE_OK);
        assert_int_equal(acquire(&c), AF_LEASE_ACQUIRED);
        assert_true(c.fence > b.fence);
        int64_t prev = c.fence;
        for (int i = 0; i < 3; i++) {
                assert_int_equal(release(&c), AF_LEASE_OK);
                assert_int_equal(acquire(&c), AF_LEASE_ACQUIRED);
                assert_true(c.fence > prev);
                prev = c.fence;
        }
        assert_int_equal(release(&c), AF_LEASE_OK);
}

static void test_cancel_reaches_holder_and_next_acquirer(void **state) {
        char id[AF_ULID_LEN + 1];
        af_lease_t a, b;
        new_pair(id, &a, &b);

        assert_int_equal(acquire(&a), AF_LEASE_ACQUIRED);
        assert_int_equal(cancel(id), AF_LEASE_OK);
        assert_string_equal(fx.cancel_task, id);
        assert_int_equal(renew(&a), AF_LEASE_CANCELLED); /* still ours: stop it */
        assert_int_equal(release(&a), AF_LEASE_OK);
        assert_int_equal(acquire(&b), AF_LEASE_CANCELLED);
        assert_int_equal(b.token[0], '\0');

        /* Cancel before start: a task never acquired never runs. */
        char id2[AF_ULID_LEN + 1];
        af_ulid_new(id2);
        assert_int_equal(cancel(id2), AF_LEASE_OK);
        af_lease_t d;
        new_lease(&d, id2, "worker-d", 30000);
        assert_int_equal(acquire(&d), AF_LEASE_CANCELLED);
}

/* When several of done, cancel and a live lease exist at once, an acquire answers in that
 * order: a recorded result wins (re-emit it), then a cancel (even over a live holder), then
 * held. */
static void test_acquire_precedence_done_cancel_held(void **state) {
        char id[AF_ULID_LEN + 1];
        af_lease_t a, b;
        new_pair(id, &a, &b);

        assert_int_equal(acquire(&a), AF_LEASE_ACQUIRED);
        assert_int_equal(acquire(&b), AF_LEASE_HELD);
        assert_int_equal(cancel(id), AF_LEASE_OK);
        assert_int_equal(acquire(&b), AF_LEASE_CANCELLED); /* cancel wins over a live lease */
        assert_int_equal(b.token[0], '\0');
        set_key(id, "done", "stored-result", 60000);
        assert_int_equal(acquire(&b), AF_LEASE_DONE); /* done wins over cancel and lease */
        assert_int_equal(fx.data_len, strlen("stored-result"));
        assert_memory_equal(fx.data, "stored-result", fx.data_len);
        /* DONE is answered again, each time, with the same bytes. */
        assert_int_equal(acquire(&b), AF_LEASE_DONE);
        assert_memory_equal(fx.data, "stored-result", fx.data_len);
        /* The holder is still the holder: none of that touched its lease. */
        assert_int_equal(renew(&a), AF_LEASE_CANCELLED);
        assert_int_equal(release(&a), AF_LEASE_OK);
}

/* Only an acquisition moves the fence (HELD, DONE, CANCELLED answers do not), it carries on
 * from the value the fence key holds when that is ahead of Redis's clock (strictly growing
 * even if the clock stepped back), and each acquisition gives the fence key its full ttl
 * again. Finishing deletes the fence key: the done record stops every later owner. */
static void test_fence_moves_only_on_acquire_and_carries_on(void **state) {
        char id[AF_ULID_LEN + 1], ahead[32];
        af_lease_t a, b;
        new_pair(id, &a, &b);

        /* A last fence an hour ahead of the clock: the next ones count on from it. */
        long long last = redis_now_us() + 3600LL * 1000000;
        snprintf(ahead, sizeof(ahead), "%lld", last);
        set_key(id, "fence", ahead, 60000); /* a short ttl, to see the acquire renew it */
        assert_int_equal(acquire(&a), AF_LEASE_ACQUIRED);
        assert_int_equal(a.fence, last + 1);
        get_key(id, "fence");
        assert_int_equal(strtoll(fx.reply_str, NULL, 10), last + 1); /* written whole */
        long long ttl = key_int("PTTL", id, "fence");
        assert_true(ttl > AF_LEASE_FENCE_TTL_MS - 60000 && ttl <= AF_LEASE_FENCE_TTL_MS);
        ttl = key_int("PTTL", id, "lease");
        assert_true(ttl > 0 && ttl <= 30000);

        for (int i = 0; i < 3; i++)
                assert_int_equal(acquire(&b), AF_LEASE_HELD);
        assert_int_equal(release(&a), AF_LEASE_OK);
        assert_int_equal(acquire(&b), AF_LEASE_ACQUIRED);
        assert_int_equal(b.fence, last + 2); /* the HELD answers did not count */

        /* Expired and taken over: still growing. */
        af_lease_t c;
        new_lease(&c, id, "worker-c", 100);
        assert_int_equal(release(&b), AF_LEASE_OK);
        assert_int_equal(acquire(&c), AF_LEASE_ACQUIRED);
        assert_int_equal(c.fence, last + 3);
        sleep_ms(300);
        assert_int_equal(acquire(&a), AF_LEASE_ACQUIRED);
        assert_int_equal(a.fence, last + 4);

        /* Finished: the done record has done_ttl_ms, acquires answer DONE, and the task's
         * only key left is the done record. */
        static const char result[] = "r";
        assert_int_equal(finish(&a, result, 1), AF_LEASE_OK);
        ttl = key_int("PTTL", id, "done");
        assert_true(ttl > 0 && ttl <= 60000);
        assert_int_equal(acquire(&b), AF_LEASE_DONE);
        assert_int_equal(key_int("EXISTS", id, "fence"), 0);
        assert_int_equal(key_int("EXISTS", id, "lease"), 0);
}

/* Without a fence key (a first acquire, a fence from before this scheme, or a Redis that came
 * back empty) the fence is Redis's clock in microseconds, so it is still above every fence
 * the task was given before: a stale holder's late call stays refusable. */
static void test_fence_never_falls_back_when_its_key_is_lost(void **state) {
        char id[AF_ULID_LEN + 1];
        af_lease_t a, b;
        new_pair(id, &a, &b);

        long long before = redis_now_us();
        assert_int_equal(acquire(&a), AF_LEASE_ACQUIRED);
        long long after = redis_now_us();
        assert_true(a.fence >= before && a.fence <= after);

        /* Redis loses the fence key (restart, eviction, flush) while a still holds its lease
         * and a late call of its may yet arrive: the next owner's fence is higher anyway. */
        assert_int_equal(release(&a), AF_LEASE_OK);
        assert_int_equal(key_int("DEL", id, "fence"), 1);
        assert_int_equal(acquire(&b), AF_LEASE_ACQUIRED);
        assert_true(b.fence > a.fence);

        /* A small counter from the former INCR scheme: the clock is above it. */
        assert_int_equal(release(&b), AF_LEASE_OK);
        set_key(id, "fence", "41", 0);
        assert_int_equal(acquire(&a), AF_LEASE_ACQUIRED);
        assert_true(a.fence > b.fence);

        /* An unreadable fence value, or one too large to count on exactly in Lua's doubles,
         * is no reason to refuse the task: the clock decides. */
        static const char *const odd[] = {"garbage", "9007199254740991", "123456789012345678901"};
        for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
                assert_int_equal(release(&a), AF_LEASE_OK);
                set_key(id, "fence", odd[i], 0);
                int64_t prev = a.fence;
                before = redis_now_us();
                assert_int_equal(acquire(&a), AF_LEASE_ACQUIRED);
                assert_true(a.fence > prev && a.fence >= before && a.fence <= redis_now_us());
        }
        assert_int_equal(release(&a), AF_LEASE_OK);
}

/* Many workers race for one task (a redelivery fan-out): exactly one wins. */
#define RACERS 32
static int race_acquired, race_held, race_other, race_done;

static void race_cb(af_lease_t *lease, af_lease_status_t st, const char *data, size_t len,
                    const af_error_t *err, void *opaque) {
        if (err)
                race_other++;
        else if (st == AF_LEASE_ACQUIRED)
                race_acquired++;
        else if (st == AF_LEASE_HELD)
                race_held++;
        else
                race_other++;
        if (++race_done == RACERS)
                af_loop_stop(fx.loop);
}

static void test_racing_acquires_one_winner(void **state) {
        char id[AF_ULID_LEN + 1];
        af_ulid_new(id);
        static af_lease_t racers[RACERS];
        for (int i = 0; i < RACERS; i++) {
                char owner[32];
                snprintf(owner, sizeof(owner), "worker-%d", i);
                new_lease(&racers[i], id, owner, 30000);
                af_lease_acquire(fx.r, &racers[i], race_cb, NULL);
        }
        run();
        assert_int_equal(race_done, RACERS);
        assert_int_equal(race_acquired, 1);
        assert_int_equal(race_held, RACERS - 1);
        assert_int_equal(race_other, 0);
        int winners = 0;
        for (int i = 0; i < RACERS; i++)
                if (racers[i].token[0]) {
                        winners++;
                        assert_int_equal(release(&racers[i]), AF_LEASE_OK);
                }
        assert_int_equal(winners, 1);
}

static void test_bad_task_id_refused_from_loop(void **state) {
        af_lease_t l;
        new_lease(&l, "has}brace", "w", 1000);
        BEGIN();
        af_lease_acquire(fx.r, &l, lease_cb, NULL);
        finish_op();
        assert_true(fx.has_err);
        assert_int_equal(fx.err.err, AF_ERR_INVALID);
        assert_false(af_error_is_retriable(&fx.err));

        new_lease(&l, "", "w", 1000);
        BEGIN();
        af_lease_renew(fx.r, &l, lease_cb, NULL);
        finish_op();
        assert_int_equal(fx.err.err, AF_ERR_INVALID);

        BEGIN();
        af_lease_request_cancel(fx.r, NULL, 1000, lease_cb, NULL);
        finish_op();
        assert_int_equal(fx.err.err, AF_ERR_INVALID);
}

static int setup(void **state) {
        char errstr[256];
        fx.loop = af_loop_new(errstr, sizeof(errstr));
        assert_non_null(fx.loop);
        fx.watchdog = af_timer_new(fx.loop, watchdog_fire, NULL);
        fx.sleeper = af_timer_new(fx.loop, stop_fire, NULL);
        af_redis_opts_t opts = {.host = "127.0.0.1",
                                .port = atoi(getenv("AF_TEST_REDIS_PORT")),
                                .command_timeout_ms = 5000,
                                .reconnect_min_ms = 50,
                                .reconnect_max_ms = 500};
        fx.r = af_redis_new(fx.loop, &opts, errstr, sizeof(errstr));
        assert_non_null(fx.r);
        af_redis_set_state_cb(fx.r, state_cb, NULL);
        run(); /* until up */
        assert_true(af_redis_is_up(fx.r));
        return 0;
}

static int teardown(void **state) {
        af_redis_destroy(fx.r);
        af_timer_destroy(fx.watchdog);
        af_timer_destroy(fx.sleeper);
        af_loop_destroy(fx.loop);
        return 0;
}

int main(void) {
        if (!getenv("AF_TEST_REDIS_PORT")) {
                printf("SKIP: AF_TEST_REDIS_PORT is not set\n");
                return 0;
        }
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_acquire_held_renew_finish_done),
                cmocka_unit_test(test_lost_after_expiry_and_fence_grows),
                cmocka_unit_test(test_cancel_reaches_holder_and_next_acquirer),
                cmocka_unit_test(test_acquire_precedence_done_cancel_held),
                cmocka_unit_test(test_fence_moves_only_on_acquire_and_carries_on),
                cmocka_unit_test(test_fence_never_falls_back_when_its_key_is_lost),
                cmocka_unit_test(test_racing_acquires_one_winner),
                cmocka_unit_test(test_bad_task_id_refused_from_loop),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
