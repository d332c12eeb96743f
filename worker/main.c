/*
 * agentfleet-worker: a stateless worker of the fleet. It joins the worker consumer group on
 * tasks.<lane> for each of worker.lanes and, for every task, takes a lease in Redis, runs the
 * task type's handler (an agent or an integration), and emits the TaskResult and AuditEvents
 * to Kafka; an offset is committed only when every earlier offset of its partition is done.
 * Start more processes to scale; each one runs up to worker.concurrency tasks at once on one
 * event loop that drives Kafka, Redis and curl.
 *
 * This file is the wiring: options, config and catalog, the loop, signals (SIGTERM/SIGINT
 * drain, SIGHUP reloads the catalog), and an orderly teardown.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "worker.h"

#define WORKER_VERSION "0.1.0"

/* ---- catalog references ------------------------------------------------------------------ */

af_wcat_t *af_worker_catalog_ref(af_worker_t *w) {
        w->wcat->refs++;
        return w->wcat;
}

void af_worker_catalog_unref(af_wcat_t *wc) {
        if (!wc || --wc->refs > 0)
                return;
        af_catalog_destroy(wc->cat);
        free(wc->ints);
        free(wc);
}

static af_wcat_t *worker_catalog_load(const char *path, char *errstr, size_t errstr_size) {
        af_wcat_t *wc = NULL;
        af_catalog_t *cat = af_catalog_load(path, errstr, errstr_size);

        if (!cat)
                goto out;
        wc = calloc(1, sizeof(*wc));
        if (wc)
                wc->ints = calloc(cat->integration_cnt + 1, sizeof(*wc->ints));
        if (!wc || !wc->ints) {
                free(wc);
                wc = NULL;
                af_catalog_destroy(cat);
                af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                goto out;
        }
        wc->cat = cat;
        wc->refs = 1;
        for (size_t i = 0; i < cat->integration_cnt; i++)
                af_integration_prepare(&cat->integrations[i], &wc->ints[i]);
out:
        return wc;
}

/* ---- signals ----------------------------------------------------------------------------- */

static void worker_on_term(af_loop_t *loop, int signo, void *opaque) {
        af_drain_start(opaque);
}

static void worker_on_hup(af_loop_t *loop, int signo, void *opaque) {
        af_worker_t *w = opaque;
        char errstr[512];
        af_wcat_t *wc = worker_catalog_load(w->config_path, errstr, sizeof(errstr));

        if (!wc) {
                af_error("SIGHUP: catalog not reloaded, keeping %.12s: %s", w->wcat->cat->hash,
                         errstr);
                return;
        }
        af_info("SIGHUP: catalog %.12s replaces %.12s (running tasks finish under the old)",
                wc->cat->hash, w->wcat->cat->hash);
        af_worker_catalog_unref(w->wcat);
        w->wcat = wc;
        af_emit_lifecycle(w, AGENTFLEET__V1__LIFECYCLE_KIND__LIFECYCLE_KIND_CONFIG_RELOADED, NULL,
                          NULL, wc->cat->hash);
}

/* ---- options ------------------------------------------------------------------------------ */

static void worker_usage(FILE *out) {
        fprintf(out,
                "usage: agentfleet-worker --config FILE [--set name=value]... "
                "[--concurrency N]\n"
                "\n"
                "Consumes tasks.<lane> for each of worker.lanes, runs each task under a Redis\n"
                "lease and emits its result and audit events to Kafka.\n"
                "\n"
                "  --config FILE       YAML settings and catalog (task types, agents, ...)\n"
                "  --set name=value    override a setting (repeatable), e.g. --set "
                "redis.port=6380\n"
                "  --concurrency N     tasks in flight at once (worker.concurrency)\n"
                "  --help, --version\n"
                "\n"
                "SIGTERM/SIGINT drain (finish or hand back in-flight tasks, commit, leave the\n"
                "group), then exit 0; SIGHUP reloads the catalog. Exit 2: it did not start (bad\n"
                "option, setting or catalog: the message says which); 1: it failed while\n"
                "running.\n\n");
        af_config_print_help(out, AF_SCOPE_WORKER);
}

