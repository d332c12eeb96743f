/*
 * drive_submit: the submission pump of `agentfleet drive`.
 *
 * Submission must never be the bottleneck of a benchmark, so nothing here waits: up to
 * --concurrency API requests are in flight on the loop's curl multi, and Kafka requests are
 * handed to librdkafka, which batches them (its queue is the only limit; a full queue pauses
 * the Kafka side until a delivery report frees room). The two paths interleave in task order
 * so the API/Kafka mix holds during the whole run. A refused-but-retriable submission (5xx,
 * 429, network, failed delivery) is retried with back-off under the same idempotency key,
 * which the coordinator uses to return the same task: a retry can never double a task.
 * Retries go on until the run's --timeout, not for a number of attempts: while Kafka is down
 * an API submit waits for the broker, and every repeat under its key is answered 503 "still
 * being admitted" until the first one is published, so a fixed count (it was 8, ~12 s of
 * back-off) gave up on tasks that were admitted and ran, and reported them as submit errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "agentfleet/v1/task.pb-c.h"
#include "clock.h"
#include "ids.h"
#include "log.h"

#include "drive.h"

#define DRIVE_RETRY_BASE_MS 100
#define DRIVE_RETRY_CAP_MS  5000

/* What travels with one API request or Kafka message. */
typedef struct drive_sub_ctx_s {
        drive_t *d;
        int64_t idx;
} drive_sub_ctx_t;

int64_t drive_now_us(void) {
        return af_clock_mono_us();
}

bool drive_submission_done(const drive_t *d) {
        return d->accepted + d->refused >= d->o.tasks;
}

/* The idempotency key of task idx: unique per run, stable across its retries. */
static void task_key(const drive_t *d, int64_t idx, char *out, size_t out_size) {
        snprintf(out, out_size, "drv-%s-%lld", d->run_tag, (long long) idx);
}

/* A sample's text, split around its unique field's value: head ends with the value's opening
 * quote, tail starts with its closing one. Without a unique field, head is the whole text. */
typedef struct drive_payload_s {
        char *head, *tail;
        size_t head_len, tail_len;
        char *value; /* the field's value as JSON string content (escaped, no quotes) */
        size_t value_len;
        const char *raw; /* the same value unescaped (owned by the sample): the case key */
} drive_payload_t;

/* Stands in for the unique field's value while the sample is dumped once; the control
 * characters keep it from matching anything a sample would hold (checked to occur once). */
#define DRIVE_UNIQUE_MARK                                                                          \
        "\x01"                                                                                     \
        "af-drive-unique"                                                                          \
        "\x01"

static char *dump_any(const json_t *j) {
        return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
}

static int prepare_one(const drive_t *d, json_t *sample, drive_payload_t *p) {
        const char *field = d->o.unique_field;
        json_t *copy = NULL, *mark = NULL;
        char *text = NULL, *quoted = NULL, *value = NULL, *at;
        size_t qlen, vlen;
        int rc = -1;

        if (!(field && *field && json_is_object(sample) &&
              json_is_string(json_object_get(sample, field)))) {
                if (!(p->head = dump_any(sample)))
                        return -1;
                p->head_len = strlen(p->head);
                return 0;
        }
        p->raw = json_string_value(json_object_get(sample, field));
        if (!(copy = json_copy(sample)) || !(mark = json_string(DRIVE_UNIQUE_MARK)) ||
            json_object_set(copy, field, mark) || !(text = dump_any(copy)) ||
            !(quoted = dump_any(mark)) || !(value = dump_any(json_object_get(sample, field))))
                goto out;
        /* Setting an existing key keeps its place, so text is the sample's own dump with the
         * marked value; a second occurrence would make the split ambiguous. */
        qlen = strlen(quoted);
        vlen = strlen(value);
        at = strstr(text, quoted);
        if (!at || strstr(at + 1, quoted) || vlen < 2)
                goto out;
        p->head_len = (size_t) (at - text) + 1; /* through the opening quote */
        p->tail_len = strlen(at + qlen - 1);    /* from the closing quote */
        p->value_len = vlen - 2;                /* without the quotes */
        if (!(p->head = strndup(text, p->head_len)) || !(p->tail = strdup(at + qlen - 1)) ||
            !(p->value = strndup(value + 1, p->value_len)))
                goto out;
        rc = 0;
out:
        free(text);
        free(quoted);
        free(value);
        json_decref(mark);
        json_decref(copy);
        return rc;
}

