/*
 * api: the coordinator's HTTP routes. Each handler turns a request into a call on admit.c or
 * index.c and answers when that call completes (a submit is answered only after Kafka
 * acknowledged the task). Errors are JSON {code, message}. The route table below is the one
 * source of truth: it registers the routes and prints them for `--print-routes`, which the
 * test that keeps openapi.yaml true compares against the document.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "coord.h"
#include "ids.h"
#include "lease.h"
#include "log.h"
#include "wire_json.h"

#define LIST_LIMIT_DEFAULT     50
#define LIST_LIMIT_MAX         500
#define METRICS_MAX            (16u << 20)
#define READY_KAFKA_TIMEOUT_MS 1000
#define READY_KAFKA_FRESH_MS   500 /* a probe this recent answers /readyz without a new one */
#define OVERLOAD_RETRY_AFTER_S 1   /* Retry-After of a submit refused by coordinator.max_inflight */

typedef struct route_s {
        const char *method;
        const char *pattern;
        bool auth;
        af_http_handler_t *handler;
} route_t;

/* One request in progress. req becomes NULL when the client goes away first. */
typedef struct actx_s {
        af_coord_t *co;
        af_http_req_t *req;
        const char *route;
        af_identity_t who;
        char id[64];
        Agentfleet__V1__TaskRequest *treq;
        bool kafka_ok;
        char kafka_err[128];
        struct actx_s *next_waiter; /* GET /readyz waiting for the Kafka probe */
} actx_t;

/* The Kafka half of /readyz: a metadata round trip proves a broker answers, but it blocks for
 * up to READY_KAFKA_TIMEOUT_MS while Kafka is away, so it runs on a thread of its own and the
 * loop goes on serving. Requests that arrive meanwhile wait for the probe in flight; one
 * answered less than READY_KAFKA_FRESH_MS ago answers at once. The thread touches only
 * librdkafka (thread-safe) and the result fields, which the loop reads after joining it. */
struct af_api_s {
        af_coord_t *co;
        int fds[2];        /* the probe thread writes a byte into [1] when done */
        struct event *ev;  /* EV_READ on fds[0], on the loop */
        pthread_t thread;  /* valid while probing */
        bool probing;      /* a thread is out */
        actx_t *waiters;   /* GET /readyz waiting for the probe in flight */
        int64_t probed_ms; /* monotonic end of the last probe; 0 none yet */
        /* Written by the thread, read by the loop after pthread_join: */
        bool kafka_ok;
        char kafka_err[128];
};

static void on_client_gone(af_http_req_t *req, void *opaque) {
        actx_t *ctx = opaque;
        ctx->req = NULL;
}

static actx_t *ctx_new(af_coord_t *co, af_http_req_t *req, const char *route) {
        actx_t *ctx = calloc(1, sizeof(*ctx));
        if (!ctx)
                return NULL;
        ctx->co = co;
        ctx->req = req;
        ctx->route = route;
        const af_identity_t *who = af_http_req_user(req);
        if (who)
                ctx->who = *who;
        af_http_req_on_close(req, on_client_gone, ctx);
        return ctx;
}

static void ctx_free(actx_t *ctx) {
        af_wire_taskrequest_free(ctx->treq);
        free(ctx);
}

static void count(af_coord_t *co, const char *route, int status) {
        char st[8];
        snprintf(st, sizeof(st), "%d", status);
        const char *lv[] = {route, st, NULL};
        af_metric_add(co->m.http_requests, lv, 1);
}

/* Answer with JSON (reference stolen) unless the client left; then free ctx. */
static void ctx_reply_json(actx_t *ctx, int status, json_t *body) {
        count(ctx->co, ctx->route, status);
        if (ctx->req)
                af_http_reply_json(ctx->req, status, body);
        else
                json_decref(body);
        ctx_free(ctx);
}

