/*
 * The coordinator's HTTP API against the real Kafka and Redis, with the real binary:
 * submit -> the Task is on tasks.<lane> and visible via GET; Idempotency-Key returns the same
 * task; tenant isolation; a bad token is 401 JSON plus an auth.denied audit event (without the
 * token); oversize 413 and malformed 400 as JSON; listing with filters and pages; the index
 * follows `results` (final wins over a late RUNNING); cancel before start and 409 after the
 * end; the coordinator's own QUEUED record is indexed once; SIGTERM drains and exits 0. No
 * worker runs here.
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

static bool skipped;

#define INDEX_TTL_MS (3LL * 24 * 3600 * 1000)

static int setup(void **state) {
        H.extra_coordinator = "  index_ttl: 3d\n"; /* not the default (7d): see it applied */
        int rc = h_start("capi");
        skipped = rc == 1;
        return rc < 0 ? -1 : 0;
}

static int teardown(void **state) {
        if (!skipped && H.pid > 0)
                h_stop();
        h_delete_topics();
        return 0;
}

/* Submit a noop task and return its id (malloc'ed). */
static char *submit_noop(const char *token, const char *extra_json) {
        char body[512];
        snprintf(body, sizeof(body), "{\"type\":\"noop\",\"payload\":{\"n\":1}%s}",
                 extra_json ? extra_json : "");
        h_resp_t r = h_submit(token, body, NULL);
        assert_int_equal(r.status, 202);
        char *id = strdup(h_str(r.json, "id"));
        h_resp_free(&r);
        return id;
}

/* ---- matchers ---------------------------------------------------------------------------- */

typedef struct task_match_s {
        const char *id;
        Agentfleet__V1__Task *task; /* copy of the match, caller frees */
} task_match_t;

static bool match_task(const rd_kafka_message_t *m, void *opaque) {
        task_match_t *tm = opaque;
        Agentfleet__V1__Task *t = agentfleet__v1__task__unpack(NULL, m->len, m->payload);
        if (t && !strcmp(t->id, tm->id)) {
                tm->task = t;
                return true;
        }
        if (t)
                agentfleet__v1__task__free_unpacked(t, NULL);
        return false;
}

typedef struct audit_match_s {
        const char *action;
        const char *forbidden; /* must not appear in the record bytes */
        bool leaked;
        char actor[64];
} audit_match_t;

static bool match_audit(const rd_kafka_message_t *m, void *opaque) {
        audit_match_t *am = opaque;
        Agentfleet__V1__AuditEvent *ev =
                agentfleet__v1__audit_event__unpack(NULL, m->len, m->payload);
        bool hit = false;
        if (ev && !strcmp(ev->action, am->action)) {
                hit = true;
                snprintf(am->actor, sizeof(am->actor), "%s", ev->actor);
                if (memmem(m->payload, m->len, am->forbidden, strlen(am->forbidden)))
                        am->leaked = true;
        }
        if (ev)
                agentfleet__v1__audit_event__free_unpacked(ev, NULL);
        return hit;
}

typedef struct admitted_match_s {
        const char *task_id;
        char *details; /* copy, caller frees */
} admitted_match_t;