int drive_prepare_payloads(drive_t *d) {
        size_t n = json_array_size(d->payloads);

        if (!(d->prepared = calloc(n ? n : 1, sizeof(*d->prepared))))
                return -1;
        for (size_t i = 0; i < n; i++)
                if (prepare_one(d, json_array_get(d->payloads, i), &d->prepared[i]) < 0)
                        return -1;
        return 0;
}

void drive_free_payloads(drive_t *d) {
        size_t n = d->prepared ? json_array_size(d->payloads) : 0;

        for (size_t i = 0; i < n; i++) {
                free(d->prepared[i].head);
                free(d->prepared[i].tail);
                free(d->prepared[i].value);
        }
        free(d->prepared);
        d->prepared = NULL;
}

/* The payload of task idx (caller frees), and its case key into case_key. The sample is
 * cycled; its --unique-field (claim_id) is suffixed with the run and index, because the
 * simagent counts a second application to the same business entity under another key as a
 * duplicate side effect — reused claim ids would be reported as duplicates that are not. */
static char *task_payload(const drive_t *d, int64_t idx, char *case_key, size_t case_key_size) {
        const drive_payload_t *p =
                &d->prepared[(size_t) (idx % (int64_t) json_array_size(d->payloads))];
        char suffix[64];
        size_t slen, len;
        char *text;

        task_key(d, idx, case_key, case_key_size);
        if (!p->tail)
                return strdup(p->head);
        slen = (size_t) snprintf(suffix, sizeof(suffix), "-%s-%lld", d->run_tag, (long long) idx);
        len = p->head_len + p->value_len + slen + p->tail_len;
        if (!(text = malloc(len + 1)))
                return NULL;
        memcpy(text, p->head, p->head_len);
        memcpy(text + p->head_len, p->value, p->value_len);
        memcpy(text + p->head_len + p->value_len, suffix, slen);
        memcpy(text + p->head_len + p->value_len + slen, p->tail, p->tail_len + 1);
        snprintf(case_key, case_key_size, "%s%s", p->raw, suffix);
        return text;
}

/* Give up on task idx. */
static void task_refuse(drive_t *d, int64_t idx, const char *why) {
        drive_task_t *t = &d->tasks[idx];

        t->sub = DRIVE_SUB_REFUSED;
        d->refused++;
        if (!d->first_refusal[0])
                snprintf(d->first_refusal, sizeof(d->first_refusal), "%s", why);
        af_debug("drive: task %lld refused: %s", (long long) idx, why);
}

/* Queue task idx for another attempt after a back-off (or retry_after_ms when the server
 * said so), or refuse it when that attempt would come after the run's deadline (the run
 * stops there anyway). */
static void task_retry(drive_t *d, int64_t idx, int64_t retry_after_ms, const char *why) {
        drive_task_t *t = &d->tasks[idx];
        int64_t delay_ms;

        delay_ms = af_backoff_delay_ms(t->attempts, DRIVE_RETRY_BASE_MS, DRIVE_RETRY_CAP_MS);
        if (retry_after_ms > delay_ms)
                delay_ms = retry_after_ms > 60000 ? 60000 : retry_after_ms;
        if (drive_now_us() + delay_ms * 1000 >= d->start_us + d->o.timeout_ms * 1000) {
                task_refuse(d, idx, why);
                return;
        }
        t->sub = DRIVE_SUB_PENDING;
        t->due_us = drive_now_us() + delay_ms * 1000;
        d->retry_q[(d->retry_head + d->retry_len) % d->o.tasks] = idx;
        d->retry_len++;
}

/* ---- over the API -------------------------------------------------------------------------- */

