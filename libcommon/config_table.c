/*
 * config_table: the one list of agentfleet's settings. config.c reads values against it,
 * every program's --help prints its scope of it, and CONFIGURATION.md is generated from it
 * (tests/unit/test_config_doc.c keeps the committed file equal to this table).
 *
 * To add a setting: add a row here (name, type, default as text, bounds, scope, flags, one
 * line of description), read it with af_config_str/int/bool, and regenerate the reference
 * with `AF_REGEN=1 ctest -R test_config_doc`. Durations are milliseconds and sizes bytes
 * once parsed. kafka.* keys other than those listed pass through to librdkafka unchecked.
 */
#include <stdint.h>

#include "config.h"

#define CO     AF_SCOPE_COORDINATOR
#define WO     AF_SCOPE_WORKER
#define CL     AF_SCOPE_CLI
#define SI     AF_SCOPE_SIMAGENT
#define SECRET AF_SETTING_F_SECRET

#define S AF_SETTING_STRING
#define I AF_SETTING_INT
#define B AF_SETTING_BOOL
#define D AF_SETTING_DURATION
#define Z AF_SETTING_SIZE

#define SEC  1000LL
#define MIN  (60 * SEC)
#define HOUR (60 * MIN)
#define KIB  1024LL
#define MIB  (1024 * KIB)

/* The audit key every fresh checkout shares: good enough for the demo, worthless in
 * production, hence the daemons warn while it is in use (af_config_is_default). */
#define AF_DEV_AUDIT_KEY "agentfleet-dev-audit-key-not-for-production"

