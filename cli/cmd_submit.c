/*
 * cmd_submit: `agentfleet submit` — admit one task, over the API (POST /v1/tasks with an
 * Idempotency-Key when given, so a retried submit returns the same task) or, with
 * --via-kafka, as a JSON TaskRequest produced straight to the `requests` topic the way
 * another service would (signed with a service key, or carrying a token).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "ids.h"
#include "jsonfmt.h"
#include "kafka.h"

#include "cli.h"

#define AF_CLI_MAX_PAYLOAD (16u * 1024 * 1024) /* the server caps lower; this bounds us */

static void submit_usage(FILE *out) {
        fprintf(out,
                "usage: agentfleet submit --type TYPE [--payload-file FILE | --payload JSON]\n"
                "                         [--case-key K] [--idempotency-key K] [--priority N]\n"
                "                         [--via-kafka [--key-id ID]] [--json]\n"
                "  The payload is read from stdin when neither --payload-file nor --payload is\n"
                "  given (\"-\" as FILE is stdin too). Prints the task id, or with --json the\n"
                "  API's answer. --via-kafka produces a JSON TaskRequest to the requests topic,\n"
                "  signed with service key ID (secret from $AGENTFLEET_INTAKE_KEY), or carrying\n"
                "  the token when no key is given; it prints the request id once the broker\n"
                "  has it. --timeout does not bound that wait: an unreachable broker fails only\n"
                "  after kafka.message.timeout.ms (librdkafka's default 5 min; e.g.\n"
                "  --set kafka.message.timeout.ms=10000).\n");
}

/* Read all of f up to the cap. @returns malloc'd NUL-terminated text or NULL (errstr). */
static char *read_all(FILE *f, const char *name, char *errstr, size_t errstr_size) {
        af_buf_t b;
        char chunk[65536];
        size_t n;

        af_buf_init(&b, AF_CLI_MAX_PAYLOAD);
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
                if (af_buf_append(&b, chunk, n) != AF_OK) {
                        snprintf(errstr, errstr_size, "%s: larger than %u bytes", name,
                                 AF_CLI_MAX_PAYLOAD);
                        return NULL;
                }
        }
        if (ferror(f)) {
                snprintf(errstr, errstr_size, "%s: read error", name);
                af_buf_free(&b);
                return NULL;
        }
        if (!b.data && af_buf_puts(&b, "") != AF_OK)
                return NULL;
        return af_buf_steal(&b, NULL);
}

/* The payload text from the options or stdin, checked to be JSON. @returns it or NULL. */
static char *load_payload(const char *inline_json, const char *file, char *errstr,
                          size_t errstr_size) {
        char *text = NULL;
        json_error_t jerr;
        json_t *j;

        if (inline_json) {
                text = strdup(inline_json);
        } else if (file && strcmp(file, "-")) {
                FILE *f = fopen(file, "rb");
                if (!f) {
                        snprintf(errstr, errstr_size, "%s: cannot open", file);
                        return NULL;
                }
                text = read_all(f, file, errstr, errstr_size);
                fclose(f);
        } else {
                if (!file && isatty(STDIN_FILENO)) {
                        snprintf(errstr, errstr_size,
                                 "no payload: give --payload-file FILE or pipe JSON on stdin");
                        return NULL;
                }
                text = read_all(stdin, "stdin", errstr, errstr_size);
        }
        if (!text)
                return NULL;
        j = json_loads(text, JSON_DECODE_ANY, &jerr);
        if (!j) {
                snprintf(errstr, errstr_size, "payload is not JSON: line %d column %d: %s",
                         jerr.line, jerr.column, jerr.text);
                free(text);
                return NULL;
        }
        json_decref(j);
        return text;
}

/* ---- over the API ------------------------------------------------------------------------ */

