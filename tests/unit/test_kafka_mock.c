/*
 * test_kafka_mock: libcommon's kafka against librdkafka's in-process mock cluster — fast
 * checks of the delivery-report path (one report per accepted send, with its offset; an
 * undeliverable message reports a timeout once, one sent but not acknowledged in time
 * reports "in doubt"), argument and configuration errors, the
 * consumer's offset store on a partition it does not own, a produce→consume round trip, and a
 * hold that delivers nothing, keeps what was pre-fetched and fetches nothing twice.
 * The real broker is exercised by tests/integration/test_kafka_roundtrip.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support/support.h"
#include "kafka.h"
#include "log.h"

#include <librdkafka/rdkafka_mock.h> /* after rdkafka.h (kafka.h), as it requires */

#define DEADLINE_MS 20000

typedef struct env_s {
        af_loop_t *loop;
        af_config_t *conf;
} env_t;

static void conf_set(af_config_t *conf, const char *name, const char *value) {
        char errstr[256];
        if (af_config_set(conf, name, value, errstr, sizeof(errstr)) != AF_OK)
                fail_msg("af_config_set %s: %s", name, errstr);
}

static int setup(void **state) {
        char errstr[256];
        env_t *env = calloc(1, sizeof(*env));
        env->loop = af_loop_new(errstr, sizeof(errstr));
        env->conf = af_config_new();
        assert_non_null(env->loop);
        assert_non_null(env->conf);
        conf_set(env->conf, "topic.prefix", "unit.");
        /* librdkafka starts a one-broker mock cluster inside the client. */
        conf_set(env->conf, "kafka.test.mock.num.brokers", "1");
        *state = env;
        return 0;
}

static int teardown(void **state) {
        env_t *env = *state;
        af_config_destroy(env->conf);
        af_loop_destroy(env->loop);
        free(env);
        return 0;
}

/* ---- loop helpers ----------------------------------------------------------------------- */

/* Run the loop until *done is true; fails the test after DEADLINE_MS. */
static void run_until(af_loop_t *loop, bool *done, const char *what) {
        if (!af_test_loop_until(loop, af_test_flag_set, done, DEADLINE_MS))
                fail_msg("timed out waiting for %s", what);
}

typedef struct report_s {
        int calls;
        af_err_t err;
        int32_t partition;
        int64_t offset;
} report_t;

typedef struct reports_s {
        report_t r[64];
        int want, got;
        bool done;
} reports_t;

typedef struct dr_ctx_s {
        reports_t *rs;
        int idx;
} dr_ctx_t;

