/*
 * admit: the one admission path, shared by the HTTP API and the `requests` intake.
 *
 * Steps, each with its reason:
 *  1. Validate against the catalog and the limits (known type, payload a JSON object within
 *     coordinator.max_payload, sane priority/deadline/attempts, trace context) -- refuse early,
 *     before anything is written anywhere.
 *  2. Policy hook (allow for now; the policy engine plugs in here).
 *  3. Build the Task: a new ULID, tenant and principal from the credential, the lane from the
 *     task type, versions.config_hash from the catalog it was admitted under.
 *  4. Idempotency: SET NX af:idem:{tenant}:<key> -> task id (24h). A repeat returns the earlier
 *     task instead of creating a second one; a failed publish deletes the key again.
 *     Once the Task is acknowledged the key's value becomes "<id>:published".
 *     4b. Takeover: a coordinator killed between the SET NX and the Task's acknowledgement
 *     leaves a key that never becomes published, whose task never runs. A repeat that finds
 *     the key unpublished answers "retry later" (503; the intake keeps the request and its
 *     offset) while the first admission may still be under way, and once the key is older
 *     than the takeover grace, with the earlier task showing no index entry or only its
 *     QUEUED record, publishes it again (same id).
 *  5. Publish the QUEUED TaskResult to `results`, and once Kafka acknowledged it, index it and
 *     publish the Task to `tasks.<lane>`. This order keeps the compacted `results` from ending
 *     on QUEUED when a fast worker's final record raced ahead of it. The index is told of the
 *     record before it is produced, so that reading it back from `results` costs nothing.
 *  6. Audit task.admitted, and only then answer: a task reported accepted is in Kafka
 *     (acks=all) and cannot be lost, and the index shows it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "clock.h"
#include "coord.h"
#include "ids.h"
#include "log.h"
#include "wire_json.h"

/* Appended to the task id in an idempotency key's value once the Task is in Kafka. */
#define IDEM_PUBLISHED ":published"

typedef struct adm_s {
        af_coord_t *co;
        af_admit_cb_t *cb;
        void *opaque;
        Agentfleet__V1__Task task; /* strings malloc'ed, freed in adm_free */
        Agentfleet__V1__Versions versions;
        Agentfleet__V1__TaskResult queued; /* points into task's strings */
        Agentfleet__V1__Timings timings;
        char topic_tasks[AF_COORD_TOPIC_MAX];
        char *idem_rkey;    /* Redis key when idempotent, else NULL */
        bool idem_reserved; /* we own the key: delete it if we fail */
        int idem_tries;
        bool case_key_is_id;  /* the request named no case key: the case key is the id */
        int64_t idem_age_ms;  /* age of an earlier reservation found (step 4), -1 unknown */
        json_t *replay_entry; /* the earlier task's index entry while a takeover is tried */
        const char *takeover; /* why the earlier task is re-published, or NULL (step 4b) */
        bool idem_published;  /* the earlier reservation is marked published (step 4) */
        int64_t t0_us;
} adm_t;

static char *xstrdup(const char *s) {
        return strdup(s ? s : "");
}

static void adm_free(adm_t *a) {
        Agentfleet__V1__Task *t = &a->task;
        char **strs[] = {&t->id,
                         &t->type,
                         &t->tenant,
                         &t->principal,
                         &t->case_key,
                         &t->idempotency_key,
                         &t->payload,
                         &t->traceparent,
                         &t->lane,
                         &t->request_id,
                         &a->versions.config_hash};
        for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
                if (*strs[i] != (char *) protobuf_c_empty_string)
                        free(*strs[i]);
        free(a->idem_rkey);
        json_decref(a->replay_entry);
        free(a);
}

int af_admit_http_status(af_err_t err) {
        switch (err) {
        case AF_OK:
                return 202;
        case AF_ERR_INVALID:
        case AF_ERR_NOT_FOUND:
                return 400;
        case AF_ERR_TOO_LARGE:
                return 413;
        case AF_ERR_UNAUTHENTICATED:
                return 401;
        case AF_ERR_FORBIDDEN:
                return 403;
        case AF_ERR_UNAVAILABLE:
        case AF_ERR_TIMEOUT:
                return 503;
        default:
                return 500;
        }
}

static const char *outcome_name(af_err_t err, bool replayed) {
        if (!err)
                return replayed ? "replayed" : "admitted";
        return af_err2code(err);
}

