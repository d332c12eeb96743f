/*
 * test_worker_pipeline: agentfleet-worker end to end on the real Kafka and Redis, without a
 * coordinator. Task protobufs are produced straight to tasks.default; the integrations and
 * the model are a stub HTTP server in this process that records every request exactly.
 *
 * The group setup runs everything once — start the worker, produce an integration task, a
 * 503, a 404, an agent task that makes two tool calls and a poison message, collect what the
 * worker writes to `results`, `audit` and `dlq`, then redeliver a finished task, then SIGTERM
 * the worker — and each test asserts one behaviour on what was recorded.
 *
 * Needs AF_TEST_KAFKA and AF_TEST_REDIS_PORT (prints SKIP without them) and the binaries in
 * AF_BINARY_DIR (agentfleet-worker, af-kafka-admin). Topics get a prefix unique to the run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "support/support.h"
#include "agentfleet/v1/audit.pb-c.h"
#include "agentfleet/v1/dlq.pb-c.h"
#include "agentfleet/v1/result.pb-c.h"
#include "agentfleet/v1/task.pb-c.h"
#include "audit.h"
#include "clock.h"
#include "http_client.h"
#include "http_server.h"
#include "ids.h"
#include "kafka.h"
#include "log.h"

#define PARTS       3
#define DEADLINE_MS 90000
#define AUDIT_KEY   "worker-pipeline-test-key"
#define TRACEPARENT "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
#define MAX_REQS    64
#define MAX_ITEMS   256
#define ECHO_PAYLOAD                                                                               \
        "{ \"claim_id\" : \"C-12\", \"note\": \"caf\\u00e9 \\\"q\\\" \xe2\x82\xac\", "             \
        "\"n\": [1.5, -2e3, true, null, {}] }"
#define BAD_ECHO_PAYLOAD "{\"claim_id\":\"C-13\",}"
#define BAD_CRM_PAYLOAD  "{\"claim_id\": C-14}"

/* ---- what the stub saw ------------------------------------------------------------------- */

typedef struct stub_req_s {
        char method[8];
        char path[256];
        char idem[160];
        char fence[32];
        char task[64];
        char trace[128];
        char xtest[64];
        char auth[64];
        json_t *body; /* parsed body or NULL */
} stub_req_t;

/* ---- the run ----------------------------------------------------------------------------- */

static struct {
        const char *bootstrap;
        int redis_port;
        char prefix[64];
        char group[96];
        char worker_id[64];
        char dir[128];
        char conf_path[256];
        char log_path[256];
        af_loop_t *loop;
        af_config_t *conf;
        af_http_server_t *stub;
        af_producer_t *producer;
        af_consumer_t *consumer;
        pid_t worker;
        int worker_status; /* waitpid status after SIGTERM */

        stub_req_t reqs[MAX_REQS];
        int nreqs;

        Agentfleet__V1__TaskResult *results[MAX_ITEMS];
        uint8_t *result_bytes[MAX_ITEMS];
        size_t result_lens[MAX_ITEMS];
        int nresults;
        Agentfleet__V1__AuditEvent *audits[MAX_ITEMS];
        int naudits;
        Agentfleet__V1__DeadLetter *dlqs[16];
        int ndlqs;

        char id_ok[27], id_503[27], id_404[27], id_agent[27];
        char id_precancel[27], id_held[27], id_cancel_run[27], id_handback[27];
        char id_timeout[27], id_past_deadline[27], id_odd[27];
        char id_echo[27], id_bad_echo[27], id_bad_crm[27], id_unreachable[27];
        int closed_port; /* nothing listens there */
        int metrics_port;
        char *metrics; /* /metrics text scraped before SIGTERM */
        int64_t handback_offset;
        int32_t handback_partition;
        int crm_calls_before_redelivery;
        int acked;
} R;

static void copy_header(const af_http_req_t *req, const char *name, char *out, size_t n) {
        const char *v = af_http_req_header(req, name);
        snprintf(out, n, "%s", v ? v : "");
}

static stub_req_t *stub_record(af_http_req_t *req) {
        stub_req_t *r;
        size_t len = 0;
        const char *body = af_http_req_body(req, &len);
        json_error_t jerr;

        if (R.nreqs >= MAX_REQS)
                return NULL;
        r = &R.reqs[R.nreqs++];
        snprintf(r->method, sizeof(r->method), "%s", af_http_req_method(req));
        snprintf(r->path, sizeof(r->path), "%s", af_http_req_path(req));
        copy_header(req, "Idempotency-Key", r->idem, sizeof(r->idem));
        copy_header(req, "X-Agentfleet-Fence", r->fence, sizeof(r->fence));
        copy_header(req, "X-Agentfleet-Task", r->task, sizeof(r->task));
        copy_header(req, "traceparent", r->trace, sizeof(r->trace));
        copy_header(req, "X-Test", r->xtest, sizeof(r->xtest));
        copy_header(req, "Authorization", r->auth, sizeof(r->auth));
        r->body = body && len ? json_loadb(body, len, 0, &jerr) : NULL;
        return r;
}

static void stub_crm(af_http_req_t *req, void *opaque) {
        stub_record(req);
        af_http_reply_json(req, 200,
                           json_pack("{s:b, s:s}", "ok", 1, "claim", af_http_req_param(req, "id")));
}

static void stub_rules(af_http_req_t *req, void *opaque) {
        stub_record(req);
        af_http_reply_json(req, 200, json_pack("{s:b, s:[]}", "passed", 1, "violations"));
}

