/*
 * test_coordinator_takeover: a coordinator killed between the idempotency key's SET NX and
 * the Task's acknowledgement must not lose the task (coordinator/admit.c, step 4b). The real
 * agentfleet-coordinator and agentfleet-worker run against the real Kafka and Redis; what a
 * dead coordinator leaves behind is planted by hand, which makes both windows deterministic:
 *
 *   (a) the key reserved, nothing produced: af:idem:{tenant}:<key> -> id, no index entry;
 *   (b) the key reserved and the QUEUED record in `results` (and so in the index), no Task.
 *
 * The key is planted with a PTTL that makes it older than the takeover grace (a minute left of
 * the 24 h coordinator.idempotency_ttl). A repeat with that key must publish the task again
 * under the same id and the worker must run it to exactly one final result on `results`, with
 * one Task message, one QUEUED record (none added in window b), a task.republished audit event
 * and the metric; a second repeat must not publish it again (the key now says published). A
 * key reserved just now (within the grace) is in doubt: a repeat over HTTP gets 503 with
 * Retry-After and nothing is published. The same in-doubt key on a request from the
 * `requests` topic -- a coordinator's crash redelivers exactly that -- is kept and retried
 * by the intake until the grace (8 s here) has passed, and then its task is published: the
 * redelivered request must not be acknowledged as "queued" while nobody publishes the task.
 *
 * The worker's integration points at a closed port, so every task ends FAILED
 * ("connection refused"): a final result, which is all this test needs.
 * Prints SKIP (and passes) only when AF_TEST_KAFKA or AF_TEST_REDIS_PORT is unset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>

#include "agentfleet/v1/audit.pb-c.h"
#include "agentfleet/v1/result.pb-c.h"
#include "agentfleet/v1/task.pb-c.h"
#include "test_coordinator_harness.h"

#define T_FINAL_MS  90000    /* generous: a loaded 2-core machine */
#define T_OLD_PTTL  60000    /* ms left of 24 h: reserved almost a day ago */
#define T_FRESH_TTL 86400000 /* the whole coordinator.idempotency_ttl: reserved just now */
#define T_GRACE     "8s"     /* coordinator.takeover_grace of this test's coordinator */

static bool skipped;
static pid_t worker_pid;
static char worker_log[320];

/* ---- Redis, as a dead coordinator left it ------------------------------------------------ */

static redisContext *redis(void) {
        redisContext *rc = redisConnect("127.0.0.1", H.redis_port);
        assert_non_null(rc);
        assert_int_equal(rc->err, 0);
        return rc;
}

static void plant_key(const char *key, const char *id, long long pttl_ms) {
        redisContext *rc = redis();
        redisReply *rep =
                redisCommand(rc, "SET af:idem:{tenant-a}:%s %s PX %lld", key, id, pttl_ms);
        assert_non_null(rep);
        assert_int_equal(rep->type, REDIS_REPLY_STATUS);
        freeReplyObject(rep);
        redisFree(rc);
}

static long long key_pttl(const char *key) {
        redisContext *rc = redis();
        redisReply *rep = redisCommand(rc, "PTTL af:idem:{tenant-a}:%s", key);
        long long v = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -3;
        freeReplyObject(rep);
        redisFree(rc);
        return v;
}

/* The QUEUED record a coordinator produces before the Task (admit.c, publish_queued). */
static void plant_queued(const char *id) {
        Agentfleet__V1__TaskResult res = AGENTFLEET__V1__TASK_RESULT__INIT;
        Agentfleet__V1__Timings tm = AGENTFLEET__V1__TIMINGS__INIT;
        uint8_t buf[1024];

        res.task_id = (char *) id;
        res.status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_QUEUED;
        res.attempt = 1;
        tm.created_at_ms = af_clock_wall_ms() - 3600 * 1000;
        res.timings = &tm;
        res.type = (char *) "noop";
        res.tenant = (char *) "tenant-a";
        res.principal = (char *) "alice";
        res.case_key = (char *) id;
        size_t len = agentfleet__v1__task_result__pack(&res, buf);
        assert_true(h_produce("results", id, buf, len, "application/x-protobuf"));
}

/* ---- what reached Kafka ------------------------------------------------------------------ */

typedef struct count_s {
        const char *id;
        int status; /* TaskResult status to count; -1: final ones */
} count_t;

static bool match_task_id(const rd_kafka_message_t *m, void *opaque) {
        const count_t *c = opaque;
        Agentfleet__V1__Task *t = agentfleet__v1__task__unpack(NULL, m->len, m->payload);
        bool hit = t && !strcmp(t->id, c->id);
        if (t)
                agentfleet__v1__task__free_unpacked(t, NULL);
        return hit;
}

