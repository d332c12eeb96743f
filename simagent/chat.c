/*
 * chat: the simulated chat-completions model of simagent (see chat.h). Validation follows
 * what OpenAI's API answers for the same mistakes (400 invalid_request_error with the
 * offending param), so the worker's error handling is exercised on realistic bodies.
 */
#include "chat.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "faults.h"
#include "rules.h"

/* Roles a message may have (OpenAI's current and legacy ones). */
static const char *const chat_roles[] = {
        "system", "developer", "user", "assistant", "tool", "function", NULL,
};

json_t *af_sim_openai_error(const char *message, const char *type, const char *param,
                            const char *code) {
        return json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", message, "type", type,
                         "param", param, "code", code);
}

/* ---- validation --------------------------------------------------------------------------- */

/* @returns NULL when req is a valid chat-completions request, else a new error body. */
static json_t *chat_validate(const json_t *req) {
        json_t *model = json_object_get(req, "model");
        json_t *messages = json_object_get(req, "messages");
        json_t *tools = json_object_get(req, "tools");
        json_t *temp = json_object_get(req, "temperature");
        json_t *msg, *tool;
        size_t i;
        char text[160], param[64];
        json_t *err = NULL;

        if (!model) {
                err = af_sim_openai_error("you must provide a model parameter",
                                          "invalid_request_error", "model",
                                          "missing_required_parameter");
                goto out;
        }
        if (!json_is_string(model) || json_string_length(model) == 0) {
                err = af_sim_openai_error("Invalid 'model': expected a non-empty string.",
                                          "invalid_request_error", "model", "invalid_type");
                goto out;
        }
        if (!messages) {
                err = af_sim_openai_error("Missing required parameter: 'messages'.",
                                          "invalid_request_error", "messages",
                                          "missing_required_parameter");
                goto out;
        }
        if (!json_is_array(messages)) {
                err = af_sim_openai_error("Invalid 'messages': expected an array.",
                                          "invalid_request_error", "messages", "invalid_type");
                goto out;
        }
        if (json_array_size(messages) == 0) {
                err = af_sim_openai_error("Invalid 'messages': empty array. Expected an array "
                                          "with minimum length 1, but got an empty array "
                                          "instead.",
                                          "invalid_request_error", "messages", "empty_array");
                goto out;
        }
        json_array_foreach(messages, i, msg) {
                const char *role = json_string_value(json_object_get(msg, "role"));
                json_t *content = json_object_get(msg, "content");
                bool known = false;

                for (int r = 0; role && chat_roles[r]; r++)
                        known |= strcmp(role, chat_roles[r]) == 0;
                snprintf(param, sizeof(param), "messages[%zu].role", i);
                if (!json_is_object(msg) || !known) {
                        snprintf(text, sizeof(text),
                                 "Invalid '%s': expected one of system, developer, user, "
                                 "assistant, tool.",
                                 param);
                        err = af_sim_openai_error(text, "invalid_request_error", param,
                                                  "invalid_value");
                        goto out;
                }
                snprintf(param, sizeof(param), "messages[%zu].content", i);
                if (content && !json_is_string(content) && !json_is_array(content) &&
                    !json_is_null(content)) {
                        snprintf(text, sizeof(text),
                                 "Invalid '%s': expected a string or an array of parts.", param);
                        err = af_sim_openai_error(text, "invalid_request_error", param,
                                                  "invalid_type");
                        goto out;
                }
                if ((!content || json_is_null(content)) && strcmp(role, "assistant") != 0) {
                        snprintf(text, sizeof(text), "Missing required parameter: '%s'.", param);
                        err = af_sim_openai_error(text, "invalid_request_error", param,
                                                  "missing_required_parameter");
                        goto out;
                }
                if (strcmp(role, "tool") == 0 &&
                    !json_is_string(json_object_get(msg, "tool_call_id"))) {
                        snprintf(param, sizeof(param), "messages[%zu].tool_call_id", i);
                        snprintf(text, sizeof(text), "Missing required parameter: '%s'.", param);
                        err = af_sim_openai_error(text, "invalid_request_error", param,
                                                  "missing_required_parameter");
                        goto out;
                }
        }
        if (tools && !json_is_array(tools)) {
                err = af_sim_openai_error("Invalid 'tools': expected an array.",
                                          "invalid_request_error", "tools", "invalid_type");
                goto out;
        }
        json_array_foreach(tools, i, tool) {
                const char *type = json_string_value(json_object_get(tool, "type"));
                json_t *fn = json_object_get(tool, "function");
                if (!type || strcmp(type, "function") != 0 ||
                    !json_is_string(json_object_get(fn, "name"))) {
                        snprintf(param, sizeof(param), "tools[%zu]", i);
                        snprintf(text, sizeof(text),
                                 "Invalid '%s': expected {\"type\":\"function\",\"function\":"
                                 "{\"name\":...}}.",
                                 param);
                        err = af_sim_openai_error(text, "invalid_request_error", param,
                                                  "invalid_value");
                        goto out;
                }
        }
        if (temp &&
            (!json_is_number(temp) || json_number_value(temp) < 0 || json_number_value(temp) > 2)) {
                err = af_sim_openai_error("Invalid 'temperature': expected a number in "
                                          "[0, 2].",
                                          "invalid_request_error", "temperature", "invalid_value");
                goto out;
        }
        if (json_is_true(json_object_get(req, "stream"))) {
                err = af_sim_openai_error("'stream' is not supported by this model server.",
                                          "invalid_request_error", "stream", "unsupported_value");
                goto out;
        }
out:
        return err;
}

