/*
 * server: routes and deferred replies of agentfleet-simagent (see server.h).
 *
 * Each upstream request is decided at once — its fault drawn, its side effect applied or
 * refused through the ledger — and its answer parked on a timer for the drawn latency. An
 * effect is applied even if the client gives up before the answer arrives: exactly the
 * ambiguous outcome a real integration produces, which idempotency keys must absorb.
 */
#include "server.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "chat.h"
#include "clock.h"
#include "crypto.h"
#include "faults.h"
#include "http_server.h"
#include "ids.h"
#include "ledger.h"
#include "log.h"
#include "rules.h"

#define SIM_MAX_KEY_LEN      255 /* Idempotency-Key, bytes */
#define SIM_MAX_CLAIM_ID_LEN 128 /* path segment of /crm/claims/{claim_id} */

/* The answer of POST /noop, a constant: the benchmarks measure agentfleet's overhead through
 * it, so it must cost the simagent as little as possible (no JSON tree, no allocation). */
#define SIM_NOOP_BODY "{\"ok\":true}"

typedef enum {
        SIM_EP_CHAT = 0,
        SIM_EP_RULES,
        SIM_EP_CRM,
        SIM_EP_TICKET,
        SIM_EP_NOOP,
        SIM_EP__CNT
} sim_ep_t;

static const char *const sim_ep_names[SIM_EP__CNT] = {
        "chat_completions", "rules_check", "crm_update", "ticket_create", "noop",
};

/* An answer waiting for its latency to pass, or a hung request waiting for its client to
 * give up. Owned by the server's pending list. */
typedef struct sim_pending_s {
        af_sim_server_t *ss;
        af_http_req_t *req;
        af_timer_t *timer; /* NULL for a hang */
        int status;
        char *body;           /* owned JSON text, or NULL */
        const char *literal;  /* constant JSON text, sent when body is NULL */
        char retry_after[24]; /* Retry-After value or "" */
        bool replayed;        /* add Idempotent-Replayed: true */
        struct sim_pending_s *prev, *next;
} sim_pending_t;

/* What one request is answered with. */
typedef struct sim_answer_s {
        int status;
        char *body;          /* owned JSON text, or NULL */
        const char *literal; /* constant JSON text (not freed), sent when body is NULL */
        char retry_after[24];
        bool replayed;
} sim_answer_t;

struct af_sim_server_s {
        af_loop_t *loop;
        af_http_server_t *http;
        af_sim_opts_t o; /* strings point to the copies below */
        char *address;
        char *api_key;
        af_sim_faults_t faults;
        af_sim_ledger_t *ledger;
        sim_pending_t *pending; /* parked answers */
        int64_t pending_cnt;
        /* counters since start or the last POST /stats/reset */
        int64_t requests; /* upstream requests (all endpoints but stats/health) */
        int64_t ep_count[SIM_EP__CNT];
        int64_t errors_injected;   /* 500/503 */
        int64_t rate_limited;      /* 429 */
        int64_t timeouts_injected; /* never answered */
        int64_t prompt_tokens;
        int64_t completion_tokens;
        int64_t update_seq; /* CRM updates applied (ids) */
        int64_t ticket_seq; /* tickets created (ids) */
};

/* ---- answers ------------------------------------------------------------------------------ */

/* Fill a with status and body (reference stolen), serialized. */
static void sim_answer_json(sim_answer_t *a, int status, json_t *body) {
        a->status = status;
        a->body = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
        json_decref(body);
        if (!a->body) {
                a->status = 500;
                a->body = strdup("{\"code\":\"internal\",\"message\":\"out of memory\"}");
        }
}

/* An error in agentfleet's integration format {"code","message"}, or OpenAI's for /v1. */
static void sim_answer_error(sim_answer_t *a, bool openai, int status, const char *code,
                             const char *type, const char *message) {
        if (openai)
                sim_answer_json(a, status, af_sim_openai_error(message, type, NULL, code));
        else
                sim_answer_json(a, status,
                                json_pack("{s:s, s:s}", "code", code, "message", message));
}

static void sim_send(af_http_req_t *req, sim_answer_t *a) {
        const char *text = a->body ? a->body : a->literal ? a->literal : "";

        if (a->retry_after[0])
                af_http_req_add_header(req, "Retry-After", a->retry_after);
        if (a->replayed)
                af_http_req_add_header(req, "Idempotent-Replayed", "true");
        af_http_reply(req, a->status, "application/json", text, strlen(text));
}

