/*
 * integration: one HTTP call to an integration (CRM update, ticket, rules check), either as
 * an integration task's handler or as a tool an agent called. The request is built from the
 * integration's templates (URL percent-encoded, body JSON-encoded, headers line-checked),
 * with the headers that make side effects effectively-once: Idempotency-Key (stable across
 * redeliveries), X-Agentfleet-Fence (the lease's fencing number, so the integration can
 * refuse an older holder), X-Agentfleet-Task and traceparent.
 *
 * The answer is judged here, in one place: 2xx is the output (the response JSON, or
 * {"status":N,"body":"..."} when it is not JSON); 429, 5xx, 408, timeouts and transport
 * failures are retriable; any other status is not, and says which it was.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "clock.h"
#include "jsonfmt.h"
#include "log.h"
#include "worker.h"

#define INTEGRATION_URL_MAX       (8 * 1024)
#define INTEGRATION_HEADER_MAX    (8 * 1024)
#define INTEGRATION_FIXED_HEADERS 7

/* Up to n printable bytes of an error body, for a message a human reads. */
static void integration_snippet(const af_http_response_t *resp, char *out, size_t n) {
        size_t j = 0;
        for (size_t i = 0; resp->body && i < resp->body_len && j + 1 < n; i++) {
                unsigned char c = (unsigned char) resp->body[i];
                out[j++] = (c >= 0x20 && c < 0x7f) ? (char) c : ' ';
        }
        out[j] = '\0';
}

void af_integration_classify(const af_http_response_t *resp, const char *what, af_error_t *err) {
        char snippet[121];
        int st = resp->status;

        af_error_clear(err);
        if (st >= 200 && st < 300)
                return;
        integration_snippet(resp, snippet, sizeof(snippet));
        if (st == 429) {
                if (resp->retry_after_ms >= 0)
                        af_error_set_retriable(err, AF_ERR_RATE_LIMITED, true,
                                               "%s answered 429 Too Many Requests "
                                               "(Retry-After: %" PRId64 " ms)",
                                               what, resp->retry_after_ms);
                else
                        af_error_set_retriable(err, AF_ERR_RATE_LIMITED, true,
                                               "%s answered 429 Too Many Requests", what);
        } else if (st >= 500 || st == 408) {
                af_error_set_retriable(err, AF_ERR_UPSTREAM, true, "%s answered %d: %s", what, st,
                                       snippet);
        } else {
                af_error_set_retriable(err, AF_ERR_UPSTREAM, false, "%s answered %d: %s", what, st,
                                       snippet);
        }
        err->http_status = st;
}

/* The output of a 2xx answer (owned). */
static json_t *integration_output(const af_http_response_t *resp) {
        json_error_t jerr;
        json_t *out = NULL;

        if (resp->body_len)
                out = json_loadb(resp->body, resp->body_len, JSON_DECODE_ANY, &jerr);
        if (!out)
                out = json_pack("{s:i, s:s%}", "status", resp->status, "body",
                                resp->body ? resp->body : "", resp->body_len);
        if (!out) /* not UTF-8 */
                out = json_pack("{s:i, s:s}", "status", resp->status, "body", "");
        return out;
}

static void integration_audit(af_wtask_t *t, const af_http_response_t *resp,
                              const af_error_t *err) {
        af_details_t details;
        const af_integration_t *in = t->integration;

        af_details_begin(&details);
        af_details_str(&details, "kind", t->integration_is_tool ? "tool" : "integration");
        af_details_str(&details, "target", in->name);
        af_details_str(&details, "method", in->method ? in->method : "POST");
        af_details_i64(&details, "status", resp ? resp->status : 0);
        af_details_i64(&details, "ms", af_clock_mono_ms() - t->call_mono_ms);
        af_details_i64(&details, "fence", t->lease.fence);
        af_details_str(&details, "error", err && err->err ? af_err2code(err->err) : "");
        af_emit_audit(t, "handler.call", err && err->err ? "error" : "ok",
                      err && err->err ? err->msg : NULL, af_details_end(&details));
}

