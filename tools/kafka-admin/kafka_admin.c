/*
 * af-kafka-admin: the small admin client that scripts/services uses to bring a broker into
 * service. `wait` blocks until the broker answers a metadata request (readiness is polled,
 * never slept), `create-topics` creates every agentfleet topic in one CreateTopics call
 * (an existing topic is fine, so it can run on every start), `delete-topics` deletes the
 * agentfleet topics of one prefix (a benchmark's or a test's, once it is done with them), and
 * `list-topics` prints the topics the broker knows (for status and for humans), and
 * `wait-group` blocks until a consumer group has formed: stable, its members holding the given
 * number of partitions between them (load started before that waits in Kafka).
 *
 * It uses librdkafka only, no libcommon: the services script compiles it directly with the C
 * compiler when the CMake build is unavailable, so a half-built tree never blocks the broker.
 */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AF_ADMIN_OP_TIMEOUT_MS 15000

/* The topics of the wire contract (DESIGN.md), suffixes of the prefix. */
static const struct {
        const char *suffix;
        int compact; /* keyed by task id, latest record wins: cleanup.policy=compact */
} af_admin_topics[] = {
        {"requests", 0}, {"tasks.default", 0}, {"tasks.claims", 0}, {"results", 1},
        {"audit", 0},    {"dlq", 0},           {"approvals", 1},    {"events", 0},
        {"retry.5s", 0}, {"retry.1m", 0},      {"retry.10m", 0},
};
#define AF_ADMIN_TOPIC_CNT (sizeof(af_admin_topics) / sizeof(af_admin_topics[0]))

typedef struct admin_opts_s {
        const char *cmd;
        const char *bootstrap; /* host:port list */
        const char *prefix;    /* topic name prefix, e.g. "agentfleet." */
        int partitions;
        int replication;
        int timeout_ms; /* overall deadline of the command */
        int verbose;
        int prefix_given;  /* --prefix on the command line, not the default */
        const char *group; /* wait-group: the consumer group */
} admin_opts_t;

static long long now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void usage(FILE *out) {
        fprintf(out,
                "usage: af-kafka-admin COMMAND [options]\n"
                "  wait          --bootstrap B [--timeout-ms N]   exit 0 once metadata answers\n"
                "  create-topics --bootstrap B [--prefix P] [--partitions N]\n"
                "                [--replication R] [--timeout-ms N]\n"
                "                create the agentfleet topics (existing ones are fine)\n"
                "  delete-topics --bootstrap B --prefix P [--timeout-ms N]\n"
                "                delete the agentfleet topics of prefix P (absent ones are fine)\n"
                "  list-topics   --bootstrap B [--timeout-ms N]\n"
                "  wait-group    --bootstrap B --group G --partitions N [--timeout-ms N]\n"
                "                exit 0 once G is stable with N partitions assigned\n"
                "options: -v logs librdkafka's broker chatter to stderr\n");
}

/* Keep librdkafka quiet unless -v: a broker that is still starting makes it log every
 * refused connection, which would bury the one line that matters. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
        fprintf(stderr, "af-kafka-admin: %s: %s\n", fac, buf);
}

/* @returns a new client handle (caller destroys), or NULL with the reason printed. */
static rd_kafka_t *client_new(const admin_opts_t *o) {
        char errstr[512];
        rd_kafka_t *rk = NULL;
        rd_kafka_conf_t *conf = rd_kafka_conf_new();

        if (rd_kafka_conf_set(conf, "bootstrap.servers", o->bootstrap, errstr, sizeof(errstr)) !=
                    RD_KAFKA_CONF_OK ||
            rd_kafka_conf_set(conf, "client.id", "af-kafka-admin", errstr, sizeof(errstr)) !=
                    RD_KAFKA_CONF_OK ||
            /* Retry connecting quickly while the broker is coming up. */
            rd_kafka_conf_set(conf, "reconnect.backoff.ms", "50", errstr, sizeof(errstr)) !=
                    RD_KAFKA_CONF_OK ||
            rd_kafka_conf_set(conf, "reconnect.backoff.max.ms", "500", errstr, sizeof(errstr)) !=
                    RD_KAFKA_CONF_OK) {
                fprintf(stderr, "af-kafka-admin: %s\n", errstr);
                rd_kafka_conf_destroy(conf);
                goto out;
        }
        if (o->verbose)
                rd_kafka_conf_set_log_cb(conf, log_cb);
        else
                rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!rk) {
                fprintf(stderr, "af-kafka-admin: %s\n", errstr);
                rd_kafka_conf_destroy(conf);
        }
