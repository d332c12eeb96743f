/*
 * backoff: exponential, capped, jittered delays (full jitter: uniform in [cap/2, cap] of the
 * exponential step, so retries spread out yet never collapse to zero). The exponent is
 * clamped before shifting, so no attempt number can overflow.
 */
#ifndef AF_BACKOFF_H
#define AF_BACKOFF_H

#include <stdint.h>

/* @returns the delay in ms before attempt `attempt` (1 = first retry):
 *          min(cap_ms, base_ms * 2^(attempt-1)) jittered into [half, full]. */
int64_t af_backoff_delay_ms(uint32_t attempt, int64_t base_ms, int64_t cap_ms);

/* Same with a caller-supplied random value (for deterministic tests). */
int64_t af_backoff_delay_ms_r(uint32_t attempt, int64_t base_ms, int64_t cap_ms, uint64_t rnd);

#endif