static void api_done_cb(const af_http_response_t *resp, const af_error_t *err, void *opaque) {
        drive_sub_ctx_t *ctx = opaque;
        drive_t *d = ctx->d;
        int64_t idx = ctx->idx;
        char why[512];

        free(ctx);
        d->api_in_flight--;
        if (err && err->err != AF_OK) {
                snprintf(why, sizeof(why), "API: %s",
                         err->msg[0] ? err->msg : af_err2str(err->err));
                if (err->err == AF_ERR_CANCELLED)
                        task_refuse(d, idx, why); /* the run is ending */
                else
                        task_retry(d, idx, 0, why);
        } else if (resp->status >= 200 && resp->status < 300) {
                json_t *j = json_loadb(resp->body, resp->body_len, 0, NULL);
                const char *id = af_cli_task_id(j);
                if (id)
                        drive_results_note_id(d, idx, id);
                d->tasks[idx].sub = DRIVE_SUB_ACCEPTED;
                d->accepted++;
                d->api_accepted++;
                json_decref(j);
        } else {
                snprintf(why, sizeof(why), "API: HTTP %d: %.300s", resp->status,
                         resp->body ? resp->body : "");
                if (af_cli_exit_for_http(resp->status) == AF_CLI_EXIT_SERVER)
                        task_retry(d, idx, resp->retry_after_ms, why);
                else
                        task_refuse(d, idx, why); /* 4xx: retrying cannot help */
        }
        if (!d->stopping)
                drive_pump(d);
        drive_on_final(d);
}

/* @returns whether the request was started. */
static bool api_send(drive_t *d, int64_t idx) {
        char key[64], case_key[600], idem_hdr[96], errstr[256];
        const char *headers[5];
        size_t hn = 0;
        char *payload = NULL, *body = NULL, *url = NULL;
        json_t *j = NULL;
        drive_sub_ctx_t *ctx = NULL;
        af_http_request_t req = {0};
        bool ok = false;

        task_key(d, idx, key, sizeof(key));
        payload = task_payload(d, idx, case_key, sizeof(case_key));
        if (!payload) {
                task_refuse(d, idx, "out of memory");
                goto out;
        }
        /* The payload as a string holding JSON: no second parse and re-encode per task. */
        j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", d->o.type, "case_key", case_key,
                      "idempotency_key", key, "request_id", key, "payload", payload);
        body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        ctx = malloc(sizeof(*ctx));
        if (!body || !ctx || asprintf(&url, "%s/v1/tasks", d->cli->api_url) < 0) {
                url = NULL;
                task_refuse(d, idx, "out of memory");
                goto out;
        }
        snprintf(idem_hdr, sizeof(idem_hdr), "Idempotency-Key: %s", key);
        if (d->has_auth)
                headers[hn++] = d->auth_header;
        headers[hn++] = "Content-Type: application/json";
        headers[hn++] = "Accept: application/json";
        headers[hn++] = idem_hdr;
        headers[hn] = NULL;
        req.method = "POST";
        req.url = url;
        req.headers = headers;
        req.body = body;
        req.body_len = strlen(body);
        ctx->d = d;
        ctx->idx = idx;
        if (af_http_client_send(d->cli->hc, &req, api_done_cb, ctx, NULL) != AF_OK) {
                snprintf(errstr, sizeof(errstr), "API: the request could not be started");
                task_retry(d, idx, 0, errstr);
                goto out;
        }
        ctx = NULL; /* owned by the callback now */
        d->tasks[idx].sub = DRIVE_SUB_SENDING;
        if (d->tasks[idx].attempts < UINT8_MAX) /* retries are bounded by time, not count */
                d->tasks[idx].attempts++;
        d->api_in_flight++;
        ok = true;
out:
        free(ctx);
        free(url);
        free(body);
        free(payload);
        json_decref(j);
        return ok;
}

/* ---- straight to Kafka --------------------------------------------------------------------- */

static void kafka_delivered_cb(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                               void *opaque) {
        drive_sub_ctx_t *ctx = opaque;
        drive_t *d = ctx->d;
        int64_t idx = ctx->idx;
        char why[512];

        free(ctx);
        d->kafka_outstanding--;
        d->kafka_full = false;
        if (err == AF_OK) {
                d->tasks[idx].sub = DRIVE_SUB_ACCEPTED;
                d->accepted++;
                d->kafka_accepted++;
        } else {
                snprintf(why, sizeof(why), "Kafka: delivery failed: %s",
                         errstr ? errstr : af_err2str(err));
                task_retry(d, idx, 0, why);
        }
        if (!d->stopping)
                drive_pump(d);
        drive_on_final(d);
}

