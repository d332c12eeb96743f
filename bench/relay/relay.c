/*
 * af-relay: the ceiling for bench/run. A raw librdkafka relay that consumes the same Task
 * messages the workers consume and produces one TaskResult each, with no Redis, no HTTP and no
 * work: what Kafka alone allows on this machine with the same client library, message sizes,
 * acks=all and idempotence. agentfleet's end-to-end throughput is reported as a ratio of this.
 *
 * It deliberately does not use libcommon's loop or kafka module (a plain poll loop is the
 * fastest way to drive librdkafka), only the generated wire code, so the ceiling is honest.
 *
 *   af-relay --bootstrap HOST:PORT --prefix P --lane L [--group G] [--seconds S]
 */
#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agentfleet/v1/result.pb-c.h"
#include "agentfleet/v1/task.pb-c.h"

static volatile sig_atomic_t run = 1;

static void stop(int sig) {
        run = 0;
}

static void conf_set(rd_kafka_conf_t *conf, const char *k, const char *v) {
        char errstr[256];
        if (rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
                fprintf(stderr, "af-relay: %s=%s: %s\n", k, v, errstr);
                exit(2);
        }
}

static void usage(void) {
        fprintf(stderr, "usage: af-relay --bootstrap HOST:PORT --prefix P --lane L "
                        "[--group G] [--seconds S]\n");
        exit(2);
}

int main(int argc, char **argv) {
        const char *bootstrap = NULL, *prefix = "agentfleet.", *lane = "default";
        const char *group = "af-relay";
        int seconds = 0;
        static const struct option opts[] = {
                {"bootstrap", required_argument, NULL, 'b'},
                {"prefix", required_argument, NULL, 'p'},
                {"lane", required_argument, NULL, 'l'},
                {"group", required_argument, NULL, 'g'},
                {"seconds", required_argument, NULL, 's'},
                {NULL, 0, NULL, 0},
        };
        int c;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                switch (c) {
                case 'b':
                        bootstrap = optarg;
                        break;
                case 'p':
                        prefix = optarg;
                        break;
                case 'l':
                        lane = optarg;
                        break;
                case 'g':
                        group = optarg;
                        break;
                case 's':
                        seconds = atoi(optarg);
                        break;
                default:
                        usage();
                }
        }
        if (!bootstrap)
                usage();
        signal(SIGINT, stop);
        signal(SIGTERM, stop);

        char errstr[512], tasks_topic[256], results_topic[256];
        snprintf(tasks_topic, sizeof(tasks_topic), "%stasks.%s", prefix, lane);
        snprintf(results_topic, sizeof(results_topic), "%sresults", prefix);

        /* Producer: the same delivery guarantees as agentfleet's (idempotent, acks=all). */
        rd_kafka_conf_t *pconf = rd_kafka_conf_new();
        conf_set(pconf, "bootstrap.servers", bootstrap);
        conf_set(pconf, "enable.idempotence", "true");
        conf_set(pconf, "linger.ms", "5");
        conf_set(pconf, "compression.type", "lz4");
        rd_kafka_t *prk = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, errstr, sizeof(errstr));
        if (!prk) {
                fprintf(stderr, "af-relay: producer: %s\n", errstr);
                return 1;
        }

        rd_kafka_conf_t *cconf = rd_kafka_conf_new();
        conf_set(cconf, "bootstrap.servers", bootstrap);
        conf_set(cconf, "group.id", group);
        conf_set(cconf, "auto.offset.reset", "earliest");
        conf_set(cconf, "session.timeout.ms", "10000");
        rd_kafka_t *crk = rd_kafka_new(RD_KAFKA_CONSUMER, cconf, errstr, sizeof(errstr));
        if (!crk) {
                fprintf(stderr, "af-relay: consumer: %s\n", errstr);
                return 1;
        }
        rd_kafka_poll_set_consumer(crk);
        rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(subs, tasks_topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_subscribe(crk, subs);
        rd_kafka_topic_partition_list_destroy(subs);

        time_t deadline = seconds > 0 ? time(NULL) + seconds : 0;
        long relayed = 0, bad = 0;
        uint8_t out[4096];
        while (run && (!deadline || time(NULL) < deadline)) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(crk, 100);
                rd_kafka_poll(prk, 0);
                if (!m)
                        continue;
                if (m->err) {
                        rd_kafka_message_destroy(m);
                        continue;
                }
                Agentfleet__V1__Task *task = agentfleet__v1__task__unpack(NULL, m->len, m->payload);
                if (!task) {
                        bad++;
                        rd_kafka_message_destroy(m);
                        continue;
                }
                Agentfleet__V1__TaskResult res = AGENTFLEET__V1__TASK_RESULT__INIT;
                res.task_id = task->id;
                res.status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED;
                res.output = "{}";
                res.attempt = task->attempt;
                res.idempotency_key = task->idempotency_key;
                res.type = task->type;
                res.tenant = task->tenant;
                res.worker_id = "af-relay";
                size_t len = agentfleet__v1__task_result__get_packed_size(&res);
                if (len <= sizeof(out)) {
                        agentfleet__v1__task_result__pack(&res, out);
                        while (rd_kafka_producev(prk, RD_KAFKA_V_TOPIC(results_topic),
                                                 RD_KAFKA_V_KEY(task->id, strlen(task->id)),
                                                 RD_KAFKA_V_VALUE(out, len),
                                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                                 RD_KAFKA_V_HEADER("content-type",
                                                                   "application/x-protobuf", -1),
                                                 RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                                rd_kafka_poll(prk, 10);
                        relayed++;
                }
                agentfleet__v1__task__free_unpacked(task, NULL);
                rd_kafka_message_destroy(m);
        }
        rd_kafka_flush(prk, 10000);
        rd_kafka_consumer_close(crk);
        rd_kafka_destroy(crk);
        rd_kafka_destroy(prk);
        fprintf(stderr, "{\"relayed\":%ld,\"undecodable\":%ld}\n", relayed, bad);
        return 0;
}
