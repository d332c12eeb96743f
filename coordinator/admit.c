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
 *  5. Publish the QUEUED TaskResult to `results`, and once Kafka acknowledged it, index it and
 *     publish the Task to `tasks.<lane>`. This order keeps the compacted `results` from ending
 *     on QUEUED when a fast worker's final record raced ahead of it. The index is told of the
 *     record before it is produced, so that reading it back from `results` costs nothing.
 *  6. Audit task.admitted, and only then answer: a task reported accepted is in Kafka
 *     (acks=all) and cannot be lost, and the index shows it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "clock.h"
#include "coord.h"
#include "ids.h"
#include "log.h"
#include "wire_json.h"

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
static void adm_finish(adm_t *a, af_err_t err, const char *msg, bool replayed, json_t *task) {
        af_coord_t *co = a->co;
        af_admit_out_t out = {.err = err,
                              .message = msg,
                              .replayed = replayed,
                              .task_id = a->task.id,
                              .task = task};
        const char *lv[] = {a->task.type, outcome_name(err, replayed), NULL};
        const char *ov[] = {af_wire_origin2str(a->task.origin), NULL};

        af_metric_add(co->m.admissions, lv, 1);
        if (!err)
                af_metric_observe(co->m.admit_seconds, ov,
                                  (double) (af_clock_mono_us() - a->t0_us) / 1e6);
        if (err && a->idem_reserved) {
                /* The key must not point at a task that was never published. */
                const char *argv[] = {"DEL", a->idem_rkey};
                af_redis_commandv(co->redis, NULL, NULL, 2, argv, NULL);
        }
        co->inflight--;
        af_metric_set(co->m.inflight, NULL, co->inflight);
        a->cb(&out, a->opaque);
        adm_free(a);
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
        if ((err = af_wire_taskrequest_check(req, (size_t) max_payload, af_clock_wall_ms(), errstr,
                                             errstr_size)))
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
        t->case_key = xstrdup(req->case_key && *req->case_key ? req->case_key : id);
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
        static const char ct[] = "application/x-protobuf";
        af_kafka_header_t hdrs[2] = {{"content-type", ct, sizeof(ct) - 1},
                                     {"traceparent", traceparent, strlen(traceparent)}};
        return af_producer_send(co->producer, topic, -1 /*by key*/, key, strlen(key), bytes, len,
                                hdrs, 2, cb, opaque, errstr, errstr_size);
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

/* The Task could not be published after its QUEUED record was: close the record with a
 * FAILED result so no reader waits on a task that will never run. */
static void publish_failed_result(adm_t *a, const char *why) {
        Agentfleet__V1__TaskResult res = a->queued;
        Agentfleet__V1__Error e = AGENTFLEET__V1__ERROR__INIT;
        char errstr[256];
        e.code = (char *) "publish_failed";
        e.message = (char *) why;
        e.retriable = 1;
        res.status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED;
        res.error = &e;
        if (produce_result(a->co, &res, false, NULL, NULL, errstr, sizeof(errstr)))
                af_error("task %s: FAILED record not produced: %s", a->task.id, errstr);
        af_index_apply(a->co->index, &res);
}

static void task_dr(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                    void *opaque) {
        adm_t *a = opaque;
        json_t *j;

        if (err) {
                af_log_task(AF_LOG_ERROR, a->task.id, NULL, "task not published to %s: %s",
                            a->topic_tasks, errstr ? errstr : af_err2str(err));
                publish_failed_result(a, errstr ? errstr : af_err2str(err));
                adm_finish(a, AF_ERR_UNAVAILABLE, "Kafka did not accept the task; retry", false,
                           NULL);
                return;
        }
        audit_admitted(a);
        af_log_task(AF_LOG_DEBUG, a->task.id, NULL, "admitted %s to %s [%d] @%lld", a->task.type,
                    a->topic_tasks, (int) partition, (long long) offset);
        /* Only the API answers with the task; a request from Kafka is just acknowledged,
         * and building the JSON view was a tenth of the coordinator's CPU per task. */
        j = a->task.origin == AGENTFLEET__V1__ORIGIN__ORIGIN_KAFKA ? NULL
                                                                   : af_wire_task_to_json(&a->task);
        if (j)
                json_object_set_new(j, "status", json_string("queued"));
        adm_finish(a, AF_OK, NULL, false, j);
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
        if (err) {
                af_log_task(AF_LOG_WARN, a->task.id, NULL, "QUEUED record not produced: %s",
                            errstr ? errstr : af_err2str(err));
                af_index_own_drop(a->co->index, &a->queued);
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

static void idem_reserve(adm_t *a);

static void replay_got(json_t *entry, const af_error_t *e, void *opaque) {
        adm_t *a = opaque;
        json_t *j;

        if (e && e->err) {
                adm_finish(a, AF_ERR_UNAVAILABLE, "Redis unavailable; retry", false, NULL);
                return;
        }
        if (entry) {
                adm_finish(a, AF_OK, NULL, true, entry);
                return;
        }
        /* The first admission with this key is still being published. */
        j = json_pack("{s:s, s:s, s:s}", "id", a->task.id, "task_id", a->task.id, "status",
                      "queued");
        adm_finish(a, AF_OK, NULL, true, j);
        json_decref(j);
}

static void idem_get_cb(af_redis_t *r, const redisReply *reply, const af_error_t *e, void *opaque) {
        adm_t *a = opaque;
        if (e && e->err) {
                adm_finish(a, AF_ERR_UNAVAILABLE, "Redis unavailable; retry", false, NULL);
                return;
        }
        if (reply->type == REDIS_REPLY_STRING && af_ulid_valid(reply->str)) {
                /* From here on the response describes the earlier task. */
                free(a->task.id);
                a->task.id = xstrdup(reply->str);
                a->queued.task_id = a->task.id;
                af_index_get(a->co->index, a->task.id, replay_got, a);
                return;
        }
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
        const char *argv[] = {"GET", a->idem_rkey};
        af_redis_commandv(a->co->redis, idem_get_cb, a, 2, argv, NULL);
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
        agentfleet__v1__task__init(&a->task);
        agentfleet__v1__versions__init(&a->versions);
        agentfleet__v1__task_result__init(&a->queued);
        agentfleet__v1__timings__init(&a->timings);
        a->task.type = (char *) protobuf_c_empty_string;
        co->inflight++;
        af_metric_set(co->m.inflight, NULL, co->inflight);

        if (co->draining) {
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
