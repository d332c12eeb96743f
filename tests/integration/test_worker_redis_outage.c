/*
 * test_worker_redis_outage: Redis going away costs time, never a task. The worker runs
 * against a private redis-server; with it stopped, tasks produced to tasks.default are not
 * run (no lease can be taken) and not dropped: once Redis is back each one runs exactly once
 * and ends SUCCEEDED. The outage is logged once, and REDIS_DOWN / REDIS_UP lifecycle events
 * are emitted. The real Kafka broker is used (AF_TEST_KAFKA); AF_TEST_REDIS_PORT only gates
 * the test like the others (prints SKIP without them).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "support/support.h"
#include "agentfleet/v1/event.pb-c.h"
#include "agentfleet/v1/result.pb-c.h"
#include "agentfleet/v1/task.pb-c.h"
#include "clock.h"
#include "http_server.h"
#include "ids.h"
#include "kafka.h"
#include "log.h"

#define PARTS       3
#define DEADLINE_MS 60000
#define N_DURING    3

static struct {
        const char *bootstrap;
        char prefix[64];
        char dir[128];
        char conf_path[256];
        char log_path[256];
        char redis_bin[256];
        int redis_port;
        pid_t redis;
        pid_t worker;
        int worker_status;
        af_loop_t *loop;
        af_config_t *conf;
        af_http_server_t *stub;
        af_producer_t *producer;
        af_consumer_t *consumer;

        char first[27];
        char during[N_DURING][27];
        char reqs[64][27]; /* X-Agentfleet-Task of each stub request */
        int nreqs;
        int nreqs_while_down;
        int finals_while_down;
        Agentfleet__V1__TaskResult *results[64];
        int nresults;
        bool redis_down_event, redis_up_event;
} R;

/* ---- stub, collector, loop ----------------------------------------------------------------- */

