/*
 * intake: TaskRequests produced straight to the `requests` topic by other services.
 *
 * For each message: the content-type header says protobuf or JSON (no header, no guessing:
 * dead letter); decode; authenticate (token, or key_id + HMAC signature, auth.c); admit exactly
 * like the API (admit.c), idempotent by idempotency_key, else request_id, else the message's
 * own partition and offset, so a redelivered request never creates a second task. Anything
 * wrong goes to `dlq` with a precise reason plus an audit event, and the coordinator keeps
 * serving. A dependency being down (Kafka, Redis) is not the request's fault: it is retried
 * with back-off, never dead-lettered.
 *
 * Offsets: many requests are admitted at once; a partition's offset is stored only up to the
 * first request not yet finished (offsets.c), i.e. after its Task and QUEUED record, or its
 * dead letter, were acknowledged by Kafka.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backoff.h"
#include "coord.h"
#include "dlq.h"
#include "log.h"
#include "utf8.h"
#include "watermark.h"
#include "wire_json.h"

#define INFLIGHT_HOLD   1000 /* requests in flight before delivery stops */
#define INFLIGHT_RESUME 500
#define RETRY_BASE_MS   200
#define RETRY_CAP_MS    10000

typedef struct imsg_s imsg_t;

struct af_intake_s {
        af_coord_t *co;
        af_consumer_t *consumer;
        af_watermark_t *offsets;
        imsg_t *msgs; /* every request in flight, so that destroy frees those left waiting */
        int inflight;
        bool held;
        bool stopped; /* draining: stays held */
        bool closed;
};

typedef enum { STEP_ADMIT, STEP_DLQ } step_t;

/* One request being worked on; owns copies of the message bytes. */
struct imsg_s {
        af_intake_t *in;
        imsg_t *prev, *next; /* in->msgs */
        int32_t partition;
        int64_t offset;
        uint32_t gen; /* watermark epoch of the partition at receipt */
        uint8_t *value;
        size_t value_len;
        uint8_t *key;
        size_t key_len;
        char content_type[128];
        bool has_content_type;
        Agentfleet__V1__TaskRequest *req;
        bool payload_object; /* req came as JSON with the payload as an object */
        af_identity_t who;
        char idem[320];
        step_t step;
        af_err_t dlq_err;
        bool dlq_omit_original; /* Kafka refused the dead letter as too large */
        char reason[512];
        uint32_t attempts; /* retries of the current step */
        af_timer_t *retry;
};

static void imsg_step(imsg_t *m);

/* Unlink and free; the caller has settled its offset (done) or leaves it uncommitted. */
static void imsg_free(imsg_t *m) {
        af_intake_t *in = m->in;
        if (m->prev)
                m->prev->next = m->next;
        else if (in->msgs == m)
                in->msgs = m->next;
        if (m->next)
                m->next->prev = m->prev;
        af_timer_destroy(m->retry);
        af_wire_taskrequest_free(m->req);
        free(m->value);
        free(m->key);
        free(m);
}

/* The request is finished (admitted or dead-lettered): let its offset be committed. */
static void imsg_done(imsg_t *m) {
        af_intake_t *in = m->in;
        int64_t next =
                af_watermark_done(in->offsets, 0 /*requests*/, m->partition, m->gen, m->offset);
        if (next >= 0 && in->consumer && !in->closed) {
                af_err_t err = af_consumer_store_offset(in->consumer, in->co->topic_requests,
                                                        m->partition, next);
                if (err && err != AF_ERR_STATE)
                        af_warn("intake: offset %lld of partition %d not stored: %s",
                                (long long) next, (int) m->partition, af_err2str(err));
        }
        in->inflight--;
        if (in->held && !in->stopped && in->inflight < INFLIGHT_RESUME && in->consumer &&
            !in->closed) {
                in->held = false;
                af_consumer_hold(in->consumer, false);
        }
        imsg_free(m);
}

/* Teardown (co->closing): the producer is gone, so the request can be neither retried nor
 * dead-lettered. Its offset stays uncommitted: it comes back after a restart, and its
 * idempotency key makes that harmless. */
static void imsg_abandon(imsg_t *m) {
        m->in->inflight--;
        imsg_free(m);
}

static void retry_fire(void *opaque) {
        imsg_step(opaque);
}

