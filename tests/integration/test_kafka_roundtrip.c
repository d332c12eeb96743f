/*
 * test_kafka_roundtrip: libcommon's kafka against the real broker that scripts/services
 * starts. Messages produced through af_producer_send each get one delivery report with an
 * offset; a fresh group consumes them all with their headers; offsets stored and committed
 * are where the next consumer of that group starts (nothing redelivered, nothing skipped);
 * holding and resuming a consumer delivers every message exactly once, in order per
 * partition, and nothing while held; a long hold fetches nothing twice (librdkafka's
 * statistics); a rebalance while held loses nothing and delivers nothing of a revoked
 * partition, with the range and the cooperative assignor; lz4 compression is really applied
 * against this broker (TRAPS.md).
 *
 * Each test makes its own topic with the admin API (auto-creation is off on our broker) and
 * deletes it afterwards (kept with FLEET_KEEP_WORK=1). Needs AF_TEST_KAFKA (bootstrap); prints
 * SKIP without it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "support/support.h"
#include "kafka.h"
#include "log.h"

#define PARTS       3
#define DEADLINE_MS 60000

static const char *bootstrap;
static const char *prefix;

/* ---- helpers ---------------------------------------------------------------------------- */

typedef struct env_s {
        af_loop_t *loop;
        af_config_t *conf;
        char topic[200];
} env_t;

/* Create the topic with PARTS partitions on a throwaway client. */
static void create_topic(const char *topic) {
        char errstr[512];
        rd_kafka_conf_t *kc = rd_kafka_conf_new();
        assert_int_equal(
                rd_kafka_conf_set(kc, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)),
                RD_KAFKA_CONF_OK);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, sizeof(errstr));
        assert_non_null(rk);
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, PARTS, 1, errstr, sizeof(errstr));
        assert_non_null(nt);
        rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
        assert_non_null(ev);
        size_t cnt = 0;
        const rd_kafka_topic_result_t **res =
                rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
        assert_int_equal(cnt, 1);
        assert_int_equal(rd_kafka_topic_result_error(res[0]), 0);
        rd_kafka_NewTopic_destroy(nt);
        rd_kafka_event_destroy(ev);
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
}

static int setup(void **state) {
        static int seq;
        char errstr[512];
        env_t *env = calloc(1, sizeof(*env));
        env->loop = af_loop_new(errstr, sizeof(errstr));
        env->conf = af_config_new();
        assert_non_null(env->loop);
        assert_non_null(env->conf);
        assert_int_equal(af_config_set(env->conf, "kafka.bootstrap.servers", bootstrap, errstr,
                                       sizeof(errstr)),
                         AF_OK);
        assert_int_equal(af_config_set(env->conf, "topic.prefix", prefix, errstr, sizeof(errstr)),
                         AF_OK);
        /* Short session: a test's group is left and rejoined quickly (TRAPS.md). */
        assert_int_equal(af_config_set(env->conf, "kafka.session.timeout.ms", "6000", errstr,
                                       sizeof(errstr)),
                         AF_OK);
        /* AF_TEST_KAFKA_DEBUG=consumer,fetch shows librdkafka's view when a test fails. */
        if (getenv("AF_TEST_KAFKA_DEBUG")) {
                assert_int_equal(af_config_set(env->conf, "kafka.debug",
                                               getenv("AF_TEST_KAFKA_DEBUG"), errstr,
                                               sizeof(errstr)),
                                 AF_OK);
                af_log_init("test_kafka_roundtrip", AF_LOG_DEBUG);
        }
        char suffix[96];
        snprintf(suffix, sizeof(suffix), "test.kafka.%d.%d", (int) getpid(), ++seq);
        af_kafka_topic(env->conf, suffix, env->topic, sizeof(env->topic));
        create_topic(env->topic);
        *state = env;
        return 0;
}

static int teardown(void **state) {
        env_t *env = *state;
        const char *topics[] = {env->topic};
        af_test_teardown_topics(bootstrap, topics, 1);
        af_config_destroy(env->conf);
        af_loop_destroy(env->loop);
        free(env);
        return 0;
}

/* Run the loop until *done is true; fails the test after DEADLINE_MS. */
static void run_until(af_loop_t *loop, bool *done, const char *what) {
        if (!af_test_loop_until(loop, af_test_flag_set, done, DEADLINE_MS))
                fail_msg("timed out waiting for %s", what);
}