static bool match_result(const rd_kafka_message_t *m, void *opaque) {
        const count_t *c = opaque;
        Agentfleet__V1__TaskResult *r =
                agentfleet__v1__task_result__unpack(NULL, m->len, m->payload);
        bool hit = false;
        if (r && !strcmp(r->task_id, c->id))
                hit = c->status >= 0
                              ? (int) r->status == c->status
                              : r->status != AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_QUEUED &&
                                        r->status !=
                                                AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_RUNNING;
        if (r)
                agentfleet__v1__task_result__free_unpacked(r, NULL);
        return hit;
}

static bool match_republished(const rd_kafka_message_t *m, void *opaque) {
        const count_t *c = opaque;
        Agentfleet__V1__AuditEvent *ev =
                agentfleet__v1__audit_event__unpack(NULL, m->len, m->payload);
        bool hit = ev && !strcmp(ev->action, "task.republished") && !strcmp(ev->task_id, c->id);
        if (ev)
                agentfleet__v1__audit_event__free_unpacked(ev, NULL);
        return hit;
}

/* Records of id on topic suffix matching fn, from the topic's beginning to its end: everything
 * acknowledged before the call is seen. */
static int count(const char *suffix, h_match_fn *fn, const char *id, int status) {
        count_t c = {.id = id, .status = status};
        return h_count_to_end(suffix, fn, &c);
}

/* POST a noop task with key; the answer must be the planted id, marked as a repeat. */
static void repeat_submit(const char *key, const char *want_id) {
        h_resp_t r = h_submit(H_TOKEN_A, "{\"type\":\"noop\",\"payload\":{\"n\":1}}", key);
        assert_int_equal(r.status, 202);
        assert_string_equal(h_str(r.json, "id"), want_id);
        assert_non_null(strstr(r.headers, "Idempotent-Replayed: true"));
        h_resp_free(&r);
}

static char *wait_final(const char *id) {
        char path[128];
        int64_t end = af_clock_mono_ms() + T_FINAL_MS;
        char *st = NULL;
        snprintf(path, sizeof(path), "/v1/tasks/%s", id);
        do {
                h_resp_t r = h_http("GET", path, H_TOKEN_A, NULL, NULL, 0);
                free(st);
                st = strdup(r.status == 200 ? h_str(r.json, "status") : "");
                h_resp_free(&r);
                if (!strcmp(st, "failed") || !strcmp(st, "succeeded"))
                        break;
                h_sleep_ms(200);
        } while (af_clock_mono_ms() < end);
        return st;
}

