/*
 * ledger: side-effect accounting of simagent (see ledger.h). Two jansson objects serve as
 * hash tables: idempotency key → [status, body], and fence scope (entity, or entity + task)
 * → highest fence applied; a third maps entity → number of applications.
 */
#include "ledger.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"

struct af_sim_ledger_s {
        json_t *keys;     /* idempotency key → [status, body] */
        json_t *fences;   /* fence scope → highest fence applied (integer) */
        json_t *entities; /* entity → applications (integer) */
        af_sim_ledger_stats_t st;
};

af_sim_ledger_t *af_sim_ledger_new(void) {
        af_sim_ledger_t *l = calloc(1, sizeof(*l));

        if (!l)
                return NULL;
        l->keys = json_object();
        l->fences = json_object();
        l->entities = json_object();
        if (!l->keys || !l->fences || !l->entities) {
                af_sim_ledger_destroy(l);
                return NULL;
        }
        return l;
}

void af_sim_ledger_destroy(af_sim_ledger_t *l) {
        if (!l)
                return;
        json_decref(l->keys);
        json_decref(l->fences);
        json_decref(l->entities);
        free(l);
}

void af_sim_ledger_reset(af_sim_ledger_t *l) {
        json_object_clear(l->keys);
        json_object_clear(l->fences);
        json_object_clear(l->entities);
        memset(&l->st, 0, sizeof(l->st));
}

/* The scope a fence is compared in: fencing numbers come from one task's lease, so they
 * are only comparable between holders of the same task; without a task id, the entity.
 * @returns false when there is nothing to fence on. */
static bool ledger_fence_scope(const af_sim_effect_t *e, af_buf_t *b) {
        if (!e->entity || e->fence < 0)
                return false;
        af_buf_init(b, 1024);
        return af_buf_printf(b, "%s|%s", e->entity, e->task_id ? e->task_id : "") == AF_OK;
}

af_sim_ledger_verdict_t af_sim_ledger_check(af_sim_ledger_t *l, const af_sim_effect_t *e,
                                            int *statusp, const char **bodyp, int64_t *fence_out) {
        af_sim_ledger_verdict_t v = AF_SIM_LEDGER_APPLY;
        json_t *stored, *highest;
        af_buf_t scope;

        if (e->fence > l->st.max_fence)
                l->st.max_fence = e->fence;
        /* A replay first: a stale holder retrying its own key only gets the stored answer,
         * which applies nothing, so it need not be fenced. */
        if (e->idem_key && (stored = json_object_get(l->keys, e->idem_key))) {
                *statusp = (int) json_integer_value(json_array_get(stored, 0));
                *bodyp = json_string_value(json_array_get(stored, 1));
                l->st.replayed++;
                v = AF_SIM_LEDGER_REPLAY;
                goto out;
        }
        if (ledger_fence_scope(e, &scope)) {
                highest = json_object_get(l->fences, scope.data);
                if (highest && e->fence < json_integer_value(highest)) {
                        *fence_out = json_integer_value(highest);
                        l->st.fenced++;
                        v = AF_SIM_LEDGER_FENCED;
                }
                af_buf_free(&scope);
                if (v != AF_SIM_LEDGER_APPLY)
                        goto out;
        }
        if (json_object_size(l->keys) >= AF_SIM_LEDGER_MAX_ENTRIES ||
            json_object_size(l->fences) >= AF_SIM_LEDGER_MAX_ENTRIES ||
            json_object_size(l->entities) >= AF_SIM_LEDGER_MAX_ENTRIES)
                v = AF_SIM_LEDGER_FULL;
out:
        return v;
}

void af_sim_ledger_record(af_sim_ledger_t *l, const af_sim_effect_t *e, int status,
                          const char *body) {
        af_buf_t scope;

        l->st.applied++;
        if (e->idem_key)
                json_object_set_new_nocheck(l->keys, e->idem_key,
                                            json_pack("[i, s]", status, body ? body : ""));
        if (e->entity) {
                json_int_t n = json_integer_value(json_object_get(l->entities, e->entity));
                /* A second application of one entity: by definition under another key (the
                 * same key would have been a replay), so the effect happened twice. */
                if (n > 0)
                        l->st.duplicates++;
                json_object_set_new_nocheck(l->entities, e->entity, json_integer(n + 1));
        }
        if (ledger_fence_scope(e, &scope)) {
                json_t *cur = json_object_get(l->fences, scope.data);
                if (!cur || json_integer_value(cur) < e->fence)
                        json_object_set_new_nocheck(l->fences, scope.data, json_integer(e->fence));
                af_buf_free(&scope);
        }
}

void af_sim_ledger_stats(const af_sim_ledger_t *l, af_sim_ledger_stats_t *out) {
        *out = l->st;
}
