/*
 * The coordinator's `requests` intake against the real Kafka and Redis, with the real binary:
 * a JSON TaskRequest with a token and a protobuf TaskRequest signed with a service key are
 * admitted like API submits; a redelivered request (same request_id) does not create a second
 * task; malformed, unknown, forged or unsigned messages land in `dlq` with their reason (and
 * an audit event) while the next valid request is still admitted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "agentfleet/v1/audit.pb-c.h"
#include "agentfleet/v1/dlq.pb-c.h"
#include "agentfleet/v1/task.pb-c.h"
#include "test_coordinator_harness.h"
#include "wire_json.h"

static bool skipped;
static char first_rid[64]; /* admitted in the first test; must stay one task */

static int setup(void **state) {
        int rc = h_start("cin");
        skipped = rc == 1;
        return rc < 0 ? -1 : 0;
}

static int teardown(void **state) {
        if (!skipped && H.pid > 0)
                h_stop();
        h_delete_topics();
        return 0;
}

static void unique(char *out, size_t n, const char *what) {
        snprintf(out, n, "%s-%016llx", what, (unsigned long long) af_rand_u64());
}

typedef struct req_match_s {
        const char *request_id;
        Agentfleet__V1__Task *task; /* the last match; caller frees */
} req_match_t;

static bool match_request_id(const rd_kafka_message_t *m, void *opaque) {
        req_match_t *rm = opaque;
        Agentfleet__V1__Task *t = agentfleet__v1__task__unpack(NULL, m->len, m->payload);
        if (t && !strcmp(t->request_id, rm->request_id)) {
                if (rm->task)
                        agentfleet__v1__task__free_unpacked(rm->task, NULL);
                rm->task = t;
                return true;
        }
        if (t)
                agentfleet__v1__task__free_unpacked(t, NULL);
        return false;
}

typedef struct dlq_match_s {
        const char *needle_in_original;
        char reason[512];
        char content_type[64];
} dlq_match_t;

static bool match_dlq(const rd_kafka_message_t *m, void *opaque) {
        dlq_match_t *dm = opaque;
        Agentfleet__V1__DeadLetter *dl =
                agentfleet__v1__dead_letter__unpack(NULL, m->len, m->payload);
        bool hit = false;
        if (dl && dl->original.len &&
            memmem(dl->original.data, dl->original.len, dm->needle_in_original,
                   strlen(dm->needle_in_original))) {
                hit = true;
                snprintf(dm->reason, sizeof(dm->reason), "%s", dl->reason);
                snprintf(dm->content_type, sizeof(dm->content_type), "%s", dl->content_type);
        }
        if (dl)
                agentfleet__v1__dead_letter__free_unpacked(dl, NULL);
        return hit;
}

static void produce_json(const char *key, const char *json, const char *content_type) {
        assert_true(h_produce("requests", key, json, strlen(json), content_type));
}

static void produce_protobuf(const char *key, const Agentfleet__V1__TaskRequest *req) {
        size_t len = agentfleet__v1__task_request__get_packed_size(req);
        uint8_t *buf = malloc(len);
        assert_non_null(buf);
        agentfleet__v1__task_request__pack(req, buf);
        assert_true(h_produce("requests", key, buf, len, "application/x-protobuf"));
        free(buf);
}

static void test_json_request_with_token_admitted(void **state) {
        if (skipped)
                skip();
        char rid[64], json[512];
        unique(rid, sizeof(rid), "json");
        snprintf(first_rid, sizeof(first_rid), "%s", rid);
        snprintf(json, sizeof(json),
                 "{\"type\":\"noop\",\"payload\":{\"claim_id\":\"C-1\"},\"case_key\":\"C-1\","
                 "\"token\":\"%s\",\"request_id\":\"%s\"}",
                 H_TOKEN_A, rid);
        produce_json("C-1", json, "application/json");
        req_match_t rm = {.request_id = rid};
        assert_int_equal(h_scan("tasks.default", match_request_id, &rm, 30000, false), 1);
        assert_string_equal(rm.task->tenant, "tenant-a");
        assert_string_equal(rm.task->principal, "alice");
        assert_int_equal(rm.task->origin, AGENTFLEET__V1__ORIGIN__ORIGIN_KAFKA);
        assert_string_equal(rm.task->versions->config_hash, H.config_hash);
        /* visible through the API too */
        char *st = h_wait_status(rm.task->id, H_TOKEN_A, "queued", 10000);
        assert_string_equal(st, "queued");
        free(st);
        agentfleet__v1__task__free_unpacked(rm.task, NULL);
}