static void stub_echo(af_http_req_t *req, void *opaque) {
        stub_record(req);
        af_http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static void stub_fail(af_http_req_t *req, void *opaque) {
        stub_record(req);
        af_http_reply_error(req, atoi(af_http_req_param(req, "code")), "stub",
                            "failing on "
                            "purpose");
}

/* A slow integration: answers after {ms}, unless the caller goes away first (a cancelled or
 * handed-back task aborts its request). */
typedef struct slow_s {
        af_http_req_t *req;
        af_timer_t *timer;
        bool closed;
} slow_t;

static slow_t slows[8];
static int nslows;
static int slow_closed;

static void slow_answer(void *opaque) {
        slow_t *sl = opaque;
        if (!sl->closed) {
                sl->closed = true;
                af_http_reply_json(sl->req, 200, json_pack("{s:b}", "slow", 1));
        }
}

static void slow_on_close(af_http_req_t *req, void *opaque) {
        slow_t *sl = opaque;
        sl->closed = true;
        slow_closed++;
        af_timer_stop(sl->timer);
}

static void stub_slow(af_http_req_t *req, void *opaque) {
        slow_t *sl;
        stub_record(req);
        if (nslows >= 8) {
                af_http_reply_error(req, 500, "stub", "too many slow requests");
                return;
        }
        sl = &slows[nslows++];
        sl->req = req;
        sl->timer = af_timer_new(R.loop, slow_answer, sl);
        af_http_req_on_close(req, slow_on_close, sl);
        af_timer_start(sl->timer, atoi(af_http_req_param(req, "ms")), false);
}

/* The model: tool calls first, a JSON verdict once tool results are in the conversation. */
static void stub_chat(af_http_req_t *req, void *opaque) {
        stub_req_t *r = stub_record(req);
        json_t *msgs = r && r->body ? json_object_get(r->body, "messages") : NULL;
        bool has_tool = false;
        size_t i;
        json_t *m;
        json_t *reply;

        json_array_foreach(msgs, i, m) {
                if (!strcmp(json_string_value(json_object_get(m, "role")) ?: "", "tool"))
                        has_tool = true;
        }
        if (!has_tool)
                reply = json_pack("{s:s, s:[{s:i, s:s, s:{s:s, s:n, s:[{s:s, s:s, s:{s:s, s:s}},"
                                  "{s:s, s:s, s:{s:s, s:s}}]}}], s:{s:i, s:i}}",
                                  "id", "chatcmpl-1", "choices", "index", 0, "finish_reason",
                                  "tool_calls", "message", "role", "assistant", "content",
                                  "tool_calls", "id", "call_a", "type", "function", "function",
                                  "name", "rules_check", "arguments",
                                  "{\"claim_id\":\"C-9\",\"amount\":120}", "id", "call_b", "type",
                                  "function", "function", "name", "crm_update", "arguments",
                                  "{\"claim_id\":\"C-9\",\"status\":\"triaged\"}", "usage",
                                  "prompt_tokens", 100, "completion_tokens", 20);
        else
                reply = json_pack("{s:s, s:[{s:i, s:s, s:{s:s, s:s}}], s:{s:i, s:i}}", "id",
                                  "chatcmpl-2", "choices", "index", 0, "finish_reason", "stop",
                                  "message", "role", "assistant", "content",
                                  "{\"decision\":\"approve\",\"confidence\":0.93,"
                                  "\"claim_id\":\"C-9\"}",
                                  "usage", "prompt_tokens", 100, "completion_tokens", 20);
        af_http_reply_json(req, 200, reply);
}

/* A misbehaving model: first asks for a tool its agent may not use, then answers prose. */
static void stub_odd_chat(af_http_req_t *req, void *opaque) {
        stub_req_t *r = stub_record(req);
        json_t *msgs = r && r->body ? json_object_get(r->body, "messages") : NULL;
        json_t *reply;

        if (json_array_size(msgs) <= 2)
                reply = json_pack("{s:[{s:{s:s, s:n, s:[{s:s, s:s, s:{s:s, s:s}}]}}]}", "choices",
                                  "message", "role", "assistant", "content", "tool_calls", "id",
                                  "call_x", "type", "function", "function", "name", "drop_tables",
                                  "arguments", "{}");
        else
                reply = json_pack("{s:[{s:{s:s, s:s}}]}", "choices", "message", "role", "assistant",
                                  "content", "I think we should approve it.");
        af_http_reply_json(req, 200, reply);
}

/* ---- collecting what the worker wrote ---------------------------------------------------- */

static bool topic_is(const char *topic, const char *suffix) {
        char name[256];
        af_kafka_topic(R.conf, suffix, name, sizeof(name));
        return !strcmp(topic, name);
}

static void on_collect(af_consumer_t *c, const af_kafka_msg_t *msg, void *opaque) {
        if (topic_is(msg->topic, "results") && R.nresults < MAX_ITEMS) {
                Agentfleet__V1__TaskResult *r =
                        agentfleet__v1__task_result__unpack(NULL, msg->value_len, msg->value);
                if (r) {
                        R.result_bytes[R.nresults] = malloc(msg->value_len + 1);
                        memcpy(R.result_bytes[R.nresults], msg->value, msg->value_len);
                        R.result_lens[R.nresults] = msg->value_len;
                        R.results[R.nresults++] = r;
                }
        } else if (topic_is(msg->topic, "audit") && R.naudits < MAX_ITEMS) {
                Agentfleet__V1__AuditEvent *ev =
                        agentfleet__v1__audit_event__unpack(NULL, msg->value_len, msg->value);
                if (ev)
                        R.audits[R.naudits++] = ev;
        } else if (topic_is(msg->topic, "dlq") && R.ndlqs < 16) {
                Agentfleet__V1__DeadLetter *d =
                        agentfleet__v1__dead_letter__unpack(NULL, msg->value_len, msg->value);
                if (d)
                        R.dlqs[R.ndlqs++] = d;
        }
}

/* Final (non-RUNNING) results of a task, in arrival order. */
static int finals(const char *task_id, Agentfleet__V1__TaskResult **out, int max) {
        int n = 0;
        for (int i = 0; i < R.nresults; i++) {
                Agentfleet__V1__TaskResult *r = R.results[i];
                if (strcmp(r->task_id, task_id) ||
                    r->status == AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_RUNNING)
                        continue;
                if (n < max)
                        out[n] = r;
                n++;
        }
        return n;
}

static int final_index(const char *task_id, int nth) {
        int n = 0;
        for (int i = 0; i < R.nresults; i++) {
                Agentfleet__V1__TaskResult *r = R.results[i];
                if (!strcmp(r->task_id, task_id) &&
                    r->status != AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_RUNNING && n++ == nth)
                        return i;
        }
        return -1;
}

static const Agentfleet__V1__AuditEvent *find_audit(const char *task_id, const char *action) {
        for (int i = 0; i < R.naudits; i++)
                if (!strcmp(R.audits[i]->task_id, task_id) && !strcmp(R.audits[i]->action, action))
                        return R.audits[i];
        return NULL;
}

static bool has_audit(const char *task_id, const char *action) {
        return find_audit(task_id, action) != NULL;
}

/* ---- loop helpers ------------------------------------------------------------------------ */

typedef bool(cond_fn)(void);

static bool cond_holds(void *arg) {
        return (*(cond_fn **) arg)();
}

/* Run the loop until fn() (or for ms when fn is NULL). @returns fn() at the end. */
static bool run_until(cond_fn *fn, int64_t ms) {
        return af_test_loop_until(R.loop, fn ? cond_holds : NULL, &fn, ms);
}

static bool phase1_done(void) {
        Agentfleet__V1__TaskResult *f[4];
        return finals(R.id_odd, f, 4) >= 1 && finals(R.id_timeout, f, 4) >= 1 &&
               finals(R.id_past_deadline, f, 4) >= 1 && finals(R.id_precancel, f, 4) >= 1 &&
               finals(R.id_held, f, 4) >= 1 && finals(R.id_ok, f, 4) >= 1 &&
               finals(R.id_503, f, 4) >= 1 && finals(R.id_404, f, 4) >= 1 &&
               finals(R.id_unreachable, f, 4) >= 1 && finals(R.id_agent, f, 4) >= 1 &&
               finals(R.id_echo, f, 4) >= 1 && finals(R.id_bad_echo, f, 4) >= 1 &&
               finals(R.id_bad_crm, f, 4) >= 1 && R.ndlqs >= 1 &&
               has_audit(R.id_ok, "task.result") && has_audit(R.id_503, "task.result") &&
               has_audit(R.id_404, "task.result") && has_audit(R.id_agent, "task.result");
}

static bool phase2_done(void) {
        Agentfleet__V1__TaskResult *f[4];
        return finals(R.id_ok, f, 4) >= 2;
}

static bool all_acked(void) {
        return R.acked == 0;
}

static void on_produced(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                        void *opaque) {
        assert_int_equal(err, AF_OK);
        R.acked--;
}

/* Produce one message to tasks.default (keyed by case key). */
static void produce_raw(const char *key, const void *val, size_t len) {
        char topic[256], errstr[256];
        af_kafka_header_t hdr = {"content-type", "application/x-protobuf", 22};
        af_kafka_topic(R.conf, "tasks.default", topic, sizeof(topic));
        R.acked++;
        assert_int_equal(af_producer_send(R.producer, topic, -1, key, strlen(key), val, len, &hdr,
                                          1, on_produced, NULL, errstr, sizeof(errstr)),
                         AF_OK);
}

static uint8_t *task_bytes(char id[27], const char *type, const char *payload, const char *idem,
                           size_t *lenp) {
        Agentfleet__V1__Task t = AGENTFLEET__V1__TASK__INIT;
        uint8_t *b;
        af_ulid_new(id);
        t.id = id;
        t.type = (char *) type;
        t.tenant = "acme-health";
        t.principal = "claims-intake";
        t.case_key = id;
        t.idempotency_key = (char *) (idem ? idem : "");
        t.payload = (char *) payload;
        t.attempt = 1;
        t.max_attempts = 3;
        t.created_at_ms = af_clock_wall_ms();
        t.traceparent = TRACEPARENT;
        t.lane = "default";
        *lenp = agentfleet__v1__task__get_packed_size(&t);
        b = malloc(*lenp);
        agentfleet__v1__task__pack(&t, b);
        return b;
}

static void produce_task(char id[27], const char *type, const char *payload, const char *idem) {
        size_t len;
        uint8_t *b = task_bytes(id, type, payload, idem, &len);
        produce_raw(id, b, len);
        free(b);
}

static void redis_cmd(const char *fmt, const char *a, const char *b) {
        redisContext *rc = redisConnect("127.0.0.1", R.redis_port);
        redisReply *rep;
        assert_non_null(rc);
        assert_int_equal(rc->err, 0);
        rep = redisCommand(rc, fmt, a, b);
        assert_non_null(rep);
        assert_int_not_equal(rep->type, REDIS_REPLY_ERROR);
        freeReplyObject(rep);
        redisFree(rc);
}

static int reqs_for_task(const char *task_id) {
        int n = 0;
        for (int i = 0; i < R.nreqs; i++)
                if (!strcmp(R.reqs[i].task, task_id))
                        n++;
        return n;
}

static bool cancel_run_requested(void) {
        return reqs_for_task(R.id_cancel_run) >= 1;
}

static bool cancel_run_done(void) {
        Agentfleet__V1__TaskResult *f[2];
        return finals(R.id_cancel_run, f, 2) >= 1;
}

static bool handback_requested(void) {
        return reqs_for_task(R.id_handback) >= 1;
}

static void on_handback_produced(af_err_t err, const char *errstr, int32_t partition,
                                 int64_t offset, void *opaque) {
        R.handback_partition = partition;
        R.handback_offset = offset;
        R.acked--;
}

static int free_port(void) {
        int port = af_test_free_port();
        assert_true(port > 0);
        return port;
}

static void on_metrics(const af_http_response_t *resp, const af_error_t *err, void *opaque) {
        if (resp && resp->status == 200)
                R.metrics = strdup(resp->body);
        af_loop_stop(R.loop);
}

static void scrape_metrics(void) {
        char errstr[256], url[128];
        af_http_client_opts_t ho = {.default_timeout_ms = 5000,
                                    .default_max_response_bytes = 1 << 20};
        af_http_client_t *hc = af_http_client_new(R.loop, &ho, errstr, sizeof(errstr));
        af_http_request_t req = {.method = "GET", .url = url};
        assert_non_null(hc);
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", R.metrics_port);
        assert_int_equal(af_http_client_send(hc, &req, on_metrics, NULL, NULL), AF_OK);
        af_loop_run(R.loop);
        af_http_client_destroy(hc);
}

/* ---- set-up ------------------------------------------------------------------------------ */

static void write_config(int stub_port, int closed_port) {
        FILE *f = fopen(R.conf_path, "w");
        assert_non_null(f);
        fprintf(f,
                "log: {level: info}\n"
                "topic: {prefix: \"%s\"}\n"
                "kafka:\n  bootstrap.servers: \"%s\"\n  session.timeout.ms: 6000\n"
                "redis: {host: 127.0.0.1, port: %d}\n"
                "audit: {hmac_key: \"%s\"}\n"
                "worker:\n  id: %s\n  group_id: %s\n  lanes: default\n  concurrency: 8\n"
                "  metrics_port: %d\n"
                "  lease_ttl: 5s\n  lease_renew: 500ms\n  drain_timeout: 2s\n  http_timeout: 5s\n"
                "  running_after: 300ms\n"
                "integrations:\n"
                "  crm_update:\n    method: POST\n"
                "    url: \"http://127.0.0.1:%d/crm/claims/{{payload.claim_id}}\"\n"
                "    headers: {X-Test: \"{{task.tenant}}\"}\n"
                "    parameters: {type: object, properties: {claim_id: {type: string}}}\n"
                "  rules_check:\n    method: POST\n    url: \"http://127.0.0.1:%d/rules/check\"\n"
                "  echo:\n    method: POST\n    url: \"http://127.0.0.1:%d/echo\"\n"
                "  flaky:\n    method: POST\n    url: \"http://127.0.0.1:%d/fail/503\"\n"
                "  refusing:\n    method: POST\n    url: \"http://127.0.0.1:%d/fail/404\"\n"
                "  slow:\n    method: POST\n    url: \"http://127.0.0.1:%d/slow/20000\"\n"
                "    timeout: 30s\n"
                "  gone:\n    method: POST\n    url: \"http://127.0.0.1:%d/nobody\"\n"
                "agents:\n  tester:\n    version: \"7\"\n"
                "    base_url: \"http://127.0.0.1:%d/v1/\"\n    model: stub-1\n"
                "    tools: [rules_check, crm_update]\n    max_steps: 3\n"
                "    prices: {prompt_per_1k: 1, completion_per_1k: 2}\n"
                "    system_prompt: \"Triage claim {{payload.claim_id}} of {{task.tenant}}.\"\n"
                "  odd:\n    version: \"1\"\n"
                "    base_url: \"http://127.0.0.1:%d/odd/v1\"\n    model: odd-1\n"
                "    tools: [rules_check]\n    max_steps: 3\n"
                "    system_prompt: \"Be odd.\"\n"
                "task_types:\n"
                "  odd.triage: {agent: odd, lane: default}\n"
                "  crm.update: {integration: crm_update, lane: default}\n"
                "  flaky.call: {integration: flaky, lane: default}\n"
                "  refused.call: {integration: refusing, lane: default}\n"
                "  slow.call: {integration: slow, lane: default}\n"
                "  slow.bounded: {integration: slow, lane: default, timeout: 1s}\n"
                "  claim.triage: {agent: tester, lane: default}\n"
                "  echo.call: {integration: echo, lane: default}\n"
                "  gone.call: {integration: gone, lane: default}\n",
                R.prefix, R.bootstrap, R.redis_port, AUDIT_KEY, R.worker_id, R.group,
                R.metrics_port, stub_port, stub_port, stub_port, stub_port, stub_port, stub_port,
                closed_port, stub_port, stub_port);
        fclose(f);
}

static void create_topics(void) {
        char cmd[1024];
        snprintf(cmd, sizeof(cmd),
                 "\"%s/af-kafka-admin\" create-topics --bootstrap %s --prefix %s "
                 "--partitions %d >/dev/null",
                 getenv("AF_BINARY_DIR"), R.bootstrap, R.prefix, PARTS);
        assert_int_equal(system(cmd), 0);
}

static void start_worker(void) {
        const char *args[] = {"--config", R.conf_path, NULL};
        R.worker = af_test_spawn("agentfleet-worker", R.log_path, args);
        assert_true(R.worker > 0);
}

static int group_setup(void **state) {
        char errstr[512];
        af_http_server_opts_t so = {.address = "127.0.0.1",
                                    .port = 0,
                                    .max_body_bytes = 1 << 20,
                                    .max_header_bytes = 16384,
                                    .timeout_ms = 10000};
        char ulid[27];
        const char *topics[3];
        char t_results[256], t_audit[256], t_dlq[256];
        uint8_t *dup;
        size_t dup_len;

        af_ulid_new(ulid);
        snprintf(R.prefix, sizeof(R.prefix), "wt%.10s.", ulid + 16);
        for (char *p = R.prefix; *p; p++)
                *p = (char) (*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        snprintf(R.group, sizeof(R.group), "%sworkers", R.prefix);
        snprintf(R.worker_id, sizeof(R.worker_id), "wt-%d", (int) getpid());
        snprintf(R.dir, sizeof(R.dir), "/tmp/af-worker-test-XXXXXX");
        assert_non_null(mkdtemp(R.dir));
        snprintf(R.conf_path, sizeof(R.conf_path), "%s/agentfleet.yaml", R.dir);
        snprintf(R.log_path, sizeof(R.log_path), "%s/worker.log", R.dir);

        R.loop = af_loop_new(errstr, sizeof(errstr));
        R.conf = af_config_new();
        assert_non_null(R.loop);
        assert_int_equal(af_config_set(R.conf, "kafka.bootstrap.servers", R.bootstrap, errstr,
                                       sizeof(errstr)),
                         AF_OK);
        assert_int_equal(af_config_set(R.conf, "topic.prefix", R.prefix, errstr, sizeof(errstr)),
                         AF_OK);
        assert_int_equal(
                af_config_set(R.conf, "kafka.session.timeout.ms", "6000", errstr, sizeof(errstr)),
                AF_OK);
        create_topics();

        R.stub = af_http_server_new(R.loop, &so, errstr, sizeof(errstr));
        assert_non_null(R.stub);
        af_http_server_route(R.stub, "POST", "/crm/claims/{id}", false, stub_crm, NULL);
        af_http_server_route(R.stub, "POST", "/rules/check", false, stub_rules, NULL);
        af_http_server_route(R.stub, "POST", "/fail/{code}", false, stub_fail, NULL);
        af_http_server_route(R.stub, "POST", "/v1/chat/completions", false, stub_chat, NULL);
        af_http_server_route(R.stub, "POST", "/slow/{ms}", false, stub_slow, NULL);
        af_http_server_route(R.stub, "POST", "/echo", false, stub_echo, NULL);
        af_http_server_route(R.stub, "POST", "/odd/v1/chat/completions", false, stub_odd_chat,
                             NULL);
        R.metrics_port = free_port();
        R.closed_port = free_port();
        write_config(af_http_server_port(R.stub), R.closed_port);

        R.producer = af_producer_new(R.loop, R.conf, errstr, sizeof(errstr));
        assert_non_null(R.producer);
        af_kafka_topic(R.conf, "results", t_results, sizeof(t_results));
        af_kafka_topic(R.conf, "audit", t_audit, sizeof(t_audit));
        af_kafka_topic(R.conf, "dlq", t_dlq, sizeof(t_dlq));
        topics[0] = t_results;
        topics[1] = t_audit;
        topics[2] = t_dlq;
        snprintf(errstr, sizeof(errstr), "%scollector", R.prefix);
        R.consumer = af_consumer_new(R.loop, R.conf, errstr, topics, 3, on_collect, NULL, NULL,
                                     errstr, sizeof(errstr));
        assert_non_null(R.consumer);

        /* Cancelled before it starts: the cancel mark is there before the task. */
        {
                size_t len;
                uint8_t *b = task_bytes(R.id_precancel, "crm.update", "{\"claim_id\":\"C-5\"}",
                                        NULL, &len);
                redis_cmd("SET af:{%s}:cancel %s PX 600000", R.id_precancel, "1");
                produce_raw(R.id_precancel, b, len);
                free(b);
        }
        /* Held by another live owner for 2 s: the worker must wait and then run it. */
        {
                size_t len;
                uint8_t *b =
                        task_bytes(R.id_held, "crm.update", "{\"claim_id\":\"C-6\"}", NULL, &len);
                redis_cmd("SET af:{%s}:lease %s PX 2000", R.id_held,
                          "0123456789abcdef0123456789abcdef:1:other-worker");
                produce_raw(R.id_held, b, len);
                free(b);
        }
        /* Its deadline passed before any worker saw it. */
        {
                Agentfleet__V1__Task t = AGENTFLEET__V1__TASK__INIT;
                size_t len;
                uint8_t *b;
                af_ulid_new(R.id_past_deadline);
                t.id = R.id_past_deadline;
                t.type = "crm.update";
                t.tenant = "acme-health";
                t.payload = "{\"claim_id\":\"C-4\"}";
                t.attempt = 1;
                t.deadline_ms = af_clock_wall_ms() - 1000;
                len = agentfleet__v1__task__get_packed_size(&t);
                b = malloc(len);
                agentfleet__v1__task__pack(&t, b);
                produce_raw(R.id_past_deadline, b, len);
                free(b);
        }
        start_worker();
        produce_task(R.id_odd, "odd.triage", "{\"claim_id\":\"C-11\"}", NULL);
        produce_task(R.id_timeout, "slow.bounded", "{\"claim_id\":\"C-10\"}", NULL);
        produce_task(R.id_ok, "crm.update", "{\"claim_id\":\"C-1\",\"amount\":10}", "idem-C-1");
        produce_task(R.id_503, "flaky.call", "{\"claim_id\":\"C-2\"}", NULL);
        produce_task(R.id_404, "refused.call", "{\"claim_id\":\"C-3\"}", NULL);
        produce_task(R.id_unreachable, "gone.call", "{\"claim_id\":\"C-12\"}", NULL);
        produce_task(R.id_agent, "claim.triage", "{\"claim_id\":\"C-9\",\"amount\":120}", NULL);
        /* An integration that names no payload variable sends the payload text on as it is
         * (its tree is never built), but a malformed payload still fails, with or without a
         * template that reads it. */
        produce_task(R.id_echo, "echo.call", ECHO_PAYLOAD, NULL);
        produce_task(R.id_bad_echo, "echo.call", BAD_ECHO_PAYLOAD, NULL);
        produce_task(R.id_bad_crm, "crm.update", BAD_CRM_PAYLOAD, NULL);
        produce_raw("poison", "\xff\xff\xff\x07garbage", 11);
        if (!run_until(phase1_done, DEADLINE_MS))
                fprintf(stderr, "phase 1 incomplete; worker log: %s\n", R.log_path);

        /* Redeliver the finished integration task: same bytes, as after a crash before the
         * commit. It must be answered from the done record, not run again. */
        R.crm_calls_before_redelivery = 0;
        for (int i = 0; i < R.nreqs; i++)
                if (!strcmp(R.reqs[i].path, "/crm/claims/C-1"))
                        R.crm_calls_before_redelivery++;
        {
                int idx = final_index(R.id_ok, 0);
                if (idx >= 0) {
                        /* Rebuild the original Task with the same id. */
                        Agentfleet__V1__Task t = AGENTFLEET__V1__TASK__INIT;
                        t.id = R.id_ok;
                        t.type = "crm.update";
                        t.tenant = "acme-health";
                        t.principal = "claims-intake";
                        t.case_key = R.id_ok;
                        t.idempotency_key = "idem-C-1";
                        t.payload = "{\"claim_id\":\"C-1\",\"amount\":10}";
                        t.attempt = 1;
                        t.traceparent = TRACEPARENT;
                        dup_len = agentfleet__v1__task__get_packed_size(&t);
                        dup = malloc(dup_len);
                        agentfleet__v1__task__pack(&t, dup);
                        produce_raw(R.id_ok, dup, dup_len);
                        free(dup);
                        if (!run_until(phase2_done, DEADLINE_MS))
                                fprintf(stderr, "phase 2 incomplete; worker log: %s\n", R.log_path);
                }
        }
        run_until(all_acked, 10000);

        /* Cancel while running: the renew sees the mark and the request is aborted. */
        produce_task(R.id_cancel_run, "slow.call", "{\"claim_id\":\"C-7\"}", NULL);
        if (run_until(cancel_run_requested, DEADLINE_MS))
                redis_cmd("SET af:{%s}:cancel %s PX 600000", R.id_cancel_run, "1");
        if (!run_until(cancel_run_done, DEADLINE_MS))
                fprintf(stderr, "cancel while running incomplete; worker log: %s\n", R.log_path);

        /* A task still running at the drain deadline is handed back. */
        {
                char topic[256], perr[256];
                size_t len;
                uint8_t *b = task_bytes(R.id_handback, "slow.call", "{\"claim_id\":\"C-8\"}", NULL,
                                        &len);
                af_kafka_header_t hdr = {"content-type", "application/x-protobuf", 22};
                af_kafka_topic(R.conf, "tasks.default", topic, sizeof(topic));
                R.acked++;
                assert_int_equal(af_producer_send(R.producer, topic, -1, R.id_handback,
                                                  strlen(R.id_handback), b, len, &hdr, 1,
                                                  on_handback_produced, NULL, perr, sizeof(perr)),
                                 AF_OK);
                free(b);
        }
        if (!run_until(handback_requested, DEADLINE_MS))
                fprintf(stderr, "hand-back task never started; worker log: %s\n", R.log_path);
        run_until(all_acked, 10000);

        scrape_metrics();

        /* SIGTERM: the worker drains and exits 0. */
        kill(R.worker, SIGTERM);
        assert_int_equal(waitpid(R.worker, &R.worker_status, 0), R.worker);
        *state = NULL;
        return 0;
}

static void delete_topics(void) {
        af_test_delete_topics(R.conf, R.bootstrap);
}

static int group_teardown(void **state) {
        char cmd[600];
        free(R.metrics);
        af_consumer_destroy(R.consumer);
        af_producer_destroy(R.producer);
        af_http_server_destroy(R.stub);
        for (int i = 0; i < nslows; i++)
                af_timer_destroy(slows[i].timer);
        for (int i = 0; i < R.nreqs; i++)
                json_decref(R.reqs[i].body);
        for (int i = 0; i < R.nresults; i++) {
                agentfleet__v1__task_result__free_unpacked(R.results[i], NULL);
                free(R.result_bytes[i]);
        }
        for (int i = 0; i < R.naudits; i++)
                agentfleet__v1__audit_event__free_unpacked(R.audits[i], NULL);
        for (int i = 0; i < R.ndlqs; i++)
                agentfleet__v1__dead_letter__free_unpacked(R.dlqs[i], NULL);
        delete_topics();
        af_config_destroy(R.conf);
        af_loop_destroy(R.loop);
        if (!getenv("AF_TEST_KEEP_LOG")) {
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", R.dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "could not remove %s\n", R.dir);
        } else {
                fprintf(stderr, "worker log kept: %s\n", R.log_path);
        }
        return 0;
}

/* ---- the tests --------------------------------------------------------------------------- */

static const stub_req_t *find_req(const char *path, int nth) {
        int n = 0;
        for (int i = 0; i < R.nreqs; i++)
                if (!strcmp(R.reqs[i].path, path) && n++ == nth)
                        return &R.reqs[i];
        return NULL;
}

static void test_integration_request_is_exact(void **state) {
        const stub_req_t *r = find_req("/crm/claims/C-1", 0);
        Agentfleet__V1__TaskResult *f[2];
        json_error_t jerr;
        json_t *want = json_loads("{\"claim_id\":\"C-1\",\"amount\":10}", 0, &jerr);

        assert_non_null(r);
        assert_string_equal(r->method, "POST");
        assert_string_equal(r->idem, "idem-C-1");
        assert_string_equal(r->task, R.id_ok);
        assert_string_equal(r->trace, TRACEPARENT);
        assert_string_equal(r->xtest, "acme-health");
        assert_true(atoll(r->fence) > 0);
        assert_non_null(r->body);
        assert_true(json_equal(r->body, want));
        json_decref(want);
        assert_int_equal(finals(R.id_ok, f, 2) >= 1, 1);
        /* The result carries the fence the call was made under. */
        assert_int_equal(f[0]->fence, atoll(r->fence));
}

/* No template reads the payload: it goes out as the body byte for byte, as admitted. */
static void test_payload_sent_as_admitted_without_a_template(void **state) {
        const stub_req_t *r = find_req("/echo", 0);
        Agentfleet__V1__TaskResult *f[2];
        json_error_t jerr;
        json_t *want = json_loads(ECHO_PAYLOAD, 0, &jerr);

        assert_non_null(want);
        assert_non_null(r);
        assert_string_equal(r->task, R.id_echo);
        assert_non_null(r->body);
        assert_true(json_equal(r->body, want));
        json_decref(want);
        assert_int_equal(finals(R.id_echo, f, 2), 1);
        assert_int_equal(f[0]->status, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED);
}

/* A malformed payload fails with jansson's own words, whether or not a template reads it,
 * and no request goes out. */
static void test_malformed_payload_fails_before_any_call(void **state) {
        const char *ids[2] = {R.id_bad_echo, R.id_bad_crm};
        const char *payloads[2] = {BAD_ECHO_PAYLOAD, BAD_CRM_PAYLOAD};

        for (int i = 0; i < 2; i++) {
                Agentfleet__V1__TaskResult *f[2];
                json_error_t jerr;
                char want[512];
                assert_null(json_loads(payloads[i], JSON_DECODE_ANY, &jerr));
                snprintf(want, sizeof(want), "payload is not JSON: %s (line %d, column %d)",
                         jerr.text, jerr.line, jerr.column);
                assert_int_equal(finals(ids[i], f, 2), 1);
                assert_int_equal(f[0]->status, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED);
                assert_non_null(f[0]->error);
                assert_string_equal(f[0]->error->code, "bad_payload");
                assert_false(f[0]->error->retriable);
                assert_string_equal(f[0]->error->message, want);
                assert_int_equal(reqs_for_task(ids[i]), 0);
        }
}

/* The details of each audit event are the JSON objects auditors read. */
static void test_audit_details_are_exact(void **state) {
        const Agentfleet__V1__AuditEvent *lease = find_audit(R.id_ok, "lease.acquired");
        const Agentfleet__V1__AuditEvent *call = find_audit(R.id_ok, "handler.call");
        const Agentfleet__V1__AuditEvent *res = find_audit(R.id_ok, "task.result");
        json_error_t jerr;
        json_t *d;
        char topic[256];

        assert_non_null(lease);
        assert_non_null(call);
        assert_non_null(res);
        af_kafka_topic(R.conf, "tasks.default", topic, sizeof(topic));
        d = json_loads(lease->details, 0, &jerr);
        assert_non_null(d);
        assert_int_equal(json_object_size(d), 5);
        assert_true(json_integer_value(json_object_get(d, "fence")) > 0);
        assert_int_equal(json_integer_value(json_object_get(d, "ttl_ms")), 5000);
        assert_string_equal(json_string_value(json_object_get(d, "topic")), topic);
        assert_true(json_is_integer(json_object_get(d, "partition")));
        assert_true(json_is_integer(json_object_get(d, "offset")));
        json_decref(d);
        d = json_loads(call->details, 0, &jerr);
        assert_non_null(d);
        assert_non_null(strstr(call->details, "{\"kind\":\"integration\",\"target\":\"crm_update\","
                                              "\"method\":\"POST\",\"status\":200,\"ms\":"));
        assert_non_null(strstr(call->details, ",\"error\":\"\"}"));
        assert_true(json_integer_value(json_object_get(d, "fence")) > 0);
        json_decref(d);
        d = json_loads(res->details, 0, &jerr);
        assert_non_null(d);
        assert_non_null(strstr(res->details, "{\"status\":\"TASK_STATUS_SUCCEEDED\","
                                             "\"reemitted\":false,\"fence\":"));
        assert_non_null(strstr(res->details, ",\"prompt_tokens\":0,\"completion_tokens\":0,"
                                             "\"cost_micros\":0}"));
        assert_int_equal(json_object_size(d), 7);
        json_decref(d);
}

static void test_integration_result_succeeded(void **state) {
        Agentfleet__V1__TaskResult *f[2];
        json_error_t jerr;
        json_t *out;

        assert_true(finals(R.id_ok, f, 2) >= 1);
        assert_int_equal(f[0]->status, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED);
        assert_string_equal(f[0]->worker_id, R.worker_id);
        assert_string_equal(f[0]->type, "crm.update");
        assert_string_equal(f[0]->tenant, "acme-health");
        assert_int_equal(strlen(f[0]->versions->config_hash), 64);
        assert_true(f[0]->timings->started_at_ms >= f[0]->timings->created_at_ms);
        assert_true(f[0]->timings->finished_at_ms >= f[0]->timings->started_at_ms);
        out = json_loads(f[0]->output, 0, &jerr);
        assert_non_null(out);
        assert_true(json_is_true(json_object_get(out, "ok")));
        assert_string_equal(json_string_value(json_object_get(out, "claim")), "C-1");
        json_decref(out);
}

static void test_5xx_fails_retriable(void **state) {
        Agentfleet__V1__TaskResult *f[2];
        assert_true(finals(R.id_503, f, 2) >= 1);
        assert_int_equal(f[0]->status, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED);
        assert_non_null(f[0]->error);
        assert_string_equal(f[0]->error->code, "http_503");
        assert_true(f[0]->error->retriable);
        assert_non_null(strstr(f[0]->error->message, "503"));
}

static void test_4xx_fails_not_retriable(void **state) {
        Agentfleet__V1__TaskResult *f[2];
        assert_true(finals(R.id_404, f, 2) >= 1);
        assert_int_equal(f[0]->status, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED);
        assert_non_null(f[0]->error);
        assert_string_equal(f[0]->error->code, "http_404");
        assert_false(f[0]->error->retriable);
}

/* A connection refused is retriable, and the message says which integration it was (curl's
 * own words do not). */
static void test_unreachable_integration_is_named(void **state) {
        Agentfleet__V1__TaskResult *f[2];
        assert_int_equal(finals(R.id_unreachable, f, 2), 1);
        assert_int_equal(f[0]->status, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED);
        assert_string_equal(f[0]->error->code, "transport");
        assert_true(f[0]->error->retriable);
        assert_true(!strncmp(f[0]->error->message, "gone: ", 6));
}

static void test_agent_two_tool_calls_and_json_output(void **state) {
        Agentfleet__V1__TaskResult *f[2];
        const stub_req_t *chat1 = find_req("/v1/chat/completions", 0);
        const stub_req_t *chat2 = find_req("/v1/chat/completions", 1);
        const stub_req_t *rules = find_req("/rules/check", 0);
        const stub_req_t *crm = find_req("/crm/claims/C-9", 0);
        char key[128];
        json_t *out, *tools, *msgs;
        json_error_t jerr;

        assert_true(finals(R.id_agent, f, 2) >= 1);
        assert_int_equal(f[0]->status, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED);
        out = json_loads(f[0]->output, 0, &jerr);
        assert_non_null(out);
        assert_string_equal(json_string_value(json_object_get(out, "decision")), "approve");
        json_decref(out);
        /* Tokens and cost: two model calls of 100 + 20 tokens at 1 and 2 per 1k. */
        assert_non_null(f[0]->usage);
        assert_int_equal(f[0]->usage->prompt_tokens, 200);
        assert_int_equal(f[0]->usage->completion_tokens, 40);
        assert_int_equal(f[0]->usage->llm_calls, 2);
        assert_int_equal(f[0]->usage->tool_calls, 2);
        assert_int_equal(f[0]->usage->cost_micros, 200 * 1000000LL / 1000 + 40 * 2000000LL / 1000);
        assert_string_equal(f[0]->versions->agent, "tester@7");
        assert_int_equal(strlen(f[0]->versions->prompt), 64);

        /* The first model call: rendered system prompt, payload as user, tools offered. */
        assert_non_null(chat1);
        assert_non_null(chat1->body);
        assert_string_equal(json_string_value(json_object_get(chat1->body, "model")), "stub-1");
        msgs = json_object_get(chat1->body, "messages");
        assert_int_equal(json_array_size(msgs), 2);
        assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 0), "content")),
                            "Triage claim C-9 of acme-health.");
        tools = json_object_get(chat1->body, "tools");
        assert_int_equal(json_array_size(tools), 2);
        assert_string_equal(json_string_value(json_object_get(
                                    json_object_get(json_array_get(tools, 0), "function"), "name")),
                            "rules_check");
        assert_string_equal(chat1->auth, "");

        /* The tools were called with the model's arguments and stable idempotency keys. */
        assert_non_null(rules);
        snprintf(key, sizeof(key), "%s:rules_check", R.id_agent);
        assert_string_equal(rules->idem, key);
        assert_string_equal(json_string_value(json_object_get(rules->body, "claim_id")), "C-9");
        assert_non_null(crm);
        snprintf(key, sizeof(key), "%s:crm_update", R.id_agent);
        assert_string_equal(crm->idem, key);
        assert_string_equal(json_string_value(json_object_get(crm->body, "status")), "triaged");

        /* The second model call carries the assistant turn and one tool answer per call. */
        assert_non_null(chat2);
        msgs = json_object_get(chat2->body, "messages");
        assert_int_equal(json_array_size(msgs), 5);
        assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 2), "role")),
                            "assistant");
        assert_string_equal(
                json_string_value(json_object_get(json_array_get(msgs, 3), "tool_call_id")),
                "call_a");
        assert_string_equal(
                json_string_value(json_object_get(json_array_get(msgs, 4), "tool_call_id")),
                "call_b");
}

