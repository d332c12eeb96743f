/*
 * agent_parse: reading one OpenAI-compatible chat-completions reply, and the agent's final
 * answer. Pure functions over jansson (no I/O), so every malformed shape a model or a proxy
 * can produce is unit tested; a malformed reply is a non-retriable error that says exactly
 * what was wrong and where (asking again would get the same answer from a deterministic
 * provider, and the retry budget belongs to outages).
 */
#ifndef AF_WORKER_AGENT_PARSE_H
#define AF_WORKER_AGENT_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

/* One tool call the model asked for. */
typedef struct af_tool_call_s {
        char *id;             /* tool_call_id to answer with */
        char *name;           /* function name: an integration */
        json_t *args;         /* parsed arguments object, or NULL when args_error is set */
        char args_error[160]; /* why the arguments are unusable (told to the model) */
} af_tool_call_t;

typedef struct af_chat_reply_s {
        json_t *message;       /* choices[0].message as received (owned): appended to the
                                * conversation when it carries tool calls */
        const char *content;   /* choices[0].message.content, or NULL (inside message) */
        af_tool_call_t *calls; /* owned */
        size_t call_cnt;
        const char *finish_reason; /* or NULL (inside root) */
        int64_t prompt_tokens;     /* usage, 0 when absent */
        int64_t completion_tokens;
        json_t *root; /* the whole reply (owned) */
} af_chat_reply_t;

/* Parse body into reply (zeroed first). @returns AF_OK, or AF_ERR_INVALID with errstr like
 * "chat completion reply: choices[0].message.tool_calls[1].function.name: missing". */
af_err_t af_chat_reply_parse(const char *body, size_t len, af_chat_reply_t *reply, char *errstr,
                             size_t errstr_size);
void af_chat_reply_clear(af_chat_reply_t *reply);

/* The agent's final content must be a JSON object (a ```json fence around it is accepted,
 * as models like to add one). @returns AF_OK with *outp (owned) or AF_ERR_INVALID. */
af_err_t af_chat_output_parse(const char *content, json_t **outp, char *errstr, size_t errstr_size);

#endif
