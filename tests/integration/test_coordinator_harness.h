/*
 * Harness of the coordinator's integration tests: a unique topic prefix with its topics
 * created on the real broker (and removed by h_delete_topics() in the test's teardown), a
 * generated config (settings + a small catalog), the real agentfleet-coordinator binary
 * started on a free port, a blocking HTTP client (curl easy), and blocking Kafka helpers
 * (produce and wait; scan a topic from the beginning for a record).
 *
 * Included by exactly one test file each (everything is static).
 */
#ifndef TEST_COORDINATOR_HARNESS_H
#define TEST_COORDINATOR_HARNESS_H

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support/support.h"
#include "clock.h"
#include "crypto.h"
#include "ids.h"

/* Each test file uses the subset of helpers it needs. */
#pragma GCC diagnostic ignored "-Wunused-function"

#define H_TOKEN_A    "test-token-tenant-a"
#define H_TOKEN_B    "test-token-tenant-b"
#define H_SVC_SECRET "test-service-key-secret"

typedef struct harness_s {
        char prefix[64];
        char bootstrap[128];
        int redis_port;
        int http_port;
        char config_path[256];
        char log_path[256];
        char config_hash[65];
        pid_t pid;
        char base_url[64];
        bool topics; /* h_create_topics() asked for them: h_delete_topics() removes them */
        /* Set before h_start() to add lines to the generated config, indented as in the file:
         * settings under `coordinator:`, entries under `task_types:` (NULL: none). */
        const char *extra_coordinator;
        const char *extra_task_types;
} harness_t;

static harness_t H;

/* ---- small helpers ------------------------------------------------------------------------ */

static void h_topic(char *out, size_t n, const char *suffix) {
        snprintf(out, n, "%s%s", H.prefix, suffix);
}

static int h_free_port(void) {
        return af_test_free_port();
}

static void h_sleep_ms(int ms) {
        struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
}

/* ---- Kafka -------------------------------------------------------------------------------- */

static rd_kafka_t *h_rk(rd_kafka_type_t type) {
        char errstr[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        rd_kafka_conf_set(conf, "bootstrap.servers", H.bootstrap, NULL, 0);
        if (type == RD_KAFKA_CONSUMER) {
                char group[96];
                char id[AF_ULID_LEN + 1];
                af_ulid_new(id);
                snprintf(group, sizeof(group), "test-scan-%s", id);
                rd_kafka_conf_set(conf, "group.id", group, NULL, 0);
                rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
        } else {
                rd_kafka_conf_set(conf, "acks", "all", NULL, 0);
        }
        rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
        if (!rk) {
                fprintf(stderr, "rd_kafka_new: %s\n", errstr);
                abort();
        }
        return rk;
}

/* The topics h_create_topics() makes under H.prefix, and h_delete_topics() removes. */
static const char *const h_topic_suffixes[] = {"requests", "tasks.default", "tasks.claims",
                                               "results",  "audit",         "dlq",
                                               "events",   "approvals"};
#define H_TOPIC_CNT (sizeof(h_topic_suffixes) / sizeof(h_topic_suffixes[0]))

static bool h_create_topics(void) {
        const size_t n = H_TOPIC_CNT;
        rd_kafka_t *rk = h_rk(RD_KAFKA_PRODUCER);
        rd_kafka_NewTopic_t *nt[H_TOPIC_CNT];
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        char errstr[256], name[128];
        bool ok = true;

        for (size_t i = 0; i < n; i++) {
                h_topic(name, sizeof(name), h_topic_suffixes[i]);
                nt[i] = rd_kafka_NewTopic_new(name, 3, 1, errstr, sizeof(errstr));
        }
        rd_kafka_CreateTopics(rk, nt, n, NULL, q);
        H.topics = true; /* some may exist even when the answer says otherwise */
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
        if (!ev || rd_kafka_event_error(ev)) {
                fprintf(stderr, "CreateTopics: %s\n",
                        ev ? rd_kafka_event_error_string(ev) : "timeout");
                ok = false;
        } else {
                size_t cnt;
                const rd_kafka_topic_result_t **res = rd_kafka_CreateTopics_result_topics(
                        rd_kafka_event_CreateTopics_result(ev), &cnt);
                for (size_t i = 0; i < cnt; i++)
                        if (rd_kafka_topic_result_error(res[i]) &&
                            rd_kafka_topic_result_error(res[i]) !=
                                    RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                                fprintf(stderr, "create %s: %s\n",
                                        rd_kafka_topic_result_name(res[i]),
                                        rd_kafka_topic_result_error_string(res[i]));
                                ok = false;
                        }
        }
        if (ev)
                rd_kafka_event_destroy(ev);
        for (size_t i = 0; i < n; i++)
                rd_kafka_NewTopic_destroy(nt[i]);
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
        return ok;
}

/* For a test's teardown, once nothing it started uses them: remove the topics
 * h_create_topics() made (kept with FLEET_KEEP_WORK=1; a failure is only a note). */
static void h_delete_topics(void) {
        char names[H_TOPIC_CNT][128];
        const char *topics[H_TOPIC_CNT];

        if (!H.topics)
                return;
        for (size_t i = 0; i < H_TOPIC_CNT; i++) {
                h_topic(names[i], sizeof(names[i]), h_topic_suffixes[i]);
                topics[i] = names[i];
        }
        af_test_teardown_topics(H.bootstrap, topics, H_TOPIC_CNT);
        H.topics = false;
}

/* Produce one message and wait for its acknowledgement. @returns true when acknowledged. */
static bool h_produce(const char *suffix, const char *key, const void *value, size_t len,
                      const char *content_type) {
        char topic[128];
        rd_kafka_t *rk = h_rk(RD_KAFKA_PRODUCER);
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(1);
        rd_kafka_resp_err_t err;

        h_topic(topic, sizeof(topic), suffix);
        if (content_type)
                rd_kafka_header_add(hdrs, "content-type", -1, content_type, -1);
        err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
                                RD_KAFKA_V_VALUE((void *) value, len), RD_KAFKA_V_HEADERS(hdrs),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err)
                rd_kafka_headers_destroy(hdrs);
        bool ok = !err && rd_kafka_flush(rk, 30000) == RD_KAFKA_RESP_ERR_NO_ERROR;
        rd_kafka_destroy(rk);
        return ok;
}

