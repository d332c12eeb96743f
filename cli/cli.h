/*
 * cli: the shared parts of `agentfleet`, the command-line client of the coordinator.
 *
 * Every command runs on one af_loop_t, like the daemons: HTTP calls go through libcommon's
 * http_client (curl multi on the loop), Kafka through libcommon's kafka. A simple command
 * (get, list, cancel, submit) starts one request and runs the loop until its answer is in;
 * `watch` polls from a timer; `drive` keeps hundreds of requests and Kafka messages in flight.
 *
 * Exit codes are a contract with scripts (cli/README.md): see af_cli_exit_t.
 */
#ifndef AF_CLI_H
#define AF_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"
#include "http_client.h"
#include "loop.h"

/* Exit codes: documented in cli/README.md, relied upon by scripts. */
typedef enum {
        AF_CLI_EXIT_OK = 0,        /* done; for watch: the task succeeded */
        AF_CLI_EXIT_TASK = 1,      /* the task ended not succeeded / drive found losses */
        AF_CLI_EXIT_USAGE = 2,     /* bad command line or a request the server refused as bad */
        AF_CLI_EXIT_AUTH = 3,      /* 401 / 403 */
        AF_CLI_EXIT_NOT_FOUND = 4, /* 404 */
        AF_CLI_EXIT_SERVER = 5,    /* 5xx, 429, network, timeout, local failure */
} af_cli_exit_t;

/* Task status names as the API and the CLI print them (TaskResult.status). */
typedef enum {
        AF_CLI_ST_UNKNOWN = 0,
        AF_CLI_ST_QUEUED,
        AF_CLI_ST_RUNNING,
        AF_CLI_ST_SUCCEEDED,
        AF_CLI_ST_FAILED,
        AF_CLI_ST_RETRYING,
        AF_CLI_ST_DEAD,
        AF_CLI_ST_REJECTED,
        AF_CLI_ST_WAITING_APPROVAL,
        AF_CLI_ST_CANCELLED,
        AF_CLI_ST_CANCEL_REQUESTED, /* API only: cancel asked, the worker has not ended it */
        AF_CLI_ST__CNT
} af_cli_status_t;

/* One invocation's context, built by main.c and handed to the command. */
typedef struct af_cli_s {
        af_config_t *conf;    /* settings: cli.*, kafka.*, topic.prefix */
        af_loop_t *loop;      /* the one loop */
        af_http_client_t *hc; /* created lazily by af_cli_http() */
        const char *api_url;  /* cli.api_url without a trailing slash (owned by conf/env) */
        char *token;          /* bearer token (owned), or NULL */
        bool json;            /* --json: machine output on stdout */
        int64_t timeout_ms;   /* per request */
        bool replayed;        /* the last af_cli_api answer said Idempotent-Replayed: true */
} af_cli_t;

/* ---- status.c: pure helpers (unit-tested) ------------------------------------------------- */

/* @returns the status for an API name ("succeeded", "waiting_approval", also upper-case and
 *          "TASK_STATUS_*" forms), AF_CLI_ST_UNKNOWN otherwise. */
af_cli_status_t af_cli_status_parse(const char *s);
/* @returns the API name of st ("succeeded"); "unknown" for AF_CLI_ST_UNKNOWN. */
const char *af_cli_status_name(af_cli_status_t st);
/* @returns the status for a TaskResult.status protobuf value (same numbering). */
af_cli_status_t af_cli_status_from_proto(int v);
/* @returns whether a task in st will not change again without a human (waiting_approval is
 *          not final: an approval may still release it). */
bool af_cli_status_is_final(af_cli_status_t st);
/* @returns the exit code for an HTTP status of an API answer (2xx → OK). */
af_cli_exit_t af_cli_exit_for_http(int http_status);
/* @returns the exit code for a transport-level error of an API call. */
af_cli_exit_t af_cli_exit_for_err(af_err_t err);
/* @returns the exit code for af_producer_new()'s (or af_consumer_new()'s) errstr: USAGE for
 *          settings librdkafka refused, alone or together; SERVER for the machine's failures
 *          (memory, pipes). */
af_cli_exit_t af_cli_exit_for_kafka_setup(const char *errstr);
/* @returns the exit code for a task that reached st (succeeded → OK, other finals → TASK). */
af_cli_exit_t af_cli_exit_for_status(af_cli_status_t st);
/* Nearest-rank percentile (p in 0..100) of n sorted values; 0 when n == 0. */
int64_t af_cli_percentile(const int64_t *sorted, size_t n, double p);
/* Parse a non-negative number with an optional unit suffix ms/s/m ("30s", "500ms", "2m", a
 * bare number is seconds). @returns -1 when malformed. */
