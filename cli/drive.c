/*
 * drive: `agentfleet drive`, the load driver of the demo and the benchmark (see drive.h for
 * the shape of a run). This file reads the options and the sample payloads, sets up the
 * results consumer (at the topic's end, assigned before anything is submitted, so that early
 * results are not delayed by the group join), the producer and the API client, then runs the
 * loop until every task is final, the --timeout passes or a signal asks to stop, and hands
 * over to the report.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

#include "drive.h"

#define DRIVE_MAX_TASKS         10000000
#define DRIVE_MAX_PAYLOAD_LINE  (1024 * 1024)
#define DRIVE_ASSIGN_TIMEOUT_MS 30000

static const char drive_usage_text[] =
        "usage: agentfleet drive --tasks N --type TYPE [--payloads FILE.jsonl]\n"
        "                        [--api-share 0.5] [--rate R] [--concurrency C]\n"
        "                        [--timeout 300s] [--linger 0s] [--simagent URL]\n"
        "                        [--key-id intake-svc] [--unique-field claim_id]\n"
        "                        [--progress] [--json]\n"
        "  Submits N tasks — the --api-share over the API (Idempotency-Key, C requests in\n"
        "  flight), the rest produced to the requests topic as signed JSON TaskRequests\n"
        "  (secret of --key-id from $AGENTFLEET_INTAKE_KEY; without it the token is sent) —\n"
        "  at R tasks/s (0 = as fast as possible), then follows every task on the results\n"
        "  topic to its final result and prints the summary (with --json its last stdout\n"
        "  line is one JSON object). Payload lines are cycled; the --unique-field of each\n"
        "  (\"\" for none) is made unique per task so that the simagent does not count\n"
        "  repeated samples as duplicate side effects. --simagent URL adds the simagent's\n"
        "  duplicate side effects. --linger keeps reading results after all are final, to\n"
        "  catch late duplicates. Exit 0 when nothing was lost, refused or duplicated.\n"
        "  --direct LANE (benchmarks) produces ready Task messages straight to tasks.LANE,\n"
        "  bypassing admission, to measure the workers against a raw Kafka relay.\n";

/* @returns a parsed, positive-or-zero number in [min, max], or -1 (message printed). */
static double parse_number(const char *opt, const char *s, double min, double max) {
        char *end = NULL;
        double v = strtod(s, &end);

        if (!*s || *end || v < min || v > max) {
                fprintf(stderr,
                        "agentfleet drive: %s: expected a number in [%g, %g], got "
                        "\"%s\"\n",
                        opt, min, max, s);
                return -1;
        }
        return v;
}

/* Read the JSONL sample file into d->payloads. @returns 0 or -1 (message printed). */
static int load_payloads(drive_t *d) {
        FILE *f = NULL;
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        long lineno = 0;
        int rc = -1;

        d->payloads = json_array();
        if (!d->payloads)
                goto out;
        if (!d->o.payloads_path) {
                json_array_append_new(d->payloads, json_object());
                rc = 0;
                goto out;
        }
        f = fopen(d->o.payloads_path, "r");
        if (!f) {
                fprintf(stderr, "agentfleet drive: %s: cannot open\n", d->o.payloads_path);
                goto out;
        }
        while ((n = getline(&line, &cap, f)) >= 0) {
                json_error_t jerr;
                json_t *j;

                lineno++;
                if (n > DRIVE_MAX_PAYLOAD_LINE) {
                        fprintf(stderr, "agentfleet drive: %s:%ld: line longer than %d bytes\n",
                                d->o.payloads_path, lineno, DRIVE_MAX_PAYLOAD_LINE);
                        goto out;
                }
                if (strspn(line, " \t\r\n") == (size_t) n)
                        continue; /* blank line */
                j = json_loadb(line, (size_t) n, JSON_DECODE_ANY, &jerr);
                if (!j) {
                        fprintf(stderr, "agentfleet drive: %s:%ld: not JSON: %s\n",
                                d->o.payloads_path, lineno, jerr.text);
                        goto out;
                }
                json_array_append_new(d->payloads, j);
        }
        if (json_array_size(d->payloads) == 0) {
                fprintf(stderr, "agentfleet drive: %s: no payloads\n", d->o.payloads_path);
                goto out;
        }
        rc = 0;
out:
        free(line);
        if (f)
                fclose(f);
        return rc;
}