/* Try the current step again later: a dependency is down, the request is fine. */
static void imsg_retry_later(imsg_t *m, const char *why) {
        int64_t delay = af_backoff_delay_ms(++m->attempts, RETRY_BASE_MS, RETRY_CAP_MS);
        af_warn("intake: request at %s [%d] @%lld: %s; retrying in %lld ms",
                m->in->co->topic_requests, (int) m->partition, (long long) m->offset, why,
                (long long) delay);
        if (!m->retry)
                m->retry = af_timer_new(m->in->co->loop, retry_fire, m);
        af_timer_start(m->retry, delay, false);
}

/* ---- dead letters ------------------------------------------------------------------------- */

static void send_dlq(imsg_t *m);

static void dlq_dr(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                   void *opaque) {
        imsg_t *m = opaque;
        if (err && m->in->co->closing) {
                imsg_abandon(m);
                return;
        }
        if (err == AF_ERR_TOO_LARGE && !m->dlq_omit_original) {
                /* Sending it again as it is would never end: without the original. */
                m->dlq_omit_original = true;
                send_dlq(m);
                return;
        }
        if (err) {
                imsg_retry_later(m, errstr ? errstr : af_err2str(err));
                return;
        }
        const char *lv[] = {af_err2code(m->dlq_err), NULL};
        af_metric_add(m->in->co->m.intake_dlq, lv, 1);
        imsg_done(m);
}

static void send_dlq(imsg_t *m) {
        af_coord_t *co = m->in->co;
        af_dlq_entry_t e;
        char errstr[256];

        memset(&e, 0, sizeof(e));
        e.source_topic = co->topic_requests;
        e.source_partition = m->partition;
        e.source_offset = m->offset;
        e.original = m->value;
        e.original_len = m->value_len;
        e.original_key = m->key;
        e.original_key_len = m->key_len;
        e.content_type = m->has_content_type ? m->content_type : NULL;
        e.component = "coordinator";
        e.err = m->dlq_err;
        e.reason = m->reason;
        e.attempts = 1;
        char *why = NULL;
        if (m->dlq_omit_original && af_dlq_omit_original(&e, co->topic_dlq, &why))
                af_warn("intake: dead letter of %s [%d] @%lld too large: sent without the "
                        "original request",
                        co->topic_requests, (int) m->partition, (long long) m->offset);
        af_err_t err =
                af_dlq_send(co->producer, co->topic_dlq, &e, dlq_dr, m, errstr, sizeof(errstr));
        free(why); /* packed by af_dlq_send */
        if (err == AF_ERR_TOO_LARGE && !m->dlq_omit_original) {
                m->dlq_omit_original = true;
                send_dlq(m);
        } else if (err) {
                imsg_retry_later(m, errstr);
        }
}