static long metric(const char *line_prefix) {
        h_resp_t r = h_http("GET", "/metrics", NULL, NULL, NULL, 0);
        const char *p = r.body ? strstr(r.body, line_prefix) : NULL;
        long v = p ? strtol(p + strlen(line_prefix), NULL, 10) : 0;
        h_resp_free(&r);
        return v;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_window_a_key_reserved_nothing_produced(void **state) {
        char id[AF_ULID_LEN + 1], key[64];
        if (skipped)
                skip();
        af_ulid_new(id);
        snprintf(key, sizeof(key), "tko-a-%s", id);
        plant_key(key, id, T_OLD_PTTL);

        repeat_submit(key, id);
        char *st = wait_final(id);
        assert_string_equal(st, "failed");
        free(st);
        /* The claim restarted the key's lifetime: the next repeat sees a young reservation. */
        assert_true(key_pttl(key) > T_FRESH_TTL - 600000);
        repeat_submit(key, id);

        h_sleep_ms(1000); /* let a wrong second Task or record arrive */
        assert_int_equal(count("tasks.default", match_task_id, id, 0), 1);
        assert_int_equal(
                count("results", match_result, id, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_QUEUED),
                1);
        assert_int_equal(count("results", match_result, id, -1), 1);
        assert_int_equal(count("audit", match_republished, id, 0), 1);
        assert_true(metric("agentfleet_coordinator_republished_total{reason=\"no_record\"} ") >= 1);
}

static void test_window_b_queued_but_no_task(void **state) {
        char id[AF_ULID_LEN + 1], key[64];
        if (skipped)
                skip();
        af_ulid_new(id);
        snprintf(key, sizeof(key), "tko-b-%s", id);
        plant_key(key, id, T_OLD_PTTL);
        plant_queued(id);
        /* The coordinator's index consumer picks the QUEUED record up from `results`. */
        char *st = h_wait_status(id, H_TOKEN_A, "queued", 30000);
        assert_string_equal(st, "queued");
        free(st);

        repeat_submit(key, id);
        st = wait_final(id);
        assert_string_equal(st, "failed");
        free(st);
        repeat_submit(key, id);

        h_sleep_ms(1000);
        assert_int_equal(count("tasks.default", match_task_id, id, 0), 1);
        /* Only the planted QUEUED: the Task alone was published again. */
        assert_int_equal(
                count("results", match_result, id, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_QUEUED),
                1);
        assert_int_equal(count("results", match_result, id, -1), 1);
        assert_int_equal(count("audit", match_republished, id, 0), 1);
        assert_true(metric("agentfleet_coordinator_republished_total{reason=\"queued_only\"} ") >=
                    1);
}

static void test_within_grace_http_repeat_is_told_to_retry(void **state) {
        char id[AF_ULID_LEN + 1], key[64];
        if (skipped)
                skip();
        af_ulid_new(id);
        snprintf(key, sizeof(key), "tko-g-%s", id);
        plant_key(key, id, T_FRESH_TTL);

        h_resp_t r = h_submit(H_TOKEN_A, "{\"type\":\"noop\",\"payload\":{\"n\":1}}", key);
        assert_int_equal(r.status, 503);
        assert_non_null(strstr(r.headers, "Retry-After: 1"));
        assert_non_null(strstr(h_str(r.json, "message"), "still being admitted"));
        assert_non_null(strstr(h_str(r.json, "message"), id));
        h_resp_free(&r);

        h_sleep_ms(1000); /* let a wrong Task or record arrive */
        assert_int_equal(count("tasks.default", match_task_id, id, 0), 0);
        assert_int_equal(
                count("results", match_result, id, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_QUEUED),
                0);
        assert_int_equal(count("audit", match_republished, id, 0), 0);
}

static void test_redelivered_request_waits_out_the_grace_then_publishes(void **state) {
        char id[AF_ULID_LEN + 1], key[64], json[512];
        if (skipped)
                skip();
        af_ulid_new(id);
        snprintf(key, sizeof(key), "tko-r-%s", id);
        plant_key(key, id, T_FRESH_TTL); /* a coordinator died on it just now */
        int64_t t0 = af_clock_mono_ms();
        snprintf(json, sizeof(json),
                 "{\"type\":\"noop\",\"payload\":{\"n\":2},\"token\":\"%s\","
                 "\"request_id\":\"req-%s\",\"idempotency_key\":\"%s\"}",
                 H_TOKEN_A, id, key);
        assert_true(h_produce("requests", key, json, strlen(json), "application/json"));

        char *st = wait_final(id);
        assert_string_equal(st, "failed");
        free(st);
        /* Not before the grace: until then the first admission might have been alive. */
        assert_true(af_clock_mono_ms() - t0 >= 8000);
        assert_int_equal(count("tasks.default", match_task_id, id, 0), 1);
        assert_int_equal(count("results", match_result, id, -1), 1);
        assert_int_equal(count("audit", match_republished, id, 0), 1);
}

/* ---- setup: the coordinator (harness) plus one worker on the same config ----------------- */

static int setup(void **state) {
        char group[160];
        const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        int rc;

        H.extra_coordinator = "  takeover_grace: " T_GRACE "\n";
        rc = h_start("ctko");

        skipped = rc == 1;
        if (rc)
                return rc < 0 ? -1 : 0;
        snprintf(group, sizeof(group), "worker.group_id=%sworkers", H.prefix);
        snprintf(worker_log, sizeof(worker_log), "%.160s/af-%sworker.log", tmp, H.prefix);
        const char *args[] = {"--config", H.config_path, "--set",
                              group,      "--set",       "kafka.session.timeout.ms=6000",
                              NULL};
        worker_pid = af_test_spawn("agentfleet-worker", worker_log, args);
        for (int i = 0; i < 600; i++) {
                int st;
                if (waitpid(worker_pid, &st, WNOHANG) == worker_pid) {
                        fprintf(stderr, "worker exited early; log: %s\n", worker_log);
                        worker_pid = 0;
                        return -1;
                }
                if (af_test_file_has(worker_log, "partitions assigned: "))
                        return 0;
                h_sleep_ms(100);
        }
        fprintf(stderr, "worker not ready; log: %s\n", worker_log);
        return -1;
}

static int teardown(void **state) {
        int st;
        if (skipped)
                return 0;
        if (worker_pid > 0) {
                kill(worker_pid, SIGTERM);
                for (int i = 0; i < 300 && waitpid(worker_pid, &st, WNOHANG) != worker_pid; i++)
                        h_sleep_ms(100);
                kill(worker_pid, SIGKILL);
                waitpid(worker_pid, &st, WNOHANG);
        }
        /* The coordinator drains and exits 0, its teardown clean (sanitizer builds). */
        int rc = H.pid > 0 && h_stop() != 0 ? -1 : 0;
        h_delete_topics();
        return rc;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_window_a_key_reserved_nothing_produced),
                cmocka_unit_test(test_window_b_queued_but_no_task),
                cmocka_unit_test(test_within_grace_http_repeat_is_told_to_retry),
                cmocka_unit_test(test_redelivered_request_waits_out_the_grace_then_publishes),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
