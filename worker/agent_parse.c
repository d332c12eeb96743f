/*
 * agent_parse: chat-completions reply and final-answer parsing (see agent_parse.h). The
 * agent stage (agent.c) calls these on every model response; nothing here allocates beyond
 * the reply's JSON and its tool-call array.
 */
#include "agent_parse.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AF_CHAT_MAX_TOOL_CALLS 64 /* per reply: more is a runaway model, not a plan */

void af_chat_reply_clear(af_chat_reply_t *reply) {
        if (!reply)
                return;
        for (size_t i = 0; i < reply->call_cnt; i++) {
                free(reply->calls[i].id);
                free(reply->calls[i].name);
                json_decref(reply->calls[i].args);
        }
        free(reply->calls);
        json_decref(reply->message);
        json_decref(reply->root);
        memset(reply, 0, sizeof(*reply));
}

/* Fill call from tool_calls[i]. @returns AF_OK or AF_ERR_INVALID with errstr. */
static af_err_t chat_parse_call(const json_t *jc, size_t i, af_tool_call_t *call, char *errstr,
                                size_t errstr_size) {
        const char *pfx = "chat completion reply: choices[0].message.tool_calls";
        const json_t *fn, *jargs;
        const char *id, *name;

        if (!json_is_object(jc))
                return af_errstr(AF_ERR_INVALID, errstr, errstr_size, "%s[%zu]: not an object", pfx,
                                 i);
        id = json_string_value(json_object_get(jc, "id"));
        if (!id || !*id)
                return af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                 "%s[%zu].id: missing or not a string", pfx, i);
        fn = json_object_get(jc, "function");
        if (!json_is_object(fn))
                return af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                 "%s[%zu].function: missing or not an object", pfx, i);
        name = json_string_value(json_object_get(fn, "name"));
        if (!name || !*name)
                return af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                 "%s[%zu].function.name: missing or not a string", pfx, i);
        call->id = strdup(id);
        call->name = strdup(name);
        if (!call->id || !call->name)
                return af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
        /* OpenAI sends the arguments as JSON text; some compatible servers as an object.
         * Unusable arguments are the model's mistake: it is told, not the task failed. */
        jargs = json_object_get(fn, "arguments");
        if (json_is_object(jargs)) {
                call->args = json_deep_copy(jargs);
        } else if (json_is_string(jargs)) {
                json_error_t jerr;
                const char *txt = json_string_value(jargs);
                call->args = *txt ? json_loads(txt, JSON_REJECT_DUPLICATES, &jerr) : json_object();
                if (!call->args)
                        af_errstr(AF_ERR_INVALID, call->args_error, sizeof(call->args_error),
                                  "arguments are not valid JSON: %.100s at column %d", jerr.text,
                                  jerr.column);
                else if (!json_is_object(call->args)) {
                        json_decref(call->args);
                        call->args = NULL;
                        snprintf(call->args_error, sizeof(call->args_error),
                                 "arguments must be a JSON object");
                }
        } else if (!jargs || json_is_null(jargs)) {
                call->args = json_object();
        } else {
                snprintf(call->args_error, sizeof(call->args_error),
                         "arguments must be a JSON object or JSON text");
        }
        return AF_OK;
}

