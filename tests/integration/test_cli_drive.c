/*
 * test_cli_drive: `agentfleet drive` against the real Kafka broker and a fake fleet in this
 * process, so that the driver's accounting is proven on its own: every task submitted over
 * the API (bearer token, Idempotency-Key equal to the body's key) or produced to `requests`
 * (JSON, signed with the service key) reaches the fake, whose answers on `results` the
 * driver must count exactly — a clean run exits 0 with nothing lost; a run where the fake
 * drops one task, executes one twice (two fences), re-emits one, and the fake simagent's
 * duplicate counter grows by one, must report lost 1, duplicate_results 1,
 * reemitted_results 1, duplicate_side_effects 1, and exit 1.
 *
 * Each test makes its own topics (a fresh prefix) with the admin API and deletes them (kept
 * with FLEET_KEEP_WORK=1).
 * Needs AF_TEST_KAFKA (bootstrap) and AF_BINARY_DIR; prints SKIP without AF_TEST_KAFKA.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "support/support.h"
#include "agentfleet/v1/result.pb-c.h"
#include "http_server.h"
#include "ids.h"
#include "kafka.h"
#include "log.h"
#include "wire_json.h"

#define TASKS       60
#define TOKEN       "cli-test-token"
#define KEY_ID      "intake-test"
#define KEY_SECRET  "cli-test-intake-secret"
#define DEADLINE_MS 90000

static const char *bootstrap;

typedef struct fake_s {
        af_loop_t *loop;
        af_config_t *conf;
        af_producer_t *producer;
        af_consumer_t *consumer;
        af_http_server_t *srv;
        af_timer_t *child_timer, *deadline;
        char prefix[64], requests[128], results[128];
        bool faults; /* drop #7, execute #8 twice, re-emit #9 */
        bool assigned;
        int api_seen, kafka_seen, bad_auth, bad_sig, idem_mismatch, bad_body;
        int bad_payload; /* a payload or case key other than check_payload() expects */
        char payloads_path[128];
        int64_t sim_duplicates; /* what GET /stats answers */
        pid_t child;
        int child_status;
        bool child_done;
        char out_path[128];
} fake_t;

/* ---- topics -------------------------------------------------------------------------------- */

/* Create f's two topics with three partitions each, led before the driver asks for them
 * (teardown deletes them). */
static void create_topics(const fake_t *f) {
        assert_true(af_test_create_topic(bootstrap, f->requests, 3, 0));
        assert_true(af_test_create_topic(bootstrap, f->results, 3, 0));
}

/* ---- the fake fleet ------------------------------------------------------------------------ */

static void delivered_cb(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                         void *opaque) {
        assert_int_equal(err, AF_OK);
}

static void emit(fake_t *f, const char *task_id, const char *idem, Agentfleet__V1__TaskStatus st,
                 int64_t fence) {
        Agentfleet__V1__TaskResult res = AGENTFLEET__V1__TASK_RESULT__INIT;
        Agentfleet__V1__Usage usage = AGENTFLEET__V1__USAGE__INIT;
        af_kafka_header_t hdr = {"content-type", "application/x-protobuf", 22};
        uint8_t buf[1024];
        size_t len;
        char errstr[256];

        res.task_id = (char *) task_id;
        res.idempotency_key = (char *) idem;
        res.status = st;
        res.fence = fence;
        res.type = "noop";
        usage.prompt_tokens = 10;
        usage.completion_tokens = 5;
        usage.cost_micros = 100;
        res.usage = &usage;
        len = agentfleet__v1__task_result__get_packed_size(&res);
        assert_true(len < sizeof(buf));
        agentfleet__v1__task_result__pack(&res, buf);
        assert_int_equal(af_producer_send(f->producer, f->results, -1, task_id, strlen(task_id),
                                          buf, len, &hdr, 1, delivered_cb, f, errstr,
                                          sizeof(errstr)),
                         AF_OK);
}

