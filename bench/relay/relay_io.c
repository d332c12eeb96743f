/*
 * af-relay-io: the second ceiling of bench/run, (a'). Per task it does the same external I/O
 * as an agentfleet-worker running the no-op integration, through the same libcommon pieces
 * (one libevent loop, the Kafka consumer and idempotent producer with their default
 * settings, async Redis, the curl-multi HTTP client), and none of the orchestration. So
 * (b) / (a') measures what agentfleet's own logic costs, where (b) / (a) also counts the I/O.
 *
 * Per Task consumed from <prefix>tasks.<lane>, in order:
 *   1. Redis  SET af:{<task id>}:relay <token> NX PX 60000   (the worker: a Lua lease script)
 *   2. HTTP   POST the payload to --url, Idempotency-Key: <task id>
 *   3. Redis  DEL af:{<task id>}:relay                        (the worker: a Lua finish script)
 *   4. Kafka  a TaskResult (SUCCEEDED, output = the response body; FAILED when the call
 *             failed) to <prefix>results,
 * and three AuditEvents with plain fields, no hash chain and no HMAC, to <prefix>audit, at
 * the worker's moments: after 1 (lease.acquired), after 2 (handler.call) and with 4
 * (task.result), so the producer batches them as it batches the worker's. All are keyed by
 * task id.
 * Offsets are handled as the worker handles them, with libcommon's watermark: one counts as
 * done when its four messages are acknowledged, is stored at the partition's contiguous
 * watermark and committed by the consumer's auto-commit and on close.
 *
 * Left out on purpose: catalog, templates, fencing and renewal of the lease, cancel, the
 * done record and re-emission, time budgets, dead letters, metrics, the audit chain. A
 * failed Redis command or a full producer queue is tried again after a short pause; a nil
 * SET (the key held) is not arbitrated: the relay goes on, the I/O being the same.
 *
 *   af-relay-io --bootstrap HOST:PORT --url URL [--prefix P] [--lane L] [--group G]
 *               [--redis-host H] [--redis-port N] [--concurrency N] [--set name=value]...
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include "agentfleet/v1/audit.pb-c.h"
#include "agentfleet/v1/result.pb-c.h"
#include "agentfleet/v1/task.pb-c.h"
#include "clock.h"
#include "config.h"
#include "http_client.h"
#include "ids.h"
#include "kafka.h"
#include "log.h"
#include "loop.h"
#include "redis.h"
#include "watermark.h"

#define RIO_TASK_ID_MAX    63      /* as the worker validates it */
#define RIO_KEY_TTL_MS     "60000" /* PX of the SET */
#define RIO_RETRY_MS       250     /* after a Redis error or a full producer queue */
#define RIO_RESEND_MS      1000    /* after a result that was not delivered */
#define RIO_STOP_MS        10000   /* SIGTERM: how long in-flight tasks may still take */
#define RIO_FLUSH_MS       10000
#define RIO_AUDITS         3
#define RIO_PENDING_FACTOR 16 /* hold the consumer past concurrency x this uncommittable */

typedef struct rio_s rio_t;

/* What a task waits for; a retry runs that step again. */
typedef enum {
        RIO_SET = 0, /* the SET NX */
        RIO_CALL,    /* the HTTP POST */
        RIO_DEL,     /* the DEL */
        RIO_EMIT,    /* the four messages and their acknowledgements */
} rio_step_t;

/* One task in flight. */
typedef struct rio_task_s {
        TAILQ_ENTRY(rio_task_s) link;
        rio_t *r;
        Agentfleet__V1__Task *task; /* owned, decoded from the message */
        int32_t partition;
        int64_t offset;
        uint32_t epoch; /* af_watermark epoch of the partition */
        rio_step_t step;
        char key[RIO_TASK_ID_MAX + 16]; /* af:{<task id>}:relay */
        char token[AF_ULID_LEN + 1];
        af_timer_t *timer;             /* retries; created on first need */
        int64_t started_wall_ms;       /* unix ms, message received */
        int64_t lap_us;                /* monotonic us when the current step started */
        int64_t step_us[RIO_EMIT + 1]; /* time spent in each step so far (us) */
        af_error_t error;              /* the call's failure, if any */
        char *output;                  /* the response body (owned), when it succeeded */
        uint8_t *result;               /* encoded TaskResult (owned) */
        size_t result_len;
        bool result_queued; /* accepted by the producer (its report may be pending) */
        bool result_acked;
        int audits_queued; /* audit events accepted by the producer, 0..RIO_AUDITS */
        int pending_acks;  /* accepted messages whose report has not come */
} rio_task_t;