/* Refuse the request: audit it, then dead-letter it (the step survives Kafka outages). */
static void refuse(imsg_t *m, af_err_t err, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void refuse(imsg_t *m, af_err_t err, const char *fmt, ...) {
        af_coord_t *co = m->in->co;
        va_list ap;
        json_t *d;
        char *details;

        va_start(ap, fmt);
        vsnprintf(m->reason, sizeof(m->reason), fmt, ap);
        va_end(ap);
        af_utf8_repair(m->reason); /* it quotes the request; it goes into protobuf and JSON */
        m->dlq_err = err;
        d = json_pack("{s:s, s:i, s:I, s:s}", "topic", co->topic_requests, "partition",
                      (int) m->partition, "offset", (json_int_t) m->offset, "request_id",
                      m->req && m->req->request_id ? m->req->request_id : "");
        details = d ? json_dumps(d, JSON_COMPACT) : NULL;
        if (err == AF_ERR_UNAUTHENTICATED || err == AF_ERR_FORBIDDEN) {
                af_auth_audit_denied(co, m->who.principal[0] ? m->who.principal : "anonymous",
                                     m->reason, details);
        } else if (co->audit) {
                af_audit_record(co->audit, m->who.principal[0] ? m->who.principal : "coordinator",
                                m->who.principal[0]
                                        ? AGENTFLEET__V1__ACTOR_KIND__ACTOR_KIND_PRINCIPAL
                                        : AGENTFLEET__V1__ACTOR_KIND__ACTOR_KIND_COMPONENT,
                                "request.rejected", "", m->who.tenant, "deny", m->reason, details);
        }
        af_info("intake: request at %s [%d] @%lld dead-lettered: %s", co->topic_requests,
                (int) m->partition, (long long) m->offset, m->reason);
        free(details);
        json_decref(d);
        m->step = STEP_DLQ;
        m->attempts = 0;
        send_dlq(m);
}

/* ---- admission ---------------------------------------------------------------------------- */

static void admit_cb(const af_admit_out_t *out, void *opaque) {
        imsg_t *m = opaque;
        if (out->err && m->in->co->closing) {
                imsg_abandon(m);
                return;
        }
        switch (out->err) {
        case AF_OK:
                if (out->replayed)
                        af_debug("intake: request @%lld repeats task %s", (long long) m->offset,
                                 out->task_id);
                imsg_done(m);
                break;
        case AF_ERR_UNAVAILABLE:
        case AF_ERR_TIMEOUT:
        case AF_ERR_NOMEM:
                imsg_retry_later(m, out->message ? out->message : af_err2str(out->err));
                break;
        default:
                refuse(m, out->err, "%s", out->message ? out->message : af_err2str(out->err));
                break;
        }
}

static void admit(imsg_t *m) {
        af_admit_in_t ain = {.req = m->req,
                             .who = &m->who,
                             .origin = AGENTFLEET__V1__ORIGIN__ORIGIN_KAFKA,
                             .idem_key = m->idem,
                             .payload_object = m->payload_object};
        af_admit_submit(m->in->co, &ain, admit_cb, m);
}

static void imsg_step(imsg_t *m) {
        if (m->in->co->closing)
                imsg_abandon(m);
        else if (m->step == STEP_DLQ)
                send_dlq(m);
        else
                admit(m);
}

static bool ct_is(const imsg_t *m, const char *want) {
        size_t n = strlen(want);
        /* allow parameters: "application/json; charset=utf-8" */
        return !strncasecmp(m->content_type, want, n) &&
               (m->content_type[n] == '\0' || m->content_type[n] == ';');
}

static void process(imsg_t *m) {
        af_coord_t *co = m->in->co;
        char errstr[512] = "";
        af_err_t err;
        /* A request is a payload plus a few short fields: bound it before parsing. */
        size_t max = (size_t) co->max_payload * 2 + 64 * 1024;

        if (!m->has_content_type) {
                refuse(m, AF_ERR_INVALID, "missing content-type header");
                return;
        }
        if (m->value_len > max) {
                refuse(m, AF_ERR_TOO_LARGE, "message of %zu bytes is over the limit of %zu",
                       m->value_len, max);
                return;
        }
        if (ct_is(m, "application/x-protobuf")) {
                m->req = agentfleet__v1__task_request__unpack(NULL, m->value_len, m->value);
                if (!m->req) {
                        refuse(m, AF_ERR_INVALID, "not a valid protobuf TaskRequest (%zu bytes)",
                               m->value_len);
                        return;
                }
        } else if (ct_is(m, "application/json")) {
                err = af_wire_taskrequest_from_json_ex((const char *) m->value, m->value_len, 0,
                                                       &m->req, &m->payload_object, errstr,
                                                       sizeof(errstr));
                if (err) {
                        refuse(m, err, "JSON TaskRequest: %s", errstr);
                        return;
                }
        } else {
                refuse(m, AF_ERR_INVALID,
                       "unsupported content-type \"%.100s\" (application/x-protobuf or "
                       "application/json)",
                       m->content_type);
                return;
        }
        if ((err = af_auth_request(co, m->req, &m->who, errstr, sizeof(errstr)))) {
                refuse(m, err, "authentication failed: %s", errstr);
                return;
        }
        if (m->req->idempotency_key && *m->req->idempotency_key)
                snprintf(m->idem, sizeof(m->idem), "%s", m->req->idempotency_key);
        else if (m->req->request_id && *m->req->request_id)
                snprintf(m->idem, sizeof(m->idem), "req:%.256s", m->req->request_id);
        else
                snprintf(m->idem, sizeof(m->idem), "kafka:%s:%d:%lld", co->topic_requests,
                         (int) m->partition, (long long) m->offset);
        admit(m);
}

static void on_request(af_consumer_t *c, const af_kafka_msg_t *msg, void *opaque) {
        af_intake_t *in = opaque;
        imsg_t *m = calloc(1, sizeof(*m));
        size_t ct_len = 0;
        const void *ct;

        if (!m)
                goto nomem;
        m->in = in;
        m->partition = msg->partition;
        m->offset = msg->offset;
        m->value = malloc(msg->value_len ? msg->value_len : 1);
        m->key = malloc(msg->key_len ? msg->key_len : 1);
        if (!m->value || !m->key)
                goto nomem;
        if (msg->value_len)
                memcpy(m->value, msg->value, msg->value_len);
        m->value_len = msg->value_len;
        if (msg->key_len)
                memcpy(m->key, msg->key, msg->key_len);
        m->key_len = msg->key_len;
        if ((ct = af_kafka_msg_header(msg, "content-type", &ct_len))) {
                if (ct_len >= sizeof(m->content_type))
                        ct_len = sizeof(m->content_type) - 1;
                memcpy(m->content_type, ct, ct_len);
                m->content_type[ct_len] = '\0';
                m->has_content_type = true;
        }
        switch (af_watermark_track(in->offsets, 0 /*requests*/, m->partition, m->offset, &m->gen)) {
        case AF_OK:
                break;
        case AF_ERR_INVALID:
                /* At or below an offset in flight: a redelivery of a request being handled. */
                free(m->value);
                free(m->key);
                free(m);
                return;
        default:
                goto nomem;
        }
        m->next = in->msgs;
        if (in->msgs)
                in->msgs->prev = m;
        in->msgs = m;
        in->inflight++;
        if (in->inflight >= INFLIGHT_HOLD && !in->held) {
                in->held = true;
                af_consumer_hold(c, true);
        }
        process(m);
        return;
nomem:
        /* Without memory we cannot even track the message; it stays uncommitted and comes
         * back after a restart. */
        af_error("intake: out of memory at %s [%d] @%lld", msg->topic, (int) msg->partition,
                 (long long) msg->offset);
        if (m) {
                free(m->value);
                free(m->key);
                free(m);
        }
}

static void on_rebalance(af_consumer_t *c, bool assigned,
                         const rd_kafka_topic_partition_list_t *parts, void *opaque) {
        af_intake_t *in = opaque;
        /* Whatever is in flight for these partitions will be redelivered to the new owner
         * (or to us from the committed offset): forget its bookkeeping. Idempotency makes the
         * redelivery harmless. */
        for (int i = 0; i < parts->cnt; i++) {
                if (assigned)
                        af_watermark_assign(in->offsets, 0, parts->elems[i].partition);
                else
                        af_watermark_revoke(in->offsets, 0, parts->elems[i].partition);
        }
}

af_intake_t *af_intake_new(af_coord_t *co, char *errstr, size_t errstr_size) {
        af_intake_t *in = calloc(1, sizeof(*in));
        const char *topics[1] = {co->topic_requests};

        if (!in || !(in->offsets = af_watermark_new())) {
                free(in);
                af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                return NULL;
        }
        in->co = co;
        in->consumer =
                af_consumer_new(co->loop, co->conf, af_config_str(co->conf, "coordinator.group_id"),
                                topics, 1, on_request, on_rebalance, in, errstr, errstr_size);
        if (!in->consumer) {
                af_watermark_destroy(in->offsets);
                free(in);
                return NULL;
        }
        return in;
}

void af_intake_stop_fetching(af_intake_t *in) {
        if (!in || in->closed || in->stopped)
                return;
        in->stopped = true;
        if (!in->held)
                af_consumer_hold(in->consumer, true);
        in->held = true;
}

void af_intake_close(af_intake_t *in) {
        if (!in || in->closed)
                return;
        in->closed = true;
        af_consumer_close(in->consumer);
}

int af_intake_inflight(const af_intake_t *in) {
        return in ? in->inflight : 0;
}

/* After the producer and Redis (main.c's teardown): every admission and dead letter has
 * answered by then, so what is left waits only for a retry timer that will not fire. */
void af_intake_destroy(af_intake_t *in) {
        if (!in)
                return;
        while (in->msgs)
                imsg_abandon(in->msgs);
        af_consumer_destroy(in->consumer);
        af_watermark_destroy(in->offsets);
        free(in);
}
