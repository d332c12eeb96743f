/*
 * faults: the deterministic fault and latency sequence of simagent (see faults.h). Each
 * request's draws come from mixing (seed, request number, draw number), a counter-based
 * generator: no state but the counter, so a reset replays the sequence exactly.
 */
#include "faults.h"

#include <string.h>

uint64_t af_sim_mix64(uint64_t x) {
        x += 0x9e3779b97f4a7c15ULL;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
}

void af_sim_faults_init(af_sim_faults_t *f, const af_sim_faults_opts_t *o) {
        memset(f, 0, sizeof(*f));
        f->o = *o;
}

void af_sim_faults_reset(af_sim_faults_t *f) {
        f->n = 0;
}

/* Draw number `which` of request n: independent streams for each decision, so changing one
 * rate does not reshuffle the others. */
static uint64_t faults_draw(const af_sim_faults_t *f, uint64_t n, unsigned which) {
        return af_sim_mix64(f->o.seed ^ af_sim_mix64(n * 8 + which));
}

void af_sim_faults_next(af_sim_faults_t *f, af_sim_fault_t *out) {
        uint64_t n = f->n++;
        int64_t delay = f->o.latency_ms;
        int64_t jitter = f->o.jitter_ms > 0 ? f->o.jitter_ms : 0;

        memset(out, 0, sizeof(*out));
        if ((int) (faults_draw(f, n, 0) % 1000) < f->o.timeout_rate) {
                out->kind = AF_SIM_FAULT_HANG;
                return;
        }
        if (jitter > 0)
                delay += (int64_t) (faults_draw(f, n, 1) % (uint64_t) (2 * jitter + 1)) - jitter;
        out->delay_ms = delay > 0 ? delay : 0;
        if ((int) (faults_draw(f, n, 2) % 1000) < f->o.rate429)
                out->kind = AF_SIM_FAULT_429;
        else if ((int) (faults_draw(f, n, 3) % 1000) < f->o.error_rate)
                out->kind = (faults_draw(f, n, 4) & 1) ? AF_SIM_FAULT_503 : AF_SIM_FAULT_500;
}
