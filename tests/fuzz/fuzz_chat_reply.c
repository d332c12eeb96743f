/*
 * Fuzz target: what a model provider (or a proxy in front of it) sends back to a worker: the
 * chat-completions reply (af_chat_reply_parse) and, from its content, the agent's final
 * answer (af_chat_output_parse); the same bytes are also tried directly as a final answer.
 * A refusal must say why, in UTF-8 (it becomes the task's error, in protobuf and JSON); an
 * accepted reply must hold what the agent loop relies on: each tool call has an id and a
 * name, and either arguments or the reason they are unusable; token counts are not negative.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../worker/agent_parse.c"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void refusal_is_text(const char *errstr) {
        if (!errstr[0] || af_utf8_prefix(errstr, strlen(errstr)) != strlen(errstr))
                abort();
}

static void final_answer(const char *content) {
        char errstr[256] = "";
        json_t *out = NULL;
        if (af_chat_output_parse(content, &out, errstr, sizeof(errstr)) == AF_OK) {
                if (!json_is_object(out))
                        abort();
                json_decref(out);
        } else {
                if (out)
                        abort();
                refusal_is_text(errstr);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char errstr[256] = "";
        af_chat_reply_t reply;

        if (af_chat_reply_parse((const char *) data, size, &reply, errstr, sizeof(errstr)) ==
            AF_OK) {
                if (!reply.message || (!reply.content && !reply.call_cnt) ||
                    reply.prompt_tokens < 0 || reply.completion_tokens < 0)
                        abort();
                for (size_t i = 0; i < reply.call_cnt; i++) {
                        const af_tool_call_t *c = &reply.calls[i];
                        if (!c->id || !c->name || (!c->args && !c->args_error[0]) ||
                            (c->args && !json_is_object(c->args)))
                                abort();
                        if (c->args_error[0])
                                refusal_is_text(c->args_error);
                }
                if (reply.content)
                        final_answer(reply.content);
                af_chat_reply_clear(&reply);
        } else {
                refusal_is_text(errstr);
        }

        char *text = malloc(size + 1);
        if (text) {
                memcpy(text, data, size);
                text[size] = '\0';
                final_answer(text);
                free(text);
        }
        return 0;
}
