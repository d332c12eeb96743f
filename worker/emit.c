/*
 * emit: everything the worker writes to Kafka. A task's TaskResult goes to `results` keyed
 * by task id (compacted: the latest record is the task's state), with its AuditEvents
 * (lease.acquired, handler.call, tool.denied, task.result) on `audit` through the chained
 * audit module, all through the one idempotent producer. A task counts as done for its
 * offset only when its result — and every event it produced — is acknowledged by the broker,
 * so a crash before that redelivers the task, whose done record then re-emits the same
 * result. LifecycleEvents (lease lost, Redis down/up, rebalance, start/stop) go to `events`
 * for monitoring; poison messages go to `dlq` through libcommon/dlq.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentfleet/v1/event.pb-c.h"
#include "clock.h"
#include "dlq.h"
#include "ids.h"
#include "log.h"
#include "worker.h"

#define EMIT_RESEND_MS 1000 /* after a failed delivery or a full local queue */

static const char *emit_status_name(Agentfleet__V1__TaskStatus st) {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
                &agentfleet__v1__task_status__descriptor, (int) st);
        /* "TASK_STATUS_SUCCEEDED" → "succeeded" is done by the reader; keep the enum name. */
        return v ? v->name : "TASK_STATUS_UNSPECIFIED";
}

/* ---- encoding ---------------------------------------------------------------------------- */

/* Pack a TaskResult of t with status st. @returns bytes (caller frees) or NULL on OOM. */
static uint8_t *emit_pack(af_wtask_t *t, Agentfleet__V1__TaskStatus st, size_t *lenp) {
        af_worker_t *w = t->w;
        const Agentfleet__V1__Task *task = t->task;
        Agentfleet__V1__TaskResult r = AGENTFLEET__V1__TASK_RESULT__INIT;
        Agentfleet__V1__Error e = AGENTFLEET__V1__ERROR__INIT;
        Agentfleet__V1__Timings tm = AGENTFLEET__V1__TIMINGS__INIT;
        Agentfleet__V1__Usage u = AGENTFLEET__V1__USAGE__INIT;
        Agentfleet__V1__Versions v = AGENTFLEET__V1__VERSIONS__INIT;
        const Agentfleet__V1__Versions *tv = task->versions;
        char code[32];
        uint8_t *bytes;
        bool final = st != AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_RUNNING;

        r.task_id = task->id;
        r.status = st;
        r.attempt = task->attempt;
        r.worker_id = w->id;
        r.type = task->type;
        r.tenant = task->tenant;
        r.principal = task->principal;
        r.case_key = task->case_key;
        r.fence = t->lease.fence;
        r.idempotency_key = task->idempotency_key;
        r.traceparent = task->traceparent;
        if (final && st == AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED && t->output)
                r.output = t->output;
        if (final && st != AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED && t->error.err) {
                if (t->error.http_status)
                        snprintf(code, sizeof(code), "http_%d", t->error.http_status);
                else
                        snprintf(code, sizeof(code), "%s",
                                 t->error_code ? t->error_code : af_err2code(t->error.err));
                e.code = code;
                e.message = t->error.msg;
                e.retriable = t->error.retriable;
                r.error = &e;
        }
        tm.created_at_ms = task->created_at_ms;
        tm.started_at_ms = t->started_wall_ms;
        if (tm.created_at_ms && tm.started_at_ms)
                tm.queue_ms = tm.started_at_ms - tm.created_at_ms;
        if (final) {
                tm.finished_at_ms = af_clock_wall_ms();
                if (tm.started_at_ms)
                        tm.run_ms = tm.finished_at_ms - tm.started_at_ms;
        }
        r.timings = &tm;
        if (t->llm_calls || t->tool_calls || t->prompt_tokens) {
                u.prompt_tokens = t->prompt_tokens;
                u.completion_tokens = t->completion_tokens;
                u.cost_micros = t->cost_micros;
                u.llm_calls = t->llm_calls;
                u.tool_calls = t->tool_calls;
                r.usage = &u;
        }
        /* The versions it ran under: this worker's catalog, the admitted policy/workflow. */
        v.config_hash = t->wcat->cat->hash;
        v.policy = tv && tv->policy ? tv->policy : (char *) "";
        v.workflow = tv && tv->workflow ? tv->workflow : (char *) "";
        v.agent = (char *) (t->agent_version ? t->agent_version : "");
        v.prompt = "";
        if (t->type && t->type->kind == AF_HANDLER_AGENT) {
                const af_agent_t *a = af_catalog_agent(t->wcat->cat, t->type->target);
                if (a && a->prompt_hash)
                        v.prompt = a->prompt_hash;
        }
        r.versions = &v;
        *lenp = agentfleet__v1__task_result__get_packed_size(&r);
        bytes = malloc(*lenp ? *lenp : 1);
        if (bytes)
                agentfleet__v1__task_result__pack(&r, bytes);
        return bytes;
}

