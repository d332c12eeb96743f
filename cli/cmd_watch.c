/*
 * cmd_watch: `agentfleet watch ID` — follow a task to its end by polling GET /v1/tasks/{id},
 * printing each status transition as it is seen. The exit code is the outcome, so a script
 * can `agentfleet watch $id && next-step`: 0 succeeded, 1 ended otherwise (failed, dead,
 * rejected, cancelled), 4 unknown task, 5 server unreachable or --max-wait passed.
 * waiting_approval is shown but not final: an approval may still release the task.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"

#include "cli.h"

#define WATCH_MAX_FAILURES 10 /* consecutive failed polls before giving up */

/* The one-line human form of a transition: "10:00:01  ID  running  (worker w1, attempt 1)". */
static void print_transition(const char *id, const json_t *task, af_cli_status_t st) {
        static const char *const worker_k[] = {"worker_id", NULL};
        const json_t *result = json_object_get(task, "result");
        const json_t *err = json_object_get(task, "error");
        const char *worker = af_cli_json_str(task, worker_k);
        char stamp[16];
        time_t now = time(NULL);
        struct tm tm;

        if (!worker)
                worker = af_cli_json_str(result, worker_k);
        if (!err)
                err = json_object_get(result, "error");
        localtime_r(&now, &tm);
        strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
        printf("%s  %s  %s", stamp, id, af_cli_status_name(st));
        if (worker && *worker)
                printf("  worker=%s", worker);
        if (json_is_object(err) && json_string_value(json_object_get(err, "code")))
                printf("  error=%s: %s", json_string_value(json_object_get(err, "code")),
                       json_string_value(json_object_get(err, "message"))
                               ? json_string_value(json_object_get(err, "message"))
                               : "");
        printf("\n");
        fflush(stdout);
}

int af_cli_cmd_watch(af_cli_t *cli, int argc, char **argv) {
        static const char usage[] =
                "usage: agentfleet watch [--interval DURATION] [--max-wait DURATION] [--json] ID\n"
                "  Polls the task (default every 500ms) until it is succeeded, failed, dead,\n"
                "  rejected or cancelled, printing each transition (with --json: the task as\n"
                "  one JSON line per transition). Exit 0 succeeded, 1 other end, 4 no such\n"
                "  task, 5 server unreachable (10 failed polls in a row) or --max-wait\n"
                "  (default: none) passed.\n";
        static const struct option opts[] = {
                {"interval", required_argument, NULL, 'i'},
                {"max-wait", required_argument, NULL, 'w'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        char path[512], esc[400], errstr[1024];
        int64_t interval_ms = 500, max_wait_ms = 0, start_ms;
        af_cli_status_t last = AF_CLI_ST__CNT; /* nothing seen yet */
        const char *id;
        int c, failures = 0, rc = AF_CLI_EXIT_USAGE;

        optind = 0;
        while ((c = getopt_long(argc, argv, "i:w:h", opts, NULL)) != -1) {
                switch (c) {
                case 'i':
                        interval_ms = af_cli_parse_duration_ms(optarg);
                        if (interval_ms < 10) {
                                fprintf(stderr,
                                        "agentfleet watch: --interval: expected a duration "
                                        "of at least 10ms like 500ms or 2s, got \"%s\"\n",
                                        optarg);
                                goto out;
                        }
                        break;
                case 'w':
                        max_wait_ms = af_cli_parse_duration_ms(optarg);
                        if (max_wait_ms < 0) {
                                fprintf(stderr,
                                        "agentfleet watch: --max-wait: expected a duration "
                                        "like 2m, got \"%s\"\n",
                                        optarg);
                                goto out;
                        }
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
        if (argc - optind != 1 || !*argv[optind]) {
                fprintf(stderr, "%s", usage);
                goto out;
        }
        id = argv[optind];
        af_cli_url_escape(id, esc, sizeof(esc));
        snprintf(path, sizeof(path), "/v1/tasks/%s", esc);
        start_ms = af_clock_mono_ms();

        for (;;) {
                json_t *task = NULL;
                af_cli_status_t st;
                int arc = af_cli_api(cli, "GET", path, NULL, NULL, NULL, &task, errstr,
                                     sizeof(errstr));

                if (arc == AF_CLI_EXIT_SERVER) {
                        /* A coordinator restart or a blip must not end the watch at once. */
                        json_decref(task);
                        if (++failures >= WATCH_MAX_FAILURES) {
                                fprintf(stderr,
                                        "agentfleet watch: giving up after %d failed "
                                        "polls: %s\n",
                                        failures, errstr);
                                rc = AF_CLI_EXIT_SERVER;
                                goto out;
                        }
                        fprintf(stderr, "agentfleet watch: %s (retrying)\n", errstr);
                } else if (arc != AF_CLI_EXIT_OK) {
                        fprintf(stderr, "agentfleet watch: %s\n", errstr);
                        json_decref(task);
                        rc = arc;
                        goto out;
                } else {
                        failures = 0;
                        st = af_cli_task_status(task);
                        if (st != last) {
                                if (cli->json)
                                        af_cli_print_json(task ? task : json_null());
                                else
                                        print_transition(id, task, st);
                                last = st;
                        }
                        json_decref(task);
                        if (af_cli_status_is_final(st)) {
                                rc = af_cli_exit_for_status(st);
                                goto out;
                        }
                }
                if (max_wait_ms > 0 && af_clock_mono_ms() - start_ms >= max_wait_ms) {
                        fprintf(stderr, "agentfleet watch: %s not final after %lld ms\n", id,
                                (long long) max_wait_ms);
                        rc = AF_CLI_EXIT_SERVER;
                        goto out;
                }
                af_cli_sleep(cli, interval_ms);
        }
out:
        return rc;
}