/* Answer the caller once and free the admission. task may be NULL on error. */
static void adm_finish_after(adm_t *a, af_err_t err, const char *msg, bool replayed, json_t *task,
                             int64_t retry_after_ms) {
        af_coord_t *co = a->co;
        af_admit_out_t out = {.err = err,
                              .message = msg,
                              .replayed = replayed,
                              .task_id = a->task.id,
                              .task = task,
                              .retry_after_ms = retry_after_ms};
        const char *lv[] = {a->task.type, outcome_name(err, replayed), NULL};
        const char *ov[] = {af_wire_origin2str(a->task.origin), NULL};

        af_metric_add(co->m.admissions, lv, 1);
        if (!err)
                af_metric_observe(co->m.admit_seconds, ov,
                                  (double) (af_clock_mono_us() - a->t0_us) / 1e6);
        if (err && a->idem_reserved && !co->closing) {
                /* The key must not point at a task that was never published. While closing
                 * (a report purged at teardown), whether it was is unknown: the key stays, and
                 * a repeat after the takeover grace publishes the task (step 4b). */
                const char *argv[] = {"DEL", a->idem_rkey};
                af_redis_commandv(co->redis, NULL, NULL, 2, argv, NULL);
        }
        co->inflight--;
        af_metric_set(co->m.inflight, NULL, co->inflight);
        a->cb(&out, a->opaque);
        adm_free(a);
}

static void adm_finish(adm_t *a, af_err_t err, const char *msg, bool replayed, json_t *task) {
        adm_finish_after(a, err, msg, replayed, task, 0);
}

/* Answer "unavailable, retry in a second" with a message naming the task. */
static void adm_retry_soon(adm_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void adm_retry_soon(adm_t *a, const char *fmt, ...) {
        char msg[192];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        adm_finish_after(a, AF_ERR_UNAVAILABLE, msg, false, NULL, 1000);
}

/* ---- step 1-3: validate and build ------------------------------------------------------- */

static void traceparent_new(char out[56]) {
        uint8_t rnd[24];
        char hex[49];
        af_random_bytes(rnd, sizeof(rnd));
        af_hex_encode(rnd, sizeof(rnd), hex);
        snprintf(out, 56, "00-%.32s-%.16s-01", hex, hex + 32);
}

/* The policy engine's place: who may trigger which type, quotas, data scopes. Until it
 * lands every authenticated principal may submit every configured type. */
static af_err_t policy_check(af_coord_t *co, const af_identity_t *who, const af_task_type_t *tt,
                             char *errstr, size_t errstr_size) {
        (void) co;
        (void) who;
        (void) tt;
        (void) errstr;
        (void) errstr_size;
        return AF_OK;
}

static af_err_t validate_and_build(adm_t *a, const af_admit_in_t *in, char *errstr,
                                   size_t errstr_size) {
        af_coord_t *co = a->co;
        const Agentfleet__V1__TaskRequest *req = in->req;
        const af_task_type_t *tt;
        const char *payload = req->payload && *req->payload ? req->payload : "{}";
        int64_t max_payload = co->max_payload;
        char tp[56];
        af_err_t err = AF_OK;
        Agentfleet__V1__Task *t = &a->task;

        if (!req->type || !*req->type) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size, "field \"type\": required");
                goto out;
        }
        if (!(tt = af_catalog_task_type(co->cat, req->type))) {
                err = af_errstr(AF_ERR_NOT_FOUND, errstr, errstr_size,
                                "field \"type\": unknown task type \"%.64s\"", req->type);
                goto out;
        }
        if (tt->max_payload_bytes > 0 && tt->max_payload_bytes < max_payload)
                max_payload = tt->max_payload_bytes;
        if ((err = af_wire_taskrequest_check_payload(req, (size_t) max_payload, in->payload_object,
                                                     af_clock_wall_ms(), errstr, errstr_size)))
                goto out;
        if (in->idem_key && strlen(in->idem_key) > AF_WIRE_KEY_MAX) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "Idempotency-Key: longer than %d bytes", AF_WIRE_KEY_MAX);
                goto out;
        }
        if ((err = policy_check(co, in->who, tt, errstr, errstr_size)))
                goto out;

        /* Build. Strings are copied: the request and the catalog may go away (SIGHUP). */
        char id[AF_ULID_LEN + 1];
        af_ulid_new(id);
        if (!(req->traceparent && *req->traceparent))
                traceparent_new(tp);
        t->id = xstrdup(id);
        t->type = xstrdup(tt->name);
        t->tenant = xstrdup(in->who->tenant);
        t->principal = xstrdup(in->who->principal);
        a->case_key_is_id = !(req->case_key && *req->case_key);
        t->case_key = xstrdup(a->case_key_is_id ? id : req->case_key);
        t->idempotency_key = xstrdup(in->idem_key);
        t->payload = xstrdup(payload);
        t->priority = req->priority;
        t->deadline_ms = req->deadline_ms;
        t->attempt = 1;
        t->max_attempts = req->max_attempts ? req->max_attempts
                                            : (tt->max_attempts > 0 ? tt->max_attempts : 3);
        t->created_at_ms = af_clock_wall_ms();
        t->traceparent = xstrdup(req->traceparent && *req->traceparent ? req->traceparent : tp);
        a->versions.config_hash = xstrdup(co->cat->hash);
        t->versions = &a->versions;
        t->lane = xstrdup(tt->lane && *tt->lane ? tt->lane : "default");
        t->origin = in->origin;
        t->request_id = xstrdup(req->request_id);
        if (!t->id || !t->type || !t->tenant || !t->principal || !t->case_key ||
            !t->idempotency_key || !t->payload || !t->traceparent || !t->lane || !t->request_id ||
            !a->versions.config_hash) {
                err = af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                goto out;
        }
        char suffix[80];
        snprintf(suffix, sizeof(suffix), "tasks.%.64s", t->lane);
        af_kafka_topic(co->conf, suffix, a->topic_tasks, sizeof(a->topic_tasks));

        /* The QUEUED record: what the index and any reader of `results` see first. */
        a->queued.task_id = t->id;
        a->queued.status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_QUEUED;
        a->queued.attempt = t->attempt;
        a->timings.created_at_ms = t->created_at_ms;
        a->queued.timings = &a->timings;
        a->queued.versions = &a->versions;
        a->queued.type = t->type;
        a->queued.tenant = t->tenant;
        a->queued.principal = t->principal;
        a->queued.case_key = t->case_key;
        a->queued.idempotency_key = t->idempotency_key;
        a->queued.traceparent = t->traceparent;
