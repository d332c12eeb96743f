/*
 * test_cli_kafka_setup: `agentfleet submit --via-kafka` and `drive` exit 2 (usage/config), not
 * 5 (server), when Kafka settings are wrong. Each kafka.* value is checked on its own when the
 * config loads; a combination librdkafka refuses is known only when af_producer_new() fails,
 * and that returns NULL with an errstr, so the CLI classifies the errstr
 * (af_cli_exit_for_kafka_setup). These tests feed it the real messages of libcommon/kafka.c,
 * so a change of wording there fails here. No broker is needed: rd_kafka_new does not connect.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../cli/status.c"
#include "config.h"
#include "kafka.h"
#include "loop.h"

static af_producer_t *producer_with(af_loop_t *loop, const char *set, char *errstr,
                                    size_t errstr_size) {
        af_config_t *conf = af_config_new();
        af_producer_t *p;
        assert_non_null(conf);
        assert_int_equal(
                af_config_set_arg(conf, "kafka.bootstrap.servers=127.0.0.1:1", errstr, errstr_size),
                AF_OK);
        if (set)
                assert_int_equal(af_config_set_arg(conf, set, errstr, errstr_size), AF_OK);
        p = af_producer_new(loop, conf, errstr, errstr_size);
        af_config_destroy(conf);
        return p;
}

static void test_refused_combination_is_a_usage_error(void **state) {
        char errstr[512] = "";
        af_loop_t *loop = af_loop_new(errstr, sizeof(errstr));
        assert_non_null(loop);
        /* Valid alone, refused with the idempotence the producer forces. */
        af_producer_t *p = producer_with(loop, "kafka.acks=1", errstr, sizeof(errstr));
        assert_null(p);
        assert_int_equal(af_cli_exit_for_kafka_setup(errstr), AF_CLI_EXIT_USAGE);
        af_loop_destroy(loop);
}

static void test_good_settings_make_a_producer(void **state) {
        char errstr[512] = "";
        af_loop_t *loop = af_loop_new(errstr, sizeof(errstr));
        assert_non_null(loop);
        af_producer_t *p = producer_with(loop, NULL, errstr, sizeof(errstr));
        assert_non_null(p);
        af_producer_destroy(p);
        af_loop_destroy(loop);
}

static void test_machine_failures_are_server_errors(void **state) {
        assert_int_equal(af_cli_exit_for_kafka_setup("out of memory"), AF_CLI_EXIT_SERVER);
        assert_int_equal(af_cli_exit_for_kafka_setup("pipe: Too many open files"),
                         AF_CLI_EXIT_SERVER);
        assert_int_equal(af_cli_exit_for_kafka_setup(NULL), AF_CLI_EXIT_SERVER);
        assert_int_equal(af_cli_exit_for_kafka_setup("kafka.linger.ms: Invalid value"),
                         AF_CLI_EXIT_USAGE);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_refused_combination_is_a_usage_error),
                cmocka_unit_test(test_good_settings_make_a_producer),
                cmocka_unit_test(test_machine_failures_are_server_errors),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