/* A predicate over a record; it may keep state in opaque. true = found (stop). */
typedef bool(h_match_fn)(const rd_kafka_message_t *m, void *opaque);

/* Read topic from the beginning of every partition until match says found or timeout_ms
 * passes. With count_only, keep reading until the timeout and return the number of matches. */
static int h_scan(const char *suffix, h_match_fn *match, void *opaque, int timeout_ms,
                  bool count_only) {
        char topic[128];
        rd_kafka_t *rk = h_rk(RD_KAFKA_CONSUMER);
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(8);
        int found = 0;
        int64_t end = af_clock_mono_ms() + timeout_ms;

        h_topic(topic, sizeof(topic), suffix);
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
        if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            md->topic_cnt == 1)
                for (int i = 0; i < md->topics[0].partition_cnt; i++)
                        rd_kafka_topic_partition_list_add(parts, topic,
                                                          md->topics[0].partitions[i].id)
                                ->offset = RD_KAFKA_OFFSET_BEGINNING;
        if (md)
                rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
        rd_kafka_assign(rk, parts);
        while (af_clock_mono_ms() < end) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
                if (!m)
                        continue;
                if (!m->err && match(m, opaque)) {
                        found++;
                        if (!count_only) {
                                rd_kafka_message_destroy(m);
                                break;
                        }
                }
                rd_kafka_message_destroy(m);
        }
        rd_kafka_topic_partition_list_destroy(parts);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        return found;
}

/* Count the records of topic that match, from the beginning of every partition to its end as
 * of the call (at most 20 s): what was acknowledged before the call is all seen, without
 * waiting out a fixed window as h_scan's count_only does. */
static int h_count_to_end(const char *suffix, h_match_fn *match, void *opaque) {
        char topic[128];
        rd_kafka_t *rk = h_rk(RD_KAFKA_CONSUMER);
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(8);
        int64_t hi[64] = {0}, lo = 0;
        int found = 0, left = 0, np = 0;
        int64_t end = af_clock_mono_ms() + 20000;

        h_topic(topic, sizeof(topic), suffix);
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
        if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            md->topic_cnt == 1)
                np = md->topics[0].partition_cnt;
        for (int i = 0; i < np; i++) {
                int32_t p = md->topics[0].partitions[i].id;
                if (p < 0 || p >= 64 ||
                    rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi[p], 10000) ||
                    hi[p] <= lo)
                        continue;
                rd_kafka_topic_partition_list_add(parts, topic, p)->offset = lo;
                left++;
        }
        if (md)
                rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
        rd_kafka_assign(rk, parts);
        while (left > 0 && af_clock_mono_ms() < end) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
                if (!m)
                        continue;
                if (!m->err) {
                        found += match(m, opaque);
                        if (m->partition >= 0 && m->partition < 64 &&
                            m->offset + 1 == hi[m->partition])
                                left--;
                }
                rd_kafka_message_destroy(m);
        }
        rd_kafka_topic_partition_list_destroy(parts);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        return found;
}