af_err_t af_emit_encode_result(af_wtask_t *t) {
        free(t->result);
        t->result = emit_pack(t, t->status, &t->result_len);
        return t->result ? AF_OK : AF_ERR_NOMEM;
}

/* ---- delivery accounting ---------------------------------------------------------------- */

/* An event of t was acknowledged (or failed: logged; the audit chain shows the gap). */
static void emit_on_ack(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                        void *opaque) {
        af_wtask_t *t = opaque;

        t->pending_acks--;
        if (err)
                af_log_task(AF_LOG_ERROR, t->task->id, t->task->traceparent,
                            "event not delivered: %s", errstr ? errstr : af_err2str(err));
        if (t->pending_acks == 0 && t->retiring)
                af_wtask_retire(t, t->retire_done);
}

static void emit_on_result(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                           void *opaque) {
        af_wtask_t *t = opaque;
        af_worker_t *w = t->w;

        t->pending_acks--;
        if (err) {
                /* The result is the task's record: send it again until Kafka has it. */
                af_log_task(AF_LOG_ERROR, t->task->id, t->task->traceparent,
                            "result not delivered (%s): sending again",
                            errstr ? errstr : af_err2str(err));
                if (!w->stopped)
                        af_lease_stage_later(t, EMIT_RESEND_MS);
                return;
        }
        t->result_acked = true;
        af_wtask_retire(t, true);
}

static af_err_t emit_send(af_worker_t *w, const char *topic, const char *key, const void *val,
                          size_t len, const char *traceparent, af_delivery_cb_t *cb, void *opaque) {
        af_kafka_header_t hdrs[2];
        size_t n = 0;
        char errstr[256] = "";
        af_err_t err;

        hdrs[n++] = (af_kafka_header_t){"content-type", "application/x-protobuf",
                                        sizeof("application/x-protobuf") - 1};
        if (traceparent && *traceparent)
                hdrs[n++] = (af_kafka_header_t){"traceparent", traceparent, strlen(traceparent)};
        err = af_producer_send(w->producer, topic, -1 /*by key*/, key, key ? strlen(key) : 0, val,
                               len, hdrs, n, cb, opaque, errstr, sizeof(errstr));
        if (err)
                af_warn("produce to %s failed: %s", topic, errstr);
        return err;
}

/* ---- audit details ------------------------------------------------------------------------ */

static void details_put(af_details_t *d, const char *s, size_t n) {
        size_t room = sizeof(d->buf) - 1 - d->len;
        if (n > room)
                n = room;
        memcpy(d->buf + d->len, s, n);
        d->len += n;
        d->buf[d->len] = '\0';
}

/* The separator and "key": of the next member. */
static void details_key(af_details_t *d, const char *key) {
        if (d->len > 1)
                details_put(d, ",", 1);
        details_put(d, "\"", 1);
        details_put(d, key, strlen(key));
        details_put(d, "\":", 2);
}

void af_details_begin(af_details_t *d) {
        d->len = 0;
        details_put(d, "{", 1);
}

void af_details_str(af_details_t *d, const char *key, const char *value) {
        details_key(d, key);
        details_put(d, "\"", 1);
        details_put(d, value, strlen(value));
        details_put(d, "\"", 1);
}