int64_t af_cli_parse_duration_ms(const char *s);

/* ---- api.c: one API call at a time, on the loop ------------------------------------------- */

/* @returns the HTTP client of cli, created on first use (NULL with errstr on failure). */
af_http_client_t *af_cli_http(af_cli_t *cli, char *errstr, size_t errstr_size);

/* Call the coordinator's API and wait (running the loop) for the answer.
 * method/path ("/v1/tasks"), body (JSON text or NULL), extra_headers (NULL-terminated
 * "Name: value" or NULL). On an HTTP answer: *statusp is set, *jsonp gets the parsed body
 * (caller owns; NULL when not JSON) and the result is AF_CLI_EXIT_OK for 2xx or the mapped
 * exit code, with errstr holding the server's {code, message}. On a transport failure the
 * result is AF_CLI_EXIT_SERVER with errstr. Loop thread, not re-entrant. */
af_cli_exit_t af_cli_api(af_cli_t *cli, const char *method, const char *path, const char *body,
                         const char *const *extra_headers, int *statusp, json_t **jsonp,
                         char *errstr, size_t errstr_size);

/* Wait ms while serving the loop (the sequential commands' pause). Loop thread. */
void af_cli_sleep(af_cli_t *cli, int64_t ms);

/* Build "Authorization: Bearer <token>" into out; @returns false when there is no token. */
bool af_cli_auth_header(const af_cli_t *cli, char *out, size_t out_size);
/* Percent-encode s for a URL path segment or query value into out. */
void af_cli_url_escape(const char *s, char *out, size_t out_size);

/* ---- output.c ------------------------------------------------------------------------------ */

/* Print a task object (API form) as "key  value" lines. */
void af_cli_print_task(const json_t *task);
/* Print a JSON value on one line, followed by a newline, to stdout. */
void af_cli_print_json(const json_t *v);
/* Print a table on out: the header, then nrows rows of ncols cells (cells[row * ncols +
 * col]; NULL prints "-"), each column as wide as its widest cell so that columns line up
 * whatever the data (case keys, tenants and types have no fixed length), two spaces apart,
 * the last column unpadded. At most 16 columns. */
void af_cli_print_table(FILE *out, size_t ncols, const char *const *header,
                        const char *const *cells, size_t nrows);
/* @returns a string field of obj, trying each name in turn (NULL-terminated list), or NULL. */
const char *af_cli_json_str(const json_t *obj, const char *const *names);
/* @returns the task's status (field "status", or inside "result"). */
af_cli_status_t af_cli_task_status(const json_t *task);
/* @returns the task's id ("id" or "task_id"), or NULL. */
const char *af_cli_task_id(const json_t *task);

/* ---- request_json.c: TaskRequests produced straight to Kafka ------------------------------- */

typedef struct af_cli_request_s {
        const char *type;
        const char *payload;         /* JSON text */
        const char *case_key;        /* or NULL */
        const char *idempotency_key; /* or NULL */
        const char *request_id;      /* or NULL */
        int priority;
        const char *traceparent; /* or NULL: a fresh one */
        const char *token;       /* either a token ... */
        const char *key_id;      /* ... or key_id + secret: signed */
        const char *secret;
} af_cli_request_t;

#define AF_CLI_TRACEPARENT_LEN 55
/* A fresh W3C traceparent ("00-<32 hex trace>-<16 hex span>-01") into out. */
void af_cli_traceparent(char out[AF_CLI_TRACEPARENT_LEN + 1]);

/* Build the JSON form of a TaskRequest, signed with key_id/secret when given (else carrying
 * the token). @returns the JSON text (caller frees) or NULL with errstr. */
char *af_cli_request_json(const af_cli_request_t *req, char *errstr, size_t errstr_size);

/* ---- commands ------------------------------------------------------------------------------ */

int af_cli_cmd_submit(af_cli_t *cli, int argc, char **argv);
int af_cli_cmd_get(af_cli_t *cli, int argc, char **argv);
int af_cli_cmd_list(af_cli_t *cli, int argc, char **argv);
int af_cli_cmd_cancel(af_cli_t *cli, int argc, char **argv);
int af_cli_cmd_watch(af_cli_t *cli, int argc, char **argv);
int af_cli_cmd_drive(af_cli_t *cli, int argc, char **argv);

#endif
