/*
 * worker: the shared state of agentfleet-worker and the entry points of its pipeline stages,
 * one file per stage:
 *
 *   consume.c      Kafka consumer on tasks.<lane>: decode + validate a Task, in-flight
 *                  accounting, hold the consumer at worker.concurrency
 *   (the watermark of what may be committed is libcommon/watermark.c)
 *   lease_stage.c  take the task's lease in Redis (retry on outage, wait while another
 *                  worker holds it), renew it while running, finish or release it
 *   execute.c      dispatch on the task type's kind, abort on cancel/lease loss/drain
 *   integration.c  one HTTP integration call (also the tools of agents)
 *   agent.c        the chat-completions conversation with tool calls
 *   agent_parse.c  parsing of one chat-completions reply (pure, unit tested)
 *   emit.c         TaskResult, AuditEvents and LifecycleEvents to Kafka, delivery acks
 *   drain.c        SIGTERM: stop fetching, finish or hand back, commit, leave, flush
 *   main.c         options, config, catalog, loop, signals, wiring
 *
 * Everything runs on the process's one loop thread: no locks anywhere.
 */
#ifndef AF_WORKER_H
#define AF_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <jansson.h>

#include "agentfleet/v1/result.pb-c.h"
#include "agentfleet/v1/task.pb-c.h"
#include "agentfleet/v1/event.pb-c.h"
#include "audit.h"
#include "catalog.h"
#include "config.h"
#include "err.h"
#include "http_client.h"
#include "kafka.h"
#include "lease.h"
#include "loop.h"
#include "redis.h"
#include "template.h"

#include "watermark.h"

typedef struct af_worker_s af_worker_t;
typedef struct af_wtask_s af_wtask_t;
typedef struct af_agent_run_s af_agent_run_t;

/* What every call of one integration shares, worked out once when the catalog is loaded
 * (af_integration_prepare) rather than on each call. */
typedef struct af_wint_s {
        bool reads_payload; /* a url, body or header template names {{payload...}} */
        bool url_static;    /* the url names no variable: sent as it is, never rendered */
} af_wint_t;

/* A loaded catalog shared by the tasks that started under it; a SIGHUP reload swaps in a
 * new one while running tasks finish under the one they started with. */
typedef struct af_wcat_s {
        af_catalog_t *cat;
        af_wint_t *ints; /* ints[i] belongs to cat->integrations[i] */
        int refs;        /* the worker's own reference + one per task */
} af_wcat_t;

typedef enum {
        AF_WTASK_LEASING = 0, /* acquiring, or waiting to re-check a held/lost lease */
        AF_WTASK_RUNNING,     /* the handler runs; the renew timer ticks */
        AF_WTASK_FINISHING,   /* af_lease_finish in flight (or waiting to retry it) */
        AF_WTASK_EMITTING,    /* result produced: waiting for delivery acks */
        AF_WTASK_RELEASING,   /* drain: handing the lease back */
} af_wtask_state_t;

/* One task in flight: the only per-task allocation besides its decoded Task and the
 * handler's JSON. */
struct af_wtask_s {
        TAILQ_ENTRY(af_wtask_s) link;
        af_worker_t *w;
        Agentfleet__V1__Task *task; /* owned, decoded from the message */
        af_wcat_t *wcat;            /* reference held while in flight */
        const af_task_type_t *type; /* in wcat->cat, NULL when unknown */

        /* Where it came from, for the offset watermark. */
        int topic_idx; /* index into w->topics */
        int32_t partition;
        int64_t offset;
        uint32_t epoch; /* af_watermark epoch of that partition */

        af_wtask_state_t state;
        af_lease_t lease;
        bool leased;     /* lease->token is ours as far as we know */
        bool redis_busy; /* a lease command is in flight */
        bool renew_busy;
        uint32_t lease_tries;    /* consecutive failed/held acquisitions, for back-off */
        af_timer_t *timer;       /* retries of acquire/finish, deferred starts */
        af_timer_t *renew_timer; /* one-shot, re-armed: the next renew or RUNNING record */
        int64_t renew_due_ms;    /* monotonic ms of the next lease renewal */
        int64_t running_due_ms;  /* monotonic ms when the RUNNING record is due */
        bool running_sent;       /* RUNNING record produced under the current lease */

        /* Why the handler is being stopped (checked when it reports back). */
        bool cancel_requested; /* renew said CANCELLED: emit CANCELLED */
        bool lost;             /* renew said LOST: do not emit, re-check the lease */
        bool hand_back;        /* drain deadline: release the lease, emit nothing */
        bool handler_finished; /* handler reported back while a renew was in flight */
        bool aborted;          /* af_execute_abort called */
        bool timed_out;        /* the task's time budget ran out while running */
        bool timeout_deadline; /* ... and it was the task's own deadline (not retriable) */
        int64_t budget_ms;     /* that budget, for the message */
        bool retiring;         /* retire requested, waiting for pending acks */
        bool retire_done;      /* ... and whether its offset counts as done */

