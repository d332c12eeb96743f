/*
 * Unit tests of config: table defaults, YAML file values, AGENTFLEET_* environment overrides,
 * --set precedence, the exact message of each kind of mistake, and secrets kept out of
 * --help, CONFIGURATION.md and log lines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "config_buffer.h"
#include "log.h"
#include "yamlwalk.h"

/* Load yaml text as file "t.yaml" into a fresh config. @returns the error; *confp kept. */
static af_err_t load_text(const char *yaml, af_config_t **confp, char *errstr, size_t size) {
        *confp = af_config_new();
        assert_non_null(*confp);
        errstr[0] = '\0';
        return af_config_load_buffer(*confp, "t.yaml", yaml, strlen(yaml), errstr, size);
}

/* Expect yaml to fail with exactly `msg`. */
static void expect_error(const char *yaml, const char *msg) {
        char errstr[512];
        af_config_t *conf;
        af_err_t err = load_text(yaml, &conf, errstr, sizeof(errstr));
        assert_int_equal(err, AF_ERR_CONFIG);
        assert_string_equal(errstr, msg);
        af_config_destroy(conf);
}

static void expect_env_error(const char *var, const char *msg_prefix) {
        char errstr[512] = "";
        char *envp[] = {(char *) var, NULL};
        af_config_t *conf = af_config_new();
        assert_int_equal(af_config_load_env(conf, envp, errstr, sizeof(errstr)), AF_ERR_CONFIG);
        if (strncmp(errstr, msg_prefix, strlen(msg_prefix)))
                fail_msg("got \"%s\", want a message starting with \"%s\"", errstr, msg_prefix);
        af_config_destroy(conf);
}

typedef struct kv_list_s {
        char text[1024];
} kv_list_t;

static void kv_collect(const char *key, const char *value, void *opaque) {
        kv_list_t *l = opaque;
        size_t n = strlen(l->text);
        snprintf(l->text + n, sizeof(l->text) - n, "%s=%s;", key, value);
}

static void test_config_defaults(void **state) {
        af_config_t *conf = af_config_new();
        kv_list_t kv = {""};
        assert_non_null(conf);
        assert_int_equal(af_config_int(conf, "redis.port"), 6379);
        assert_int_equal(af_config_int(conf, "redis.command_timeout"), 2000);
        assert_int_equal(af_config_int(conf, "redis.reconnect_min"), 100);
        assert_int_equal(af_config_int(conf, "http.max_body"), 1024 * 1024);
        assert_int_equal(af_config_int(conf, "coordinator.max_payload"), 256 * 1024);
        assert_int_equal(af_config_int(conf, "worker.concurrency"), 256);
        assert_int_equal(af_config_int(conf, "simagent.retry_after"), 1000);
        assert_string_equal(af_config_str(conf, "log.level"), "info");
        assert_string_equal(af_config_str(conf, "topic.prefix"), "agentfleet.");
        assert_string_equal(af_config_str(conf, "worker.lanes"), "default,claims");
        assert_string_equal(af_config_str(conf, "worker.id"), "");
        assert_null(af_config_str(conf, "redis.password"));
        assert_null(af_config_str(conf, "cli.token"));
        assert_null(af_config_path(conf));
        assert_true(af_config_is_default(conf, "audit.hmac_key"));
        af_config_kafka_foreach(conf, kv_collect, &kv);
        assert_string_equal(kv.text, "bootstrap.servers=127.0.0.1:9092;");
        af_config_destroy(conf);
        af_config_destroy(NULL);
}

/* Every row of the table is well formed: unique names, bounds that hold their default,
 * a description, a scope. */
static void test_config_table_is_consistent(void **state) {
        for (size_t i = 0; i < af_settings_cnt; i++) {
                const af_setting_t *s = &af_settings[i];
                assert_non_null(strchr(s->name, '.'));
                assert_true(s->desc && strlen(s->desc) > 10);
                assert_true(s->scope != 0);
                if (s->type != AF_SETTING_STRING && s->type != AF_SETTING_BOOL)
                        assert_true(s->min <= s->max);
                for (size_t j = 0; j < i; j++)
                        assert_string_not_equal(s->name, af_settings[j].name);
        }
}