out:
        return err;
}

/* ---- step 5-6: publish ------------------------------------------------------------------ */

static af_err_t produce_msg(af_coord_t *co, const char *topic, const char *key, uint8_t *bytes,
                            size_t len, const char *traceparent, af_delivery_cb_t *cb, void *opaque,
                            char *errstr, size_t errstr_size) {
        if (!co->producer)
                return af_errstr(AF_ERR_UNAVAILABLE, errstr, errstr_size,
                                 "coordinator is shutting down");
        return af_producer_send_pb(co->producer, topic, key, bytes, len, traceparent, cb, opaque,
                                   errstr, errstr_size);
}

/* Produce res to `results`; with own, first register its bytes with the index (the QUEUED
 * record, which admission indexes itself: af_index_own_expect). */
static af_err_t produce_result(af_coord_t *co, const Agentfleet__V1__TaskResult *res, bool own,
                               af_delivery_cb_t *cb, void *opaque, char *errstr,
                               size_t errstr_size) {
        size_t len = agentfleet__v1__task_result__get_packed_size(res);
        uint8_t *bytes = malloc(len ? len : 1);
        af_err_t err;
        if (!bytes)
                return af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
        agentfleet__v1__task_result__pack(res, bytes);
        if (own)
                af_index_own_expect(co->index, res->task_id, bytes, len);
        err = produce_msg(co, co->topic_results, res->task_id, bytes, len, res->traceparent, cb,
                          opaque, errstr, errstr_size);
        free(bytes);
        if (err && own)
                af_index_own_drop(co->index, res);
        return err;
}

/* @returns whether s goes into a JSON string as it is: printable ASCII, no quote, no
 * backslash. */
static bool json_plain(const char *s) {
        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if (*p < 0x20 || *p > 0x7e || *p == '"' || *p == '\\')
                        return false;
        return true;
}

/* The details of task.admitted, as JSON text (caller frees; NULL on OOM). Written directly
 * when no value needs escaping (the usual case): the same text as jansson's compact dump,
 * whose json_pack + json_dumps cost about 20k instructions per admitted task. */
static char *admitted_details(const adm_t *a) {
        const char *k[] = {"type", "lane", "origin", "request_id", "case_key"};
        const char *v[] = {a->task.type, a->task.lane, af_wire_origin2str(a->task.origin),
                           a->task.request_id, a->task.case_key};
        size_t n = sizeof(k) / sizeof(k[0]);
        char *details = NULL;
        bool plain = true;
        af_err_t err = AF_OK;
        af_buf_t b;

        for (size_t i = 0; i < n; i++)
                plain = plain && json_plain(v[i]);
        if (!plain) {
                json_t *d = json_pack("{s:s, s:s, s:s, s:s, s:s}", k[0], v[0], k[1], v[1], k[2],
                                      v[2], k[3], v[3], k[4], v[4]);
                details = d ? json_dumps(d, JSON_COMPACT) : NULL;
                json_decref(d);
                goto out;
        }
        af_buf_init(&b, 64 * 1024);
        for (size_t i = 0; i < n && !err; i++) {
                const char *parts[] = {i ? ",\"" : "{\"", k[i], "\":\"", v[i], "\""};
                for (size_t j = 0; j < sizeof(parts) / sizeof(parts[0]) && !err; j++)
                        err = af_buf_puts(&b, parts[j]);
        }
        if (!err)
                err = af_buf_puts(&b, "}");
        if (!err) /* on an error the buffer freed itself */
                details = af_buf_steal(&b, NULL);
out:
        return details;
}

