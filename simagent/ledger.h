/*
 * ledger: simagent's side-effect accounting, the evidence that "effectively once" holds.
 *
 * Every mutating integration call (crm_update, ticket_create) goes through here:
 *   - its Idempotency-Key seen before → a replay: the stored answer, nothing applied again;
 *   - its X-Agentfleet-Fence below the highest fence already applied to the same business
 *     entity by the same task → fenced (409): a stale lease holder must not apply;
 *   - otherwise applied; if the business entity (claim id + operation) had already been
 *     applied under another key, it is a duplicate — the number the demo asserts to be 0.
 *
 * Pure logic on jansson objects used as hash tables; capped in entries.
 * Loop thread only (not thread-safe).
 */
#ifndef AF_SIM_LEDGER_H
#define AF_SIM_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#define AF_SIM_LEDGER_MAX_ENTRIES 1000000 /* keys or entities; then refuse (503) */

typedef struct af_sim_ledger_s af_sim_ledger_t;

typedef struct af_sim_effect_s {
        const char *idem_key; /* Idempotency-Key, or NULL: applied every time */
        const char *entity;   /* business entity ("crm_update:C-1:triaged"), or NULL */
        const char *task_id;  /* X-Agentfleet-Task or NULL: fences compare per task */
        int64_t fence;        /* X-Agentfleet-Fence, or -1 when absent */
} af_sim_effect_t;

typedef enum {
        AF_SIM_LEDGER_APPLY = 0, /* apply it, then call af_sim_ledger_record() */
        AF_SIM_LEDGER_REPLAY,    /* answer with the stored status and body */
        AF_SIM_LEDGER_FENCED,    /* refuse with 409; *fence_out has the highest applied */
        AF_SIM_LEDGER_FULL,      /* over AF_SIM_LEDGER_MAX_ENTRIES: refuse with 503 */
} af_sim_ledger_verdict_t;

typedef struct af_sim_ledger_stats_s {
        int64_t applied;
        int64_t replayed;
        int64_t duplicates;
        int64_t fenced;
        int64_t max_fence; /* highest X-Agentfleet-Fence seen on a mutating request */
} af_sim_ledger_stats_t;

/* @returns a new, empty ledger, or NULL on OOM. */
af_sim_ledger_t *af_sim_ledger_new(void);
void af_sim_ledger_destroy(af_sim_ledger_t *l); /* NULL is fine */
void af_sim_ledger_reset(af_sim_ledger_t *l);

/* Decide what to do with effect e. On REPLAY, *statusp and *bodyp are the stored answer
 * (body borrowed, valid until the next call that changes the ledger). On FENCED,
 * *fence_out is the highest fence already applied. Counts replays and fenced refusals. */
af_sim_ledger_verdict_t af_sim_ledger_check(af_sim_ledger_t *l, const af_sim_effect_t *e,
                                            int *statusp, const char **bodyp, int64_t *fence_out);
/* Record that e was applied with this answer (body copied): counts it as applied, and as a
 * duplicate when its entity had been applied before under another (or no) key. */
void af_sim_ledger_record(af_sim_ledger_t *l, const af_sim_effect_t *e, int status,
                          const char *body);

void af_sim_ledger_stats(const af_sim_ledger_t *l, af_sim_ledger_stats_t *out);

#endif