/* ---- reading the conversation ------------------------------------------------------------ */

/* The request's fingerprint: seed, model and the messages in a canonical form. */
static uint64_t chat_hash(uint64_t seed, const char *model, const json_t *messages) {
        uint8_t digest[AF_SHA256_LEN];
        char *canon = json_dumps(messages, JSON_COMPACT | JSON_SORT_KEYS);
        size_t mlen = strlen(model), clen = canon ? strlen(canon) : 0;
        uint8_t *all = malloc(8 + mlen + 1 + clen);
        uint64_t h = seed;

        if (all) {
                for (int i = 0; i < 8; i++)
                        all[i] = (uint8_t) (seed >> (8 * i));
                memcpy(all + 8, model, mlen + 1);
                if (canon)
                        memcpy(all + 8 + mlen + 1, canon, clen);
                af_sha256(all, 8 + mlen + 1 + clen, digest);
                h = 0;
                for (int i = 0; i < 8; i++)
                        h = (h << 8) | digest[i];
        }
        free(all);
        free(canon);
        return h;
}

/* A claim object in free text: the whole text as JSON, else its outermost {...}.
 * @returns a new reference or NULL. */
static json_t *chat_claim_in_text(const char *text) {
        json_t *doc = json_loads(text, 0, NULL);
        json_t *claim = NULL;
        const char *open, *close;

        if (!doc && (open = strchr(text, '{')) && (close = strrchr(text, '}')) && close > open)
                doc = json_loadb(open, (size_t) (close - open + 1), 0, NULL);
        if ((claim = af_sim_rules_claim(doc)))
                json_incref(claim);
        json_decref(doc);
        return claim;
}

/* The claim the conversation is about: the latest user message that holds one.
 * @returns a new reference or NULL. */
static json_t *chat_find_claim(const json_t *messages) {
        json_t *claim = NULL;

        for (size_t i = json_array_size(messages); i-- > 0 && !claim;) {
                json_t *msg = json_array_get(messages, i);
                json_t *content = json_object_get(msg, "content");
                json_t *part;
                size_t p;

                if (strcmp(json_string_value(json_object_get(msg, "role")), "user") != 0)
                        continue;
                if (json_is_string(content)) {
                        claim = chat_claim_in_text(json_string_value(content));
                        continue;
                }
                json_array_foreach(content, p, part) {
                        const char *text = json_string_value(json_object_get(part, "text"));
                        if (!claim && text)
                                claim = chat_claim_in_text(text);
                }
        }
        return claim;
}

/* @returns whether a tool named name was offered. */
static bool chat_tool_offered(const json_t *tools, const char *name) {
        json_t *tool;
        size_t i;

        json_array_foreach(tools, i, tool) {
                const char *n = json_string_value(
                        json_object_get(json_object_get(tool, "function"), "name"));
                if (n && strcmp(n, name) == 0)
                        return true;
        }
        return false;
}

/* Count tool results; set *rules_failed when one of them is a failed rule check. */
static size_t chat_tool_results(const json_t *messages, bool *rules_failed) {
        json_t *msg;
        size_t i, n = 0;

        *rules_failed = false;
        json_array_foreach(messages, i, msg) {
                const char *text;
                json_t *doc;

                if (strcmp(json_string_value(json_object_get(msg, "role")), "tool") != 0)
                        continue;
                n++;
                text = json_string_value(json_object_get(msg, "content"));
                doc = text ? json_loads(text, 0, NULL) : NULL;
                if (json_is_false(json_object_get(doc, "passed")))
                        *rules_failed = true;
                json_decref(doc);
        }
        return n;
}