static void ctx_reply_error(actx_t *ctx, int status, const char *code, const char *msg) {
        count(ctx->co, ctx->route, status);
        if (ctx->req)
                af_http_reply_error(ctx->req, status, code, "%s", msg);
        ctx_free(ctx);
}

static void reply_error_now(af_coord_t *co, af_http_req_t *req, const char *route, int status,
                            const char *code, const char *msg) {
        count(co, route, status);
        af_http_reply_error(req, status, code, "%s", msg);
}

/* A task is visible to its own tenant, or to an admin. */
static bool may_see(const actx_t *ctx, const json_t *entry) {
        const char *tenant = json_string_value(json_object_get(entry, "tenant"));
        return ctx->who.admin || (tenant && !strcmp(tenant, ctx->who.tenant));
}

/* ---- POST /v1/tasks ----------------------------------------------------------------------- */

static void submit_done(const af_admit_out_t *out, void *opaque) {
        actx_t *ctx = opaque;
        ctx->co->api_inflight--;
        if (out->err) {
                if (out->retry_after_ms > 0 && ctx->req) {
                        char secs[AF_I64_STR_SIZE];
                        af_i64_to_str(secs, (out->retry_after_ms + 999) / 1000);
                        af_http_req_add_header(ctx->req, "Retry-After", secs);
                }
                ctx_reply_error(ctx, af_admit_http_status(out->err),
                                out->err == AF_ERR_NOT_FOUND ? "unknown_type"
                                                             : af_err2code(out->err),
                                out->message ? out->message : af_err2str(out->err));
                return;
        }
        if (ctx->req) {
                char loc[128];
                snprintf(loc, sizeof(loc), "/v1/tasks/%s", out->task_id);
                af_http_req_add_header(ctx->req, "Location", loc);
                if (out->replayed)
                        af_http_req_add_header(ctx->req, "Idempotent-Replayed", "true");
        }
        ctx_reply_json(ctx, 202, json_incref(out->task));
}

static void h_submit(af_http_req_t *req, void *opaque) {
        af_coord_t *co = opaque;
        bool payload_object = false;
        const char *route = "POST /v1/tasks";
        char errstr[512] = "";
        size_t len = 0;
        const char *body = af_http_req_body(req, &len);
        const char *hdr_key = af_http_req_header(req, "Idempotency-Key");
        Agentfleet__V1__TaskRequest *treq = NULL;
        const char *idem;
        actx_t *ctx;

        if (co->api_inflight >= co->max_inflight) {
                /* Load shedding: every admission holds memory until Kafka and Redis answer;
                 * when they are slow or away, refusing at once beats piling requests up. */
                char secs[AF_I64_STR_SIZE];
                af_i64_to_str(secs, OVERLOAD_RETRY_AFTER_S);
                af_http_req_add_header(req, "Retry-After", secs);
                reply_error_now(co, req, route, 503, "overloaded",
                                "too many submits being admitted (coordinator.max_inflight); "
                                "retry later with the same Idempotency-Key");
                return;
        }
        if (!body || !len) {
                reply_error_now(co, req, route, 400, "invalid",
                                "empty body: a JSON TaskRequest "
                                "({\"type\": ..., \"payload\": {...}}) is expected");
                return;
        }
        if (af_wire_taskrequest_from_json_ex(body, len, AF_WIRE_F_STRICT, &treq, &payload_object,
                                             errstr, sizeof(errstr))) {
                reply_error_now(co, req, route, 400, "invalid", errstr);
                return;
        }
        if (*treq->token || *treq->key_id || *treq->signature) {
                af_wire_taskrequest_free(treq);
                reply_error_now(co, req, route, 400, "invalid",
                                "fields token, key_id and signature are for requests produced "
                                "to Kafka; over HTTP use the Authorization header");
                return;
        }
        if (hdr_key && *treq->idempotency_key && strcmp(hdr_key, treq->idempotency_key)) {
                af_wire_taskrequest_free(treq);
                reply_error_now(co, req, route, 400, "invalid",
                                "Idempotency-Key header and field \"idempotency_key\" differ");
                return;
        }
        idem = hdr_key && *hdr_key ? hdr_key : treq->idempotency_key;
        if (!(ctx = ctx_new(co, req, route))) {
                af_wire_taskrequest_free(treq);
                reply_error_now(co, req, route, 500, "nomem", "out of memory");
                return;
        }
        ctx->treq = treq;
        /* Tenant and principal come from the token; a body naming others is refused by
         * af_auth's claim check semantics, applied here too. */
        if ((*treq->tenant && strcmp(treq->tenant, ctx->who.tenant)) ||
            (*treq->principal && strcmp(treq->principal, ctx->who.principal))) {
                ctx_reply_error(ctx, 403, "forbidden",
                                "tenant/principal in the body do not match the token's");
                return;
        }
        af_admit_in_t in = {.req = treq,
                            .who = &ctx->who,
                            .origin = AGENTFLEET__V1__ORIGIN__ORIGIN_API,
                            .idem_key = *idem ? idem : NULL,
                            .payload_object = payload_object};
        co->api_inflight++;
        af_admit_submit(co, &in, submit_done, ctx);
}