static void test_audit_events_recorded_and_chain_verifies(void **state) {
        const char *ids[] = {R.id_ok, R.id_503, R.id_404, R.id_agent};
        Agentfleet__V1__AuditEvent *chain[MAX_ITEMS] = {0};
        uint64_t max_seq = 0;
        char errstr[256];
        const char *prev = "";
        char emitter[96];

        for (int i = 0; i < 4; i++) {
                assert_true(has_audit(ids[i], "lease.acquired"));
                assert_true(has_audit(ids[i], "handler.call"));
                assert_true(has_audit(ids[i], "task.result"));
        }
        /* The worker's chain, in seq order, verifies from its first event. */
        snprintf(emitter, sizeof(emitter), "worker:%s", R.worker_id);
        for (int i = 0; i < R.naudits; i++) {
                Agentfleet__V1__AuditEvent *ev = R.audits[i];
                if (strcmp(ev->emitter, emitter) || ev->seq == 0 || ev->seq >= MAX_ITEMS)
                        continue;
                chain[ev->seq] = ev;
                if (ev->seq > max_seq)
                        max_seq = ev->seq;
        }
        assert_true(max_seq >= 12);
        for (uint64_t s = 1; s <= max_seq; s++) {
                assert_non_null(chain[s]);
                if (af_audit_verify(chain[s], prev, AUDIT_KEY, strlen(AUDIT_KEY), errstr,
                                    sizeof(errstr)) != AF_OK)
                        fail_msg("audit seq %llu: %s", (unsigned long long) s, errstr);
                prev = chain[s]->chain_hash;
        }
}