out:
        return rk;
}

/* Poll metadata until a broker answers or the deadline passes.
 * @returns 0 when the cluster answered with at least one broker, 1 otherwise. */
static int wait_metadata(rd_kafka_t *rk, const admin_opts_t *o, long long deadline) {
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;
        int rc = 1;

        while (now_ms() < deadline) {
                const struct rd_kafka_metadata *md = NULL;
                long long left = deadline - now_ms();
                int step = left > 2000 ? 2000 : (int) (left > 0 ? left : 1);
                err = rd_kafka_metadata(rk, 0 /*known topics only*/, NULL, &md, step);
                if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                        int brokers = md->broker_cnt;
                        rd_kafka_metadata_destroy(md);
                        if (brokers > 0) {
                                rc = 0;
                                goto out;
                        }
                }
                /* rd_kafka_metadata returns at once while no connection is up: pace it. */
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
        }
        fprintf(stderr, "af-kafka-admin: no metadata from %s within %d ms: %s\n", o->bootstrap,
                o->timeout_ms, rd_kafka_err2str(err));
out:
        return rc;
}

static int cmd_wait(const admin_opts_t *o) {
        long long deadline = now_ms() + o->timeout_ms;
        int rc = 1;
        rd_kafka_t *rk = client_new(o);
        if (!rk)
                goto out;
        rc = wait_metadata(rk, o, deadline);
        if (rc == 0 && o->verbose)
                fprintf(stderr, "af-kafka-admin: %s answers\n", o->bootstrap);
out:
        if (rk)
                rd_kafka_destroy(rk);
        return rc;
}

/* Options of a CreateTopics or DeleteTopics: the controller's operation and the request both
 * bounded by AF_ADMIN_OP_TIMEOUT_MS. */
static rd_kafka_AdminOptions_t *topic_op_options(rd_kafka_t *rk, rd_kafka_admin_op_t op) {
        char errstr[256];
        rd_kafka_AdminOptions_t *aopts = rd_kafka_AdminOptions_new(rk, op);
        rd_kafka_AdminOptions_set_operation_timeout(aopts, AF_ADMIN_OP_TIMEOUT_MS, errstr,
                                                    sizeof(errstr));
        rd_kafka_AdminOptions_set_request_timeout(aopts, AF_ADMIN_OP_TIMEOUT_MS, errstr,
                                                  sizeof(errstr));
        return aopts;
}

/* One CreateTopics request for all topics. @returns 0 when every topic exists afterwards,
 * 2 when some failed with a retriable error (caller may try again), 1 otherwise. */
static int create_once(rd_kafka_t *rk, const admin_opts_t *o) {
        char errstr[512];
        char name[256];
        rd_kafka_NewTopic_t *nt[AF_ADMIN_TOPIC_CNT] = {0};
        rd_kafka_AdminOptions_t *aopts = NULL;
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_event_t *ev = NULL;
        int rc = 1;
        size_t i;

        for (i = 0; i < AF_ADMIN_TOPIC_CNT; i++) {
                snprintf(name, sizeof(name), "%s%s", o->prefix, af_admin_topics[i].suffix);
                nt[i] = rd_kafka_NewTopic_new(name, o->partitions, o->replication, errstr,
                                              sizeof(errstr));
                if (!nt[i]) {
                        fprintf(stderr, "af-kafka-admin: topic %s: %s\n", name, errstr);
                        goto out;
                }
                if (af_admin_topics[i].compact &&
                    rd_kafka_NewTopic_set_config(nt[i], "cleanup.policy", "compact")) {
                        fprintf(stderr, "af-kafka-admin: topic %s: cannot set config\n", name);
                        goto out;
                }
        }

        aopts = topic_op_options(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
        rd_kafka_CreateTopics(rk, nt, AF_ADMIN_TOPIC_CNT, aopts, q);
        ev = rd_kafka_queue_poll(q, AF_ADMIN_OP_TIMEOUT_MS + 5000);
        if (!ev) {
                fprintf(stderr, "af-kafka-admin: CreateTopics: no answer\n");
                rc = 2;
                goto out;
        }
        if (rd_kafka_event_error(ev)) {
                fprintf(stderr, "af-kafka-admin: CreateTopics: %s\n",
                        rd_kafka_event_error_string(ev));
                rc = 2;
                goto out;
        }

        const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
        size_t cnt = 0;
        const rd_kafka_topic_result_t **trs = rd_kafka_CreateTopics_result_topics(res, &cnt);
        int created = 0, existed = 0, failed = 0, retriable = 0;
        for (i = 0; i < cnt; i++) {
                rd_kafka_resp_err_t err = rd_kafka_topic_result_error(trs[i]);
                if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                        created++;
                } else if (err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                        existed++;
                } else {
                        failed++;
                        /* A controller still settling answers with these; try again. */
                        if (err == RD_KAFKA_RESP_ERR_NOT_CONTROLLER ||
                            err == RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT ||
                            err == RD_KAFKA_RESP_ERR__TIMED_OUT ||
                            err == RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE ||
                            err == RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR)
                                retriable++;
                        fprintf(stderr, "af-kafka-admin: %s: %s\n",
                                rd_kafka_topic_result_name(trs[i]),
                                rd_kafka_topic_result_error_string(trs[i])
                                        ? rd_kafka_topic_result_error_string(trs[i])
                                        : rd_kafka_err2str(err));
                }
        }
        if (failed == 0) {
                printf("topics with prefix \"%s\": %d created, %d already there (%d partitions)\n",
                       o->prefix, created, existed, o->partitions);
                rc = 0;
        } else {
                rc = retriable == failed ? 2 : 1;
        }
out:
        if (ev)
                rd_kafka_event_destroy(ev);
        if (aopts)
                rd_kafka_AdminOptions_destroy(aopts);
        for (i = 0; i < AF_ADMIN_TOPIC_CNT; i++)
                if (nt[i])
                        rd_kafka_NewTopic_destroy(nt[i]);
        rd_kafka_queue_destroy(q);
        return rc;
}