/* ---- answers ------------------------------------------------------------------------------ */

static json_t *chat_tool_call(uint64_t h, int index, const char *name, json_t *args) {
        char id[32];
        char *text = json_dumps(args, JSON_COMPACT);
        json_t *call;

        snprintf(id, sizeof(id), "call_%016llx%02d",
                 (unsigned long long) af_sim_mix64(h + (uint64_t) index), index);
        call = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "type", "function", "function",
                         "name", name, "arguments", text ? text : "{}");
        free(text);
        json_decref(args);
        return call;
}

/* What the claim's free-text notes suggest, as the system prompt asks the model to read
 * them: "fraud_suspicion" (review, and a ticket), "liability" (review), or NULL. */
static const char *chat_notes_flag(const json_t *claim) {
        const char *notes = json_string_value(json_object_get(claim, "notes"));

        if (!notes)
                return NULL;
        if (strcasestr(notes, "fraud") || strcasestr(notes, "suspicious"))
                return "fraud_suspicion";
        if (strcasestr(notes, "pre-existing") || strcasestr(notes, "accident") ||
            strcasestr(notes, "third party"))
                return "liability";
        return NULL;
}

/* The first turn of a triage: the tool calls, or NULL when no useful tool was offered. */
static json_t *chat_triage_calls(uint64_t h, const json_t *tools, json_t *claim,
                                 const char *claim_id) {
        json_t *calls = json_array();
        const char *flag;

        if (chat_tool_offered(tools, "rules_check"))
                json_array_append_new(calls,
                                      chat_tool_call(h, 0, "rules_check",
                                                     claim ? json_incref(claim) : json_object()));
        if (chat_tool_offered(tools, "crm_update"))
                json_array_append_new(calls,
                                      chat_tool_call(h, 1, "crm_update",
                                                     json_pack("{s:s, s:s}", "claim_id", claim_id,
                                                               "status", "triaged")));
        if (chat_tool_offered(tools, "ticket_create") && (flag = chat_notes_flag(claim)) &&
            strcmp(flag, "fraud_suspicion") == 0)
                json_array_append_new(calls,
                                      chat_tool_call(h, 2, "ticket_create",
                                                     json_pack("{s:s, s:s, s:s}", "claim_id",
                                                               claim_id, "type", flag, "summary",
                                                               "The claim notes suggest possible "
                                                               "fraud; please investigate.")));
        if (json_array_size(calls) == 0) {
                json_decref(calls);
                calls = NULL;
        }
        return calls;
}

/* The final triage decision as JSON text (caller frees). */
static char *chat_triage_decision(uint64_t h, json_t *claim, const char *claim_id,
                                  bool tool_rules_failed, int64_t now_ms) {
        json_t *check = af_sim_rules_check(claim, now_ms);
        json_t *violations = json_object_get(check, "violations");
        double amount = json_number_value(json_object_get(claim, "amount"));
        const char *decision;
        char reason[256];
        int cents;
        json_t *out;
        char *text;

        if (tool_rules_failed || json_array_size(violations) > 0) {
                decision = "deny";
                cents = 80 + (int) (h % 15);
                snprintf(reason, sizeof(reason), "rule check failed: %s",
                         json_array_size(violations) > 0
                                 ? json_string_value(json_object_get(json_array_get(violations, 0),
                                                                     "message"))
                                 : "reported by rules_check");
        } else if (amount > AF_SIM_CHAT_REVIEW_AMOUNT) {
                decision = "review";
                cents = 55 + (int) (h % 20);
                snprintf(reason, sizeof(reason),
                         "amount %.2f is above %.0f: a human should review it", amount,
                         AF_SIM_CHAT_REVIEW_AMOUNT);
        } else if (chat_notes_flag(claim)) {
                decision = "review";
                cents = 50 + (int) (h % 20);
                snprintf(reason, sizeof(reason), "the notes suggest %s: a human should review it",
                         strcmp(chat_notes_flag(claim), "fraud_suspicion") == 0
                                 ? "possible fraud"
                                 : "a liable third party or a pre-existing condition");
        } else {
                decision = "approve";
                cents = 86 + (int) (h % 13);
                snprintf(reason, sizeof(reason),
                         "all rules passed and the amount is within the automatic limit");
        }
        out = json_pack("{s:s, s:f, s:s, s:s}", "decision", decision, "confidence", cents / 100.0,
                        "reason", reason, "claim_id", claim_id);
        text = json_dumps(out, JSON_COMPACT | JSON_REAL_PRECISION(3));
        json_decref(out);
        json_decref(check);
        return text;
}