static void audit_admitted(adm_t *a) {
        Agentfleet__V1__AuditEvent ev = AGENTFLEET__V1__AUDIT_EVENT__INIT;
        char *details = admitted_details(a);

        ev.actor = a->task.principal;
        ev.actor_kind = AGENTFLEET__V1__ACTOR_KIND__ACTOR_KIND_PRINCIPAL;
        ev.action = "task.admitted";
        ev.task_id = a->task.id;
        ev.tenant = a->task.tenant;
        ev.decision = "allow";
        ev.reason = "admitted";
        ev.versions = &a->versions;
        ev.details = details ? details : "";
        ev.traceparent = a->task.traceparent;
        if (a->co->audit)
                af_audit_emit(a->co->audit, &ev, NULL, NULL);
        free(details);
}

static void failed_dr(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                      void *opaque) {
        if (err)
                af_error("a FAILED (publish_failed) record was not delivered: %s",
                         errstr ? errstr : af_err2str(err));
}

/* The Task could not be published after its QUEUED record was: close the record with a
 * FAILED result so no reader waits on a task that will never run. Not while closing: the
 * Task's report was purged, it may have been published, and the idempotency key stays for a
 * takeover (step 4b), which publishes it again. */
static void publish_failed_result(adm_t *a, const char *why) {
        Agentfleet__V1__TaskResult res = a->queued;
        Agentfleet__V1__Error e = AGENTFLEET__V1__ERROR__INIT;
        char errstr[256];

        if (a->co->closing) {
                af_log_task(AF_LOG_WARN, a->task.id, NULL,
                            "Task not acknowledged before shutdown (%s): left to a takeover", why);
                return;
        }
        e.code = (char *) "publish_failed";
        e.message = (char *) why;
        e.retriable = 1;
        res.status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED;
        res.error = &e;
        if (produce_result(a->co, &res, false, failed_dr, NULL, errstr, sizeof(errstr)))
                af_error("task %s: FAILED record not produced: %s", a->task.id, errstr);
        af_index_apply(a->co->index, &res);
}

/* A takeover (step 4b) published the task again: audit it with its reason and count it. */
static void audit_republished(adm_t *a) {
        af_coord_t *co = a->co;
        const char *lv[] = {a->takeover, NULL};
        char reason[160];
        json_t *d;
        char *details;

        snprintf(reason, sizeof(reason), "%s: idempotency key reserved %lld ms ago (grace %lld ms)",
                 !strcmp(a->takeover, "no_record") ? "no QUEUED record: QUEUED and Task published"
                                                   : "QUEUED record only: Task published again",
                 (long long) a->idem_age_ms, (long long) co->takeover_grace_ms);
        d = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "reason", a->takeover, "type", a->task.type,
                      "lane", a->task.lane, "origin", af_wire_origin2str(a->task.origin),
                      "reservation_age_ms", (json_int_t) a->idem_age_ms, "grace_ms",
                      (json_int_t) co->takeover_grace_ms);
        details = d ? json_dumps(d, JSON_COMPACT) : NULL;
        if (co->audit)
                af_audit_record(co->audit, a->task.principal,
                                AGENTFLEET__V1__ACTOR_KIND__ACTOR_KIND_PRINCIPAL,
                                "task.republished", a->task.id, a->task.tenant, "allow", reason,
                                details);
        af_metric_add(co->m.republished, lv, 1);
        free(details);
        json_decref(d);
}

/* The Task is in Kafka: say so in the idempotency key (same lifetime), so that a repeat
 * answers at once instead of waiting out the takeover grace. Nobody waits for the reply: if
 * it is lost, a repeat only waits, then publishes the task again, which is harmless. */
static void idem_mark_published(adm_t *a) {
        char val[AF_ULID_LEN + sizeof(IDEM_PUBLISHED)];
        snprintf(val, sizeof(val), "%s" IDEM_PUBLISHED, a->task.id);
        const char *argv[] = {"SET", a->idem_rkey, val, "XX", "KEEPTTL"};
        af_redis_commandv(a->co->redis, NULL, NULL, 5, argv, NULL);
}