/* Parse argv into conf. @returns 0 to run, 1 when done (help/version), -1 on error. */
static int worker_options(int argc, char **argv, af_config_t *conf, char **config_path) {
        static const struct option opts[] = {
                {"config", required_argument, NULL, 'c'},
                {"set", required_argument, NULL, 's'},
                {"concurrency", required_argument, NULL, 'n'},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, 'V'},
                {NULL, 0, NULL, 0},
        };
        char errstr[512];
        char **sets = calloc((size_t) argc + 1, sizeof(*sets));
        size_t nsets = 0;
        const char *concurrency = NULL;
        int rc = 0, c;

        if (!sets)
                return -1;
        while ((c = getopt_long(argc, argv, "c:s:n:hV", opts, NULL)) != -1) {
                switch (c) {
                case 'c':
                        free(*config_path);
                        *config_path = strdup(optarg);
                        break;
                case 's':
                        sets[nsets++] = optarg;
                        break;
                case 'n':
                        concurrency = optarg;
                        break;
                case 'h':
                        worker_usage(stdout);
                        rc = 1;
                        goto out;
                case 'V':
                        printf("agentfleet-worker %s\n", WORKER_VERSION);
                        rc = 1;
                        goto out;
                default:
                        worker_usage(stderr);
                        rc = -1;
                        goto out;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "agentfleet-worker: unexpected argument \"%s\"\n", argv[optind]);
                rc = -1;
                goto out;
        }
        if (!*config_path) {
                fprintf(stderr, "agentfleet-worker: --config FILE is required (the catalog of "
                                "task types lives there)\n");
                rc = -1;
                goto out;
        }
        /* File and environment first, then the command line on top. */
        if (af_config_load(conf, *config_path, errstr, sizeof(errstr)) != AF_OK) {
                fprintf(stderr, "agentfleet-worker: %s\n", errstr);
                rc = -1;
                goto out;
        }
        for (size_t i = 0; i < nsets; i++) {
                if (af_config_set_arg(conf, sets[i], errstr, sizeof(errstr)) != AF_OK) {
                        fprintf(stderr, "agentfleet-worker: %s\n", errstr);
                        rc = -1;
                        goto out;
                }
        }
        if (concurrency &&
            af_config_set(conf, "worker.concurrency", concurrency, errstr, sizeof(errstr))) {
                fprintf(stderr, "agentfleet-worker: --concurrency: %s\n", errstr);
                rc = -1;
                goto out;
        }
out:
        free(sets);
        return rc;
}

/* ---- set-up ------------------------------------------------------------------------------- */

static int worker_topics(af_worker_t *w) {
        const char *lanes = af_config_str(w->conf, "worker.lanes");
        char *copy = strdup(lanes ? lanes : "default");
        char *save = NULL, *lane;

        if (!copy)
                return -1;
        w->topics = calloc(strlen(copy) + 1, sizeof(*w->topics));
        for (lane = strtok_r(copy, ", ", &save); w->topics && lane;
             lane = strtok_r(NULL, ", ", &save)) {
                char suffix[200];
                char name[256];
                snprintf(suffix, sizeof(suffix), "tasks.%s", lane);
                af_kafka_topic(w->conf, suffix, name, sizeof(name));
                w->topics[w->topic_cnt] = strdup(name);
                if (w->topics[w->topic_cnt])
                        w->topic_cnt++;
        }
        free(copy);
        return w->topic_cnt ? 0 : -1;
}

static int worker_setup(af_worker_t *w, char *errstr, size_t errstr_size) {
        const char *id = af_config_str(w->conf, "worker.id");
        const char *pw = af_config_str(w->conf, "redis.password");
        const char *group = af_config_str(w->conf, "worker.group_id");
        af_redis_opts_t ro;
        af_http_client_opts_t ho;

        if (id && *id) {
                snprintf(w->id, sizeof(w->id), "%s", id);
        } else {
                char host[64] = "localhost";
                gethostname(host, sizeof(host) - 1);
                snprintf(w->id, sizeof(w->id), "%s-%d", host, (int) getpid());
        }
        snprintf(w->actor, sizeof(w->actor), "worker:%s", w->id);
        w->concurrency = af_config_int(w->conf, "worker.concurrency");
        w->lease_ttl_ms = af_config_int(w->conf, "worker.lease_ttl");
        w->lease_renew_ms = af_config_int(w->conf, "worker.lease_renew");
        w->running_after_ms = af_config_int(w->conf, "worker.running_after");
        w->done_ttl_ms = af_config_int(w->conf, "worker.done_ttl");
        w->drain_timeout_ms = af_config_int(w->conf, "worker.drain_timeout");
        w->http_timeout_ms = af_config_int(w->conf, "worker.http_timeout");
        w->max_response = af_config_int(w->conf, "worker.max_response");
        if (w->lease_renew_ms >= w->lease_ttl_ms) {
                af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                          "worker.lease_renew (%lld ms) must be shorter than worker.lease_ttl "
                          "(%lld ms), or leases expire while tasks run",
                          (long long) w->lease_renew_ms, (long long) w->lease_ttl_ms);
                return -1;
        }
        if (af_config_check_relations(w->conf, errstr, errstr_size))
                return -1;
        af_kafka_topic(w->conf, "results", w->results_topic, sizeof(w->results_topic));
        af_kafka_topic(w->conf, "events", w->events_topic, sizeof(w->events_topic));
        af_kafka_topic(w->conf, "dlq", w->dlq_topic, sizeof(w->dlq_topic));
        if (worker_topics(w)) {
                af_errstr(AF_ERR_CONFIG, errstr, errstr_size, "worker.lanes: no lane given");
                return -1;
        }
        w->wcat = worker_catalog_load(w->config_path, errstr, errstr_size);
        if (!w->wcat)
                return -1;
        w->wm = af_watermark_new();
        if (!(w->loop = af_loop_new(errstr, errstr_size)) || !w->wm)
                return -1;
        if (!(w->producer = af_producer_new(w->loop, w->conf, errstr, errstr_size)))
                return -1;
        if (!(w->audit = af_audit_new(w->producer, w->conf, w->actor, errstr, errstr_size)))
                return -1;
        memset(&ro, 0, sizeof(ro));
        ro.host = af_config_str(w->conf, "redis.host");
        ro.port = (int) af_config_int(w->conf, "redis.port");
        ro.password = pw && *pw ? pw : NULL;
        ro.command_timeout_ms = af_config_int(w->conf, "redis.command_timeout");
        ro.reconnect_min_ms = af_config_int(w->conf, "redis.reconnect_min");
        ro.reconnect_max_ms = af_config_int(w->conf, "redis.reconnect_max");
        if (!(w->redis = af_redis_new(w->loop, &ro, errstr, errstr_size)))
                return -1;
        memset(&ho, 0, sizeof(ho));
        ho.default_timeout_ms = w->http_timeout_ms;
        ho.default_max_response_bytes = (size_t) w->max_response;
        if (!(w->http = af_http_client_new(w->loop, &ho, errstr, errstr_size)))
                return -1;
        if (!(w->consumer = af_consumer_new(
                      w->loop, w->conf, group, (const char *const *) w->topics, w->topic_cnt,
                      af_consume_on_message, af_consume_on_rebalance, w, errstr, errstr_size)))
                return -1;
        if (af_observe_start(w, errstr, errstr_size))
                return -1;
        if (af_loop_on_signal(w->loop, SIGTERM, worker_on_term, w) ||
            af_loop_on_signal(w->loop, SIGINT, worker_on_term, w) ||
            af_loop_on_signal(w->loop, SIGHUP, worker_on_hup, w)) {
                af_errstr(AF_ERR_INTERNAL, errstr, errstr_size, "cannot install signal handlers");
                return -1;
        }
        return 0;
}