static void integration_on_response(const af_http_response_t *resp, const af_error_t *err,
                                    void *opaque) {
        af_wtask_t *t = opaque;
        af_integration_done_cb_t *cb = t->integration_cb;
        af_error_t e;
        json_t *out = NULL;

        if (t->w->stopped)
                return;
        t->http_busy = false;
        t->integration_cb = NULL;
        if (err && err->err) {
                /* curl's message ("Couldn't connect to server") does not say what was called. */
                af_error_wrap(&e, err, "%s", t->integration->name);
                if (err->err == AF_ERR_TOO_LARGE)
                        af_error_set_retriable(&e, AF_ERR_TOO_LARGE, false,
                                               "%s: response over worker.max_response (%" PRId64
                                               " bytes)",
                                               t->integration->name, t->w->max_response);
                integration_audit(t, NULL, &e);
                cb(t, NULL, &e);
                return;
        }
        af_integration_classify(resp, t->integration->name, &e);
        integration_audit(t, resp, &e);
        if (e.err) {
                cb(t, NULL, &e);
                return;
        }
        out = integration_output(resp);
        if (!out) {
                af_error_set(&e, AF_ERR_NOMEM, "out of memory for the response");
                cb(t, NULL, &e);
                return;
        }
        cb(t, out, NULL);
}

void af_integration_prepare(const af_integration_t *in, af_wint_t *wi) {
        wi->reads_payload =
                af_template_reads(in->url, "payload") || af_template_reads(in->body, "payload");
        for (size_t i = 0; i < in->header_cnt && !wi->reads_payload; i++)
                wi->reads_payload = af_template_reads(in->headers[i].value, "payload");
        /* Rendering a url that names no variable only copies it, within the same cap. */
        wi->url_static =
                in->url && !strstr(in->url, "{{") && strlen(in->url) <= INTEGRATION_URL_MAX;
}

/* Append the header line "name: value" and its NUL to lines. */
static af_err_t integration_line(af_buf_t *lines, const char *name, const char *value) {
        af_err_t err = af_buf_puts(lines, name);
        if (!err)
                err = af_buf_append(lines, ": ", 2);
        if (!err)
                err = af_buf_puts(lines, value);
        if (!err)
                err = af_buf_append(lines, "", 1);
        return err;
}