/* ---- HTTP --------------------------------------------------------------------------------- */

typedef struct h_resp_s {
        long status;
        char *body;
        size_t len;
        json_t *json;
        char headers[4096];
} h_resp_t;

static size_t h_write(char *p, size_t sz, size_t n, void *opaque) {
        h_resp_t *r = opaque;
        char *b = realloc(r->body, r->len + sz * n + 1);
        if (!b)
                return 0;
        memcpy(b + r->len, p, sz * n);
        r->body = b;
        r->len += sz * n;
        r->body[r->len] = '\0';
        return sz * n;
}

static size_t h_header(char *p, size_t sz, size_t n, void *opaque) {
        h_resp_t *r = opaque;
        size_t have = strlen(r->headers);
        if (have + sz * n + 1 < sizeof(r->headers)) {
                memcpy(r->headers + have, p, sz * n);
                r->headers[have + sz * n] = '\0';
        }
        return sz * n;
}

static void h_resp_free(h_resp_t *r) {
        free(r->body);
        json_decref(r->json);
        memset(r, 0, sizeof(*r));
}

/* Blocking request; token and extra_header may be NULL. */
static h_resp_t h_http(const char *method, const char *path, const char *token,
                       const char *extra_header, const char *body, size_t body_len) {
        h_resp_t r;
        char url[512], auth[256];
        CURL *c = curl_easy_init();
        struct curl_slist *hdrs = NULL;

        memset(&r, 0, sizeof(r));
        snprintf(url, sizeof(url), "%s%s", H.base_url, path);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, h_write);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, h_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
        if (token) {
                snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
                hdrs = curl_slist_append(hdrs, auth);
        }
        if (extra_header)
                hdrs = curl_slist_append(hdrs, extra_header);
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        hdrs = curl_slist_append(hdrs, "Expect:");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        if (body) {
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long) body_len);
        }
        if (curl_easy_perform(c) == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
        if (r.body)
                r.json = json_loadb(r.body, r.len, 0, NULL);
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(c);
        return r;
}

static const char *h_str(const json_t *o, const char *key) {
        const char *s = json_string_value(json_object_get(o, key));
        return s ? s : "";
}

/* POST a task; @returns the response (caller frees). */
static h_resp_t h_submit(const char *token, const char *body, const char *idem) {
        char hdr[300];
        if (idem)
                snprintf(hdr, sizeof(hdr), "Idempotency-Key: %s", idem);
        return h_http("POST", "/v1/tasks", token, idem ? hdr : NULL, body, strlen(body));
}

/* Poll GET /v1/tasks/{id} until its status is want (or timeout). @returns the last status. */
static char *h_wait_status(const char *id, const char *token, const char *want, int timeout_ms) {
        char path[128], *last = NULL;
        int64_t end = af_clock_mono_ms() + timeout_ms;
        snprintf(path, sizeof(path), "/v1/tasks/%s", id);
        do {
                h_resp_t r = h_http("GET", path, token, NULL, NULL, 0);
                free(last);
                last = strdup(r.status == 200 ? h_str(r.json, "status") : "");
                h_resp_free(&r);
                if (!strcmp(last, want))
                        break;
                h_sleep_ms(100);
        } while (af_clock_mono_ms() < end);
        return last;
}

/* ---- the coordinator ---------------------------------------------------------------------- */