static void test_signed_protobuf_request_admitted(void **state) {
        if (skipped)
                skip();
        char rid[64], sig[65];
        unique(rid, sizeof(rid), "pb");
        Agentfleet__V1__TaskRequest req = AGENTFLEET__V1__TASK_REQUEST__INIT;
        req.type = "claim.check";
        req.case_key = "C-2";
        req.payload = "{\"claim_id\":\"C-2\"}";
        req.request_id = rid;
        req.key_id = "svc-a";
        assert_int_equal(af_wire_taskrequest_sign(&req, H_SVC_SECRET, strlen(H_SVC_SECRET), sig),
                         AF_OK);
        req.signature = sig;
        produce_protobuf("C-2", &req);

        req_match_t rm = {.request_id = rid};
        assert_int_equal(h_scan("tasks.claims", match_request_id, &rm, 30000, false), 1);
        assert_string_equal(rm.task->principal, "intake-svc");
        assert_string_equal(rm.task->tenant, "tenant-a");
        assert_string_equal(rm.task->payload, "{\"claim_id\":\"C-2\"}");
        agentfleet__v1__task__free_unpacked(rm.task, NULL);
}

/* protobuf-c takes any bytes as a string; a request whose string is not UTF-8 would carry
 * them into its Task, result and audit events, where other languages' decoders refuse the
 * whole message. It is dead-lettered with the field named, and never becomes a task. */
static void test_protobuf_request_with_non_utf8_string_is_dead_lettered(void **state) {
        if (skipped)
                skip();
        char rid[64];
        unique(rid, sizeof(rid), "pb-utf8");
        Agentfleet__V1__TaskRequest req = AGENTFLEET__V1__TASK_REQUEST__INIT;
        req.type = "noop";
        req.case_key = "C-\xff\xfe";
        req.payload = "{}";
        req.request_id = rid;
        req.token = H_TOKEN_A;
        produce_protobuf("C-x", &req);

        dlq_match_t dm = {.needle_in_original = rid};
        assert_int_equal(h_scan("dlq", match_dlq, &dm, 30000, false), 1);
        assert_non_null(strstr(dm.reason, "field \"case_key\": not UTF-8 (byte 0xff at offset 2)"));
        req_match_t rm = {.request_id = rid};
        assert_int_equal(h_scan("tasks.default", match_request_id, &rm, 3000, true), 0);
}

static void test_redelivered_request_is_one_task(void **state) {
        if (skipped)
                skip();
        char rid[64], json[512], marker[64], mjson[512];
        unique(rid, sizeof(rid), "dup");
        unique(marker, sizeof(marker), "after-dup");
        snprintf(json, sizeof(json),
                 "{\"type\":\"noop\",\"payload\":{},\"token\":\"%s\",\"request_id\":\"%s\"}",
                 H_TOKEN_A, rid);
        snprintf(mjson, sizeof(mjson),
                 "{\"type\":\"noop\",\"payload\":{},\"token\":\"%s\",\"request_id\":\"%s\"}",
                 H_TOKEN_A, marker);
        produce_json("dup-case", json, "application/json");
        produce_json("dup-case", json, "application/json");
        produce_json("dup-case", mjson, "application/json; charset=utf-8");
        req_match_t mm = {.request_id = marker};
        assert_int_equal(h_scan("tasks.default", match_request_id, &mm, 30000, false), 1);
        agentfleet__v1__task__free_unpacked(mm.task, NULL);
        /* all three are processed by now or very soon; count the duplicates' tasks */
        req_match_t rm = {.request_id = rid};
        assert_int_equal(h_scan("tasks.default", match_request_id, &rm, 5000, true), 1);
        agentfleet__v1__task__free_unpacked(rm.task, NULL);
}