static void sim_pending_free(sim_pending_t *p) {
        af_sim_server_t *ss = p->ss;

        if (p->prev)
                p->prev->next = p->next;
        else
                ss->pending = p->next;
        if (p->next)
                p->next->prev = p->prev;
        ss->pending_cnt--;
        af_timer_destroy(p->timer);
        free(p->body);
        free(p);
}

static void sim_pending_fire(void *opaque) {
        sim_pending_t *p = opaque;
        sim_answer_t a = {.status = p->status,
                          .body = p->body,
                          .literal = p->literal,
                          .replayed = p->replayed};

        memcpy(a.retry_after, p->retry_after, sizeof(a.retry_after));
        sim_send(p->req, &a);
        sim_pending_free(p);
}

/* The client went away first: the request must not be answered. */
static void sim_pending_closed(af_http_req_t *req, void *opaque) {
        sim_pending_free(opaque);
}

/* Answer now (delay 0), later (a timer), or never (hang). Takes a->body. */
static void sim_deliver(af_sim_server_t *ss, af_http_req_t *req, sim_answer_t *a, int64_t delay_ms,
                        bool hang) {
        sim_pending_t *p;

        if (!hang && delay_ms <= 0) {
                sim_send(req, a);
                free(a->body);
                return;
        }
        p = calloc(1, sizeof(*p));
        if (!p || (!hang && !(p->timer = af_timer_new(ss->loop, sim_pending_fire, p)))) {
                free(p);
                sim_send(req, a); /* no memory for a delay: answer at once */
                free(a->body);
                return;
        }
        p->ss = ss;
        p->req = req;
        p->status = a->status;
        p->body = a->body;
        p->literal = a->literal;
        p->replayed = a->replayed;
        memcpy(p->retry_after, a->retry_after, sizeof(p->retry_after));
        p->next = ss->pending;
        if (ss->pending)
                ss->pending->prev = p;
        ss->pending = p;
        ss->pending_cnt++;
        af_http_req_on_close(req, sim_pending_closed, p);
        if (p->timer)
                af_timer_start(p->timer, delay_ms, false /*once*/);
}

/* ---- endpoints ---------------------------------------------------------------------------- */

/* Parse the request body as a JSON object ("" is an empty object).
 * @returns a new reference, or NULL with an error answer in a. */
static json_t *sim_body_object(af_http_req_t *req, sim_answer_t *a) {
        size_t len = 0;
        const char *body = af_http_req_body(req, &len);
        json_error_t jerr;
        json_t *doc;
        char msg[256];

        if (!body || len == 0)
                return json_object();
        doc = json_loadb(body, len, 0, &jerr);
        if (json_is_object(doc))
                return doc;
        if (doc)
                snprintf(msg, sizeof(msg), "the body must be a JSON object");
        else
                snprintf(msg, sizeof(msg), "malformed JSON body: %s (line %d, column %d)",
                         jerr.text, jerr.line, jerr.column);
        json_decref(doc);
        sim_answer_error(a, false, 400, "invalid_json", NULL, msg);
        return NULL;
}

static void sim_do_chat(af_sim_server_t *ss, af_http_req_t *req, sim_answer_t *a) {
        af_sim_chat_opts_t co = {
                .seed = ss->o.seed,
                .prompt_tokens = ss->o.prompt_tokens,
                .completion_tokens = ss->o.completion_tokens,
                .now_ms = af_clock_wall_ms(),
        };
        af_sim_chat_reply_t r;
        char ulid[AF_ULID_LEN + 1];
        char id[AF_ULID_LEN + 16];
        size_t len = 0;
        const char *body = af_http_req_body(req, &len);

        af_ulid_new(ulid);
        snprintf(id, sizeof(id), "chatcmpl-%s", ulid);
        af_sim_chat_respond(&co, body ? body : "", body ? len : 0, id, co.now_ms / 1000, &r);
        ss->prompt_tokens += r.prompt_tokens;
        ss->completion_tokens += r.completion_tokens;
        sim_answer_json(a, r.status, r.body);
}

