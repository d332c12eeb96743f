/*
 * observe: the worker's Prometheus metrics, served on 127.0.0.1:worker.metrics_port
 * (0 = off) as GET /metrics, with GET /healthz beside it. The pipeline stages report what
 * happened (a result, a lost lease, a Redis failure, a dead letter); the in-flight and
 * held gauges are read from the worker when scraped. Everything lives on the loop thread.
 */
#include <stdlib.h>
#include <string.h>

#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

static struct {
        af_metrics_t *m;
        af_http_server_t *srv;
        af_metric_t *tasks;        /* counter {type, status} */
        af_metric_t *run_seconds;  /* histogram {type} */
        af_metric_t *in_flight;    /* gauge */
        af_metric_t *held;         /* gauge 0/1 */
        af_metric_t *leases_lost;  /* counter */
        af_metric_t *redis_errors; /* counter {op} */
        af_metric_t *dead_letters; /* counter */
        af_metric_t *tokens;       /* counter {kind} */
        af_metric_t *cost;         /* counter, micros */
} obs;

static void observe_metrics(af_http_req_t *req, void *opaque) {
        af_worker_t *w = opaque;
        af_buf_t out;

        af_buf_init(&out, 16 * 1024 * 1024);
        af_metric_set(obs.in_flight, NULL, (double) w->in_flight);
        af_metric_set(obs.held, NULL, w->held ? 1 : 0);
        if (af_metrics_render(obs.m, &out) != AF_OK || af_metrics_render_process(&out) != AF_OK) {
                af_http_reply_error(req, 500, "internal", "metrics too large");
        } else {
                af_http_reply(req, 200, "text/plain; version=0.0.4", af_buf_str(&out), out.len);
        }
        af_buf_free(&out);
}

static void observe_healthz(af_http_req_t *req, void *opaque) {
        af_worker_t *w = opaque;
        af_http_reply_json(req, w->draining ? 503 : 200,
                           json_pack("{s:s, s:I, s:b}", "status", w->draining ? "draining" : "ok",
                                     "in_flight", (json_int_t) w->in_flight, "redis",
                                     w->redis && af_redis_is_up(w->redis)));
}

int af_observe_start(af_worker_t *w, char *errstr, size_t errstr_size) {
        static const char *const type_status[] = {"type", "status", NULL};
        static const char *const type_only[] = {"type", NULL};
        static const char *const op[] = {"op", NULL};
        static const char *const kind[] = {"kind", NULL};
        int64_t port = af_config_int(w->conf, "worker.metrics_port");
        af_http_server_opts_t so;

        obs.m = af_metrics_new();
        if (!obs.m)
                return -1;
        obs.tasks = af_metrics_counter(obs.m, "agentfleet_worker_tasks_total",
                                       "Tasks that left the worker, by type and final status.",
                                       type_status);
        obs.run_seconds = af_metrics_histogram(
                obs.m, "agentfleet_worker_task_run_seconds",
                "Handler run time of finished tasks (lease acquired to result).", type_only,
                af_metrics_latency_buckets, af_metrics_latency_bucket_cnt);
        obs.in_flight = af_metrics_gauge(obs.m, "agentfleet_worker_in_flight",
                                         "Tasks in flight in this process.", NULL);
        obs.held = af_metrics_gauge(obs.m, "agentfleet_worker_consumer_held",
                                    "1 while fetching is held (concurrency limit or drain).", NULL);
        obs.leases_lost = af_metrics_counter(obs.m, "agentfleet_worker_leases_lost_total",
                                             "Leases found lost (result not published).", NULL);
        obs.redis_errors = af_metrics_counter(obs.m, "agentfleet_worker_redis_errors_total",
                                              "Lease commands that failed (retried).", op);
        obs.dead_letters = af_metrics_counter(obs.m, "agentfleet_worker_dead_letters_total",
                                              "Messages on task topics that were not Tasks.", NULL);
        obs.tokens = af_metrics_counter(obs.m, "agentfleet_worker_llm_tokens_total",
                                        "LLM tokens used by agent tasks.", kind);
        obs.cost =
                af_metrics_counter(obs.m, "agentfleet_worker_llm_cost_micros_total",
                                   "LLM cost of agent tasks, millionths of a currency unit.", NULL);
        if (port <= 0)
                return 0;
        memset(&so, 0, sizeof(so));
        so.address = af_config_str(w->conf, "worker.metrics_address");
        so.port = (int) port;
        so.max_body_bytes = 4096;
        so.max_header_bytes = 8192;
        so.timeout_ms = 10000;
        obs.srv = af_http_server_new(w->loop, &so, errstr, errstr_size);
        if (!obs.srv)
                return -1;
        af_http_server_route(obs.srv, "GET", "/metrics", false, observe_metrics, w);
        af_http_server_route(obs.srv, "GET", "/healthz", false, observe_healthz, w);
        af_info("metrics on http://%s:%d/metrics", so.address, af_http_server_port(obs.srv));
        return 0;
}

void af_observe_stop(void) {
        af_http_server_destroy(obs.srv);
        af_metrics_destroy(obs.m);
        memset(&obs, 0, sizeof(obs));
}

void af_observe_result(af_wtask_t *t, const char *status, int64_t run_ms) {
        /* Only configured types become labels: a message's type string is outside input. */
        const char *type = t->type ? t->type->name : "unknown";
        const char *ls[] = {type, status, NULL};
        const char *lt[] = {type, NULL};
        const char *lp[] = {"prompt", NULL};
        const char *lc[] = {"completion", NULL};

        if (!obs.m)
                return;
        af_metric_add(obs.tasks, ls, 1);
        if (run_ms > 0)
                af_metric_observe(obs.run_seconds, lt, (double) run_ms / 1000.0);
        if (t->prompt_tokens || t->completion_tokens) {
                af_metric_add(obs.tokens, lp, (double) t->prompt_tokens);
                af_metric_add(obs.tokens, lc, (double) t->completion_tokens);
                af_metric_add(obs.cost, NULL, (double) t->cost_micros);
        }
}

void af_observe_lease_lost(void) {
        if (obs.m)
                af_metric_add(obs.leases_lost, NULL, 1);
}

void af_observe_redis_error(const char *op) {
        const char *l[] = {op, NULL};
        if (obs.m)
                af_metric_add(obs.redis_errors, l, 1);
}

void af_observe_dead_letter(void) {
        if (obs.m)
                af_metric_add(obs.dead_letters, NULL, 1);
}
