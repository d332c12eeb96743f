/*
 * rules: the claims rule check that simagent serves as the "rules_check" integration and
 * that its triage model uses to reach a decision. Pure logic over a JSON claim, no I/O, so
 * the HTTP endpoint and the simulated LLM always agree on what a bad claim is.
 */
#ifndef AF_SIM_RULES_H
#define AF_SIM_RULES_H

#include <stdint.h>

#include <jansson.h>

/* The claim inside a rules_check body or a chat message: the object itself, or its "claim"
 * member when it wraps one. @returns a borrowed reference into doc, or NULL when doc is not
 * an object. */
json_t *af_sim_rules_claim(json_t *doc);

/* Check one claim against the house rules (amount positive, currency known, diagnosis codes
 * present and well formed, service date valid and not after the day of now_ms (unix ms, UTC),
 * claim id present).
 * @returns a new object {"passed":bool,"claim_id":..., "violations":[{"rule","message"}...]}
 * owned by the caller, or NULL on OOM. Any thread. */
json_t *af_sim_rules_check(const json_t *claim, int64_t now_ms);

#endif