static void test_config_file_values(void **state) {
        char errstr[512];
        af_config_t *conf;
        kv_list_t kv = {""};
        const char *yaml = "# settings\n"
                           "redis:\n"
                           "  port: 6380\n"
                           "  command_timeout: 250ms\n"
                           "http.max_body: 64KiB\n"
                           "worker:\n"
                           "  lease_ttl: 2m\n"
                           "  id:\n"
                           "kafka:\n"
                           "  linger.ms: 5\n"
                           "  bootstrap.servers: broker:19092\n"
                           "agents:\n"
                           "  anything: {goes: here}\n";
        assert_int_equal(load_text(yaml, &conf, errstr, sizeof(errstr)), AF_OK);
        assert_int_equal(af_config_int(conf, "redis.port"), 6380);
        assert_int_equal(af_config_int(conf, "redis.command_timeout"), 250);
        assert_int_equal(af_config_int(conf, "http.max_body"), 64 * 1024);
        assert_int_equal(af_config_int(conf, "worker.lease_ttl"), 120000);
        assert_string_equal(af_config_str(conf, "worker.id"), "");
        assert_string_equal(af_config_str(conf, "kafka.bootstrap.servers"), "broker:19092");
        assert_false(af_config_is_default(conf, "redis.port"));
        assert_true(af_config_is_default(conf, "redis.host"));
        /* Order of first mention; the table default came first. */
        af_config_kafka_foreach(conf, kv_collect, &kv);
        assert_string_equal(kv.text, "bootstrap.servers=broker:19092;linger.ms=5;");
        af_config_destroy(conf);
}

static void test_config_empty_file_is_fine(void **state) {
        const char *docs[] = {"", "# only a comment\n", "---\n", "~\n", "redis:\n"};
        for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
                char errstr[512];
                af_config_t *conf;
                assert_int_equal(load_text(docs[i], &conf, errstr, sizeof(errstr)), AF_OK);
                assert_int_equal(af_config_int(conf, "redis.port"), 6379);
                af_config_destroy(conf);
        }
}

static void test_config_example_file_loads(void **state) {
        const char *src = getenv("AF_SOURCE_DIR");
        char path[1024], errstr[512] = "";
        char *data = NULL;
        size_t len = 0;
        af_config_t *conf = af_config_new();
        assert_non_null(src);
        snprintf(path, sizeof(path), "%s/examples/claims/agentfleet.yaml", src);
        assert_int_equal(af_yaml_read_file(path, 1 << 22, &data, &len, errstr, sizeof(errstr)),
                         AF_OK);
        if (af_config_load_buffer(conf, path, data, len, errstr, sizeof(errstr)))
                fail_msg("%s", errstr);
        assert_int_equal(af_config_int(conf, "simagent.port"), 8090);
        assert_string_equal(af_config_str(conf, "worker.lanes"), "default,claims");
        assert_string_equal(af_config_str(conf, "cli.api_url"), "http://127.0.0.1:8080");
        free(data);
        af_config_destroy(conf);

        /* The file path and environment route. */
        conf = af_config_new();
        if (af_config_load(conf, path, errstr, sizeof(errstr)))
                fail_msg("%s", errstr);
        assert_string_equal(af_config_path(conf), path);
        af_config_destroy(conf);
}

static void test_config_env_overrides(void **state) {
        char errstr[512] = "";
        char *envp[] = {"PATH=/bin",
                        "AGENTFLEET_REDIS_PORT=7000",
                        "AGENTFLEET_WORKER_LEASE_TTL=45s",
                        "AGENTFLEET_KAFKA_LINGER_MS=5",
                        "AGENTFLEET_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092",
                        "AGENTFLEET_SIMAGENT_RATE429=15",
                        "AGENTFLEET_CACHE=/tmp/cache",
                        "AGENTFLEET_LLM_API_KEY=sk-not-a-setting",
                        "AGENTFLEET_INTAKE_KEY=also-not-a-setting",
                        "AGENTFLEET_CRM_TOKEN=a-secret-reference",
                        NULL};
        af_config_t *conf = af_config_new();
        kv_list_t kv = {""};
        if (af_config_load_env(conf, envp, errstr, sizeof(errstr)))
                fail_msg("%s", errstr);
        assert_int_equal(af_config_int(conf, "redis.port"), 7000);
        assert_int_equal(af_config_int(conf, "worker.lease_ttl"), 45000);
        assert_int_equal(af_config_int(conf, "simagent.rate429"), 15);
        assert_string_equal(af_config_str(conf, "kafka.bootstrap.servers"), "127.0.0.1:19092");
        af_config_kafka_foreach(conf, kv_collect, &kv);
        assert_string_equal(kv.text, "bootstrap.servers=127.0.0.1:19092;linger.ms=5;");
        af_config_destroy(conf);
}

