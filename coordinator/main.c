/*
 * agentfleet-coordinator: admits tasks (HTTP API and the `requests` topic), publishes them to
 * `tasks.<lane>`, and keeps the task status index that the API serves.
 *
 * This file is the wiring: options, configuration and catalog, the one loop, the Kafka
 * producer, Redis, audit, metrics, the HTTP server, the intake and index consumers, and the
 * signals (SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the catalog).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "coord.h"
#include "log.h"

#ifndef AF_VERSION_STRING
#define AF_VERSION_STRING "0.1.0"
#endif

#define DRAIN_POLL_MS 50

static void usage(FILE *out) {
        fprintf(out,
                "Usage: agentfleet-coordinator --config FILE [--set name=value]...\n"
                "       agentfleet-coordinator --print-routes | --help | --version\n"
                "\n"
                "Admits tasks over HTTP and from the requests topic, publishes them to the task\n"
                "topics and serves their status.\n"
                "\n"
                "Options:\n"
                "  -c, --config FILE     YAML settings and catalog (task types, tokens, ...)\n"
                "  -s, --set NAME=VALUE  override one setting (repeatable)\n"
                "      --print-routes    print the HTTP routes (METHOD PATTERN) and exit\n"
                "  -h, --help            this text and the coordinator's settings\n"
                "  -V, --version         print the version\n"
                "\n"
                "SIGTERM/SIGINT drain, then exit 0; SIGHUP reloads the catalog. Exit 2: it did\n"
                "not start (bad option, setting or catalog, port in use: the message says\n"
                "which); 1: it failed while running.\n"
                "\n");
        af_config_print_help(out, AF_SCOPE_COORDINATOR);
}

/* ---- signals and drain -------------------------------------------------------------------- */

static void drain_tick(void *opaque) {
        af_coord_t *co = opaque;
        int intake = af_intake_inflight(co->intake);
        bool late = af_clock_mono_ms() >= co->drain_deadline_ms;
        if ((co->inflight > 0 || intake > 0) && !late)
                return;
        if (late)
                af_warn("drain deadline passed with %d admissions in flight", co->inflight);
        /* Every finished request has stored its offset: commit and leave the group. */
        af_intake_close(co->intake);
        af_timer_stop(co->drain_timer);
        af_loop_stop(co->loop);
}

static void on_term(af_loop_t *loop, int signo, void *opaque) {
        af_coord_t *co = opaque;
        if (co->draining)
                return;
        af_info("signal %d: draining (%d admissions in flight)", signo, co->inflight);
        co->draining = true;
        co->drain_deadline_ms =
                af_clock_mono_ms() + af_config_int(co->conf, "coordinator.drain_timeout");
        af_intake_stop_fetching(co->intake);
        af_timer_start(co->drain_timer, DRAIN_POLL_MS, true);
}

static void on_hup(af_loop_t *loop, int signo, void *opaque) {
        af_coord_t *co = opaque;
        char errstr[512];
        af_catalog_t *cat = af_catalog_load(co->config_path, errstr, sizeof(errstr));
        if (!cat) {
                af_error("catalog reload failed, keeping the current one: %s", errstr);
                return;
        }
        /* Admissions copy what they need from the catalog at validation, so the old one can
         * go at once. */
        af_info("catalog reloaded: %s -> %s", co->cat->hash, cat->hash);
        af_catalog_destroy(co->cat);
        co->cat = cat;
}

static void on_redis_state(af_redis_t *r, bool up, void *opaque) {
        af_coord_t *co = opaque;
        af_info("redis %s", up ? "up" : "down");
        af_index_redis_state(co->index, up);
}

/* ---- setup -------------------------------------------------------------------------------- */

static void kafka_has_reset(const char *key, const char *value, void *opaque) {
        if (!strcmp(key, "auto.offset.reset"))
                *(bool *) opaque = true;
}

