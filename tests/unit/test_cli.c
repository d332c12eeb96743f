/*
 * Unit tests of the agentfleet CLI's contract with scripts: status names, which statuses end
 * a task, the exit codes for HTTP answers and outcomes, percentiles and durations — and that
 * a TaskRequest the CLI signs for Kafka verifies with libcommon's wire_json, exactly as the
 * coordinator checks it, and that its tables line up whatever the data. The CLI's pure files are
 * compiled into this test directly (the CLI is a program, not a library).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../cli/output.c"
#include "../../cli/request_json.c"
#include "../../cli/status.c"

/* The table as printed into memory. */
static char *table_text(size_t ncols, const char *const *header, const char *const *cells,
                        size_t nrows) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        assert_non_null(f);
        af_cli_print_table(f, ncols, header, cells, nrows);
        fclose(f);
        return text;
}

static void test_table_columns_fit_their_widest_cell(void **state) {
        static const char *const header[] = {"ID", "CASE_KEY", "CREATED"};
        static const char *const cells[] = {
                "01A", "CLM-2026-104302-AMWA7N1Z-13", "2026-11-25 10:36:30", "01B", NULL,
                "-", /* a missing cell prints "-" */
        };
        char *text = table_text(3, header, cells, 2);
        assert_string_equal(text, "ID   CASE_KEY                     CREATED\n"
                                  "01A  CLM-2026-104302-AMWA7N1Z-13  2026-11-25 10:36:30\n"
                                  "01B  -                            -\n");
        free(text);
        /* No rows: the header alone, its own widths. */
        text = table_text(3, header, NULL, 0);
        assert_string_equal(text, "ID  CASE_KEY  CREATED\n");
        free(text);
}

static void test_status_names_round_trip(void **state) {
        for (int i = 1; i < AF_CLI_ST__CNT; i++)
                assert_int_equal(af_cli_status_parse(af_cli_status_name((af_cli_status_t) i)), i);
        assert_int_equal(af_cli_status_parse("SUCCEEDED"), AF_CLI_ST_SUCCEEDED);
        assert_int_equal(af_cli_status_parse("TASK_STATUS_DEAD"), AF_CLI_ST_DEAD);
        assert_int_equal(af_cli_status_parse("waiting-approval"), AF_CLI_ST_WAITING_APPROVAL);
        assert_int_equal(af_cli_status_parse("canceled"), AF_CLI_ST_CANCELLED);
        assert_int_equal(af_cli_status_parse("done"), AF_CLI_ST_UNKNOWN);
        assert_int_equal(af_cli_status_parse(NULL), AF_CLI_ST_UNKNOWN);
        assert_string_equal(af_cli_status_name((af_cli_status_t) 99), "unknown");
}

/* drive decodes TaskResult.status by number: the numbering must stay the proto's. */
static void test_status_numbers_match_the_proto(void **state) {
        assert_int_equal(af_cli_status_from_proto(AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_QUEUED),
                         AF_CLI_ST_QUEUED);
        assert_int_equal(
                af_cli_status_from_proto(AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED),
                AF_CLI_ST_SUCCEEDED);
        assert_int_equal(af_cli_status_from_proto(AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_DEAD),
                         AF_CLI_ST_DEAD);
        assert_int_equal(
                af_cli_status_from_proto(AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_WAITING_APPROVAL),
                AF_CLI_ST_WAITING_APPROVAL);
        assert_int_equal(
                af_cli_status_from_proto(AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_CANCELLED),
                AF_CLI_ST_CANCELLED);
        assert_int_equal(af_cli_status_from_proto(0), AF_CLI_ST_UNKNOWN);
        assert_int_equal(af_cli_status_from_proto(1000), AF_CLI_ST_UNKNOWN);
        assert_int_equal(af_cli_status_from_proto(AF_CLI_ST_CANCEL_REQUESTED),
                         AF_CLI_ST_UNKNOWN); /* an API-only state, never on the wire */
        for (int i = 1; i <= AF_CLI_ST_CANCELLED; i++)
                assert_string_equal(af_cli_status_name((af_cli_status_t) i),
                                    af_wire_status2str((Agentfleet__V1__TaskStatus) i));
}

