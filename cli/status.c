/*
 * status: the small pure rules of the CLI — task status names, which statuses are final, how
 * HTTP answers and task outcomes map to exit codes, percentiles and durations. Kept free of
 * I/O so the unit test can pin the contract that scripts rely on (cli/README.md).
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

static const char *const status_names[AF_CLI_ST__CNT] = {
        [AF_CLI_ST_UNKNOWN] = "unknown",
        [AF_CLI_ST_QUEUED] = "queued",
        [AF_CLI_ST_RUNNING] = "running",
        [AF_CLI_ST_SUCCEEDED] = "succeeded",
        [AF_CLI_ST_FAILED] = "failed",
        [AF_CLI_ST_RETRYING] = "retrying",
        [AF_CLI_ST_DEAD] = "dead",
        [AF_CLI_ST_REJECTED] = "rejected",
        [AF_CLI_ST_WAITING_APPROVAL] = "waiting_approval",
        [AF_CLI_ST_CANCELLED] = "cancelled",
        [AF_CLI_ST_CANCEL_REQUESTED] = "cancel_requested",
};

af_cli_status_t af_cli_status_parse(const char *s) {
        char norm[64];
        size_t n = 0;

        if (!s)
                return AF_CLI_ST_UNKNOWN;
        /* Accept the proto enum spelling too: servers may echo either. */
        if (!strncasecmp(s, "TASK_STATUS_", 12))
                s += 12;
        for (; *s && n < sizeof(norm) - 1; s++)
                norm[n++] = *s == '-' ? '_' : (char) tolower((unsigned char) *s);
        norm[n] = '\0';
        if (!strcmp(norm, "canceled"))
                return AF_CLI_ST_CANCELLED;
        for (int i = 1; i < AF_CLI_ST__CNT; i++)
                if (!strcmp(norm, status_names[i]))
                        return (af_cli_status_t) i;
        return AF_CLI_ST_UNKNOWN;
}

const char *af_cli_status_name(af_cli_status_t st) {
        if ((int) st < 0 || st >= AF_CLI_ST__CNT)
                return status_names[AF_CLI_ST_UNKNOWN];
        return status_names[st];
}

af_cli_status_t af_cli_status_from_proto(int v) {
        /* TaskStatus numbers match af_cli_status_t on purpose (result.proto). */
        if (v <= 0 || v > AF_CLI_ST_CANCELLED)
                return AF_CLI_ST_UNKNOWN;
        return (af_cli_status_t) v;
}

bool af_cli_status_is_final(af_cli_status_t st) {
        switch (st) {
        case AF_CLI_ST_SUCCEEDED:
        case AF_CLI_ST_FAILED:
        case AF_CLI_ST_DEAD:
        case AF_CLI_ST_REJECTED:
        case AF_CLI_ST_CANCELLED:
                return true;
        default:
                return false;
        }
}

af_cli_exit_t af_cli_exit_for_http(int http_status) {
        if (http_status >= 200 && http_status < 300)
                return AF_CLI_EXIT_OK;
        if (http_status == 401 || http_status == 403)
                return AF_CLI_EXIT_AUTH;
        if (http_status == 404)
                return AF_CLI_EXIT_NOT_FOUND;
        /* 409: the task is in a state that refuses the action (cancel after the end). */
        if (http_status == 409)
                return AF_CLI_EXIT_TASK;
        /* 429 is "try later", like an unavailable server; other 4xx mean our input was bad. */
        if (http_status >= 400 && http_status < 500 && http_status != 429 && http_status != 408)
                return AF_CLI_EXIT_USAGE;
        return AF_CLI_EXIT_SERVER;
}

af_cli_exit_t af_cli_exit_for_err(af_err_t err) {
        switch (err) {
        case AF_OK:
                return AF_CLI_EXIT_OK;
        case AF_ERR_UNAUTHENTICATED:
        case AF_ERR_FORBIDDEN:
                return AF_CLI_EXIT_AUTH;
        case AF_ERR_NOT_FOUND:
                return AF_CLI_EXIT_NOT_FOUND;
        case AF_ERR_INVALID:
        case AF_ERR_CONFIG:
                return AF_CLI_EXIT_USAGE;
        default:
                return AF_CLI_EXIT_SERVER;
        }
}

af_cli_exit_t af_cli_exit_for_kafka_setup(const char *errstr) {
        /* af_producer_new returns NULL without its af_err_t; its AF_ERR_CONFIG messages are
         * "kafka.<key>: ..." (a setting refused) and "kafka producer: ..." (a combination
         * rd_kafka_new refused, e.g. kafka.acks=1 with the forced idempotence).
         * tests/unit/test_cli_kafka_setup.c keeps this in step with libcommon/kafka.c. */
        if (errstr && (!strncmp(errstr, "kafka.", 6) || !strncmp(errstr, "kafka producer:", 15) ||
                       !strncmp(errstr, "kafka consumer:", 15)))
                return AF_CLI_EXIT_USAGE;
        return AF_CLI_EXIT_SERVER;
}

af_cli_exit_t af_cli_exit_for_status(af_cli_status_t st) {
        if (st == AF_CLI_ST_SUCCEEDED)
                return AF_CLI_EXIT_OK;
        if (af_cli_status_is_final(st))
                return AF_CLI_EXIT_TASK;
        /* Still moving (or unknown): the caller did not get an outcome. */
        return AF_CLI_EXIT_SERVER;
}

int64_t af_cli_percentile(const int64_t *sorted, size_t n, double p) {
        size_t rank;

        if (n == 0)
                return 0;
        if (p <= 0)
                return sorted[0];
        if (p >= 100)
                return sorted[n - 1];
        /* Nearest rank: the smallest value with at least p% of the values at or below it. */
        rank = (size_t) ((p / 100.0) * (double) n + 0.999999999);
        if (rank < 1)
                rank = 1;
        if (rank > n)
                rank = n;
        return sorted[rank - 1];
}

int64_t af_cli_parse_duration_ms(const char *s) {
        char *end = NULL;
        double v;

        if (!s || !*s || *s == '-' || isspace((unsigned char) *s))
                return -1;
        errno = 0;
        v = strtod(s, &end);
        if (errno || end == s || v < 0 || v > 1e12)
                return -1;
        if (!*end || !strcmp(end, "s"))
                return (int64_t) (v * 1000.0);
        if (!strcmp(end, "ms"))
                return (int64_t) v;
        if (!strcmp(end, "m"))
                return (int64_t) (v * 60000.0);
        if (!strcmp(end, "h"))
                return (int64_t) (v * 3600000.0);
        return -1;
}