static void test_poison_message_is_dead_lettered(void **state) {
        assert_true(R.ndlqs >= 1);
        assert_non_null(strstr(R.dlqs[0]->reason, "not a valid agentfleet.v1.Task"));
        assert_int_equal(R.dlqs[0]->original.len, 11);
        assert_int_equal(memcmp(R.dlqs[0]->original.data, "\xff\xff\xff\x07garbage", 11), 0);
}

static void test_redelivered_done_task_is_reemitted_not_rerun(void **state) {
        int a = final_index(R.id_ok, 0), b = final_index(R.id_ok, 1);
        int crm_calls = 0;

        assert_true(a >= 0);
        assert_true(b >= 0);
        for (int i = 0; i < R.nreqs; i++)
                if (!strcmp(R.reqs[i].path, "/crm/claims/C-1"))
                        crm_calls++;
        assert_int_equal(R.crm_calls_before_redelivery, 1);
        assert_int_equal(crm_calls, 1);
        /* The very bytes stored at finish. */
        assert_int_equal(R.result_lens[a], R.result_lens[b]);
        assert_int_equal(memcmp(R.result_bytes[a], R.result_bytes[b], R.result_lens[a]), 0);
}

static void test_sigterm_drains_and_exits_zero(void **state) {
        assert_true(WIFEXITED(R.worker_status));
        assert_int_equal(WEXITSTATUS(R.worker_status), 0);
}