static void on_delivery(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                        void *opaque) {
        dr_ctx_t *ctx = opaque;
        report_t *r = &ctx->rs->r[ctx->idx];
        r->calls++;
        r->err = err;
        r->partition = partition;
        r->offset = offset;
        if (++ctx->rs->got == ctx->rs->want)
                ctx->rs->done = true;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_topic_name_has_prefix(void **state) {
        env_t *env = *state;
        char out[64];
        assert_string_equal(af_kafka_topic(env->conf, "tasks.claims", out, sizeof(out)),
                            "unit.tasks.claims");
        char small[8];
        af_kafka_topic(env->conf, "results", small, sizeof(small));
        assert_string_equal(small, "unit.re"); /* truncated, still terminated */
}

static void test_each_send_gets_one_report_with_offset(void **state) {
        env_t *env = *state;
        char errstr[256];
        enum { N = 40 };
        reports_t rs = {.want = N};
        dr_ctx_t ctx[N];
        af_producer_t *p = af_producer_new(env->loop, env->conf, errstr, sizeof(errstr));
        assert_non_null(p);
        rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(af_producer_rk(p));
        assert_non_null(mc);
        assert_int_equal(rd_kafka_mock_topic_create(mc, "unit.results", 2, 1), 0);

        for (int i = 0; i < N; i++) {
                af_kafka_header_t h = {"content-type", "application/x-protobuf", 22};
                ctx[i].rs = &rs;
                ctx[i].idx = i;
                assert_int_equal(af_producer_send(p, "unit.results", i % 2, "k", 1, "v", 1, &h, 1,
                                                  on_delivery, &ctx[i], errstr, sizeof(errstr)),
                                 AF_OK);
        }
        assert_int_equal(af_producer_outq_len(p), N);
        run_until(env->loop, &rs.done, "delivery reports");
        assert_int_equal(af_producer_outq_len(p), 0);
        int64_t next[2] = {0, 0};
        for (int i = 0; i < N; i++) {
                assert_int_equal(rs.r[i].calls, 1);
                assert_int_equal(rs.r[i].err, AF_OK);
                assert_int_equal(rs.r[i].partition, i % 2);
                /* Per partition, offsets follow the send order (idempotent producer). */
                assert_int_equal(rs.r[i].offset, next[i % 2]);
                next[i % 2]++;
        }
        af_producer_destroy(p);
        for (int i = 0; i < N; i++)
                assert_int_equal(rs.r[i].calls, 1);
}

static void test_undeliverable_reports_timeout_once(void **state) {
        env_t *env = *state;
        char errstr[256];
        reports_t rs = {.want = 3};
        dr_ctx_t ctx[3];
        conf_set(env->conf, "kafka.message.timeout.ms", "300");
        af_producer_t *p = af_producer_new(env->loop, env->conf, errstr, sizeof(errstr));
        assert_non_null(p);
        rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(af_producer_rk(p));
        assert_int_equal(rd_kafka_mock_topic_create(mc, "unit.audit", 1, 1), 0);
        assert_int_equal(rd_kafka_mock_broker_set_down(mc, 1), 0);
        for (int i = 0; i < 3; i++) {
                ctx[i].rs = &rs;
                ctx[i].idx = i;
                assert_int_equal(af_producer_send(p, "unit.audit", -1, NULL, 0, "x", 1, NULL, 0,
                                                  on_delivery, &ctx[i], errstr, sizeof(errstr)),
                                 AF_OK);
        }
        run_until(env->loop, &rs.done, "timeout reports");
        for (int i = 0; i < 3; i++) {
                assert_int_equal(rs.r[i].calls, 1);
                assert_int_equal(rs.r[i].err, AF_ERR_TIMEOUT);
                assert_int_equal(rs.r[i].offset, -1);
        }
        af_producer_destroy(p);
        for (int i = 0; i < 3; i++)
                assert_int_equal(rs.r[i].calls, 1);
}

/* Sent, but the acknowledgement is later than the message timeout: the message may be in the
 * log, and the report says so (AF_ERR_IN_DOUBT), unlike one that never left (above). */
static void test_unacknowledged_send_reports_in_doubt(void **state) {
        env_t *env = *state;
        char errstr[256];
        reports_t rs = {.want = 1};
        dr_ctx_t ctx = {.rs = &rs, .idx = 0};
        conf_set(env->conf, "kafka.message.timeout.ms", "500");
        af_producer_t *p = af_producer_new(env->loop, env->conf, errstr, sizeof(errstr));
        assert_non_null(p);
        rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(af_producer_rk(p));
        assert_int_equal(rd_kafka_mock_topic_create(mc, "unit.tasks", 1, 1), 0);
        /* A first message, answered at once, so that the producer is connected and idle. */
        assert_int_equal(af_producer_send(p, "unit.tasks", 0, NULL, 0, "w", 1, NULL, 0, on_delivery,
                                          &ctx, errstr, sizeof(errstr)),
                         AF_OK);
        run_until(env->loop, &rs.done, "the first report");
        assert_int_equal(rs.r[0].err, AF_OK);
        rs = (reports_t){.want = 1};
        assert_int_equal(rd_kafka_mock_broker_set_rtt(mc, 1, 3000), 0);
        assert_int_equal(af_producer_send(p, "unit.tasks", 0, NULL, 0, "x", 1, NULL, 0, on_delivery,
                                          &ctx, errstr, sizeof(errstr)),
                         AF_OK);
        run_until(env->loop, &rs.done, "the in-doubt report");
        assert_int_equal(rs.r[0].calls, 1);
        assert_int_equal(rs.r[0].err, AF_ERR_IN_DOUBT);
        assert_int_equal(rs.r[0].offset, -1);
        af_producer_destroy(p);
}

static void test_send_without_callback_is_invalid(void **state) {
        env_t *env = *state;
        char errstr[256] = "";
        af_producer_t *p = af_producer_new(env->loop, env->conf, errstr, sizeof(errstr));
        assert_non_null(p);
        assert_int_equal(af_producer_send(p, "unit.dlq", -1, NULL, 0, "x", 1, NULL, 0, NULL, NULL,
                                          errstr, sizeof(errstr)),
                         AF_ERR_INVALID);
        assert_non_null(strstr(errstr, "callback"));
        assert_int_equal(af_producer_send(p, "", -1, NULL, 0, "x", 1, NULL, 0, on_delivery, NULL,
                                          errstr, sizeof(errstr)),
                         AF_ERR_INVALID);
        assert_int_equal(af_producer_outq_len(p), 0);
        af_producer_destroy(p);
        af_producer_destroy(NULL);
        af_consumer_destroy(NULL);
}

/* librdkafka checks kafka.* properties as the config loads, so a mistake names its key (and,
 * from a file, its line) before any client exists. */
static void test_unknown_kafka_property_names_the_key(void **state) {
        env_t *env = *state;
        char errstr[256] = "";
        assert_int_equal(
                af_config_set(env->conf, "kafka.no.such.property", "1", errstr, sizeof(errstr)),
                AF_ERR_CONFIG);
        assert_non_null(strstr(errstr, "kafka.no.such.property"));
        assert_non_null(strstr(errstr, "No such configuration property"));
        /* The clients still start: the refused value was never stored. */
        af_producer_t *p = af_producer_new(env->loop, env->conf, errstr, sizeof(errstr));
        assert_non_null(p);
        af_producer_destroy(p);
}

/* Idempotence is what makes retried sends land once: a setting cannot turn it off. */
static void test_idempotence_cannot_be_disabled(void **state) {
        env_t *env = *state;
        char errstr[256], val[16];
        size_t len = sizeof(val);
        conf_set(env->conf, "kafka.enable.idempotence", "false");
        af_producer_t *p = af_producer_new(env->loop, env->conf, errstr, sizeof(errstr));
        assert_non_null(p);
        const rd_kafka_conf_t *kc = rd_kafka_conf(af_producer_rk(p));
        assert_int_equal(rd_kafka_conf_get(kc, "enable.idempotence", val, &len), RD_KAFKA_CONF_OK);
        assert_string_equal(val, "true");
        af_producer_destroy(p);
}

typedef struct consumed_s {
        int seen[16];
        int got, want;
        bool done;
        int content_type_ok;
} consumed_t;

static void on_message(af_consumer_t *c, const af_kafka_msg_t *msg, void *opaque) {
        consumed_t *cs = opaque;
        size_t len = 0;
        const char *ct = af_kafka_msg_header(msg, "content-type", &len);
        if (ct && len == 16 && !memcmp(ct, "application/json", 16))
                cs->content_type_ok++;
        assert_true(msg->value_len == 1);
        int i = ((const char *) msg->value)[0] - 'a';
        assert_true(i >= 0 && i < 16);
        cs->seen[i]++;
        assert_int_equal(af_consumer_store_offset(c, msg->topic, msg->partition, msg->offset + 1),
                         AF_OK);
        if (++cs->got == cs->want)
                cs->done = true;
}

static void test_consume_roundtrip_and_unowned_store(void **state) {
        env_t *env = *state;
        char errstr[256], bootstrap[256];
        enum { N = 16 };
        reports_t rs = {.want = N};
        dr_ctx_t ctx[N];
        af_producer_t *p = af_producer_new(env->loop, env->conf, errstr, sizeof(errstr));
        assert_non_null(p);
        rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(af_producer_rk(p));
        assert_int_equal(rd_kafka_mock_topic_create(mc, "unit.tasks.default", 2, 1), 0);
        for (int i = 0; i < N; i++) {
                char v = (char) ('a' + i);
                af_kafka_header_t h = {"content-type", "application/json", 16};
                ctx[i].rs = &rs;
                ctx[i].idx = i;
                assert_int_equal(af_producer_send(p, "unit.tasks.default", -1, &v, 1, &v, 1, &h, 1,
                                                  on_delivery, &ctx[i], errstr, sizeof(errstr)),
                                 AF_OK);
        }
        run_until(env->loop, &rs.done, "delivery reports");

        /* The consumer joins the producer's mock cluster. */
        af_config_t *cconf = af_config_new();
        snprintf(bootstrap, sizeof(bootstrap), "%s", rd_kafka_mock_cluster_bootstraps(mc));
        conf_set(cconf, "topic.prefix", "unit.");
        conf_set(cconf, "kafka.bootstrap.servers", bootstrap);
        conf_set(cconf, "kafka.session.timeout.ms", "6000");
        const char *topics[] = {"unit.tasks.default"};
        consumed_t cs = {.want = N};
        af_consumer_t *c = af_consumer_new(env->loop, cconf, "unit-group", topics, 1, on_message,
                                           NULL, &cs, errstr, sizeof(errstr));
        assert_non_null(c);
        assert_int_equal(af_consumer_store_offset(c, "unit.tasks.default", 0, 1), AF_ERR_STATE);
        run_until(env->loop, &cs.done, "consumed messages");
        for (int i = 0; i < N; i++)
                assert_int_equal(cs.seen[i], 1);
        assert_int_equal(cs.content_type_ok, N);
        assert_int_equal(af_consumer_commit(c, true), AF_OK);
        assert_int_equal(af_consumer_close(c), AF_OK);
        assert_int_equal(af_consumer_commit(c, true), AF_ERR_STATE); /* closed */
        af_consumer_destroy(c);
        af_producer_destroy(p);
        af_config_destroy(cconf);
}

static bool fetched_all(void *arg) {
        af_consumer_t *c = arg;
        int64_t msgs = 0;
        af_consumer_fetch_stats(c, &msgs, NULL);
        return msgs >= 16;
}

/* Held from the start and for longer than the 200 ms after which the consumer used to pause
 * (and so fetch again on resume): nothing is delivered, everything is pre-fetched once while
 * held, and after resume each message is delivered once. The pre-fetch bounds are ours. */
static void test_hold_keeps_prefetch_and_fetches_once(void **state) {
        env_t *env = *state;
        char errstr[256], bootstrap[256], val[32];
        size_t len = sizeof(val);
        enum { N = 16 };
        reports_t rs = {.want = N};
        dr_ctx_t ctx[N];
        int64_t msgs = 0, bytes = 0;
        af_producer_t *p = af_producer_new(env->loop, env->conf, errstr, sizeof(errstr));
        assert_non_null(p);
        rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(af_producer_rk(p));
        assert_int_equal(rd_kafka_mock_topic_create(mc, "unit.tasks.held", 2, 1), 0);
        for (int i = 0; i < N; i++) {
                char v = (char) ('a' + i);
                ctx[i].rs = &rs;
                ctx[i].idx = i;
                assert_int_equal(af_producer_send(p, "unit.tasks.held", -1, &v, 1, &v, 1, NULL, 0,
                                                  on_delivery, &ctx[i], errstr, sizeof(errstr)),
                                 AF_OK);
        }
        run_until(env->loop, &rs.done, "delivery reports");

        af_config_t *cconf = af_config_new();
        snprintf(bootstrap, sizeof(bootstrap), "%s", rd_kafka_mock_cluster_bootstraps(mc));
        conf_set(cconf, "kafka.bootstrap.servers", bootstrap);
        conf_set(cconf, "kafka.session.timeout.ms", "6000");
        conf_set(cconf, "kafka.statistics.interval.ms", "100");
        const char *topics[] = {"unit.tasks.held"};
        consumed_t cs = {.want = N};
        af_consumer_t *c = af_consumer_new(env->loop, cconf, "unit-held", topics, 1, on_message,
                                           NULL, &cs, errstr, sizeof(errstr));
        assert_non_null(c);
        const rd_kafka_conf_t *kc = rd_kafka_conf(af_consumer_rk(c));
        assert_int_equal(rd_kafka_conf_get(kc, "queued.max.messages.kbytes", val, &len),
                         RD_KAFKA_CONF_OK);
        assert_string_equal(val, "4096");
        af_consumer_hold(c, true);
        if (!af_test_loop_until(env->loop, fetched_all, c, DEADLINE_MS))
                fail_msg("timed out waiting for the held consumer to pre-fetch");
        af_test_loop_until(env->loop, NULL, NULL, 400);
        assert_int_equal(cs.got, 0);
        af_consumer_hold(c, false);
        run_until(env->loop, &cs.done, "consumed messages");
        af_test_loop_until(env->loop, NULL, NULL, 300); /* a refetch would be counted now */
        af_consumer_fetch_stats(c, &msgs, &bytes);
        for (int i = 0; i < N; i++)
                assert_int_equal(cs.seen[i], 1);
        assert_int_equal(msgs, N);
        assert_int_equal(bytes, 2 * N); /* one-byte keys and values */
        assert_int_equal(af_consumer_close(c), AF_OK);
        af_consumer_destroy(c);
        af_producer_destroy(p);
        af_config_destroy(cconf);
}

int main(void) {
        af_log_init("test_kafka_mock", AF_LOG_ERROR);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_topic_name_has_prefix, setup, teardown),
                cmocka_unit_test_setup_teardown(test_each_send_gets_one_report_with_offset, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_undeliverable_reports_timeout_once, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_unacknowledged_send_reports_in_doubt, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_send_without_callback_is_invalid, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_unknown_kafka_property_names_the_key, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_idempotence_cannot_be_disabled, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_consume_roundtrip_and_unowned_store, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_hold_keeps_prefetch_and_fetches_once, setup,
                                                teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