/* default < file < environment < --set */
static void test_config_precedence(void **state) {
        char errstr[512];
        af_config_t *conf;
        char *envp[] = {"AGENTFLEET_REDIS_PORT=7000", "AGENTFLEET_HTTP_PORT=7100", NULL};
        assert_int_equal(load_text("redis: {port: 6380, host: redis.local}\nhttp:\n  port: 6390\n"
                                   "worker:\n  concurrency: 10\n",
                                   &conf, errstr, sizeof(errstr)),
                         AF_OK);
        assert_int_equal(af_config_load_env(conf, envp, errstr, sizeof(errstr)), AF_OK);
        assert_int_equal(af_config_set(conf, "redis.port", "7001", errstr, sizeof(errstr)), AF_OK);
        assert_int_equal(af_config_set(conf, "kafka.acks", "all", errstr, sizeof(errstr)), AF_OK);
        assert_int_equal(af_config_int(conf, "redis.port"), 7001);       /* --set */
        assert_int_equal(af_config_int(conf, "http.port"), 7100);        /* env */
        assert_int_equal(af_config_int(conf, "worker.concurrency"), 10); /* file */
        assert_string_equal(af_config_str(conf, "redis.host"), "redis.local");
        assert_int_equal(af_config_int(conf, "simagent.port"), 8090); /* default */
        af_config_destroy(conf);
}

static void test_config_set_arg(void **state) {
        char errstr[512];
        af_config_t *conf = af_config_new();
        assert_int_equal(af_config_set_arg(conf, "redis.port=6390", errstr, sizeof(errstr)), AF_OK);
        assert_int_equal(af_config_int(conf, "redis.port"), 6390);
        /* The value is everything after the first '='. */
        assert_int_equal(af_config_set_arg(conf, "topic.prefix=a=b.", errstr, sizeof(errstr)),
                         AF_OK);
        assert_string_equal(af_config_str(conf, "topic.prefix"), "a=b.");
        assert_int_equal(af_config_set_arg(conf, "redis.port", errstr, sizeof(errstr)),
                         AF_ERR_CONFIG);
        assert_string_equal(errstr, "--set redis.port: expected name=value");
        assert_int_equal(af_config_set_arg(conf, "=5", errstr, sizeof(errstr)), AF_ERR_CONFIG);
        assert_string_equal(errstr, "--set =5: expected name=value");
        af_config_destroy(conf);
}

static void test_config_bool_and_units(void **state) {
        int64_t v;
        bool b;
        assert_true(af_yaml_parse_duration("1h", &v) && v == 3600000);
        assert_true(af_yaml_parse_duration("1500", &v) && v == 1500);
        assert_false(af_yaml_parse_duration("5 s", &v));
        assert_false(af_yaml_parse_duration("-5s", &v));
        assert_false(af_yaml_parse_duration("99999999999999999999s", &v));
        assert_false(af_yaml_parse_duration("9223372036854775807h", &v));
        assert_true(af_yaml_parse_size("1MiB", &v) && v == 1048576);
        assert_true(af_yaml_parse_size("2kB", &v) && v == 2000);
        assert_false(af_yaml_parse_size("1XB", &v));
        assert_true(af_yaml_parse_bool("Yes", &b) && b);
        assert_true(af_yaml_parse_bool("off", &b) && !b);
        assert_false(af_yaml_parse_bool("maybe", &b));
}

static void test_config_error_wrong_int(void **state) {
        expect_error("redis:\n  port: abc\n",
                     "t.yaml:2: redis.port: expected an integer in [1, 65535], got \"abc\"");
}

