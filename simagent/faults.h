/*
 * faults: what simagent does to a request before answering it — latency (mean + jitter),
 * injected 500/503 errors, 429 with Retry-After, or never answering (a hang, for timeout
 * handling) — drawn from a deterministic sequence: the n-th request after start (or after
 * POST /stats/reset) always gets the same fate for the same seed and settings, so a failing
 * run can be replayed.
 *
 * Pure logic; the HTTP side (server.c) turns a fault into a timer and a deferred reply.
 */
#ifndef AF_SIM_FAULTS_H
#define AF_SIM_FAULTS_H

#include <stdint.h>

typedef struct af_sim_faults_opts_s {
        uint64_t seed;
        int64_t latency_ms; /* mean added delay, ms */
        int64_t jitter_ms;  /* delay is uniform in [mean - jitter, mean + jitter], >= 0 */
        int error_rate;     /* permille of requests answered 500 or 503 */
        int rate429;        /* permille of requests answered 429 + Retry-After */
        int timeout_rate;   /* permille of requests never answered */
} af_sim_faults_opts_t;

typedef enum {
        AF_SIM_FAULT_NONE = 0, /* answer normally, after delay_ms */
        AF_SIM_FAULT_500,
        AF_SIM_FAULT_503,
        AF_SIM_FAULT_429,
        AF_SIM_FAULT_HANG, /* never answer; the client must time out */
} af_sim_fault_kind_t;

typedef struct af_sim_fault_s {
        af_sim_fault_kind_t kind;
        int64_t delay_ms; /* before the answer (0 for a hang) */
} af_sim_fault_t;

typedef struct af_sim_faults_s {
        af_sim_faults_opts_t o;
        uint64_t n; /* requests drawn so far */
} af_sim_faults_t;

void af_sim_faults_init(af_sim_faults_t *f, const af_sim_faults_opts_t *o);
/* Draw the fate of the next request. Loop thread (not thread-safe). */
void af_sim_faults_next(af_sim_faults_t *f, af_sim_fault_t *out);
/* Start the sequence over (POST /stats/reset). */
void af_sim_faults_reset(af_sim_faults_t *f);

/* A 64-bit mix of x with good avalanche (splitmix64's finalizer): the deterministic source
 * of every "random" choice in simagent. */
uint64_t af_sim_mix64(uint64_t x);

#endif