static bool match_admitted(const rd_kafka_message_t *m, void *opaque) {
        admitted_match_t *am = opaque;
        Agentfleet__V1__AuditEvent *ev =
                agentfleet__v1__audit_event__unpack(NULL, m->len, m->payload);
        bool hit = ev && !strcmp(ev->action, "task.admitted") && !strcmp(ev->task_id, am->task_id);
        if (hit)
                am->details = strdup(ev->details);
        if (ev)
                agentfleet__v1__audit_event__free_unpacked(ev, NULL);
        return hit;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_submit_publishes_and_get_shows_it(void **state) {
        if (skipped)
                skip();
        h_resp_t r = h_submit(H_TOKEN_A,
                              "{\"type\":\"claim.check\",\"payload\":{\"claim_id\":\"C-9\","
                              "\"amount\":172.46},\"case_key\":\"C-9\",\"priority\":3}",
                              NULL);
        assert_int_equal(r.status, 202);
        assert_string_equal(h_str(r.json, "status"), "queued");
        assert_string_equal(h_str(r.json, "tenant"), "tenant-a");
        assert_string_equal(h_str(r.json, "principal"), "alice");
        assert_string_equal(h_str(r.json, "lane"), "claims");
        assert_string_equal(h_str(json_object_get(r.json, "versions"), "config_hash"),
                            H.config_hash);
        char *id = strdup(h_str(r.json, "id"));
        assert_true(af_ulid_valid(id));
        h_resp_free(&r);

        /* The Task is on tasks.claims, keyed by the case key, as protobuf. */
        task_match_t tm = {.id = id};
        assert_int_equal(h_scan("tasks.claims", match_task, &tm, 20000, false), 1);
        assert_string_equal(tm.task->case_key, "C-9");
        assert_string_equal(tm.task->tenant, "tenant-a");
        assert_int_equal(tm.task->priority, 3);
        assert_int_equal(tm.task->attempt, 1);
        assert_string_equal(tm.task->versions->config_hash, H.config_hash);
        /* The amount as it was written (not jansson's default 172.46000000000001). */
        assert_string_equal(tm.task->payload, "{\"amount\":172.46,\"claim_id\":\"C-9\"}");
        agentfleet__v1__task__free_unpacked(tm.task, NULL);

        /* And visible through the index right away. */
        char path[128];
        snprintf(path, sizeof(path), "/v1/tasks/%s", id);
        r = h_http("GET", path, H_TOKEN_A, NULL, NULL, 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(h_str(r.json, "status"), "queued");
        assert_string_equal(h_str(r.json, "type"), "claim.check");
        assert_string_equal(h_str(json_object_get(r.json, "versions"), "config_hash"),
                            H.config_hash);
        h_resp_free(&r);

        /* Another tenant does not see it at all. */
        r = h_http("GET", path, H_TOKEN_B, NULL, NULL, 0);
        assert_int_equal(r.status, 404);
        assert_string_equal(h_str(r.json, "code"), "not_found");
        h_resp_free(&r);
        free(id);
}

/* task.admitted carries type, lane, origin, request_id and case key as compact JSON, whatever
 * characters they hold. */
static void test_admitted_audit_details(void **state) {
        if (skipped)
                skip();
        char *plain = submit_noop(H_TOKEN_A, ",\"case_key\":\"C-7/b\"");
        char *odd = submit_noop(H_TOKEN_A, ",\"case_key\":\"C \\\"7\\\\ \u00e9\\n\"");
        admitted_match_t am = {.task_id = plain};
        assert_int_equal(h_scan("audit", match_admitted, &am, 20000, false), 1);
        assert_string_equal(am.details, "{\"type\":\"noop\",\"lane\":\"default\",\"origin\":"
                                        "\"api\",\"request_id\":\"\",\"case_key\":\"C-7/b\"}");
        free(am.details);
        am = (admitted_match_t){.task_id = odd};
        assert_int_equal(h_scan("audit", match_admitted, &am, 20000, false), 1);
        json_t *d = json_loads(am.details, 0, NULL);
        assert_non_null(d);
        assert_string_equal(h_str(d, "case_key"), "C \"7\\ \u00e9\n");
        assert_string_equal(h_str(d, "origin"), "api");
        json_decref(d);
        free(am.details);
        free(plain);
        free(odd);
}

static void test_idempotency_key_returns_same_task(void **state) {
        if (skipped)
                skip();
        char key[64], id1[64];
        snprintf(key, sizeof(key), "idem-%llu", (unsigned long long) af_rand_u64());
        h_resp_t r = h_submit(H_TOKEN_A, "{\"type\":\"noop\",\"payload\":{}}", key);
        assert_int_equal(r.status, 202);
        snprintf(id1, sizeof(id1), "%s", h_str(r.json, "id"));
        h_resp_free(&r);

        r = h_submit(H_TOKEN_A, "{\"type\":\"noop\",\"payload\":{}}", key);
        assert_int_equal(r.status, 202);
        assert_string_equal(h_str(r.json, "id"), id1);
        assert_non_null(strcasestr(r.headers, "Idempotent-Replayed: true"));
        h_resp_free(&r);

        /* The same key in another tenant is another task: keys are per tenant. */
        r = h_submit(H_TOKEN_B, "{\"type\":\"noop\",\"payload\":{}}", key);
        assert_int_equal(r.status, 202);
        assert_string_not_equal(h_str(r.json, "id"), id1);
        h_resp_free(&r);
}

static void test_bad_token_is_401_and_audited(void **state) {
        if (skipped)
                skip();
        const char *bad = "not-a-known-token-5f2e";
        h_resp_t r = h_submit(bad, "{\"type\":\"noop\",\"payload\":{}}", NULL);
        assert_int_equal(r.status, 401);
        assert_non_null(r.json);
        assert_string_equal(h_str(r.json, "code"), "unauthenticated");
        assert_true(strlen(h_str(r.json, "message")) > 0);
        h_resp_free(&r);

        r = h_http("GET", "/v1/tasks", NULL, NULL, NULL, 0); /* no token at all */
        assert_int_equal(r.status, 401);
        h_resp_free(&r);

        audit_match_t am = {.action = "auth.denied", .forbidden = bad};
        assert_int_equal(h_scan("audit", match_audit, &am, 20000, false), 1);
        assert_string_equal(am.actor, "anonymous");
        /* scan every auth.denied for the token */
        am.leaked = false;
        h_scan("audit", match_audit, &am, 3000, true);
        assert_false(am.leaked);
}

static void test_oversize_413_and_malformed_400(void **state) {
        if (skipped)
                skip();
        /* over http.max_body (64KiB): refused before parsing */
        size_t n = 80 * 1024;
        char *big = malloc(n + 1);
        memset(big, 'x', n);
        big[n] = '\0';
        h_resp_t r = h_http("POST", "/v1/tasks", H_TOKEN_A, NULL, big, n);
        assert_int_equal(r.status, 413);
        assert_non_null(r.json);
        assert_true(strlen(h_str(r.json, "code")) > 0);
        h_resp_free(&r);

        /* under max_body but payload over coordinator.max_payload (16KiB): 413 too */
        char *body = malloc(40 * 1024);
        snprintf(body, 40 * 1024, "{\"type\":\"noop\",\"payload\":{\"blob\":\"%.*s\"}}", 20000,
                 big);
        r = h_http("POST", "/v1/tasks", H_TOKEN_A, NULL, body, strlen(body));
        assert_int_equal(r.status, 413);
        assert_string_equal(h_str(r.json, "code"), "too_large");
        h_resp_free(&r);
        free(body);
        free(big);

        struct {
                const char *body;
                const char *code;
                const char *needle;
        } cases[] = {
                {"{\"type\":", "invalid", "invalid JSON"},
                {"[1,2]", "invalid", "expected a JSON object"},
                {"{\"type\":\"noop\",\"priority\":\"high\"}", "invalid", "priority"},
                {"{\"type\":\"noop\",\"priority\":12}", "invalid", "priority"},
                {"{\"type\":\"noop\",\"payload\":\"{not json\"}", "invalid", "payload"},
                {"{\"type\":\"noop\",\"tpye\":1}", "invalid", "unknown field"},
                {"{\"type\":\"no.such.type\"}", "unknown_type", "no.such.type"},
                {"{\"payload\":{}}", "invalid", "type"},
                {"{\"type\":\"noop\",\"token\":\"x\"}", "invalid", "Authorization"},
                {"{\"type\":\"noop\",\"traceparent\":\"nope\"}", "invalid", "traceparent"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                r = h_http("POST", "/v1/tasks", H_TOKEN_A, NULL, cases[i].body,
                           strlen(cases[i].body));
                if (r.status != 400 || !strstr(h_str(r.json, "message"), cases[i].needle) ||
                    strcmp(h_str(r.json, "code"), cases[i].code))
                        fail_msg("body %s: got %ld %s", cases[i].body, r.status,
                                 r.body ? r.body : "");
                h_resp_free(&r);
        }
}

static void test_list_filters_and_pages(void **state) {
        if (skipped)
                skip();
        char *ids[3];
        for (int i = 0; i < 3; i++)
                ids[i] = submit_noop(H_TOKEN_B, NULL);
        /* newest first, two per page */
        h_resp_t r = h_http("GET", "/v1/tasks?type=noop&status=queued&limit=2", H_TOKEN_B, NULL,
                            NULL, 0);
        assert_int_equal(r.status, 200);
        json_t *tasks = json_object_get(r.json, "tasks");
        assert_int_equal(json_array_size(tasks), 2);
        assert_string_equal(h_str(json_array_get(tasks, 0), "id"), ids[2]);
        assert_string_equal(h_str(json_array_get(tasks, 1), "id"), ids[1]);
        char path[256];
        snprintf(path, sizeof(path), "/v1/tasks?type=noop&status=queued&limit=2&cursor=%s",
                 h_str(r.json, "next_cursor"));
        h_resp_free(&r);
        r = h_http("GET", path, H_TOKEN_B, NULL, NULL, 0);
        assert_int_equal(r.status, 200);
        tasks = json_object_get(r.json, "tasks");
        assert_true(json_array_size(tasks) >= 1);
        assert_string_equal(h_str(json_array_get(tasks, 0), "id"), ids[0]);
        h_resp_free(&r);

        /* tenant A's list never holds B's tasks; asking for B's tenant is refused */
        r = h_http("GET", "/v1/tasks?limit=500", H_TOKEN_A, NULL, NULL, 0);
        assert_int_equal(r.status, 200);
        tasks = json_object_get(r.json, "tasks");
        for (size_t i = 0; i < json_array_size(tasks); i++)
                assert_string_equal(h_str(json_array_get(tasks, i), "tenant"), "tenant-a");
        h_resp_free(&r);
        r = h_http("GET", "/v1/tasks?tenant=tenant-b", H_TOKEN_A, NULL, NULL, 0);
        assert_int_equal(r.status, 403);
        h_resp_free(&r);
        r = h_http("GET", "/v1/tasks?status=bogus", H_TOKEN_A, NULL, NULL, 0);
        assert_int_equal(r.status, 400);
        h_resp_free(&r);
        for (int i = 0; i < 3; i++)
                free(ids[i]);
}

/* Play a worker: produce a TaskResult for id to `results`. */
static void produce_result_keyed(const char *id, const char *key, Agentfleet__V1__TaskStatus st,
                                 const char *output) {
        Agentfleet__V1__TaskResult res = AGENTFLEET__V1__TASK_RESULT__INIT;
        res.task_id = (char *) id;
        res.status = st;
        res.output = (char *) (output ? output : "");
        res.attempt = 1;
        res.worker_id = (char *) "test-worker";
        res.type = (char *) "noop";
        res.tenant = (char *) "tenant-a";
        res.principal = (char *) "alice";
        size_t len = agentfleet__v1__task_result__get_packed_size(&res);
        uint8_t *buf = malloc(len);
        agentfleet__v1__task_result__pack(&res, buf);
        assert_true(h_produce("results", key, buf, len, "application/x-protobuf"));
        free(buf);
}

/* Redis loses the index as after a restart without persistence: the task's entry and the
 * epoch marker go, so the coordinator must replay `results`. */
static void index_lose_entry(const char *id) {
        redisContext *rc = redisConnect("127.0.0.1", H.redis_port);
        assert_non_null(rc);
        redisReply *rep = redisCommand(rc, "DEL af:{%s}:status af:idx:epoch", id);
        assert_non_null(rep);
        assert_int_equal(rep->integer, 2);
        freeReplyObject(rep);
        redisFree(rc);
}

static void produce_result(const char *id, Agentfleet__V1__TaskStatus st, const char *output) {
        produce_result_keyed(id, id, st, output);
}

static void test_index_follows_results_final_wins(void **state) {
        if (skipped)
                skip();
        char *id = submit_noop(H_TOKEN_A, NULL);
        produce_result(id, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED, "{\"ok\":true}");
        char *st = h_wait_status(id, H_TOKEN_A, "succeeded", 20000);
        assert_string_equal(st, "succeeded");
        free(st);
        /* a late RUNNING (e.g. redelivered) must not move it back */
        produce_result(id, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_RUNNING, NULL);
        char *id2 = submit_noop(H_TOKEN_A, NULL); /* a marker that the consumer moved on */
        /* same partition as id's records, so once it is indexed the RUNNING was seen */
        produce_result_keyed(id2, id, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED, NULL);
        st = h_wait_status(id2, H_TOKEN_A, "failed", 20000);
        assert_string_equal(st, "failed");
        free(st);
        char path[128];
        snprintf(path, sizeof(path), "/v1/tasks/%s", id);
        h_resp_t r = h_http("GET", path, H_TOKEN_A, NULL, NULL, 0);
        assert_string_equal(h_str(r.json, "status"), "succeeded");
        assert_true(json_is_true(json_object_get(json_object_get(r.json, "output"), "ok")));
        h_resp_free(&r);

        /* cancelling a finished task is a conflict */
        snprintf(path, sizeof(path), "/v1/tasks/%s:cancel", id);
        r = h_http("POST", path, H_TOKEN_A, NULL, "", 0);
        assert_int_equal(r.status, 409);
        assert_string_equal(h_str(r.json, "code"), "conflict");
        h_resp_free(&r);
        free(id);
        free(id2);
}

static void test_cancel_before_start(void **state) {
        if (skipped)
                skip();
        char *id = submit_noop(H_TOKEN_A, NULL);
        char path[128];
        snprintf(path, sizeof(path), "/v1/tasks/%s:cancel", id);

        /* not yours: 404 */
        h_resp_t r = h_http("POST", path, H_TOKEN_B, NULL, "", 0);
        assert_int_equal(r.status, 404);
        h_resp_free(&r);

        r = h_http("POST", path, H_TOKEN_A, NULL, "", 0);
        assert_int_equal(r.status, 202);
        assert_string_equal(h_str(r.json, "status"), "cancel_requested");
        h_resp_free(&r);

        /* the worker-facing cancel mark is in Redis (lease.h: af:{id}:cancel) */
        redisContext *rc = redisConnect("127.0.0.1", H.redis_port);
        assert_non_null(rc);
        assert_int_equal(rc->err, 0);
        redisReply *rep = redisCommand(rc, "EXISTS af:{%s}:cancel", id);
        assert_non_null(rep);
        assert_int_equal(rep->integer, 1);
        freeReplyObject(rep);
        redisFree(rc);

        char *st = h_wait_status(id, H_TOKEN_A, "cancel_requested", 5000);
        assert_string_equal(st, "cancel_requested");
        free(st);
        /* the worker's CANCELLED result is the one final record; the index takes it */
        produce_result(id, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_CANCELLED, NULL);
        st = h_wait_status(id, H_TOKEN_A, "cancelled", 20000);
        assert_string_equal(st, "cancelled");
        free(st);
        free(id);
}

static void test_index_rebuilt_when_redis_loses_it(void **state) {
        if (skipped)
                skip();
        char *id = submit_noop(H_TOKEN_A, NULL);
        produce_result(id, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED, "{\"n\":7}");
        char *st = h_wait_status(id, H_TOKEN_A, "succeeded", 20000);
        assert_string_equal(st, "succeeded");
        free(st);

        index_lose_entry(id);

        char path[128];
        snprintf(path, sizeof(path), "/v1/tasks/%s", id);
        h_resp_t r = h_http("GET", path, H_TOKEN_A, NULL, NULL, 0);
        assert_int_equal(r.status, 404);
        h_resp_free(&r);
        st = h_wait_status(id, H_TOKEN_A, "succeeded", 30000);
        assert_string_equal(st, "succeeded");
        free(st);
        free(id);
}

/* Run one command on the test's Redis; its reply must not be an error. */
static void redis_do(const char *fmt, const char *arg) {
        redisContext *rc = redisConnect("127.0.0.1", H.redis_port);
        assert_non_null(rc);
        assert_int_equal(rc->err, 0);
        redisReply *rep = redisCommand(rc, fmt, arg);
        assert_non_null(rep);
        assert_int_not_equal(rep->type, REDIS_REPLY_ERROR);
        freeReplyObject(rep);
        redisFree(rc);
}

/* Does the listing at path (tenant A) hold id? */
static bool listing_has(const char *path, const char *id) {
        bool found = false;
        h_resp_t r = h_http("GET", path, H_TOKEN_A, NULL, NULL, 0);
        assert_int_equal(r.status, 200);
        json_t *tasks = json_object_get(r.json, "tasks");
        for (size_t i = 0; i < json_array_size(tasks); i++)
                if (!strcmp(h_str(json_array_get(tasks, i), "id"), id))
                        found = true;
        h_resp_free(&r);
        return found;
}

/* A sets call that failed after a task's status moved leaves its id in the old status's sets
 * and out of the new one's. A listing leaves such an entry out, and the task's next record,
 * even a superseded one (a re-emitted result; every record of a replay that follows the
 * failure), writes its sets again. */
static void test_listing_repaired_after_a_failed_sets_call(void **state) {
        if (skipped)
                skip();
        static const char queued[] = "/v1/tasks?status=queued&type=noop&limit=500";
        static const char succeeded[] = "/v1/tasks?status=succeeded&type=noop&limit=500";
        char *id = submit_noop(H_TOKEN_A, NULL);
        produce_result(id, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED, "{}");
        char *st = h_wait_status(id, H_TOKEN_A, "succeeded", 20000);
        assert_string_equal(st, "succeeded");
        free(st);
        assert_true(listing_has(succeeded, id));
        assert_false(listing_has(queued, id));

        /* The entry lives coordinator.index_ttl after its last change. */
        redisContext *rc = redisConnect("127.0.0.1", H.redis_port);
        assert_non_null(rc);
        redisReply *rep = redisCommand(rc, "PTTL af:{%s}:status", id);
        assert_non_null(rep);
        assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
        assert_true(rep->integer > INDEX_TTL_MS - 600000 && rep->integer <= INDEX_TTL_MS);
        freeReplyObject(rep);
        redisFree(rc);

        /* What the failed sets call of the QUEUED → SUCCEEDED move would have left. */
        redis_do("ZREM af:idx:{tenant-a}:s:succeeded %s", id);
        redis_do("ZREM af:idx:{tenant-a}:sy:succeeded:noop %s", id);
        redis_do("ZADD af:idx:{tenant-a}:s:queued 0 %s", id);
        redis_do("ZADD af:idx:{tenant-a}:sy:queued:noop 0 %s", id);
        assert_false(listing_has(queued, id)); /* its entry says succeeded */
        assert_false(listing_has(succeeded, id));

        /* The same result once more (as a worker re-emits a done task's): superseded, and it
         * puts the task back in its status's sets. */
        produce_result(id, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED, "{}");
        bool repaired = false;
        for (int i = 0; i < 200 && !repaired; i++) {
                repaired = listing_has(succeeded, id);
                if (!repaired)
                        h_sleep_ms(100);
        }
        assert_true(repaired);
        assert_false(listing_has(queued, id));
        free(id);
}

/* The value of agentfleet_coordinator_index_results_total{outcome="<outcome>"} (0 when absent). */
static long index_results(const char *outcome) {
        char series[128];
        long v = 0;
        snprintf(series, sizeof(series),
                 "agentfleet_coordinator_index_results_total{outcome=\"%s\"} ", outcome);
        h_resp_t r = h_http("GET", "/metrics", NULL, NULL, NULL, 0);
        assert_int_equal(r.status, 200);
        const char *p = strstr(r.body, series);
        if (p)
                v = strtol(p + strlen(series), NULL, 10);
        h_resp_free(&r);
        return v;
}

/* The coordinator indexes its own QUEUED record when Kafka acknowledges it; reading the same
 * record back from `results` costs no second update. A QUEUED record it did not write (another
 * coordinator's) is still applied, and so is its own one in a rebuild. */
static void test_own_queued_record_indexed_once(void **state) {
        if (skipped)
                skip();
        long own0, applied0, superseded0;
        /* whatever an earlier test left in flight (a replay) settles first */
        do {
                own0 = index_results("own");
                applied0 = index_results("applied");
                superseded0 = index_results("superseded");
                h_sleep_ms(500);
        } while (index_results("applied") != applied0 ||
                 index_results("superseded") != superseded0);
        char *id = submit_noop(H_TOKEN_A, NULL);
        char path[128];
        snprintf(path, sizeof(path), "/v1/tasks/%s", id);
        h_resp_t r = h_http("GET", path, H_TOKEN_A, NULL, NULL, 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(h_str(r.json, "status"), "queued");
        h_resp_free(&r);
        r = h_http("GET", "/v1/tasks?status=queued&type=noop&limit=1", H_TOKEN_A, NULL, NULL, 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(h_str(json_array_get(json_object_get(r.json, "tasks"), 0), "id"), id);
        h_resp_free(&r);
        /* the read-back is recognised, not applied again */
        int64_t deadline = af_clock_mono_ms() + 20000;
        while (index_results("own") == own0 && af_clock_mono_ms() < deadline)
                h_sleep_ms(50);
        assert_int_equal(index_results("own"), own0 + 1);
        assert_int_equal(index_results("applied"), applied0 + 1);
        assert_int_equal(index_results("superseded"), superseded0);

        /* another writer's QUEUED record of a task this process never saw: indexed */
        char other[AF_ULID_LEN + 1];
        af_ulid_new(other);
        produce_result(other, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_QUEUED, NULL);
        char *st = h_wait_status(other, H_TOKEN_A, "queued", 20000);
        assert_string_equal(st, "queued");
        free(st);

        /* Redis loses the index: the replay applies the own record too */
        index_lose_entry(id);
        st = h_wait_status(id, H_TOKEN_A, "queued", 30000);
        assert_string_equal(st, "queued");
        free(st);
        free(id);
}

static void test_health_metrics(void **state) {
        if (skipped)
                skip();
        h_resp_t r = h_http("GET", "/healthz", NULL, NULL, NULL, 0);
        assert_int_equal(r.status, 200);
        h_resp_free(&r);
        r = h_http("GET", "/metrics", NULL, NULL, NULL, 0);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(
                r.body,
                "agentfleet_coordinator_admissions_total{type=\"noop\",outcome=\"admitted\"}"));
        assert_non_null(strstr(r.body, "agentfleet_coordinator_admission_seconds_bucket"));
        assert_non_null(strstr(r.body, "agentfleet_coordinator_http_requests_total{route=\"POST "
                                       "/v1/tasks\",status=\"202\"}"));
        /* The daemon's own figures, as a process collector names them. */
        assert_non_null(strstr(r.body, "\nprocess_resident_memory_bytes "));
        assert_non_null(strstr(r.body, "\nprocess_open_fds "));
        h_resp_free(&r);
}

static void test_sigterm_drains(void **state) {
        if (skipped)
                skip();
        assert_int_equal(h_stop(), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_submit_publishes_and_get_shows_it),
                cmocka_unit_test(test_admitted_audit_details),
                cmocka_unit_test(test_idempotency_key_returns_same_task),
                cmocka_unit_test(test_bad_token_is_401_and_audited),
                cmocka_unit_test(test_oversize_413_and_malformed_400),
                cmocka_unit_test(test_list_filters_and_pages),
                cmocka_unit_test(test_index_follows_results_final_wins),
                cmocka_unit_test(test_cancel_before_start),
                cmocka_unit_test(test_index_rebuilt_when_redis_loses_it),
                cmocka_unit_test(test_listing_repaired_after_a_failed_sets_call),
                cmocka_unit_test(test_own_queued_record_indexed_once),
                cmocka_unit_test(test_health_metrics),
                cmocka_unit_test(test_sigterm_drains),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