/* ---- GET /v1/tasks/{id} ------------------------------------------------------------------- */

static void get_done(json_t *entry, const af_error_t *err, void *opaque) {
        actx_t *ctx = opaque;
        if (err && err->err) {
                ctx_reply_error(ctx, 503, "unavailable", "task index unavailable; retry");
                return;
        }
        if (!entry || !may_see(ctx, entry)) {
                ctx_reply_error(ctx, 404, "not_found", "no such task");
                return;
        }
        ctx_reply_json(ctx, 200, json_incref(entry));
}

/* The context of a request about one task ({id} in the path), with ctx->id set.
 * @returns NULL after answering 404 (not a task id) or 500 (out of memory). */
static actx_t *task_ctx_new(af_coord_t *co, af_http_req_t *req, const char *route) {
        const char *id = af_http_req_param(req, "id");
        actx_t *ctx;

        if (!id || !af_ulid_valid(id)) {
                reply_error_now(co, req, route, 404, "not_found", "no such task");
                return NULL;
        }
        if (!(ctx = ctx_new(co, req, route))) {
                reply_error_now(co, req, route, 500, "nomem", "out of memory");
                return NULL;
        }
        snprintf(ctx->id, sizeof(ctx->id), "%s", id);
        return ctx;
}

static void h_get(af_http_req_t *req, void *opaque) {
        af_coord_t *co = opaque;
        const char *route = "GET /v1/tasks/{id}";
        actx_t *ctx = task_ctx_new(co, req, route);

        if (ctx)
                af_index_get(co->index, ctx->id, get_done, ctx);
}

/* ---- GET /v1/tasks ------------------------------------------------------------------------ */

static void list_done(json_t *tasks, const char *next_cursor, const af_error_t *err, void *opaque) {
        actx_t *ctx = opaque;
        if (err && err->err) {
                ctx_reply_error(ctx, 503, "unavailable", "task index unavailable; retry");
                return;
        }
        json_t *o = json_pack("{s:O, s:s?}", "tasks", tasks, "next_cursor", next_cursor);
        if (o && !next_cursor)
                json_object_set_new(o, "next_cursor", json_null());
        ctx_reply_json(ctx, 200, o);
}

/* Query values become parts of Redis key names: keep them short and printable. */
static bool query_word_ok(const char *s) {
        size_t n = strlen(s);
        if (!n || n > 128)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] <= ' ' || s[i] == '{' || s[i] == '}' || s[i] == 0x7f)
                        return false;
        return true;
}