void af_sim_chat_respond(const af_sim_chat_opts_t *o, const char *body, size_t len, const char *id,
                         int64_t created, af_sim_chat_reply_t *out) {
        json_error_t jerr;
        json_t *req = json_loadb(body, len, 0, &jerr);
        json_t *messages, *tools, *claim = NULL, *calls = NULL, *message = NULL;
        const char *model;
        char claim_id_buf[128];
        const char *claim_id = "unknown";
        char *content = NULL;
        bool tool_failed = false;
        size_t nresults;
        uint64_t h;
        int64_t extra;

        memset(out, 0, sizeof(*out));
        if (!json_is_object(req)) {
                char text[320];
                if (req)
                        snprintf(text, sizeof(text),
                                 "We could not parse the JSON body of "
                                 "your request: it must be a JSON object.");
                else
                        snprintf(text, sizeof(text),
                                 "We could not parse the JSON body of your request: %s "
                                 "(line %d, column %d).",
                                 jerr.text, jerr.line, jerr.column);
                out->status = 400;
                out->body =
                        af_sim_openai_error(text, "invalid_request_error", NULL, "invalid_json");
                goto out;
        }
        if ((out->body = chat_validate(req))) {
                out->status = 400;
                goto out;
        }
        model = json_string_value(json_object_get(req, "model"));
        messages = json_object_get(req, "messages");
        tools = json_object_get(req, "tools");
        h = chat_hash(o->seed, model, messages);

        if (strstr(model, "triage")) {
                json_t *cid;
                claim = chat_find_claim(messages);
                cid = json_object_get(claim, "claim_id");
                if (json_is_string(cid)) {
                        claim_id = json_string_value(cid);
                } else if (json_is_integer(cid)) {
                        snprintf(claim_id_buf, sizeof(claim_id_buf), "%lld",
                                 (long long) json_integer_value(cid));
                        claim_id = claim_id_buf;
                }
                nresults = chat_tool_results(messages, &tool_failed);
                if (nresults == 0)
                        calls = chat_triage_calls(h, tools, claim, claim_id);
                if (!calls)
                        content = chat_triage_decision(h, claim, claim_id, tool_failed, o->now_ms);
        } else {
                content = strdup("{\"ok\":true}");
        }

        if (calls)
                message = json_pack("{s:s, s:n, s:o}", "role", "assistant", "content", "tool_calls",
                                    calls);
        else
                message = json_pack("{s:s, s:s}", "role", "assistant", "content",
                                    content ? content : "{}");
        /* Token counts: the configured means, varied by up to +-10% (prompt) and +-20%
         * (completion), and prompts grow with the conversation like real ones do. */
        extra = (int64_t) json_array_size(messages) > 2
                        ? 40 * ((int64_t) json_array_size(messages) - 2)
                        : 0;
        out->prompt_tokens =
                o->prompt_tokens + extra +
                (int64_t) (af_sim_mix64(h ^ 1) % (uint64_t) (o->prompt_tokens / 5 + 1)) -
                o->prompt_tokens / 10;
        out->completion_tokens =
                o->completion_tokens +
                (int64_t) (af_sim_mix64(h ^ 2) % (uint64_t) (2 * (o->completion_tokens / 5) + 1)) -
                o->completion_tokens / 5;
        if (out->prompt_tokens < 1)
                out->prompt_tokens = 1;
        if (out->completion_tokens < 1)
                out->completion_tokens = 1;
        out->status = 200;
        out->body = json_pack("{s:s, s:s, s:I, s:s, s:s, s:[{s:i, s:o, s:n, s:s}], "
                              "s:{s:I, s:I, s:I}}",
                              "id", id, "object", "chat.completion", "created",
                              (json_int_t) created, "model", model, "system_fingerprint",
                              "fp_simagent", "choices", "index", 0, "message", message, "logprobs",
                              "finish_reason", calls ? "tool_calls" : "stop", "usage",
                              "prompt_tokens", (json_int_t) out->prompt_tokens, "completion_tokens",
                              (json_int_t) out->completion_tokens, "total_tokens",
                              (json_int_t) (out->prompt_tokens + out->completion_tokens));
        message = NULL; /* stolen by "o" */
out:
        free(content);
        json_decref(claim);
        json_decref(req);
}