/* Run task `idem` as the fleet would (or misbehave on purpose in faults mode). */
static void run_task(fake_t *f, const char *task_id, const char *idem) {
        const char *dash = strrchr(idem, '-');
        long idx = dash ? strtol(dash + 1, NULL, 10) : -1;

        emit(f, task_id, idem, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_QUEUED, 0);
        if (f->faults && idx == 7)
                return; /* lost */
        emit(f, task_id, idem, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED, 1);
        if (f->faults && idx == 8) {
                emit(f, task_id, idem, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED, 2);
                f->sim_duplicates++; /* and its side effect applied twice */
        }
        if (f->faults && idx == 9)
                emit(f, task_id, idem, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED, 1);
}

static bool auth_cb(af_http_req_t *req, const char *bearer, void *opaque) {
        fake_t *f = opaque;
        if (bearer && !strcmp(bearer, TOKEN))
                return true;
        f->bad_auth++;
        return false;
}

/* The sample payloads the driver cycles (PAYLOADS_JSONL): the first has a claim_id to be made
 * unique per task (with characters JSON escapes), the second has none. */
#define SAMPLE_CLAIM "C-\\\"q\\\"\\\\\\u00e9" /* JSON text of: C-"q"\é */
#define PAYLOADS_JSONL                                                                             \
        "{\"amount\":12.5,\"claim_id\":\"" SAMPLE_CLAIM "\",\"tags\":[\"a\"]}\n"                   \
        "{\"x\":[1,2]}\n"

/* Task idx (from its idempotency key "drv-<tag>-<idx>") must carry sample idx % 2, with the
 * claim id "<claim>-<tag>-<idx>" as its case key, or the sample as it is. */
static void check_payload(fake_t *f, const Agentfleet__V1__TaskRequest *tr) {
        const char *key = tr->idempotency_key, *dash = strrchr(key, '-');
        json_t *p = json_loads(tr->payload, 0, NULL), *sample = NULL;
        char want_claim[128];
        long long idx;

        if (strncmp(key, "drv-", 4) || !dash || !p) {
                f->bad_payload++;
                json_decref(p);
                return;
        }
        idx = strtoll(dash + 1, NULL, 10);
        if (idx % 2 == 0) {
                json_t *orig = json_loads("\"" SAMPLE_CLAIM "\"", JSON_DECODE_ANY, NULL);
                snprintf(want_claim, sizeof(want_claim), "%s%s", json_string_value(orig), key + 3);
                json_decref(orig);
                sample = json_pack("{s:f, s:s, s:[s]}", "amount", 12.5, "claim_id", want_claim,
                                   "tags", "a");
                if (strcmp(tr->case_key, want_claim))
                        f->bad_payload++;
        } else {
                sample = json_pack("{s:[i,i]}", "x", 1, 2);
                if (strcmp(tr->case_key, key))
                        f->bad_payload++;
        }
        if (!json_equal(p, sample))
                f->bad_payload++;
        json_decref(sample);
        json_decref(p);
}

static void submit_handler(af_http_req_t *req, void *opaque) {
        fake_t *f = opaque;
        size_t len = 0;
        const char *body = af_http_req_body(req, &len);
        const char *idem_hdr = af_http_req_header(req, "Idempotency-Key");
        Agentfleet__V1__TaskRequest *tr = NULL;
        char errstr[256], id[AF_ULID_LEN + 1];

        if (af_wire_taskrequest_from_json(body, len, AF_WIRE_F_STRICT, &tr, errstr,
                                          sizeof(errstr)) != AF_OK) {
                f->bad_body++;
                af_http_reply_error(req, 400, "invalid", "%s", errstr);
                return;
        }
        if (!idem_hdr || strcmp(idem_hdr, tr->idempotency_key) || strcmp(tr->type, "noop"))
                f->idem_mismatch++;
        f->api_seen++;
        check_payload(f, tr);
        af_ulid_new(id);
        run_task(f, id, tr->idempotency_key);
        af_http_reply_json(req, 201, json_pack("{s:s, s:s}", "id", id, "status", "queued"));
        af_wire_taskrequest_free(tr);
}