static void h_list(af_http_req_t *req, void *opaque) {
        af_coord_t *co = opaque;
        const char *route = "GET /v1/tasks";
        const char *status = af_http_req_query(req, "status");
        const char *type = af_http_req_query(req, "type");
        const char *tenant = af_http_req_query(req, "tenant");
        const char *limit_s = af_http_req_query(req, "limit");
        const char *cursor = af_http_req_query(req, "cursor");
        const af_identity_t *who = af_http_req_user(req);
        af_index_query_t q = {.limit = LIST_LIMIT_DEFAULT};
        actx_t *ctx;

        if (status && *status && af_wire_str2status(status) < 0 &&
            strcmp(status, "cancel_requested")) {
                reply_error_now(co, req, route, 400, "invalid",
                                "query \"status\": unknown status (queued, running, succeeded, "
                                "failed, retrying, dead, rejected, waiting_approval, "
                                "cancelled, cancel_requested)");
                return;
        }
        if (type && *type && !query_word_ok(type)) {
                reply_error_now(co, req, route, 400, "invalid", "query \"type\": not a task type");
                return;
        }
        if (limit_s && *limit_s) {
                char *end;
                long v = strtol(limit_s, &end, 10);
                if (*end || v < 1 || v > LIST_LIMIT_MAX) {
                        reply_error_now(co, req, route, 400, "invalid",
                                        "query \"limit\": expected an integer in [1, 500]");
                        return;
                }
                q.limit = (int) v;
        }
        if (cursor && *cursor && !af_ulid_valid(cursor)) {
                reply_error_now(co, req, route, 400, "invalid",
                                "query \"cursor\": not a cursor from a previous page");
                return;
        }
        if (tenant && *tenant && (!who || (strcmp(tenant, who->tenant) && !who->admin))) {
                reply_error_now(co, req, route, 403, "forbidden",
                                "query \"tenant\": a token only sees its own tenant");
                return;
        }
        if (tenant && *tenant && !query_word_ok(tenant)) {
                reply_error_now(co, req, route, 400, "invalid", "query \"tenant\": invalid");
                return;
        }
        if (!(ctx = ctx_new(co, req, route))) {
                reply_error_now(co, req, route, 500, "nomem", "out of memory");
                return;
        }
        q.tenant = tenant && *tenant ? tenant : ctx->who.tenant;
        q.status = status && *status ? status : NULL;
        q.type = type && *type ? type : NULL;
        q.cursor = cursor && *cursor ? cursor : NULL;
        af_index_list(co->index, &q, list_done, ctx);
}

/* ---- POST /v1/tasks/{id}:cancel ----------------------------------------------------------- */

static void cancel_marked(json_t *entry, const af_error_t *err, void *opaque) {
        actx_t *ctx = opaque;
        if (err && err->err) {
                ctx_reply_error(ctx, 503, "unavailable", "task index unavailable; retry");
                return;
        }
        if (!entry) {
                ctx_reply_error(ctx, 404, "not_found", "no such task");
                return;
        }
        ctx_reply_json(ctx, 202, json_incref(entry));
}

static void cancel_requested(af_lease_t *lease, af_lease_status_t st, const char *data,
                             size_t data_len, const af_error_t *err, void *opaque) {
        actx_t *ctx = opaque;
        if (err && err->err) {
                ctx_reply_error(ctx, 503, "unavailable", "Redis unavailable; retry");
                return;
        }
        if (ctx->co->audit)
                af_audit_record(ctx->co->audit, ctx->who.principal,
                                AGENTFLEET__V1__ACTOR_KIND__ACTOR_KIND_PRINCIPAL,
                                "task.cancel_requested", ctx->id, ctx->who.tenant, "allow",
                                "cancel requested over the API", NULL);
        /* The worker emits the one final CANCELLED result; the index shows the request. */
        af_index_mark_cancel(ctx->co->index, ctx->id, cancel_marked, ctx);
}