static void test_config_error_out_of_bounds(void **state) {
        expect_error("redis:\n  port: 70000\n",
                     "t.yaml:2: redis.port: expected an integer in [1, 65535], got \"70000\"");
        expect_error("worker:\n  concurrency: 0\n",
                     "t.yaml:2: worker.concurrency: expected an integer in [1, 100000], "
                     "got \"0\"");
}

static void test_config_error_bad_kafka_property(void **state) {
        expect_error("kafka:\n  bootstrap.servers: x:1\n  linger.ms: lots\n",
                     "t.yaml:3: kafka.linger.ms: Invalid value for configuration property "
                     "\"queue.buffering.max.ms\"");
        expect_error("kafka:\n  no.such.thing: 1\n",
                     "t.yaml:2: kafka.no.such.thing: No such configuration property: "
                     "\"no.such.thing\"");
}

static void test_config_error_unknown_key(void **state) {
        expect_error("redis:\n  prot: 1\n",
                     "t.yaml:2: redis.prot: unknown setting (did you mean redis.port?)");
        expect_error("\n\nfrobnicate: 1\n", "t.yaml:3: frobnicate: unknown setting");
        expect_error("workers:\n  concurrency: 1\n",
                     "t.yaml:1: workers: unknown section (did you mean worker?)");
        expect_error("worker:\n  concurency: 1\n",
                     "t.yaml:2: worker.concurency: unknown setting (did you mean "
                     "worker.concurrency?)");
}

static void test_config_error_map_for_scalar(void **state) {
        expect_error("redis:\n  port:\n    number: 1\n",
                     "t.yaml:2: redis.port: expected an integer in [1, 65535], got a map");
}

static void test_config_error_sequence_for_scalar(void **state) {
        expect_error("worker:\n  lanes: [default, claims]\n",
                     "t.yaml:2: worker.lanes: expected a string, got a sequence");
        expect_error("kafka:\n  linger.ms: [5]\n",
                     "t.yaml:2: kafka.linger.ms: expected a librdkafka property value, got a "
                     "sequence");
}

static void test_config_error_scalar_for_section(void **state) {
        expect_error("redis: 6379\n",
                     "t.yaml:1: redis: expected a map of redis settings, got a scalar");
        expect_error("kafka: broker:9092\n",
                     "t.yaml:1: kafka: expected a map of librdkafka settings, got a scalar");
}

static void test_config_error_duplicate_key(void **state) {
        expect_error("redis:\n  port: 1\n  port: 2\n",
                     "t.yaml:3: redis.port: duplicate key (first at line 2)");
        /* The same setting spelt two ways. */
        expect_error("redis.port: 1\nredis:\n  port: 2\n",
                     "t.yaml:3: redis.port: duplicate key (first at line 1)");
        expect_error("kafka:\n  acks: all\nkafka.acks: 1\n",
                     "t.yaml:3: kafka.acks: duplicate key (first at line 2)");
}

static void test_config_error_bad_units(void **state) {
        expect_error("redis:\n  command_timeout: 5x\n",
                     "t.yaml:2: redis.command_timeout: expected a duration (250ms, 5s, 2m, 1h) "
                     "in [10ms, 10m], got \"5x\"");
        expect_error("redis:\n  command_timeout: 1h\n",
                     "t.yaml:2: redis.command_timeout: expected a duration (250ms, 5s, 2m, 1h) "
                     "in [10ms, 10m], got \"1h\"");
        expect_error("http:\n  max_body: 1XB\n",
                     "t.yaml:2: http.max_body: expected a size (512, 64KiB, 1MiB) in [1KiB, "
                     "64MiB], got \"1XB\"");
}

static void test_config_error_malformed_yaml(void **state) {
        expect_error("redis:\n  port: 1\n   host: x\n",
                     "t.yaml:3: malformed YAML: mapping values are not allowed in this context");
        expect_error("redis: [1, 2\n",
                     "t.yaml:2: malformed YAML: did not find expected ',' or ']' while parsing "
                     "a flow sequence");
        expect_error("a: &x 1\nb: *x\n", "t.yaml:2: YAML aliases (*x) are not supported");
        expect_error("- 1\n", "t.yaml:1: expected a map of settings at the top level, got a "
                              "sequence");
        expect_error("redis: {port: 1}\n---\nredis: {port: 2}\n",
                     "t.yaml:2: only one YAML document is allowed");
}

