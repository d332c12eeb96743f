/*
 * backoff: overflow-proof exponential back-off with jitter.
 */
#include "backoff.h"

#include "ids.h"

int64_t af_backoff_delay_ms_r(uint32_t attempt, int64_t base_ms, int64_t cap_ms, uint64_t rnd) {
        if (base_ms <= 0)
                base_ms = 1;
        if (cap_ms < base_ms)
                cap_ms = base_ms;
        if (attempt == 0)
                attempt = 1;
        int64_t step = base_ms;
        for (uint32_t i = 1; i < attempt && step < cap_ms; i++)
                step = step > cap_ms / 2 ? cap_ms : step * 2;
        if (step > cap_ms)
                step = cap_ms;
        int64_t half = step / 2;
        return half + (int64_t) (rnd % (uint64_t) (step - half + 1));
}

int64_t af_backoff_delay_ms(uint32_t attempt, int64_t base_ms, int64_t cap_ms) {
        return af_backoff_delay_ms_r(attempt, base_ms, cap_ms, af_rand_u64());
}