/* @returns whether every accepted task has its final result (a scan, done only when the
 *          counters say it may be so: a refused submission may still have got a result). */
static bool all_final(const drive_t *d) {
        if (!drive_submission_done(d) || d->finals < d->accepted)
                return false;
        for (int64_t i = 0; i < d->o.tasks; i++)
                if (d->tasks[i].sub == DRIVE_SUB_ACCEPTED && !d->tasks[i].final_st)
                        return false;
        return true;
}

static void drive_stop(drive_t *d) {
        d->stopping = true;
        af_loop_stop(d->cli->loop);
}

static void deadline_cb(void *opaque) {
        drive_t *d = opaque;

        if (!d->all_final_us)
                af_info("drive: --timeout passed with %lld of %lld tasks final",
                        (long long) d->finals, (long long) d->accepted);
        drive_stop(d);
}

void drive_on_final(drive_t *d) {
        if (d->stopping || d->all_final_us || !all_final(d))
                return;
        d->all_final_us = drive_now_us();
        if (d->o.linger_ms <= 0) {
                drive_stop(d);
                return;
        }
        /* Keep reading for late duplicates; the deadline timer now measures the linger. */
        af_timer_stop(d->deadline_timer);
        af_timer_start(d->deadline_timer, d->o.linger_ms, false);
}

static void progress_cb(void *opaque) {
        drive_progress(opaque, false);
}

static void signal_cb(af_loop_t *loop, int signo, void *opaque) {
        drive_t *d = opaque;

        d->interrupted = true;
        drive_stop(d);
}

static void assign_timeout_cb(void *opaque) {
        drive_t *d = opaque;
        af_loop_stop(d->cli->loop);
}

