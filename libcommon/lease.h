/*
 * lease: the per-task lease in Redis that lets many stateless workers share one task topic
 * without running a task twice at the same time, and without a stale holder publishing.
 *
 * A worker takes the lease before it executes a task, renews it while the task runs, and
 * finishes it (storing the TaskResult as the task's "done" record) or releases it. Each
 * acquisition gets a random 128-bit token (proof of ownership) and a fencing number,
 * max(last fence + 1, Redis's clock in microseconds), which only grows across owners, even
 * once the fence key is gone (see lua_acquire); the fence travels to integrations
 * (X-Agentfleet-Fence) so a side effect from an old holder can be refused.
 *
 * Keys, all in the slot of the task (hash tag), so every script touches one slot:
 *   af:{<task_id>}:lease   "<token>:<fence>:<owner>", PX ttl
 *   af:{<task_id>}:fence   the last fence given, until the task is finished
 *   af:{<task_id>}:done    the stored TaskResult bytes, PX done_ttl (all a finished task keeps)
 *   af:{<task_id>}:cancel  "1", PX ttl: cancellation requested
 *
 * Each operation is one Lua script run through af_redis_script_run(), so it is atomic.
 * Callbacks are called exactly once, from the loop, never from inside the call.
 */
#ifndef AF_LEASE_H
#define AF_LEASE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "redis.h"

typedef struct af_lease_s {
        char task_id[64]; /* caller fills; NUL-terminated */
        char owner[128];  /* caller fills: worker id; NUL-terminated */
        char token[33];   /* filled on ACQUIRED: 32 lower-case hex chars */
        int64_t fence;    /* filled on ACQUIRED: fencing number, > 0, grows across owners */
        int64_t ttl_ms;   /* caller fills: lease expiry, also used by renew */
} af_lease_t;

typedef enum {
        AF_LEASE_ACQUIRED,  /* the lease is ours: token and fence are filled */
        AF_LEASE_HELD,      /* held by another live owner */
        AF_LEASE_DONE,      /* a result was recorded: re-emit it, don't re-run */
        AF_LEASE_CANCELLED, /* cancel requested */
        AF_LEASE_LOST,      /* token no longer ours (expired and maybe taken over) */
        AF_LEASE_OK,
} af_lease_status_t;

/*
 * Called once per operation, from the loop. err is NULL on success; when it is non-NULL (a
 * Redis failure: timeout, unavailable, error reply, or a reply of unexpected shape) st is
 * meaningless; retry when af_error_is_retriable(err). data/data_len: for DONE, the stored
 * TaskResult bytes (valid only during the call); NULL/0 otherwise. lease is the caller's
 * struct, passed back (for request_cancel: a temporary one with only task_id filled).
 */
typedef void(af_lease_cb_t)(af_lease_t *lease, af_lease_status_t st, const char *data,
                            size_t data_len, const af_error_t *err, void *opaque);

/* The lease's struct must stay valid until cb is called. Loop thread only for all. */

/* task_id, owner, ttl_ms filled by caller; token, fence filled on ACQUIRED.
 * → ACQUIRED, HELD, DONE (with the stored result) or CANCELLED. */
void af_lease_acquire(af_redis_t *r, af_lease_t *lease, af_lease_cb_t *cb, void *opaque);

/* Extend the lease by lease->ttl_ms. → OK, LOST, or CANCELLED (still ours, but the task was
 * cancelled: stop it). */
void af_lease_renew(af_redis_t *r, af_lease_t *lease, af_lease_cb_t *cb, void *opaque);

/* Atomically: if the token is still ours, store result (len bytes) as the done record for
 * done_ttl_ms and release the lease → OK; else LOST (a stale holder must not publish its
 * result). */
void af_lease_finish(af_redis_t *r, af_lease_t *lease, const void *result, size_t len,
                     int64_t done_ttl_ms, af_lease_cb_t *cb, void *opaque);

/* Release without a result (hand back on shutdown). → OK or LOST. */
void af_lease_release(af_redis_t *r, af_lease_t *lease, af_lease_cb_t *cb, void *opaque);

/* Mark the task cancelled for ttl_ms: a later acquire gets CANCELLED, the holder's next renew
 * gets CANCELLED. → OK; the lease passed to cb is valid only during the call. */
void af_lease_request_cancel(af_redis_t *r, const char *task_id, int64_t ttl_ms, af_lease_cb_t *cb,
                             void *opaque);

/* @returns a static name ("acquired", "held", ...) for logs and metrics. */
const char *af_lease_status2str(af_lease_status_t st);

/* An unfinished task's last fence is kept this long after its last acquire (7 days): longer
 * than any gap between two attempts, so the next fence is the last + 1 even if Redis's clock
 * stepped back. Finish deletes it (the done record then refuses every later owner). */
#define AF_LEASE_FENCE_TTL_MS (7LL * 24 * 3600 * 1000)
/* done_ttl_ms <= 0 in af_lease_finish() means this (24 h). */
#define AF_LEASE_DONE_TTL_DEFAULT_MS (24LL * 3600 * 1000)

/* ---- Exposed for unit tests: strict parsing of the scripts' replies ---------------------- */

typedef enum {
        AF_LEASE_OP_ACQUIRE,
        AF_LEASE_OP_RENEW,
        AF_LEASE_OP_FINISH,
        AF_LEASE_OP_RELEASE,
        AF_LEASE_OP_CANCEL,
} af_lease_op_t;

/* Parse the reply of op's script: the usual outcome is a bare integer (acquire: the fence of
 * ACQUIRED; renew, finish, release: 1 for OK), the others an array {'WORD', ...} (DONE with the
 * stored result, HELD, CANCELLED, LOST); cancel is a plain +OK. A reply of any other shape
 * (type, element count, a status the op cannot return, a fence <= 0, an integer other than 1)
 * is AF_ERR_UPSTREAM with errstr saying what was wrong.
 * On AF_OK: *st is set; *fence for ACQUIRED; *data and *data_len (pointing into reply) for DONE. */
af_err_t af_lease_parse_reply(af_lease_op_t op, const redisReply *reply, af_lease_status_t *st,
                              int64_t *fence, const char **data, size_t *data_len, char *errstr,
                              size_t errstr_size);

#endif