void af_details_i64(af_details_t *d, const char *key, int64_t value) {
        char tmp[AF_I64_STR_SIZE];
        size_t n = af_i64_to_str(tmp, value);
        details_key(d, key);
        details_put(d, tmp, n);
}

void af_details_bool(af_details_t *d, const char *key, bool value) {
        details_key(d, key);
        details_put(d, value ? "true" : "false", value ? 4 : 5);
}

const char *af_details_end(af_details_t *d) {
        details_put(d, "}", 1);
        return d->buf;
}

/* ---- results and audit ------------------------------------------------------------------- */

void af_emit_audit(af_wtask_t *t, const char *action, const char *decision, const char *reason,
                   const char *details) {
        af_worker_t *w = t->w;
        const Agentfleet__V1__Task *task = t->task;
        const Agentfleet__V1__Versions *tv = task->versions;
        Agentfleet__V1__AuditEvent ev = AGENTFLEET__V1__AUDIT_EVENT__INIT;
        Agentfleet__V1__Versions v = AGENTFLEET__V1__VERSIONS__INIT;

        if (!w->audit)
                return;
        ev.actor = w->actor;
        ev.actor_kind = AGENTFLEET__V1__ACTOR_KIND__ACTOR_KIND_COMPONENT;
        ev.action = (char *) action;
        ev.task_id = task->id;
        ev.tenant = task->tenant;
        ev.decision = (char *) (decision ? decision : "");
        ev.reason = (char *) (reason ? reason : "");
        ev.details = (char *) (details ? details : "");
        ev.traceparent = task->traceparent;
        v.config_hash = t->wcat->cat->hash;
        v.policy = tv && tv->policy ? tv->policy : (char *) "";
        v.workflow = tv && tv->workflow ? tv->workflow : (char *) "";
        v.agent = (char *) (t->agent_version ? t->agent_version : "");
        ev.versions = &v;
        if (af_audit_emit(w->audit, &ev, emit_on_ack, t) == AF_OK)
                t->pending_acks++;
}

void af_emit_running(af_wtask_t *t) {
        size_t len;
        uint8_t *bytes = emit_pack(t, AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_RUNNING, &len);

        if (!bytes)
                return; /* RUNNING is informative only */
        if (emit_send(t->w, t->w->results_topic, t->task->id, bytes, len, t->task->traceparent,
                      emit_on_ack, t) == AF_OK)
                t->pending_acks++;
        free(bytes);
}

void af_emit_result(af_wtask_t *t) {
        af_worker_t *w = t->w;
        Agentfleet__V1__TaskStatus st = t->status;
        const char *status;
        af_details_t details;
        int64_t run_ms;
        af_err_t err;

        if (t->reemit) {
                Agentfleet__V1__TaskResult *r =
                        agentfleet__v1__task_result__unpack(NULL, t->result_len, t->result);
                st = r ? r->status : AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_UNSPECIFIED;
                if (r)
                        agentfleet__v1__task_result__free_unpacked(r, NULL);
        }
        err = emit_send(w, w->results_topic, t->task->id, t->result, t->result_len,
                        t->task->traceparent, emit_on_result, t);
        if (err) {
                af_lease_stage_later(t, EMIT_RESEND_MS);
                return;
        }
        t->pending_acks++;
        if (t->result_audited)
                return;
        t->result_audited = true;
        switch (st) {
        case AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED:
                w->n_succeeded++;
                status = "succeeded";
                break;
        case AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_CANCELLED:
                w->n_cancelled++;
                status = "cancelled";
                break;
        default:
                w->n_failed++;
                status = "failed";
                break;
        }
        run_ms = t->started_mono_ms ? af_clock_mono_ms() - t->started_mono_ms : 0;
        af_observe_result(t, t->reemit ? "reemitted" : status, run_ms);
        af_details_begin(&details);
        af_details_str(&details, "status", emit_status_name(st));
        af_details_bool(&details, "reemitted", t->reemit);
        af_details_i64(&details, "fence", t->lease.fence);
        af_details_i64(&details, "run_ms", run_ms);
        af_details_i64(&details, "prompt_tokens", t->prompt_tokens);
        af_details_i64(&details, "completion_tokens", t->completion_tokens);
        af_details_i64(&details, "cost_micros", t->cost_micros);
        af_emit_audit(t, "task.result",
                      st == AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED ? "ok" : "error",
                      t->reemit ? "result re-emitted from the done record"
                                : (t->error.err ? t->error.msg : NULL),
                      af_details_end(&details));
}

