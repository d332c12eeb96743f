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
#include "backoff.h"
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

/* Kafka refuses the result as too large (the producer's message.max.bytes, or the results
 * topic's max.message.bytes): sending it again would never end, and the task and its
 * partition would wait forever. Replace it, once, by the same record FAILED with
 * result_too_large and no output, which does fit. Works on the packed bytes, so a result
 * re-emitted from the done record is replaced the same way. @returns whether it was. */
static bool emit_result_replace(af_wtask_t *t, const char *why) {
        Agentfleet__V1__TaskResult *r;
        Agentfleet__V1__Error e = AGENTFLEET__V1__ERROR__INIT, *old_error;
        char *old_output, msg[256];
        uint8_t *bytes;
        size_t len;

        if (t->result_replaced ||
            !(r = agentfleet__v1__task_result__unpack(NULL, t->result_len, t->result)))
                return false;
        snprintf(msg, sizeof(msg),
                 "result of %zu bytes refused by Kafka (%s); raise message.max.bytes of the "
                 "producer and the results topic, or have the handler return less",
                 t->result_len, why);
        e.code = "result_too_large";
        e.message = msg;
        old_output = r->output;
        old_error = r->error;
        r->status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED;
        r->output = (char *) protobuf_c_empty_string;
        r->error = &e;
        len = agentfleet__v1__task_result__get_packed_size(r);
        bytes = malloc(len ? len : 1);
        if (bytes)
                agentfleet__v1__task_result__pack(r, bytes);
        r->output = old_output;
        r->error = old_error;
        agentfleet__v1__task_result__free_unpacked(r, NULL);
        if (!bytes)
                return false;
        af_log_task(AF_LOG_ERROR, t->task->id, t->task->traceparent,
                    "%s: sending a FAILED result instead", msg);
        free(t->result);
        t->result = bytes;
        t->result_len = len;
        t->result_replaced = true;
        t->status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED;
        af_error_set_retriable(&t->error, AF_ERR_TOO_LARGE, false, "%s", msg);
        t->error_code = "result_too_large";
        return true;
}