static void test_cancelled_before_start_never_runs(void **state) {
        Agentfleet__V1__TaskResult *f[2];
        assert_int_equal(finals(R.id_precancel, f, 2), 1);
        assert_int_equal(f[0]->status, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_CANCELLED);
        assert_int_equal(reqs_for_task(R.id_precancel), 0);
}

static void test_lease_held_elsewhere_waits_then_runs(void **state) {
        Agentfleet__V1__TaskResult *f[2];
        assert_int_equal(finals(R.id_held, f, 2), 1);
        assert_int_equal(f[0]->status, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED);
        assert_int_equal(reqs_for_task(R.id_held), 1);
        assert_true(f[0]->fence >= 1);
}

static void test_cancel_while_running_aborts_the_call(void **state) {
        Agentfleet__V1__TaskResult *f[2];
        assert_int_equal(finals(R.id_cancel_run, f, 2), 1);
        assert_int_equal(f[0]->status, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_CANCELLED);
        assert_int_equal(reqs_for_task(R.id_cancel_run), 1);
        /* The slow request was abandoned, not answered. */
        assert_true(slow_closed >= 1);
}

static void test_task_type_timeout_fails_retriable(void **state) {
        Agentfleet__V1__TaskResult *f[2];
        assert_int_equal(finals(R.id_timeout, f, 2), 1);
        assert_int_equal(f[0]->status, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED);
        assert_string_equal(f[0]->error->code, "timeout");
        assert_true(f[0]->error->retriable);
        assert_non_null(strstr(f[0]->error->message, "1000 ms"));
        assert_int_equal(reqs_for_task(R.id_timeout), 1);
}