static void test_config_error_other_values(void **state) {
        expect_error("log:\n  level: loud\n",
                     "t.yaml:2: log.level: expected one of debug, info, warn, error, off, got "
                     "\"loud\"");
        expect_error("kafka:\n  linger.ms:\n",
                     "t.yaml:2: kafka.linger.ms: expected a librdkafka property value, got "
                     "nothing");
}

static void test_config_error_env(void **state) {
        expect_env_error("AGENTFLEET_REDIS_PORT=x",
                         "AGENTFLEET_REDIS_PORT: redis.port: expected an integer in [1, "
                         "65535], got \"x\"");
        expect_env_error("AGENTFLEET_REDIS_PROT=1",
                         "AGENTFLEET_REDIS_PROT: not a setting (did you mean "
                         "AGENTFLEET_REDIS_PORT?)");
        expect_env_error("AGENTFLEET_WORKER_SPEED=1", "AGENTFLEET_WORKER_SPEED: not a setting");
        expect_env_error("AGENTFLEET_REDSI_PORT=1",
                         "AGENTFLEET_REDSI_PORT: not a setting (did you mean "
                         "AGENTFLEET_REDIS_PORT?)");
        expect_env_error("AGENTFLEET_KAFKA_=1",
                         "AGENTFLEET_KAFKA_: kafka.: expected a librdkafka property name");
}

/* A variable the file's catalog refers to is not a misspelt setting, even in a section's
 * namespace; without that reference it is refused. */
static void test_config_env_catalog_references_allowed(void **state) {
        char errstr[512];
        af_config_t *conf;
        char *envp[] = {"AGENTFLEET_WORKER_CRM_TOKEN=s3cret", "AGENTFLEET_CLI_LLM_KEY=k", NULL};
        assert_int_equal(load_text("integrations:\n"
                                   "  crm:\n"
                                   "    url: http://crm\n"
                                   "    headers: {Authorization: "
                                   "\"Bearer ${env:AGENTFLEET_WORKER_CRM_TOKEN}\"}\n"
                                   "agents:\n"
                                   "  a: {api_key_env: AGENTFLEET_CLI_LLM_KEY}\n",
                                   &conf, errstr, sizeof(errstr)),
                         AF_OK);
        if (af_config_load_env(conf, envp, errstr, sizeof(errstr)))
                fail_msg("%s", errstr);
        af_config_destroy(conf);
        expect_env_error("AGENTFLEET_WORKER_CRM_TOKEN=s3cret",
                         "AGENTFLEET_WORKER_CRM_TOKEN: not a setting");
}

static void test_config_error_set(void **state) {
        char errstr[512];
        af_config_t *conf = af_config_new();
        assert_int_equal(af_config_set(conf, "redis.prt", "1", errstr, sizeof(errstr)),
                         AF_ERR_CONFIG);
        assert_string_equal(errstr, "redis.prt: unknown setting (did you mean redis.port?)");
        assert_int_equal(af_config_set(conf, "worker.lease_ttl", "0s", errstr, sizeof(errstr)),
                         AF_ERR_CONFIG);
        assert_string_equal(errstr, "worker.lease_ttl: expected a duration (250ms, 5s, 2m, 1h) "
                                    "in [1s, 1h], got \"0s\"");
        /* A failed set leaves the old value. */
        assert_int_equal(af_config_int(conf, "worker.lease_ttl"), 30000);
        af_config_destroy(conf);
}

static void test_config_missing_file(void **state) {
        char errstr[512];
        af_config_t *conf = af_config_new();
        assert_int_equal(
                af_config_load(conf, "/nonexistent/agentfleet.yaml", errstr, sizeof(errstr)),
                AF_ERR_CONFIG);
        assert_string_equal(errstr, "/nonexistent/agentfleet.yaml: cannot read: No such file or "
                                    "directory");
        af_config_destroy(conf);
}

static char *render(void (*fn)(FILE *out, unsigned scope), unsigned scope) {
        char *out = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);
        fn(f, scope);
        fclose(f);
        return out;
}

static void markdown(FILE *out, unsigned scope) {
        af_config_print_markdown(out);
}

