/*
 * consume: the worker's first stage. The consumer on tasks.<lane> (one per worker.lanes
 * entry, one consumer group) hands every message here; a valid Task becomes one af_wtask_t
 * that enters the lease stage, a message that is not a valid Task is dead-lettered (its
 * offset counts as done once the dead letter is acknowledged). In-flight tasks are counted
 * and the consumer is held at worker.concurrency, so a burst on the topic never becomes a
 * burst of memory; each task's offset is tracked by the watermark (libcommon/watermark.c) and
 * stored only when every earlier offset of its partition is done.
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "worker.h"

/* Done-but-uncommittable offsets (a slow task at the head of a partition) also cost memory:
 * past this many per allowed in-flight task the consumer is held too. */
#define CONSUME_PENDING_FACTOR 16

static int consume_topic_idx(af_worker_t *w, const char *topic) {
        for (size_t i = 0; i < w->topic_cnt; i++)
                if (!strcmp(w->topics[i], topic))
                        return (int) i;
        return -1;
}

void af_consume_update_hold(af_worker_t *w) {
        bool hold =
                w->draining || w->in_flight >= w->concurrency ||
                af_watermark_pending(w->wm) >= (size_t) (w->concurrency * CONSUME_PENDING_FACTOR);
        if (hold != w->held && w->consumer) {
                af_consumer_hold(w->consumer, hold);
                w->held = hold;
                af_debug("consumer %s (in flight %lld)", hold ? "held" : "resumed",
                         (long long) w->in_flight);
        }
}

/* Mark one offset done and store the new watermark if it moved. */
static void consume_offset_done(af_worker_t *w, int topic_idx, int32_t partition, uint32_t epoch,
                                int64_t offset) {
        int64_t next = af_watermark_done(w->wm, topic_idx, partition, epoch, offset);
        if (next >= 0 && w->consumer) {
                af_err_t err = af_consumer_store_offset(w->consumer, w->topics[topic_idx],
                                                        partition, next);
                if (err && err != AF_ERR_STATE)
                        af_warn("storing offset %lld of %s[%d]: %s", (long long) next,
                                w->topics[topic_idx], (int) partition, af_err2str(err));
        }
}

/* Dead letters use the same accounting as tasks (emit.c calls this on their ack). */
void af_consume_dead_letter_done(af_worker_t *w, int topic_idx, int32_t partition, uint32_t epoch,
                                 int64_t offset) {
        consume_offset_done(w, topic_idx, partition, epoch, offset);
        af_consume_update_hold(w);
}

void af_wtask_retire(af_wtask_t *t, bool done) {
        af_worker_t *w = t->w;

        /* A produced message's delivery report still points at t: wait for it. */
        if (t->pending_acks > 0) {
                t->retiring = true;
                t->retire_done = done;
                return;
        }

        if (done)
                consume_offset_done(w, t->topic_idx, t->partition, t->epoch, t->offset);
        TAILQ_REMOVE(&w->tasks, t, link);
        w->in_flight--;
        af_timer_destroy(t->timer);
        af_timer_destroy(t->renew_timer);
        af_agent_run_free(t->agent);
        json_decref(t->payload);
        free(t->output);
        free(t->result);
        if (t->task)
                agentfleet__v1__task__free_unpacked(t->task, NULL);
        af_worker_catalog_unref(t->wcat);
        free(t);
        af_consume_update_hold(w);
        af_drain_check(w);
}

/* @returns NULL when task is acceptable, else a static reason for the dead letter. */
static const char *consume_validate(const Agentfleet__V1__Task *task) {
        if (!task->id || !*task->id)
                return "Task.id is empty";
        if (strlen(task->id) >= sizeof(((af_lease_t *) 0)->task_id))
                return "Task.id is longer than 63 bytes";
        if (!task->type || !*task->type)
                return "Task.type is empty";
        if (!task->payload || !*task->payload)
                return "Task.payload is empty (a JSON value is required)";
        return NULL;
}

