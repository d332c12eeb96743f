/*
 * api: one call to the coordinator's HTTP API, waited for by running the loop.
 *
 * The CLI's simple commands are sequential, but they still go through libcommon's
 * http_client on the process's one loop (no second HTTP stack): af_cli_api() starts the
 * request and runs the loop until the completion callback stops it. Errors from the server
 * arrive as JSON {code, message} and are turned into a one-line errstr and an exit code.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "log.h"

#define AF_CLI_MAX_RESPONSE (16u * 1024 * 1024) /* a long task list, never unbounded */
#define AF_CLI_MAX_HEADERS  16

/* What the completion callback hands back to af_cli_api(). */
typedef struct api_wait_s {
        af_cli_t *cli;
        bool done;
        int status; /* HTTP status, 0 on transport failure */
        af_error_t err;
        json_t *json; /* parsed body (owned until handed to the caller) */
        char *raw;    /* first bytes of a non-JSON body, for the message */
} api_wait_t;

af_http_client_t *af_cli_http(af_cli_t *cli, char *errstr, size_t errstr_size) {
        af_http_client_opts_t opts = {
                .default_timeout_ms = cli->timeout_ms > 0 ? cli->timeout_ms : 30000,
                .default_max_response_bytes = AF_CLI_MAX_RESPONSE,
                .max_host_connections = 0 /*unlimited*/,
        };

        if (!cli->hc)
                cli->hc = af_http_client_new(cli->loop, &opts, errstr, errstr_size);
        return cli->hc;
}

bool af_cli_auth_header(const af_cli_t *cli, char *out, size_t out_size) {
        if (!cli->token || !*cli->token)
                return false;
        snprintf(out, out_size, "Authorization: Bearer %s", cli->token);
        return true;
}

void af_cli_url_escape(const char *s, char *out, size_t out_size) {
        static const char hex[] = "0123456789ABCDEF";
        size_t n = 0;

        if (!out_size)
                return;
        for (; *s && n + 4 < out_size; s++) {
                unsigned char c = (unsigned char) *s;
                if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == '~') {
                        out[n++] = (char) c;
                } else {
                        out[n++] = '%';
                        out[n++] = hex[c >> 4];
                        out[n++] = hex[c & 15];
                }
        }
        out[n] = '\0';
}

/* Completion, on the loop: keep what the caller needs, stop the loop. */
static void api_done_cb(const af_http_response_t *resp, const af_error_t *err, void *opaque) {
        api_wait_t *w = opaque;

        w->done = true;
        w->cli->replayed = false;
        if (err && err->err != AF_OK) {
                w->err = *err;
        } else if (resp) {
                const char *replayed = af_http_response_header(resp, "Idempotent-Replayed");
                w->cli->replayed = replayed && !strcasecmp(replayed, "true");
                w->status = resp->status;
                if (resp->body_len) {
                        w->json = json_loadb(resp->body, resp->body_len, 0, NULL);
                        if (!w->json)
                                w->raw = strndup(resp->body,
                                                 resp->body_len > 200 ? 200 : resp->body_len);
                }
        }
        af_loop_stop(w->cli->loop);
}

/* Fill errstr from a non-2xx answer: the server's {code, message} when it sent one. */
static void api_error_text(const api_wait_t *w, char *errstr, size_t errstr_size) {
        const char *code = NULL, *msg = NULL;
        const json_t *e = w->json;

        if (e && json_is_object(json_object_get(e, "error")))
                e = json_object_get(e, "error"); /* tolerate {"error": {code, message}} */
        if (e && json_is_object(e)) {
                code = json_string_value(json_object_get(e, "code"));
                msg = json_string_value(json_object_get(e, "message"));
        }
        snprintf(errstr, errstr_size, "HTTP %d%s%s%s%s", w->status, code ? " " : "",
                 code ? code : "", msg || w->raw ? ": " : "",
                 msg      ? msg
                 : w->raw ? w->raw
                          : "");
}

af_cli_exit_t af_cli_api(af_cli_t *cli, const char *method, const char *path, const char *body,
                         const char *const *extra_headers, int *statusp, json_t **jsonp,
                         char *errstr, size_t errstr_size) {
        api_wait_t w = {.cli = cli};
        const char *headers[AF_CLI_MAX_HEADERS + 4];
        char auth[1024], *url = NULL;
        size_t hn = 0;
        af_err_t err;
        af_cli_exit_t rc = AF_CLI_EXIT_SERVER;
        af_http_request_t req = {0};

        if (statusp)
                *statusp = 0;
        if (jsonp)
                *jsonp = NULL;
        if (!af_cli_http(cli, errstr, errstr_size))
                goto out;
        if (asprintf(&url, "%s%s", cli->api_url, path) < 0) {
                url = NULL;
                snprintf(errstr, errstr_size, "out of memory");
                goto out;
        }
        if (af_cli_auth_header(cli, auth, sizeof(auth)))
                headers[hn++] = auth;
        headers[hn++] = "Accept: application/json";
        if (body)
                headers[hn++] = "Content-Type: application/json";
        for (size_t i = 0; extra_headers && extra_headers[i] && i < AF_CLI_MAX_HEADERS; i++)
                headers[hn++] = extra_headers[i];
        headers[hn] = NULL;

        req.method = method;
        req.url = url;
        req.headers = headers;
        req.body = body;
        req.body_len = body ? strlen(body) : 0;
        req.timeout_ms = cli->timeout_ms;
        err = af_http_client_send(cli->hc, &req, api_done_cb, &w, NULL);
        if (err != AF_OK) {
                snprintf(errstr, errstr_size, "%s %s: %s", method, url, af_err2str(err));
                rc = af_cli_exit_for_err(err);
                goto out;
        }
        while (!w.done)
                if (af_loop_run(cli->loop) < 0)
                        break;
        if (!w.done) {
                snprintf(errstr, errstr_size, "%s %s: event loop failed", method, url);
                goto out;
        }
        if (w.err.err != AF_OK) {
                /* Most often the URL is not where the coordinator listens (the default
                 * port, or another machine): say which setting moves it. */
                snprintf(errstr, errstr_size, "%s %s: %s%s", method, url,
                         w.err.msg[0] ? w.err.msg : af_err2str(w.err.err),
                         w.err.err == AF_ERR_TRANSPORT
                                 ? " (is the coordinator listening there? --api-url or "
                                   "cli.api_url / AGENTFLEET_CLI_API_URL set the URL)"
                                 : "");
                rc = AF_CLI_EXIT_SERVER;
                goto out;
        }
        if (statusp)
                *statusp = w.status;
        rc = af_cli_exit_for_http(w.status);
        if (rc != AF_CLI_EXIT_OK)
                api_error_text(&w, errstr, errstr_size);
        else if (!w.json && w.raw)
                snprintf(errstr, errstr_size, "HTTP %d: answer is not JSON: %s", w.status, w.raw);
        if (jsonp) {
                *jsonp = w.json;
                w.json = NULL;
        }
out:
        json_decref(w.json);
        free(w.raw);
        free(url);
        return rc;
}

static void sleep_done_cb(void *opaque) {
        af_cli_t *cli = opaque;
        af_loop_stop(cli->loop);
}

void af_cli_sleep(af_cli_t *cli, int64_t ms) {
        af_timer_t *t = af_timer_new(cli->loop, sleep_done_cb, cli);

        if (!t)
                return;
        /* The loop keeps serving whatever else is registered (curl's idle connections). */
        af_timer_start(t, ms, false);
        while (af_timer_pending(t))
                if (af_loop_run(cli->loop) < 0)
                        break;
        af_timer_destroy(t);
}
