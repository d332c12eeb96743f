/*
 * execute: the worker's handler stage. Under a held lease it dispatches a task on its task
 * type's kind — an integration (one HTTP call, integration.c) or an agent (a chat-completions
 * conversation with tool calls, agent.c) — and reports the outcome back to the lease stage,
 * which stores it as the done record and hands it to emit. A handler is stopped (its HTTP
 * request cancelled) when the task is cancelled, its lease is lost or a drain hands it back.
 *
 * Every failure ends here with an af_error_t that says whether retrying may help; the one
 * place where retry tiers will route retriable failures is execute_route_failure().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "jsonfmt.h"
#include "log.h"
#include "wire_json.h"
#include "worker.h"

void af_execute_vars(af_wtask_t *t, const json_t *args, af_template_vars_t *vars) {
        const Agentfleet__V1__Task *task = t->task;

        memset(vars, 0, sizeof(*vars));
        vars->payload = t->payload;
        vars->args = args;
        vars->task_id = task->id;
        vars->task_type = task->type;
        vars->tenant = task->tenant && *task->tenant ? task->tenant : NULL;
        vars->principal = task->principal && *task->principal ? task->principal : NULL;
        vars->case_key = task->case_key && *task->case_key ? task->case_key : NULL;
        vars->idempotency_key =
                task->idempotency_key && *task->idempotency_key ? task->idempotency_key : NULL;
        vars->attempt = task->attempt;
}

void af_execute_fail(af_wtask_t *t, const af_error_t *err, const char *code) {
        t->status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED;
        t->error = *err;
        t->error_code = code;
        free(t->output);
        t->output = NULL;
}

/* Where a failure goes. Retry tiers (a later issue) hook in here: a retriable failure with
 * attempts left (task->attempt < task->max_attempts) will be produced to retry.<tier> with
 * its due time, and the result's status will be RETRYING instead of FAILED; past its
 * attempts it will go to the DLQ as DEAD. Until then every failure ends the task FAILED with
 * error.retriable telling the caller whether a resubmission may succeed. */
static void execute_route_failure(af_wtask_t *t) {
        af_log_task(AF_LOG_INFO, t->task->id, t->task->traceparent, "task failed (%s%s): %s",
                    t->error_code ? t->error_code : af_err2code(t->error.err),
                    t->error.retriable ? ", retriable" : "", t->error.msg);
}

void af_execute_done(af_wtask_t *t) {
        if (t->timed_out && !t->hand_back && !t->lost && !t->cancel_requested) {
                af_error_t e;
                af_error_set_retriable(&e, AF_ERR_TIMEOUT, !t->timeout_deadline,
                                       "%s after %lld ms: the handler was stopped",
                                       t->timeout_deadline ? "task deadline reached"
                                                           : "task type timeout",
                                       (long long) t->budget_ms);
                af_execute_fail(t, &e, t->timeout_deadline ? "deadline_exceeded" : NULL);
                execute_route_failure(t);
        } else if (t->status == AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED && !t->aborted) {
                /* An aborted handler's "failure" is the abort itself: the lease stage turns it
                 * into CANCELLED, a hand-back or a lease re-check; not a task failure. */
                execute_route_failure(t);
        }
        af_lease_stage_handler_done(t);
}

static void execute_integration_done(af_wtask_t *t, json_t *output, const af_error_t *err) {
        if (err) {
                af_execute_fail(t, err, NULL);
        } else {
                free(t->output);
                /* ENCODE_ANY: an integration may answer a bare string or number. */
                t->output = af_json_dumps(output, JSON_COMPACT | JSON_ENCODE_ANY);
                if (!t->output) {
                        af_error_t e;
                        af_error_set(&e, AF_ERR_NOMEM, "cannot serialize the output");
                        af_execute_fail(t, &e, NULL);
                } else {
                        t->status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED;
                }
        }
        json_decref(output);
        af_execute_done(t);
}

/* The Idempotency-Key of the task's own effects: the producer's key, else the task id, both
 * stable across redeliveries and retries. */
static const char *execute_idem_key(af_wtask_t *t) {
        const char *k = t->task->idempotency_key;
        return k && *k ? k : t->task->id;
}

/* @returns whether t's handler reads the payload as JSON (a template names it, or an agent
 * runs), rather than only sending its text on. */
static bool execute_reads_payload(af_wtask_t *t, const af_integration_t *in) {
        return t->type->kind != AF_HANDLER_INTEGRATION || !in ||
               af_wcat_int(t->wcat, in)->reads_payload;
}