af_err_t af_chat_reply_parse(const char *body, size_t len, af_chat_reply_t *reply, char *errstr,
                             size_t errstr_size) {
        json_error_t jerr;
        const json_t *choices, *choice, *msg, *content, *calls, *usage;
        af_err_t err = AF_OK;

        memset(reply, 0, sizeof(*reply));
        reply->root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &jerr);
        if (!reply->root) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "chat completion reply is not JSON: %s (line %d, column %d)",
                                jerr.text, jerr.line, jerr.column);
                goto out;
        }
        if (!json_is_object(reply->root)) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "chat completion reply: not a JSON object");
                goto out;
        }
        choices = json_object_get(reply->root, "choices");
        if (!json_is_array(choices) || json_array_size(choices) == 0) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "chat completion reply: choices: missing or empty");
                goto out;
        }
        choice = json_array_get(choices, 0);
        msg = json_object_get(choice, "message");
        if (!json_is_object(msg)) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "chat completion reply: choices[0].message: missing or not "
                                "an object");
                goto out;
        }
        reply->message = json_incref((json_t *) msg);
        reply->finish_reason = json_string_value(json_object_get(choice, "finish_reason"));
        content = json_object_get(msg, "content");
        if (content && !json_is_null(content) && !json_is_string(content)) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "chat completion reply: choices[0].message.content: not a "
                                "string");
                goto out;
        }
        reply->content = json_string_value(content);
        calls = json_object_get(msg, "tool_calls");
        if (calls && !json_is_null(calls)) {
                if (!json_is_array(calls)) {
                        err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                        "chat completion reply: choices[0].message.tool_calls: "
                                        "not an array");
                        goto out;
                }
                if (json_array_size(calls) > AF_CHAT_MAX_TOOL_CALLS) {
                        err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                        "chat completion reply: %zu tool calls in one reply, "
                                        "at most %d allowed",
                                        json_array_size(calls), AF_CHAT_MAX_TOOL_CALLS);
                        goto out;
                }
                if (json_array_size(calls)) {
                        reply->calls = calloc(json_array_size(calls), sizeof(*reply->calls));
                        if (!reply->calls) {
                                err = af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                                goto out;
                        }
                }
                for (size_t i = 0; i < json_array_size(calls) && !err; i++) {
                        reply->call_cnt = i + 1;
                        err = chat_parse_call(json_array_get(calls, i), i, &reply->calls[i], errstr,
                                              errstr_size);
                }
                if (err)
                        goto out;
        }
        if (reply->call_cnt == 0 && !reply->content) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "chat completion reply: choices[0].message has neither "
                                "content nor tool_calls (finish_reason %s)",
                                reply->finish_reason ? reply->finish_reason : "absent");
                goto out;
        }
        usage = json_object_get(reply->root, "usage");
        if (json_is_object(usage)) {
                json_int_t pt = json_integer_value(json_object_get(usage, "prompt_tokens"));
                json_int_t ct = json_integer_value(json_object_get(usage, "completion_tokens"));
                if (pt < 0 || ct < 0) {
                        err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                        "chat completion reply: usage: negative token count");
                        goto out;
                }
                reply->prompt_tokens = pt;
                reply->completion_tokens = ct;
        }
out:
        if (err)
                af_chat_reply_clear(reply);
        return err;
}

af_err_t af_chat_output_parse(const char *content, json_t **outp, char *errstr,
                              size_t errstr_size) {
        const char *s = content ? content : "";
        const char *e;
        json_error_t jerr;
        json_t *out = NULL;
        af_err_t err = AF_OK;

        *outp = NULL;
        while (isspace((unsigned char) *s))
                s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char) e[-1]))
                e--;
        /* ```json ... ``` around the object. */
        if (e - s >= 6 && !strncmp(s, "```", 3) && !strncmp(e - 3, "```", 3)) {
                const char *nl = memchr(s, '\n', (size_t) (e - s));
                if (nl && nl < e - 3) {
                        s = nl + 1;
                        e -= 3;
                }
        }
        out = json_loadb(s, (size_t) (e - s), JSON_REJECT_DUPLICATES, &jerr);
        if (!out) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "agent's final answer is not JSON: %s (line %d, column %d): "
                                "\"%.60s%s\"",
                                jerr.text, jerr.line, jerr.column, content ? content : "",
                                content && strlen(content) > 60 ? "..." : "");
                goto out;
        }
        if (!json_is_object(out)) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "agent's final answer is JSON but not an object");
                json_decref(out);
                out = NULL;
                goto out;
        }
        *outp = out;
out:
        return err;
}
