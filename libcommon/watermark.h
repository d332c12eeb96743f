/*
 * watermark: the per-partition contiguous-completion watermark of a consumer whose messages
 * are worked on concurrently (the worker's tasks, the coordinator's requests).
 *
 * Tasks of one partition finish in any order (an LLM call takes seconds, a CRM update
 * milliseconds), but a Kafka offset commit says "everything before this is done". So every
 * delivered offset is tracked until its task is done (result acknowledged by Kafka, or
 * dead-lettered); the offset that may be stored is one past the last offset of the longest
 * done prefix. Offsets arrive in increasing order per partition (Kafka delivers them so),
 * which keeps each partition's list sorted.
 *
 * A partition revoked and assigned again gets a new epoch; a task that finishes under an old
 * epoch no longer counts (its offset is another worker's business now).
 */
#ifndef AF_WATERMARK_H
#define AF_WATERMARK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct af_watermark_s af_watermark_t;

af_watermark_t *af_watermark_new(void);
void af_watermark_destroy(af_watermark_t *wm); /* NULL is fine */

/* Start tracking a partition afresh (assignment): forgets what was tracked, new epoch. */
void af_watermark_assign(af_watermark_t *wm, int topic, int32_t partition);
/* Forget a partition (revocation). */
void af_watermark_revoke(af_watermark_t *wm, int topic, int32_t partition);

/* Track a delivered offset (must be above every offset tracked for the partition so far;
 * an offset at or below is refused with AF_ERR_INVALID: a redelivery the caller should
 * treat as already being handled). Sets *epochp for af_watermark_done.
 * @returns AF_OK, AF_ERR_INVALID or AF_ERR_NOMEM. */
af_err_t af_watermark_track(af_watermark_t *wm, int topic, int32_t partition, int64_t offset,
                            uint32_t *epochp);

/* Mark a tracked offset done. @returns the next offset to store (last contiguous done + 1)
 * when the watermark moved, else -1 (an earlier offset is still in flight, or the
 * partition/epoch is no longer tracked). */
int64_t af_watermark_done(af_watermark_t *wm, int topic, int32_t partition, uint32_t epoch,
                          int64_t offset);

/* @returns whether partition is still tracked under epoch (not revoked or reassigned since):
 * whether work for one of its offsets still counts here. */
bool af_watermark_current(const af_watermark_t *wm, int topic, int32_t partition, uint32_t epoch);

/* Offsets tracked and not yet committable, over all partitions (done or not). */
size_t af_watermark_pending(const af_watermark_t *wm);

#endif
