/*
 * cmd_tasks: the read and control commands on single tasks and task lists — `get`, `list`
 * and `cancel` — each one API call (GET /v1/tasks/{id}, GET /v1/tasks?..., POST
 * /v1/tasks/{id}:cancel) printed as a readable block/table or, with --json, as the API's own
 * JSON on one line.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/* Parse the common "[--help] ID" shape of get/cancel. @returns the id, or NULL with *rcp set
 * (OK after --help, USAGE otherwise). */
static const char *parse_id_args(int argc, char **argv, const char *usage, int *rcp) {
        static const struct option opts[] = {
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                if (c == 'h') {
                        printf("%s", usage);
                        *rcp = AF_CLI_EXIT_OK;
                        return NULL;
                }
                fprintf(stderr, "%s", usage);
                *rcp = AF_CLI_EXIT_USAGE;
                return NULL;
        }
        if (argc - optind != 1 || !*argv[optind]) {
                fprintf(stderr, "%s", usage);
                *rcp = AF_CLI_EXIT_USAGE;
                return NULL;
        }
        return argv[optind];
}

int af_cli_cmd_get(af_cli_t *cli, int argc, char **argv) {
        static const char usage[] =
                "usage: agentfleet get [--json] ID\n"
                "  Shows the task's status, result, versions and timings. Exit 0 when shown,\n"
                "  4 when there is no such task.\n";
        char path[512], esc[400], errstr[1024];
        json_t *task = NULL;
        const char *id;
        int rc = AF_CLI_EXIT_USAGE;

        id = parse_id_args(argc, argv, usage, &rc);
        if (!id)
                goto out;
        af_cli_url_escape(id, esc, sizeof(esc));
        snprintf(path, sizeof(path), "/v1/tasks/%s", esc);
        rc = af_cli_api(cli, "GET", path, NULL, NULL, NULL, &task, errstr, sizeof(errstr));
        if (rc != AF_CLI_EXIT_OK) {
                fprintf(stderr, "agentfleet get: %s\n", errstr);
                goto out;
        }
        if (cli->json)
                af_cli_print_json(task ? task : json_null());
        else
                af_cli_print_task(task);
out:
        json_decref(task);
        return rc;
}

int af_cli_cmd_cancel(af_cli_t *cli, int argc, char **argv) {
        static const char usage[] =
                "usage: agentfleet cancel [--json] ID\n"
                "  Asks the coordinator to cancel the task: one not yet started never runs, one\n"
                "  running is told to stop. Exit 0 when accepted, 1 when the task already\n"
                "  ended (409), 4 when there is no such task.\n";
        char path[512], esc[400], errstr[1024];
        json_t *answer = NULL;
        const char *id;
        int rc = AF_CLI_EXIT_USAGE;

        id = parse_id_args(argc, argv, usage, &rc);
        if (!id)
                goto out;
        af_cli_url_escape(id, esc, sizeof(esc));
        snprintf(path, sizeof(path), "/v1/tasks/%s:cancel", esc);
        rc = af_cli_api(cli, "POST", path, "{}", NULL, NULL, &answer, errstr, sizeof(errstr));
        if (rc != AF_CLI_EXIT_OK) {
                fprintf(stderr, "agentfleet cancel: %s\n", errstr);
                if (cli->json && answer)
                        af_cli_print_json(answer);
                goto out;
        }
        if (cli->json) {
                af_cli_print_json(answer ? answer : json_null());
        } else {
                af_cli_status_t st = af_cli_task_status(answer);
                printf("%s %s\n", id,
                       st != AF_CLI_ST_UNKNOWN ? af_cli_status_name(st) : "cancel requested");
        }
out:
        json_decref(answer);
        return rc;
}

/* ---- list ---------------------------------------------------------------------------------- */

/* "2026-11-25 10:00:01" from unix ms (UTC), or "-". */
static void format_ms(int64_t ms, char *out, size_t out_size) {
        time_t t = (time_t) (ms / 1000);
        struct tm tm;

        if (ms <= 0 || !gmtime_r(&t, &tm)) {
                snprintf(out, out_size, "-");
                return;
        }
        strftime(out, out_size, "%Y-%m-%d %H:%M:%S", &tm);
}

/* The creation time of a task object in any of the shapes the API may use. */
static int64_t task_created_ms(const json_t *task) {
        static const char *const keys[] = {"created_at_ms", "created_ms", NULL};
        const json_t *timings = json_object_get(task, "timings");

        for (size_t i = 0; keys[i]; i++) {
                if (json_is_integer(json_object_get(task, keys[i])))
                        return json_integer_value(json_object_get(task, keys[i]));
                if (json_is_integer(json_object_get(timings, keys[i])))
                        return json_integer_value(json_object_get(timings, keys[i]));
        }
        return 0;
}

#define LIST_COLS 6

/* One row of the list: the task's cells (pointing into task), its creation time into created. */
static void task_row(const json_t *task, const char *cells[LIST_COLS], char created[32]) {
        static const char *const type_k[] = {"type", NULL};
        static const char *const tenant_k[] = {"tenant", NULL};
        static const char *const case_k[] = {"case_key", NULL};

        format_ms(task_created_ms(task), created, 32);
        cells[0] = af_cli_task_id(task);
        cells[1] = af_cli_json_str(task, type_k);
        cells[2] = af_cli_status_name(af_cli_task_status(task));
        cells[3] = af_cli_json_str(task, tenant_k);
        cells[4] = af_cli_json_str(task, case_k);
        cells[5] = created;
}