void af_execute_start(af_wtask_t *t) {
        const af_catalog_t *cat = t->wcat->cat;
        const af_integration_t *in = NULL;
        af_error_t e;
        json_error_t jerr;

        t->aborted = false;
        t->timed_out = false;
        t->timeout_deadline = false;
        t->status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_UNSPECIFIED;
        af_error_clear(&t->error);
        t->error_code = NULL;
        if (!t->type) {
                /* Config skew between coordinator and worker; a SIGHUP with the new config
                 * fixes later tasks, so the resubmission may succeed. */
                af_error_set_retriable(&e, AF_ERR_NOT_FOUND, true,
                                       "unknown task type \"%s\" in this worker's config "
                                       "(catalog %.12s)",
                                       t->task->type, cat->hash);
                af_execute_fail(t, &e, "unknown_task_type");
                goto done;
        }
        if (t->type->kind == AF_HANDLER_INTEGRATION)
                in = af_catalog_integration(cat, t->type->target);
        /* A payload is always checked to be JSON, but its tree is built only for a handler
         * that reads it: most integrations send the text on as it is. The quick check is
         * sure of every ordinary payload; one it is unsure of is parsed, so a bad one fails
         * exactly as before, with jansson's message. */
        if (!t->payload &&
            (execute_reads_payload(t, in) || !af_wire_json_surely_valid(t->task->payload))) {
                t->payload = json_loads(t->task->payload, JSON_DECODE_ANY, &jerr);
                if (!t->payload) {
                        af_error_set_retriable(&e, AF_ERR_INVALID, false,
                                               "payload is not JSON: %s (line %d, column %d)",
                                               jerr.text, jerr.line, jerr.column);
                        af_execute_fail(t, &e, "bad_payload");
                        goto done;
                }
        }
        /* The time budget: the task type's timeout, cut short by the task's own deadline. */
        t->budget_ms = t->type->timeout_ms;
        if (t->task->deadline_ms > 0) {
                int64_t left = t->task->deadline_ms - af_clock_wall_ms();
                if (left <= 0) {
                        af_error_set_retriable(&e, AF_ERR_TIMEOUT, false,
                                               "deadline passed %lld ms before the task started",
                                               (long long) -left);
                        af_execute_fail(t, &e, "deadline_exceeded");
                        goto done;
                }
                if (t->budget_ms <= 0 || left < t->budget_ms) {
                        t->budget_ms = left;
                        t->timeout_deadline = true;
                }
        }
        if (t->budget_ms > 0)
                af_lease_stage_later(t, t->budget_ms);
        if (t->type->kind == AF_HANDLER_INTEGRATION) {
                if (!in) {
                        af_error_set_retriable(&e, AF_ERR_CONFIG, false,
                                               "task type %s: integration \"%s\" not found",
                                               t->type->name, t->type->target);
                        af_execute_fail(t, &e, NULL);
                        goto done;
                }
                af_integration_call(t, in, NULL, execute_idem_key(t), execute_integration_done);
                return;
        }
        if (t->type->kind == AF_HANDLER_AGENT) {
                const af_agent_t *agent = af_catalog_agent(cat, t->type->target);
                if (!agent) {
                        af_error_set_retriable(&e, AF_ERR_CONFIG, false,
                                               "task type %s: agent \"%s\" not found",
                                               t->type->name, t->type->target);
                        af_execute_fail(t, &e, NULL);
                        goto done;
                }
                af_agent_start(t, agent);
                return;
        }
        af_error_set_retriable(&e, AF_ERR_CONFIG, false, "task type %s: unknown handler kind %d",
                               t->type->name, (int) t->type->kind);
        af_execute_fail(t, &e, NULL);
done:
        af_execute_done(t);
}

void af_execute_timeout(af_wtask_t *t) {
        if (t->aborted)
                return;
        af_log_task(AF_LOG_WARN, t->task->id, t->task->traceparent,
                    "time budget of %lld ms spent: stopping the handler", (long long) t->budget_ms);
        t->timed_out = true;
        af_execute_abort(t);
}

void af_execute_abort(af_wtask_t *t) {
        if (t->aborted)
                return;
        t->aborted = true;
        /* The request's callback reports AF_ERR_CANCELLED and the handler ends through
         * af_execute_done; between calls, handlers check t->aborted before the next one. */
        if (t->http_busy)
                af_http_client_cancel(t->w->http, t->http_id);
}