static void stub_crm(af_http_req_t *req, void *opaque) {
        const char *task = af_http_req_header(req, "X-Agentfleet-Task");
        if (R.nreqs < 64)
                snprintf(R.reqs[R.nreqs++], 27, "%s", task ? task : "");
        af_http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static void on_collect(af_consumer_t *c, const af_kafka_msg_t *msg, void *opaque) {
        char results[256];
        af_kafka_topic(R.conf, "results", results, sizeof(results));
        if (!strcmp(msg->topic, results)) {
                Agentfleet__V1__TaskResult *r =
                        agentfleet__v1__task_result__unpack(NULL, msg->value_len, msg->value);
                if (r && r->status != AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_RUNNING &&
                    R.nresults < 64)
                        R.results[R.nresults++] = r;
                else if (r)
                        agentfleet__v1__task_result__free_unpacked(r, NULL);
        } else {
                Agentfleet__V1__LifecycleEvent *ev =
                        agentfleet__v1__lifecycle_event__unpack(NULL, msg->value_len, msg->value);
                if (!ev)
                        return;
                if (ev->kind == AGENTFLEET__V1__LIFECYCLE_KIND__LIFECYCLE_KIND_REDIS_DOWN)
                        R.redis_down_event = true;
                if (ev->kind == AGENTFLEET__V1__LIFECYCLE_KIND__LIFECYCLE_KIND_REDIS_UP)
                        R.redis_up_event = true;
                agentfleet__v1__lifecycle_event__free_unpacked(ev, NULL);
        }
}

static int finals_of(const char *id) {
        int n = 0;
        for (int i = 0; i < R.nresults; i++)
                if (!strcmp(R.results[i]->task_id, id))
                        n++;
        return n;
}

static int reqs_of(const char *id) {
        int n = 0;
        for (int i = 0; i < R.nreqs; i++)
                if (!strcmp(R.reqs[i], id))
                        n++;
        return n;
}

typedef bool(cond_fn)(void);

static bool cond_holds(void *arg) {
        return (*(cond_fn **) arg)();
}

/* Run the loop until fn() (or for ms when fn is NULL). @returns fn() at the end. */
static bool run_until(cond_fn *fn, int64_t ms) {
        return af_test_loop_until(R.loop, fn ? cond_holds : NULL, &fn, ms);
}

static bool first_done(void) {
        return finals_of(R.first) >= 1;
}

static bool during_done(void) {
        for (int i = 0; i < N_DURING; i++)
                if (finals_of(R.during[i]) < 1)
                        return false;
        return R.redis_up_event;
}

static void on_produced(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                        void *opaque) {
        assert_int_equal(err, AF_OK);
}

static void produce_task(char id[27], const char *claim) {
        Agentfleet__V1__Task t = AGENTFLEET__V1__TASK__INIT;
        char topic[256], errstr[256], payload[64];
        af_kafka_header_t hdr = {"content-type", "application/x-protobuf", 22};
        uint8_t *b;
        size_t len;

        af_ulid_new(id);
        snprintf(payload, sizeof(payload), "{\"claim_id\":\"%s\"}", claim);
        t.id = id;
        t.type = "crm.update";
        t.tenant = "acme-health";
        t.case_key = id;
        t.payload = payload;
        t.attempt = 1;
        t.created_at_ms = af_clock_wall_ms();
        len = agentfleet__v1__task__get_packed_size(&t);
        b = malloc(len);
        agentfleet__v1__task__pack(&t, b);
        af_kafka_topic(R.conf, "tasks.default", topic, sizeof(topic));
        assert_int_equal(af_producer_send(R.producer, topic, -1, id, strlen(id), b, len, &hdr, 1,
                                          on_produced, NULL, errstr, sizeof(errstr)),
                         AF_OK);
        free(b);
}

/* ---- private redis ------------------------------------------------------------------------- */

static int free_port(void) {
        int port = af_test_free_port();
        assert_true(port > 0);
        return port;
}

static bool redis_answers(void) {
        struct timeval tv = {0, 200000};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", R.redis_port, tv);
        bool ok = false;
        if (c && !c->err) {
                redisReply *rep = redisCommand(c, "PING");
                ok = rep && rep->type == REDIS_REPLY_STATUS && !strcmp(rep->str, "PONG");
                if (rep)
                        freeReplyObject(rep);
        }
        if (c)
                redisFree(c);
        return ok;
}

static void redis_start(void) {
        char port[16];
        snprintf(port, sizeof(port), "%d", R.redis_port);
        R.redis = fork();
        assert_true(R.redis >= 0);
        if (R.redis == 0) {
                execl(R.redis_bin, R.redis_bin, "--port", port, "--bind", "127.0.0.1", "--dir",
                      R.dir, "--save", "", "--appendonly", "no", "--logfile", "redis.log",
                      (char *) NULL);
                _exit(127);
        }
        for (int i = 0; i < 100 && !redis_answers(); i++)
                usleep(50000);
        assert_true(redis_answers());
}

static void redis_stop(void) {
        int st;
        if (R.redis <= 0)
                return;
        kill(R.redis, SIGKILL);
        waitpid(R.redis, &st, 0);
        R.redis = 0;
}

/* ---- set-up --------------------------------------------------------------------------------- */

static void write_config(int stub_port) {
        FILE *f = fopen(R.conf_path, "w");
        assert_non_null(f);
        fprintf(f,
                "log: {level: info}\n"
                "topic: {prefix: \"%s\"}\n"
                "kafka:\n  bootstrap.servers: \"%s\"\n  session.timeout.ms: 6000\n"
                "redis: {host: 127.0.0.1, port: %d, command_timeout: 500ms, reconnect_min: "
                "50ms, reconnect_max: 500ms}\n"
                "worker:\n  id: outage\n  group_id: \"%sworkers\"\n  lanes: default\n"
                "  lease_ttl: 5s\n  lease_renew: 1s\n  drain_timeout: 2s\n"
                "integrations:\n"
                "  crm_update:\n    method: POST\n"
                "    url: \"http://127.0.0.1:%d/crm/claims/{{payload.claim_id}}\"\n"
                "task_types:\n"
                "  crm.update: {integration: crm_update, lane: default}\n",
                R.prefix, R.bootstrap, R.redis_port, R.prefix, stub_port);
        fclose(f);
}

static int count_log_lines(const char *needle) {
        FILE *f = fopen(R.log_path, "r");
        char line[4096];
        int n = 0;
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (strstr(line, needle))
                        n++;
        fclose(f);
        return n;
}

static int group_setup(void **state) {
        char errstr[512], cmd[1024], ulid[27], t_results[256], t_events[256], group[128];
        const char *topics[2];
        af_http_server_opts_t so = {.address = "127.0.0.1",
                                    .max_body_bytes = 1 << 20,
                                    .max_header_bytes = 16384,
                                    .timeout_ms = 10000};

        assert_true(af_test_find_program("redis-server", R.redis_bin, sizeof(R.redis_bin)));
        af_ulid_new(ulid);
        snprintf(R.prefix, sizeof(R.prefix), "wro%.10s.", ulid + 16);
        for (char *p = R.prefix; *p; p++)
                *p = (char) (*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        snprintf(R.dir, sizeof(R.dir), "/tmp/af-worker-outage-XXXXXX");
        assert_non_null(mkdtemp(R.dir));
        snprintf(R.conf_path, sizeof(R.conf_path), "%s/agentfleet.yaml", R.dir);
        snprintf(R.log_path, sizeof(R.log_path), "%s/worker.log", R.dir);
        R.redis_port = free_port();
        redis_start();

        R.loop = af_loop_new(errstr, sizeof(errstr));
        R.conf = af_config_new();
        assert_int_equal(af_config_set(R.conf, "kafka.bootstrap.servers", R.bootstrap, errstr,
                                       sizeof(errstr)),
                         AF_OK);
        assert_int_equal(af_config_set(R.conf, "topic.prefix", R.prefix, errstr, sizeof(errstr)),
                         AF_OK);
        assert_int_equal(
                af_config_set(R.conf, "kafka.session.timeout.ms", "6000", errstr, sizeof(errstr)),
                AF_OK);
        snprintf(cmd, sizeof(cmd),
                 "\"%s/af-kafka-admin\" create-topics --bootstrap %s --prefix %s "
                 "--partitions %d >/dev/null",
                 getenv("AF_BINARY_DIR"), R.bootstrap, R.prefix, PARTS);
        assert_int_equal(system(cmd), 0);

        R.stub = af_http_server_new(R.loop, &so, errstr, sizeof(errstr));
        assert_non_null(R.stub);
        af_http_server_route(R.stub, "POST", "/crm/claims/{id}", false, stub_crm, NULL);
        write_config(af_http_server_port(R.stub));
        R.producer = af_producer_new(R.loop, R.conf, errstr, sizeof(errstr));
        assert_non_null(R.producer);
        af_kafka_topic(R.conf, "results", t_results, sizeof(t_results));
        af_kafka_topic(R.conf, "events", t_events, sizeof(t_events));
        topics[0] = t_results;
        topics[1] = t_events;
        snprintf(group, sizeof(group), "%scollector", R.prefix);
        R.consumer = af_consumer_new(R.loop, R.conf, group, topics, 2, on_collect, NULL, NULL,
                                     errstr, sizeof(errstr));
        assert_non_null(R.consumer);

        const char *args[] = {"--config", R.conf_path, NULL};
        R.worker = af_test_spawn("agentfleet-worker", R.log_path, args);
        assert_true(R.worker > 0);

        /* Warm-up: the worker has joined and runs tasks. */
        produce_task(R.first, "C-0");
        run_until(first_done, DEADLINE_MS);

        /* Redis goes away; tasks keep arriving. */
        redis_stop();
        for (int i = 0; i < N_DURING; i++) {
                char claim[16];
                snprintf(claim, sizeof(claim), "C-%d", i + 1);
                produce_task(R.during[i], claim);
        }
        run_until(NULL, 3000);
        for (int i = 0; i < N_DURING; i++) {
                R.finals_while_down += finals_of(R.during[i]);
                R.nreqs_while_down += reqs_of(R.during[i]);
        }

        /* Redis is back (empty: nothing was saved): the tasks run now. */
        redis_start();
        run_until(during_done, DEADLINE_MS);

        kill(R.worker, SIGTERM);
        assert_int_equal(waitpid(R.worker, &R.worker_status, 0), R.worker);
        return 0;
}

static void delete_topics(void) {
        af_test_delete_topics(R.conf, R.bootstrap);
}

static int group_teardown(void **state) {
        char cmd[300];
        if (R.worker > 0 && waitpid(R.worker, NULL, WNOHANG) == 0) {
                kill(R.worker, SIGKILL);
                waitpid(R.worker, NULL, 0);
        }
        redis_stop();
        af_consumer_destroy(R.consumer);
        af_producer_destroy(R.producer);
        af_http_server_destroy(R.stub);
        for (int i = 0; i < R.nresults; i++)
                agentfleet__v1__task_result__free_unpacked(R.results[i], NULL);
        delete_topics();
        af_config_destroy(R.conf);
        af_loop_destroy(R.loop);
        if (getenv("AF_TEST_KEEP_LOG")) {
                fprintf(stderr, "worker log kept: %s\n", R.log_path);
        } else {
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", R.dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "could not remove %s\n", R.dir);
        }
        return 0;
}

/* ---- tests ------------------------------------------------------------------------------------
 */

static void test_nothing_runs_while_redis_is_down(void **state) {
        assert_int_equal(finals_of(R.first), 1);
        assert_int_equal(R.finals_while_down, 0);
        assert_int_equal(R.nreqs_while_down, 0);
}

static void test_every_task_runs_once_after_redis_returns(void **state) {
        for (int i = 0; i < N_DURING; i++) {
                assert_int_equal(finals_of(R.during[i]), 1);
                assert_int_equal(reqs_of(R.during[i]), 1);
        }
        for (int i = 0; i < R.nresults; i++)
                assert_int_equal(R.results[i]->status,
                                 AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED);
}

static void test_outage_logged_once_and_announced(void **state) {
        assert_int_equal(count_log_lines("leases are retried with back-off"), 1);
        assert_true(R.redis_down_event);
        assert_true(R.redis_up_event);
}

static void test_worker_exits_zero_after_outage(void **state) {
        assert_true(WIFEXITED(R.worker_status));
        assert_int_equal(WEXITSTATUS(R.worker_status), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_nothing_runs_while_redis_is_down),
                cmocka_unit_test(test_every_task_runs_once_after_redis_returns),
                cmocka_unit_test(test_outage_logged_once_and_announced),
                cmocka_unit_test(test_worker_exits_zero_after_outage),
        };

        R.bootstrap = getenv("AF_TEST_KAFKA");
        if (!R.bootstrap || !getenv("AF_TEST_REDIS_PORT")) {
                printf("SKIP: AF_TEST_KAFKA or AF_TEST_REDIS_PORT is not set\n");
                return 0;
        }
        af_log_init("test_worker_redis_outage", AF_LOG_WARN);
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