static void register_metrics(af_coord_t *co) {
        static const char *const l_route[] = {"route", "status", NULL};
        static const char *const l_adm[] = {"type", "outcome", NULL};
        static const char *const l_origin[] = {"origin", NULL};
        static const char *const l_code[] = {"code", NULL};
        static const char *const l_outcome[] = {"outcome", NULL};
        static const char *const l_reason[] = {"reason", NULL};
        af_metrics_t *m = co->metrics;

        co->m.http_requests = af_metrics_counter(m, "agentfleet_coordinator_http_requests_total",
                                                 "HTTP requests by route and status", l_route);
        co->m.admissions = af_metrics_counter(m, "agentfleet_coordinator_admissions_total",
                                              "Admissions by task type and outcome", l_adm);
        co->m.admit_seconds = af_metrics_histogram(
                m, "agentfleet_coordinator_admission_seconds",
                "Time from request to Kafka acknowledgement of the admitted task", l_origin,
                af_metrics_latency_buckets, af_metrics_latency_bucket_cnt);
        co->m.intake_dlq =
                af_metrics_counter(m, "agentfleet_coordinator_intake_dlq_total",
                                   "Requests from Kafka sent to the dead-letter topic", l_code);
        co->m.index_results =
                af_metrics_counter(m, "agentfleet_coordinator_index_results_total",
                                   "Task results seen by the status index", l_outcome);
        co->m.inflight = af_metrics_gauge(m, "agentfleet_coordinator_admissions_in_flight",
                                          "Admissions not yet answered", NULL);
        co->m.republished = af_metrics_counter(
                m, "agentfleet_coordinator_republished_total",
                "Tasks published again because the admission that reserved their idempotency "
                "key died before publishing them",
                l_reason);
}

static int setup(af_coord_t *co, char *errstr, size_t errstr_size) {
        bool has_reset = false;
        char path[300];

        af_config_kafka_foreach(co->conf, kafka_has_reset, &has_reset);
        /* The intake must not skip requests produced before its group first existed, and the
         * index replays `results` from the start: both begin at the earliest offset. */
        if (!has_reset &&
            af_config_set(co->conf, "kafka.auto.offset.reset", "earliest", errstr, errstr_size))
                return -1;
        af_kafka_topic(co->conf, "results", co->topic_results, sizeof(co->topic_results));
        af_kafka_topic(co->conf, "dlq", co->topic_dlq, sizeof(co->topic_dlq));
        af_kafka_topic(co->conf, "requests", co->topic_requests, sizeof(co->topic_requests));
        if (af_config_check_relations(co->conf, errstr, errstr_size))
                return -1;
        co->max_payload = af_config_int(co->conf, "coordinator.max_payload");
        co->max_inflight = af_config_int(co->conf, "coordinator.max_inflight");
        co->takeover_grace_ms = af_admit_takeover_grace(co->conf);

        if (!(co->loop = af_loop_new(errstr, errstr_size)))
                return -1;
        if (!(co->metrics = af_metrics_new()))
                return -1;
        register_metrics(co);
        if (!(co->producer = af_producer_new(co->loop, co->conf, errstr, errstr_size)))
                return -1;
        if (!(co->audit = af_audit_new(co->producer, co->conf, "coordinator", errstr, errstr_size)))
                return -1;

        af_redis_opts_t ropts = {
                .host = af_config_str(co->conf, "redis.host"),
                .port = (int) af_config_int(co->conf, "redis.port"),
                .password = af_config_str(co->conf, "redis.password"),
                .command_timeout_ms = af_config_int(co->conf, "redis.command_timeout"),
                .reconnect_min_ms = af_config_int(co->conf, "redis.reconnect_min"),
                .reconnect_max_ms = af_config_int(co->conf, "redis.reconnect_max"),
        };
        if (ropts.password && !*ropts.password)
                ropts.password = NULL;
        if (!(co->redis = af_redis_new(co->loop, &ropts, errstr, errstr_size)))
                return -1;
        if (!(co->index = af_index_new(co, errstr, errstr_size)))
                return -1;
        af_redis_set_state_cb(co->redis, on_redis_state, co);
        if (!(co->intake = af_intake_new(co, errstr, errstr_size)))
                return -1;

        af_http_server_opts_t hopts = {
                .address = af_config_str(co->conf, "http.address"),
                .port = (int) af_config_int(co->conf, "http.port"),
                .max_body_bytes = (size_t) af_config_int(co->conf, "http.max_body"),
                .max_header_bytes = 16 * 1024,
                .timeout_ms = af_config_int(co->conf, "http.timeout"),
        };
        if (!(co->http = af_http_server_new(co->loop, &hopts, errstr, errstr_size)))
                return -1;
        af_http_server_set_auth(co->http, af_auth_http, co);
        if (af_api_register(co, errstr, errstr_size))
                return -1;

        if (!(co->drain_timer = af_timer_new(co->loop, drain_tick, co)))
                return -1;
        af_loop_on_signal(co->loop, SIGTERM, on_term, co);
        af_loop_on_signal(co->loop, SIGINT, on_term, co);
        af_loop_on_signal(co->loop, SIGHUP, on_hup, co);

        snprintf(path, sizeof(path), "%s", co->config_path);
        af_info("coordinator listening on %s:%d, config %s (catalog %.12s), topics %s*, "
                "takeover grace %lld ms",
                hopts.address, af_http_server_port(co->http), path, co->cat->hash,
                af_config_str(co->conf, "topic.prefix"), (long long) co->takeover_grace_ms);
        return 0;
}

