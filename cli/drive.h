/*
 * drive: the load driver shared by the demo and the benchmark (`agentfleet drive`).
 *
 * One run: read sample payloads, start a private consumer group on `results` at the topic's
 * end, submit N tasks — a share over the API (many requests in flight, Idempotency-Key), the
 * rest produced straight to `requests` as signed JSON TaskRequests (asynchronous, batched by
 * librdkafka) — then follow every task by its idempotency key to a final result, and
 * summarize: outcomes, lost tasks, duplicate results, duplicate side effects (from the
 * simagent's /stats), throughput and latency.
 *
 * drive.c owns the run (options, set-up, stop conditions), drive_submit.c the submission
 * pump, drive_results.c the results consumer and per-task bookkeeping, drive_report.c the
 * summary. All of it runs on the CLI's one loop.
 */
#ifndef AF_CLI_DRIVE_H
#define AF_CLI_DRIVE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "http_client.h"
#include "ids.h"
#include "kafka.h"
#include "loop.h"

#include "cli.h"

/* Where a task is in its submission. */
typedef enum {
        DRIVE_SUB_PENDING = 0, /* not sent yet (or waiting for a retry) */
        DRIVE_SUB_SENDING,     /* request in flight / message not yet acknowledged */
        DRIVE_SUB_ACCEPTED,    /* API answered 2xx / broker acknowledged the message */
        DRIVE_SUB_REFUSED,     /* refused for good: counted in submit_errors */
} drive_sub_t;

/* One task of the run. */
typedef struct drive_task_s {
        char task_id[32];  /* from the API answer or the first result, or "" */
        int64_t submit_us; /* mono us of the first submission attempt, 0 = not yet */
        int64_t final_us;  /* mono us the first final result was read, 0 = none */
        int64_t fence;     /* fence of the recorded final result */
        int64_t due_us;    /* mono us before which a retry must not be sent */
        uint8_t via_kafka; /* 1: produced to requests; 0: over the API */
        uint8_t sub;       /* drive_sub_t */
        uint8_t attempts;  /* submission attempts so far */
        uint8_t final_st;  /* af_cli_status_t of the recorded final, 0 = none */
} drive_task_t;

typedef struct drive_opts_s {
        int64_t tasks;
        const char *type;
        const char *payloads_path;
        double api_share;         /* 0..1 */
        double rate;              /* tasks/s, 0 = as fast as possible */
        int concurrency;          /* API requests in flight */
        int64_t timeout_ms;       /* whole run, from the first submission */
        int64_t linger_ms;        /* keep reading results after all are final */
        const char *simagent_url; /* or NULL */
        const char *key_id;       /* service key for Kafka requests, or NULL: token */
        const char *unique_field; /* payload field made unique per task ("" = none) */
        bool progress;
        int64_t max_kafka_outstanding; /* Kafka messages awaiting their delivery report */
        const char *direct_lane;       /* bench only: produce admitted Tasks to tasks.<lane>,
                                        * bypassing the coordinator, or NULL */
} drive_opts_t;

typedef struct drive_s {
        af_cli_t *cli;
        drive_opts_t o;
        char run_id[AF_ULID_LEN + 1];
        char run_tag[16]; /* short run tag used in ids: last chars of run_id */

        /* Payload samples: a JSON array of parsed lines (cycled), and each one's text made
         * ready for the per-task splice of its unique field (drive_prepare_payloads). */
        json_t *payloads;
        struct drive_payload_s *prepared; /* json_array_size(payloads) entries */

        drive_task_t *tasks; /* o.tasks entries */
        json_t *by_id;       /* task id -> index (integer) */

        /* Submission. */
        int64_t *api_order, *kafka_order; /* task indexes per path, in submission order */
        int64_t api_cnt, kafka_cnt, api_next, kafka_next;
        int64_t *retry_q; /* API/Kafka indexes waiting for a retry (ring) */
        int64_t retry_head, retry_len;
        int api_in_flight;
        int64_t kafka_outstanding;
        bool kafka_full; /* producer queue full: wait for a delivery report */
        int64_t sent;    /* first attempts started (for the rate) */
        int64_t accepted, refused, api_accepted, kafka_accepted;
        char first_refusal[512]; /* why the first refused task was refused */
        af_producer_t *producer;
        char requests_topic[256];
        const char *secret; /* service key secret (environment), or NULL */
        char auth_header[1024];
        bool has_auth;

        /* Results. */
        af_consumer_t *consumer;
        char results_topic[256];
        bool assigned;
        int64_t finals;            /* tasks with a final result */
        int64_t duplicate_results; /* a second, different final result for one task */
        int64_t reemitted_results; /* the same final result seen again (redelivery) */
        int64_t foreign_results;   /* results of tasks not ours (other runs), ignored */
        int64_t undecodable;       /* results that did not decode */
        int64_t prompt_tokens, completion_tokens, cost_micros;

        /* Timing. */
        int64_t start_us; /* mono us of the first submission */
        int64_t last_final_us;
        int64_t all_final_us; /* when every task became final (linger starts) */
        af_timer_t *pump_timer, *progress_timer, *deadline_timer;
        bool progress_shown;
        bool stopping;
        bool interrupted;

        /* Side effects from the simagent. */
        bool have_stats_before;
        int64_t duplicates_before;
} drive_t;

/* drive_submit.c: start as many submissions as the rate, concurrency and producer allow.
 * Called on start, on every completion and from the pump timer. Loop thread. */
void drive_pump(drive_t *d);
/* @returns whether every task is accepted or refused (nothing more to send). */
bool drive_submission_done(const drive_t *d);
/* Dump every sample once, split around its unique field's value, so that a task's payload is
 * a concatenation, not a JSON copy and dump (the drive must cost little next to what it
 * measures). @returns 0, or -1 out of memory. */
int drive_prepare_payloads(drive_t *d);
void drive_free_payloads(drive_t *d);

/* drive_results.c: the results side. */
/* Commit the current end offsets of `results` for a fresh group, so that its consumer starts
 * there. Blocking, before the run. @returns AF_OK or an error with errstr. */
af_err_t drive_results_start_at_end(drive_t *d, const char *group_id, char *errstr,
                                    size_t errstr_size);
/* Subscribe the run's consumer. @returns AF_OK or an error with errstr. */
af_err_t drive_results_subscribe(drive_t *d, const char *group_id, char *errstr,
                                 size_t errstr_size);
/* Register a task id answered by the API for task idx. */
void drive_results_note_id(drive_t *d, int64_t idx, const char *task_id);
/* Called by the results side when a task gets its first final result. */
void drive_on_final(drive_t *d);

/* drive_report.c */
/* GET <simagent>/stats: @returns AF_OK and *dupp = "duplicates". Runs the loop. */
af_err_t drive_simagent_duplicates(drive_t *d, int64_t *dupp, json_t **statsp, char *errstr,
                                   size_t errstr_size);
/* Print the progress line (stderr, \r). */
void drive_progress(drive_t *d, bool final_line);
/* Print the summary; @returns the exit code. */
int drive_report(drive_t *d, int64_t dup_side_effects, bool side_effects_known,
                 const char *side_effects_note);

/* @returns mono us now. */
int64_t drive_now_us(void);

#endif