static void stats_handler(af_http_req_t *req, void *opaque) {
        fake_t *f = opaque;
        af_http_reply_json(req, 200,
                           json_pack("{s:I, s:I}", "duplicates", (json_int_t) f->sim_duplicates,
                                     "applied", (json_int_t) (f->api_seen + f->kafka_seen)));
}

static void request_cb(af_consumer_t *c, const af_kafka_msg_t *msg, void *opaque) {
        fake_t *f = opaque;
        Agentfleet__V1__TaskRequest *tr = NULL;
        size_t ct_len = 0;
        const char *ct = af_kafka_msg_header(msg, "content-type", &ct_len);
        char errstr[256], id[AF_ULID_LEN + 1];

        if (!ct || ct_len != 16 || memcmp(ct, "application/json", 16) ||
            af_wire_taskrequest_from_json(msg->value, msg->value_len, 0, &tr, errstr,
                                          sizeof(errstr)) != AF_OK) {
                f->bad_body++;
                return;
        }
        if (strcmp(tr->key_id, KEY_ID) ||
            !af_wire_taskrequest_verify(tr, KEY_SECRET, strlen(KEY_SECRET)))
                f->bad_sig++;
        f->kafka_seen++;
        check_payload(f, tr);
        af_ulid_new(id);
        run_task(f, id, tr->idempotency_key);
        af_wire_taskrequest_free(tr);
}

static void rebalance_cb(af_consumer_t *c, bool assigned,
                         const rd_kafka_topic_partition_list_t *parts, void *opaque) {
        fake_t *f = opaque;
        if (assigned) {
                f->assigned = true;
                af_loop_stop(f->loop);
        }
}

static void child_timer_cb(void *opaque) {
        fake_t *f = opaque;
        if (waitpid(f->child, &f->child_status, WNOHANG) == f->child) {
                f->child_done = true;
                af_loop_stop(f->loop);
        }
}

static void deadline_cb(void *opaque) {
        fake_t *f = opaque;
        af_loop_stop(f->loop);
}

/* Look the results topic up on the producer now: its first message would otherwise wait
 * for that (about a second), delaying the fake's first answers. */
static void warm_producer(fake_t *f) {
        rd_kafka_t *rk = af_producer_rk(f->producer);
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, f->results, NULL);
        const struct rd_kafka_metadata *md = NULL;

        assert_non_null(rkt);
        assert_int_equal(rd_kafka_metadata(rk, 0, rkt, &md, 10000), 0);
        rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
}

/* ---- fixture ------------------------------------------------------------------------------- */