static void sim_do_rules(af_sim_server_t *ss, af_http_req_t *req, sim_answer_t *a) {
        json_t *doc = sim_body_object(req, a);

        if (!doc)
                return;
        sim_answer_json(a, 200, af_sim_rules_check(af_sim_rules_claim(doc), af_clock_wall_ms()));
        json_decref(doc);
}

/* Read the headers every mutating call carries. @returns false with an error answer. */
static bool sim_effect_headers(af_http_req_t *req, af_sim_effect_t *e, sim_answer_t *a) {
        const char *fence = af_http_req_header(req, "X-Agentfleet-Fence");
        bool ok = false;
        char *end;

        e->idem_key = af_http_req_header(req, "Idempotency-Key");
        e->task_id = af_http_req_header(req, "X-Agentfleet-Task");
        e->entity = NULL;
        e->fence = -1;
        if (e->idem_key && (!*e->idem_key || strlen(e->idem_key) > SIM_MAX_KEY_LEN)) {
                sim_answer_error(a, false, 400, "invalid_idempotency_key", NULL,
                                 "Idempotency-Key must be 1 to 255 bytes");
                goto out;
        }
        if (e->task_id && (!*e->task_id || strlen(e->task_id) > SIM_MAX_KEY_LEN))
                e->task_id = NULL;
        if (fence) {
                errno = 0;
                e->fence = strtoll(fence, &end, 10);
                if (errno || end == fence || *end || e->fence < 0) {
                        sim_answer_error(a, false, 400, "invalid_fence", NULL,
                                         "X-Agentfleet-Fence must be a non-negative integer");
                        goto out;
                }
        }
        ok = true;
out:
        return ok;
}

/* Run a mutating call through the ledger; apply() builds the answer when it is applied. */
static void sim_mutate(af_sim_server_t *ss, const af_sim_effect_t *e, sim_answer_t *a,
                       void (*apply)(af_sim_server_t *ss, json_t *doc, sim_answer_t *a),
                       json_t *doc) {
        int status = 0;
        const char *stored = NULL;
        int64_t highest = 0;
        char msg[256];

        switch (af_sim_ledger_check(ss->ledger, e, &status, &stored, &highest)) {
        case AF_SIM_LEDGER_REPLAY:
                a->status = status;
                a->body = strdup(stored ? stored : "");
                a->replayed = true;
                af_debug("replayed idempotency key %s", e->idem_key);
                break;
        case AF_SIM_LEDGER_FENCED:
                snprintf(msg, sizeof(msg),
                         "fence %lld is below fence %lld already applied to %.128s",
                         (long long) e->fence, (long long) highest, e->entity);
                sim_answer_error(a, false, 409, "fenced", NULL, msg);
                af_info("refused stale fence: %s", msg);
                break;
        case AF_SIM_LEDGER_FULL:
                sim_answer_error(a, false, 503, "ledger_full", NULL,
                                 "too many side effects recorded; POST /stats/reset");
                break;
        case AF_SIM_LEDGER_APPLY:
                apply(ss, doc, a);
                if (a->status >= 200 && a->status < 300) {
                        af_sim_ledger_stats_t before, after;
                        af_sim_ledger_stats(ss->ledger, &before);
                        af_sim_ledger_record(ss->ledger, e, a->status, a->body);
                        af_sim_ledger_stats(ss->ledger, &after);
                        if (after.duplicates > before.duplicates)
                                af_warn("duplicate side effect on %.128s (key %.64s)",
                                        e->entity ? e->entity : "-",
                                        e->idem_key ? e->idem_key : "none");
                }
                break;
        }
}

static void sim_apply_crm(af_sim_server_t *ss, json_t *doc, sim_answer_t *a) {
        char update_id[32];

        snprintf(update_id, sizeof(update_id), "UPD-%08lld", (long long) ++ss->update_seq);
        json_object_set_new(doc, "update_id", json_string(update_id));
        json_object_set_new(doc, "applied", json_true());
        sim_answer_json(a, 200, json_incref(doc));
}

