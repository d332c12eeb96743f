/*
 * agent: the agent handler — an OpenAI-compatible chat-completions conversation.
 *
 * The worker sends {model, messages: [system (the agent's rendered prompt template), user
 * (the task payload)], tools: the agent's allowed integrations as functions}. When the model
 * answers with tool_calls, each is run as the integration of that name with the parsed
 * arguments (Idempotency-Key "<task key>:<tool>", stable across re-executions) and its result
 * goes back as a `tool` message; a tool the agent may not use, or unusable arguments, is
 * told to the model as an error (and audited) rather than failing the task. This repeats up
 * to the agent's max_steps model calls; the final content must parse as a JSON object, which
 * becomes the task's output. Tokens are summed over calls and priced from the agent's config.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_parse.h"
#include "buf.h"
#include "clock.h"
#include "jsonfmt.h"
#include "log.h"
#include "worker.h"

#define AGENT_PROMPT_MAX (256 * 1024)

struct af_agent_run_s {
        const af_agent_t *agent; /* in the task's catalog */
        json_t *messages;        /* the conversation so far */
        json_t *tools;           /* the tools offered, or NULL */
        int steps;               /* model calls made */
        af_chat_reply_t reply;   /* the last reply while its tool calls run */
        size_t next_call;        /* index of the next tool call to run */
        char idem_base[160];     /* task idempotency key or id */
        char version[192];       /* "name@version" */
};

static void agent_call_model(af_wtask_t *t);
static void agent_next_tool(af_wtask_t *t);

void af_agent_run_free(af_agent_run_t *run) {
        if (!run)
                return;
        json_decref(run->messages);
        json_decref(run->tools);
        af_chat_reply_clear(&run->reply);
        free(run);
}

/* Usage → cost in micros, from the agent's price per 1000 tokens. */
static void agent_price(af_wtask_t *t) {
        const af_agent_t *a = t->agent ? t->agent->agent : NULL;
        if (!a)
                return;
        t->cost_micros = t->prompt_tokens * a->price_prompt_micros_per_1k / 1000 +
                         t->completion_tokens * a->price_completion_micros_per_1k / 1000;
}

static void agent_end_error(af_wtask_t *t, const af_error_t *e, const char *code) {
        agent_price(t);
        af_execute_fail(t, e, code);
        af_execute_done(t);
}

static void agent_end_fail(af_wtask_t *t, af_err_t err, bool retriable, const char *code,
                           const char *msg) {
        af_error_t e;
        af_error_set_retriable(&e, err, retriable, "%s", msg);
        agent_end_error(t, &e, code);
}

/* Append a `tool` message answering call_id with content (JSON text). */
static af_err_t agent_tool_message(af_wtask_t *t, const char *call_id, const char *content) {
        json_t *m = json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id", call_id, "content",
                              content);
        if (!m || json_array_append_new(t->agent->messages, m))
                return AF_ERR_NOMEM;
        return AF_OK;
}

static af_err_t agent_tool_error(af_wtask_t *t, const char *call_id, const char *msg) {
        json_t *j = json_pack("{s:s}", "error", msg);
        char *s = j ? af_json_dumps(j, JSON_COMPACT) : NULL;
        af_err_t err = s ? agent_tool_message(t, call_id, s) : AF_ERR_NOMEM;
        free(s);
        json_decref(j);
        return err;
}

static void agent_on_tool_done(af_wtask_t *t, json_t *output, const af_error_t *err) {
        af_agent_run_t *run = t->agent;
        const af_tool_call_t *call = &run->reply.calls[run->next_call - 1];
        af_err_t e = AF_OK;

        if (err) {
                /* A tool that failed in a way worth retrying (down, 5xx, 429, timeout) fails
                 * the task, so the retry re-runs the tool; a refusal (4xx) is the model's
                 * business: it reads why and decides. */
                if (err->retriable || err->err == AF_ERR_CANCELLED || t->aborted) {
                        agent_end_error(t, err, NULL);
                        return;
                }
                e = agent_tool_error(t, call->id, err->msg);
        } else {
                char *s = af_json_dumps(output, JSON_COMPACT | JSON_ENCODE_ANY);
                e = s ? agent_tool_message(t, call->id, s) : AF_ERR_NOMEM;
                free(s);
                json_decref(output);
        }
        if (e) {
                agent_end_fail(t, AF_ERR_NOMEM, true, NULL, "out of memory in the conversation");
                return;
        }
        agent_next_tool(t);
}