static int setup(void **state) {
        fake_t *f = calloc(1, sizeof(*f));
        char errstr[512], ulid[AF_ULID_LEN + 1], group[128];
        const char *topics[1];
        af_http_server_opts_t so = {.address = "127.0.0.1",
                                    .port = 0,
                                    .max_body_bytes = 1 << 20,
                                    .max_header_bytes = 16384,
                                    .timeout_ms = 30000};

        assert_non_null(f);
        af_ulid_new(ulid);
        snprintf(f->prefix, sizeof(f->prefix), "clitest-%s.", ulid);
        snprintf(f->requests, sizeof(f->requests), "%srequests", f->prefix);
        snprintf(f->results, sizeof(f->results), "%sresults", f->prefix);
        create_topics(f);

        f->loop = af_loop_new(errstr, sizeof(errstr));
        assert_non_null(f->loop);
        f->conf = af_config_new();
        assert_int_equal(af_config_set(f->conf, "kafka.bootstrap.servers", bootstrap, errstr,
                                       sizeof(errstr)),
                         AF_OK);
        f->producer = af_producer_new(f->loop, f->conf, errstr, sizeof(errstr));
        assert_non_null(f->producer);
        warm_producer(f);
        topics[0] = f->requests;
        snprintf(group, sizeof(group), "%sfake-fleet", f->prefix);
        f->consumer = af_consumer_new(f->loop, f->conf, group, topics, 1, request_cb, rebalance_cb,
                                      f, errstr, sizeof(errstr));
        assert_non_null(f->consumer);
        f->srv = af_http_server_new(f->loop, &so, errstr, sizeof(errstr));
        assert_non_null(f->srv);
        af_http_server_set_auth(f->srv, auth_cb, f);
        af_http_server_route(f->srv, "POST", "/v1/tasks", true, submit_handler, f);
        af_http_server_route(f->srv, "GET", "/stats", false, stats_handler, f);
        f->child_timer = af_timer_new(f->loop, child_timer_cb, f);
        f->deadline = af_timer_new(f->loop, deadline_cb, f);
        f->sim_duplicates = 5; /* earlier runs' duplicates: not this run's */

        /* The fake must be in its group before the driver produces. */
        af_timer_start(f->deadline, 30000, false);
        while (!f->assigned && af_timer_pending(f->deadline))
                af_loop_run(f->loop);
        af_timer_stop(f->deadline);
        assert_true(f->assigned);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        fake_t *f = *state;
        const char *topics[] = {f->requests, f->results};

        if (f->child > 0 && !f->child_done) {
                kill(f->child, SIGKILL);
                waitpid(f->child, NULL, 0);
        }
        af_timer_destroy(f->child_timer);
        af_timer_destroy(f->deadline);
        af_http_server_destroy(f->srv);
        af_consumer_destroy(f->consumer);
        af_producer_destroy(f->producer);
        af_config_destroy(f->conf);
        af_loop_destroy(f->loop);
        af_test_teardown_topics(bootstrap, topics, 2);
        if (f->out_path[0])
                unlink(f->out_path);
        if (f->payloads_path[0])
                unlink(f->payloads_path);
        free(f);
        return 0;
}

/* Run the driver against the fake; @returns its exit code and the last stdout line's JSON. */
static int run_drive(fake_t *f, const char *timeout, json_t **summaryp) {
        char bin[1024], api[64], sim[64], prefix_set[128], boot_set[256], tasks[16];
        const char *bindir = getenv("AF_BINARY_DIR");
        char *line = NULL, *last = NULL;
        size_t cap = 0;
        FILE *out;
        int fd;

        assert_non_null(bindir);
        snprintf(bin, sizeof(bin), "%s/agentfleet", bindir);
        assert_int_equal(access(bin, X_OK), 0);
        snprintf(api, sizeof(api), "http://127.0.0.1:%d", af_http_server_port(f->srv));
        snprintf(sim, sizeof(sim), "http://127.0.0.1:%d/", af_http_server_port(f->srv));
        snprintf(prefix_set, sizeof(prefix_set), "topic.prefix=%s", f->prefix);
        snprintf(f->payloads_path, sizeof(f->payloads_path), "/tmp/test_cli_drive.%d.jsonl",
                 (int) getpid());
        out = fopen(f->payloads_path, "w");
        assert_non_null(out);
        fputs(PAYLOADS_JSONL, out);
        fclose(out);
        snprintf(boot_set, sizeof(boot_set), "kafka.bootstrap.servers=%s", bootstrap);
        snprintf(tasks, sizeof(tasks), "%d", TASKS);
        snprintf(f->out_path, sizeof(f->out_path), "/tmp/test_cli_drive.%d.out", (int) getpid());
        fflush(NULL);
        f->child = fork();
        assert_true(f->child >= 0);
        if (f->child == 0) {
                fd = open(f->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
                if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0)
                        _exit(127);
                setenv("AGENTFLEET_INTAKE_KEY", KEY_SECRET, 1);
                unsetenv("AGENTFLEET_TOKEN");
                execl(bin, bin, "drive", "--tasks", tasks, "--type", "noop", "--api-share", "0.5",
                      "--concurrency", "16", "--timeout", timeout, "--key-id", KEY_ID, "--simagent",
                      sim, "--api-url", api, "--token", TOKEN, "--set", prefix_set, "--set",
                      boot_set, "--payloads", f->payloads_path, "--json", (char *) NULL);
                _exit(127);
        }
        af_timer_start(f->child_timer, 50, true);
        af_timer_start(f->deadline, DEADLINE_MS, false);
        while (!f->child_done && af_timer_pending(f->deadline))
                af_loop_run(f->loop);
        af_timer_stop(f->child_timer);
        af_timer_stop(f->deadline);
        assert_true(f->child_done);
        assert_true(WIFEXITED(f->child_status));

        out = fopen(f->out_path, "r");
        assert_non_null(out);
        while (getline(&line, &cap, out) >= 0) {
                free(last);
                last = strdup(line);
        }
        fclose(out);
        free(line);
        assert_non_null(last);
        *summaryp = json_loads(last, 0, NULL);
        assert_non_null(*summaryp);
        free(last);
        return WEXITSTATUS(f->child_status);
}