/* A topic just created answers "not leader" until its partitions have leaders: clients that
 * start right after `services start` must not see that. Poll until every topic of the set
 * has all its partitions led. @returns 0 when they do, 1 at the deadline. */
static int wait_leaders(rd_kafka_t *rk, const admin_opts_t *o, long long deadline) {
        char name[256];
        while (now_ms() < deadline) {
                const struct rd_kafka_metadata *md = NULL;
                size_t ready = 0;
                if (rd_kafka_metadata(rk, 1 /*all topics*/, NULL, &md, 2000) ==
                    RD_KAFKA_RESP_ERR_NO_ERROR) {
                        for (size_t i = 0; i < AF_ADMIN_TOPIC_CNT; i++) {
                                snprintf(name, sizeof(name), "%s%s", o->prefix,
                                         af_admin_topics[i].suffix);
                                for (int t = 0; t < md->topic_cnt; t++) {
                                        const struct rd_kafka_metadata_topic *mt = &md->topics[t];
                                        if (strcmp(mt->topic, name) || mt->err ||
                                            mt->partition_cnt < 1)
                                                continue;
                                        int led = 0;
                                        for (int p = 0; p < mt->partition_cnt; p++)
                                                led += mt->partitions[p].err == 0 &&
                                                       mt->partitions[p].leader >= 0;
                                        ready += led == mt->partition_cnt;
                                }
                        }
                        rd_kafka_metadata_destroy(md);
                        if (ready == AF_ADMIN_TOPIC_CNT)
                                return 0;
                }
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
        }
        fprintf(stderr, "af-kafka-admin: topics with prefix \"%s\" have no leaders within %d ms\n",
                o->prefix, o->timeout_ms);
        return 1;
}

static int cmd_create_topics(const admin_opts_t *o) {
        long long deadline = now_ms() + o->timeout_ms;
        int rc = 1;
        rd_kafka_t *rk = client_new(o);
        if (!rk)
                goto out;
        rc = wait_metadata(rk, o, deadline);
        if (rc)
                goto out;
        while ((rc = create_once(rk, o)) == 2 && now_ms() < deadline) {
                struct timespec ts = {0, 500 * 1000000L};
                nanosleep(&ts, NULL);
        }
        if (rc == 2)
                rc = 1;
        if (rc == 0)
                rc = wait_leaders(rk, o, deadline);
out:
        if (rk)
                rd_kafka_destroy(rk);
        return rc;
}

/* One DeleteTopics request for the prefix's topics. Only the topic names of the wire contract
 * under that prefix are named, so nothing else on the broker can go. @returns 0 when none of
 * them exists afterwards, 1 otherwise. */