static void test_config_help_by_scope_without_secrets(void **state) {
        char *help = render(af_config_print_help, AF_SCOPE_CLI);
        assert_non_null(strstr(help, "cli.api_url"));
        assert_non_null(strstr(help, "cli.token"));
        assert_null(strstr(help, "worker.concurrency"));
        assert_non_null(strstr(help, "(secret)"));
        free(help);

        help = render(af_config_print_help, AF_SCOPE_WORKER);
        assert_non_null(strstr(help, "worker.concurrency"));
        assert_non_null(strstr(help, "kafka.*"));
        assert_null(strstr(help, "simagent.seed"));
        assert_null(strstr(help, "agentfleet-dev-audit-key"));
        free(help);

        char *md = render(markdown, 0);
        assert_non_null(strstr(md, "| `redis.port` | integer | `6379` | 1 .. 65535 | "
                                   "`AGENTFLEET_REDIS_PORT` | coordinator, worker |"));
        assert_non_null(strstr(md, "| `audit.hmac_key` | string, secret | (secret) |"));
        assert_null(strstr(md, "agentfleet-dev-audit-key"));
        free(md);
}

static void test_config_secret_redacted_in_logs(void **state) {
        char errstr[512];
        af_config_t *conf;
        char *out = NULL;
        size_t len = 0;
        FILE *f;

        af_log_redact_clear();
        assert_int_equal(load_text("redis:\n  password: hunter2-redis-pass\n", &conf, errstr,
                                   sizeof(errstr)),
                         AF_OK);
        assert_string_equal(af_config_str(conf, "redis.password"), "hunter2-redis-pass");
        f = open_memstream(&out, &len);
        af_log_init("test", AF_LOG_INFO);
        af_log_set_output(f);
        af_info("connecting to redis with password %s", af_config_str(conf, "redis.password"));
        fclose(f);
        af_log_set_output(NULL);
        assert_null(strstr(out, "hunter2-redis-pass"));
        assert_non_null(strstr(out, "[redacted]"));
        free(out);

        /* librdkafka's secrets are redacted too. */
        assert_int_equal(af_config_set(conf, "kafka.sasl.password", "kafka-pass-9876", errstr,
                                       sizeof(errstr)),
                         AF_OK);
        char kline[] = "sasl.password=kafka-pass-9876";
        af_log_redact(kline);
        assert_string_equal(kline, "sasl.password=[redacted]");

        /* A secret given by --set is registered too. */
        assert_int_equal(af_config_set(conf, "cli.token", "tok-1234567890", errstr, sizeof(errstr)),
                         AF_OK);
        char line[] = "Authorization: Bearer tok-1234567890";
        af_log_redact(line);
        assert_string_equal(line, "Authorization: Bearer [redacted]");
        af_config_destroy(conf);
        af_log_redact_clear();
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_config_defaults),
                cmocka_unit_test(test_config_table_is_consistent),
                cmocka_unit_test(test_config_file_values),
                cmocka_unit_test(test_config_empty_file_is_fine),
                cmocka_unit_test(test_config_example_file_loads),
                cmocka_unit_test(test_config_env_overrides),
                cmocka_unit_test(test_config_precedence),
                cmocka_unit_test(test_config_set_arg),
                cmocka_unit_test(test_config_bool_and_units),
                cmocka_unit_test(test_config_error_wrong_int),
                cmocka_unit_test(test_config_error_out_of_bounds),
                cmocka_unit_test(test_config_error_bad_kafka_property),
                cmocka_unit_test(test_config_error_unknown_key),
                cmocka_unit_test(test_config_error_map_for_scalar),
                cmocka_unit_test(test_config_error_sequence_for_scalar),
                cmocka_unit_test(test_config_error_scalar_for_section),
                cmocka_unit_test(test_config_error_duplicate_key),
                cmocka_unit_test(test_config_error_bad_units),
                cmocka_unit_test(test_config_error_malformed_yaml),
                cmocka_unit_test(test_config_error_other_values),
                cmocka_unit_test(test_config_error_env),
                cmocka_unit_test(test_config_env_catalog_references_allowed),
                cmocka_unit_test(test_config_error_set),
                cmocka_unit_test(test_config_missing_file),
                cmocka_unit_test(test_config_help_by_scope_without_secrets),
                cmocka_unit_test(test_config_secret_redacted_in_logs),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
