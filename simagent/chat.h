/*
 * chat: simagent's OpenAI-compatible chat-completions model, as pure logic: a request body
 * in, a status and a response body out. The worker's agent handler talks to it exactly as it
 * would to a real provider, so the whole agent loop (tools offered, tool_calls returned,
 * tool results sent back, final JSON parsed) runs in tests and the demo without an API key.
 *
 * Models whose name contains "triage" behave as the claims-triage agent: with no tool
 * results yet they call rules_check(claim) and crm_update(claim_id, status "triaged") (those
 * of the two that were offered as tools); once tool results are present they answer with a
 * JSON decision {"decision","confidence","reason","claim_id"}. Any other model answers
 * {"ok":true}. Everything is derived from the seed and the request content: the same
 * request always gets the same answer (except id and created).
 */
#ifndef AF_SIM_CHAT_H
#define AF_SIM_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Claims above this amount go to human review rather than straight approval. */
#define AF_SIM_CHAT_REVIEW_AMOUNT 10000.0

typedef struct af_sim_chat_opts_s {
        uint64_t seed;
        int64_t prompt_tokens;     /* mean prompt tokens of a first turn */
        int64_t completion_tokens; /* mean completion tokens */
        int64_t now_ms;            /* unix ms, for the rules' "date not in the future" */
} af_sim_chat_opts_t;

typedef struct af_sim_chat_reply_s {
        int status;            /* 200, or 400 with an OpenAI error object */
        json_t *body;          /* owned by the caller */
        int64_t prompt_tokens; /* usage, 0 on error */
        int64_t completion_tokens;
} af_sim_chat_reply_t;

/* Answer one POST /v1/chat/completions body (len bytes, need not be NUL-terminated).
 * id ("chatcmpl-...") and created (unix s) are the only non-deterministic fields and are
 * supplied by the caller. out->body is NULL only on OOM. Any thread. */
void af_sim_chat_respond(const af_sim_chat_opts_t *o, const char *body, size_t len, const char *id,
                         int64_t created, af_sim_chat_reply_t *out);

/* An OpenAI-style error body {"error":{"message","type","param","code"}}; param and code
 * may be NULL (JSON null). @returns a new reference. */
json_t *af_sim_openai_error(const char *message, const char *type, const char *param,
                            const char *code);

#endif