static void test_bad_messages_dead_lettered_then_valid_admitted(void **state) {
        if (skipped)
                skip();
        char tag[64], json[768];
        struct {
                const char *content_type;
                const char *fmt;    /* %s = tag */
                const char *reason; /* must appear in the DeadLetter's reason */
        } cases[] = {
                {NULL, "{\"type\":\"noop\",\"note\":\"%s\"}", "missing content-type header"},
                {"application/x-protobuf", "\xff\xff\xff garbage %s", "not a valid protobuf"},
                {"application/json", "{\"type\": \"noop\", \"x\": \"%s\"",
                 "JSON TaskRequest: invalid JSON"},
                {"text/plain", "%s", "unsupported content-type"},
                {"application/json", "{\"type\":\"noop\",\"request_id\":\"%s\"}", "no credential"},
                {"application/json",
                 "{\"type\":\"noop\",\"request_id\":\"%s\",\"token\":\"" H_TOKEN_A "\","
                 "\"tenant\":\"tenant-b\"}",
                 "does not match the credential's tenant"},
                {"application/json",
                 "{\"type\":\"noop\",\"request_id\":\"%s\",\"key_id\":\"svc-a\","
                 "\"signature\":"
                 "\"00000000000000000000000000000000000000000000000000000000000000ff\"}",
                 "bad signature"},
                {"application/json",
                 "{\"type\":\"noop\",\"request_id\":\"%s\",\"token\":\"wrong-token\"}",
                 "unknown token"},
                {"application/json",
                 "{\"type\":\"no.such\",\"request_id\":\"%s\",\"token\":\"" H_TOKEN_A "\"}",
                 "unknown task type"},
                {"application/json",
                 "{\"type\":\"noop\",\"request_id\":\"%s\",\"token\":\"" H_TOKEN_A "\","
                 "\"priority\":\"urgent\"}",
                 "field \"priority\""},
        };
        const size_t n = sizeof(cases) / sizeof(cases[0]);
        char tags[16][64];

        for (size_t i = 0; i < n; i++) {
                unique(tag, sizeof(tag), "bad");
                snprintf(tags[i], sizeof(tags[i]), "%s", tag);
                snprintf(json, sizeof(json), cases[i].fmt, tag);
                produce_json("bad-case", json, cases[i].content_type);
        }
        /* the next valid request, on the same partition, is still admitted */
        char rid[64];
        unique(rid, sizeof(rid), "after-bad");
        snprintf(json, sizeof(json),
                 "{\"type\":\"noop\",\"payload\":{},\"token\":\"%s\",\"request_id\":\"%s\"}",
                 H_TOKEN_A, rid);
        produce_json("bad-case", json, "application/json");
        req_match_t rm = {.request_id = rid};
        assert_int_equal(h_scan("tasks.default", match_request_id, &rm, 30000, false), 1);
        agentfleet__v1__task__free_unpacked(rm.task, NULL);

        for (size_t i = 0; i < n; i++) {
                dlq_match_t dm = {.needle_in_original = tags[i]};
                if (h_scan("dlq", match_dlq, &dm, 20000, false) != 1)
                        fail_msg("case %zu (%s): no dead letter", i, cases[i].reason);
                if (!strstr(dm.reason, cases[i].reason))
                        fail_msg("case %zu: reason \"%s\" lacks \"%s\"", i, dm.reason,
                                 cases[i].reason);
                assert_string_equal(dm.content_type,
                                    cases[i].content_type ? cases[i].content_type : "");
        }
        /* the coordinator is still serving */
        h_resp_t r = h_http("GET", "/healthz", NULL, NULL, NULL, 0);
        assert_int_equal(r.status, 200);
        h_resp_free(&r);
}

typedef struct dlq_omitted_s {
        const char *needle_in_reason;
        bool omitted; /* the match carried no original */
        char reason[512];
} dlq_omitted_t;

static bool match_dlq_reason(const rd_kafka_message_t *m, void *opaque) {
        dlq_omitted_t *dm = opaque;
        Agentfleet__V1__DeadLetter *dl =
                agentfleet__v1__dead_letter__unpack(NULL, m->len, m->payload);
        bool hit = dl && strstr(dl->reason, dm->needle_in_reason);
        if (hit) {
                dm->omitted = dl->original.len == 0;
                snprintf(dm->reason, sizeof(dm->reason), "%s", dl->reason);
        }
        if (dl)
                agentfleet__v1__dead_letter__free_unpacked(dl, NULL);
        return hit;
}

/* A malformed request too large for the dlq topic (4000 bytes a record here) is dead-lettered
 * without its original bytes, the reason saying where they stay; the next valid request on the
 * same partition is still admitted (nothing waits on the refused record forever). */