static json_int_t num(const json_t *j, const char *key) {
        const json_t *v = json_object_get(j, key);
        assert_true(json_is_integer(v));
        return json_integer_value(v);
}

static void test_clean_run_counts_every_task_once(void **state) {
        fake_t *f = *state;
        json_t *s = NULL;
        int rc = run_drive(f, "60s", &s);

        assert_int_equal(f->bad_auth, 0);
        assert_int_equal(f->bad_sig, 0);
        assert_int_equal(f->bad_body, 0);
        assert_int_equal(f->bad_payload, 0);
        assert_int_equal(f->idem_mismatch, 0);
        assert_int_equal(f->api_seen, TASKS / 2);
        assert_int_equal(f->kafka_seen, TASKS / 2);
        assert_int_equal(num(s, "submitted"), TASKS);
        assert_int_equal(num(s, "api_submitted"), TASKS / 2);
        assert_int_equal(num(s, "kafka_submitted"), TASKS / 2);
        assert_int_equal(num(s, "succeeded"), TASKS);
        assert_int_equal(num(s, "failed"), 0);
        assert_int_equal(num(s, "lost"), 0);
        assert_int_equal(num(s, "duplicate_results"), 0);
        assert_int_equal(num(s, "reemitted_results"), 0);
        assert_int_equal(num(s, "duplicate_side_effects"), 0);
        assert_int_equal(num(s, "tokens"), TASKS * 15);
        assert_true(json_is_number(json_object_get(s, "tasks_per_s")));
        assert_true(json_is_number(json_object_get(s, "p99_ms")));
        assert_int_equal(rc, 0);
        json_decref(s);
}

static void test_lost_and_duplicated_tasks_fail_the_run(void **state) {
        fake_t *f = *state;
        json_t *s = NULL;
        int rc;

        f->faults = true;
        rc = run_drive(f, "6s", &s);
        assert_int_equal(f->bad_sig, 0);
        assert_int_equal(num(s, "submitted"), TASKS);
        assert_int_equal(num(s, "succeeded"), TASKS - 1);
        assert_int_equal(num(s, "lost"), 1);
        assert_int_equal(num(s, "duplicate_results"), 1);
        assert_int_equal(num(s, "reemitted_results"), 1);
        assert_int_equal(num(s, "duplicate_side_effects"), 1);
        assert_int_equal(rc, 1);
        json_decref(s);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_clean_run_counts_every_task_once, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_lost_and_duplicated_tasks_fail_the_run, setup,
                                                teardown),
        };

        bootstrap = getenv("AF_TEST_KAFKA");
        if (!bootstrap || !*bootstrap) {
                printf("SKIP: AF_TEST_KAFKA is not set\n");
                return 0;
        }
        af_log_init("test_cli_drive", AF_LOG_WARN);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