static int submit_api(af_cli_t *cli, const af_cli_request_t *r) {
        char errstr[1024], idem_hdr[512];
        const char *hdrs[2] = {NULL, NULL};
        json_t *body = NULL, *answer = NULL;
        char *text = NULL;
        int status = 0, rc = AF_CLI_EXIT_SERVER;

        /* The payload travels as the user's exact text (the API takes a string holding
         * JSON): re-encoding it would rewrite numbers (172.46 -> 172.46000000000001). */
        body = json_pack("{s:s, s:s}", "type", r->type, "payload", r->payload);
        if (!body)
                goto out;
        if (r->case_key)
                json_object_set_new(body, "case_key", json_string(r->case_key));
        if (r->priority)
                json_object_set_new(body, "priority", json_integer(r->priority));
        if (r->idempotency_key) {
                json_object_set_new(body, "idempotency_key", json_string(r->idempotency_key));
                snprintf(idem_hdr, sizeof(idem_hdr), "Idempotency-Key: %s", r->idempotency_key);
                hdrs[0] = idem_hdr;
        }
        text = af_json_dumps(body, JSON_COMPACT);
        if (!text)
                goto out;
        rc = af_cli_api(cli, "POST", "/v1/tasks", text, hdrs, &status, &answer, errstr,
                        sizeof(errstr));
        if (rc != AF_CLI_EXIT_OK) {
                fprintf(stderr, "agentfleet submit: %s\n", errstr);
                if (cli->json && answer)
                        af_cli_print_json(answer);
                goto out;
        }
        /* A repeat of an earlier submit returns that task: say so, or a script may believe it
         * created a new one. stdout stays the task (id, or the API's JSON). */
        if (cli->replayed)
                fprintf(stderr,
                        "agentfleet submit: idempotency key %s was used before: this is the task "
                        "that submit created, not a new one\n",
                        r->idempotency_key ? r->idempotency_key : "?");
        if (cli->json) {
                af_cli_print_json(answer ? answer : json_null());
        } else if (af_cli_task_id(answer)) {
                printf("%s\n", af_cli_task_id(answer));
        } else {
                fprintf(stderr, "agentfleet submit: HTTP %d without a task id\n", status);
                rc = AF_CLI_EXIT_SERVER;
        }
out:
        json_decref(body);
        json_decref(answer);
        free(text);
        return rc;
}

/* ---- straight to Kafka -------------------------------------------------------------------- */

typedef struct kafka_wait_s {
        af_cli_t *cli;
        bool done;
        af_err_t err;
        char errstr[256];
        int32_t partition;
        int64_t offset;
} kafka_wait_t;

static void submit_delivered_cb(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                                void *opaque) {
        kafka_wait_t *w = opaque;

        w->done = true;
        w->err = err;
        w->partition = partition;
        w->offset = offset;
        snprintf(w->errstr, sizeof(w->errstr), "%s", errstr ? errstr : "");
        af_loop_stop(w->cli->loop);
}

static int submit_kafka(af_cli_t *cli, af_cli_request_t *r) {
        char errstr[512], topic[256], traceparent[AF_CLI_TRACEPARENT_LEN + 1];
        af_producer_t *p = NULL;
        kafka_wait_t w = {.cli = cli};
        char *text = NULL;
        const char *key;
        int rc = AF_CLI_EXIT_SERVER;
        af_kafka_header_t hdrs[2];

        af_cli_traceparent(traceparent);
        r->traceparent = traceparent;
        text = af_cli_request_json(r, errstr, sizeof(errstr));
        if (!text) {
                fprintf(stderr, "agentfleet submit: %s\n", errstr);
                rc = AF_CLI_EXIT_USAGE;
                goto out;
        }
        p = af_producer_new(cli->loop, cli->conf, errstr, sizeof(errstr));
        if (!p) {
                /* errstr names the part ("kafka producer: ...", "kafka.acks: ..."). */
                fprintf(stderr, "agentfleet submit: %s\n", errstr);
                rc = af_cli_exit_for_kafka_setup(errstr);
                goto out;
        }
        hdrs[0] = (af_kafka_header_t){"content-type", "application/json", 16};
        hdrs[1] = (af_kafka_header_t){"traceparent", traceparent, strlen(traceparent)};
        key = r->case_key ? r->case_key : r->idempotency_key ? r->idempotency_key : r->request_id;
        af_kafka_topic(cli->conf, "requests", topic, sizeof(topic));
        if (af_producer_send(p, topic, -1, key, strlen(key), text, strlen(text), hdrs, 2,
                             submit_delivered_cb, &w, errstr, sizeof(errstr)) != AF_OK) {
                fprintf(stderr, "agentfleet submit: produce to %s: %s\n", topic, errstr);
                goto out;
        }
        while (!w.done)
                if (af_loop_run(cli->loop) < 0)
                        break;
        if (!w.done || w.err != AF_OK) {
                /* A broker that never answers shows up only here, after librdkafka's
                 * message.timeout.ms (5 min by default): name the brokers we tried. */
                const char *servers = af_config_str(cli->conf, "kafka.bootstrap.servers");
                fprintf(stderr,
                        "agentfleet submit: delivery to %s failed: %s (brokers %s, "
                        "kafka.bootstrap.servers)\n",
                        topic, w.done ? w.errstr : "event loop failed", servers ? servers : "?");
                goto out;
        }
        if (cli->json) {
                json_t *j =
                        json_pack("{s:s, s:s, s:s, s:i, s:I}", "request_id", r->request_id,
                                  "idempotency_key", r->idempotency_key, "topic", topic,
                                  "partition", (int) w.partition, "offset", (json_int_t) w.offset);
                af_cli_print_json(j);
                json_decref(j);
        } else {
                printf("%s\n", r->request_id);
        }
        rc = AF_CLI_EXIT_OK;
out:
        af_producer_destroy(p);
        free(text);
        return rc;
}

