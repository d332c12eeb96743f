/*
 * drive_report: what `agentfleet drive` tells its reader — a live progress line on stderr
 * while the run goes, then the summary: outcomes, lost tasks, duplicate results, duplicate
 * side effects (asked of the simagent's GET /stats), throughput and latency percentiles,
 * tokens and cost. With --json the summary's last line on stdout is one JSON object that the
 * demo and the benchmark parse; the readable table then goes to stderr.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drive.h"

/* ---- the simagent's side-effect ledger ---------------------------------------------------- */

typedef struct stats_wait_s {
        drive_t *d;
        bool done;
        json_t *json;
        char err[256];
} stats_wait_t;

static void stats_done_cb(const af_http_response_t *resp, const af_error_t *err, void *opaque) {
        stats_wait_t *w = opaque;

        w->done = true;
        if (err && err->err != AF_OK)
                snprintf(w->err, sizeof(w->err), "%s",
                         err->msg[0] ? err->msg : af_err2str(err->err));
        else if (resp->status != 200)
                snprintf(w->err, sizeof(w->err), "HTTP %d", resp->status);
        else if (!(w->json = json_loadb(resp->body, resp->body_len, 0, NULL)))
                snprintf(w->err, sizeof(w->err), "answer is not JSON");
        af_loop_stop(w->d->cli->loop);
}

af_err_t drive_simagent_duplicates(drive_t *d, int64_t *dupp, json_t **statsp, char *errstr,
                                   size_t errstr_size) {
        stats_wait_t w = {.d = d};
        af_http_request_t req = {.method = "GET", .timeout_ms = 10000};
        const char *headers[] = {"Accept: application/json", NULL};
        char *url = NULL;
        af_err_t err = AF_ERR_UNAVAILABLE;
        size_t n = strlen(d->o.simagent_url);

        if (asprintf(&url, "%.*s/stats", (int) (n && d->o.simagent_url[n - 1] == '/' ? n - 1 : n),
                     d->o.simagent_url) < 0) {
                url = NULL;
                return af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
        }
        req.url = url;
        req.headers = headers;
        if (!af_cli_http(d->cli, errstr, errstr_size))
                goto out;
        if (af_http_client_send(d->cli->hc, &req, stats_done_cb, &w, NULL) != AF_OK) {
                af_errstr(err, errstr, errstr_size, "GET %s could not start", url);
                goto out;
        }
        while (!w.done)
                if (af_loop_run(d->cli->loop) < 0)
                        break;
        if (!w.done || w.err[0] || !json_is_integer(json_object_get(w.json, "duplicates"))) {
                af_errstr(err, errstr, errstr_size, "GET %s: %s", url,
                          w.err[0] ? w.err : "no \"duplicates\" count in the answer");
                goto out;
        }
        *dupp = json_integer_value(json_object_get(w.json, "duplicates"));
        if (statsp) {
                *statsp = w.json;
                w.json = NULL;
        }
        err = AF_OK;
out:
        json_decref(w.json);
        free(url);
        return err;
}

/* ---- progress ------------------------------------------------------------------------------ */

void drive_progress(drive_t *d, bool final_line) {
        double secs = d->start_us ? (double) (drive_now_us() - d->start_us) / 1e6 : 0;

        fprintf(stderr,
                "\r  submitted %lld/%lld  final %lld  in flight %lld  refused %lld  "
                "dup %lld  %.1fs  %.0f/s   ",
                (long long) d->accepted, (long long) d->o.tasks, (long long) d->finals,
                (long long) (d->accepted - d->finals), (long long) d->refused,
                (long long) d->duplicate_results, secs, secs > 0 ? (double) d->finals / secs : 0.0);
        if (final_line)
                fputc('\n', stderr);
        fflush(stderr);
        d->progress_shown = true;
}