/* ---- lifecycle events -------------------------------------------------------------------- */

static void emit_on_event(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                          void *opaque) {
        if (err)
                af_debug("lifecycle event not delivered: %s", errstr ? errstr : "");
}

void af_emit_lifecycle(af_worker_t *w, Agentfleet__V1__LifecycleKind kind, const char *task_id,
                       const char *endpoint, const char *detail) {
        Agentfleet__V1__LifecycleEvent ev = AGENTFLEET__V1__LIFECYCLE_EVENT__INIT;
        char id[AF_ULID_LEN + 1];
        uint8_t *bytes;
        size_t len;

        if (!w->producer)
                return;
        af_ulid_new(id);
        ev.id = id;
        ev.at_ms = af_clock_wall_ms();
        ev.kind = kind;
        ev.component = w->actor;
        ev.task_id = (char *) (task_id ? task_id : "");
        ev.endpoint = (char *) (endpoint ? endpoint : "");
        ev.detail = (char *) (detail ? detail : "");
        len = agentfleet__v1__lifecycle_event__get_packed_size(&ev);
        bytes = malloc(len ? len : 1);
        if (!bytes)
                return;
        agentfleet__v1__lifecycle_event__pack(&ev, bytes);
        emit_send(w, w->events_topic, task_id && *task_id ? task_id : NULL, bytes, len, NULL,
                  emit_on_event, NULL);
        free(bytes);
}

/* ---- dead letters ------------------------------------------------------------------------ */

typedef struct {
        af_worker_t *w;
        int topic_idx;
        int32_t partition;
        uint32_t epoch;
        int64_t offset;
} emit_dlq_ctx_t;

static void emit_on_dead_letter(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                                void *opaque) {
        emit_dlq_ctx_t *ctx = opaque;

        if (err)
                /* librdkafka retried up to message.timeout.ms: the poison message is logged
                 * here and stays in its task topic, behind the committed offset. */
                af_error("dead letter for %s[%d]@%" PRId64 " not delivered: %s",
                         ctx->w->topics[ctx->topic_idx], (int) ctx->partition, ctx->offset,
                         errstr ? errstr : af_err2str(err));
        af_consume_dead_letter_done(ctx->w, ctx->topic_idx, ctx->partition, ctx->epoch,
                                    ctx->offset);
        free(ctx);
}

void af_emit_dead_letter(af_worker_t *w, const af_kafka_msg_t *msg, int topic_idx, uint32_t epoch,
                         const char *task_id, const char *reason) {
        af_dlq_entry_t e;
        emit_dlq_ctx_t *ctx = malloc(sizeof(*ctx));
        char errstr[256] = "";

        af_log_task(AF_LOG_WARN, task_id, NULL, "dead-lettering %s[%d]@%" PRId64 ": %s", msg->topic,
                    (int) msg->partition, msg->offset, reason);
        w->n_dead_lettered++;
        af_observe_dead_letter();
        af_dlq_entry_from_msg(&e, msg);
        e.task_id = task_id;
        e.component = w->actor;
        e.err = AF_ERR_INVALID;
        e.retriable = false;
        e.reason = reason;
        if (ctx) {
                *ctx = (emit_dlq_ctx_t){w, topic_idx, msg->partition, epoch, msg->offset};
                if (af_dlq_send(w->producer, w->dlq_topic, &e, emit_on_dead_letter, ctx, errstr,
                                sizeof(errstr)) == AF_OK)
                        return;
                free(ctx);
        }
        af_error("dead letter for %s[%d]@%" PRId64 " not produced: %s", msg->topic,
                 (int) msg->partition, msg->offset, ctx ? errstr : "out of memory");
        /* Not sendable now: the offset stays uncommitted, so a restart tries again. */
}