static bool h_write_config(void) {
        char tok_a[65], tok_b[65];
        FILE *f = fopen(H.config_path, "w");
        if (!f)
                return false;
        af_sha256_hex(H_TOKEN_A, strlen(H_TOKEN_A), tok_a);
        af_sha256_hex(H_TOKEN_B, strlen(H_TOKEN_B), tok_b);
        fprintf(f,
                "log:\n  level: info\n"
                "topic:\n  prefix: %s\n"
                "kafka:\n  bootstrap.servers: %s\n  session.timeout.ms: 6000\n"
                "  topic.metadata.refresh.interval.ms: 2000\n"
                "redis:\n  host: 127.0.0.1\n  port: %d\n"
                "http:\n  address: 127.0.0.1\n  port: %d\n  max_body: 64KiB\n"
                "coordinator:\n  group_id: %scoordinator\n  max_payload: 16KiB\n%s"
                "integrations:\n"
                "  noop:\n    method: POST\n    url: http://127.0.0.1:9/noop\n    timeout: 5s\n"
                "task_types:\n"
                "  noop:\n    integration: noop\n    lane: default\n    max_attempts: 3\n"
                "  claim.check:\n    integration: noop\n    lane: claims\n    max_attempts: 2\n"
                "%s"
                "tokens:\n"
                "  - principal: alice\n    tenant: tenant-a\n    roles: [submitter]\n"
                "    sha256: \"sha256:%s\"\n"
                "  - principal: bob\n    tenant: tenant-b\n    roles: [submitter]\n"
                "    sha256: \"sha256:%s\"\n"
                "service_keys:\n"
                "  - key_id: svc-a\n    principal: intake-svc\n    tenant: tenant-a\n"
                "    secret_env: AF_TEST_COORD_SVC_KEY\n",
                H.prefix, H.bootstrap, H.redis_port, H.http_port, H.prefix,
                H.extra_coordinator ? H.extra_coordinator : "",
                H.extra_task_types ? H.extra_task_types : "", tok_a, tok_b);
        fclose(f);
        /* The catalog version is the sha256 of the file's bytes. */
        f = fopen(H.config_path, "rb");
        char buf[8192];
        size_t n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        af_sha256_hex(buf, n, H.config_hash);
        return true;
}

static int h_spawn(void);

/* @returns 0 ok, 1 skip (no services), -1 failure. */
static int h_start(const char *name) {
        const char *kafka = getenv("AF_TEST_KAFKA");
        const char *redis = getenv("AF_TEST_REDIS_PORT");
        char id[AF_ULID_LEN + 1];

        if (!kafka || !*kafka || !redis || !*redis) {
                printf("SKIP: AF_TEST_KAFKA and AF_TEST_REDIS_PORT are not set\n");
                return 1;
        }
        af_ulid_new(id);
        for (char *p = id; *p; p++)
                *p = (char) (*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        snprintf(H.prefix, sizeof(H.prefix), "t%s.%s.", name, id);
        snprintf(H.bootstrap, sizeof(H.bootstrap), "%s", kafka);
        H.redis_port = atoi(redis);
        H.http_port = h_free_port();
        snprintf(H.base_url, sizeof(H.base_url), "http://127.0.0.1:%d", H.http_port);
        const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(H.config_path, sizeof(H.config_path), "%.160s/af-%s-%s.yaml", tmp, name, id);
        snprintf(H.log_path, sizeof(H.log_path), "%.160s/af-%s-%s.log", tmp, name, id);
        if (!h_create_topics() || !h_write_config())
                return -1;
        curl_global_init(CURL_GLOBAL_DEFAULT);
        return h_spawn();
}

/* Start (again) the coordinator on H's config. @returns 0 once ready, -1 on failure. */
static int h_spawn(void) {
        const char *args[] = {"--config", H.config_path, NULL};
        setenv("AF_TEST_COORD_SVC_KEY", H_SVC_SECRET, 1); /* the config's secret_env */
        H.pid = af_test_spawn("agentfleet-coordinator", H.log_path, args);
        /* Ready means: HTTP answers, Kafka metadata and Redis reachable. */
        for (int i = 0; i < 300; i++) {
                int st;
                if (waitpid(H.pid, &st, WNOHANG) == H.pid) {
                        fprintf(stderr, "coordinator exited early; log: %s\n", H.log_path);
                        H.pid = 0;
                        return -1;
                }
                h_resp_t r = h_http("GET", "/readyz", NULL, NULL, NULL, 0);
                long status = r.status;
                h_resp_free(&r);
                if (status == 200)
                        return 0;
                h_sleep_ms(100);
        }
        fprintf(stderr, "coordinator not ready; log: %s\n", H.log_path);
        return -1;
}

/* SIGTERM and wait. @returns the exit status (0 = drained cleanly), -1 if it had to be killed. */
static int h_stop(void) {
        int st = 0;
        if (H.pid <= 0)
                return -1;
        kill(H.pid, SIGTERM);
        for (int i = 0; i < 300; i++) {
                if (waitpid(H.pid, &st, WNOHANG) == H.pid) {
                        H.pid = 0;
                        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
                }
                h_sleep_ms(100);
        }
        kill(H.pid, SIGKILL);
        waitpid(H.pid, &st, 0);
        H.pid = 0;
        return -1;
}

#endif