const af_setting_t af_settings[] = {
        /* name, type, default, min, max, scope, flags, description */
        {"log.level", S, "info", 0, 0, AF_SCOPE_ALL, 0,
         "Minimum log level: debug, info, warn, error or off."},
        {"topic.prefix", S, "agentfleet.", 0, 0, CO | WO | CL, 0,
         "Prefix of every Kafka topic name (agentfleet.tasks.default, agentfleet.results, ...)."},

        {"kafka.bootstrap.servers", S, "127.0.0.1:9092", 0, 0, CO | WO | CL, 0,
         "Kafka brokers (host:port,...). Every kafka.* key is passed to librdkafka as is."},

        {"redis.host", S, "127.0.0.1", 0, 0, CO | WO, 0, "Redis server host name or address."},
        {"redis.port", I, "6379", 1, 65535, CO | WO, 0, "Redis server port."},
        {"redis.password", S, NULL, 0, 0, CO | WO, SECRET,
         "Redis AUTH password; unset means no AUTH."},
        {"redis.command_timeout", D, "2s", 10, 10 * MIN, CO | WO, 0,
         "A Redis command without a reply after this fails with a retriable timeout."},
        {"redis.reconnect_min", D, "100ms", 1, 1 * MIN, CO | WO, 0,
         "First delay before reconnecting to Redis (doubles, jittered)."},
        {"redis.reconnect_max", D, "5s", 10, 10 * MIN, CO | WO, 0,
         "Longest delay between Redis reconnect attempts."},

        {"audit.hmac_key", S, AF_DEV_AUDIT_KEY, 0, 0, CO | WO, SECRET,
         "Key of the audit events' HMAC. The default is a public development key: set your "
         "own (AGENTFLEET_AUDIT_HMAC_KEY) in production; the daemons warn while it is used."},

        {"http.address", S, "127.0.0.1", 0, 0, CO, 0, "Address the coordinator's API listens on."},
        {"http.port", I, "8080", 0, 65535, CO, 0,
         "Port of the coordinator's API, /metrics, /healthz and /readyz; 0 picks a free port."},
        {"http.max_body", Z, "1MiB", 1 * KIB, 64 * MIB, CO, 0,
         "Largest request body the API accepts (413 above it)."},
        {"http.timeout", D, "30s", 1 * SEC, 10 * MIN, CO, 0,
         "An API connection idle for this long is closed."},

        {"coordinator.group_id", S, "agentfleet-coordinator", 0, 0, CO, 0,
         "Kafka consumer group of the coordinator (requests and results topics)."},
        {"coordinator.max_payload", Z, "256KiB", 1 * KIB, 16 * MIB, CO, 0,
         "Largest task payload admitted, unless the task type sets its own max_payload."},
        {"coordinator.max_inflight", I, "10000", 1, 1000000, CO, 0,
         "API submits being admitted at once (each waits for Kafka and Redis); past it a "
         "submit is answered 503 with Retry-After at once, so that a slow or absent Kafka does "
         "not pile requests up in memory."},
        {"coordinator.idempotency_ttl", D, "24h", 1 * MIN, 30 * 24 * HOUR, CO, 0,
         "How long an Idempotency-Key (or a Kafka request's idempotency key) maps to its task: "
         "a retry within it gets the same task."},
        {"coordinator.index_ttl", D, "7d", 1 * HOUR, 366 * 24 * HOUR, CO, 0,
         "How long a task stays in the coordinator's index in Redis after its last change: "
         "readable by GET /v1/tasks/{id}, listed, cancellable (the compacted results topic "
         "stays the record beyond it). Redis holds about 1.3 KB per task for this long (its "
         "last record and four listing entries). Must be at least "
         "coordinator.idempotency_ttl: a repeated submit reads the task's entry."},
        {"coordinator.takeover_grace", D, "0", 0, 30 * 24 * HOUR, CO, 0,
         "How old an idempotency key's reservation must be before a repeat that finds its task "
         "unpublished (no record, or only QUEUED) publishes it again; 0 derives it from Kafka: "
         "twice kafka.message.timeout.ms plus twice redis.command_timeout plus 5s."},
        {"coordinator.drain_timeout", D, "15s", 0, 1 * HOUR, CO, 0,
         "On SIGTERM, admissions in flight get this long to be acknowledged by Kafka before "
         "the coordinator exits."},

        {"worker.id", S, "", 0, 0, WO, 0,
         "Worker identity in leases, results and audit; empty means <hostname>-<pid>."},
        {"worker.group_id", S, "agentfleet-workers", 0, 0, WO, 0,
         "Kafka consumer group shared by all workers."},
        {"worker.lanes", S, "default,claims", 0, 0, WO, 0,
         "Comma-separated lanes this worker consumes (topics tasks.<lane>)."},
        {"worker.concurrency", I, "256", 1, 100000, WO, 0,
         "Most tasks in flight in one worker process, independent of the partition count."},
        {"worker.lease_ttl", D, "30s", 1 * SEC, 1 * HOUR, WO, 0,
         "A task lease expires this long after its last renewal (then another worker may "
         "take the task)."},
        {"worker.lease_renew", D, "10s", 100, 30 * MIN, WO, 0,
         "How often a running task's lease is renewed; keep well below worker.lease_ttl."},
        {"worker.running_after", D, "1s", 0, 1 * HOUR, WO, 0,
         "A task still running this long after its lease was taken gets a RUNNING record on "
         "`results` (progress for watch and the index); 0 sends it at once. Faster tasks go "
         "straight to their final record, which saves a message and an index update each."},
        {"worker.done_ttl", D, "24h", 1 * MIN, 30 * 24 * HOUR, WO, 0,
         "How long a finished task's result stays in Redis as its done record: a redelivery "
         "within it re-emits the stored result instead of running the task again (the "
         "compacted results topic stays the record beyond it). Must be at least "
         "coordinator.idempotency_ttl: a task a coordinator republishes after a crash must still "
         "find its done record."},
        {"worker.drain_timeout", D, "30s", 0, 1 * HOUR, WO, 0,
         "On SIGTERM, in-flight tasks get this long to finish before they are handed back."},
        {"worker.http_timeout", D, "30s", 100, 10 * MIN, WO, 0,
         "Default timeout of one integration or model HTTP call."},
        {"worker.max_response", Z, "1MiB", 1 * KIB, 64 * MIB, WO, 0,
         "Largest HTTP response body a worker reads from an integration or model."},
        {"worker.metrics_port", I, "0", 0, 65535, WO, 0,
         "Port of the worker's Prometheus /metrics and /healthz endpoint; 0 turns it off."},
        {"worker.metrics_address", S, "127.0.0.1", 0, 0, WO, 0,
         "Address the worker's /metrics endpoint listens on (0.0.0.0 to be scraped from "
         "another host or container)."},

        {"simagent.address", S, "127.0.0.1", 0, 0, SI, 0,
         "Address the simulated agent listens on."},
        {"simagent.port", I, "8090", 0, 65535, SI, 0, "Port of the simulated agent."},
        {"simagent.seed", I, "42", 0, INT64_MAX, SI, 0,
         "Seed of the simulation: the same seed and requests give the same answers."},
        {"simagent.latency_ms", I, "20", 0, 60000, SI, 0,
         "Mean simulated latency per request (ms)."},
        {"simagent.latency_jitter_ms", I, "10", 0, 60000, SI, 0,
         "Spread of the simulated latency around its mean (ms)."},
        {"simagent.error_rate", I, "0", 0, 1000, SI, 0,
         "Share of requests answered with a 500, per mille."},
        {"simagent.rate429", I, "0", 0, 1000, SI, 0,
         "Share of requests answered with 429 and Retry-After, per mille."},
        {"simagent.timeout_rate", I, "0", 0, 1000, SI, 0,
         "Share of requests never answered (the client must time out), per mille."},
        {"simagent.api_key", S, NULL, 0, 0, SI, SECRET,
         "Bearer key the simulated model requires on /v1; unset means none."},
        {"simagent.retry_after", D, "1s", 0, 1 * HOUR, SI, 0,
         "Retry-After sent with a simulated 429."},
        {"simagent.prompt_tokens", I, "350", 0, 1000000, SI, 0,
         "Prompt tokens reported in each chat completion's usage."},
        {"simagent.completion_tokens", I, "60", 0, 1000000, SI, 0,
         "Completion tokens reported in each chat completion's usage."},

        {"cli.api_url", S, "http://127.0.0.1:8080", 0, 0, CL, 0,
         "Base URL of the coordinator's API for the agentfleet command."},
        {"cli.token", S, NULL, 0, 0, CL, SECRET,
         "Bearer token of the agentfleet command (also read from AGENTFLEET_TOKEN)."},
};

const size_t af_settings_cnt = sizeof(af_settings) / sizeof(af_settings[0]);