/* worker.running_after: a task still running after it gets one RUNNING record, produced
 * before its final one (same key, same partition: readers never see it after the end). */
static void test_running_record_of_a_long_task_precedes_its_final(void **state) {
        int running = 0, running_at = -1, final_at = final_index(R.id_timeout, 0);
        for (int i = 0; i < R.nresults; i++) {
                Agentfleet__V1__TaskResult *r = R.results[i];
                if (!strcmp(r->task_id, R.id_timeout) &&
                    r->status == AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_RUNNING) {
                        running++;
                        running_at = i;
                        assert_true(r->fence >= 1);
                        assert_non_null(r->timings);
                        assert_true(r->timings->started_at_ms > 0);
                }
        }
        assert_int_equal(running, 1);
        assert_true(final_at >= 0);
        assert_true(running_at < final_at);
}

static void test_past_deadline_fails_without_running(void **state) {
        Agentfleet__V1__TaskResult *f[2];
        assert_int_equal(finals(R.id_past_deadline, f, 2), 1);
        assert_int_equal(f[0]->status, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED);
        assert_string_equal(f[0]->error->code, "deadline_exceeded");
        assert_false(f[0]->error->retriable);
        assert_int_equal(reqs_for_task(R.id_past_deadline), 0);
}

static void test_agent_denied_tool_and_prose_answer(void **state) {
        Agentfleet__V1__TaskResult *f[2];
        const stub_req_t *second = NULL;
        json_t *msgs, *tool_msg;
        int n = 0;

        assert_int_equal(finals(R.id_odd, f, 2), 1);
        assert_int_equal(f[0]->status, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED);
        assert_string_equal(f[0]->error->code, "bad_output");
        assert_false(f[0]->error->retriable);
        assert_non_null(strstr(f[0]->error->message, "not JSON"));
        /* The forbidden tool was refused, audited, and the model was told. */
        assert_true(has_audit(R.id_odd, "tool.denied"));
        for (int i = 0; i < R.nreqs; i++)
                if (!strcmp(R.reqs[i].path, "/odd/v1/chat/completions") && n++ == 1)
                        second = &R.reqs[i];
        assert_non_null(second);
        msgs = json_object_get(second->body, "messages");
        assert_int_equal(json_array_size(msgs), 4);
        tool_msg = json_array_get(msgs, 3);
        assert_string_equal(json_string_value(json_object_get(tool_msg, "role")), "tool");
        assert_string_equal(json_string_value(json_object_get(tool_msg, "tool_call_id")), "call_x");
        assert_non_null(
                strstr(json_string_value(json_object_get(tool_msg, "content")), "not available"));
}

