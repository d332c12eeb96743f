/*
 * drive_results: the results side of `agentfleet drive` — a private consumer group on the
 * `results` topic that follows every task of the run to its final result.
 *
 * The group starts at the topic's end as it was before the first submission: its offsets
 * are committed at the partitions' high watermarks before it subscribes, so no result of the
 * run can be missed (as `auto.offset.reset=latest` could, racing the first results) and no
 * history is read (which would delay, and so inflate, the measured latencies).
 *
 * A result belongs to the run when its idempotency key is one of ours ("drv-<run>-<index>",
 * which names the task directly) or its task id was answered by the API. A task's first
 * final result is recorded; the same result seen again (a redelivered, already-finished task
 * re-emits its stored result) is counted apart, and a *different* second final result (two
 * executions) is a duplicate result — which must not happen. waiting_approval ends a task for
 * the driver (nobody approves during a run), yet may still be followed by its real end.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agentfleet/v1/result.pb-c.h"
#include "log.h"

#include "drive.h"

/* ---- starting at the end ------------------------------------------------------------------- */

static void set_kafka_cb(const char *key, const char *value, void *opaque) {
        char errstr[256];
        /* Producer-only keys given for the daemons are harmless to skip here. */
        if (rd_kafka_conf_set(opaque, key, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
                af_debug("drive: kafka.%s not applied to the offset setter: %s", key, errstr);
}

af_err_t drive_results_start_at_end(drive_t *d, const char *group_id, char *errstr,
                                    size_t errstr_size) {
        rd_kafka_conf_t *kc = rd_kafka_conf_new();
        rd_kafka_t *rk = NULL;
        rd_kafka_topic_t *rkt = NULL;
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_topic_partition_list_t *parts = NULL;
        rd_kafka_resp_err_t kerr;
        char kerrstr[512];
        af_err_t err = AF_ERR_UNAVAILABLE;
        const char *bootstrap = af_config_str(d->cli->conf, "kafka.bootstrap.servers");

        if (bootstrap)
                rd_kafka_conf_set(kc, "bootstrap.servers", bootstrap, NULL, 0);
        af_config_kafka_foreach(d->cli->conf, set_kafka_cb, kc);
        if (rd_kafka_conf_set(kc, "group.id", group_id, kerrstr, sizeof(kerrstr)) ||
            rd_kafka_conf_set(kc, "enable.auto.commit", "false", kerrstr, sizeof(kerrstr))) {
                rd_kafka_conf_destroy(kc);
                return af_errstr(AF_ERR_CONFIG, errstr, errstr_size, "kafka: %s", kerrstr);
        }
        rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, kerrstr, sizeof(kerrstr));
        if (!rk) {
                rd_kafka_conf_destroy(kc);
                return af_errstr(AF_ERR_CONFIG, errstr, errstr_size, "kafka: %s", kerrstr);
        }
        rkt = rd_kafka_topic_new(rk, d->results_topic, NULL);
        kerr = rd_kafka_metadata(rk, 0 /*this topic*/, rkt, &md, 10000);
        if (kerr) {
                af_errstr(err, errstr, errstr_size, "metadata of %s: %s", d->results_topic,
                          rd_kafka_err2str(kerr));
                goto out;
        }
        if (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt == 0) {
                af_errstr(AF_ERR_NOT_FOUND, errstr, errstr_size,
                          "topic %s does not exist (is topic.prefix right? are the topics "
                          "created?)%s%s",
                          d->results_topic, md->topic_cnt == 1 && md->topics[0].err ? ": " : "",
                          md->topic_cnt == 1 && md->topics[0].err
                                  ? rd_kafka_err2str(md->topics[0].err)
                                  : "");
                err = AF_ERR_NOT_FOUND;
                goto out;
        }
        parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
        for (int i = 0; i < md->topics[0].partition_cnt; i++) {
                int32_t p = md->topics[0].partitions[i].id;
                int64_t lo = 0, hi = 0;
                /* A topic created a moment ago may still answer "not leader": retry those
                 * for a while rather than fail the run. */
                for (int tries = 0; tries < 50; tries++) {
                        kerr = rd_kafka_query_watermark_offsets(rk, d->results_topic, p, &lo, &hi,
                                                                10000);
                        if (kerr != RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION &&
                            kerr != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE &&
                            kerr != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
                                break;
                        usleep(200 * 1000);
                }
                if (kerr) {
                        af_errstr(err, errstr, errstr_size, "end offset of %s [%d]: %s",
                                  d->results_topic, (int) p, rd_kafka_err2str(kerr));
                        goto out;
                }
                rd_kafka_topic_partition_list_add(parts, d->results_topic, p)->offset = hi;
        }
        kerr = rd_kafka_commit(rk, parts, 0 /*sync*/);
        if (kerr) {
                af_errstr(err, errstr, errstr_size, "committing start offsets for %s: %s", group_id,
                          rd_kafka_err2str(kerr));
                goto out;
        }
        err = AF_OK;
out:
        if (parts)
                rd_kafka_topic_partition_list_destroy(parts);
        if (md)
                rd_kafka_metadata_destroy(md);
        if (rkt)
                rd_kafka_topic_destroy(rkt);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        return err;
}

/* ---- tracking ------------------------------------------------------------------------------ */

void drive_results_note_id(drive_t *d, int64_t idx, const char *task_id) {
        snprintf(d->tasks[idx].task_id, sizeof(d->tasks[idx].task_id), "%s", task_id);
        json_object_set_new(d->by_id, task_id, json_integer(idx));
}

/* @returns the index of the task a result belongs to, or -1 when it is not ours. */
static int64_t result_task(const drive_t *d, const char *idem, const char *task_id) {
        char prefix[32];
        size_t n = (size_t) snprintf(prefix, sizeof(prefix), "drv-%s-", d->run_tag);
        json_t *v;

        if (idem && !strncmp(idem, prefix, n)) {
                char *end;
                long long idx = strtoll(idem + n, &end, 10);
                if (!*end && idx >= 0 && idx < d->o.tasks)
                        return idx;
        }
        if (task_id && *task_id && (v = json_object_get(d->by_id, task_id)))
                return json_integer_value(v);
        return -1;
}

/* The fields the driver needs from one result, whatever its encoding. */
typedef struct result_view_s {
        const char *task_id, *idem;
        af_cli_status_t st;
        int64_t fence;
        int64_t prompt_tokens, completion_tokens, cost_micros;
} result_view_t;

static void result_apply(drive_t *d, const result_view_t *r) {
        int64_t idx = result_task(d, r->idem, r->task_id);
        drive_task_t *t;

        if (idx < 0) {
                d->foreign_results++;
                return;
        }
        t = &d->tasks[idx];
        if (!t->task_id[0] && r->task_id && *r->task_id)
                snprintf(t->task_id, sizeof(t->task_id), "%s", r->task_id);
        if (!af_cli_status_is_final(r->st) && r->st != AF_CLI_ST_WAITING_APPROVAL)
                return; /* queued, running, retrying: not an end */

        if (!t->final_st) {
                t->final_st = (uint8_t) r->st;
                t->fence = r->fence;
                t->final_us = drive_now_us();
                d->last_final_us = t->final_us;
                d->finals++;
                d->prompt_tokens += r->prompt_tokens;
                d->completion_tokens += r->completion_tokens;
                d->cost_micros += r->cost_micros;
                drive_on_final(d);
        } else if (t->final_st == AF_CLI_ST_WAITING_APPROVAL &&
                   r->st != AF_CLI_ST_WAITING_APPROVAL) {
                t->final_st = (uint8_t) r->st; /* released by an approval: its real end */
                t->fence = r->fence;
        } else if (t->final_st == r->st && t->fence == r->fence) {
                d->reemitted_results++;
        } else {
                d->duplicate_results++;
                af_warn("drive: task %s (%s) has a second final result: %s under fence %lld "
                        "after %s under fence %lld",
                        t->task_id[0] ? t->task_id : "?", r->idem ? r->idem : "",
                        af_cli_status_name(r->st), (long long) r->fence,
                        af_cli_status_name((af_cli_status_t) t->final_st), (long long) t->fence);
        }
}

static void consume_json(drive_t *d, const af_kafka_msg_t *msg) {
        json_t *j = json_loadb(msg->value, msg->value_len, 0, NULL);
        json_t *usage = json_object_get(j, "usage");
        result_view_t r = {0};

        if (!json_is_object(j)) {
                d->undecodable++;
                json_decref(j);
                return;
        }
        r.task_id = json_string_value(json_object_get(j, "task_id"));
        r.idem = json_string_value(json_object_get(j, "idempotency_key"));
        r.st = af_cli_status_parse(json_string_value(json_object_get(j, "status")));
        r.fence = json_integer_value(json_object_get(j, "fence"));
        r.prompt_tokens = json_integer_value(json_object_get(usage, "prompt_tokens"));
        r.completion_tokens = json_integer_value(json_object_get(usage, "completion_tokens"));
        r.cost_micros = json_integer_value(json_object_get(usage, "cost_micros"));
        result_apply(d, &r);
        json_decref(j);
}

static void consume_cb(af_consumer_t *c, const af_kafka_msg_t *msg, void *opaque) {
        drive_t *d = opaque;
        Agentfleet__V1__TaskResult *res;
        result_view_t r = {0};
        size_t ct_len = 0;
        const char *ct = af_kafka_msg_header(msg, "content-type", &ct_len);

        if (!msg->value)
                return; /* a tombstone: the compacted topic forgetting a task */
        if (ct && ct_len >= 16 && !strncmp(ct, "application/json", 16)) {
                consume_json(d, msg);
                return;
        }
        res = agentfleet__v1__task_result__unpack(NULL, msg->value_len, msg->value);
        if (!res) {
                d->undecodable++;
                return;
        }
        r.task_id = res->task_id;
        r.idem = res->idempotency_key;
        r.st = af_cli_status_from_proto((int) res->status);
        r.fence = res->fence;
        if (res->usage) {
                r.prompt_tokens = res->usage->prompt_tokens;
                r.completion_tokens = res->usage->completion_tokens;
                r.cost_micros = res->usage->cost_micros;
        }
        result_apply(d, &r);
        agentfleet__v1__task_result__free_unpacked(res, NULL);
}

static void rebalance_cb(af_consumer_t *c, bool assigned,
                         const rd_kafka_topic_partition_list_t *parts, void *opaque) {
        drive_t *d = opaque;

        af_debug("drive: results partitions %s (%d)", assigned ? "assigned" : "revoked",
                 parts ? parts->cnt : 0);
        if (assigned && !d->assigned) {
                d->assigned = true;
                if (!d->start_us)
                        af_loop_stop(d->cli->loop); /* the run may begin */
        }
}

af_err_t drive_results_subscribe(drive_t *d, const char *group_id, char *errstr,
                                 size_t errstr_size) {
        const char *topics[1] = {d->results_topic};

        d->consumer = af_consumer_new(d->cli->loop, d->cli->conf, group_id, topics, 1, consume_cb,
                                      rebalance_cb, d, errstr, errstr_size);
        return d->consumer ? AF_OK : AF_ERR_UNAVAILABLE;
}