static void cancel_got(json_t *entry, const af_error_t *err, void *opaque) {
        actx_t *ctx = opaque;
        if (err && err->err) {
                ctx_reply_error(ctx, 503, "unavailable", "task index unavailable; retry");
                return;
        }
        if (!entry || !may_see(ctx, entry)) {
                ctx_reply_error(ctx, 404, "not_found", "no such task");
                return;
        }
        const char *status = json_string_value(json_object_get(entry, "status"));
        int st = status ? af_wire_str2status(status) : -1;
        if (st > 0 && af_wire_status_is_final((Agentfleet__V1__TaskStatus) st)) {
                char msg[128];
                snprintf(msg, sizeof(msg), "task already %s", status);
                ctx_reply_error(ctx, 409, "conflict", msg);
                return;
        }
        af_lease_request_cancel(ctx->co->redis, ctx->id, AF_COORD_CANCEL_TTL_MS, cancel_requested,
                                ctx);
}

static void h_cancel(af_http_req_t *req, void *opaque) {
        af_coord_t *co = opaque;
        const char *route = "POST /v1/tasks/{id}:cancel";
        actx_t *ctx = task_ctx_new(co, req, route);

        if (ctx)
                af_index_get(co->index, ctx->id, cancel_got, ctx);
}

/* ---- health, readiness, metrics ----------------------------------------------------------- */