TAILQ_HEAD(rio_task_list_s, rio_task_s);

struct rio_s {
        af_loop_t *loop;
        af_config_t *conf;
        af_producer_t *producer;
        af_consumer_t *consumer;
        af_redis_t *redis;
        af_http_client_t *http;
        af_watermark_t *wm;
        char tasks_topic[256];
        char results_topic[256];
        char audit_topic[256];
        const char *url;
        char actor[128]; /* "relay-io:<host>-<pid>": worker_id of results, actor of events */
        int64_t concurrency;
        struct rio_task_list_s tasks;
        int64_t in_flight;
        uint64_t audit_seq;
        bool held;     /* consumer held */
        bool stopping; /* SIGTERM/SIGINT: no new tasks */
        bool stopped;  /* finishing: callbacks start nothing new */
        af_timer_t *stop_timer;
        af_timer_t *finish_timer;
        uint64_t n_succeeded, n_failed, n_undecodable, n_redelivered;
        int64_t step_us[RIO_EMIT + 1]; /* time in each step, summed over tasks done (us) */
};

static void rio_set(rio_task_t *t);
static void rio_call(rio_task_t *t);
static void rio_del(rio_task_t *t);
static void rio_emit(rio_task_t *t);
static void rio_stop_check(rio_t *r);
static void rio_audit_upto(rio_task_t *t, int n);

/* ---- in-flight accounting -------------------------------------------------------------------- */

static void rio_update_hold(rio_t *r) {
        bool hold = r->stopping || r->in_flight >= r->concurrency ||
                    af_watermark_pending(r->wm) >= (size_t) (r->concurrency * RIO_PENDING_FACTOR);
        if (hold != r->held && r->consumer) {
                af_consumer_hold(r->consumer, hold);
                r->held = hold;
        }
}

/* The current step of t is over: add its time to the step's total (retries included). */
static void rio_lap(rio_task_t *t) {
        int64_t now = af_clock_mono_us();
        t->step_us[t->step] += now - t->lap_us;
        t->lap_us = now;
}

/* Mark one offset done and store the new watermark if it moved. */
static void rio_offset_done(rio_t *r, int32_t partition, uint32_t epoch, int64_t offset) {
        int64_t next = af_watermark_done(r->wm, 0, partition, epoch, offset);
        if (next >= 0 && r->consumer) {
                af_err_t err =
                        af_consumer_store_offset(r->consumer, r->tasks_topic, partition, next);
                if (err && err != AF_ERR_STATE)
                        af_warn("storing offset %" PRId64 " of %s[%d]: %s", next, r->tasks_topic,
                                (int) partition, af_err2str(err));
        }
}

/* The task left: count it, mark its offset done if `done`, free it. */
static void rio_retire(rio_task_t *t, bool done) {
        rio_t *r = t->r;

        if (done) {
                if (t->error.err)
                        r->n_failed++;
                else
                        r->n_succeeded++;
                rio_offset_done(r, t->partition, t->epoch, t->offset);
                for (int i = 0; i <= RIO_EMIT; i++)
                        r->step_us[i] += t->step_us[i];
        }
        TAILQ_REMOVE(&r->tasks, t, link);
        r->in_flight--;
        af_timer_destroy(t->timer);
        free(t->output);
        free(t->result);
        agentfleet__v1__task__free_unpacked(t->task, NULL);
        free(t);
        rio_update_hold(r);
        rio_stop_check(r);
}