static void sim_do_crm(af_sim_server_t *ss, af_http_req_t *req, sim_answer_t *a) {
        const char *claim_id = af_http_req_param(req, "claim_id");
        af_sim_effect_t e;
        json_t *doc = NULL, *resp = NULL;
        const char *op;
        char *entity = NULL;

        if (!claim_id || !*claim_id || strlen(claim_id) > SIM_MAX_CLAIM_ID_LEN) {
                sim_answer_error(a, false, 400, "invalid_claim_id", NULL,
                                 "claim id must be 1 to 128 bytes");
                goto out;
        }
        if (!sim_effect_headers(req, &e, a) || !(doc = sim_body_object(req, a)))
                goto out;
        /* The operation is what the update does to the claim: setting status "triaged" twice
         * is the duplicate the demo must never show; another status is another operation. */
        op = json_string_value(json_object_get(doc, "status"));
        if (!op || strlen(op) > 64)
                op = "update";
        if (asprintf(&entity, "crm_update:%s:%s", claim_id, op) < 0) {
                entity = NULL;
                sim_answer_error(a, false, 500, "internal", NULL, "out of memory");
                goto out;
        }
        e.entity = entity;
        resp = json_pack("{s:s, s:s}", "claim_id", claim_id, "status", op);
        sim_mutate(ss, &e, a, sim_apply_crm, resp);
out:
        json_decref(resp);
        json_decref(doc);
        free(entity);
}

static void sim_apply_ticket(af_sim_server_t *ss, json_t *doc, sim_answer_t *a) {
        char ticket_id[32];

        snprintf(ticket_id, sizeof(ticket_id), "TCK-%08lld", (long long) ++ss->ticket_seq);
        json_object_set_new(doc, "ticket_id", json_string(ticket_id));
        json_object_set_new(doc, "status", json_string("open"));
        sim_answer_json(a, 201, json_incref(doc));
}

static void sim_do_ticket(af_sim_server_t *ss, af_http_req_t *req, sim_answer_t *a) {
        af_sim_effect_t e;
        json_t *doc = NULL, *resp = NULL;
        const char *claim_id, *kind;
        char *entity = NULL;

        if (!sim_effect_headers(req, &e, a) || !(doc = sim_body_object(req, a)))
                goto out;
        claim_id = json_string_value(json_object_get(doc, "claim_id"));
        kind = json_string_value(json_object_get(doc, "type"));
        if (!kind || strlen(kind) > 64)
                kind = "default";
        /* Without a claim id there is no business entity to find duplicates of: such a
         * ticket is only protected by its idempotency key. */
        e.entity = NULL;
        if (claim_id && strlen(claim_id) <= SIM_MAX_CLAIM_ID_LEN) {
                if (asprintf(&entity, "ticket_create:%s:%s", claim_id, kind) < 0) {
                        entity = NULL;
                        sim_answer_error(a, false, 500, "internal", NULL, "out of memory");
                        goto out;
                }
                e.entity = entity;
        }
        resp = json_pack("{s:s?, s:s}", "claim_id", claim_id, "type", kind);
        sim_mutate(ss, &e, a, sim_apply_ticket, resp);
out:
        json_decref(resp);
        json_decref(doc);
        free(entity);
}

/* Bearer check of the LLM endpoints. @returns true when the request may go on. */
static bool sim_llm_auth(af_sim_server_t *ss, af_http_req_t *req, sim_answer_t *a) {
        const char *auth = af_http_req_header(req, "Authorization");
        size_t klen;

        if (!ss->api_key)
                return true;
        klen = strlen(ss->api_key);
        if (auth && strncmp(auth, "Bearer ", 7) == 0 && strlen(auth + 7) == klen &&
            af_const_eq(auth + 7, ss->api_key, klen))
                return true;
        sim_answer_error(a, true, 401, "invalid_api_key", "invalid_request_error",
                         auth ? "Incorrect API key provided."
                              : "You didn't provide an API key. Send it as "
                                "'Authorization: Bearer <key>'.");
        return false;
}