/* Kafka did not answer a record of this admission in time (librdkafka's message timeout),
 * after it was sent: it may be in the log. With an idempotency key the admission is left as
 * a coordinator that died would leave it: the key stays, no FAILED record, and a repeat after
 * the takeover grace publishes the task again under the same id (step 4b). Deleting the key
 * would let that repeat make a second task while the first may run. @returns whether it
 * was left so; the caller still answers "retry". */
static bool publish_in_doubt(adm_t *a, af_err_t err, const char *errstr) {
        if (err != AF_ERR_IN_DOUBT || !a->idem_reserved)
                return false;
        a->idem_reserved = false; /* the key is not ours to delete any more */
        af_log_task(AF_LOG_WARN, a->task.id, NULL,
                    "Kafka did not confirm the task in time (%s); it may be published: left to "
                    "a repeat after the takeover grace",
                    errstr ? errstr : af_err2str(err));
        adm_retry_soon(a,
                       "Kafka did not confirm task %s in time; it may be published: retry with "
                       "the same idempotency key",
                       a->task.id);
        return true;
}

static void task_dr(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                    void *opaque) {
        adm_t *a = opaque;
        json_t *j;

        if (publish_in_doubt(a, err, errstr))
                return;
        if (err) {
                af_log_task(AF_LOG_ERROR, a->task.id, NULL, "task not published to %s: %s",
                            a->topic_tasks, errstr ? errstr : af_err2str(err));
                publish_failed_result(a, errstr ? errstr : af_err2str(err));
                adm_finish(a, AF_ERR_UNAVAILABLE, "Kafka did not accept the task; retry", false,
                           NULL);
                return;
        }
        if (a->idem_rkey)
                idem_mark_published(a);
        if (a->takeover)
                audit_republished(a);
        else
                audit_admitted(a);
        af_log_task(AF_LOG_DEBUG, a->task.id, NULL, "%s %s to %s [%d] @%lld",
                    a->takeover ? "republished" : "admitted", a->task.type, a->topic_tasks,
                    (int) partition, (long long) offset);
        /* Only the API answers with the task; a request from Kafka is just acknowledged,
         * and building the JSON view was a tenth of the coordinator's CPU per task. */
        j = a->task.origin == AGENTFLEET__V1__ORIGIN__ORIGIN_KAFKA ? NULL
                                                                   : af_wire_task_to_json(&a->task);
        if (j)
                json_object_set_new(j, "status", json_string("queued"));
        adm_finish(a, AF_OK, NULL, a->takeover != NULL /*a repeat*/, j);
        json_decref(j);
}

static void publish_task(adm_t *a) {
        char errstr[256];
        size_t len = agentfleet__v1__task__get_packed_size(&a->task);
        uint8_t *bytes = malloc(len ? len : 1);
        af_err_t err;

        if (!bytes) {
                publish_failed_result(a, "out of memory");
                adm_finish(a, AF_ERR_NOMEM, "out of memory", false, NULL);
                return;
        }
        agentfleet__v1__task__pack(&a->task, bytes);
        err = produce_msg(a->co, a->topic_tasks, a->task.case_key, bytes, len, a->task.traceparent,
                          task_dr, a, errstr, sizeof(errstr));
        free(bytes);
        if (err) {
                publish_failed_result(a, errstr);
                adm_finish(a, AF_ERR_UNAVAILABLE, errstr, false, NULL);
        }
}

static void queued_dr(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                      void *opaque) {
        adm_t *a = opaque;
        if (err)
                af_index_own_drop(a->co->index, &a->queued);
        if (publish_in_doubt(a, err, errstr))
                return;
        if (err) {
                af_log_task(AF_LOG_WARN, a->task.id, NULL, "QUEUED record not produced: %s",
                            errstr ? errstr : af_err2str(err));
                adm_finish(a, AF_ERR_UNAVAILABLE, "Kafka did not accept the task; retry", false,
                           NULL);
                return;
        }
        /* Indexed now rather than after the Task's acknowledgement: the record is in
         * `results` already, and the index's own read-back of it is skipped meanwhile. */
        af_index_own_apply(a->co->index, &a->queued);
        publish_task(a);
}

static void publish_queued(adm_t *a) {
        char errstr[256];
        af_err_t err = produce_result(a->co, &a->queued, true /*own*/, queued_dr, a, errstr,
                                      sizeof(errstr));
        if (err)
                adm_finish(a, AF_ERR_UNAVAILABLE, errstr, false, NULL);
}

/* ---- step 4: idempotency ---------------------------------------------------------------- */

