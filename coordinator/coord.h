/*
 * coord: what the stages of agentfleet-coordinator share. The coordinator is one process
 * with one loop: main.c wires the loop, config, catalog, Kafka producer, Redis, audit, metrics
 * and the HTTP server into an af_coord_t; the stages hang off it:
 *
 *   api.c     HTTP routes (POST/GET /v1/tasks..., health, metrics)   -> auth.c, admit.c, index.c
 *   intake.c  consumes `requests` (protobuf or JSON)                 -> auth.c, admit.c, dlq
 *   auth.c    bearer token / service-key HMAC -> principal and tenant; audits denials
 *   admit.c   validation, policy hook, Task building, idempotency, publish (results, tasks)
 *   index.c   task status index in Redis, fed from `results`, rebuilt when Redis is emptied
 *   offsets.c contiguous-completion offset watermark for the intake consumer
 *
 * Everything runs on the loop thread; nothing here is locked.
 */
#ifndef AF_COORD_H
#define AF_COORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "agentfleet/v1/result.pb-c.h"
#include "agentfleet/v1/task.pb-c.h"
#include "audit.h"
#include "catalog.h"
#include "config.h"
#include "err.h"
#include "http_server.h"
#include "kafka.h"
#include "loop.h"
#include "metrics.h"
#include "redis.h"

#define AF_COORD_TOPIC_MAX 256
/* How long a cancel request stays visible to workers that have not picked the task up. */
#define AF_COORD_CANCEL_TTL_MS (24LL * 3600 * 1000)

typedef struct af_intake_s af_intake_t;
typedef struct af_index_s af_index_t;
typedef struct af_api_s af_api_t;

/* Who is asking: from a bearer token or a service key. Copied out of the catalog so a SIGHUP
 * reload can free the old catalog while requests are in flight. */
typedef struct af_identity_s {
        char principal[128];
        char tenant[128];
        bool admin;       /* holds role "admin": may read every tenant */
        bool service_key; /* authenticated by a signed request, not a token */
} af_identity_t;

typedef struct af_coord_s {
        af_loop_t *loop;
        af_config_t *conf;
        af_catalog_t *cat; /* current catalog; replaced on SIGHUP */
        char *config_path;
        af_producer_t *producer;
        af_redis_t *redis;
        af_audit_t *audit;
        af_metrics_t *metrics;
        af_http_server_t *http;
        af_intake_t *intake;
        af_index_t *index;
        af_api_t *api; /* api.c's state (the /readyz probe) */
        af_timer_t *drain_timer;

        struct {
                af_metric_t *http_requests; /* {route, status} */
                af_metric_t *admissions;    /* {type, outcome} */
                af_metric_t *admit_seconds; /* {origin} histogram */
                af_metric_t *intake_dlq;    /* {code} */
                af_metric_t *index_results; /* {outcome} */
                af_metric_t *inflight;      /* admissions in flight (gauge) */
                af_metric_t *republished;   /* {reason} takeovers of unpublished tasks */
        } m;

        char topic_results[AF_COORD_TOPIC_MAX];
        char topic_dlq[AF_COORD_TOPIC_MAX];
        char topic_requests[AF_COORD_TOPIC_MAX];

        int64_t max_payload;       /* coordinator.max_payload, bytes */
        int64_t max_inflight;      /* coordinator.max_inflight: API admissions at once */
        int64_t api_inflight;      /* API admissions not yet answered */
        int64_t takeover_grace_ms; /* age after which a repeat re-publishes a task whose
                                    * admission died (admit.c, step 4b); -1 never */
        int inflight;              /* admissions not yet answered */
        bool draining;             /* SIGTERM seen: refuse new work, finish what is in flight */
        bool closing; /* tearing down, producer gone or going: callbacks start no new work */
        int64_t drain_deadline_ms; /* monotonic */
} af_coord_t;

/* ---- auth.c -------------------------------------------------------------------------------- */

/* The HTTP server's bearer hook: attaches an af_identity_t (request user) or audits the
 * denial (actor "anonymous", never the token) and refuses. */
bool af_auth_http(af_http_req_t *req, const char *bearer, void *opaque);
/* Authenticate a TaskRequest produced to Kafka: exactly one of token or key_id+signature
 * (wire_json.h), and tenant/principal in the request, when given, must be the credential's.
 * @returns AF_OK with *who filled, or AF_ERR_UNAUTHENTICATED / AF_ERR_FORBIDDEN with errstr. */
af_err_t af_auth_request(af_coord_t *co, const Agentfleet__V1__TaskRequest *req, af_identity_t *who,
                         char *errstr, size_t errstr_size);
/* Record an auth.denied audit event (reason and details are not secret). */
void af_auth_audit_denied(af_coord_t *co, const char *actor, const char *reason,
                          const char *details_json);

/* ---- admit.c ------------------------------------------------------------------------------- */

typedef struct af_admit_in_s {
        const Agentfleet__V1__TaskRequest *req; /* borrowed for the call only */
        const af_identity_t *who;               /* borrowed for the call only */
        Agentfleet__V1__Origin origin;
        const char *idem_key; /* idempotency key in the tenant's scope, or NULL for none */
        bool payload_object;  /* req->payload is known to be a JSON object text (it came as an
                               * object in a JSON request): not parsed again */
} af_admit_in_t;