/* ---- producing -------------------------------------------------------------------------- */

typedef struct sent_s {
        int reports; /* delivery reports seen for this message: must end at 1 */
        af_err_t err;
        int32_t partition;
        int64_t offset;
} sent_t;

typedef struct prod_state_s {
        sent_t *sent;
        int want, got;
        bool done;
} prod_state_t;

typedef struct dr_ctx_s {
        prod_state_t *ps;
        int idx;
} dr_ctx_t;

static void on_delivery(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                        void *opaque) {
        dr_ctx_t *ctx = opaque;
        sent_t *s = &ctx->ps->sent[ctx->idx];
        s->reports++;
        s->err = err;
        s->partition = partition;
        s->offset = offset;
        if (++ctx->ps->got == ctx->ps->want)
                ctx->ps->done = true;
}

/* Produce messages [from, to) to explicit partitions (i % PARTS), each with the headers
 * content-type, traceparent and seq; waits for every report and checks them. */
static void produce_range(env_t *env, sent_t *sent, int from, int to) {
        char errstr[512];
        af_producer_t *p = af_producer_new(env->loop, env->conf, errstr, sizeof(errstr));
        prod_state_t ps = {.sent = sent, .want = to - from};
        dr_ctx_t *ctx = calloc((size_t) (to - from), sizeof(*ctx));
        assert_non_null(p);
        for (int i = from; i < to; i++) {
                char key[32], val[64], seq[16];
                snprintf(key, sizeof(key), "case-%d", i);
                snprintf(val, sizeof(val), "{\"n\":%d}", i);
                snprintf(seq, sizeof(seq), "%d", i);
                af_kafka_header_t hdrs[] = {
                        {"content-type", "application/json", 16},
                        {"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                         55},
                        {"seq", seq, strlen(seq)},
                };
                ctx[i - from].ps = &ps;
                ctx[i - from].idx = i;
                assert_int_equal(af_producer_send(p, env->topic, i % PARTS, key, strlen(key), val,
                                                  strlen(val), hdrs, 3, on_delivery, &ctx[i - from],
                                                  errstr, sizeof(errstr)),
                                 AF_OK);
        }
        assert_true(af_producer_outq_len(p) > 0);
        run_until(env->loop, &ps.done, "delivery reports");
        for (int i = from; i < to; i++) {
                assert_int_equal(sent[i].reports, 1);
                assert_int_equal(sent[i].err, AF_OK);
                assert_int_equal(sent[i].partition, i % PARTS);
                assert_true(sent[i].offset >= 0);
        }
        assert_int_equal(af_producer_outq_len(p), 0);
        af_producer_destroy(p);
        /* No report after destroy: each was served exactly once. */
        for (int i = from; i < to; i++)
                assert_int_equal(sent[i].reports, 1);
        free(ctx);
}

/* ---- consuming -------------------------------------------------------------------------- */

typedef struct cons_state_s {
        env_t *env;
        sent_t *sent;
        int *seen;      /* deliveries per seq */
        int total;      /* messages that exist (seq range) */
        int want, got;  /* deliveries expected before done */
        int min_seq;    /* any seq below this is a redelivery */
        bool held;      /* test-side mirror of af_consumer_hold */
        int hold_every; /* hold after every n deliveries (0 = never) */
        int hold_ms;    /* for how long (0 = alternate 5 ms and 400 ms) */
        int hold_at;    /* hold once after this many deliveries, until the test resumes */
        int holds;
        int while_held; /* deliveries while held: must stay 0 */
        bool assigned;
        bool done;
        int revokes;                /* revoke callbacks with partitions */
        bool owned[PARTS];          /* partitions assigned to this consumer now */
        int64_t next_offset[PARTS]; /* per partition, the lowest offset still in order */
        af_timer_t *resume;
        af_consumer_t *c;
} cons_state_t;

static int header_seq(const af_kafka_msg_t *msg) {
        size_t len = 0;
        const char *v = af_kafka_msg_header(msg, "seq", &len);
        char buf[16];
        assert_non_null(v);
        assert_true(len > 0 && len < sizeof(buf));
        memcpy(buf, v, len);
        buf[len] = '\0';
        return atoi(buf);
}

static void on_message(af_consumer_t *c, const af_kafka_msg_t *msg, void *opaque) {
        cons_state_t *cs = opaque;
        size_t len = 0;
        const char *ct = af_kafka_msg_header(msg, "content-type", &len);
        int seq = header_seq(msg);

        assert_non_null(ct);
        assert_int_equal(len, 16);
        assert_memory_equal(ct, "application/json", 16);
        assert_non_null(af_kafka_msg_header(msg, "traceparent", &len));
        assert_int_equal(len, 55);
        assert_null(af_kafka_msg_header(msg, "absent", &len));
        assert_string_equal(msg->topic, cs->env->topic);
        assert_true(seq >= 0 && seq < cs->total);
        /* The message is the one the delivery report named. */
        assert_int_equal(msg->partition, cs->sent[seq].partition);
        assert_int_equal(msg->offset, cs->sent[seq].offset);
        char key[32];
        snprintf(key, sizeof(key), "case-%d", seq);
        assert_int_equal(msg->key_len, strlen(key));
        assert_memory_equal(msg->key, key, msg->key_len);

        if (cs->held)
                cs->while_held++;
        /* Only from a partition assigned to us now, and in order within it. */
        assert_true(msg->partition >= 0 && msg->partition < PARTS);
        assert_true(cs->owned[msg->partition]);
        assert_true(msg->offset >= cs->next_offset[msg->partition]);
        cs->next_offset[msg->partition] = msg->offset + 1;
        cs->seen[seq]++;
        assert_int_equal(af_consumer_store_offset(c, msg->topic, msg->partition, msg->offset + 1),
                         AF_OK);
        if (++cs->got >= cs->want)
                cs->done = true;
        if (cs->hold_every && cs->got % cs->hold_every == 0 && !cs->done) {
                cs->held = true;
                cs->holds++;
                af_consumer_hold(c, true);
                /* Unless told, alternate short holds and long ones: longer than the 200 ms
                 * after which the consumer used to pause its partitions and fetch again on
                 * resume. */
                int ms = cs->hold_ms ? cs->hold_ms : cs->holds % 2 ? 5 : 400;
                af_timer_start(cs->resume, ms, false);
        }
        if (cs->hold_at && cs->got == cs->hold_at) {
                cs->held = true;
                cs->holds++;
                af_consumer_hold(c, true);
        }
}

static void on_rebalance(af_consumer_t *c, bool assigned,
                         const rd_kafka_topic_partition_list_t *parts, void *opaque) {
        cons_state_t *cs = opaque;
        if (assigned && parts->cnt > 0)
                cs->assigned = true;
        else if (!assigned && parts->cnt > 0)
                cs->revokes++;
        /* Eager rebalances name the whole assignment, cooperative ones what changes. */
        for (int i = 0; i < parts->cnt; i++) {
                assert_string_equal(parts->elems[i].topic, cs->env->topic);
                assert_true(parts->elems[i].partition >= 0 && parts->elems[i].partition < PARTS);
                cs->owned[parts->elems[i].partition] = assigned;
        }
}

static void on_resume(void *opaque) {
        cons_state_t *cs = opaque;
        cs->held = false;
        af_consumer_hold(cs->c, false);
}

static af_consumer_t *consumer_start(env_t *env, cons_state_t *cs, const char *group) {
        char errstr[512];
        const char *topics[] = {env->topic};
        cs->resume = af_timer_new(env->loop, on_resume, cs);
        cs->c = af_consumer_new(env->loop, env->conf, group, topics, 1, on_message, on_rebalance,
                                cs, errstr, sizeof(errstr));
        if (!cs->c)
                fail_msg("af_consumer_new: %s", errstr);
        return cs->c;
}

static void consumer_stop(cons_state_t *cs) {
        assert_int_equal(af_consumer_commit(cs->c, true /*sync*/), AF_OK);
        assert_int_equal(af_consumer_close(cs->c), AF_OK);
        af_consumer_destroy(cs->c);
        af_timer_destroy(cs->resume);
        cs->c = NULL;
}

static void group_name(char *out, size_t n, const char *what) {
        snprintf(out, n, "test-kafka-%s-%d-%ld", what, (int) getpid(), (long) random());
}

/* ---- tests ------------------------------------------------------------------------------ */

/* Produce N, consume all in a fresh group with headers, commit; a second consumer of the
 * group gets exactly the M produced afterwards: committed offsets are where it starts. */
static void test_roundtrip_commit_resume_point(void **state) {
        env_t *env = *state;
        enum { N = 300, M = 60 };
        sent_t sent[N + M];
        int seen[N + M];
        char group[96];
        memset(sent, 0, sizeof(sent));
        memset(seen, 0, sizeof(seen));
        group_name(group, sizeof(group), "rt");

        produce_range(env, sent, 0, N);

        cons_state_t cs = {.env = env, .sent = sent, .seen = seen, .total = N + M, .want = N};
        consumer_start(env, &cs, group);
        run_until(env->loop, &cs.done, "first consumer");
        consumer_stop(&cs);
        for (int i = 0; i < N; i++)
                assert_int_equal(seen[i], 1);

        produce_range(env, sent, N, N + M);

        /* Every partition gets new messages (i % PARTS), and a partition delivers in order:
         * had the group restarted before its committed offset, old messages would have come
         * before the new ones. */
        cons_state_t cs2 = {.env = env, .sent = sent, .seen = seen, .total = N + M, .want = M};
        consumer_start(env, &cs2, group);
        run_until(env->loop, &cs2.done, "second consumer");
        consumer_stop(&cs2);
        for (int i = 0; i < N; i++)
                assert_int_equal(seen[i], 1); /* nothing redelivered */
        for (int i = N; i < N + M; i++)
                assert_int_equal(seen[i], 1); /* nothing skipped */
}

/* Held from the start (partitions are assigned while held), then held and resumed every few
 * messages: nothing is delivered while held, and every message exactly once. */
static void test_hold_resume_exactly_once(void **state) {
        env_t *env = *state;
        enum { N = 400 };
        sent_t sent[N];
        int seen[N];
        char group[96];
        memset(sent, 0, sizeof(sent));
        memset(seen, 0, sizeof(seen));
        group_name(group, sizeof(group), "hold");

        produce_range(env, sent, 0, N);

        cons_state_t cs = {
                .env = env, .sent = sent, .seen = seen, .total = N, .want = N, .hold_every = 20};
        consumer_start(env, &cs, group);
        cs.held = true;
        af_consumer_hold(cs.c, true);
        run_until(env->loop, &cs.assigned, "assignment while held");
        assert_int_equal(cs.got, 0);
        /* Give the held consumer time to fetch if it (wrongly) would; then resume. */
        af_timer_start(cs.resume, 1000, false);
        run_until(env->loop, &cs.done, "held consumer");
        consumer_stop(&cs);

        assert_int_equal(cs.while_held, 0);
        assert_true(cs.holds >= N / 20 - 1);
        for (int i = 0; i < N; i++)
                assert_int_equal(seen[i], 1);
}

static void set_conf(env_t *env, const char *name, const char *value) {
        char errstr[512];
        if (af_config_set(env->conf, name, value, errstr, sizeof(errstr)) != AF_OK)
                fail_msg("af_config_set %s: %s", name, errstr);
}

/* What a wait on the consumer's fetch statistics waits for. */
typedef struct fetched_s {
        af_consumer_t *c;
        int64_t msgs;
} fetched_t;

static bool fetched_at_least(void *arg) {
        fetched_t *f = arg;
        int64_t msgs = 0;
        af_consumer_fetch_stats(f->c, &msgs, NULL);
        return msgs >= f->msgs;
}

/* Run the loop until librdkafka's statistics say c fetched at least n messages. */
static void run_until_fetched(env_t *env, af_consumer_t *c, int64_t n) {
        fetched_t f = {.c = c, .msgs = n};
        if (!af_test_loop_until(env->loop, fetched_at_least, &f, DEADLINE_MS))
                fail_msg("timed out waiting for %lld messages fetched", (long long) n);
}

/* A hold longer than 200 ms (after which the consumer used to pause its partitions, which
 * rewinds librdkafka's fetch position and fetches everything pre-fetched again on resume)
 * fetches nothing twice: held from the start until everything is pre-fetched, then for
 * 400 ms every 100 messages, every message is delivered once and in order per partition, and
 * librdkafka's statistics count each message and its bytes fetched exactly once. */
static void test_long_hold_fetches_nothing_twice(void **state) {
        env_t *env = *state;
        enum { N = 600 };
        sent_t sent[N];
        int seen[N];
        char group[96];
        int64_t want_bytes = 0, msgs = 0, bytes = 0;
        memset(sent, 0, sizeof(sent));
        memset(seen, 0, sizeof(seen));
        group_name(group, sizeof(group), "longhold");
        set_conf(env, "kafka.statistics.interval.ms", "100");

        produce_range(env, sent, 0, N);
        for (int i = 0; i < N; i++) { /* key + value, as produce_range made them */
                char key[32], val[64];
                want_bytes += snprintf(key, sizeof(key), "case-%d", i);
                want_bytes += snprintf(val, sizeof(val), "{\"n\":%d}", i);
        }

        cons_state_t cs = {.env = env,
                           .sent = sent,
                           .seen = seen,
                           .total = N,
                           .want = N,
                           .hold_every = 100,
                           .hold_ms = 400};
        consumer_start(env, &cs, group);
        cs.held = true;
        af_consumer_hold(cs.c, true);
        /* Held, the consumer keeps fetching up to its pre-fetch limits: all N here. */
        run_until_fetched(env, cs.c, N);
        af_test_loop_until(env->loop, NULL, NULL, 300);
        assert_int_equal(cs.got, 0);
        on_resume(&cs);
        run_until(env->loop, &cs.done, "consumer with long holds");
        /* A few statistics intervals after the last delivery: a refetch would show here. */
        af_test_loop_until(env->loop, NULL, NULL, 500);
        af_consumer_fetch_stats(cs.c, &msgs, &bytes);
        consumer_stop(&cs);

        assert_int_equal(cs.while_held, 0);
        assert_true(cs.holds >= N / 100 - 1);
        for (int i = 0; i < N; i++)
                assert_int_equal(seen[i], 1);
        assert_int_equal(msgs, N);
        assert_int_equal(bytes, want_bytes);
}

typedef struct pair_s {
        cons_state_t *a, *b;
        int want;
} pair_t;

static bool pair_done(void *arg) {
        pair_t *p = arg;
        return p->a->got + p->b->got >= p->want;
}

static bool pair_rebalanced(void *arg) {
        pair_t *p = arg;
        return p->a->revokes > 0 && p->b->got > 0;
}

/* A consumer held with most of the topic pre-fetched (its partitions' messages waiting in
 * its queue) while a second consumer joins the group: the first delivers nothing while held
 * and nothing of a partition it no longer owns, the second starts where the first committed,
 * and between them every message is delivered exactly once, in order per partition. */
static void rebalance_while_held(env_t *env, const char *strategy) {
        enum { N = 600, FIRST = 60 };
        sent_t sent[N];
        int seen[N];
        char group[96];
        memset(sent, 0, sizeof(sent));
        memset(seen, 0, sizeof(seen));
        group_name(group, sizeof(group), "rebal");
        set_conf(env, "kafka.partition.assignment.strategy", strategy);
        set_conf(env, "kafka.statistics.interval.ms", "100");

        produce_range(env, sent, 0, N);

        cons_state_t a = {
                .env = env, .sent = sent, .seen = seen, .total = N, .want = N, .hold_at = FIRST};
        cons_state_t b = {.env = env, .sent = sent, .seen = seen, .total = N, .want = N};
        pair_t pair = {.a = &a, .b = &b, .want = N};
        consumer_start(env, &a, group);
        run_until(env->loop, &a.held, "first consumer to hold");
        assert_int_equal(a.got, FIRST);
        run_until_fetched(env, a.c, N); /* the rest waits in a's queue */

        consumer_start(env, &b, group);
        if (!af_test_loop_until(env->loop, pair_rebalanced, &pair, DEADLINE_MS))
                fail_msg("timed out waiting for the rebalance (a revoked %d, b got %d)", a.revokes,
                         b.got);
        /* Still held across the rebalance, for a while after it. */
        af_test_loop_until(env->loop, NULL, NULL, 300);
        assert_int_equal(a.got, FIRST);
        on_resume(&a);
        if (!af_test_loop_until(env->loop, pair_done, &pair, DEADLINE_MS))
                fail_msg("timed out: a got %d, b got %d of %d", a.got, b.got, N);
        /* Anything delivered twice would come now. */
        af_test_loop_until(env->loop, NULL, NULL, 500);
        consumer_stop(&a);
        consumer_stop(&b);

        assert_int_equal(a.while_held, 0);
        assert_int_equal(a.got + b.got, N);
        for (int i = 0; i < N; i++)
                assert_int_equal(seen[i], 1);
}

static void test_rebalance_while_held_range(void **state) {
        rebalance_while_held(*state, "range");
}

static void test_rebalance_while_held_cooperative(void **state) {
        rebalance_while_held(*state, "cooperative-sticky");
}

/* Storing an offset for a partition this consumer does not own is AF_ERR_STATE. */
static void test_store_unassigned_is_state(void **state) {
        env_t *env = *state;
        char group[96];
        int seen[1] = {0};
        sent_t sent[1];
        memset(sent, 0, sizeof(sent));
        group_name(group, sizeof(group), "state");
        cons_state_t cs = {.env = env, .sent = sent, .seen = seen, .total = 1, .want = 1};
        consumer_start(env, &cs, group);
        assert_int_equal(af_consumer_store_offset(cs.c, env->topic, 0, 1), AF_ERR_STATE);
        assert_int_equal(af_consumer_close(cs.c), AF_OK);
        af_consumer_destroy(cs.c);
        af_timer_destroy(cs.resume);
}

/* lz4 (our default) is really applied to produce requests against this broker: with
 * librdkafka's feature/msg debug on, every ProduceRequest names lz4 and nothing says "does
 * not support compression" (TRAPS.md: old clients silently stop compressing on Kafka 4). */
static void test_compression_is_applied(void **state) {
        env_t *env = *state;
        char errstr[512], path[] = "/tmp/af-kafka-log-XXXXXX";
        int fd = mkstemp(path);
        FILE *f = fdopen(fd, "w+");
        sent_t sent[20];
        memset(sent, 0, sizeof(sent));
        assert_non_null(f);
        assert_int_equal(
                af_config_set(env->conf, "kafka.debug", "feature,msg", errstr, sizeof(errstr)),
                AF_OK);
        af_log_init("test_kafka_roundtrip", AF_LOG_DEBUG);
        af_log_set_output(f);
        produce_range(env, sent, 0, 20);
        af_log_set_output(stderr);
        af_log_init("test_kafka_roundtrip", AF_LOG_WARN);

        fflush(f);
        rewind(f);
        char line[8192];
        int produce_requests = 0, lz4_requests = 0, unsupported = 0;
        while (fgets(line, sizeof(line), f)) {
                if (strstr(line, "does not support compression"))
                        unsupported++;
                if (strstr(line, "Produce MessageSet")) {
                        produce_requests++;
                        if (strstr(line, ", lz4)"))
                                lz4_requests++;
                }
        }
        fclose(f);
        if (getenv("AF_TEST_KEEP_LOG"))
                fprintf(stderr, "log kept in %s\n", path);
        else
                unlink(path);
        assert_int_equal(unsupported, 0);
        assert_true(produce_requests > 0);
        assert_int_equal(lz4_requests, produce_requests);
}

int main(void) {
        bootstrap = getenv("AF_TEST_KAFKA");
        if (!bootstrap || !*bootstrap) {
                printf("SKIP: AF_TEST_KAFKA is not set (scripts/services start, scripts/test)\n");
                return 0;
        }
        prefix = getenv("AF_TEST_TOPIC_PREFIX");
        if (!prefix || !*prefix)
                prefix = "agentfleet.";
        srandom((unsigned) getpid());
        af_log_init("test_kafka_roundtrip", AF_LOG_WARN);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_roundtrip_commit_resume_point, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_hold_resume_exactly_once, setup, teardown),
                cmocka_unit_test_setup_teardown(test_long_hold_fetches_nothing_twice, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_rebalance_while_held_range, setup, teardown),
                cmocka_unit_test_setup_teardown(test_rebalance_while_held_cooperative, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_store_unassigned_is_state, setup, teardown),
                cmocka_unit_test_setup_teardown(test_compression_is_applied, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