        /* Handler state. */
        json_t *payload;       /* parsed task payload, NULL until needed */
        af_agent_run_t *agent; /* agent conversation, NULL for integrations */
        uint64_t http_id;      /* request in flight (http_busy) */
        bool http_busy;
        void (*integration_cb)(af_wtask_t *t, json_t *output, const af_error_t *err);
        const af_integration_t *integration; /* the call in flight */
        bool integration_is_tool;
        int64_t started_wall_ms; /* unix ms, lease acquired */
        int64_t started_mono_ms;
        int64_t call_mono_ms; /* current handler call start */

        /* Outcome. */
        Agentfleet__V1__TaskStatus status;
        af_error_t error;       /* when FAILED */
        const char *error_code; /* overrides af_err2code (static), or NULL */
        char *output;           /* JSON text when SUCCEEDED (owned) */
        int64_t prompt_tokens, completion_tokens, cost_micros;
        int32_t llm_calls, tool_calls;
        const char *agent_version; /* "name@version" in wcat, or NULL */

        /* Emission. */
        uint8_t *result; /* encoded TaskResult (owned) */
        size_t result_len;
        bool reemit;      /* result came from the done record */
        int pending_acks; /* produced messages not yet acknowledged */
        bool result_acked;
        bool result_audited;  /* task.result audit sent (not again on a resend) */
        bool result_replaced; /* Kafka refused the result as too large: a FAILED one instead */
};

TAILQ_HEAD(af_wtask_list_s, af_wtask_s);
typedef struct af_emit_dlq_s af_emit_dlq_t;
TAILQ_HEAD(af_emit_dlq_list_s, af_emit_dlq_s);

struct af_worker_s {
        af_loop_t *loop;
        af_config_t *conf;
        char *config_path;
        char id[128];    /* worker.id or hostname-pid */
        char actor[160]; /* "worker:<id>" */

        af_wcat_t *wcat; /* current catalog */
        af_producer_t *producer;
        af_consumer_t *consumer;
        af_redis_t *redis;
        af_http_client_t *http;
        af_audit_t *audit;
        af_watermark_t *wm;

        char **topics; /* tasks.<lane> full names */
        size_t topic_cnt;
        char results_topic[256];
        char events_topic[256];
        char dlq_topic[256];

        /* Settings, read once. */
        int64_t concurrency;
        int64_t lease_ttl_ms;
        int64_t lease_renew_ms;
        int64_t running_after_ms; /* worker.running_after */
        int64_t done_ttl_ms;      /* worker.done_ttl */
        int64_t drain_timeout_ms;
        int64_t http_timeout_ms;
        int64_t max_response;

        struct af_wtask_list_s tasks;           /* in flight */
        struct af_emit_dlq_list_s dead_letters; /* being produced, or waiting to be again */
        int64_t in_flight;
        bool held;              /* consumer held (concurrency or drain) */
        int partitions_owned;   /* task partitions assigned to this worker now */
        bool redis_down_logged; /* one log line per outage */

        /* Drain. */
        bool draining;
        bool drain_deadline_passed;
        bool stopped;
        af_timer_t *drain_timer;
        int exit_code;

        /* Counters for logs and the final summary. */
        uint64_t n_succeeded, n_failed, n_cancelled, n_reemitted, n_dead_lettered;
};

/* ---- catalog references (main.c) ------------------------------------------------------- */
af_wcat_t *af_worker_catalog_ref(af_worker_t *w);
void af_worker_catalog_unref(af_wcat_t *wc);

/* ---- consume.c ------------------------------------------------------------------------ */
void af_consume_on_message(af_consumer_t *c, const af_kafka_msg_t *msg, void *opaque);
void af_consume_on_rebalance(af_consumer_t *c, bool assigned,
                             const rd_kafka_topic_partition_list_t *parts, void *opaque);
/* The task left the pipeline: mark its offset done if `done`, free it, resume fetching. */
void af_wtask_retire(af_wtask_t *t, bool done);
/* Hold or resume the consumer from the in-flight count and the drain flag. */
void af_consume_update_hold(af_worker_t *w);
/* A dead letter was acknowledged: its offset counts as done. */
void af_consume_dead_letter_done(af_worker_t *w, int topic_idx, int32_t partition, uint32_t epoch,
                                 int64_t offset);

/* ---- lease_stage.c ---------------------------------------------------------------------- */
void af_lease_stage_start(af_wtask_t *t);
/* The handler has set t->status/output/error (or was aborted); decide finish/release/emit. */
void af_lease_stage_handler_done(af_wtask_t *t);
/* Drain deadline: hand back this task if it has not reached emission. */
void af_lease_stage_hand_back(af_wtask_t *t);
/* Run the stage's next step for t's state after ms (retries: emit resend, lease retry). */
void af_lease_stage_later(af_wtask_t *t, int64_t ms);