static void rio_timer_cb(void *opaque) {
        rio_task_t *t = opaque;

        if (t->r->stopped)
                return;
        switch (t->step) {
        case RIO_SET:
                rio_set(t);
                break;
        case RIO_CALL:
                rio_call(t);
                break;
        case RIO_DEL:
                rio_del(t);
                break;
        case RIO_EMIT:
                rio_emit(t);
                break;
        }
}

/* Run t's current step again after ms. */
static void rio_later(rio_task_t *t, int64_t ms) {
        if (t->r->stopped)
                return;
        if (!t->timer)
                t->timer = af_timer_new(t->r->loop, rio_timer_cb, t);
        if (!t->timer) {
                af_error("task %s: out of memory for a timer: it stays in flight", t->task->id);
                return;
        }
        af_timer_start(t->timer, ms, false);
}

/* ---- Redis: SET NX at the start, DEL at the end ------------------------------------------ */

static void rio_on_set(af_redis_t *rd, const redisReply *reply, const af_error_t *err,
                       void *opaque) {
        rio_task_t *t = opaque;

        if (t->r->stopped)
                return;
        if (err->err) {
                af_warn("task %s: SET: %s", t->task->id, err->msg);
                rio_later(t, RIO_RETRY_MS);
                return;
        }
        /* A nil reply (the key is held) is not arbitrated here: see the top of this file. */
        rio_lap(t);
        rio_audit_upto(t, 1);
        rio_call(t);
}

static void rio_set(rio_task_t *t) {
        const char *argv[] = {"SET", t->key, t->token, "NX", "PX", RIO_KEY_TTL_MS};

        t->step = RIO_SET;
        af_redis_commandv(t->r->redis, rio_on_set, t, 6, argv, NULL);
}

static void rio_on_del(af_redis_t *rd, const redisReply *reply, const af_error_t *err,
                       void *opaque) {
        rio_task_t *t = opaque;

        if (t->r->stopped)
                return;
        if (err->err) {
                af_warn("task %s: DEL: %s", t->task->id, err->msg);
                rio_later(t, RIO_RETRY_MS);
                return;
        }
        rio_lap(t);
        rio_emit(t);
}

static void rio_del(rio_task_t *t) {
        const char *argv[] = {"DEL", t->key};

        t->step = RIO_DEL;
        af_redis_commandv(t->r->redis, rio_on_del, t, 2, argv, NULL);
}

/* ---- HTTP: the no-op call ------------------------------------------------------------------ */

static void rio_on_response(const af_http_response_t *resp, const af_error_t *err, void *opaque) {
        rio_task_t *t = opaque;

        if (t->r->stopped)
                return;
        /* Like the worker: a failed call ends the task FAILED, it is not retried here. */
        if (err->err) {
                t->error = *err;
        } else if (resp->status < 200 || resp->status >= 300) {
                af_error_set(&t->error, AF_ERR_UPSTREAM, "%s answered %d", t->r->url, resp->status);
                t->error.http_status = resp->status;
        } else if (!(t->output = strndup(resp->body, resp->body_len))) {
                af_error_set(&t->error, AF_ERR_NOMEM, "out of memory for the response");
        }
        rio_lap(t);
        rio_audit_upto(t, 2);
        rio_del(t);
}

static void rio_call(rio_task_t *t) {
        char idem[RIO_TASK_ID_MAX + 32];
        const char *headers[] = {"Content-Type: application/json", "Accept: application/json", idem,
                                 NULL};
        af_http_request_t req;
        af_err_t err;

        t->step = RIO_CALL;
        snprintf(idem, sizeof(idem), "Idempotency-Key: %s", t->task->id);
        memset(&req, 0, sizeof(req));
        req.method = "POST";
        req.url = t->r->url;
        req.headers = headers;
        req.body = t->task->payload;
        req.body_len = strlen(t->task->payload);
        err = af_http_client_send(t->r->http, &req, rio_on_response, t, NULL);
        if (err) {
                af_warn("task %s: request not sent: %s", t->task->id, af_err2str(err));
                rio_later(t, RIO_RETRY_MS);
        }
}

/* ---- Kafka: one TaskResult and three AuditEvents ------------------------------------------ */