/* Parse the command line into d->o. @returns -1 to go on, else the exit code. */
static int parse_args(drive_t *d, int argc, char **argv) {
        static const struct option opts[] = {
                {"tasks", required_argument, NULL, 'n'},
                {"type", required_argument, NULL, 't'},
                {"payloads", required_argument, NULL, 'p'},
                {"api-share", required_argument, NULL, 'a'},
                {"rate", required_argument, NULL, 'r'},
                {"concurrency", required_argument, NULL, 'c'},
                {"timeout", required_argument, NULL, 'T'},
                {"linger", required_argument, NULL, 'l'},
                {"simagent", required_argument, NULL, 's'},
                {"key-id", required_argument, NULL, 'k'},
                {"unique-field", required_argument, NULL, 'u'},
                {"progress", no_argument, NULL, 'P'},
                {"max-kafka-outstanding", required_argument, NULL, 'm'},
                {"direct", required_argument, NULL, 'D'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        double v;
        int c;

        d->o.api_share = 0.5;
        d->o.concurrency = 64;
        d->o.timeout_ms = 300000;
        d->o.key_id = "intake-svc";
        d->o.unique_field = "claim_id";
        d->o.max_kafka_outstanding = 100000;
        optind = 0;
        while ((c = getopt_long(argc, argv, "n:t:p:a:r:c:T:l:s:k:u:Pm:D:h", opts, NULL)) != -1) {
                switch (c) {
                case 'n':
                        if ((v = parse_number("--tasks", optarg, 1, DRIVE_MAX_TASKS)) < 0)
                                return AF_CLI_EXIT_USAGE;
                        d->o.tasks = (int64_t) v;
                        break;
                case 't':
                        d->o.type = optarg;
                        break;
                case 'p':
                        d->o.payloads_path = optarg;
                        break;
                case 'a':
                        if ((v = parse_number("--api-share", optarg, 0, 1)) < 0)
                                return AF_CLI_EXIT_USAGE;
                        d->o.api_share = v;
                        break;
                case 'r':
                        if ((v = parse_number("--rate", optarg, 0, 1e7)) < 0)
                                return AF_CLI_EXIT_USAGE;
                        d->o.rate = v;
                        break;
                case 'c':
                        if ((v = parse_number("--concurrency", optarg, 1, 100000)) < 0)
                                return AF_CLI_EXIT_USAGE;
                        d->o.concurrency = (int) v;
                        break;
                case 'm':
                        if ((v = parse_number("--max-kafka-outstanding", optarg, 1, 1e7)) < 0)
                                return AF_CLI_EXIT_USAGE;
                        d->o.max_kafka_outstanding = (int64_t) v;
                        break;
                case 'T':
                case 'l': {
                        int64_t ms = af_cli_parse_duration_ms(optarg);
                        if (ms < 0 || (c == 'T' && ms == 0)) {
                                fprintf(stderr,
                                        "agentfleet drive: --%s: expected a duration "
                                        "like 120s, got \"%s\"\n",
                                        c == 'T' ? "timeout" : "linger", optarg);
                                return AF_CLI_EXIT_USAGE;
                        }
                        if (c == 'T')
                                d->o.timeout_ms = ms;
                        else
                                d->o.linger_ms = ms;
                        break;
                }
                case 's':
                        d->o.simagent_url = optarg;
                        break;
                case 'k':
                        d->o.key_id = optarg;
                        break;
                case 'u':
                        d->o.unique_field = optarg;
                        break;
                case 'P':
                        d->o.progress = true;
                        break;
                case 'D':
                        d->o.direct_lane = optarg;
                        d->o.api_share = 0;
                        break;
                case 'h':
                        printf("%s", drive_usage_text);
                        return AF_CLI_EXIT_OK;
                default:
                        fprintf(stderr, "%s", drive_usage_text);
                        return AF_CLI_EXIT_USAGE;
                }
        }
        if (optind != argc || !d->o.tasks || !d->o.type || !*d->o.type) {
                fprintf(stderr, "agentfleet drive: %s\n%s",
                        optind != argc ? "unexpected argument" : "--tasks and --type are required",
                        drive_usage_text);
                return AF_CLI_EXIT_USAGE;
        }
        return -1;
}

/* Decide each task's path (the share spread evenly over the run) and allocate the state.
 * @returns 0 or -1 on OOM. */
static int plan_tasks(drive_t *d) {
        int64_t n = d->o.tasks;

        d->tasks = calloc((size_t) n, sizeof(*d->tasks));
        d->api_order = calloc((size_t) n, sizeof(*d->api_order));
        d->kafka_order = calloc((size_t) n, sizeof(*d->kafka_order));
        d->retry_q = calloc((size_t) n, sizeof(*d->retry_q));
        d->by_id = json_object();
        if (!d->tasks || !d->api_order || !d->kafka_order || !d->retry_q || !d->by_id)
                return -1;
        for (int64_t i = 0; i < n; i++) {
                /* Task i goes over the API when the running share crosses an integer. */
                bool api = (int64_t) ((double) (i + 1) * d->o.api_share) >
                           (int64_t) ((double) i * d->o.api_share);
                d->tasks[i].via_kafka = !api;
                if (api)
                        d->api_order[d->api_cnt++] = i;
                else
                        d->kafka_order[d->kafka_cnt++] = i;
        }
        return 0;
}

/* Credentials for both paths. @returns -1 to go on, else the exit code. */
static int resolve_auth(drive_t *d) {
        d->has_auth = af_cli_auth_header(d->cli, d->auth_header, sizeof(d->auth_header));
        if (d->api_cnt && !d->has_auth)
                af_warn("drive: no token (--token, AGENTFLEET_TOKEN or cli.token): API "
                        "submissions are sent without one");
        if (!d->kafka_cnt)
                return -1;
        d->secret = d->o.key_id && *d->o.key_id ? getenv("AGENTFLEET_INTAKE_KEY") : NULL;
        if (d->secret && !*d->secret)
                d->secret = NULL;
        if (d->secret)
                af_log_redact_add(d->secret);
        if (!d->secret && !d->cli->token) {
                fprintf(stderr, "agentfleet drive: Kafka submissions need a service key secret "
                                "in $AGENTFLEET_INTAKE_KEY (key id --key-id) or a token\n");
                return AF_CLI_EXIT_AUTH;
        }
        return -1;
}

/* Wait (serving the loop) until the results consumer has its partitions.
 * @returns whether it has them. */
static bool wait_assigned(drive_t *d) {
        af_timer_t *t = af_timer_new(d->cli->loop, assign_timeout_cb, d);

        if (!t)
                return false;
        af_timer_start(t, DRIVE_ASSIGN_TIMEOUT_MS, false);
        while (!d->assigned && !d->interrupted && af_timer_pending(t))
                if (af_loop_run(d->cli->loop) < 0)
                        break;
        af_timer_destroy(t);
        return d->assigned;
}

/* Fetch the requests topic's metadata on the producer before the clock starts: a producer's
 * first message to a topic otherwise waits for that lookup (measured: ~1s on our broker),
 * which would show up as latency of the run's first Kafka tasks. Also tells a missing topic
 * apart early. Blocking, before the run. @returns AF_OK or an error with errstr. */
static af_err_t warm_producer(drive_t *d, char *errstr, size_t errstr_size) {
        rd_kafka_t *rk = af_producer_rk(d->producer);
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, d->requests_topic, NULL);
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t kerr;
        af_err_t err = AF_OK;

        if (!rkt)
                return af_errstr(AF_ERR_INTERNAL, errstr, errstr_size, "topic handle for %s",
                                 d->requests_topic);
        kerr = rd_kafka_metadata(rk, 0 /*this topic*/, rkt, &md, 10000);
        if (kerr)
                err = af_errstr(AF_ERR_UNAVAILABLE, errstr, errstr_size, "metadata of %s: %s",
                                d->requests_topic, rd_kafka_err2str(kerr));
        else if (md->topic_cnt != 1 || md->topics[0].err)
                err = af_errstr(AF_ERR_NOT_FOUND, errstr, errstr_size,
                                "topic %s does not exist (is topic.prefix right?)",
                                d->requests_topic);
        if (md)
                rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
        return err;
}

static void drive_free(drive_t *d) {
        af_timer_destroy(d->pump_timer);
        af_timer_destroy(d->progress_timer);
        af_timer_destroy(d->deadline_timer);
        if (d->consumer) {
                af_consumer_close(d->consumer);
                af_consumer_destroy(d->consumer);
        }
        /* In-flight API requests end with AF_ERR_CANCELLED; they must still find d. */
        af_http_client_destroy(d->cli->hc);
        d->cli->hc = NULL;
        af_producer_destroy(d->producer);
        drive_free_payloads(d);
        json_decref(d->payloads);
        json_decref(d->by_id);
        free(d->tasks);
        free(d->api_order);
        free(d->kafka_order);
        free(d->retry_q);
}

int af_cli_cmd_drive(af_cli_t *cli, int argc, char **argv) {
        drive_t d = {.cli = cli};
        char errstr[512], group_id[128];
        int64_t dup_after = 0;
        bool side_known = false;
        const char *side_note = "no --simagent given";
        char side_err[600] = "";
        int rc;

        if ((rc = parse_args(&d, argc, argv)) >= 0)
                goto out;
        rc = AF_CLI_EXIT_USAGE;
        if (load_payloads(&d) < 0)
                goto out;
        if (drive_prepare_payloads(&d) < 0) {
                fprintf(stderr, "agentfleet drive: cannot prepare the payload samples "
                                "(out of memory)\n");
                goto out;
        }
        rc = AF_CLI_EXIT_SERVER;
        af_ulid_new(d.run_id);
        /* The ULID's random tail: short, and unique enough to tell runs apart. */
        memcpy(d.run_tag, d.run_id + AF_ULID_LEN - 8, 9); /* 8 chars and the NUL */
        if (plan_tasks(&d) < 0) {
                fprintf(stderr, "agentfleet drive: out of memory\n");
                goto out;
        }
        if ((rc = resolve_auth(&d)) >= 0)
                goto out;
        rc = AF_CLI_EXIT_SERVER;
        if (d.o.direct_lane) {
                char suffix[128];
                snprintf(suffix, sizeof(suffix), "tasks.%s", d.o.direct_lane);
                af_kafka_topic(cli->conf, suffix, d.requests_topic, sizeof(d.requests_topic));
        } else {
                af_kafka_topic(cli->conf, "requests", d.requests_topic, sizeof(d.requests_topic));
        }
        af_kafka_topic(cli->conf, "results", d.results_topic, sizeof(d.results_topic));

        if (!af_cli_http(cli, errstr, sizeof(errstr))) {
                fprintf(stderr, "agentfleet drive: HTTP client: %s\n", errstr);
                goto out;
        }
        if (d.o.simagent_url) {
                if (drive_simagent_duplicates(&d, &d.duplicates_before, NULL, errstr,
                                              sizeof(errstr)) != AF_OK) {
                        fprintf(stderr, "agentfleet drive: simagent: %s\n", errstr);
                        goto out;
                }
                d.have_stats_before = true;
        }
        if (d.kafka_cnt) {
                d.producer = af_producer_new(cli->loop, cli->conf, errstr, sizeof(errstr));
                if (!d.producer) {
                        fprintf(stderr, "agentfleet drive: %s\n", errstr);
                        rc = af_cli_exit_for_kafka_setup(errstr);
                        goto out;
                }
                if (warm_producer(&d, errstr, sizeof(errstr)) != AF_OK) {
                        fprintf(stderr, "agentfleet drive: Kafka producer: %s\n", errstr);
                        goto out;
                }
        }
        snprintf(group_id, sizeof(group_id), "agentfleet-drive-%s", d.run_id);
        if (drive_results_start_at_end(&d, group_id, errstr, sizeof(errstr)) != AF_OK ||
            drive_results_subscribe(&d, group_id, errstr, sizeof(errstr)) != AF_OK) {
                fprintf(stderr, "agentfleet drive: results: %s\n", errstr);
                goto out;
        }
        af_loop_on_signal(cli->loop, SIGINT, signal_cb, &d);
        af_loop_on_signal(cli->loop, SIGTERM, signal_cb, &d);
        if (!wait_assigned(&d)) {
                fprintf(stderr, "agentfleet drive: no partitions of %s assigned within %ds\n",
                        d.results_topic, DRIVE_ASSIGN_TIMEOUT_MS / 1000);
                goto out;
        }

        d.deadline_timer = af_timer_new(cli->loop, deadline_cb, &d);
        if (!d.deadline_timer)
                goto out;
        af_timer_start(d.deadline_timer, d.o.timeout_ms, false);
        if (d.o.progress || isatty(STDERR_FILENO)) {
                d.progress_timer = af_timer_new(cli->loop, progress_cb, &d);
                if (d.progress_timer)
                        af_timer_start(d.progress_timer, 250, true);
        }
        af_info("drive: run %s: %lld tasks of %s, %lld over the API, %lld to %s", d.run_id,
                (long long) d.o.tasks, d.o.type, (long long) d.api_cnt, (long long) d.kafka_cnt,
                d.requests_topic);

        drive_pump(&d);
        while (!d.stopping)
                if (af_loop_run(cli->loop) < 0)
                        break;
        /* af_timer_stop() does not take NULL: the progress and pump timers are optional. */
        if (d.progress_timer)
                af_timer_stop(d.progress_timer);
        if (d.pump_timer)
                af_timer_stop(d.pump_timer);
        af_timer_stop(d.deadline_timer);
        if (d.progress_shown)
                drive_progress(&d, true);

        if (d.have_stats_before) {
                if (drive_simagent_duplicates(&d, &dup_after, NULL, errstr, sizeof(errstr)) ==
                    AF_OK) {
                        side_known = true;
                } else {
                        snprintf(side_err, sizeof(side_err), "simagent: %s", errstr);
                        side_note = side_err;
                }
        }
        rc = drive_report(&d, dup_after - d.duplicates_before, side_known, side_note);
        if (d.interrupted && rc == AF_CLI_EXIT_OK)
                rc = AF_CLI_EXIT_TASK;
out:
        drive_free(&d);
        return rc;
}
