/*
 * lease_stage: the worker's second stage and the keeper of each task's lease
 * (libcommon/lease.h). A task runs only under a lease: a random token plus a fencing number
 * that grows across owners, renewed every worker.lease_renew while the handler runs, and
 * closed by af_lease_finish, which stores the TaskResult as the task's done record and
 * releases the lease atomically, or refuses (LOST) when a stale holder tries to publish.
 *
 * Outcomes of an acquisition:
 *   ACQUIRED   run the handler (execute.c) with the renew timer ticking;
 *   DONE       someone finished it already: re-emit the stored result, never re-run;
 *   CANCELLED  emit a CANCELLED result, do not run;
 *   HELD       another live worker runs it (e.g. after a rebalance): re-check later with
 *              back-off until it is DONE or the lease frees — never drop it;
 *   error      Redis is down: back off and retry; the task stays in flight and its offset
 *              uncommitted, so nothing is lost (one log line per outage).
 *
 * Invariant: at most one Redis command per task is in flight (redis_busy / renew_busy), so
 * a task is never freed under a pending callback.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "clock.h"
#include "log.h"
#include "worker.h"

#define LEASE_RETRY_BASE_MS 100 /* first retry after a Redis failure */
#define LEASE_RETRY_CAP_MS  5000
#define LEASE_HELD_BASE_MS  500 /* first re-check of a lease held elsewhere */

static void lease_acquire(af_wtask_t *t);
static void lease_finish(af_wtask_t *t);
static void lease_release(af_wtask_t *t);

/* ---- Redis outage bookkeeping: one log line and one event per outage ------------------- */

static void lease_redis_failed(af_wtask_t *t, const char *op, const af_error_t *err) {
        af_worker_t *w = t->w;
        af_observe_redis_error(op);
        if (!w->redis_down_logged) {
                w->redis_down_logged = true;
                af_warn("redis %s failed (%s): leases are retried with back-off until Redis "
                        "answers; tasks stay in flight",
                        op, err->msg);
                af_emit_lifecycle(w, AGENTFLEET__V1__LIFECYCLE_KIND__LIFECYCLE_KIND_REDIS_DOWN,
                                  t->task->id, NULL, err->msg);
        }
}

static void lease_redis_ok(af_wtask_t *t) {
        af_worker_t *w = t->w;
        if (w->redis_down_logged) {
                w->redis_down_logged = false;
                af_info("redis answers again: leases resume");
                af_emit_lifecycle(w, AGENTFLEET__V1__LIFECYCLE_KIND__LIFECYCLE_KIND_REDIS_UP, NULL,
                                  NULL, "lease commands succeed again");
        }
}

/* ---- the task's timer: retries and deferred steps, by state ---------------------------- */

static void lease_timer_cb(void *opaque) {
        af_wtask_t *t = opaque;
        switch (t->state) {
        case AF_WTASK_LEASING:
                lease_acquire(t);
                break;
        case AF_WTASK_RUNNING:
                af_execute_timeout(t);
                break;
        case AF_WTASK_FINISHING:
                lease_finish(t);
                break;
        case AF_WTASK_EMITTING:
                af_emit_result(t);
                break;
        case AF_WTASK_RELEASING:
                lease_release(t);
                break;
        }
}

static void lease_later(af_wtask_t *t, int64_t ms) {
        if (!t->timer)
                t->timer = af_timer_new(t->w->loop, lease_timer_cb, t);
        if (!t->timer) {
                af_error("out of memory for a timer of task %s", t->task->id);
                return;
        }
        af_timer_start(t->timer, ms, false);
}

void af_lease_stage_later(af_wtask_t *t, int64_t ms) {
        lease_later(t, ms);
}

static void lease_retry_redis(af_wtask_t *t) {
        t->lease_tries++;
        lease_later(t,
                    af_backoff_delay_ms(t->lease_tries, LEASE_RETRY_BASE_MS, LEASE_RETRY_CAP_MS));
}

/* ---- renew ------------------------------------------------------------------------------ */

static void lease_after_handler(af_wtask_t *t);