/* Encode t's TaskResult into t->result. @returns AF_OK or AF_ERR_NOMEM. */
static af_err_t rio_encode_result(rio_task_t *t) {
        const Agentfleet__V1__Task *task = t->task;
        Agentfleet__V1__TaskResult res = AGENTFLEET__V1__TASK_RESULT__INIT;
        Agentfleet__V1__Error e = AGENTFLEET__V1__ERROR__INIT;
        Agentfleet__V1__Timings tm = AGENTFLEET__V1__TIMINGS__INIT;

        res.task_id = task->id;
        res.attempt = task->attempt;
        res.worker_id = t->r->actor;
        res.type = task->type;
        res.tenant = task->tenant;
        res.principal = task->principal;
        res.case_key = task->case_key;
        res.idempotency_key = task->idempotency_key;
        res.traceparent = task->traceparent;
        res.versions = task->versions;
        if (t->error.err) {
                res.status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED;
                e.code = (char *) af_err2code(t->error.err);
                e.message = t->error.msg;
                e.retriable = t->error.retriable;
                res.error = &e;
        } else {
                res.status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED;
                res.output = t->output;
        }
        tm.created_at_ms = task->created_at_ms;
        tm.started_at_ms = t->started_wall_ms;
        tm.finished_at_ms = af_clock_wall_ms();
        if (tm.created_at_ms)
                tm.queue_ms = tm.started_at_ms - tm.created_at_ms;
        tm.run_ms = tm.finished_at_ms - tm.started_at_ms;
        res.timings = &tm;
        t->result_len = agentfleet__v1__task_result__get_packed_size(&res);
        t->result = malloc(t->result_len ? t->result_len : 1);
        if (!t->result)
                return AF_ERR_NOMEM;
        agentfleet__v1__task_result__pack(&res, t->result);
        return AF_OK;
}

/* Produce one message of t keyed by its id, with the worker's headers.
 * @returns what af_producer_send returns (cb is called only on AF_OK). */
static af_err_t rio_send(rio_task_t *t, const char *topic, const void *val, size_t len,
                         af_delivery_cb_t *cb) {
        char errstr[256] = "";
        af_err_t err = af_producer_send_pb(t->r->producer, topic, t->task->id, val, len,
                                           t->task->traceparent, cb, t, errstr, sizeof(errstr));
        if (err && err != AF_ERR_UNAVAILABLE)
                af_warn("task %s: produce to %s: %s", t->task->id, topic, errstr);
        return err;
}

/* All of t's messages are acknowledged: its offset counts as done. */
static void rio_acked(rio_task_t *t) {
        if (t->pending_acks == 0 && t->result_acked && t->audits_queued == RIO_AUDITS) {
                rio_lap(t);
                rio_retire(t, true);
        }
}

static void rio_on_result(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                          void *opaque) {
        rio_task_t *t = opaque;

        t->pending_acks--;
        if (err) {
                /* The result is the task's record: sent again until Kafka has it. */
                af_warn("task %s: result not delivered (%s): sending again", t->task->id,
                        errstr ? errstr : af_err2str(err));
                t->result_queued = false;
                rio_later(t, RIO_RESEND_MS);
                return;
        }
        t->result_acked = true;
        rio_acked(t);
}

static void rio_on_audit(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                         void *opaque) {
        rio_task_t *t = opaque;

        t->pending_acks--;
        if (err)
                af_warn("task %s: audit event not delivered: %s", t->task->id,
                        errstr ? errstr : af_err2str(err));
        rio_acked(t);
}

/* Produce audit event i (0..RIO_AUDITS-1) of t: the fields the worker's events carry, with
 * details of about the same length, without prev_hash, chain_hash and hmac. */