/* ---- execute.c -------------------------------------------------------------------------- */
void af_execute_start(af_wtask_t *t);
/* t->timer fired while RUNNING: the task's time budget is spent; stop it. */
void af_execute_timeout(af_wtask_t *t);
/* Stop the running handler; it reports back through af_lease_stage_handler_done. */
void af_execute_abort(af_wtask_t *t);
/* Set a failure on t (code: static string or NULL for af_err2code). */
void af_execute_fail(af_wtask_t *t, const af_error_t *err, const char *code);
/* Handlers call this exactly once when they end (success or failure). */
void af_execute_done(af_wtask_t *t);
/* The template variables of t (args may be NULL). */
void af_execute_vars(af_wtask_t *t, const json_t *args, af_template_vars_t *vars);

/* ---- integration.c ---------------------------------------------------------------------- */
/* Called once with the response JSON (owned by the callee: decref it) or an error. */
typedef void(af_integration_done_cb_t)(af_wtask_t *t, json_t *output, const af_error_t *err);
/* Call integration in for t. args: tool arguments (NULL for an integration task).
 * idem_key: Idempotency-Key header value. Returns at once; cb is called later, once. */
void af_integration_call(af_wtask_t *t, const af_integration_t *in, const json_t *args,
                         const char *idem_key, af_integration_done_cb_t *cb);
/* Fill wi with what every call of in shares (at catalog load). */
void af_integration_prepare(const af_integration_t *in, af_wint_t *wi);
/* @returns the prepared af_wint_t of in, an integration of wc's catalog. */
static inline const af_wint_t *af_wcat_int(const af_wcat_t *wc, const af_integration_t *in) {
        return &wc->ints[in - wc->cat->integrations];
}
/* Classify an HTTP response status into err (AF_OK for 2xx). what: "crm_update". */
void af_integration_classify(const af_http_response_t *resp, const char *what, af_error_t *err);

/* ---- agent.c ---------------------------------------------------------------------------- */
void af_agent_start(af_wtask_t *t, const af_agent_t *agent);
void af_agent_run_free(af_agent_run_t *run);

/* ---- emit.c ------------------------------------------------------------------------------ */
/* Encode t's outcome as a TaskResult into t->result. @returns AF_OK or AF_ERR_NOMEM. */
af_err_t af_emit_encode_result(af_wtask_t *t);
/* Produce t->result to `results` and the closing audit events; the task retires once every
 * one is acknowledged. */
void af_emit_result(af_wtask_t *t);
/* Produce a RUNNING TaskResult for t (cheap: lets `watch` and the index show progress). */
void af_emit_running(af_wtask_t *t);
/* An audit event about t (details: JSON text or NULL), counted in t's pending acks. */
void af_emit_audit(af_wtask_t *t, const char *action, const char *decision, const char *reason,
                   const char *details);
/* The details of an audit event: a flat JSON object built in place, without printf (three
 * per task). Values given as text are written as they are, between quotes for _str: names
 * from the config and static words, never outside input. Past the buffer it is cut short,
 * as snprintf would. */
typedef struct af_details_s {
        char buf[512];
        size_t len; /* bytes written, excluding the NUL */
} af_details_t;
void af_details_begin(af_details_t *d);
void af_details_str(af_details_t *d, const char *key, const char *value);
void af_details_i64(af_details_t *d, const char *key, int64_t value);
void af_details_bool(af_details_t *d, const char *key, bool value);
/* @returns the JSON text (in d). */
const char *af_details_end(af_details_t *d);
void af_emit_lifecycle(af_worker_t *w, Agentfleet__V1__LifecycleKind kind, const char *task_id,
                       const char *endpoint, const char *detail);
/* Dead-letter a message that is not a valid Task; the offset counts as done on ack (a failed
 * delivery is sent again while the partition is ours). */
void af_emit_dead_letter(af_worker_t *w, const af_kafka_msg_t *msg, int topic_idx, uint32_t epoch,
                         const char *task_id, const char *reason);
/* Free the dead letters still waiting to be sent again (teardown, after the producer). */
void af_emit_dead_letters_free(af_worker_t *w);

/* ---- observe.c ---------------------------------------------------------------------------- */
/* Register the metrics; serve them when worker.metrics_port > 0. @returns 0 or -1. */
int af_observe_start(af_worker_t *w, char *errstr, size_t errstr_size);
void af_observe_stop(void);
/* status: "succeeded", "failed", "cancelled"; run_ms: handler run time (0 = unknown). */
void af_observe_result(af_wtask_t *t, const char *status, int64_t run_ms);
void af_observe_lease_lost(void);
void af_observe_redis_error(const char *op);
void af_observe_dead_letter(void);

/* ---- drain.c ----------------------------------------------------------------------------- */
void af_drain_start(af_worker_t *w);
/* A task left: the drain may be complete. */
void af_drain_check(af_worker_t *w);

#endif