static void test_final_statuses(void **state) {
        assert_true(af_cli_status_is_final(AF_CLI_ST_SUCCEEDED));
        assert_true(af_cli_status_is_final(AF_CLI_ST_FAILED));
        assert_true(af_cli_status_is_final(AF_CLI_ST_DEAD));
        assert_true(af_cli_status_is_final(AF_CLI_ST_REJECTED));
        assert_true(af_cli_status_is_final(AF_CLI_ST_CANCELLED));
        assert_false(af_cli_status_is_final(AF_CLI_ST_QUEUED));
        assert_false(af_cli_status_is_final(AF_CLI_ST_RUNNING));
        assert_false(af_cli_status_is_final(AF_CLI_ST_RETRYING));
        assert_false(af_cli_status_is_final(AF_CLI_ST_WAITING_APPROVAL));
        assert_false(af_cli_status_is_final(AF_CLI_ST_CANCEL_REQUESTED));
        assert_false(af_cli_status_is_final(AF_CLI_ST_UNKNOWN));
}

static void test_exit_codes_for_http_answers(void **state) {
        assert_int_equal(af_cli_exit_for_http(200), AF_CLI_EXIT_OK);
        assert_int_equal(af_cli_exit_for_http(201), AF_CLI_EXIT_OK);
        assert_int_equal(af_cli_exit_for_http(202), AF_CLI_EXIT_OK);
        assert_int_equal(af_cli_exit_for_http(401), AF_CLI_EXIT_AUTH);
        assert_int_equal(af_cli_exit_for_http(403), AF_CLI_EXIT_AUTH);
        assert_int_equal(af_cli_exit_for_http(404), AF_CLI_EXIT_NOT_FOUND);
        assert_int_equal(af_cli_exit_for_http(400), AF_CLI_EXIT_USAGE);
        assert_int_equal(af_cli_exit_for_http(413), AF_CLI_EXIT_USAGE);
        assert_int_equal(af_cli_exit_for_http(422), AF_CLI_EXIT_USAGE);
        assert_int_equal(af_cli_exit_for_http(409), AF_CLI_EXIT_TASK);
        assert_int_equal(af_cli_exit_for_http(429), AF_CLI_EXIT_SERVER);
        assert_int_equal(af_cli_exit_for_http(408), AF_CLI_EXIT_SERVER);
        assert_int_equal(af_cli_exit_for_http(500), AF_CLI_EXIT_SERVER);
        assert_int_equal(af_cli_exit_for_http(503), AF_CLI_EXIT_SERVER);
        assert_int_equal(af_cli_exit_for_http(302), AF_CLI_EXIT_SERVER);
        assert_int_equal(af_cli_exit_for_err(AF_ERR_TRANSPORT), AF_CLI_EXIT_SERVER);
        assert_int_equal(af_cli_exit_for_err(AF_ERR_TIMEOUT), AF_CLI_EXIT_SERVER);
        assert_int_equal(af_cli_exit_for_err(AF_ERR_UNAUTHENTICATED), AF_CLI_EXIT_AUTH);
}

static void test_exit_codes_for_outcomes(void **state) {
        assert_int_equal(af_cli_exit_for_status(AF_CLI_ST_SUCCEEDED), AF_CLI_EXIT_OK);
        assert_int_equal(af_cli_exit_for_status(AF_CLI_ST_FAILED), AF_CLI_EXIT_TASK);
        assert_int_equal(af_cli_exit_for_status(AF_CLI_ST_DEAD), AF_CLI_EXIT_TASK);
        assert_int_equal(af_cli_exit_for_status(AF_CLI_ST_REJECTED), AF_CLI_EXIT_TASK);
        assert_int_equal(af_cli_exit_for_status(AF_CLI_ST_CANCELLED), AF_CLI_EXIT_TASK);
        assert_int_equal(af_cli_exit_for_status(AF_CLI_ST_RUNNING), AF_CLI_EXIT_SERVER);
}

static void test_percentiles_nearest_rank(void **state) {
        int64_t v[100];
        int64_t one[1] = {42};

        for (int i = 0; i < 100; i++)
                v[i] = i + 1;
        assert_int_equal(af_cli_percentile(v, 100, 50), 50);
        assert_int_equal(af_cli_percentile(v, 100, 95), 95);
        assert_int_equal(af_cli_percentile(v, 100, 99), 99);
        assert_int_equal(af_cli_percentile(v, 100, 100), 100);
        assert_int_equal(af_cli_percentile(v, 100, 0), 1);
        assert_int_equal(af_cli_percentile(v, 10, 50), 5);
        assert_int_equal(af_cli_percentile(v, 10, 99), 10);
        assert_int_equal(af_cli_percentile(one, 1, 99), 42);
        assert_int_equal(af_cli_percentile(v, 0, 50), 0);
}