static af_err_t rio_send_audit(rio_task_t *t, int i) {
        static const char *const actions[RIO_AUDITS] = {"lease.acquired", "handler.call",
                                                        "task.result"};
        const Agentfleet__V1__Task *task = t->task;
        Agentfleet__V1__AuditEvent ev = AGENTFLEET__V1__AUDIT_EVENT__INIT;
        char id[AF_ULID_LEN + 1];
        char details[192];
        uint8_t stack[2048];
        uint8_t *buf = stack;
        size_t len;
        af_err_t err;

        af_ulid_new(id);
        snprintf(details, sizeof(details),
                 "{\"kind\":\"integration\",\"target\":\"noop\",\"status\":%d,\"ms\":%" PRId64
                 ",\"error\":\"%s\"}",
                 t->error.err ? t->error.http_status : 200, af_clock_wall_ms() - t->started_wall_ms,
                 t->error.err ? af_err2code(t->error.err) : "");
        ev.id = id;
        ev.at_ms = af_clock_wall_ms();
        ev.actor = t->r->actor;
        ev.actor_kind = AGENTFLEET__V1__ACTOR_KIND__ACTOR_KIND_COMPONENT;
        ev.action = (char *) actions[i];
        ev.task_id = task->id;
        ev.tenant = task->tenant;
        ev.decision = (char *) (t->error.err ? "error" : "ok");
        ev.details = details;
        ev.emitter = t->r->actor;
        ev.seq = t->r->audit_seq + 1;
        ev.traceparent = task->traceparent;
        ev.versions = task->versions;
        len = agentfleet__v1__audit_event__get_packed_size(&ev);
        if (len > sizeof(stack) && !(buf = malloc(len)))
                return AF_ERR_NOMEM;
        agentfleet__v1__audit_event__pack(&ev, buf);
        err = rio_send(t, t->r->audit_topic, buf, len, rio_on_audit);
        if (!err)
                t->r->audit_seq++;
        if (buf != stack)
                free(buf);
        return err;
}

/* Produce t's audit events up to the n-th, on the way: one the producer does not accept now
 * (full queue) goes with the result (rio_emit). */
static void rio_audit_upto(rio_task_t *t, int n) {
        while (t->audits_queued < n && rio_send_audit(t, t->audits_queued) == AF_OK) {
                t->audits_queued++;
                t->pending_acks++;
        }
}

/* Produce what of t's four messages the producer has not accepted yet; a full queue or an
 * out-of-memory is tried again later. */
static void rio_emit(rio_task_t *t) {
        t->step = RIO_EMIT;
        if (!t->result && rio_encode_result(t)) {
                af_warn("task %s: out of memory for the result", t->task->id);
                goto later;
        }
        if (!t->result_queued) {
                if (rio_send(t, t->r->results_topic, t->result, t->result_len, rio_on_result))
                        goto later;
                t->result_queued = true;
                t->pending_acks++;
        }
        while (t->audits_queued < RIO_AUDITS) {
                if (rio_send_audit(t, t->audits_queued))
                        goto later;
                t->audits_queued++;
                t->pending_acks++;
        }
        return;
later:
        rio_later(t, RIO_RETRY_MS);
}

/* ---- consumer ------------------------------------------------------------------------------ */

static void rio_on_message(af_consumer_t *c, const af_kafka_msg_t *msg, void *opaque) {
        rio_t *r = opaque;
        Agentfleet__V1__Task *task = NULL;
        rio_task_t *t;
        uint32_t epoch = 0;
        af_err_t err;

        err = af_watermark_track(r->wm, 0, msg->partition, msg->offset, &epoch);
        if (err == AF_ERR_INVALID) {
                r->n_redelivered++; /* delivered again while the first is still here */
                return;
        } else if (err) {
                af_error("tracking %s[%d]@%" PRId64 ": %s", msg->topic, (int) msg->partition,
                         msg->offset, af_err2str(err));
                return;
        }
        task = agentfleet__v1__task__unpack(NULL, msg->value_len, msg->value);
        if (!task || !task->id || !*task->id || strlen(task->id) > RIO_TASK_ID_MAX ||
            !task->payload) {
                /* No dead letter here (relay.c skips them too): the offset is done at once. */
                r->n_undecodable++;
                if (task)
                        agentfleet__v1__task__free_unpacked(task, NULL);
                rio_offset_done(r, msg->partition, epoch, msg->offset);
                return;
        }
        if (!(t = calloc(1, sizeof(*t)))) {
                af_error("out of memory for task %s", task->id);
                agentfleet__v1__task__free_unpacked(task, NULL);
                return;
        }
        t->r = r;
        t->task = task;
        t->partition = msg->partition;
        t->offset = msg->offset;
        t->epoch = epoch;
        t->started_wall_ms = af_clock_wall_ms();
        t->lap_us = af_clock_mono_us();
        af_ulid_new(t->token);
        snprintf(t->key, sizeof(t->key), "af:{%s}:relay", task->id);
        TAILQ_INSERT_TAIL(&r->tasks, t, link);
        r->in_flight++;
        rio_update_hold(r);
        rio_set(t);
}