static void test_too_large_dead_letter_goes_without_its_original(void **state) {
        if (skipped)
                skip();
        char dlq[256], rid[64], json[512], needle[64];
        snprintf(dlq, sizeof(dlq), "%sdlq", H.prefix);
        af_test_delete_topic(H.bootstrap, dlq);
        assert_true(af_test_create_topic(H.bootstrap, dlq, 1, 4000));

        /* Random, so compression cannot shrink it under the limit; a unique size finds it. */
        size_t len = 6000 + (size_t) (af_clock_wall_ms() % 997);
        uint8_t *big = malloc(len);
        assert_non_null(big);
        af_random_bytes(big, len);
        memcpy(big, "\xff\xff\xff\x07", 4); /* not a TaskRequest */
        assert_true(h_produce("requests", "too-large", big, len, "application/x-protobuf"));
        free(big);
        unique(rid, sizeof(rid), "after-large");
        snprintf(json, sizeof(json),
                 "{\"type\":\"noop\",\"payload\":{},\"token\":\"%s\",\"request_id\":\"%s\"}",
                 H_TOKEN_A, rid);
        produce_json("too-large", json, "application/json");

        snprintf(needle, sizeof(needle), "(%zu bytes)", len);
        dlq_omitted_t dm = {.needle_in_reason = needle};
        assert_int_equal(h_scan("dlq", match_dlq_reason, &dm, 30000, false), 1);
        assert_true(dm.omitted);
        if (!strstr(dm.reason, "original omitted: too large for"))
                fail_msg("reason \"%s\" does not say the original was omitted", dm.reason);
        req_match_t rm = {.request_id = rid};
        assert_int_equal(h_scan("tasks.default", match_request_id, &rm, 30000, false), 1);
        agentfleet__v1__task__free_unpacked(rm.task, NULL);
}

typedef struct audit_count_s {
        const char *action;
} audit_count_t;

static bool match_audit_action(const rd_kafka_message_t *m, void *opaque) {
        audit_count_t *ac = opaque;
        Agentfleet__V1__AuditEvent *ev =
                agentfleet__v1__audit_event__unpack(NULL, m->len, m->payload);
        bool hit = ev && !strcmp(ev->action, ac->action) && !strcmp(ev->decision, "deny");
        if (ev)
                agentfleet__v1__audit_event__free_unpacked(ev, NULL);
        return hit;
}

static void test_refusals_are_audited(void **state) {
        if (skipped)
                skip();
        audit_count_t denied = {"auth.denied"}, rejected = {"request.rejected"};
        /* from the previous test: 4 credential failures, 6 other refusals */
        assert_true(h_scan("audit", match_audit_action, &denied, 4000, true) >= 4);
        assert_true(h_scan("audit", match_audit_action, &rejected, 4000, true) >= 6);
}

static void test_restart_does_not_readmit(void **state) {
        if (skipped)
                skip();
        /* Offsets of finished requests were committed: after a restart with the same group
         * nothing is admitted twice (and idempotency would catch it if it were redelivered). */
        assert_int_equal(h_stop(), 0);
        assert_int_equal(h_spawn(), 0);
        char rid[64], json[512];
        unique(rid, sizeof(rid), "after-restart");
        snprintf(json, sizeof(json),
                 "{\"type\":\"noop\",\"payload\":{},\"token\":\"%s\",\"request_id\":\"%s\"}",
                 H_TOKEN_A, rid);
        produce_json("restart", json, "application/json");
        req_match_t rm = {.request_id = rid};
        assert_int_equal(h_scan("tasks.default", match_request_id, &rm, 30000, false), 1);
        agentfleet__v1__task__free_unpacked(rm.task, NULL);
        req_match_t first = {.request_id = first_rid};
        assert_int_equal(h_scan("tasks.default", match_request_id, &first, 5000, true), 1);
        agentfleet__v1__task__free_unpacked(first.task, NULL);
}

static void test_sigterm_drains(void **state) {
        if (skipped)
                skip();
        assert_int_equal(h_stop(), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_json_request_with_token_admitted),
                cmocka_unit_test(test_signed_protobuf_request_admitted),
                cmocka_unit_test(test_protobuf_request_with_non_utf8_string_is_dead_lettered),
                cmocka_unit_test(test_redelivered_request_is_one_task),
                cmocka_unit_test(test_bad_messages_dead_lettered_then_valid_admitted),
                cmocka_unit_test(test_too_large_dead_letter_goes_without_its_original),
                cmocka_unit_test(test_refusals_are_audited),
                cmocka_unit_test(test_restart_does_not_readmit),
                cmocka_unit_test(test_sigterm_drains),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