static int cmd_delete_topics(const admin_opts_t *o) {
        char names[AF_ADMIN_TOPIC_CNT][256];
        rd_kafka_DeleteTopic_t *dt[AF_ADMIN_TOPIC_CNT] = {0};
        rd_kafka_AdminOptions_t *aopts = NULL;
        rd_kafka_queue_t *q = NULL;
        rd_kafka_event_t *ev = NULL;
        int rc = 1, deleted = 0, absent = 0, failed = 0;
        size_t i;
        rd_kafka_t *rk;

        /* The default prefix is the production one: deleting it takes saying so. */
        if (!o->prefix_given) {
                fprintf(stderr, "af-kafka-admin: delete-topics needs an explicit --prefix\n");
                return 2;
        }
        if (!(rk = client_new(o)))
                return 1;
        if (wait_metadata(rk, o, now_ms() + o->timeout_ms))
                goto out;
        for (i = 0; i < AF_ADMIN_TOPIC_CNT; i++) {
                snprintf(names[i], sizeof(names[i]), "%s%s", o->prefix, af_admin_topics[i].suffix);
                dt[i] = rd_kafka_DeleteTopic_new(names[i]);
        }
        q = rd_kafka_queue_new(rk);
        aopts = topic_op_options(rk, RD_KAFKA_ADMIN_OP_DELETETOPICS);
        rd_kafka_DeleteTopics(rk, dt, AF_ADMIN_TOPIC_CNT, aopts, q);
        ev = rd_kafka_queue_poll(q, AF_ADMIN_OP_TIMEOUT_MS + 5000);
        if (!ev || rd_kafka_event_error(ev)) {
                fprintf(stderr, "af-kafka-admin: DeleteTopics: %s\n",
                        ev ? rd_kafka_event_error_string(ev) : "no answer");
                goto out;
        }
        size_t cnt = 0;
        const rd_kafka_topic_result_t **trs =
                rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &cnt);
        for (i = 0; i < cnt; i++) {
                rd_kafka_resp_err_t err = rd_kafka_topic_result_error(trs[i]);
                if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                        deleted++;
                } else if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
                        absent++;
                } else {
                        failed++;
                        fprintf(stderr, "af-kafka-admin: %s: %s\n",
                                rd_kafka_topic_result_name(trs[i]), rd_kafka_err2str(err));
                }
        }
        if (!failed) {
                printf("topics with prefix \"%s\": %d deleted, %d were not there\n", o->prefix,
                       deleted, absent);
                rc = 0;
        }
out:
        if (ev)
                rd_kafka_event_destroy(ev);
        if (aopts)
                rd_kafka_AdminOptions_destroy(aopts);
        for (i = 0; i < AF_ADMIN_TOPIC_CNT; i++)
                if (dt[i])
                        rd_kafka_DeleteTopic_destroy(dt[i]);
        if (q)
                rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
        return rc;
}

/* One DescribeConsumerGroups of o->group: *state and the partitions its members hold.
 * @returns 0, or 1 when the broker did not answer. */
static int describe_group(rd_kafka_t *rk, const admin_opts_t *o,
                          rd_kafka_consumer_group_state_t *state, int *assigned) {
        char errstr[512];
        const char *groups[1] = {o->group};
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_AdminOptions_t *aopts =
                rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS);
        rd_kafka_event_t *ev;
        int rc = 1;

        rd_kafka_AdminOptions_set_request_timeout(aopts, 5000, errstr, sizeof(errstr));
        rd_kafka_DescribeConsumerGroups(rk, groups, 1, aopts, q);
        ev = rd_kafka_queue_poll(q, 10000);
        if (ev && !rd_kafka_event_error(ev)) {
                size_t cnt = 0;
                const rd_kafka_ConsumerGroupDescription_t **gs =
                        rd_kafka_DescribeConsumerGroups_result_groups(
                                rd_kafka_event_DescribeConsumerGroups_result(ev), &cnt);
                if (cnt == 1 && !rd_kafka_ConsumerGroupDescription_error(gs[0])) {
                        *state = rd_kafka_ConsumerGroupDescription_state(gs[0]);
                        *assigned = 0;
                        for (size_t m = 0;
                             m < rd_kafka_ConsumerGroupDescription_member_count(gs[0]); m++) {
                                const rd_kafka_MemberAssignment_t *a =
                                        rd_kafka_MemberDescription_assignment(
                                                rd_kafka_ConsumerGroupDescription_member(gs[0], m));
                                const rd_kafka_topic_partition_list_t *parts =
                                        a ? rd_kafka_MemberAssignment_partitions(a) : NULL;
                                *assigned += parts ? parts->cnt : 0;
                        }
                        rc = 0;
                }
        }
        if (ev)
                rd_kafka_event_destroy(ev);
        rd_kafka_AdminOptions_destroy(aopts);
        rd_kafka_queue_destroy(q);
        return rc;
}

