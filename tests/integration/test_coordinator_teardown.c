/*
 * test_coordinator_teardown: the coordinator stops cleanly while Kafka still holds some of its
 * messages. A task type whose lane has no topic (the broker does not create topics) keeps its
 * Task message queued in librdkafka, waiting for the topic's metadata, so an admission stays
 * in flight: one from the `requests` topic (the intake) and one over the API. On SIGTERM the
 * drain deadline (1 s) passes, the final flush times out, and af_producer_destroy purges the
 * Task messages: their delivery reports run during teardown and reach admit.c, the intake and
 * the API. The coordinator must exit 0 — under AddressSanitizer, a report that reached a freed
 * intake (the order before: intake destroyed, then the producer) is a heap-use-after-free and
 * a non-zero exit. The idempotency keys of the unfinished admissions stay in Redis (a takeover
 * finishes them later) and no FAILED record is produced for them.
 *
 * Prints SKIP (and passes) only when AF_TEST_KAFKA or AF_TEST_REDIS_PORT is unset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <pthread.h>

#include "test_coordinator_harness.h"

static bool skipped;
static char api_key[64]; /* the API submission's Idempotency-Key */

static int setup(void **state) {
        H.extra_coordinator = "  drain_timeout: 1s\n";
        H.extra_task_types = "  stuck:\n    integration: noop\n    lane: nowhere\n";
        int rc = h_start("ctdn");
        skipped = rc == 1;
        return rc < 0 ? -1 : 0;
}

static int teardown(void **state) {
        if (!skipped && H.pid > 0)
                h_stop();
        h_delete_topics();
        return 0;
}

/* GET /metrics until the gauge of admissions in flight reaches want. */
static bool wait_inflight(int want, int timeout_ms) {
        int64_t end = af_clock_mono_ms() + timeout_ms;
        do {
                h_resp_t r = h_http("GET", "/metrics", NULL, NULL, NULL, 0);
                const char *p =
                        r.body ? strstr(r.body, "\nagentfleet_coordinator_admissions_in_flight ")
                               : NULL;
                long v = p ? strtol(p + strlen("\nagentfleet_coordinator_admissions_in_flight "),
                                    NULL, 10)
                           : -1;
                h_resp_free(&r);
                if (v >= want)
                        return true;
                h_sleep_ms(100);
        } while (af_clock_mono_ms() < end);
        return false;
}

static void *api_submit(void *arg) {
        h_resp_t *r = arg;
        *r = h_submit(H_TOKEN_A, "{\"type\":\"stuck\",\"payload\":{\"n\":2}}", api_key);
        return NULL;
}

static bool key_exists(const char *key) {
        redisContext *rc = redisConnect("127.0.0.1", H.redis_port);
        redisReply *rep =
                rc && !rc->err ? redisCommand(rc, "EXISTS af:idem:{tenant-a}:%s", key) : NULL;
        bool yes = rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
        if (rep)
                freeReplyObject(rep);
        if (rc)
                redisFree(rc);
        return yes;
}

static void test_purged_reports_after_teardown_touch_nothing_freed(void **state) {
        char json[512], id[AF_ULID_LEN + 1], key[64];
        h_resp_t api;
        pthread_t th;

        if (skipped)
                skip();
        af_ulid_new(id);
        snprintf(key, sizeof(key), "tdn-kafka-%s", id);
        snprintf(api_key, sizeof(api_key), "tdn-api-%s", id);
        snprintf(json, sizeof(json),
                 "{\"type\":\"stuck\",\"payload\":{\"n\":1},\"token\":\"%s\","
                 "\"idempotency_key\":\"%s\"}",
                 H_TOKEN_A, key);
        assert_true(h_produce("requests", key, json, strlen(json), "application/json"));
        memset(&api, 0, sizeof(api));
        assert_int_equal(pthread_create(&th, NULL, api_submit, &api), 0);
        /* Both admissions wait for the Task's delivery report. */
        assert_true(wait_inflight(2, 30000));

        /* Drain (1 s) ends with both in flight; flush (5 s) times out; purge; exit 0. */
        assert_int_equal(h_stop(), 0);
        pthread_join(th, NULL);
        /* The API request was not reported accepted: its answer (503, retry), given during
         * teardown, is written at once (af_http_server_closing), before the server goes. */
        assert_int_equal(api.status, 503);
        h_resp_free(&api);
        /* Left for a takeover: both keys stay. */
        assert_true(key_exists(key));
        assert_true(key_exists(api_key));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_purged_reports_after_teardown_touch_nothing_freed),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
