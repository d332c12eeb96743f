/*
 * drain: the worker's graceful shutdown (SIGTERM/SIGINT). Stop fetching (hold the consumer),
 * let in-flight tasks finish within worker.drain_timeout, then hand back the rest: their
 * handlers are stopped and their leases released, no result is emitted and their offsets are
 * not stored, so the group redelivers them to another worker, which takes the freed lease at
 * once. Finally: flush the producer (every result and audit event acknowledged, which stores
 * the last offsets), commit, close the consumer (leave the group) and stop the loop.
 *
 * The last steps block (flush, synchronous commit), so they run from a timer of their own,
 * never from inside a Kafka or Redis callback.
 */
#include <stdlib.h>

#include "log.h"
#include "worker.h"

/* After the hand-back, how long releases and deliveries may still take before the worker
 * stops anyway (leases then expire by their TTL). */
#define DRAIN_GRACE_MS 10000
#define DRAIN_FLUSH_MS 10000

static af_timer_t *drain_finish_timer;
static af_timer_t *drain_grace_timer;

static void drain_finish(void *opaque) {
        af_worker_t *w = opaque;
        af_err_t err;

        if (w->stopped)
                return;
        w->stopped = true;
        af_timer_destroy(drain_grace_timer);
        drain_grace_timer = NULL;
        af_timer_destroy(w->drain_timer);
        w->drain_timer = NULL;
        if (w->in_flight)
                af_warn("stopping with %lld tasks still in flight: their leases expire and "
                        "the group redelivers them",
                        (long long) w->in_flight);
        af_emit_lifecycle(w, AGENTFLEET__V1__LIFECYCLE_KIND__LIFECYCLE_KIND_STOPPED, NULL, NULL,
                          "drained");
        /* Deliveries first: their acks store the last offsets before the commit. With
         * w->stopped set, callbacks start nothing new (no resend, no lease retry). */
        err = af_producer_flush(w->producer, DRAIN_FLUSH_MS);
        if (err)
                af_warn("producer flush: %s (%d messages left)", af_err2str(err),
                        af_producer_outq_len(w->producer));
        if (w->consumer) {
                err = af_consumer_commit(w->consumer, true /*sync*/);
                if (err)
                        af_debug("final commit: %s", af_err2str(err));
                af_consumer_close(w->consumer);
        }
        af_info("drained: %llu succeeded, %llu failed, %llu cancelled, %llu re-emitted, "
                "%llu dead-lettered",
                (unsigned long long) w->n_succeeded, (unsigned long long) w->n_failed,
                (unsigned long long) w->n_cancelled, (unsigned long long) w->n_reemitted,
                (unsigned long long) w->n_dead_lettered);
        af_timer_destroy(drain_finish_timer);
        drain_finish_timer = NULL;
        af_loop_stop(w->loop);
}

static void drain_schedule_finish(af_worker_t *w) {
        if (!drain_finish_timer)
                drain_finish_timer = af_timer_new(w->loop, drain_finish, w);
        if (drain_finish_timer && !af_timer_pending(drain_finish_timer))
                af_timer_start(drain_finish_timer, 0, false);
}

static void drain_deadline(void *opaque) {
        af_worker_t *w = opaque;
        af_wtask_t *t, *next;

        w->drain_deadline_passed = true;
        if (w->in_flight)
                af_info("drain deadline: handing back %lld tasks", (long long) w->in_flight);
        /* hand_back may retire t at once: walk with a saved successor. */
        for (t = TAILQ_FIRST(&w->tasks); t; t = next) {
                next = TAILQ_NEXT(t, link);
                af_lease_stage_hand_back(t);
        }
        drain_grace_timer = af_timer_new(w->loop, drain_finish, w);
        if (drain_grace_timer)
                af_timer_start(drain_grace_timer, DRAIN_GRACE_MS, false);
        af_drain_check(w);
}

void af_drain_start(af_worker_t *w) {
        if (w->draining)
                return;
        w->draining = true;
        af_info("draining: fetching stopped, %lld tasks in flight, deadline %lld ms",
                (long long) w->in_flight, (long long) w->drain_timeout_ms);
        af_emit_lifecycle(w, AGENTFLEET__V1__LIFECYCLE_KIND__LIFECYCLE_KIND_STOPPING, NULL, NULL,
                          "SIGTERM: draining");
        af_consume_update_hold(w);
        w->drain_timer = af_timer_new(w->loop, drain_deadline, w);
        if (w->drain_timer)
                af_timer_start(w->drain_timer, w->drain_timeout_ms, false);
        af_drain_check(w);
}

void af_drain_check(af_worker_t *w) {
        if (w->draining && !w->stopped && w->in_flight == 0)
                drain_schedule_finish(w);
}