static void rio_on_rebalance(af_consumer_t *c, bool assigned,
                             const rd_kafka_topic_partition_list_t *parts, void *opaque) {
        rio_t *r = opaque;

        for (int i = 0; parts && i < parts->cnt; i++) {
                if (assigned)
                        af_watermark_assign(r->wm, 0, parts->elems[i].partition);
                else
                        af_watermark_revoke(r->wm, 0, parts->elems[i].partition);
        }
        af_info("partitions %s: %d", assigned ? "assigned" : "revoked", parts ? parts->cnt : 0);
        rio_update_hold(r);
}

/* ---- stop: SIGTERM/SIGINT ---------------------------------------------------------------- */

/* The blocking last steps, from a timer of their own (never inside a Kafka callback):
 * deliveries first (their acks store the last offsets), then commit and leave the group. */
static void rio_finish(void *opaque) {
        rio_t *r = opaque;
        af_err_t err;

        if (r->stopped)
                return;
        r->stopped = true;
        if (r->in_flight)
                af_warn("stopping with %" PRId64 " tasks in flight: their offsets stay "
                        "uncommitted",
                        r->in_flight);
        err = af_producer_flush(r->producer, RIO_FLUSH_MS);
        if (err)
                af_warn("producer flush: %s (%d messages left)", af_err2str(err),
                        af_producer_outq_len(r->producer));
        err = af_consumer_commit(r->consumer, true /*sync*/);
        if (err)
                af_debug("final commit: %s", af_err2str(err));
        af_consumer_close(r->consumer);
        af_loop_stop(r->loop);
}

static void rio_stop_check(rio_t *r) {
        if (r->stopping && !r->stopped && r->in_flight == 0 && !af_timer_pending(r->finish_timer))
                af_timer_start(r->finish_timer, 0, false);
}

static void rio_on_signal(af_loop_t *loop, int signo, void *opaque) {
        rio_t *r = opaque;

        if (r->stopping)
                return;
        r->stopping = true;
        af_info("signal %d: fetching stopped, %" PRId64 " tasks in flight", signo, r->in_flight);
        rio_update_hold(r);
        af_timer_start(r->stop_timer, RIO_STOP_MS, false);
        rio_stop_check(r);
}

/* ---- options, set-up, teardown ----------------------------------------------------------- */

static void rio_usage(FILE *out) {
        fprintf(out,
                "usage: af-relay-io --bootstrap HOST:PORT --url URL [--prefix P] [--lane L]\n"
                "                   [--group G] [--redis-host H] [--redis-port N]\n"
                "                   [--concurrency N] [--set name=value]...\n"
                "\n"
                "bench/run's (a') ceiling: per Task from <prefix>tasks.<lane>, Redis SET NX and\n"
                "DEL, an HTTP POST of the payload to URL, a TaskResult to <prefix>results and\n"
                "three AuditEvents to <prefix>audit; no orchestration.\n"
                "\n"
                "  --bootstrap HOST:PORT  Kafka brokers\n"
                "  --url URL              the no-op endpoint (the simagent's /noop)\n"
                "  --prefix P             topic prefix (agentfleet.)\n"
                "  --lane L               lane of the tasks topic (default)\n"
                "  --group G              consumer group (af-relay-io)\n"
                "  --redis-host H         Redis host (127.0.0.1)\n"
                "  --redis-port N         Redis port (6379)\n"
                "  --concurrency N        tasks in flight at once (1024)\n"
                "  --set name=value       any agentfleet setting, e.g. kafka.linger.ms=5\n");
}