static int cmd_wait_group(const admin_opts_t *o) {
        long long deadline = now_ms() + o->timeout_ms;
        rd_kafka_consumer_group_state_t state = RD_KAFKA_CONSUMER_GROUP_STATE_UNKNOWN;
        int assigned = 0, rc = 1;
        rd_kafka_t *rk;

        if (!o->group) {
                fprintf(stderr, "af-kafka-admin: wait-group needs --group\n");
                return 2;
        }
        if (!(rk = client_new(o)))
                return 1;
        if (wait_metadata(rk, o, deadline))
                goto out;
        while (now_ms() < deadline) {
                if (!describe_group(rk, o, &state, &assigned) &&
                    state == RD_KAFKA_CONSUMER_GROUP_STATE_STABLE && assigned == o->partitions) {
                        rc = 0;
                        goto out;
                }
                struct timespec ts = {0, 200 * 1000000L};
                nanosleep(&ts, NULL);
        }
        fprintf(stderr, "af-kafka-admin: group %s: %s, %d of %d partitions assigned after %d ms\n",
                o->group, rd_kafka_consumer_group_state_name(state), assigned, o->partitions,
                o->timeout_ms);
out:
        rd_kafka_destroy(rk);
        return rc;
}

static int cmd_list_topics(const admin_opts_t *o) {
        long long deadline = now_ms() + o->timeout_ms;
        const struct rd_kafka_metadata *md = NULL;
        int rc = 1;
        rd_kafka_t *rk = client_new(o);
        if (!rk)
                goto out;
        if (wait_metadata(rk, o, deadline))
                goto out;
        rd_kafka_resp_err_t err =
                rd_kafka_metadata(rk, 1 /*all topics*/, NULL, &md, AF_ADMIN_OP_TIMEOUT_MS);
        if (err) {
                fprintf(stderr, "af-kafka-admin: metadata: %s\n", rd_kafka_err2str(err));
                goto out;
        }
        for (int i = 0; i < md->topic_cnt; i++)
                printf("%s\t%d\n", md->topics[i].topic, md->topics[i].partition_cnt);
        rc = 0;
out:
        if (md)
                rd_kafka_metadata_destroy(md);
        if (rk)
                rd_kafka_destroy(rk);
        return rc;
}

/* Parse a positive int option value; @returns -1 when it is not one. */
static int parse_pos_int(const char *s) {
        char *end = NULL;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end || v <= 0 || v > 1000000)
                return -1;
        return (int) v;
}

int main(int argc, char **argv) {
        admin_opts_t o = {
                .prefix = "agentfleet.", .partitions = 6, .replication = 1, .timeout_ms = 30000};
        int i;

        if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
                usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? 2 : 0;
        }
        o.cmd = argv[1];
        for (i = 2; i < argc; i++) {
                const char *a = argv[i];
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                int *intp = NULL;
                if (!strcmp(a, "-v")) {
                        o.verbose = 1;
                        continue;
                }
                if (!v) {
                        fprintf(stderr, "af-kafka-admin: %s needs a value\n", a);
                        return 2;
                }
                if (!strcmp(a, "--bootstrap"))
                        o.bootstrap = v;
                else if (!strcmp(a, "--prefix")) {
                        o.prefix = v;
                        o.prefix_given = 1;
                } else if (!strcmp(a, "--group"))
                        o.group = v;
                else if (!strcmp(a, "--partitions"))
                        intp = &o.partitions;
                else if (!strcmp(a, "--replication"))
                        intp = &o.replication;
                else if (!strcmp(a, "--timeout-ms"))
                        intp = &o.timeout_ms;
                else {
                        fprintf(stderr, "af-kafka-admin: unknown option %s\n", a);
                        usage(stderr);
                        return 2;
                }
                if (intp && (*intp = parse_pos_int(v)) < 0) {
                        fprintf(stderr,
                                "af-kafka-admin: %s: expected a positive integer, got "
                                "\"%s\"\n",
                                a, v);
                        return 2;
                }
                i++;
        }
        if (!o.bootstrap) {
                fprintf(stderr, "af-kafka-admin: --bootstrap is required\n");
                return 2;
        }
        if (!strcmp(o.cmd, "wait"))
                return cmd_wait(&o);
        if (!strcmp(o.cmd, "create-topics"))
                return cmd_create_topics(&o);
        if (!strcmp(o.cmd, "delete-topics"))
                return cmd_delete_topics(&o);
        if (!strcmp(o.cmd, "list-topics"))
                return cmd_list_topics(&o);
        if (!strcmp(o.cmd, "wait-group"))
                return cmd_wait_group(&o);
        fprintf(stderr, "af-kafka-admin: unknown command %s\n", o.cmd);
        usage(stderr);
        return 2;
}