void af_integration_call(af_wtask_t *t, const af_integration_t *in, const json_t *args,
                         const char *idem_key, af_integration_done_cb_t *cb) {
        af_worker_t *w = t->w;
        const af_wint_t *wi = af_wcat_int(t->wcat, in);
        af_template_vars_t vars;
        af_buf_t url, body, hbuf, lines;
        const char *stack_headers[16];
        const char **headers = stack_headers;
        size_t nh = 0, nh_max = INTEGRATION_FIXED_HEADERS + in->header_cnt + 1;
        char errstr[512];
        char *dumped = NULL;
        const char *body_ptr = NULL;
        size_t body_len = 0;
        af_http_request_t req;
        af_error_t e;
        af_err_t err;
        const char *method = in->method && *in->method ? in->method : "POST";

        af_buf_init(&url, INTEGRATION_URL_MAX);
        af_buf_init(&body, (size_t) w->max_response);
        af_buf_init(&hbuf, INTEGRATION_HEADER_MAX);
        /* Every header line, each "Name: value" and a NUL, in one buffer: one allocation,
         * wiped at the end since a rendered value may hold a resolved secret. */
        af_buf_init(&lines, nh_max * (INTEGRATION_HEADER_MAX + 256));
        t->integration = in;
        t->integration_is_tool = args != NULL;
        t->integration_cb = cb;
        t->call_mono_ms = af_clock_mono_ms();
        af_error_clear(&e);
        af_execute_vars(t, args, &vars);

        if (!wi->url_static) {
                err = af_template_render(in->url, AF_TEMPLATE_URL, &vars, &url, errstr,
                                         sizeof(errstr));
                if (err) {
                        af_error_set_retriable(&e, err, false, "%s url: %s", in->name, errstr);
                        goto fail;
                }
        }
        if (in->body && *in->body) {
                err = af_template_render(in->body, AF_TEMPLATE_JSON, &vars, &body, errstr,
                                         sizeof(errstr));
                if (err) {
                        af_error_set_retriable(&e, err, false, "%s body: %s", in->name, errstr);
                        goto fail;
                }
                body_ptr = af_buf_str(&body);
                body_len = body.len;
        } else if (args) {
                dumped = af_json_dumps(args, JSON_COMPACT);
                body_ptr = dumped;
                body_len = dumped ? strlen(dumped) : 0;
        } else if (strcmp(method, "GET") && strcmp(method, "DELETE") && strcmp(method, "HEAD")) {
                /* The task payload as it was admitted (policy redaction is a later issue). */
                body_ptr = t->task->payload;
                body_len = strlen(t->task->payload);
        }

        if (nh_max > sizeof(stack_headers) / sizeof(stack_headers[0]) &&
            !(headers = calloc(nh_max, sizeof(*headers)))) {
                af_error_set(&e, AF_ERR_NOMEM, "out of memory for headers");
                goto fail;
        }
        /* The fixed lines are about 250 bytes: one allocation for all of them. */
        err = af_buf_reserve(&lines, 512);
        if (!err && body_ptr)
                err = integration_line(&lines, "Content-Type", "application/json");
        if (!err)
                err = integration_line(&lines, "Accept", "application/json");
        if (!err)
                err = integration_line(&lines, "Idempotency-Key", idem_key);
        if (!err)
                err = af_buf_puts(&lines, "X-Agentfleet-Fence: ");
        if (!err)
                err = af_buf_append_i64(&lines, t->lease.fence);
        if (!err)
                err = af_buf_append(&lines, "", 1);
        if (!err)
                err = integration_line(&lines, "X-Agentfleet-Task", t->task->id);
        if (!err && t->task->traceparent && *t->task->traceparent)
                err = integration_line(&lines, "traceparent", t->task->traceparent);
        for (size_t i = 0; i < in->header_cnt && !err; i++) {
                af_buf_reset(&hbuf);
                err = af_template_render(in->headers[i].value, AF_TEMPLATE_HEADER, &vars, &hbuf,
                                         errstr, sizeof(errstr));
                if (err) {
                        /* errstr quotes the template, never a resolved secret value. */
                        af_error_set_retriable(&e, err, false, "%s header %s: %s", in->name,
                                               in->headers[i].name, errstr);
                        goto fail;
                }
                err = integration_line(&lines, in->headers[i].name, af_buf_str(&hbuf));
        }
        if (err) {
                af_error_set(&e, AF_ERR_NOMEM, "out of memory for headers");
                goto fail;
        }
        for (size_t off = 0; off < lines.len; off += strlen(lines.data + off) + 1)
                headers[nh++] = lines.data + off;
        headers[nh] = NULL;

        memset(&req, 0, sizeof(req));
        req.method = method;
        req.url = wi->url_static ? in->url : af_buf_str(&url);
        req.headers = headers;
        req.body = body_ptr;
        req.body_len = body_len;
        req.timeout_ms = in->timeout_ms > 0 ? in->timeout_ms : w->http_timeout_ms;
        req.max_response_bytes = (size_t) w->max_response;
        t->http_busy = true;
        err = af_http_client_send(w->http, &req, integration_on_response, t, &t->http_id);
        if (err) {
                t->http_busy = false;
                af_error_set(&e, err, "%s: request not sent: %s", in->name, af_err2str(err));
                goto fail;
        }
        goto out;
fail:
        t->integration_cb = NULL;
        integration_audit(t, NULL, &e);
        cb(t, NULL, &e);
out:
        /* Header lines may hold resolved secrets: wipe before freeing. */
        if (lines.data)
                memset(lines.data, 0, lines.len);
        if (hbuf.data)
                memset(hbuf.data, 0, hbuf.len);
        if (headers != stack_headers)
                free(headers);
        free(dumped);
        af_buf_free(&url);
        af_buf_free(&body);
        af_buf_free(&hbuf);
        af_buf_free(&lines);
}