/* --direct: an admitted Task as the coordinator would publish it (benchmarks only).
 * @returns the packed bytes (caller frees) or NULL. */
static uint8_t *direct_task(const drive_t *d, const char *key, const char *case_key,
                            const char *payload, const char *traceparent, size_t *lenp) {
        char id[AF_ULID_LEN + 1];
        Agentfleet__V1__Task task = AGENTFLEET__V1__TASK__INIT;
        Agentfleet__V1__Versions versions = AGENTFLEET__V1__VERSIONS__INIT;

        af_ulid_new(id);
        task.id = id;
        task.type = (char *) d->o.type;
        task.tenant = "bench";
        task.principal = "bench";
        task.case_key = (char *) case_key;
        task.idempotency_key = (char *) key;
        task.payload = (char *) payload;
        task.attempt = 1;
        task.max_attempts = 1;
        task.created_at_ms = af_clock_wall_ms();
        task.traceparent = (char *) traceparent;
        task.lane = (char *) d->o.direct_lane;
        task.origin = AGENTFLEET__V1__ORIGIN__ORIGIN_KAFKA;
        task.versions = &versions;
        *lenp = agentfleet__v1__task__get_packed_size(&task);
        uint8_t *buf = malloc(*lenp ? *lenp : 1);
        if (buf)
                agentfleet__v1__task__pack(&task, buf);
        return buf;
}

/* @returns whether the message was queued; false with kafka_full set when librdkafka's queue
 *          is full (try again after a delivery report). */
static bool kafka_send(drive_t *d, int64_t idx) {
        char key[64], case_key[600], request_id[80], errstr[512];
        char traceparent[AF_CLI_TRACEPARENT_LEN + 1];
        af_cli_request_t r = {0};
        af_kafka_header_t hdrs[2];
        char *payload = NULL, *text = NULL;
        drive_sub_ctx_t *ctx = NULL;
        af_err_t err;
        bool ok = false;

        task_key(d, idx, key, sizeof(key));
        snprintf(request_id, sizeof(request_id), "%s-r%u", key, d->tasks[idx].attempts + 1u);
        payload = task_payload(d, idx, case_key, sizeof(case_key));
        if (!payload) {
                task_refuse(d, idx, "out of memory");
                ok = true; /* consumed */
                goto out;
        }
        af_cli_traceparent(traceparent);
        r.type = d->o.type;
        r.payload = payload;
        r.case_key = case_key;
        r.idempotency_key = key;
        r.request_id = request_id;
        r.traceparent = traceparent;
        r.key_id = d->secret ? d->o.key_id : NULL;
        r.secret = d->secret;
        r.token = d->secret ? NULL : d->cli->token;
        size_t text_len = 0;
        if (d->o.direct_lane) {
                text = (char *) direct_task(d, key, case_key, payload, traceparent, &text_len);
                snprintf(errstr, sizeof(errstr), "out of memory");
        } else {
                text = af_cli_request_json(&r, errstr, sizeof(errstr));
                text_len = text ? strlen(text) : 0;
        }
        ctx = malloc(sizeof(*ctx));
        if (!text || !ctx) {
                task_refuse(d, idx, text ? "out of memory" : errstr);
                ok = true; /* consumed */
                goto out;
        }
        ctx->d = d;
        ctx->idx = idx;
        hdrs[0] = d->o.direct_lane
                          ? (af_kafka_header_t){"content-type", "application/x-protobuf", 22}
                          : (af_kafka_header_t){"content-type", "application/json", 16};
        hdrs[1] = (af_kafka_header_t){"traceparent", traceparent, strlen(traceparent)};
        err = af_producer_send(d->producer, d->requests_topic, -1 /*by key*/, case_key,
                               strlen(case_key), text, text_len, hdrs, 2, kafka_delivered_cb, ctx,
                               errstr, sizeof(errstr));
        if (err == AF_ERR_UNAVAILABLE) {
                d->kafka_full = true; /* local queue full: wait for delivery reports */
                goto out;
        }
        if (err != AF_OK) {
                task_refuse(d, idx, errstr);
                ok = true; /* consumed: do not try this index again */
                goto out;
        }
        ctx = NULL; /* owned by the delivery callback now */
        d->tasks[idx].sub = DRIVE_SUB_SENDING;
        if (d->tasks[idx].attempts < UINT8_MAX) /* retries are bounded by time, not count */
                d->tasks[idx].attempts++;
        d->kafka_outstanding++;
        ok = true;
out:
        free(ctx);
        free(text);
        free(payload);
        return ok;
}

