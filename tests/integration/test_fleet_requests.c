/*
 * test_fleet_requests: TaskRequests produced straight to the `requests` topic, the way another
 * service in any language would, run through the whole fleet to their final results. The
 * real agentfleet-simagent, agentfleet-coordinator and agentfleet-worker are started here with
 * the claims example's config on the real Kafka broker and Redis (topics, consumer groups and
 * ports of their own); messages are produced with librdkafka (the protobuf form, and raw
 * malformed bytes) and with `agentfleet submit --via-kafka` (the JSON form).
 *
 * What it asserts:
 *   - a signed protobuf TaskRequest is admitted (a Task on tasks.claims carries its request
 *     id, the service key's principal and tenant) and its final TaskResult on `results` is
 *     SUCCEEDED with the agent's parsed decision and its token usage, exactly once;
 *   - a signed JSON TaskRequest from the CLI does the same;
 *   - a malformed protobuf and a malformed JSON message on `requests` land in `dlq` with their
 *     precise reason, content type and original bytes, while the valid request produced right
 *     after them on the same partition still completes, and the coordinator keeps serving.
 *
 * The Kafka and HTTP helpers come from test_coordinator_harness.h; this file adds the fleet.
 * Prints SKIP (and passes) only when AF_TEST_KAFKA or AF_TEST_REDIS_PORT is unset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "agentfleet/v1/dlq.pb-c.h"
#include "agentfleet/v1/result.pb-c.h"
#include "agentfleet/v1/task.pb-c.h"
#include "test_coordinator_harness.h"
#include "wire_json.h"

#define FLEET_KEY_ID    "intake-svc" /* the example's service key */
#define FLEET_PRINCIPAL "claims-intake-svc"
#define FLEET_TENANT    "acme-health"
#define FLEET_RESULT_MS 120000 /* generous: a loaded 2-core machine */
#define FLEET_N_TESTS   3

/* ---- the fleet: three daemons -------------------------------------------------------------- */

typedef struct fleet_proc_s {
        const char *name;
        pid_t pid;
        char log[320];
} fleet_proc_t;

static struct {
        bool skipped;
        int passed; /* tests that reached their end: the logs are shown when one did not */
        char src[256];
        char bin[256];
        char config[320];
        char secret[64];
        char sim_url[64];
        fleet_proc_t procs[3];
} F;

/* Start BIN/prog --config the example [extra args]; stdout and stderr go to its log. */
static bool fleet_spawn(fleet_proc_t *p, const char *prog, const char *extra1, const char *extra2) {
        char path[400];
        const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

        snprintf(path, sizeof(path), "%s/%s", F.bin, prog);
        snprintf(p->log, sizeof(p->log), "%.160s/%s%s.log", tmp, H.prefix, p->name);
        p->pid = fork();
        if (p->pid == 0) {
                if (!freopen(p->log, "w", stdout) || dup2(fileno(stdout), 2) < 0)
                        _exit(126);
                execl(path, path, "--config", F.config, extra1, extra2, (char *) NULL);
                perror("exec");
                _exit(127);
        }
        return p->pid > 0;
}

/* The process still runs; one that ended is reaped here (pid 0: nothing left to stop). */
static bool fleet_alive(fleet_proc_t *p) {
        int st;
        if (p->pid > 0 && waitpid(p->pid, &st, WNOHANG) == p->pid)
                p->pid = 0;
        return p->pid > 0;
}

/* GET base+path answers 200 (base may be H.base_url itself). */
static bool fleet_http_ok(const char *base, const char *path) {
        char saved[sizeof(H.base_url)], want[sizeof(H.base_url)];
        long status;

        snprintf(want, sizeof(want), "%s", base);
        snprintf(saved, sizeof(saved), "%s", H.base_url);
        snprintf(H.base_url, sizeof(H.base_url), "%s", want);
        h_resp_t r = h_http("GET", path, NULL, NULL, NULL, 0);
        snprintf(H.base_url, sizeof(H.base_url), "%s", saved);
        status = r.status;
        h_resp_free(&r);
        return status == 200;
}

/* A sanitizer report (AF_SANITIZE=ON builds) anywhere in the file: leaks are reported only as
 * a daemon exits, at the end of its log. */