static void lease_on_renew(af_lease_t *lease, af_lease_status_t st, const char *data,
                           size_t data_len, const af_error_t *err, void *opaque) {
        af_wtask_t *t = opaque;

        if (t->w->stopped)
                return; /* forced stop: main frees what is left */
        t->renew_busy = false;
        if (t->handler_finished) {
                /* The handler ended while this renew was in flight; finish decides now. */
                t->handler_finished = false;
                lease_after_handler(t);
                return;
        }
        if (t->state != AF_WTASK_RUNNING)
                return;
        if (err) {
                /* Keep running: the lease lives for lease_ttl, several renew periods; if it
                 * expires meanwhile, af_lease_finish says LOST and nothing stale is published. */
                lease_redis_failed(t, "renew", err);
                return;
        }
        lease_redis_ok(t);
        if (st == AF_LEASE_LOST) {
                af_log_task(AF_LOG_WARN, t->task->id, t->task->traceparent,
                            "lease lost while running (fence %" PRId64 "): stopping the handler",
                            t->lease.fence);
                t->lost = true;
                af_execute_abort(t);
        } else if (st == AF_LEASE_CANCELLED) {
                af_log_task(AF_LOG_INFO, t->task->id, t->task->traceparent,
                            "cancel requested: stopping the handler");
                t->cancel_requested = true;
                af_execute_abort(t);
        }
}

/* Arm the task's one timer for whichever comes first: the next renewal or the RUNNING
 * record. One timer for both keeps the per-task footprint at two timers. */
static void lease_tick_schedule(af_wtask_t *t) {
        int64_t now = af_clock_mono_ms();
        int64_t next = t->renew_due_ms;

        if (!t->running_sent && t->running_due_ms < next)
                next = t->running_due_ms;
        af_timer_start(t->renew_timer, next > now ? next - now : 0, false);
}

static void lease_renew_cb(void *opaque) {
        af_wtask_t *t = opaque;
        af_worker_t *w = t->w;
        int64_t now = af_clock_mono_ms();

        if (t->state != AF_WTASK_RUNNING || t->aborted)
                return; /* the handler is ending: nothing more to renew or announce */
        if (!t->running_sent && now >= t->running_due_ms) {
                /* Still running: worth telling watchers (and the index) it started. */
                t->running_sent = true;
                af_emit_running(t);
        }
        if (now >= t->renew_due_ms) {
                t->renew_due_ms = now + w->lease_renew_ms;
                if (!t->renew_busy && !t->redis_busy) {
                        t->renew_busy = true;
                        af_lease_renew(w->redis, &t->lease, lease_on_renew, t);
                }
        }
        lease_tick_schedule(t);
}

/* ---- acquire ---------------------------------------------------------------------------- */