/* ---- the pump ------------------------------------------------------------------------------ */

/* Start one attempt of task idx on its path. @returns false when that path is saturated. */
static bool task_send(drive_t *d, int64_t idx) {
        drive_task_t *t = &d->tasks[idx];

        if (!t->submit_us)
                t->submit_us = drive_now_us();
        if (t->via_kafka) {
                if (d->kafka_full || d->kafka_outstanding >= d->o.max_kafka_outstanding)
                        return false;
                return kafka_send(d, idx);
        }
        if (d->api_in_flight >= d->o.concurrency)
                return false;
        api_send(d, idx);
        return true;
}

static void pump_timer_cb(void *opaque) {
        drive_pump(opaque);
}

static void schedule_pump(drive_t *d, int64_t ms) {
        if (!d->pump_timer) {
                d->pump_timer = af_timer_new(d->cli->loop, pump_timer_cb, d);
                if (!d->pump_timer)
                        return;
        }
        if (!af_timer_pending(d->pump_timer))
                af_timer_start(d->pump_timer, ms < 1 ? 1 : ms, false);
}

void drive_pump(drive_t *d) {
        int64_t now = drive_now_us(), budget = INT64_MAX;
        int64_t wake_ms = -1;

        if (d->stopping)
                return;
        if (!d->start_us)
                d->start_us = now;
        if (d->o.rate > 0)
                budget = (int64_t) (d->o.rate * (double) (now - d->start_us) / 1e6) + 1 - d->sent;

        /* Retries first: they are already late. They do not count against the rate. */
        while (d->retry_len > 0) {
                int64_t idx = d->retry_q[d->retry_head];
                if (d->tasks[idx].due_us > now) {
                        wake_ms = (d->tasks[idx].due_us - now) / 1000 + 1;
                        break;
                }
                if (!task_send(d, idx))
                        break;
                d->retry_head = (d->retry_head + 1) % d->o.tasks;
                d->retry_len--;
        }

        /* First attempts, in task order across both paths, within the rate budget. */
        while (budget > 0) {
                bool api_ok = d->api_next < d->api_cnt && d->api_in_flight < d->o.concurrency;
                bool kafka_ok = d->kafka_next < d->kafka_cnt && !d->kafka_full &&
                                d->kafka_outstanding < d->o.max_kafka_outstanding;
                int64_t idx;

                if (api_ok && kafka_ok)
                        api_ok = d->api_order[d->api_next] < d->kafka_order[d->kafka_next];
                else if (!api_ok && !kafka_ok)
                        break;
                idx = api_ok ? d->api_order[d->api_next] : d->kafka_order[d->kafka_next];
                if (!task_send(d, idx))
                        break;
                if (api_ok)
                        d->api_next++;
                else
                        d->kafka_next++;
                d->sent++;
                budget--;
        }

        /* Wake up for the rate or the next retry; completions wake us for the rest. */
        if (d->o.rate > 0 && d->api_next + d->kafka_next < d->o.tasks) {
                int64_t per_ms = (int64_t) (1000.0 / d->o.rate);
                int64_t ms = per_ms < 1 ? 1 : per_ms > 10 ? 10 : per_ms;
                wake_ms = wake_ms < 0 || ms < wake_ms ? ms : wake_ms;
        }
        if (d->kafka_full)
                wake_ms = wake_ms < 0 || wake_ms > 5 ? 5 : wake_ms; /* belt and braces */
        if (wake_ms >= 0)
                schedule_pump(d, wake_ms);
}