static bool fleet_log_sanitizer_report(const char *path) {
        char line[4096];
        bool found = false;
        FILE *f = fopen(path, "r");

        if (!f)
                return false;
        while (!found && fgets(line, sizeof(line), f))
                found = strstr(line, "ERROR: AddressSanitizer") ||
                        strstr(line, "ERROR: LeakSanitizer") || strstr(line, "runtime error:");
        fclose(f);
        return found;
}

static void fleet_show_logs(void) {
        char cmd[400];
        for (int i = 0; i < 3; i++) {
                if (!F.procs[i].log[0])
                        continue;
                fprintf(stderr, "--- %s (last lines)\n", F.procs[i].name);
                snprintf(cmd, sizeof(cmd), "tail -n 20 '%s' >&2", F.procs[i].log);
                if (system(cmd) != 0)
                        fprintf(stderr, "(no log)\n");
        }
}

static void fleet_setenv_int(const char *name, int v) {
        char s[32];
        snprintf(s, sizeof(s), "%d", v);
        setenv(name, s, 1);
}

static int setup(void **state) {
        const char *kafka = getenv("AF_TEST_KAFKA");
        const char *redis = getenv("AF_TEST_REDIS_PORT");
        const char *src = getenv("AF_SOURCE_DIR");
        const char *bin = getenv("AF_BINARY_DIR");
        char id[AF_ULID_LEN + 1], group[128];
        int api_port, sim_port;

        if (!kafka || !*kafka || !redis || !*redis) {
                printf("SKIP: AF_TEST_KAFKA and AF_TEST_REDIS_PORT are not set\n");
                F.skipped = true;
                return 0;
        }
        if (!src || !bin) {
                fprintf(stderr, "AF_SOURCE_DIR and AF_BINARY_DIR must be set\n");
                return -1;
        }
        snprintf(F.src, sizeof(F.src), "%s", src);
        snprintf(F.bin, sizeof(F.bin), "%s", bin);
        snprintf(F.config, sizeof(F.config), "%s/examples/claims/agentfleet.yaml", F.src);
        af_ulid_new(id);
        for (char *p = id; *p; p++)
                *p = (char) (*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        snprintf(H.prefix, sizeof(H.prefix), "fleet-req-%s.", id);
        snprintf(H.bootstrap, sizeof(H.bootstrap), "%s", kafka);
        H.redis_port = atoi(redis);
        if (!h_create_topics())
                return -1;
        curl_global_init(CURL_GLOBAL_DEFAULT);

        api_port = h_free_port();
        do
                sim_port = h_free_port();
        while (sim_port == api_port);
        snprintf(H.base_url, sizeof(H.base_url), "http://127.0.0.1:%d", api_port);
        snprintf(F.sim_url, sizeof(F.sim_url), "http://127.0.0.1:%d", sim_port);
        snprintf(F.secret, sizeof(F.secret), "fleet-req-secret-%s", id);

        /* The children (and the CLI) read the example config, pointed here by environment. */
        setenv("AGENTFLEET_CONFIG", F.config, 1);
        setenv("AGENTFLEET_KAFKA_BOOTSTRAP_SERVERS", kafka, 1);
        setenv("AGENTFLEET_TOPIC_PREFIX", H.prefix, 1);
        setenv("AGENTFLEET_REDIS_PORT", redis, 1);
        fleet_setenv_int("AGENTFLEET_HTTP_PORT", api_port);
        fleet_setenv_int("AGENTFLEET_SIMAGENT_PORT", sim_port);
        setenv("AGENTFLEET_SIMAGENT_URL", F.sim_url, 1);
        setenv("AGENTFLEET_CLI_API_URL", H.base_url, 1);
        setenv("AGENTFLEET_INTAKE_KEY", F.secret, 1);
        setenv("AGENTFLEET_TOKEN", "demo-intake-token", 1);
        setenv("AGENTFLEET_LOG_LEVEL", "info", 1);
        snprintf(group, sizeof(group), "%scoordinator", H.prefix);
        setenv("AGENTFLEET_COORDINATOR_GROUP_ID", group, 1);
        snprintf(group, sizeof(group), "%sworkers", H.prefix);
        setenv("AGENTFLEET_WORKER_GROUP_ID", group, 1);

        F.procs[0].name = "simagent";
        F.procs[1].name = "coordinator";
        F.procs[2].name = "worker";
        if (!fleet_spawn(&F.procs[0], "agentfleet-simagent", NULL, NULL) ||
            !fleet_spawn(&F.procs[1], "agentfleet-coordinator", NULL, NULL) ||
            !fleet_spawn(&F.procs[2], "agentfleet-worker", "--set",
                         "kafka.session.timeout.ms=6000"))
                return -1;
        for (int i = 0; i < 600; i++) {
                for (int k = 0; k < 3; k++)
                        if (!fleet_alive(&F.procs[k])) {
                                fprintf(stderr, "%s exited early\n", F.procs[k].name);
                                fleet_show_logs();
                                return -1;
                        }
                if (fleet_http_ok(F.sim_url, "/healthz") && fleet_http_ok(H.base_url, "/readyz") &&
                    af_test_file_has(F.procs[2].log, "partitions assigned: "))
                        return 0;
                h_sleep_ms(100);
        }
        fprintf(stderr, "the fleet did not become ready\n");
        fleet_show_logs();
        return -1;
}

static int teardown(void **state) {
        bool sanitized = false;
        int st;

        if (F.skipped)
                return 0;
        if (F.passed < FLEET_N_TESTS)
                fleet_show_logs();
        for (int i = 2; i >= 0; i--)
                if (F.procs[i].pid > 0)
                        kill(F.procs[i].pid, SIGTERM);
        for (int i = 2; i >= 0; i--) {
                fleet_proc_t *p = &F.procs[i];
                for (int k = 0; p->pid > 0 && k < 300; k++) {
                        if (waitpid(p->pid, &st, WNOHANG) == p->pid)
                                p->pid = 0;
                        else
                                h_sleep_ms(100);
                }
                if (p->pid > 0) {
                        kill(p->pid, SIGKILL);
                        waitpid(p->pid, &st, 0);
                        p->pid = 0;
                }
                if (fleet_log_sanitizer_report(p->log)) {
                        fprintf(stderr, "sanitizer report in %s's log %s\n", p->name, p->log);
                        sanitized = true;
                }
        }
        if (sanitized)
                fleet_show_logs();
        else if (F.passed == FLEET_N_TESTS)
                for (int i = 0; i < 3; i++)
                        unlink(F.procs[i].log);
        h_delete_topics(); /* every process that used them is gone */
        curl_global_cleanup();
        return sanitized ? -1 : 0;
}

/* ---- payloads and matching ------------------------------------------------------------------ */

static void unique(char *out, size_t n, const char *what) {
        snprintf(out, n, "%s-%016llx", what, (unsigned long long) af_rand_u64());
}

/* The first sample claim of the example, with claim_id set to claim_id (caller frees). */
static char *claim_payload(const char *claim_id) {
        char path[400], line[8192];
        FILE *f;
        json_t *j;
        char *out = NULL;

        snprintf(path, sizeof(path), "%s/examples/claims/claims.jsonl", F.src);
        f = fopen(path, "r");
        if (!f)
                return NULL;
        if (fgets(line, sizeof(line), f) && (j = json_loads(line, 0, NULL))) {
                json_object_set_new(j, "claim_id", json_string(claim_id));
                out = json_dumps(j, JSON_COMPACT);
                json_decref(j);
        }
        fclose(f);
        return out;
}

typedef struct task_match_s {
        const char *request_id;
        char task_id[64];
        char principal[128];
        char tenant[128];
        int origin;
} task_match_t;

static bool match_task(const rd_kafka_message_t *m, void *opaque) {
        task_match_t *tm = opaque;
        Agentfleet__V1__Task *t = agentfleet__v1__task__unpack(NULL, m->len, m->payload);
        bool hit = t && !strcmp(t->request_id, tm->request_id);
        if (hit) {
                snprintf(tm->task_id, sizeof(tm->task_id), "%s", t->id);
                snprintf(tm->principal, sizeof(tm->principal), "%s", t->principal);
                snprintf(tm->tenant, sizeof(tm->tenant), "%s", t->tenant);
                tm->origin = t->origin;
        }
        if (t)
                agentfleet__v1__task__free_unpacked(t, NULL);
        return hit;
}

typedef struct result_match_s {
        const char *task_id;
        int status;
        char output[4096];
        int64_t prompt_tokens;
        int64_t completion_tokens;
        int32_t tool_calls;
} result_match_t;

static bool result_is_final(int status) {
        return status != AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_QUEUED &&
               status != AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_RUNNING &&
               status != AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_UNSPECIFIED;
}

static bool match_final_result(const rd_kafka_message_t *m, void *opaque) {
        result_match_t *rm = opaque;
        Agentfleet__V1__TaskResult *r =
                agentfleet__v1__task_result__unpack(NULL, m->len, m->payload);
        bool hit = r && !strcmp(r->task_id, rm->task_id) && result_is_final(r->status);
        if (hit) {
                rm->status = r->status;
                snprintf(rm->output, sizeof(rm->output), "%s", r->output ? r->output : "");
                if (r->usage) {
                        rm->prompt_tokens = r->usage->prompt_tokens;
                        rm->completion_tokens = r->usage->completion_tokens;
                        rm->tool_calls = r->usage->tool_calls;
                }
        }
        if (r)
                agentfleet__v1__task_result__free_unpacked(r, NULL);
        return hit;
}

/* The request was admitted by the coordinator and ran to a SUCCEEDED result with the agent's
 * decision, exactly once. */
static void assert_request_completes(const char *request_id, const char *claim_id) {
        task_match_t tm = {.request_id = request_id};
        result_match_t rm;
        json_t *out;

        if (h_scan("tasks.claims", match_task, &tm, FLEET_RESULT_MS, false) != 1)
                fail_msg("request %s was never admitted (no Task on tasks.claims)", request_id);
        assert_string_equal(tm.principal, FLEET_PRINCIPAL);
        assert_string_equal(tm.tenant, FLEET_TENANT);
        assert_int_equal(tm.origin, AGENTFLEET__V1__ORIGIN__ORIGIN_KAFKA);

        memset(&rm, 0, sizeof(rm));
        rm.task_id = tm.task_id;
        if (h_scan("results", match_final_result, &rm, FLEET_RESULT_MS, false) != 1)
                fail_msg("task %s (request %s) has no final result", tm.task_id, request_id);
        if (rm.status != AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED)
                fail_msg("task %s ended with status %d, not SUCCEEDED", tm.task_id, rm.status);
        out = json_loads(rm.output, 0, NULL);
        if (!out)
                fail_msg("task %s: output is not JSON: %s", tm.task_id, rm.output);
        assert_non_null(json_string_value(json_object_get(out, "decision")));
        assert_string_equal(json_string_value(json_object_get(out, "claim_id")), claim_id);
        json_decref(out);
        assert_true(rm.prompt_tokens > 0);
        assert_true(rm.completion_tokens > 0);
        assert_int_equal(rm.tool_calls, 2); /* rules_check and crm_update */

        /* exactly one final result: everything is on the topic by now; a second one would
         * be a second execution */
        memset(&rm, 0, sizeof(rm));
        rm.task_id = tm.task_id;
        assert_int_equal(h_scan("results", match_final_result, &rm, 3000, true), 1);
}

/* Produce a signed protobuf TaskRequest for a new claim. */
static void produce_protobuf_request(const char *request_id, const char *claim_id) {
        Agentfleet__V1__TaskRequest req = AGENTFLEET__V1__TASK_REQUEST__INIT;
        char sig[65];
        char *payload = claim_payload(claim_id);
        size_t len;
        uint8_t *buf;

        assert_non_null(payload);
        req.type = "claim.triage";
        req.case_key = (char *) claim_id;
        req.payload = payload;
        req.request_id = (char *) request_id;
        req.key_id = FLEET_KEY_ID;
        assert_int_equal(af_wire_taskrequest_sign(&req, F.secret, strlen(F.secret), sig), AF_OK);
        req.signature = sig;
        len = agentfleet__v1__task_request__get_packed_size(&req);
        buf = malloc(len);
        assert_non_null(buf);
        agentfleet__v1__task_request__pack(&req, buf);
        assert_true(h_produce("requests", claim_id, buf, len, "application/x-protobuf"));
        free(buf);
        free(payload);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_protobuf_request_runs_to_its_result(void **state) {
        char rid[64], claim[64];

        if (F.skipped)
                skip();
        unique(rid, sizeof(rid), "pb");
        unique(claim, sizeof(claim), "CLM-PB");
        produce_protobuf_request(rid, claim);
        assert_request_completes(rid, claim);
        F.passed++;
}

static void test_json_request_from_the_cli_runs_to_its_result(void **state) {
        char claim[64], cmd[2048], rid[128] = "";
        char *payload;
        FILE *p;

        if (F.skipped)
                skip();
        unique(claim, sizeof(claim), "CLM-JSON");
        payload = claim_payload(claim);
        assert_non_null(payload);
        /* The payload has no single quote (sample claims are plain JSON). */
        assert_null(strchr(payload, '\''));
        snprintf(cmd, sizeof(cmd),
                 "'%s/agentfleet' submit --type claim.triage --via-kafka --key-id %s "
                 "--case-key %s --payload '%s'",
                 F.bin, FLEET_KEY_ID, claim, payload);
        free(payload);
        p = popen(cmd, "r");
        assert_non_null(p);
        if (!fgets(rid, sizeof(rid), p))
                rid[0] = '\0';
        assert_int_equal(pclose(p), 0);
        rid[strcspn(rid, "\r\n")] = '\0';
        if (!rid[0])
                fail_msg("agentfleet submit --via-kafka printed no request id");
        assert_request_completes(rid, claim);
        F.passed++;
}

typedef struct dlq_match_s {
        const char *needle;
        char reason[512];
        char content_type[64];
        char source_topic[160];
} dlq_match_t;

static bool match_dlq(const rd_kafka_message_t *m, void *opaque) {
        dlq_match_t *dm = opaque;
        Agentfleet__V1__DeadLetter *dl =
                agentfleet__v1__dead_letter__unpack(NULL, m->len, m->payload);
        bool hit = dl && dl->original.len &&
                   memmem(dl->original.data, dl->original.len, dm->needle, strlen(dm->needle));
        if (hit) {
                snprintf(dm->reason, sizeof(dm->reason), "%s", dl->reason);
                snprintf(dm->content_type, sizeof(dm->content_type), "%s", dl->content_type);
                snprintf(dm->source_topic, sizeof(dm->source_topic), "%s", dl->source_topic);
        }
        if (dl)
                agentfleet__v1__dead_letter__free_unpacked(dl, NULL);
        return hit;
}

static void test_malformed_requests_dead_lettered_next_one_completes(void **state) {
        char tag_pb[64], tag_json[64], bad[256], rid[64], claim[64], topic[160];
        dlq_match_t dm;

        if (F.skipped)
                skip();
        unique(tag_pb, sizeof(tag_pb), "badpb");
        unique(tag_json, sizeof(tag_json), "badjson");
        unique(rid, sizeof(rid), "after-bad");
        unique(claim, sizeof(claim), "CLM-AFTER-BAD");
        h_topic(topic, sizeof(topic), "requests");

        /* All three on one partition (one key): the bad ones come first. */
        snprintf(bad, sizeof(bad), "\xff\xff\xff not protobuf %s", tag_pb);
        assert_true(h_produce("requests", claim, bad, strlen(bad), "application/x-protobuf"));
        snprintf(bad, sizeof(bad), "{\"type\": \"claim.triage\", \"note\": \"%s\"", tag_json);
        assert_true(h_produce("requests", claim, bad, strlen(bad), "application/json"));
        produce_protobuf_request(rid, claim);

        assert_request_completes(rid, claim);

        memset(&dm, 0, sizeof(dm));
        dm.needle = tag_pb;
        if (h_scan("dlq", match_dlq, &dm, FLEET_RESULT_MS, false) != 1)
                fail_msg("the malformed protobuf request has no dead letter");
        if (!strstr(dm.reason, "not a valid protobuf"))
                fail_msg("dead letter reason \"%s\" does not say it is not a valid protobuf",
                         dm.reason);
        assert_string_equal(dm.content_type, "application/x-protobuf");
        assert_string_equal(dm.source_topic, topic);

        memset(&dm, 0, sizeof(dm));
        dm.needle = tag_json;
        if (h_scan("dlq", match_dlq, &dm, FLEET_RESULT_MS, false) != 1)
                fail_msg("the malformed JSON request has no dead letter");
        if (!strstr(dm.reason, "invalid JSON"))
                fail_msg("dead letter reason \"%s\" does not say the JSON is invalid", dm.reason);
        assert_string_equal(dm.content_type, "application/json");

        assert_true(fleet_http_ok(H.base_url, "/healthz"));
        for (int i = 0; i < 3; i++)
                if (!fleet_alive(&F.procs[i]))
                        fail_msg("%s died", F.procs[i].name);
        F.passed++;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_protobuf_request_runs_to_its_result),
                cmocka_unit_test(test_json_request_from_the_cli_runs_to_its_result),
                cmocka_unit_test(test_malformed_requests_dead_lettered_next_one_completes),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