/* Tear down in an order where nothing calls into what is already gone. Every delivery report
 * carries an opaque that points into the stages (an admission, an intake request, an HTTP
 * request's context), so the producer goes first, while all of them are alive: the flush
 * delivers what it can, and af_producer_destroy purges the rest and serves every remaining
 * report before it returns. From then on (closing) a callback starts no new work: Redis's
 * pending callbacks get AF_ERR_CANCELLED as it is destroyed, and the admissions they finish
 * answer HTTP requests (the server is still there) and intake requests (the intake too, which
 * then drops those that would retry). Only then go the server, the consumers and the rest. */
static void teardown(af_coord_t *co) {
        af_api_shutdown(co);              /* the /readyz probe thread uses the producer's handle */
        af_http_server_closing(co->http); /* the answers below are written before it goes */
        if (co->producer)
                af_producer_flush(co->producer, 5000);
        co->closing = true;
        af_producer_destroy(co->producer);
        co->producer = NULL;
        af_audit_destroy(co->audit); /* it produces through the producer */
        co->audit = NULL;
        af_redis_destroy(co->redis);
        co->redis = NULL;
        af_http_server_destroy(co->http);
        co->http = NULL;
        af_intake_destroy(co->intake);
        co->intake = NULL;
        af_index_destroy(co->index);
        co->index = NULL;
        af_timer_destroy(co->drain_timer);
        af_metrics_destroy(co->metrics);
        if (co->loop)
                af_loop_destroy(co->loop);
        af_catalog_destroy(co->cat);
        af_config_destroy(co->conf);
        free(co->config_path);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"config", required_argument, NULL, 'c'}, {"set", required_argument, NULL, 's'},
                {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
                {"print-routes", no_argument, NULL, 'R'}, {NULL, 0, NULL, 0},
        };
        af_coord_t co;
        char errstr[1024] = "";
        const char **sets = NULL;
        size_t set_cnt = 0;
        const char *config = NULL;
        int rc = 1, c, level;

        memset(&co, 0, sizeof(co));
        signal(SIGPIPE, SIG_IGN);
        sets = calloc((size_t) argc, sizeof(*sets));
        if (!sets)
                return 1;
        while ((c = getopt_long(argc, argv, "c:s:hV", opts, NULL)) != -1) {
                switch (c) {
                case 'c':
                        config = optarg;
                        break;
                case 's':
                        sets[set_cnt++] = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        rc = 0;
                        goto out;
                case 'V':
                        printf("agentfleet-coordinator %s\n", AF_VERSION_STRING);
                        rc = 0;
                        goto out;
                case 'R':
                        af_api_print_routes(stdout);
                        rc = 0;
                        goto out;
                default:
                        usage(stderr);
                        rc = 2;
                        goto out;
                }
        }
        if (optind < argc || !config) {
                fprintf(stderr, "agentfleet-coordinator: %s\n",
                        config ? "unexpected argument" : "--config FILE is required");
                rc = 2;
                goto out;
        }
        if (!(co.conf = af_config_new()) || !(co.config_path = strdup(config))) {
                fprintf(stderr, "agentfleet-coordinator: out of memory\n");
                goto out;
        }
        rc = 2; /* until the loop runs, a failure means it did not start (see usage) */
        if (af_config_load(co.conf, config, errstr, sizeof(errstr)))
                goto fail;
        for (size_t i = 0; i < set_cnt; i++)
                if (af_config_set_arg(co.conf, sets[i], errstr, sizeof(errstr)))
                        goto fail;
        level = af_log_level_parse(af_config_str(co.conf, "log.level"));
        af_log_init("coordinator", level < 0 ? AF_LOG_INFO : (af_log_level_t) level);
        if (!(co.cat = af_catalog_load(config, errstr, sizeof(errstr))))
                goto fail;
        if (setup(&co, errstr, sizeof(errstr)))
                goto fail;
        if (af_loop_run(co.loop)) {
                snprintf(errstr, sizeof(errstr), "event loop failed");
                rc = 1;
                goto fail;
        }
        af_info("coordinator stopped");
        rc = 0;
        goto out;
fail:
        fprintf(stderr, "agentfleet-coordinator: %s\n", errstr);
out:
        teardown(&co);
        free(sets);
        return rc;
}