/* Parse argv into r and r->conf. @returns 0 to run, 1 after --help, -1 on error. */
static int rio_options(rio_t *r, int argc, char **argv, const char **groupp) {
        static const struct option opts[] = {
                {"bootstrap", required_argument, NULL, 'b'},
                {"url", required_argument, NULL, 'u'},
                {"prefix", required_argument, NULL, 'p'},
                {"lane", required_argument, NULL, 'l'},
                {"group", required_argument, NULL, 'g'},
                {"redis-host", required_argument, NULL, 'H'},
                {"redis-port", required_argument, NULL, 'P'},
                {"concurrency", required_argument, NULL, 'n'},
                {"set", required_argument, NULL, 's'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        const char *lane = "default";
        char errstr[512] = "", suffix[200];
        char *end;
        af_err_t err = AF_OK;
        int c;

        r->concurrency = 1024;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1 && !err) {
                switch (c) {
                case 'b':
                        err = af_config_set(r->conf, "kafka.bootstrap.servers", optarg, errstr,
                                            sizeof(errstr));
                        break;
                case 'u':
                        r->url = optarg;
                        break;
                case 'p':
                        err = af_config_set(r->conf, "topic.prefix", optarg, errstr,
                                            sizeof(errstr));
                        break;
                case 'l':
                        lane = optarg;
                        break;
                case 'g':
                        *groupp = optarg;
                        break;
                case 'H':
                        err = af_config_set(r->conf, "redis.host", optarg, errstr, sizeof(errstr));
                        break;
                case 'P':
                        err = af_config_set(r->conf, "redis.port", optarg, errstr, sizeof(errstr));
                        break;
                case 'n':
                        r->concurrency = strtoll(optarg, &end, 10);
                        if (*end || r->concurrency < 1)
                                err = af_errstr(AF_ERR_CONFIG, errstr, sizeof(errstr),
                                                "--concurrency: expected a positive integer, "
                                                "got \"%s\"",
                                                optarg);
                        break;
                case 's':
                        err = af_config_set_arg(r->conf, optarg, errstr, sizeof(errstr));
                        break;
                case 'h':
                        rio_usage(stdout);
                        return 1;
                default:
                        rio_usage(stderr);
                        return -1;
                }
        }
        if (!err && (!r->url || optind < argc))
                err = af_errstr(AF_ERR_CONFIG, errstr, sizeof(errstr), "%s",
                                optind < argc ? "unexpected argument" : "--url is required");
        if (err) {
                fprintf(stderr, "af-relay-io: %s\n", errstr);
                return -1;
        }
        snprintf(suffix, sizeof(suffix), "tasks.%s", lane);
        af_kafka_topic(r->conf, suffix, r->tasks_topic, sizeof(r->tasks_topic));
        af_kafka_topic(r->conf, "results", r->results_topic, sizeof(r->results_topic));
        af_kafka_topic(r->conf, "audit", r->audit_topic, sizeof(r->audit_topic));
        return 0;
}

/* The worker's components with the worker's settings (table defaults unless --set). */
static int rio_setup(rio_t *r, const char *group, char *errstr, size_t errstr_size) {
        const char *topics[] = {r->tasks_topic};
        char host[64] = "localhost";
        af_redis_opts_t ro;
        af_http_client_opts_t ho;

        gethostname(host, sizeof(host) - 1);
        snprintf(r->actor, sizeof(r->actor), "relay-io:%s-%d", host, (int) getpid());
        if (!(r->wm = af_watermark_new()) || !(r->loop = af_loop_new(errstr, errstr_size)))
                return -1;
        if (!(r->producer = af_producer_new(r->loop, r->conf, errstr, errstr_size)))
                return -1;
        memset(&ro, 0, sizeof(ro));
        ro.host = af_config_str(r->conf, "redis.host");
        ro.port = (int) af_config_int(r->conf, "redis.port");
        ro.command_timeout_ms = af_config_int(r->conf, "redis.command_timeout");
        ro.reconnect_min_ms = af_config_int(r->conf, "redis.reconnect_min");
        ro.reconnect_max_ms = af_config_int(r->conf, "redis.reconnect_max");
        if (!(r->redis = af_redis_new(r->loop, &ro, errstr, errstr_size)))
                return -1;
        memset(&ho, 0, sizeof(ho));
        ho.default_timeout_ms = af_config_int(r->conf, "worker.http_timeout");
        ho.default_max_response_bytes = (size_t) af_config_int(r->conf, "worker.max_response");
        if (!(r->http = af_http_client_new(r->loop, &ho, errstr, errstr_size)))
                return -1;
        r->stop_timer = af_timer_new(r->loop, rio_finish, r);
        r->finish_timer = af_timer_new(r->loop, rio_finish, r);
        if (!r->stop_timer || !r->finish_timer ||
            af_loop_on_signal(r->loop, SIGTERM, rio_on_signal, r) ||
            af_loop_on_signal(r->loop, SIGINT, rio_on_signal, r)) {
                af_errstr(AF_ERR_INTERNAL, errstr, errstr_size, "cannot set up timers/signals");
                return -1;
        }
        if (!(r->consumer = af_consumer_new(r->loop, r->conf, group, topics, 1, rio_on_message,
                                            rio_on_rebalance, r, errstr, errstr_size)))
                return -1;
        return 0;
}

/* In the order that keeps callbacks safe (the worker's): the consumer, then HTTP and Redis
 * (cancelled callbacks see r->stopped), then the producer (its last reports retire tasks). */
static void rio_teardown(rio_t *r) {
        rio_task_t *t;

        r->stopped = true;
        af_consumer_destroy(r->consumer);
        r->consumer = NULL;
        af_http_client_destroy(r->http);
        r->http = NULL;
        af_redis_destroy(r->redis);
        r->redis = NULL;
        af_producer_destroy(r->producer);
        r->producer = NULL;
        while ((t = TAILQ_FIRST(&r->tasks)))
                rio_retire(t, false);
        af_timer_destroy(r->stop_timer);
        af_timer_destroy(r->finish_timer);
        af_watermark_destroy(r->wm);
        if (r->loop)
                af_loop_destroy(r->loop);
        af_config_destroy(r->conf);
}

int main(int argc, char **argv) {
        rio_t r;
        const char *group = "af-relay-io";
        char errstr[512] = "";
        double done;
        int rc, level;

        memset(&r, 0, sizeof(r));
        TAILQ_INIT(&r.tasks);
        if (!(r.conf = af_config_new())) {
                fprintf(stderr, "af-relay-io: out of memory\n");
                return 1;
        }
        rc = rio_options(&r, argc, argv, &group);
        if (rc) {
                af_config_destroy(r.conf);
                return rc > 0 ? 0 : 2;
        }
        level = af_log_level_parse(af_config_str(r.conf, "log.level"));
        af_log_init("relay-io", level < 0 ? AF_LOG_INFO : (af_log_level_t) level);
        if (rio_setup(&r, group, errstr, sizeof(errstr))) {
                fprintf(stderr, "af-relay-io: %s\n", errstr);
                rio_teardown(&r);
                return 1;
        }
        af_info("relaying %s → %s + %s, concurrency %" PRId64 ", calling %s", r.tasks_topic,
                r.results_topic, r.audit_topic, r.concurrency, r.url);
        rc = af_loop_run(r.loop);
        rio_teardown(&r);
        /* Where a task's time went, on average: which I/O the throughput waits on. */
        done = r.n_succeeded + r.n_failed ? (double) (r.n_succeeded + r.n_failed) : 1.0;
        fprintf(stderr,
                "{\"succeeded\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"undecodable\":%" PRIu64
                ",\"redelivered\":%" PRIu64 ",\"avg_ms\":{\"set\":%.2f,\"call\":%.2f,"
                "\"del\":%.2f,\"emit\":%.2f}}\n",
                r.n_succeeded, r.n_failed, r.n_undecodable, r.n_redelivered,
                r.step_us[RIO_SET] / done / 1000, r.step_us[RIO_CALL] / done / 1000,
                r.step_us[RIO_DEL] / done / 1000, r.step_us[RIO_EMIT] / done / 1000);
        return rc == 0 ? 0 : 1;
}