/* One upstream request: count, authenticate, draw its fault, compute, deliver. */
static void sim_handle(af_sim_server_t *ss, af_http_req_t *req, sim_ep_t ep) {
        bool openai = ep == SIM_EP_CHAT;
        sim_answer_t a;
        af_sim_fault_t f = {.kind = AF_SIM_FAULT_NONE, .delay_ms = 0};
        int64_t ra_s;

        memset(&a, 0, sizeof(a));
        ss->requests++;
        ss->ep_count[ep]++;
        if (openai && !sim_llm_auth(ss, req, &a))
                goto deliver;
        if (ep != SIM_EP_NOOP)
                af_sim_faults_next(&ss->faults, &f);
        switch (f.kind) {
        case AF_SIM_FAULT_HANG:
                ss->timeouts_injected++;
                sim_deliver(ss, req, &a, 0, true /*hang*/);
                return;
        case AF_SIM_FAULT_429:
                ss->rate_limited++;
                ra_s = (ss->o.retry_after_ms + 999) / 1000;
                snprintf(a.retry_after, sizeof(a.retry_after), "%lld",
                         (long long) (ra_s > 0 ? ra_s : 1));
                sim_answer_error(&a, openai, 429, openai ? "rate_limit_exceeded" : "rate_limited",
                                 "requests",
                                 "Rate limit reached; retry after the time in "
                                 "the Retry-After header.");
                goto deliver;
        case AF_SIM_FAULT_500:
        case AF_SIM_FAULT_503:
                ss->errors_injected++;
                if (f.kind == AF_SIM_FAULT_500)
                        sim_answer_error(&a, openai, 500, "internal", "server_error",
                                         "The server had an error while processing your "
                                         "request (injected).");
                else
                        sim_answer_error(&a, openai, 503, "unavailable", "server_error",
                                         "The server is overloaded (injected).");
                goto deliver;
        case AF_SIM_FAULT_NONE:
                break;
        }
        switch (ep) {
        case SIM_EP_CHAT:
                sim_do_chat(ss, req, &a);
                break;
        case SIM_EP_RULES:
                sim_do_rules(ss, req, &a);
                break;
        case SIM_EP_CRM:
                sim_do_crm(ss, req, &a);
                break;
        case SIM_EP_TICKET:
                sim_do_ticket(ss, req, &a);
                break;
        case SIM_EP_NOOP:
        case SIM_EP__CNT:
                a.status = 200;
                a.literal = SIM_NOOP_BODY;
                break;
        }
deliver:
        sim_deliver(ss, req, &a, f.delay_ms, false);
}

static void sim_on_chat(af_http_req_t *req, void *opaque) {
        sim_handle(opaque, req, SIM_EP_CHAT);
}
static void sim_on_rules(af_http_req_t *req, void *opaque) {
        sim_handle(opaque, req, SIM_EP_RULES);
}
static void sim_on_crm(af_http_req_t *req, void *opaque) {
        sim_handle(opaque, req, SIM_EP_CRM);
}
static void sim_on_ticket(af_http_req_t *req, void *opaque) {
        sim_handle(opaque, req, SIM_EP_TICKET);
}
static void sim_on_noop(af_http_req_t *req, void *opaque) {
        sim_handle(opaque, req, SIM_EP_NOOP);
}

static void sim_on_models(af_http_req_t *req, void *opaque) {
        af_http_reply_json(req, 200,
                           json_pack("{s:s, s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}]}", "object",
                                     "list", "data", "id", "sim-triage-1", "object", "model",
                                     "owned_by", "agentfleet-simagent", "id", "sim-echo-1",
                                     "object", "model", "owned_by", "agentfleet-simagent"));
}

static void sim_on_stats(af_http_req_t *req, void *opaque) {
        af_sim_server_t *ss = opaque;
        af_sim_ledger_stats_t ls;
        json_t *eps = json_object();

        af_sim_ledger_stats(ss->ledger, &ls);
        for (int i = 0; i < SIM_EP__CNT; i++)
                json_object_set_new(eps, sim_ep_names[i], json_integer(ss->ep_count[i]));
        af_http_reply_json(req, 200,
                           json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, "
                                     "s:{s:I, s:I, s:I}, s:{s:I, s:I}}",
                                     "applied", (json_int_t) ls.applied, "replayed",
                                     (json_int_t) ls.replayed, "duplicates",
                                     (json_int_t) ls.duplicates, "fenced", (json_int_t) ls.fenced,
                                     "max_fence", (json_int_t) ls.max_fence, "requests",
                                     (json_int_t) ss->requests, "chat_completions",
                                     (json_int_t) ss->ep_count[SIM_EP_CHAT], "in_flight",
                                     (json_int_t) ss->pending_cnt, "endpoints", eps, "faults",
                                     "errors", (json_int_t) ss->errors_injected, "rate_limited",
                                     (json_int_t) ss->rate_limited, "timeouts",
                                     (json_int_t) ss->timeouts_injected, "tokens", "prompt",
                                     (json_int_t) ss->prompt_tokens, "completion",
                                     (json_int_t) ss->completion_tokens));
}