/* The reservation and its remaining lifetime in one round trip: the age of a reservation is
 * coordinator.idempotency_ttl minus its PTTL, so no timestamp has to be stored with it.
 * KEYS: idem. Reply: {value or nil, pttl}. */
static const char lua_idem_lookup[] =
        "return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}\n";

/* Claim the takeover of an old reservation: only if the key still names the task and is still
 * older than the grace, restart its lifetime. The restart is what makes the claim exclusive:
 * a second repeat finds the reservation young again and answers as usual, so within a grace
 * one coordinator at most publishes the task again, and its own publish has reported (or it
 * died) before anyone may take over from it in turn.
 * KEYS: idem. ARGV: task id, ttl_ms, largest PTTL that is old enough. Reply: 1 claimed, 0 not. */
static const char lua_idem_claim[] = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
                                     "local t = redis.call('PTTL', KEYS[1])\n"
                                     "if t < 0 or t > tonumber(ARGV[3]) then return 0 end\n"
                                     "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                     "return 1\n";

static void idem_reserve(adm_t *a);

/* The answer to a repeat: the earlier task's index entry, or, while the first admission is
 * still being published, its id as "queued". */
static void replay_answer(adm_t *a, json_t *entry) {
        json_t *j;

        if (entry) {
                adm_finish(a, AF_OK, NULL, true, entry);
                return;
        }
        j = json_pack("{s:s, s:s, s:s}", "id", a->task.id, "task_id", a->task.id, "status",
                      "queued");
        adm_finish(a, AF_OK, NULL, true, j);
        json_decref(j);
}

/* @returns why the earlier task may never have been published ("no_record": not even its
 *          QUEUED record is indexed; "queued_only": nothing after QUEUED), or NULL when a
 *          worker has seen it. A cancel requested before any worker did changes nothing: the
 *          Task must still reach a worker, which then emits the one CANCELLED result. */
static const char *takeover_reason(const json_t *entry) {
        const char *status;

        if (!entry)
                return "no_record";
        status = json_string_value(json_object_get(entry, "status"));
        if (status && (!strcmp(status, "queued") || !strcmp(status, "cancel_requested")))
                return "queued_only";
        return NULL;
}

static void takeover_claimed(af_redis_t *r, const redisReply *reply, const af_error_t *e,
                             void *opaque) {
        adm_t *a = opaque;
        json_t *entry = a->replay_entry;

        if (e && e->err) {
                adm_finish(a, AF_ERR_UNAVAILABLE, "Redis unavailable; retry", false, NULL);
                return;
        }
        if (reply->type != REDIS_REPLY_INTEGER || reply->integer != 1) {
                /* Another repeat took over first, or the key changed: answer as usual. */
                a->takeover = NULL;
                replay_answer(a, entry);
                return;
        }
        /* The key is ours again: like a first admission, a failure from here on deletes it,
         * so the client's retry becomes a new task rather than waiting on this one. */
        a->idem_reserved = true;
        af_log_task(AF_LOG_WARN, a->task.id, a->task.traceparent,
                    "idempotency key reserved %lld ms ago and task not published (%s): "
                    "publishing it again",
                    (long long) a->idem_age_ms, a->takeover);
        json_decref(a->replay_entry);
        a->replay_entry = NULL;
        /* Why a second Task message for this id is harmless: the worker takes the task's lease
         * (libcommon/lease.c, lua_acquire) before anything else, in one script that answers
         * DONE with the stored result if the task was finished (worker/lease_stage.c re-emits
         * it, never re-runs), HELD while another worker runs it (re-checked until DONE), and
         * CANCELLED if a cancel was requested; only ACQUIRED runs it, once per fence.
         *
         * Why a QUEUED record produced here cannot end the compacted `results` after a later
         * record of this task: by the grace the original admission's QUEUED produce has been
         * reported (it landed, and was indexed, or it never will); ours is produced before our
         * Task, on the same key, and every answer of a worker to that Task (a run's result, a
         * DONE re-emit, CANCELLED) is a later record in the same partition -- the done record
         * outlives the key as long as worker.done_ttl >= coordinator.idempotency_ttl (both 24 h
         * by default). A task with its QUEUED indexed gets only the Task again. */
        if (!strcmp(a->takeover, "no_record"))
                publish_queued(a);
        else
                publish_task(a);
}

