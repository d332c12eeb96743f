/*
 * test_worker_refused_records: what the worker does when Kafka refuses a record or cannot take
 * it for a while, on the real broker, with the real worker binary. A poison message on a task
 * topic is never skipped without a trace in `dlq`, and a task whose result is too large still
 * ends with one final result.
 *
 *  - Too large: the dlq topic takes at most 4000 bytes a record; a 6000-byte poison message
 *    does not fit with its envelope. The broker refuses it, and the worker sends the dead
 *    letter again without the original bytes, its reason saying so and where the original
 *    stays. Then, and only then, the offset is committed past the poison message.
 *  - Not deliverable for a while: the dlq topic is deleted (the producer's message timeout is
 *    2 s), a poison message arrives, and the worker's committed offset stays below it while
 *    the record cannot be written; once the topic exists again, the dead letter arrives with
 *    the original bytes and the offset moves past it.
 *  - A result too large: the results topic takes at most 4000 bytes a record and the
 *    integration answers with 20000 random characters. The worker replaces the refused
 *    result by a FAILED one (result_too_large, not retriable, no output), audits the
 *    replacement, and the task's offset is committed.
 *  - The control: a small result under the same limit passes untouched — here a bare JSON
 *    number, which an integration may answer (the output is any JSON value).
 *  - Then SIGTERM: the worker exits 0 without a sanitizer report.
 *
 * Needs AF_TEST_KAFKA, AF_TEST_REDIS_PORT and AF_BINARY_DIR (prints SKIP without the first
 * two). One partition per topic, so offsets are easy to follow.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>

#include "support/support.h"
#include "agentfleet/v1/audit.pb-c.h"
#include "agentfleet/v1/dlq.pb-c.h"
#include "agentfleet/v1/result.pb-c.h"
#include "agentfleet/v1/task.pb-c.h"
#include "clock.h"
#include "crypto.h"
#include "http_server.h"
#include "ids.h"
#include "kafka.h"

#define DEADLINE_MS 60000
#define TOPIC_MAX   "4000" /* max.message.bytes of the dlq and results topics */
#define BIG_ANSWER  20000  /* characters the integration answers with */

static struct {
        const char *bootstrap;
        char prefix[64];
        char dir[128];
        char conf_path[256];
        char log_path[256];
        char t_tasks[256], t_dlq[256], t_results[256], t_audit[256], group[128];
        af_http_server_t *stub;
        pid_t worker;
        af_loop_t *loop;
        af_config_t *conf;
        af_producer_t *producer;
        int64_t produced_offset; /* of the last raw message, once acknowledged */
        bool produced;
} R;

/* ---- Kafka helpers ------------------------------------------------------------------------ */

static rd_kafka_t *client(rd_kafka_type_t type, const char *group) {
        char errstr[512];
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        assert_int_equal(
                rd_kafka_conf_set(c, "bootstrap.servers", R.bootstrap, errstr, sizeof(errstr)),
                RD_KAFKA_CONF_OK);
        if (group)
                assert_int_equal(rd_kafka_conf_set(c, "group.id", group, errstr, sizeof(errstr)),
                                 RD_KAFKA_CONF_OK);
        rd_kafka_conf_set(c, "log_level", "0", errstr, sizeof(errstr));
        rd_kafka_t *rk = rd_kafka_new(type, c, errstr, sizeof(errstr));
        assert_non_null(rk);
        return rk;
}

/* Delete topic (deleting = true), or create it with one partition and the size limit. */
static void limited_topic(const char *topic, bool deleting) {
        if (deleting)
                af_test_delete_topic(R.bootstrap, topic);
        else
                assert_true(af_test_create_topic(R.bootstrap, topic, 1, atoi(TOPIC_MAX)));
}