static void emit_on_result(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                           void *opaque) {
        af_wtask_t *t = opaque;
        af_worker_t *w = t->w;

        t->pending_acks--;
        if (err == AF_ERR_TOO_LARGE && !w->stopped &&
            emit_result_replace(t, errstr ? errstr : af_err2str(err))) {
                /* Its task.result audit said what was refused; this one says what replaced it. */
                af_emit_audit(t, "task.result_replaced", "error", t->error.msg, NULL);
                af_emit_result(t);
                return;
        }
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
        char errstr[256] = "";
        af_err_t err = af_producer_send_pb(w->producer, topic, key, val, len, traceparent, cb,
                                           opaque, errstr, sizeof(errstr));
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

        err = emit_send(w, w->results_topic, t->task->id, t->result, t->result_len,
                        t->task->traceparent, emit_on_result, t);
        if (err == AF_ERR_TOO_LARGE && emit_result_replace(t, "over message.max.bytes"))
                err = emit_send(w, w->results_topic, t->task->id, t->result, t->result_len,
                                t->task->traceparent, emit_on_result, t);
        if (t->reemit && !t->result_replaced) {
                Agentfleet__V1__TaskResult *r =
                        agentfleet__v1__task_result__unpack(NULL, t->result_len, t->result);
                st = r ? r->status : AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_UNSPECIFIED;
                if (r)
                        agentfleet__v1__task_result__free_unpacked(r, NULL);
        } else {
                st = t->status;
        }
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

/* A dead letter on its way: it owns copies of what the record carries, because the consumed
 * message is gone once the consume callback returns and a failed delivery is sent again. Its
 * offset counts as done only when Kafka acknowledged the record: a poison message is never
 * skipped without a trace in `dlq`. */
struct af_emit_dlq_s {
        af_worker_t *w;
        int topic_idx;
        int32_t partition;
        uint32_t epoch;
        int64_t offset;
        af_dlq_entry_t e; /* its pointers point into this struct's copies */
        char *task_id;
        char *reason;
        void *original;
        void *key;
        uint32_t tries;
        af_timer_t *timer; /* the next send after a failure */
        TAILQ_ENTRY(af_emit_dlq_s) link;
};

static void dlq_free(af_emit_dlq_t *d) {
        TAILQ_REMOVE(&d->w->dead_letters, d, link);
        af_timer_destroy(d->timer);
        free(d->task_id);
        free(d->reason);
        free(d->original);
        free(d->key);
        free(d);
}

static void *dup_bytes(const void *p, size_t n) {
        void *q = p ? malloc(n ? n : 1) : NULL;
        if (q)
                memcpy(q, p, n);
        return q;
}

static void dlq_send(af_emit_dlq_t *d);

static void dlq_resend_cb(void *opaque) {
        dlq_send(opaque);
}

/* The record was not accepted or not delivered. Too large with the original inside: send it
 * without (the original stays readable at its source offset while the topic retains it).
 * Otherwise send again with back-off while this worker still owns the partition; when it does
 * not (revoked, or stopping), the offset stays uncommitted and the next owner dead-letters
 * the message again. */
static void dlq_failed(af_emit_dlq_t *d, af_err_t err, const char *errstr) {
        af_worker_t *w = d->w;
        const char *topic = w->topics[d->topic_idx];

        char *why;
        if (err == AF_ERR_TOO_LARGE && af_dlq_omit_original(&d->e, w->dlq_topic, &why)) {
                if (why) {
                        free(d->reason);
                        d->reason = why;
                }
                free(d->original);
                d->original = NULL;
                af_warn("dead letter for %s[%d]@%" PRId64 " too large (%s): sending it without "
                        "the original message",
                        topic, (int) d->partition, d->offset, errstr);
                dlq_send(d);
                return;
        }
        if (w->stopped || !af_watermark_current(w->wm, d->topic_idx, d->partition, d->epoch)) {
                af_warn("dead letter for %s[%d]@%" PRId64 " not delivered (%s): the offset stays "
                        "uncommitted, so its next owner dead-letters it again",
                        topic, (int) d->partition, d->offset, errstr);
                dlq_free(d);
                return;
        }
        int64_t delay = af_backoff_delay_ms(++d->tries, EMIT_RESEND_MS, 60 * 1000);
        af_error("dead letter for %s[%d]@%" PRId64 " not delivered (%s): sending again in %" PRId64
                 " ms; the partition's commits wait for it",
                 topic, (int) d->partition, d->offset, errstr, delay);
        if (!d->timer)
                d->timer = af_timer_new(w->loop, dlq_resend_cb, d);
        if (!d->timer) {
                dlq_free(d); /* out of memory: uncommitted, redelivered after a restart */
                return;
        }
        af_timer_start(d->timer, delay, false);
}

static void emit_on_dead_letter(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                                void *opaque) {
        af_emit_dlq_t *d = opaque;

        if (err) {
                dlq_failed(d, err, errstr ? errstr : af_err2str(err));
                return;
        }
        af_consume_dead_letter_done(d->w, d->topic_idx, d->partition, d->epoch, d->offset);
        dlq_free(d);
}

static void dlq_send(af_emit_dlq_t *d) {
        char errstr[256] = "";
        af_err_t err = af_dlq_send(d->w->producer, d->w->dlq_topic, &d->e, emit_on_dead_letter, d,
                                   errstr, sizeof(errstr));
        if (err)
                dlq_failed(d, err, errstr);
}

void af_emit_dead_letter(af_worker_t *w, const af_kafka_msg_t *msg, int topic_idx, uint32_t epoch,
                         const char *task_id, const char *reason) {
        af_emit_dlq_t *d = calloc(1, sizeof(*d));

        af_log_task(AF_LOG_WARN, task_id, NULL, "dead-lettering %s[%d]@%" PRId64 ": %s", msg->topic,
                    (int) msg->partition, msg->offset, reason);
        w->n_dead_lettered++;
        af_observe_dead_letter();
        if (d) {
                *d = (af_emit_dlq_t){.w = w,
                                     .topic_idx = topic_idx,
                                     .partition = msg->partition,
                                     .epoch = epoch,
                                     .offset = msg->offset};
                TAILQ_INSERT_TAIL(&w->dead_letters, d, link);
                af_dlq_entry_from_msg(&d->e, msg);
                d->task_id = task_id ? strdup(task_id) : NULL;
                d->reason = strdup(reason);
                d->original = dup_bytes(msg->value, msg->value_len);
                d->key = dup_bytes(msg->key, msg->key_len);
        }
        if (!d || (task_id && !d->task_id) || !d->reason || (msg->value && !d->original) ||
            (msg->key && !d->key)) {
                af_error("dead letter for %s[%d]@%" PRId64 " not produced: out of memory; the "
                         "offset stays uncommitted",
                         msg->topic, (int) msg->partition, msg->offset);
                if (d)
                        dlq_free(d);
                return;
        }
        d->e.source_topic = w->topics[topic_idx];
        d->e.task_id = d->task_id;
        d->e.reason = d->reason;
        d->e.original = d->original;
        d->e.original_key = d->key;
        d->e.component = w->actor;
        d->e.err = AF_ERR_INVALID;
        d->e.retriable = false;
        dlq_send(d);
}

void af_emit_dead_letters_free(af_worker_t *w) {
        af_emit_dlq_t *d;
        while ((d = TAILQ_FIRST(&w->dead_letters)))
                dlq_free(d);
}