/* The earlier task's index entry (borrowed), before answering a repeat. */
static void replay_got(json_t *entry, const af_error_t *e, void *opaque) {
        adm_t *a = opaque;
        af_coord_t *co = a->co;
        int64_t grace = co->takeover_grace_ms;
        char ttl[32], max_pttl[32];
        const char *why;

        if (e && e->err) {
                adm_finish(a, AF_ERR_UNAVAILABLE, "Redis unavailable; retry", false, NULL);
                return;
        }
        why = a->idem_published ? NULL : takeover_reason(entry);
        if (!why) {
                replay_answer(a, entry);
                return;
        }
        /* Not published yet, as far as anyone can tell: the first admission may still be
         * under way, or its coordinator died. Until the grace says which, a retry is the
         * answer -- "queued" would be a promise nobody keeps if it died. */
        if (grace < 0 || a->idem_age_ms < 0 || a->idem_age_ms < grace) {
                /* Usually the first admission ends within milliseconds. */
                adm_retry_soon(a,
                               "an earlier request with this idempotency key (task %s) is still "
                               "being admitted; retry",
                               a->task.id);
                return;
        }
        a->takeover = why;
        a->replay_entry = json_incref(entry);
        int64_t ttl_ms = af_config_int(co->conf, "coordinator.idempotency_ttl");
        snprintf(ttl, sizeof(ttl), "%lld", (long long) ttl_ms);
        snprintf(max_pttl, sizeof(max_pttl), "%lld", (long long) (ttl_ms - grace));
        const char *keys[] = {a->idem_rkey};
        const char *args[] = {a->task.id, ttl, max_pttl};
        af_redis_script_run(co->redis, af_redis_script_add(co->redis, lua_idem_claim),
                            takeover_claimed, a, 1, keys, 3, args);
}

/* From here on the admission describes the earlier task, whose id the key holds. The Task is
 * still built from this request, which carries the same idempotency key; it is published
 * only by a takeover (step 4b). */
static af_err_t adopt_task_id(adm_t *a, const char *id) {
        char *tid = strdup(id);
        char *ck = a->case_key_is_id ? strdup(id) : NULL;

        if (!tid || (a->case_key_is_id && !ck)) {
                free(tid);
                free(ck);
                return AF_ERR_NOMEM;
        }
        free(a->task.id);
        a->task.id = tid;
        a->queued.task_id = tid;
        if (ck) {
                free(a->task.case_key);
                a->task.case_key = ck;
                a->queued.case_key = ck;
        }
        return AF_OK;
}

static void idem_lookup_cb(af_redis_t *r, const redisReply *reply, const af_error_t *e,
                           void *opaque) {
        adm_t *a = opaque;
        const redisReply *val = NULL;
        int64_t ttl_ms;

        if (e && e->err) {
                adm_finish(a, AF_ERR_UNAVAILABLE, "Redis unavailable; retry", false, NULL);
                return;
        }
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
            reply->element[1]->type == REDIS_REPLY_INTEGER)
                val = reply->element[0];
        if (val && val->type == REDIS_REPLY_STRING &&
            (val->len == AF_ULID_LEN ||
             (val->len == AF_ULID_LEN + strlen(IDEM_PUBLISHED) &&
              !memcmp(val->str + AF_ULID_LEN, IDEM_PUBLISHED, strlen(IDEM_PUBLISHED))))) {
                char id[AF_ULID_LEN + 1];
                memcpy(id, val->str, AF_ULID_LEN);
                id[AF_ULID_LEN] = '\0';
                if (!af_ulid_valid(id))
                        goto again;
                a->idem_published = val->len > AF_ULID_LEN;
                /* A key without expiry (PTTL -1) was not set by us: never old enough. */
                ttl_ms = af_config_int(a->co->conf, "coordinator.idempotency_ttl");
                a->idem_age_ms =
                        reply->element[1]->integer >= 0 ? ttl_ms - reply->element[1]->integer : -1;
                if (adopt_task_id(a, id)) {
                        adm_finish(a, AF_ERR_NOMEM, "out of memory", false, NULL);
                        return;
                }
                af_index_get(a->co->index, a->task.id, replay_got, a);
                return;
        }
again:
        /* Expired between SET and GET: try to reserve again, a bounded number of times. */
        idem_reserve(a);
}

static void idem_set_cb(af_redis_t *r, const redisReply *reply, const af_error_t *e, void *opaque) {
        adm_t *a = opaque;
        if (e && e->err) {
                adm_finish(a, AF_ERR_UNAVAILABLE,
                           "Redis unavailable for the idempotency "
                           "check; retry",
                           false, NULL);
                return;
        }
        if (reply->type == REDIS_REPLY_STATUS) {
                a->idem_reserved = true;
                publish_queued(a);
                return;
        }
        const char *keys[] = {a->idem_rkey};
        af_redis_script_run(a->co->redis, af_redis_script_add(a->co->redis, lua_idem_lookup),
                            idem_lookup_cb, a, 1, keys, 0, NULL);
}