/* The worker group's committed offset of tasks.default[0] (-1 when none). */
static int64_t committed(void) {
        rd_kafka_t *rk = client(RD_KAFKA_CONSUMER, R.group);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        int64_t off = -1;
        rd_kafka_topic_partition_list_add(l, R.t_tasks, 0);
        if (rd_kafka_committed(rk, l, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR && !l->elems[0].err)
                off = l->elems[0].offset;
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_destroy(rk);
        return off;
}

/* Read topic[0] from its start to its end, handing each record to fn until it says stop.
 * @returns whether fn stopped the scan (found what it looks for). */
typedef bool(scan_fn_t)(const rd_kafka_message_t *m, void *arg);
static bool topic_scan(const char *topic, scan_fn_t *fn, void *arg) {
        char reader[160];
        snprintf(reader, sizeof(reader), "%sreader", R.prefix); /* assign() wants a group.id */
        rd_kafka_t *rk = client(RD_KAFKA_CONSUMER, reader);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        bool stopped = false;
        int64_t lo = 0, hi = 0;

        if (!rd_kafka_query_watermark_offsets(rk, topic, 0, &lo, &hi, 5000) && hi > lo) {
                rd_kafka_topic_partition_list_add(l, topic, 0)->offset = lo;
                assert_int_equal(rd_kafka_assign(rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
                for (int64_t seen = lo; seen < hi && !stopped;) {
                        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 5000);
                        if (!m)
                                break;
                        if (!m->err) {
                                seen = m->offset + 1;
                                stopped = fn(m, arg);
                        }
                        rd_kafka_message_destroy(m);
                }
        }
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_destroy(rk);
        return stopped;
}

typedef struct {
        int64_t offset;
        Agentfleet__V1__DeadLetter *found;
} dl_find_t;

static bool dl_match(const rd_kafka_message_t *m, void *arg) {
        dl_find_t *f = arg;
        Agentfleet__V1__DeadLetter *d =
                agentfleet__v1__dead_letter__unpack(NULL, m->len, m->payload);
        if (d && d->source_offset == f->offset) {
                f->found = d;
                return true;
        }
        if (d)
                agentfleet__v1__dead_letter__free_unpacked(d, NULL);
        return false;
}

/* The dead letter of source offset `offset` (caller frees), or NULL when there is none (yet). */
static Agentfleet__V1__DeadLetter *dead_letter_of(int64_t offset) {
        dl_find_t f = {offset, NULL};
        topic_scan(R.t_dlq, dl_match, &f);
        return f.found;
}

typedef struct {
        const char *task_id;
        int finals;
        Agentfleet__V1__TaskResult *last; /* the last final record */
} res_find_t;

static bool res_match(const rd_kafka_message_t *m, void *arg) {
        res_find_t *f = arg;
        Agentfleet__V1__TaskResult *r =
                agentfleet__v1__task_result__unpack(NULL, m->len, m->payload);
        if (r && !strcmp(r->task_id, f->task_id) &&
            r->status != AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_RUNNING &&
            r->status != AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_QUEUED) {
                f->finals++;
                if (f->last)
                        agentfleet__v1__task_result__free_unpacked(f->last, NULL);
                f->last = r;
                return false;
        }
        if (r)
                agentfleet__v1__task_result__free_unpacked(r, NULL);
        return false;
}

typedef struct {
        const char *task_id, *action;
} audit_find_t;

static bool audit_match(const rd_kafka_message_t *m, void *arg) {
        audit_find_t *f = arg;
        Agentfleet__V1__AuditEvent *a =
                agentfleet__v1__audit_event__unpack(NULL, m->len, m->payload);
        bool hit = a && !strcmp(a->task_id, f->task_id) && !strcmp(a->action, f->action);
        if (a)
                agentfleet__v1__audit_event__free_unpacked(a, NULL);
        return hit;
}

static void on_produced(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                        void *opaque) {
        assert_int_equal(err, AF_OK);
        R.produced_offset = offset;
        R.produced = true;
}

/* Produce raw bytes to tasks.default[0]; @returns their offset. */
static int64_t produce_poison(const void *val, size_t len) {
        char errstr[256];
        R.produced = false;
        assert_int_equal(af_producer_send(R.producer, R.t_tasks, 0, "poison", 6, val, len, NULL, 0,
                                          on_produced, NULL, errstr, sizeof(errstr)),
                         AF_OK);
        assert_true(af_test_loop_until(R.loop, af_test_flag_set, &R.produced, DEADLINE_MS));
        return R.produced_offset;
}

/* The integration: answers with BIG_ANSWER random hex characters, as one JSON string. */
static void stub_big(af_http_req_t *req, void *opaque) {
        static char body[BIG_ANSWER + 3];
        uint8_t rnd[BIG_ANSWER / 2];
        af_random_bytes(rnd, sizeof(rnd));
        body[0] = '"';
        af_hex_encode(rnd, sizeof(rnd), body + 1);
        body[BIG_ANSWER + 1] = '"';
        body[BIG_ANSWER + 2] = '\0';
        af_http_reply(req, 200, "application/json", body, BIG_ANSWER + 2);
}

static void stub_scalar(af_http_req_t *req, void *opaque) {
        af_http_reply(req, 200, "application/json", "42", 2);
}

/* Produce a Task of type `type`; @returns its offset (id written to id). */
static int64_t produce_task(char id[27], const char *type) {
        Agentfleet__V1__Task t = AGENTFLEET__V1__TASK__INIT;
        char errstr[256];
        af_kafka_header_t hdr = {"content-type", "application/x-protobuf", 22};
        size_t len;
        uint8_t *b;

        af_ulid_new(id);
        t.id = id;
        t.type = (char *) type;
        t.tenant = "acme-health";
        t.case_key = id;
        t.payload = "{}";
        t.attempt = 1;
        t.created_at_ms = af_clock_wall_ms();
        len = agentfleet__v1__task__get_packed_size(&t);
        b = malloc(len);
        assert_non_null(b);
        agentfleet__v1__task__pack(&t, b);
        R.produced = false;
        assert_int_equal(af_producer_send(R.producer, R.t_tasks, 0, id, strlen(id), b, len, &hdr, 1,
                                          on_produced, NULL, errstr, sizeof(errstr)),
                         AF_OK);
        free(b);
        assert_true(af_test_loop_until(R.loop, af_test_flag_set, &R.produced, DEADLINE_MS));
        return R.produced_offset;
}

static bool log_has(const char *needle) {
        return af_test_file_has(R.log_path, needle);
}

/* ---- setup -------------------------------------------------------------------------------- */

static void write_config(void) {
        FILE *f = fopen(R.conf_path, "w");
        assert_non_null(f);
        fprintf(f,
                "log: {level: info}\n"
                "topic: {prefix: \"%s\"}\n"
                "kafka:\n  bootstrap.servers: \"%s\"\n  session.timeout.ms: 6000\n"
                "  message.timeout.ms: 2000\n"
                "redis: {host: 127.0.0.1, port: %s}\n"
                "worker:\n  id: dlq-test\n  group_id: \"%s\"\n  lanes: default\n"
                "  drain_timeout: 2s\n"
                "integrations:\n"
                "  big:\n    method: POST\n    url: \"http://127.0.0.1:%d/big\"\n"
                "  scalar:\n    method: POST\n    url: \"http://127.0.0.1:%d/scalar\"\n"
                "task_types:\n"
                "  big.call: {integration: big, lane: default}\n"
                "  scalar.call: {integration: scalar, lane: default}\n",
                R.prefix, R.bootstrap, getenv("AF_TEST_REDIS_PORT"), R.group,
                af_http_server_port(R.stub), af_http_server_port(R.stub));
        fclose(f);
}

static int group_setup(void **state) {
        char errstr[512], cmd[1024], ulid[27];

        af_ulid_new(ulid);
        snprintf(R.prefix, sizeof(R.prefix), "wdl%.10s.", ulid + 16);
        for (char *p = R.prefix; *p; p++)
                *p = (char) (*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        snprintf(R.group, sizeof(R.group), "%sworkers", R.prefix);
        snprintf(R.dir, sizeof(R.dir), "/tmp/af-worker-dlq-XXXXXX");
        assert_non_null(mkdtemp(R.dir));
        snprintf(R.conf_path, sizeof(R.conf_path), "%s/agentfleet.yaml", R.dir);
        snprintf(R.log_path, sizeof(R.log_path), "%s/worker.log", R.dir);

        R.loop = af_loop_new(errstr, sizeof(errstr));
        assert_non_null(R.loop);
        R.conf = af_config_new();
        assert_int_equal(af_config_set(R.conf, "kafka.bootstrap.servers", R.bootstrap, errstr,
                                       sizeof(errstr)),
                         AF_OK);
        assert_int_equal(af_config_set(R.conf, "topic.prefix", R.prefix, errstr, sizeof(errstr)),
                         AF_OK);
        af_kafka_topic(R.conf, "tasks.default", R.t_tasks, sizeof(R.t_tasks));
        af_kafka_topic(R.conf, "dlq", R.t_dlq, sizeof(R.t_dlq));
        af_kafka_topic(R.conf, "results", R.t_results, sizeof(R.t_results));
        af_kafka_topic(R.conf, "audit", R.t_audit, sizeof(R.t_audit));
        snprintf(cmd, sizeof(cmd),
                 "\"%s/af-kafka-admin\" create-topics --bootstrap %s --prefix %s "
                 "--partitions 1 >/dev/null",
                 getenv("AF_BINARY_DIR"), R.bootstrap, R.prefix);
        assert_int_equal(system(cmd), 0);
        limited_topic(R.t_dlq, true);
        limited_topic(R.t_dlq, false); /* again, with the size limit */
        limited_topic(R.t_results, true);
        limited_topic(R.t_results, false);
        R.producer = af_producer_new(R.loop, R.conf, errstr, sizeof(errstr));
        assert_non_null(R.producer);

        af_http_server_opts_t so = {.address = "127.0.0.1",
                                    .max_body_bytes = 1 << 20,
                                    .max_header_bytes = 16384,
                                    .timeout_ms = 10000};
        R.stub = af_http_server_new(R.loop, &so, errstr, sizeof(errstr));
        assert_non_null(R.stub);
        af_http_server_route(R.stub, "POST", "/big", false, stub_big, NULL);
        af_http_server_route(R.stub, "POST", "/scalar", false, stub_scalar, NULL);
        write_config();
        const char *args[] = {"--config", R.conf_path, NULL};
        R.worker = af_test_spawn("agentfleet-worker", R.log_path, args);
        assert_true(R.worker > 0);
        return 0;
}

static int group_teardown(void **state) {
        if (R.worker > 0) {
                kill(R.worker, SIGTERM);
                waitpid(R.worker, NULL, 0);
        }
        af_producer_destroy(R.producer);
        af_http_server_destroy(R.stub);
        if (R.conf)
                af_test_delete_topics(R.conf, R.bootstrap);
        af_config_destroy(R.conf);
        af_loop_destroy(R.loop);
        if (!getenv("AF_TEST_KEEP")) {
                char cmd[256];
                snprintf(cmd, sizeof(cmd), "rm -rf %s", R.dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "could not remove %s\n", R.dir);
        }
        return 0;
}

/* ---- tests -------------------------------------------------------------------------------- */

static Agentfleet__V1__DeadLetter *wait_dead_letter(int64_t offset) {
        Agentfleet__V1__DeadLetter *d = NULL;
        int64_t deadline = af_clock_mono_ms() + DEADLINE_MS;
        while (!(d = dead_letter_of(offset)) && af_clock_mono_ms() < deadline)
                af_test_loop_until(R.loop, NULL, NULL, 250);
        return d;
}

static bool wait_committed_past(int64_t offset) {
        int64_t deadline = af_clock_mono_ms() + DEADLINE_MS;
        while (committed() <= offset && af_clock_mono_ms() < deadline)
                af_test_loop_until(R.loop, NULL, NULL, 250);
        return committed() > offset;
}

static void test_too_large_dead_letter_goes_without_its_original(void **state) {
        size_t len = 6000;
        uint8_t *poison = malloc(len);
        assert_non_null(poison);
        /* Not a valid Task (wire type 7 in the first tag), and random after that so that the
         * producer's compression cannot shrink the record under the topic's limit. */
        af_random_bytes(poison, len);
        memcpy(poison, "\xff\xff\xff\x07", 4);
        int64_t off = produce_poison(poison, len);
        free(poison);

        Agentfleet__V1__DeadLetter *d = wait_dead_letter(off);
        assert_non_null(d);
        assert_int_equal(d->original.len, 0);
        assert_non_null(strstr(d->reason, "not a valid agentfleet.v1.Task"));
        assert_non_null(strstr(d->reason, "original omitted: too large for"));
        assert_non_null(strstr(d->reason, R.t_tasks));
        assert_string_equal(d->source_topic, R.t_tasks);
        agentfleet__v1__dead_letter__free_unpacked(d, NULL);
        assert_true(wait_committed_past(off));
        assert_true(log_has("sending it without the original message"));
}

static void test_undeliverable_dead_letter_holds_the_offset_until_sent(void **state) {
        static const char poison[] = "\xff\xff\xff\x07garbage";
        limited_topic(R.t_dlq, true);
        int64_t off = produce_poison(poison, sizeof(poison) - 1);

        /* Three message timeouts: the record cannot be written, and nothing moves past it. */
        af_test_loop_until(R.loop, NULL, NULL, 6000);
        assert_true(committed() <= off);
        assert_true(log_has("sending again in"));

        limited_topic(R.t_dlq, false);
        Agentfleet__V1__DeadLetter *d = wait_dead_letter(off);
        assert_non_null(d);
        assert_int_equal(d->original.len, sizeof(poison) - 1);
        assert_memory_equal(d->original.data, poison, sizeof(poison) - 1);
        agentfleet__v1__dead_letter__free_unpacked(d, NULL);
        assert_true(wait_committed_past(off));
}

static void test_too_large_result_is_replaced_by_a_failed_one(void **state) {
        char id[27];
        res_find_t f = {id, 0, NULL};
        audit_find_t a = {id, "task.result_replaced"};
        int64_t off = produce_task(id, "big.call");
        assert_true(wait_committed_past(off));

        topic_scan(R.t_results, res_match, &f);
        assert_int_equal(f.finals, 1);
        assert_non_null(f.last);
        assert_int_equal(f.last->status, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED);
        assert_non_null(f.last->error);
        assert_string_equal(f.last->error->code, "result_too_large");
        assert_false(f.last->error->retriable);
        assert_string_equal(f.last->output, "");
        agentfleet__v1__task_result__free_unpacked(f.last, NULL);
        assert_true(topic_scan(R.t_audit, audit_match, &a));
}

static void test_small_scalar_result_passes_untouched(void **state) {
        char id[27];
        res_find_t f = {id, 0, NULL};
        int64_t off = produce_task(id, "scalar.call");
        assert_true(wait_committed_past(off));

        topic_scan(R.t_results, res_match, &f);
        assert_int_equal(f.finals, 1);
        assert_non_null(f.last);
        assert_int_equal(f.last->status, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED);
        assert_string_equal(f.last->output, "42");
        agentfleet__v1__task_result__free_unpacked(f.last, NULL);
}

/* SIGTERM: the worker drains and exits 0, with no sanitizer report in its log (an ASan build
 * checks the dead letters' memory, including the ones freed at teardown). */
static void test_worker_exits_cleanly(void **state) {
        int status = -1;
        assert_int_equal(kill(R.worker, SIGTERM), 0);
        assert_int_equal(waitpid(R.worker, &status, 0), R.worker);
        R.worker = 0;
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        assert_false(log_has("ERROR: AddressSanitizer"));
        assert_false(log_has("ERROR: LeakSanitizer"));
        assert_false(log_has("runtime error:"));
}

int main(void) {
        R.bootstrap = getenv("AF_TEST_KAFKA");
        if (!R.bootstrap || !getenv("AF_TEST_REDIS_PORT")) {
                printf("SKIP: AF_TEST_KAFKA or AF_TEST_REDIS_PORT is not set\n");
                return 0;
        }
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_too_large_dead_letter_goes_without_its_original),
                cmocka_unit_test(test_undeliverable_dead_letter_holds_the_offset_until_sent),
                cmocka_unit_test(test_too_large_result_is_replaced_by_a_failed_one),
                cmocka_unit_test(test_small_scalar_result_passes_untouched),
                cmocka_unit_test(test_worker_exits_cleanly),
        };
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