static void lease_on_acquire(af_lease_t *lease, af_lease_status_t st, const char *data,
                             size_t data_len, const af_error_t *err, void *opaque) {
        af_wtask_t *t = opaque;
        af_worker_t *w = t->w;
        af_details_t details;

        if (t->w->stopped)
                return; /* forced stop: main frees what is left */
        t->redis_busy = false;
        if (err) {
                lease_redis_failed(t, "lease acquire", err);
                if (t->hand_back) {
                        af_wtask_retire(t, false);
                        return;
                }
                lease_retry_redis(t);
                return;
        }
        lease_redis_ok(t);
        if (t->hand_back) {
                /* Draining past its deadline: a lease just taken goes straight back. */
                if (st == AF_LEASE_ACQUIRED) {
                        t->leased = true;
                        t->state = AF_WTASK_RELEASING;
                        lease_release(t);
                } else {
                        af_wtask_retire(t, false);
                }
                return;
        }
        switch (st) {
        case AF_LEASE_ACQUIRED:
                t->leased = true;
                t->lease_tries = 0;
                t->state = AF_WTASK_RUNNING;
                t->started_wall_ms = af_clock_wall_ms();
                t->started_mono_ms = af_clock_mono_ms();
                af_details_begin(&details);
                af_details_i64(&details, "fence", t->lease.fence);
                af_details_i64(&details, "ttl_ms", t->lease.ttl_ms);
                af_details_str(&details, "topic", w->topics[t->topic_idx]);
                af_details_i64(&details, "partition", t->partition);
                af_details_i64(&details, "offset", t->offset);
                af_emit_audit(t, "lease.acquired", "ok", NULL, af_details_end(&details));
                /* The RUNNING record waits worker.running_after: most tasks of a busy fleet
                 * end sooner, and their final record says all a RUNNING one would. */
                t->running_sent = w->running_after_ms <= 0;
                if (t->running_sent)
                        af_emit_running(t);
                t->renew_due_ms = t->started_mono_ms + w->lease_renew_ms;
                t->running_due_ms = t->started_mono_ms + w->running_after_ms;
                if (!t->renew_timer)
                        t->renew_timer = af_timer_new(w->loop, lease_renew_cb, t);
                if (t->renew_timer)
                        lease_tick_schedule(t);
                af_execute_start(t);
                break;
        case AF_LEASE_DONE:
                /* Finished before (by us or another worker): its stored result is the
                 * answer; running it again could apply a side effect twice. */
                free(t->result);
                t->result = malloc(data_len ? data_len : 1);
                if (!t->result) {
                        lease_retry_redis(t);
                        break;
                }
                memcpy(t->result, data, data_len);
                t->result_len = data_len;
                t->reemit = true;
                t->state = AF_WTASK_EMITTING;
                w->n_reemitted++;
                af_log_task(AF_LOG_INFO, t->task->id, t->task->traceparent,
                            "already done: re-emitting the stored result");
                af_emit_result(t);
                break;
        case AF_LEASE_CANCELLED:
                t->status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_CANCELLED;
                af_error_set(&t->error, AF_ERR_CANCELLED, "cancelled before it started");
                if (af_emit_encode_result(t) != AF_OK) {
                        lease_retry_redis(t);
                        break;
                }
                t->state = AF_WTASK_EMITTING;
                af_emit_result(t);
                break;
        case AF_LEASE_HELD:
        case AF_LEASE_LOST:
        case AF_LEASE_OK:
        default:
                /* Another live owner runs it. Its result will appear as DONE, or its lease
                 * expires (it died) and we take over. */
                t->lease_tries++;
                af_log_task(AF_LOG_DEBUG, t->task->id, t->task->traceparent,
                            "lease held elsewhere (%s), re-checking", af_lease_status2str(st));
                lease_later(t, af_backoff_delay_ms(t->lease_tries, LEASE_HELD_BASE_MS,
                                                   w->lease_ttl_ms));
                break;
        }
}

static void lease_acquire(af_wtask_t *t) {
        af_worker_t *w = t->w;

        t->state = AF_WTASK_LEASING;
        if (t->hand_back) {
                af_wtask_retire(t, false);
                return;
        }
        memset(&t->lease, 0, sizeof(t->lease));
        snprintf(t->lease.task_id, sizeof(t->lease.task_id), "%s", t->task->id);
        snprintf(t->lease.owner, sizeof(t->lease.owner), "%s", w->id);
        t->lease.ttl_ms = w->lease_ttl_ms;
        t->redis_busy = true;
        af_lease_acquire(w->redis, &t->lease, lease_on_acquire, t);
}

void af_lease_stage_start(af_wtask_t *t) {
        lease_acquire(t);
}

/* ---- finish ----------------------------------------------------------------------------- */

static void lease_lost(af_wtask_t *t, const char *when) {
        af_log_task(AF_LOG_WARN, t->task->id, t->task->traceparent,
                    "lease lost %s (fence %" PRId64 "): result not published; re-checking", when,
                    t->lease.fence);
        af_observe_lease_lost();
        af_emit_lifecycle(t->w, AGENTFLEET__V1__LIFECYCLE_KIND__LIFECYCLE_KIND_LEASE_LOST,
                          t->task->id, NULL, when);
        t->leased = false;
        t->lost = false;
        t->aborted = false;
        t->cancel_requested = false;
        free(t->output);
        t->output = NULL;
        free(t->result);
        t->result = NULL;
        af_agent_run_free(t->agent);
        t->agent = NULL;
        t->agent_version = NULL;
        t->prompt_tokens = t->completion_tokens = t->cost_micros = 0;
        t->llm_calls = t->tool_calls = 0;
        t->state = AF_WTASK_LEASING;
        t->lease_tries++;
        lease_later(t, af_backoff_delay_ms(t->lease_tries, LEASE_HELD_BASE_MS, t->w->lease_ttl_ms));
}