void af_consume_on_message(af_consumer_t *c, const af_kafka_msg_t *msg, void *opaque) {
        af_worker_t *w = opaque;
        int topic_idx = consume_topic_idx(w, msg->topic);
        uint32_t epoch = 0;
        Agentfleet__V1__Task *task = NULL;
        af_wtask_t *t = NULL;
        const char *reason = NULL;
        char why[256];
        af_err_t err;

        if (topic_idx < 0) {
                af_warn("message from unexpected topic %s ignored", msg->topic);
                goto out;
        }
        err = af_watermark_track(w->wm, topic_idx, msg->partition, msg->offset, &epoch);
        if (err == AF_ERR_INVALID) {
                /* Delivered again while the first delivery is still in flight here. */
                af_debug("%s[%d]@%lld already in flight", msg->topic, (int) msg->partition,
                         (long long) msg->offset);
                goto out;
        } else if (err) {
                af_error("tracking %s[%d]@%lld: %s", msg->topic, (int) msg->partition,
                         (long long) msg->offset, af_err2str(err));
                goto out;
        }
        task = agentfleet__v1__task__unpack(NULL, msg->value_len, msg->value);
        if (!task) {
                snprintf(why, sizeof(why),
                         "not a valid agentfleet.v1.Task protobuf (%zu bytes) at %s[%d]@%lld",
                         msg->value_len, msg->topic, (int) msg->partition, (long long) msg->offset);
                af_emit_dead_letter(w, msg, topic_idx, epoch, NULL, why);
                goto out;
        }
        reason = consume_validate(task);
        if (reason) {
                af_emit_dead_letter(w, msg, topic_idx, epoch, task->id, reason);
                goto out;
        }
        t = calloc(1, sizeof(*t));
        if (!t) {
                af_error("out of memory for task %s", task->id);
                goto out;
        }
        t->w = w;
        t->task = task;
        task = NULL;
        t->topic_idx = topic_idx;
        t->partition = msg->partition;
        t->offset = msg->offset;
        t->epoch = epoch;
        t->wcat = af_worker_catalog_ref(w);
        t->type = af_catalog_task_type(t->wcat->cat, t->task->type);
        TAILQ_INSERT_TAIL(&w->tasks, t, link);
        w->in_flight++;
        af_consume_update_hold(w);
        af_log_task(AF_LOG_DEBUG, t->task->id, t->task->traceparent, "task %s from %s[%d]@%lld",
                    t->task->type, msg->topic, (int) msg->partition, (long long) msg->offset);
        af_lease_stage_start(t);
out:
        if (task)
                agentfleet__v1__task__free_unpacked(task, NULL);
}

void af_consume_on_rebalance(af_consumer_t *c, bool assigned,
                             const rd_kafka_topic_partition_list_t *parts, void *opaque) {
        af_worker_t *w = opaque;

        for (int i = 0; parts && i < parts->cnt; i++) {
                int topic_idx = consume_topic_idx(w, parts->elems[i].topic);
                if (topic_idx < 0)
                        continue;
                if (assigned)
                        af_watermark_assign(w->wm, topic_idx, parts->elems[i].partition);
                else
                        af_watermark_revoke(w->wm, topic_idx, parts->elems[i].partition);
        }
        /* The cooperative assignor hands partitions over in steps: say where each leaves us. */
        w->partitions_owned += (assigned ? 1 : -1) * (parts ? parts->cnt : 0);
        af_info("partitions %s: %d (now %d)", assigned ? "assigned" : "revoked",
                parts ? parts->cnt : 0, w->partitions_owned);
        af_emit_lifecycle(w, AGENTFLEET__V1__LIFECYCLE_KIND__LIFECYCLE_KIND_REBALANCE, NULL, NULL,
                          assigned ? "partitions assigned" : "partitions revoked");
        af_consume_update_hold(w);
}