static void test_drain_hands_back_unfinished_task(void **state) {
        Agentfleet__V1__TaskResult *f[2];
        redisContext *rc = redisConnect("127.0.0.1", R.redis_port);
        redisReply *rep;

        assert_int_equal(reqs_for_task(R.id_handback), 1);
        /* No result: another worker will run it. */
        assert_int_equal(finals(R.id_handback, f, 2), 0);
        /* Its lease is released at once, not left to expire. */
        assert_non_null(rc);
        rep = redisCommand(rc, "EXISTS af:{%s}:lease", R.id_handback);
        assert_int_equal(rep->integer, 0);
        freeReplyObject(rep);
        rep = redisCommand(rc, "EXISTS af:{%s}:done", R.id_handback);
        assert_int_equal(rep->integer, 0);
        freeReplyObject(rep);
        redisFree(rc);
}

/* Every message on tasks.default is committed by the worker's group. */
static void test_offsets_committed_to_the_end(void **state) {
        char errstr[512], topic[256];
        rd_kafka_conf_t *kc = rd_kafka_conf_new();
        rd_kafka_t *rk;
        rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTS);
        int64_t total = 0;

        af_kafka_topic(R.conf, "tasks.default", topic, sizeof(topic));
        rd_kafka_conf_set(kc, "bootstrap.servers", R.bootstrap, errstr, sizeof(errstr));
        rd_kafka_conf_set(kc, "group.id", R.group, errstr, sizeof(errstr));
        rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, sizeof(errstr));
        assert_non_null(rk);
        for (int p = 0; p < PARTS; p++)
                rd_kafka_topic_partition_list_add(parts, topic, p);
        assert_int_equal(rd_kafka_committed(rk, parts, 15000), RD_KAFKA_RESP_ERR_NO_ERROR);
        for (int p = 0; p < PARTS; p++) {
                int64_t lo = 0, hi = 0;
                assert_int_equal(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 15000),
                                 RD_KAFKA_RESP_ERR_NO_ERROR);
                total += hi;
                if (p == R.handback_partition)
                        /* Up to the handed-back task, which is redelivered. */
                        assert_int_equal(parts->elems[p].offset, R.handback_offset);
                else if (hi > 0)
                        assert_int_equal(parts->elems[p].offset, hi);
        }
        /* 4 tasks + poison + redelivery + cancelled + held + cancel-run + hand-back + timeout
         * + past deadline + odd agent + 3 echo/bad payload tasks + unreachable. */
        assert_int_equal(total, 17);
        rd_kafka_topic_partition_list_destroy(parts);
        rd_kafka_destroy(rk);
}