static bool agent_may_use(const af_agent_t *a, const char *name) {
        for (size_t i = 0; i < a->tool_cnt; i++)
                if (!strcmp(a->tools[i], name))
                        return true;
        return false;
}

/* Run the reply's tool calls one after the other, then ask the model again. */
static void agent_next_tool(af_wtask_t *t) {
        af_agent_run_t *run = t->agent;
        const af_catalog_t *cat = t->wcat->cat;

        while (run->next_call < run->reply.call_cnt) {
                const af_tool_call_t *call = &run->reply.calls[run->next_call++];
                const af_integration_t *in = NULL;
                char idem[256];
                char msg[320];
                af_err_t e = AF_OK;

                if (t->aborted) {
                        agent_end_fail(t, AF_ERR_CANCELLED, false, NULL, "stopped");
                        return;
                }
                t->tool_calls++;
                if (agent_may_use(run->agent, call->name))
                        in = af_catalog_integration(cat, call->name);
                if (!in) {
                        char details[256];
                        snprintf(msg, sizeof(msg), "tool \"%.120s\" is not available to agent %s",
                                 call->name, run->agent->name);
                        snprintf(details, sizeof(details), "{\"tool\":\"%.120s\"}",
                                 strspn(call->name, "abcdefghijklmnopqrstuvwxyz"
                                                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") ==
                                                 strlen(call->name)
                                         ? call->name
                                         : "(invalid name)");
                        af_emit_audit(t, "tool.denied", "deny", msg, details);
                        e = agent_tool_error(t, call->id, msg);
                } else if (!call->args) {
                        snprintf(msg, sizeof(msg), "tool %s: %s", call->name, call->args_error);
                        e = agent_tool_error(t, call->id, msg);
                } else {
                        snprintf(idem, sizeof(idem), "%s:%s", run->idem_base, call->name);
                        af_integration_call(t, in, call->args, idem, agent_on_tool_done);
                        return;
                }
                if (e) {
                        agent_end_fail(t, AF_ERR_NOMEM, true, NULL,
                                       "out of memory in the conversation");
                        return;
                }
        }
        af_chat_reply_clear(&run->reply);
        run->next_call = 0;
        agent_call_model(t);
}

static void agent_audit_llm(af_wtask_t *t, const af_http_response_t *resp, const af_error_t *err,
                            int64_t pt, int64_t ct) {
        char details[512];
        snprintf(details, sizeof(details),
                 "{\"kind\":\"llm\",\"target\":\"%s\",\"model\":\"%s\",\"step\":%d,"
                 "\"status\":%d,\"ms\":%" PRId64 ",\"prompt_tokens\":%" PRId64 ","
                 "\"completion_tokens\":%" PRId64 "}",
                 t->agent->agent->name, t->agent->agent->model, t->agent->steps,
                 resp ? resp->status : 0, af_clock_mono_ms() - t->call_mono_ms, pt, ct);
        af_emit_audit(t, "handler.call", err && err->err ? "error" : "ok",
                      err && err->err ? err->msg : NULL, details);
}

static void agent_on_model(const af_http_response_t *resp, const af_error_t *err, void *opaque) {
        af_wtask_t *t = opaque;
        af_agent_run_t *run = t->agent;
        af_error_t e;
        char errstr[512];
        json_t *out = NULL;
        char what[160];

        if (t->w->stopped)
                return;
        t->http_busy = false;
        t->llm_calls++;
        snprintf(what, sizeof(what), "model %s of agent %s", run->agent->model, run->agent->name);
        if (err && err->err) {
                /* curl's message ("Couldn't connect to server") does not say what was called. */
                af_error_wrap(&e, err, "%s at %s", what,
                              run->agent->base_url ? run->agent->base_url : "?");
                agent_audit_llm(t, NULL, &e, 0, 0);
                agent_end_error(t, &e, NULL);
                return;
        }
        af_integration_classify(resp, what, &e);
        if (e.err) {
                agent_audit_llm(t, resp, &e, 0, 0);
                agent_end_error(t, &e, NULL);
                return;
        }
        if (af_chat_reply_parse(resp->body, resp->body_len, &run->reply, errstr, sizeof(errstr))) {
                af_error_set_retriable(&e, AF_ERR_INVALID, false, "%s", errstr);
                agent_audit_llm(t, resp, &e, 0, 0);
                agent_end_error(t, &e, "bad_output");
                return;
        }
        t->prompt_tokens += run->reply.prompt_tokens;
        t->completion_tokens += run->reply.completion_tokens;
        agent_audit_llm(t, resp, NULL, run->reply.prompt_tokens, run->reply.completion_tokens);
        if (run->reply.call_cnt > 0) {
                if (run->steps >= run->agent->max_steps) {
                        snprintf(errstr, sizeof(errstr),
                                 "agent %s still calls tools after %d model calls (max_steps "
                                 "%d)",
                                 run->agent->name, run->steps, run->agent->max_steps);
                        agent_end_fail(t, AF_ERR_INVALID, false, "step_limit", errstr);
                        return;
                }
                /* The assistant's turn (with its tool_calls) precedes the tool answers. */
                if (json_array_append(run->messages, run->reply.message)) {
                        agent_end_fail(t, AF_ERR_NOMEM, true, NULL, "out of memory");
                        return;
                }
                run->next_call = 0;
                agent_next_tool(t);
                return;
        }
        if (af_chat_output_parse(run->reply.content, &out, errstr, sizeof(errstr))) {
                af_chat_reply_clear(&run->reply);
                agent_end_fail(t, AF_ERR_INVALID, false, "bad_output", errstr);
                return;
        }
        af_chat_reply_clear(&run->reply);
        free(t->output);
        t->output = af_json_dumps(out, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(out);
        agent_price(t);
        if (!t->output) {
                agent_end_fail(t, AF_ERR_NOMEM, true, NULL, "cannot serialize the output");
                return;
        }
        t->status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED;
        af_execute_done(t);
}

static void agent_call_model(af_wtask_t *t) {
        af_worker_t *w = t->w;
        af_agent_run_t *run = t->agent;
        const af_agent_t *a = run->agent;
        json_t *req_body = NULL;
        char *body = NULL;
        char *url = NULL;
        char *auth = NULL;
        char *trace = NULL;
        char *task_hdr = NULL;
        const char *headers[6];
        size_t nh = 0;
        af_http_request_t req;
        size_t blen;
        af_err_t err;

        if (t->aborted) {
                agent_end_fail(t, AF_ERR_CANCELLED, false, NULL, "stopped");
                return;
        }
        run->steps++;
        req_body = json_pack("{s:s, s:O}", "model", a->model, "messages", run->messages);
        if (req_body && run->tools)
                json_object_set(req_body, "tools", run->tools);
        if (req_body && a->temperature > 0)
                json_object_set_new(req_body, "temperature", json_real(a->temperature));
        body = req_body ? af_json_dumps(req_body, JSON_COMPACT) : NULL;
        blen = a->base_url ? strlen(a->base_url) : 0;
        while (blen > 0 && a->base_url[blen - 1] == '/')
                blen--;
        if (!body || asprintf(&url, "%.*s/chat/completions", (int) blen,
                              a->base_url ? a->base_url : "") < 0) {
                url = NULL;
                agent_end_fail(t, AF_ERR_NOMEM, true, NULL, "out of memory for the request");
                goto out;
        }
        headers[nh++] = "Content-Type: application/json";
        if (a->api_key && *a->api_key &&
            asprintf(&auth, "Authorization: Bearer %s", a->api_key) >= 0)
                headers[nh++] = auth;
        if (asprintf(&task_hdr, "X-Agentfleet-Task: %s", t->task->id) >= 0)
                headers[nh++] = task_hdr;
        if (t->task->traceparent && *t->task->traceparent &&
            asprintf(&trace, "traceparent: %s", t->task->traceparent) >= 0)
                headers[nh++] = trace;
        headers[nh] = NULL;

        memset(&req, 0, sizeof(req));
        req.method = "POST";
        req.url = url;
        req.headers = headers;
        req.body = body;
        req.body_len = strlen(body);
        req.timeout_ms = a->timeout_ms > 0 ? a->timeout_ms : w->http_timeout_ms;
        req.max_response_bytes = (size_t) w->max_response;
        t->call_mono_ms = af_clock_mono_ms();
        t->http_busy = true;
        err = af_http_client_send(w->http, &req, agent_on_model, t, &t->http_id);
        if (err) {
                char msg[160];
                t->http_busy = false;
                snprintf(msg, sizeof(msg), "model request not sent: %s", af_err2str(err));
                agent_end_fail(t, err, af_err_is_retriable_default(err), NULL, msg);
        }
out:
        if (auth) {
                memset(auth, 0, strlen(auth));
                free(auth);
        }
        free(trace);
        free(task_hdr);
        free(url);
        free(body);
        json_decref(req_body);
}

/* The tools offered: each allowed integration as a function with its JSON-schema params. */
static json_t *agent_tools(const af_catalog_t *cat, const af_agent_t *a) {
        json_t *tools = json_array();

        for (size_t i = 0; tools && i < a->tool_cnt; i++) {
                const af_integration_t *in = af_catalog_integration(cat, a->tools[i]);
                json_t *params = NULL;
                json_error_t jerr;
                if (!in)
                        continue;
                if (in->parameters && *in->parameters)
                        params = json_loads(in->parameters, 0, &jerr);
                if (!params)
                        params = json_pack("{s:s}", "type", "object");
                json_array_append_new(tools,
                                      json_pack("{s:s, s:{s:s, s:s, s:o}}", "type", "function",
                                                "function", "name", in->name, "description",
                                                in->description ? in->description : in->name,
                                                "parameters", params));
        }
        if (tools && json_array_size(tools) == 0) {
                json_decref(tools);
                tools = NULL;
        }
        return tools;
}

void af_agent_start(af_wtask_t *t, const af_agent_t *agent) {
        af_agent_run_t *run;
        af_template_vars_t vars;
        af_buf_t prompt;
        char errstr[512];
        const char *k = t->task->idempotency_key;

        af_buf_init(&prompt, AGENT_PROMPT_MAX);
        af_agent_run_free(t->agent);
        run = t->agent = calloc(1, sizeof(*run));
        if (!run) {
                agent_end_fail(t, AF_ERR_NOMEM, true, NULL, "out of memory");
                goto out;
        }
        run->agent = agent;
        snprintf(run->idem_base, sizeof(run->idem_base), "%s", k && *k ? k : t->task->id);
        snprintf(run->version, sizeof(run->version), "%s@%s", agent->name,
                 agent->version ? agent->version : "0");
        t->agent_version = run->version;
        af_execute_vars(t, NULL, &vars);
        if (af_template_render(agent->system_prompt ? agent->system_prompt : "", AF_TEMPLATE_TEXT,
                               &vars, &prompt, errstr, sizeof(errstr))) {
                char msg[600];
                snprintf(msg, sizeof(msg), "agent %s system prompt: %s", agent->name, errstr);
                agent_end_fail(t, AF_ERR_INVALID, false, "template", msg);
                goto out;
        }
        /* The user turn is the payload as admitted. Data scopes (fields an agent may read)
         * are a later policy issue: they will redact here, before anything leaves. */
        run->messages = json_pack("[{s:s, s:s}, {s:s, s:s}]", "role", "system", "content",
                                  af_buf_str(&prompt), "role", "user", "content", t->task->payload);
        run->tools = agent_tools(t->wcat->cat, agent);
        if (!run->messages) {
                agent_end_fail(t, AF_ERR_NOMEM, true, NULL, "out of memory");
                goto out;
        }
        agent_call_model(t);
out:
        af_buf_free(&prompt);
}
