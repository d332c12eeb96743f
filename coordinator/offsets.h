/*
 * offsets: the contiguous-completion watermark of one consumed topic. Requests of a partition
 * are worked on concurrently and finish in any order; Kafka keeps one committed offset per
 * partition, so it may only move past a request once every earlier one is finished too.
 * Rebalances bump a partition's generation, so a request received before the partition was
 * revoked cannot move the watermark of the new assignment.
 */
#ifndef AF_COORD_OFFSETS_H
#define AF_COORD_OFFSETS_H

#include <stdint.h>

#include "err.h"

typedef struct af_offsets_s af_offsets_t;

af_offsets_t *af_offsets_new(void);
void af_offsets_destroy(af_offsets_t *o); /* NULL is fine */
/* Track a received offset (offsets of a partition arrive in increasing order).
 * *genp gets the partition's generation. @returns AF_ERR_NOMEM only. */
af_err_t af_offsets_add(af_offsets_t *o, int32_t partition, int64_t offset, uint64_t *genp);
/* Mark an offset finished. @returns the offset to store (every offset below it is finished)
 * when the watermark moved, else -1 (also when gen is stale). */
int64_t af_offsets_done(af_offsets_t *o, int32_t partition, uint64_t gen, int64_t offset);
/* Forget a partition's pending offsets (assigned or revoked) and bump its generation. */
void af_offsets_reset(af_offsets_t *o, int32_t partition);
/* Offsets tracked and not yet released, over all partitions. */
size_t af_offsets_pending(const af_offsets_t *o);

#endif