/* ---- summary ------------------------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b) {
        int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
        return x < y ? -1 : x > y;
}

/* Add an integer member (a no-op on a NULL object, which json_object() returns on OOM). */
static void set_int(json_t *j, const char *key, int64_t v) {
        json_object_set_new(j, key, json_integer((json_int_t) v));
}

static double round1(double v) {
        return round(v * 10.0) / 10.0;
}

int drive_report(drive_t *d, int64_t dup_side_effects, bool side_effects_known,
                 const char *side_effects_note) {
        int64_t cnt[AF_CLI_ST__CNT] = {0};
        int64_t *lat = calloc((size_t) (d->o.tasks ? d->o.tasks : 1), sizeof(*lat));
        int64_t nlat = 0, lost = 0, unsent = 0, shown_lost = 0;
        double wall_s, tps, p50, p95, p99;
        FILE *out = d->cli->json ? stderr : stdout;
        json_t *j = NULL;
        char *text = NULL;
        int rc;

        for (int64_t i = 0; i < d->o.tasks; i++) {
                const drive_task_t *t = &d->tasks[i];
                if (t->final_st) {
                        cnt[t->final_st]++;
                        if (lat)
                                lat[nlat++] = t->final_us - t->submit_us;
                } else if (t->sub == DRIVE_SUB_ACCEPTED) {
                        lost++;
                        if (shown_lost++ < 10)
                                fprintf(stderr, "  lost: drv-%s-%lld %s\n", d->run_tag,
                                        (long long) i, t->task_id[0] ? t->task_id : "");
                } else if (t->sub != DRIVE_SUB_REFUSED) {
                        unsent++; /* never acknowledged: the run was cut short */
                }
        }
        if (lat)
                qsort(lat, (size_t) nlat, sizeof(*lat), cmp_i64);
        p50 = lat ? round1((double) af_cli_percentile(lat, (size_t) nlat, 50) / 1000.0) : 0;
        p95 = lat ? round1((double) af_cli_percentile(lat, (size_t) nlat, 95) / 1000.0) : 0;
        p99 = lat ? round1((double) af_cli_percentile(lat, (size_t) nlat, 99) / 1000.0) : 0;
        wall_s = d->start_us && d->last_final_us > d->start_us
                         ? (double) (d->last_final_us - d->start_us) / 1e6
                         : 0;
        tps = wall_s > 0 ? round1((double) d->finals / wall_s) : 0;

        fprintf(out, "agentfleet drive %s: %lld tasks of %s (%lld over the API, %lld to Kafka)\n",
                d->run_id, (long long) d->o.tasks, d->o.type, (long long) d->api_cnt,
                (long long) d->kafka_cnt);
        fprintf(out, "  %-24s %lld\n", "submitted", (long long) d->accepted);
        if (d->refused)
                fprintf(out, "  %-24s %lld  (first: %s)\n", "submit_errors", (long long) d->refused,
                        d->first_refusal);
        if (unsent)
                fprintf(out, "  %-24s %lld\n", "not_submitted", (long long) unsent);
        fprintf(out, "  %-24s %lld\n", "succeeded", (long long) cnt[AF_CLI_ST_SUCCEEDED]);
        fprintf(out, "  %-24s %lld\n", "failed", (long long) cnt[AF_CLI_ST_FAILED]);
        fprintf(out, "  %-24s %lld\n", "dead", (long long) cnt[AF_CLI_ST_DEAD]);
        fprintf(out, "  %-24s %lld\n", "rejected", (long long) cnt[AF_CLI_ST_REJECTED]);
        fprintf(out, "  %-24s %lld\n", "waiting_approval",
                (long long) cnt[AF_CLI_ST_WAITING_APPROVAL]);
        fprintf(out, "  %-24s %lld\n", "cancelled", (long long) cnt[AF_CLI_ST_CANCELLED]);
        fprintf(out, "  %-24s %lld%s\n", "lost", (long long) lost,
                lost ? "  (accepted, no final result by the timeout)" : "");
        fprintf(out, "  %-24s %lld\n", "duplicate_results", (long long) d->duplicate_results);
        if (side_effects_known)
                fprintf(out, "  %-24s %lld\n", "duplicate_side_effects",
                        (long long) dup_side_effects);
        else
                fprintf(out, "  %-24s unknown (%s)\n", "duplicate_side_effects", side_effects_note);
        fprintf(out, "  %-24s %.1f  (final results / %.2fs from first submit to last result)\n",
                "tasks_per_s", tps, wall_s);
        fprintf(out, "  %-24s %.1f / %.1f / %.1f ms  (submit -> final result)\n",
                "latency p50/p95/p99", p50, p95, p99);
        fprintf(out, "  %-24s %lld  (prompt %lld, completion %lld)\n", "tokens",
                (long long) (d->prompt_tokens + d->completion_tokens), (long long) d->prompt_tokens,
                (long long) d->completion_tokens);
        fprintf(out, "  %-24s %.6f\n", "cost", (double) d->cost_micros / 1e6);
        if (d->reemitted_results || d->undecodable)
                fprintf(out, "  %-24s %lld re-emitted, %lld undecodable\n", "other results",
                        (long long) d->reemitted_results, (long long) d->undecodable);
        fflush(out);

        if (d->cli->json) {
                j = json_object();
                set_int(j, "submitted", d->accepted);
                set_int(j, "succeeded", cnt[AF_CLI_ST_SUCCEEDED]);
                set_int(j, "failed", cnt[AF_CLI_ST_FAILED]);
                set_int(j, "dead", cnt[AF_CLI_ST_DEAD]);
                set_int(j, "rejected", cnt[AF_CLI_ST_REJECTED]);
                set_int(j, "waiting_approval", cnt[AF_CLI_ST_WAITING_APPROVAL]);
                set_int(j, "cancelled", cnt[AF_CLI_ST_CANCELLED]);
                set_int(j, "lost", lost);
                set_int(j, "duplicate_results", d->duplicate_results);
                json_object_set_new(j, "duplicate_side_effects",
                                    side_effects_known ? json_integer(dup_side_effects)
                                                       : json_null());
                json_object_set_new(j, "tasks_per_s", json_real(tps));
                json_object_set_new(j, "p50_ms", json_real(p50));
                json_object_set_new(j, "p95_ms", json_real(p95));
                json_object_set_new(j, "p99_ms", json_real(p99));
                set_int(j, "tokens", d->prompt_tokens + d->completion_tokens);
                set_int(j, "prompt_tokens", d->prompt_tokens);
                set_int(j, "completion_tokens", d->completion_tokens);
                set_int(j, "cost_micros", d->cost_micros);
                json_object_set_new(j, "cost", json_real((double) d->cost_micros / 1e6));
                set_int(j, "api_submitted", d->api_accepted);
                set_int(j, "kafka_submitted", d->kafka_accepted);
                set_int(j, "submit_errors", d->refused);
                set_int(j, "not_submitted", unsent);
                set_int(j, "reemitted_results", d->reemitted_results);
                json_object_set_new(j, "wall_s", json_real(round(wall_s * 100.0) / 100.0));
                json_object_set_new(j, "type", json_string(d->o.type));
                json_object_set_new(j, "run_id", json_string(d->run_id));
                /* 12 digits: the rates and percentiles are rounded to 0.1 already, and
                 * 555.7 must not read 555.70000000000005. */
                text = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
                if (text) {
                        fputs(text, stdout);
                        fputc('\n', stdout);
                        fflush(stdout);
                }
                free(text);
                json_decref(j);
        }
        rc = lost == 0 && unsent == 0 && d->refused == 0 && d->duplicate_results == 0 &&
                             (!side_effects_known || dup_side_effects == 0)
                     ? AF_CLI_EXIT_OK
                     : AF_CLI_EXIT_TASK;
        free(lat);
        return rc;
}