static void test_durations(void **state) {
        assert_int_equal(af_cli_parse_duration_ms("30s"), 30000);
        assert_int_equal(af_cli_parse_duration_ms("500ms"), 500);
        assert_int_equal(af_cli_parse_duration_ms("2m"), 120000);
        assert_int_equal(af_cli_parse_duration_ms("1h"), 3600000);
        assert_int_equal(af_cli_parse_duration_ms("5"), 5000);
        assert_int_equal(af_cli_parse_duration_ms("1.5s"), 1500);
        assert_int_equal(af_cli_parse_duration_ms("0"), 0);
        assert_int_equal(af_cli_parse_duration_ms(""), -1);
        assert_int_equal(af_cli_parse_duration_ms("-1s"), -1);
        assert_int_equal(af_cli_parse_duration_ms("abc"), -1);
        assert_int_equal(af_cli_parse_duration_ms("5x"), -1);
        assert_int_equal(af_cli_parse_duration_ms(NULL), -1);
}

/* The JSON the CLI produces to `requests` parses as a TaskRequest whose signature verifies
 * with the service key — and stops verifying when the payload is changed in transit. */
static void test_signed_request_verifies(void **state) {
        af_cli_request_t r = {
                .type = "claim.triage",
                .payload = "{\"claim_id\":\"C-1\", \"amount\": 12.5}",
                .case_key = "C-1",
                .idempotency_key = "drv-x-1",
                .request_id = "req-1",
                .priority = 3,
                .key_id = "intake-svc",
                .secret = "s3cret-key",
        };
        char errstr[256];
        char *text = af_cli_request_json(&r, errstr, sizeof(errstr));
        Agentfleet__V1__TaskRequest *req = NULL;
        char *forged;

        assert_non_null(text);
        assert_int_equal(
                af_wire_taskrequest_from_json(text, strlen(text), 0, &req, errstr, sizeof(errstr)),
                AF_OK);
        assert_string_equal(req->type, "claim.triage");
        assert_string_equal(req->key_id, "intake-svc");
        assert_string_equal(req->idempotency_key, "drv-x-1");
        assert_int_equal(req->priority, 3);
        assert_int_equal(strlen(req->traceparent), AF_CLI_TRACEPARENT_LEN);
        assert_true(af_wire_taskrequest_verify(req, "s3cret-key", 10));
        assert_false(af_wire_taskrequest_verify(req, "other-key", 9));
        af_wire_taskrequest_free(req);
        req = NULL;

        /* Change the amount inside the signed payload text. */
        forged = strdup(text);
        assert_non_null(strstr(forged, "12.5"));
        memcpy(strstr(forged, "12.5"), "99.5", 4);
        assert_int_equal(af_wire_taskrequest_from_json(forged, strlen(forged), 0, &req, errstr,
                                                       sizeof(errstr)),
                         AF_OK);
        assert_false(af_wire_taskrequest_verify(req, "s3cret-key", 10));
        af_wire_taskrequest_free(req);
        free(forged);
        free(text);
}

static void test_token_request_carries_no_signature(void **state) {
        af_cli_request_t r = {.type = "noop", .payload = "{}", .token = "demo-intake-token"};
        char errstr[256];
        char *text = af_cli_request_json(&r, errstr, sizeof(errstr));
        json_t *j;

        assert_non_null(text);
        j = json_loads(text, 0, NULL);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "token")), "demo-intake-token");
        assert_null(json_object_get(j, "signature"));
        json_decref(j);
        free(text);

        r.token = NULL; /* neither a key nor a token: refused, not sent unauthenticated */
        assert_null(af_cli_request_json(&r, errstr, sizeof(errstr)));
}

static void test_traceparent_shape(void **state) {
        char tp[AF_CLI_TRACEPARENT_LEN + 1];

        af_cli_traceparent(tp);
        assert_int_equal(strlen(tp), 55);
        assert_memory_equal(tp, "00-", 3);
        assert_int_equal(tp[35], '-');
        assert_int_equal(tp[52], '-');
        assert_string_equal(tp + 53, "01");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_table_columns_fit_their_widest_cell),
                cmocka_unit_test(test_status_names_round_trip),
                cmocka_unit_test(test_status_numbers_match_the_proto),
                cmocka_unit_test(test_final_statuses),
                cmocka_unit_test(test_exit_codes_for_http_answers),
                cmocka_unit_test(test_exit_codes_for_outcomes),
                cmocka_unit_test(test_percentiles_nearest_rank),
                cmocka_unit_test(test_durations),
                cmocka_unit_test(test_signed_request_verifies),
                cmocka_unit_test(test_token_request_carries_no_signature),
                cmocka_unit_test(test_traceparent_shape),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