static void sim_on_stats_reset(af_http_req_t *req, void *opaque) {
        af_sim_server_t *ss = opaque;

        af_sim_ledger_reset(ss->ledger);
        af_sim_faults_reset(&ss->faults);
        ss->requests = ss->errors_injected = ss->rate_limited = ss->timeouts_injected = 0;
        ss->prompt_tokens = ss->completion_tokens = ss->update_seq = ss->ticket_seq = 0;
        memset(ss->ep_count, 0, sizeof(ss->ep_count));
        af_info("stats reset");
        af_http_reply_json(req, 200, json_pack("{s:b}", "reset", 1));
}

static void sim_on_healthz(af_http_req_t *req, void *opaque) {
        af_http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

af_sim_server_t *af_sim_server_new(af_loop_t *loop, const af_sim_opts_t *opts, char *errstr,
                                   size_t errstr_size) {
        af_sim_server_t *ss = calloc(1, sizeof(*ss));
        af_http_server_opts_t ho;
        af_sim_faults_opts_t fo;

        if (!ss) {
                af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                goto fail;
        }
        ss->loop = loop;
        ss->o = *opts;
        ss->address = strdup(opts->address ? opts->address : "127.0.0.1");
        ss->api_key = opts->api_key && *opts->api_key ? strdup(opts->api_key) : NULL;
        ss->ledger = af_sim_ledger_new();
        if (!ss->address || !ss->ledger || (opts->api_key && *opts->api_key && !ss->api_key)) {
                af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                goto fail;
        }
        ss->o.address = ss->address;
        ss->o.api_key = ss->api_key;
        fo = (af_sim_faults_opts_t){
                .seed = opts->seed,
                .latency_ms = opts->latency_ms,
                .jitter_ms = opts->jitter_ms,
                .error_rate = opts->error_rate,
                .rate429 = opts->rate429,
                .timeout_rate = opts->timeout_rate,
        };
        af_sim_faults_init(&ss->faults, &fo);
        ho = (af_http_server_opts_t){
                .address = ss->address,
                .port = opts->port,
                .max_body_bytes = opts->max_body ? opts->max_body : 1024 * 1024,
                .max_header_bytes = 16 * 1024,
                .timeout_ms = 600 * 1000, /* hung requests wait for their client */
        };
        if (!(ss->http = af_http_server_new(loop, &ho, errstr, errstr_size)))
                goto fail;
        /* Routes are tried in this order, and no two patterns match the same path: the
         * benchmarks' /noop goes first, so it is found at the first comparison. */
        af_http_server_route(ss->http, "POST", "/noop", false, sim_on_noop, ss);
        af_http_server_route(ss->http, "POST", "/v1/chat/completions", false, sim_on_chat, ss);
        af_http_server_route(ss->http, "GET", "/v1/models", false, sim_on_models, ss);
        af_http_server_route(ss->http, "POST", "/rules/check", false, sim_on_rules, ss);
        af_http_server_route(ss->http, "POST", "/crm/claims/{claim_id}", false, sim_on_crm, ss);
        af_http_server_route(ss->http, "POST", "/tickets", false, sim_on_ticket, ss);
        af_http_server_route(ss->http, "GET", "/stats", false, sim_on_stats, ss);
        af_http_server_route(ss->http, "POST", "/stats/reset", false, sim_on_stats_reset, ss);
        af_http_server_route(ss->http, "GET", "/healthz", false, sim_on_healthz, ss);
        return ss;
fail:
        af_sim_server_destroy(ss);
        return NULL;
}

void af_sim_server_destroy(af_sim_server_t *ss) {
        if (!ss)
                return;
        while (ss->pending) {
                sim_pending_t *p = ss->pending;
                sim_answer_t a;
                memset(&a, 0, sizeof(a));
                sim_answer_error(&a, false, 503, "shutting_down", NULL, "simagent is stopping");
                sim_send(p->req, &a);
                free(a.body);
                sim_pending_free(p);
        }
        af_http_server_destroy(ss->http);
        af_sim_ledger_destroy(ss->ledger);
        free(ss->address);
        free(ss->api_key);
        free(ss);
}

int af_sim_server_port(const af_sim_server_t *ss) {
        return af_http_server_port(ss->http);
}