static void idem_reserve(adm_t *a) {
        char ttl[32];
        if (++a->idem_tries > 3) {
                adm_finish(a, AF_ERR_UNAVAILABLE, "idempotency key is contended; retry", false,
                           NULL);
                return;
        }
        snprintf(ttl, sizeof(ttl), "%lld",
                 (long long) af_config_int(a->co->conf, "coordinator.idempotency_ttl"));
        const char *argv[] = {"SET", a->idem_rkey, a->task.id, "NX", "PX", ttl};
        af_redis_commandv(a->co->redis, idem_set_cb, a, 6, argv, NULL);
}

/* ---- the takeover grace ----------------------------------------------------------------- */

/* librdkafka's default message.timeout.ms (delivery.timeout.ms is its alias). */
#define KAFKA_MESSAGE_TIMEOUT_DEFAULT_MS 300000
/* Scheduling slack on top of the bounds below: loop turns, a busy machine. */
#define TAKEOVER_SLACK_MS 5000

static void message_timeout_cb(const char *key, const char *value, void *opaque) {
        char *end;
        long long v;

        if (strcmp(key, "message.timeout.ms") && strcmp(key, "delivery.timeout.ms"))
                return;
        v = strtoll(value, &end, 10);
        if (end != value && !*end && v >= 0)
                *(int64_t *) opaque = v;
}

int64_t af_admit_takeover_grace(const af_config_t *conf) {
        int64_t msg_timeout = KAFKA_MESSAGE_TIMEOUT_DEFAULT_MS;

        /* coordinator.takeover_grace: a positive value wins, 0 means derived as below. */
        if (af_config_int(conf, "coordinator.takeover_grace") > 0)
                return af_config_int(conf, "coordinator.takeover_grace");
        af_config_kafka_foreach(conf, message_timeout_cb, &msg_timeout);
        /* 0 is librdkafka's "no timeout": a produce may still land at any time, so no age is
         * safe and a reservation is never taken over. */
        if (msg_timeout <= 0)
                return -1;
        /* An admission, counted from its SET NX: the SET's reply (or the command timeout, after
         * which it gives up and publishes nothing), the QUEUED produce (reported, delivered or
         * not, within the message timeout), its index write (command timeout), the Task
         * produce (message timeout again). */
        return 2 * msg_timeout + 2 * af_config_int(conf, "redis.command_timeout") +
               TAKEOVER_SLACK_MS;
}

/* ---- entry ------------------------------------------------------------------------------ */

void af_admit_submit(af_coord_t *co, const af_admit_in_t *in, af_admit_cb_t *cb, void *opaque) {
        char errstr[512] = "";
        af_err_t err;
        adm_t *a = calloc(1, sizeof(*a));

        if (!a) {
                af_admit_out_t out = {.err = AF_ERR_NOMEM, .message = "out of memory"};
                cb(&out, opaque);
                return;
        }
        a->co = co;
        a->cb = cb;
        a->opaque = opaque;
        a->t0_us = af_clock_mono_us();
        a->idem_age_ms = -1;
        agentfleet__v1__task__init(&a->task);
        agentfleet__v1__versions__init(&a->versions);
        agentfleet__v1__task_result__init(&a->queued);
        agentfleet__v1__timings__init(&a->timings);
        a->task.type = (char *) protobuf_c_empty_string;
        co->inflight++;
        af_metric_set(co->m.inflight, NULL, co->inflight);

        if (co->draining || co->closing) {
                adm_finish(a, AF_ERR_UNAVAILABLE, "coordinator is shutting down; retry", false,
                           NULL);
                return;
        }
        if ((err = validate_and_build(a, in, errstr, sizeof(errstr)))) {
                /* Label metrics with a known type only: outside input must not mint series. */
                const char *label = in->req->type && af_catalog_task_type(co->cat, in->req->type)
                                            ? in->req->type
                                            : "unknown";
                if (a->task.type != (char *) protobuf_c_empty_string)
                        free(a->task.type);
                a->task.type = xstrdup(label);
                adm_finish(a, err, errstr, false, NULL);
                return;
        }
        if (in->idem_key && *in->idem_key) {
                size_t n = strlen(a->task.tenant) + strlen(in->idem_key) + 16;
                a->idem_rkey = malloc(n);
                if (!a->idem_rkey) {
                        adm_finish(a, AF_ERR_NOMEM, "out of memory", false, NULL);
                        return;
                }
                snprintf(a->idem_rkey, n, "af:idem:{%s}:%s", a->task.tenant, in->idem_key);
                idem_reserve(a);
                return;
        }
        publish_queued(a);
}