int af_cli_cmd_submit(af_cli_t *cli, int argc, char **argv) {
        static const struct option opts[] = {
                {"type", required_argument, NULL, 't'},
                {"payload-file", required_argument, NULL, 'f'},
                {"payload", required_argument, NULL, 'p'},
                {"case-key", required_argument, NULL, 'c'},
                {"idempotency-key", required_argument, NULL, 'i'},
                {"priority", required_argument, NULL, 'P'},
                {"via-kafka", no_argument, NULL, 'k'},
                {"key-id", required_argument, NULL, 'K'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        af_cli_request_t r = {0};
        const char *file = NULL, *inline_json = NULL;
        char errstr[512], request_id[AF_ULID_LEN + 1], idem[AF_ULID_LEN + 8];
        char *payload = NULL;
        bool via_kafka = false;
        int c, rc = AF_CLI_EXIT_USAGE;

        optind = 0;
        while ((c = getopt_long(argc, argv, "t:f:p:c:i:P:kK:h", opts, NULL)) != -1) {
                switch (c) {
                case 't':
                        r.type = optarg;
                        break;
                case 'f':
                        file = optarg;
                        break;
                case 'p':
                        inline_json = optarg;
                        break;
                case 'c':
                        r.case_key = optarg;
                        break;
                case 'i':
                        r.idempotency_key = optarg;
                        break;
                case 'P': {
                        char *end;
                        long v = strtol(optarg, &end, 10);
                        if (*end || v < 0 || v > 9) {
                                fprintf(stderr,
                                        "agentfleet submit: --priority: expected 0..9, "
                                        "got \"%s\"\n",
                                        optarg);
                                goto out;
                        }
                        r.priority = (int) v;
                        break;
                }
                case 'k':
                        via_kafka = true;
                        break;
                case 'K':
                        r.key_id = optarg;
                        break;
                case 'h':
                        submit_usage(stdout);
                        rc = AF_CLI_EXIT_OK;
                        goto out;
                default:
                        submit_usage(stderr);
                        goto out;
                }
        }
        if (optind != argc || !r.type || !*r.type) {
                fprintf(stderr, "agentfleet submit: %s\n",
                        optind != argc ? "unexpected argument" : "--type is required");
                submit_usage(stderr);
                goto out;
        }
        if (file && inline_json) {
                fprintf(stderr, "agentfleet submit: give --payload-file or --payload, not both\n");
                goto out;
        }
        payload = load_payload(inline_json, file, errstr, sizeof(errstr));
        if (!payload) {
                fprintf(stderr, "agentfleet submit: %s\n", errstr);
                goto out;
        }
        r.payload = payload;
        if (!via_kafka) {
                rc = submit_api(cli, &r);
                goto out;
        }
        /* Straight to Kafka: nothing answers with a task id, so the request needs ids of its
         * own that let the producer find the task again (idempotency key) and audit it. */
        af_ulid_new(request_id);
        r.request_id = request_id;
        if (!r.idempotency_key) {
                snprintf(idem, sizeof(idem), "cli-%s", request_id);
                r.idempotency_key = idem;
        }
        if (r.key_id) {
                r.secret = getenv("AGENTFLEET_INTAKE_KEY");
                if (!r.secret || !*r.secret) {
                        fprintf(stderr, "agentfleet submit: --key-id needs the key's secret in "
                                        "$AGENTFLEET_INTAKE_KEY\n");
                        goto out;
                }
        } else {
                r.token = cli->token;
                if (!r.token) {
                        fprintf(stderr, "agentfleet submit: --via-kafka needs --key-id (and "
                                        "$AGENTFLEET_INTAKE_KEY) or a token\n");
                        rc = AF_CLI_EXIT_AUTH;
                        goto out;
                }
        }
        rc = submit_kafka(cli, &r);
out:
        free(payload);
        return rc;
}