/* Tear down in the order that keeps callbacks safe: the consumer (no new tasks), the HTTP
 * client and Redis (their cancelled callbacks see w->stopped and do nothing), then the
 * producer (its last delivery reports retire tasks), then what is left. */
static void worker_teardown(af_worker_t *w) {
        af_wtask_t *t;

        w->stopped = true;
        af_consumer_destroy(w->consumer);
        w->consumer = NULL;
        af_http_client_destroy(w->http);
        w->http = NULL;
        af_redis_destroy(w->redis);
        w->redis = NULL;
        af_producer_destroy(w->producer);
        w->producer = NULL;
        af_emit_dead_letters_free(w);
        while ((t = TAILQ_FIRST(&w->tasks))) {
                t->pending_acks = 0;
                af_wtask_retire(t, false);
        }
        af_observe_stop();
        af_audit_destroy(w->audit);
        af_watermark_destroy(w->wm);
        af_timer_destroy(w->drain_timer);
        af_worker_catalog_unref(w->wcat);
        if (w->loop)
                af_loop_destroy(w->loop);
        for (size_t i = 0; i < w->topic_cnt; i++)
                free(w->topics[i]);
        free(w->topics);
        free(w->config_path);
        af_config_destroy(w->conf);
}

int main(int argc, char **argv) {
        af_worker_t w;
        char errstr[512] = "";
        int rc;
        int level;

        memset(&w, 0, sizeof(w));
        TAILQ_INIT(&w.tasks);
        TAILQ_INIT(&w.dead_letters);
        w.conf = af_config_new();
        if (!w.conf) {
                fprintf(stderr, "agentfleet-worker: out of memory\n");
                return 1;
        }
        rc = worker_options(argc, argv, w.conf, &w.config_path);
        if (rc != 0) {
                free(w.config_path);
                af_config_destroy(w.conf);
                return rc > 0 ? 0 : 2;
        }
        level = af_log_level_parse(af_config_str(w.conf, "log.level"));
        af_log_init("worker", level < 0 ? AF_LOG_INFO : (af_log_level_t) level);
        if (worker_setup(&w, errstr, sizeof(errstr))) {
                /* Plain, like the settings errors above and the coordinator: an operator
                 * reads "file:line: key: ..." as is, not inside an escaped JSON string. */
                fprintf(stderr, "agentfleet-worker: %s\n", errstr);
                w.stopped = true;
                worker_teardown(&w);
                return 2; /* did not start (see usage) */
        }
        af_info("worker %s started: lanes %zu, concurrency %lld, lease ttl %lld ms, "
                "catalog %.12s",
                w.id, w.topic_cnt, (long long) w.concurrency, (long long) w.lease_ttl_ms,
                w.wcat->cat->hash);
        af_emit_lifecycle(&w, AGENTFLEET__V1__LIFECYCLE_KIND__LIFECYCLE_KIND_STARTED, NULL, NULL,
                          WORKER_VERSION);
        rc = af_loop_run(w.loop);
        worker_teardown(&w);
        af_info("worker stopped");
        return rc == 0 ? 0 : 1;
}