typedef struct af_admit_out_s {
        af_err_t err;        /* AF_OK admitted; INVALID, NOT_FOUND (type), TOO_LARGE,
                              * FORBIDDEN: the request is wrong; UNAVAILABLE: try later */
        const char *message; /* human reason when err */
        bool replayed;       /* idempotency hit: the earlier task is returned */
        const char *task_id;
        json_t *task;           /* the task as JSON (borrowed: incref to keep); NULL for a new task
                                 * admitted from Kafka (ORIGIN_KAFKA), whose caller does not answer */
        int64_t retry_after_ms; /* UNAVAILABLE: when a retry can succeed, 0 unknown */
} af_admit_out_t;

/* Called once per admission, on the loop; possibly from inside af_admit_submit() when the
 * request is refused before any I/O. */
typedef void(af_admit_cb_t)(const af_admit_out_t *out, void *opaque);

/* Admit a request: validate, build the Task, reserve the idempotency key, publish the QUEUED
 * TaskResult to `results` (and index it once Kafka acknowledged it), then the Task to
 * `tasks.<lane>` (in that order, so the compacted `results` never ends on QUEUED after a
 * worker's final record), audit task.admitted, and only then call cb with AF_OK: an accepted
 * task is never lost. */
void af_admit_submit(af_coord_t *co, const af_admit_in_t *in, af_admit_cb_t *cb, void *opaque);
/* @returns the HTTP status for an admission error. */
int af_admit_http_status(af_err_t err);
/* @returns how old (ms) an idempotency reservation must be before a repeat may publish its
 *          task again (step 4b in admit.c): coordinator.takeover_grace when set, else twice
 *          Kafka's message timeout plus twice redis.command_timeout plus 5 s, by which any
 *          admission has published its task or died; -1 (never) with an unbounded message
 *          timeout. */
int64_t af_admit_takeover_grace(const af_config_t *conf);

/* ---- index.c ------------------------------------------------------------------------------- */

typedef struct af_index_query_s {
        const char *tenant;
        const char *status; /* status name or NULL */
        const char *type;   /* or NULL */
        const char *cursor; /* opaque (a task id) or NULL */
        int limit;
} af_index_query_t;

/* entry: the task's view (borrowed; NULL when not found); err set on Redis failure. */
typedef void(af_index_get_cb_t)(json_t *entry, const af_error_t *err, void *opaque);
/* tasks: array of views, next_cursor NULL at the end (both borrowed). */
typedef void(af_index_list_cb_t)(json_t *tasks, const char *next_cursor, const af_error_t *err,
                                 void *opaque);

af_index_t *af_index_new(af_coord_t *co, char *errstr, size_t errstr_size);
void af_index_destroy(af_index_t *ix); /* NULL is fine */
/* Record a TaskResult in the index (fire and forget; final states win). */
void af_index_apply(af_index_t *ix, const Agentfleet__V1__TaskResult *res);
/* The QUEUED record of a new task (admit.c), whose bytes pb are about to be produced to
 * `results`: remembered (copied) so that reading them back from `results` costs no second
 * update. Call before producing, since the read-back may come before the delivery report.
 * Then exactly one of: */
void af_index_own_expect(af_index_t *ix, const char *task_id, const void *pb, size_t len);
/* Kafka acknowledged it: apply it (res is the record the bytes encode; without an entry,
 * e.g. a full table, it is packed and applied as by af_index_apply). */
void af_index_own_apply(af_index_t *ix, const Agentfleet__V1__TaskResult *res);
/* Kafka did not: forget it, but apply it if it was read back (then it is in `results`). */
void af_index_own_drop(af_index_t *ix, const Agentfleet__V1__TaskResult *res);
void af_index_get(af_index_t *ix, const char *task_id, af_index_get_cb_t *cb, void *opaque);
void af_index_list(af_index_t *ix, const af_index_query_t *q, af_index_list_cb_t *cb, void *opaque);
/* Set the index status to "cancel_requested" unless a final state is there already.
 * cb gets the entry after the change. */
void af_index_mark_cancel(af_index_t *ix, const char *task_id, af_index_get_cb_t *cb, void *opaque);
/* Redis connection went up or down (from main.c's state callback). */
void af_index_redis_state(af_index_t *ix, bool up);
/* @returns whether the index has caught up with `results` once since start. */
bool af_index_ready(const af_index_t *ix);

/* ---- intake.c ------------------------------------------------------------------------------ */

af_intake_t *af_intake_new(af_coord_t *co, char *errstr, size_t errstr_size);
/* Stop fetching new requests (drain); those in flight finish and store their offsets. */
void af_intake_stop_fetching(af_intake_t *in);
/* Stop taking requests (commit what is done, leave the group). */
void af_intake_close(af_intake_t *in);
void af_intake_destroy(af_intake_t *in); /* NULL is fine */
int af_intake_inflight(const af_intake_t *in);

/* ---- api.c --------------------------------------------------------------------------------- */

/* Register every route on co->http. @returns 0, or -1 with errstr (out of memory). */
int af_api_register(af_coord_t *co, char *errstr, size_t errstr_size);
/* Stop the /readyz probe (waits for a Kafka metadata request in flight, at most 1 s) and
 * answer its waiters; before the producer goes. NULL co->api is fine. Loop thread. */
void af_api_shutdown(af_coord_t *co);
/* Print the route table, one "METHOD PATTERN" per line (kept in step with openapi.yaml). */
void af_api_print_routes(FILE *out);

#endif