static void lease_on_finish(af_lease_t *lease, af_lease_status_t st, const char *data,
                            size_t data_len, const af_error_t *err, void *opaque) {
        af_wtask_t *t = opaque;

        if (t->w->stopped)
                return; /* forced stop: main frees what is left */
        t->redis_busy = false;
        if (err) {
                lease_redis_failed(t, "lease finish", err);
                lease_retry_redis(t);
                return;
        }
        lease_redis_ok(t);
        if (st != AF_LEASE_OK) {
                lease_lost(t, "at finish");
                return;
        }
        t->leased = false;
        t->lease_tries = 0;
        t->state = AF_WTASK_EMITTING;
        af_emit_result(t);
}

static void lease_finish(af_wtask_t *t) {
        t->state = AF_WTASK_FINISHING;
        t->redis_busy = true;
        af_lease_finish(t->w->redis, &t->lease, t->result, t->result_len, t->w->done_ttl_ms,
                        lease_on_finish, t);
}

/* ---- release (drain hand-back) ----------------------------------------------------------- */

static void lease_on_release(af_lease_t *lease, af_lease_status_t st, const char *data,
                             size_t data_len, const af_error_t *err, void *opaque) {
        af_wtask_t *t = opaque;

        if (t->w->stopped)
                return; /* forced stop: main frees what is left */
        t->redis_busy = false;
        /* Whatever the answer, the task is handed back: on a Redis failure the lease simply
         * expires after lease_ttl and the redelivered task waits that long. */
        if (err)
                af_log_task(AF_LOG_WARN, t->task->id, t->task->traceparent,
                            "lease release failed (%s): it expires by itself", err->msg);
        else
                af_log_task(AF_LOG_INFO, t->task->id, t->task->traceparent,
                            "handed back (lease %s)", af_lease_status2str(st));
        t->leased = false;
        af_wtask_retire(t, false /*offset not done: redelivered to another worker*/);
}

static void lease_release(af_wtask_t *t) {
        t->state = AF_WTASK_RELEASING;
        t->redis_busy = true;
        af_lease_release(t->w->redis, &t->lease, lease_on_release, t);
}

/* ---- after the handler ------------------------------------------------------------------ */

static void lease_after_handler(af_wtask_t *t) {
        if (t->hand_back) {
                lease_release(t);
                return;
        }
        if (t->lost) {
                lease_lost(t, "while running");
                return;
        }
        if (t->cancel_requested &&
            t->status != AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED) {
                t->status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_CANCELLED;
                af_error_set(&t->error, AF_ERR_CANCELLED, "cancelled while running");
                t->error_code = NULL;
        }
        if (af_emit_encode_result(t) != AF_OK) {
                af_log_task(AF_LOG_ERROR, t->task->id, t->task->traceparent,
                            "cannot encode the result: handing the task back");
                lease_release(t);
                return;
        }
        lease_finish(t);
}

void af_lease_stage_handler_done(af_wtask_t *t) {
        if (t->renew_timer)
                af_timer_stop(t->renew_timer);
        if (t->timer)
                af_timer_stop(t->timer); /* the time budget (execute.c) */
        if (t->renew_busy) {
                t->handler_finished = true;
                return;
        }
        lease_after_handler(t);
}

/* ---- drain ------------------------------------------------------------------------------ */

void af_lease_stage_hand_back(af_wtask_t *t) {
        switch (t->state) {
        case AF_WTASK_LEASING:
                t->hand_back = true;
                if (!t->redis_busy)
                        af_wtask_retire(t, false);
                break;
        case AF_WTASK_RUNNING:
                t->hand_back = true;
                af_execute_abort(t);
                break;
        case AF_WTASK_FINISHING:
        case AF_WTASK_EMITTING:
        case AF_WTASK_RELEASING:
                /* The result is being stored or delivered: let it complete. */
                break;
        }
}