static void test_metrics_count_results(void **state) {
        assert_non_null(R.metrics);
        assert_non_null(strstr(R.metrics, "agentfleet_worker_tasks_total{type=\"crm.update\","
                                          "status=\"succeeded\"} 2"));
        assert_non_null(strstr(R.metrics, "agentfleet_worker_tasks_total{type=\"flaky.call\","
                                          "status=\"failed\"} 1"));
        assert_non_null(strstr(R.metrics, "agentfleet_worker_dead_letters_total 1"));
        assert_non_null(strstr(R.metrics, "agentfleet_worker_llm_tokens_total{kind=\"prompt\"} "
                                          "200"));
        assert_non_null(strstr(R.metrics, "\nprocess_open_fds "));
        assert_non_null(strstr(R.metrics, "\nprocess_cpu_seconds_total "));
}

static void test_done_record_is_in_redis(void **state) {
        redisContext *rc = redisConnect("127.0.0.1", R.redis_port);
        redisReply *rep;
        assert_non_null(rc);
        assert_int_equal(rc->err, 0);
        rep = redisCommand(rc, "EXISTS af:{%s}:done", R.id_ok);
        assert_non_null(rep);
        assert_int_equal(rep->integer, 1);
        freeReplyObject(rep);
        /* The lease was released at finish. */
        rep = redisCommand(rc, "EXISTS af:{%s}:lease", R.id_ok);
        assert_int_equal(rep->integer, 0);
        freeReplyObject(rep);
        redisFree(rc);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_integration_request_is_exact),
                cmocka_unit_test(test_integration_result_succeeded),
                cmocka_unit_test(test_payload_sent_as_admitted_without_a_template),
                cmocka_unit_test(test_malformed_payload_fails_before_any_call),
                cmocka_unit_test(test_audit_details_are_exact),
                cmocka_unit_test(test_5xx_fails_retriable),
                cmocka_unit_test(test_4xx_fails_not_retriable),
                cmocka_unit_test(test_unreachable_integration_is_named),
                cmocka_unit_test(test_agent_two_tool_calls_and_json_output),
                cmocka_unit_test(test_audit_events_recorded_and_chain_verifies),
                cmocka_unit_test(test_poison_message_is_dead_lettered),
                cmocka_unit_test(test_redelivered_done_task_is_reemitted_not_rerun),
                cmocka_unit_test(test_sigterm_drains_and_exits_zero),
                cmocka_unit_test(test_cancelled_before_start_never_runs),
                cmocka_unit_test(test_lease_held_elsewhere_waits_then_runs),
                cmocka_unit_test(test_cancel_while_running_aborts_the_call),
                cmocka_unit_test(test_drain_hands_back_unfinished_task),
                cmocka_unit_test(test_task_type_timeout_fails_retriable),
                cmocka_unit_test(test_running_record_of_a_long_task_precedes_its_final),
                cmocka_unit_test(test_past_deadline_fails_without_running),
                cmocka_unit_test(test_agent_denied_tool_and_prose_answer),
                cmocka_unit_test(test_offsets_committed_to_the_end),
                cmocka_unit_test(test_done_record_is_in_redis),
                cmocka_unit_test(test_metrics_count_results),
        };

        R.bootstrap = getenv("AF_TEST_KAFKA");
        if (!R.bootstrap || !getenv("AF_TEST_REDIS_PORT")) {
                printf("SKIP: AF_TEST_KAFKA or AF_TEST_REDIS_PORT is not set\n");
                return 0;
        }
        R.redis_port = atoi(getenv("AF_TEST_REDIS_PORT"));
        af_log_init("test_worker_pipeline", AF_LOG_WARN);
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