/* @returns false when out of memory. */
static bool print_task_table(const json_t *tasks) {
        static const char *const header[LIST_COLS] = {"ID",     "TYPE",     "STATUS",
                                                      "TENANT", "CASE_KEY", "CREATED (UTC)"};
        size_t n = json_array_size(tasks);
        const char **cells = calloc(n ? n * LIST_COLS : 1, sizeof(*cells));
        char(*created)[32] = calloc(n ? n : 1, sizeof(*created));

        if (!cells || !created) {
                free(cells);
                free(created);
                return false;
        }
        for (size_t i = 0; i < n; i++)
                task_row(json_array_get(tasks, i), cells + i * LIST_COLS, created[i]);
        af_cli_print_table(stdout, LIST_COLS, header, cells, n);
        free(cells);
        free(created);
        return true;
}

int af_cli_cmd_list(af_cli_t *cli, int argc, char **argv) {
        static const char usage[] =
                "usage: agentfleet list [--status S] [--type T] [--tenant T] [--limit N]\n"
                "                       [--cursor C] [--json]\n"
                "  Lists tasks, newest first as the API orders them; prints the command for\n"
                "  the next page when there is one (same filters, its --cursor). S is one of\n"
                "  queued, running, succeeded, failed, retrying, dead, rejected,\n"
                "  waiting_approval, cancelled, cancel_requested; --limit 1..500 (default\n"
                "  50); --tenant defaults to the token's own.\n";
        static const struct option opts[] = {
                {"status", required_argument, NULL, 's'},
                {"type", required_argument, NULL, 't'},
                {"tenant", required_argument, NULL, 'T'},
                {"limit", required_argument, NULL, 'n'},
                {"cursor", required_argument, NULL, 'c'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        static const char *const list_k[] = {"tasks", "items", "data", NULL};
        static const char *const next_k[] = {"next_cursor", "cursor", "next", NULL};
        const char *filters[5][2] = {{"status", NULL},
                                     {"type", NULL},
                                     {"tenant", NULL},
                                     {"limit", NULL},
                                     {"cursor", NULL}};
        char path[2048], esc[512], errstr[1024];
        json_t *answer = NULL, *tasks = NULL;
        const char *next;
        size_t plen, i;
        int c, rc = AF_CLI_EXIT_USAGE;

        optind = 0;
        while ((c = getopt_long(argc, argv, "s:t:T:n:c:h", opts, NULL)) != -1) {
                switch (c) {
                case 's':
                        if (af_cli_status_parse(optarg) == AF_CLI_ST_UNKNOWN) {
                                fprintf(stderr,
                                        "agentfleet list: unknown status \"%s\" (one of:", optarg);
                                for (int st = AF_CLI_ST_UNKNOWN + 1; st < AF_CLI_ST__CNT; st++)
                                        fprintf(stderr, " %s",
                                                af_cli_status_name((af_cli_status_t) st));
                                fprintf(stderr, ")\n");
                                goto out;
                        }
                        filters[0][1] = af_cli_status_name(af_cli_status_parse(optarg));
                        break;
                case 't':
                        filters[1][1] = optarg;
                        break;
                case 'T':
                        filters[2][1] = optarg;
                        break;
                case 'n': {
                        char *end;
                        long v = strtol(optarg, &end, 10);
                        if (*end || v < 1 || v > 500) {
                                fprintf(stderr, "agentfleet list: --limit: expected 1..500\n");
                                goto out;
                        }
                        filters[3][1] = optarg;
                        break;
                }
                case 'c':
                        filters[4][1] = optarg;
                        break;
                case 'h':
                        printf("%s", usage);
                        rc = AF_CLI_EXIT_OK;
                        goto out;
                default:
                        fprintf(stderr, "%s", usage);
                        goto out;
                }
        }
        if (optind != argc) {
                fprintf(stderr, "%s", usage);
                goto out;
        }
        plen = (size_t) snprintf(path, sizeof(path), "/v1/tasks");
        for (i = 0; i < 5; i++) {
                if (!filters[i][1])
                        continue;
                af_cli_url_escape(filters[i][1], esc, sizeof(esc));
                plen += (size_t) snprintf(path + plen, sizeof(path) - plen, "%c%s=%s",
                                          strchr(path, '?') ? '&' : '?', filters[i][0], esc);
                if (plen >= sizeof(path)) {
                        fprintf(stderr, "agentfleet list: filters too long\n");
                        goto out;
                }
        }
        rc = af_cli_api(cli, "GET", path, NULL, NULL, NULL, &answer, errstr, sizeof(errstr));
        if (rc != AF_CLI_EXIT_OK) {
                fprintf(stderr, "agentfleet list: %s\n", errstr);
                goto out;
        }
        if (cli->json) {
                af_cli_print_json(answer ? answer : json_null());
                goto out;
        }
        tasks = json_is_array(answer) ? answer : NULL;
        for (i = 0; !tasks && list_k[i]; i++)
                if (json_is_array(json_object_get(answer, list_k[i])))
                        tasks = json_object_get(answer, list_k[i]);
        if (!tasks) {
                fprintf(stderr, "agentfleet list: the answer holds no task list\n");
                rc = AF_CLI_EXIT_SERVER;
                goto out;
        }
        if (!print_task_table(tasks)) {
                fprintf(stderr, "agentfleet list: out of memory\n");
                rc = AF_CLI_EXIT_SERVER;
                goto out;
        }
        next = af_cli_json_str(answer, next_k);
        if (next && *next) {
                /* The cursor only says where the page ended: the next page needs the same
                 * filters and limit again, or it lists every task from there on. */
                printf("next page: agentfleet list");
                for (i = 0; i < 4; i++)
                        if (filters[i][1])
                                printf(" --%s %s", filters[i][0], filters[i][1]);
                printf(" --cursor %s\n", next);
        }
out:
        json_decref(answer);
        return rc;
}