static void h_healthz(af_http_req_t *req, void *opaque) {
        af_coord_t *co = opaque;
        count(co, "GET /healthz", 200);
        af_http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

static void ready_redis(af_redis_t *r, const redisReply *reply, const af_error_t *err,
                        void *opaque) {
        actx_t *ctx = opaque;
        bool redis_ok = !(err && err->err);
        bool ok = redis_ok && ctx->kafka_ok && !ctx->co->draining;
        json_t *o = json_pack("{s:s, s:s, s:s, s:b}", "status", ok ? "ready" : "not_ready", "kafka",
                              ctx->kafka_ok ? "ok" : ctx->kafka_err, "redis",
                              redis_ok ? "ok" : err->msg, "draining", ctx->co->draining);
        ctx_reply_json(ctx, ok ? 200 : 503, o);
}

/* The probe thread: one metadata request (blocking, off the loop). */
static void *ready_probe_run(void *arg) {
        af_api_t *api = arg;
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t kerr;
        ssize_t n;

        kerr = rd_kafka_metadata(af_producer_rk(api->co->producer), 0 /*no topics*/, NULL, &md,
                                 READY_KAFKA_TIMEOUT_MS);
        api->kafka_ok = kerr == RD_KAFKA_RESP_ERR_NO_ERROR && md && md->broker_cnt > 0;
        snprintf(api->kafka_err, sizeof(api->kafka_err), "%s",
                 api->kafka_ok ? "" : rd_kafka_err2str(kerr));
        if (md)
                rd_kafka_metadata_destroy(md);
        do
                n = write(api->fds[1], "1", 1);
        while (n < 0 && errno == EINTR);
        return NULL;
}

/* Answer ctx from the last probe: the Kafka half is known, Redis's PING follows. */
static void ready_answer(af_api_t *api, actx_t *ctx) {
        ctx->kafka_ok = api->kafka_ok;
        snprintf(ctx->kafka_err, sizeof(ctx->kafka_err), "%s", api->kafka_err);
        af_redis_command(api->co->redis, ready_redis, ctx, "PING");
}

/* Collect the probe thread and answer everyone who waited for it. Loop thread. */
static void ready_probe_collect(af_api_t *api) {
        actx_t *ctx;

        if (!api->probing)
                return;
        pthread_join(api->thread, NULL);
        api->probing = false;
        api->probed_ms = af_clock_mono_ms();
        while ((ctx = api->waiters)) {
                api->waiters = ctx->next_waiter;
                ctx->next_waiter = NULL;
                ready_answer(api, ctx);
        }
}

static void ready_probe_done(evutil_socket_t fd, short what, void *arg) {
        af_api_t *api = arg;
        char junk[16];
        while (read(fd, junk, sizeof(junk)) > 0)
                ;
        ready_probe_collect(api);
}

static void h_readyz(af_http_req_t *req, void *opaque) {
        af_coord_t *co = opaque;
        af_api_t *api = co->api;
        const char *route = "GET /readyz";
        actx_t *ctx = ctx_new(co, req, route);

        if (!ctx) {
                reply_error_now(co, req, route, 500, "nomem", "out of memory");
                return;
        }
        if (!api->probing && api->probed_ms &&
            af_clock_mono_ms() - api->probed_ms < READY_KAFKA_FRESH_MS) {
                ready_answer(api, ctx);
                return;
        }
        ctx->next_waiter = api->waiters;
        api->waiters = ctx;
        if (api->probing)
                return;
        if (pthread_create(&api->thread, NULL, ready_probe_run, api)) {
                /* No thread: say so rather than block the loop. */
                api->kafka_ok = false;
                snprintf(api->kafka_err, sizeof(api->kafka_err), "cannot start the probe");
                while ((ctx = api->waiters)) {
                        api->waiters = ctx->next_waiter;
                        ctx->next_waiter = NULL;
                        ready_answer(api, ctx);
                }
                return;
        }
        api->probing = true;
}

static void h_metrics(af_http_req_t *req, void *opaque) {
        af_coord_t *co = opaque;
        af_buf_t b;
        af_buf_init(&b, METRICS_MAX);
        count(co, "GET /metrics", 200);
        if (af_metrics_render(co->metrics, &b) || af_metrics_render_process(&b)) {
                af_buf_free(&b);
                reply_error_now(co, req, "GET /metrics", 500, "internal", "metrics too large");
                return;
        }
        af_http_reply(req, 200, "text/plain; version=0.0.4", af_buf_str(&b), b.len);
        af_buf_free(&b);
}

/* ---- the table ---------------------------------------------------------------------------- */

static const route_t routes[] = {
        {"POST", "/v1/tasks", true, h_submit},  {"GET", "/v1/tasks", true, h_list},
        {"GET", "/v1/tasks/{id}", true, h_get}, {"POST", "/v1/tasks/{id}:cancel", true, h_cancel},
        {"GET", "/healthz", false, h_healthz},  {"GET", "/readyz", false, h_readyz},
        {"GET", "/metrics", false, h_metrics},
};

int af_api_register(af_coord_t *co, char *errstr, size_t errstr_size) {
        af_api_t *api = calloc(1, sizeof(*api));

        if (!api) {
                af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                return -1;
        }
        api->co = co;
        api->fds[0] = api->fds[1] = -1;
        co->api = api;
        if (pipe2(api->fds, O_NONBLOCK | O_CLOEXEC) < 0 ||
            !(api->ev = event_new(af_loop_base(co->loop), api->fds[0], EV_READ | EV_PERSIST,
                                  ready_probe_done, api)) ||
            event_add(api->ev, NULL) < 0) {
                af_errstr(AF_ERR_INTERNAL, errstr, errstr_size, "readyz probe: %s",
                          strerror(errno));
                return -1;
        }
        for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
                af_http_server_route(co->http, routes[i].method, routes[i].pattern, routes[i].auth,
                                     routes[i].handler, co);
        return 0;
}

void af_api_shutdown(af_coord_t *co) {
        af_api_t *api = co->api;
        actx_t *ctx;

        if (!api)
                return;
        ready_probe_collect(api);      /* joins a probe in flight; its waiters get their answer */
        while ((ctx = api->waiters)) { /* none after a collect; kept for symmetry */
                api->waiters = ctx->next_waiter;
                ctx_reply_error(ctx, 503, "unavailable", "shutting down");
        }
        if (api->ev)
                event_free(api->ev);
        for (int i = 0; i < 2; i++)
                if (api->fds[i] >= 0)
                        close(api->fds[i]);
        free(api);
        co->api = NULL;
}

void af_api_print_routes(FILE *out) {
        for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
                fprintf(out, "%s %s\n", routes[i].method, routes[i].pattern);
}
