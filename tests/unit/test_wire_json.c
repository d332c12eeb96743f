/*
 * Unit tests of libcommon/wire_json: the JSON form of TaskRequest (every field, both payload
 * forms, precise errors naming the field), the JSON views of Task/TaskResult/DeadLetter, the
 * status names, and the signing rule shared with producers in other languages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "dlq.h"
#include "jsonfmt.h"
#include "wire_json.h"

static Agentfleet__V1__TaskRequest *parse_ok(const char *json, unsigned flags) {
        char errstr[256] = "";
        Agentfleet__V1__TaskRequest *req = NULL;
        af_err_t err = af_wire_taskrequest_from_json(json, strlen(json), flags, &req, errstr,
                                                     sizeof(errstr));
        if (err)
                print_error("unexpected error: %s\n", errstr);
        assert_int_equal(err, AF_OK);
        assert_non_null(req);
        return req;
}

static void parse_fails(const char *json, unsigned flags, const char *want_in_msg) {
        char errstr[256] = "";
        Agentfleet__V1__TaskRequest *req = (void *) 1;
        af_err_t err = af_wire_taskrequest_from_json(json, strlen(json), flags, &req, errstr,
                                                     sizeof(errstr));
        assert_int_equal(err, AF_ERR_INVALID);
        assert_null(req);
        if (!strstr(errstr, want_in_msg))
                fail_msg("error \"%s\" does not contain \"%s\"", errstr, want_in_msg);
}

static void test_request_all_fields(void **state) {
        Agentfleet__V1__TaskRequest *req = parse_ok(
                "{\"type\":\"claim.triage\",\"tenant\":\"acme\",\"principal\":\"intake\","
                "\"case_key\":\"C-1\",\"idempotency_key\":\"k1\",\"payload\":{\"b\":1,\"a\":[true]}"
                ","
                "\"priority\":5,\"deadline_ms\":1700000000000,\"max_attempts\":3,"
                "\"traceparent\":\"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\","
                "\"token\":\"t\",\"key_id\":\"svc\",\"signature\":\"ab\",\"request_id\":\"r1\"}",
                AF_WIRE_F_STRICT);
        assert_string_equal(req->type, "claim.triage");
        assert_string_equal(req->tenant, "acme");
        assert_string_equal(req->principal, "intake");
        assert_string_equal(req->case_key, "C-1");
        assert_string_equal(req->idempotency_key, "k1");
        /* object payloads are dumped compact with sorted keys (the signing rule) */
        assert_string_equal(req->payload, "{\"a\":[true],\"b\":1}");
        assert_int_equal(req->priority, 5);
        assert_int_equal(req->deadline_ms, 1700000000000LL);
        assert_int_equal(req->max_attempts, 3);
        assert_string_equal(req->token, "t");
        assert_string_equal(req->key_id, "svc");
        assert_string_equal(req->signature, "ab");
        assert_string_equal(req->request_id, "r1");
        af_wire_taskrequest_free(req);
}

static void test_request_payload_string_kept_verbatim(void **state) {
        Agentfleet__V1__TaskRequest *req =
                parse_ok("{\"type\":\"x\",\"payload\":\"{\\\"z\\\": 1, \\\"a\\\": 2}\"}", 0);
        assert_string_equal(req->payload, "{\"z\": 1, \"a\": 2}");
        assert_string_equal(req->tenant, ""); /* absent = empty, like proto3 */
        af_wire_taskrequest_free(req);
}

static void test_request_nulls_are_absent(void **state) {
        Agentfleet__V1__TaskRequest *req =
                parse_ok("{\"type\":\"x\",\"priority\":null,\"payload\":null}", AF_WIRE_F_STRICT);
        assert_int_equal(req->priority, 0);
        assert_string_equal(req->payload, "");
        af_wire_taskrequest_free(req);
}

static void test_request_unknown_field(void **state) {
        parse_fails("{\"type\":\"x\",\"tpye\":\"y\"}", AF_WIRE_F_STRICT, "unknown field \"tpye\"");
        /* without STRICT it is ignored, like an unknown protobuf field */
        af_wire_taskrequest_free(parse_ok("{\"type\":\"x\",\"tpye\":\"y\"}", 0));
}

static void test_request_errors_name_the_field(void **state) {
        parse_fails("{\"priority\":\"high\"}", 0,
                    "field \"priority\": expected an integer, got a string");
        parse_fails("{\"priority\":1.5}", 0, "field \"priority\"");
        parse_fails("{\"priority\":4294967296}", 0,
                    "field \"priority\": 4294967296 is out of range");
        parse_fails("{\"type\":7}", 0, "field \"type\": expected a string, got an integer");
        parse_fails("{\"payload\":[1]}", 0, "field \"payload\": expected an object or a string");
        parse_fails("{\"case_key\":\"a\\u0000b\"}", 0, "is not allowed");
        parse_fails("{\"deadline_ms\":true}", 0,
                    "field \"deadline_ms\": expected an integer, got a boolean");
}

static void test_request_not_json(void **state) {
        parse_fails("{\"type\":", 0, "invalid JSON at line 1");
        parse_fails("[1,2]", 0, "expected a JSON object, got an array");
        parse_fails("", 0, "invalid JSON");
        parse_fails("{\"type\":\"a\",\"type\":\"b\"}", 0, "duplicate");
}

static void test_request_to_json_hides_token(void **state) {
        Agentfleet__V1__TaskRequest *req =
                parse_ok("{\"type\":\"x\",\"token\":\"s3cret-token\",\"payload\":{\"n\":1}}", 0);
        json_t *o = af_wire_taskrequest_to_json(req);
        char *s = json_dumps(o, JSON_COMPACT);
        assert_null(strstr(s, "s3cret-token"));
        assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "payload"), "n")),
                         1);
        free(s);
        json_decref(o);
        af_wire_taskrequest_free(req);
}

static void test_task_to_json(void **state) {
        Agentfleet__V1__Task t = AGENTFLEET__V1__TASK__INIT;
        Agentfleet__V1__Versions v = AGENTFLEET__V1__VERSIONS__INIT;
        v.config_hash = "abc";
        t.id = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
        t.type = "noop";
        t.payload = "{\"k\":\"v\"}";
        t.attempt = 1;
        t.created_at_ms = 42;
        t.versions = &v;
        t.origin = AGENTFLEET__V1__ORIGIN__ORIGIN_KAFKA;
        json_t *o = af_wire_task_to_json(&t);
        assert_string_equal(json_string_value(json_object_get(o, "id")), t.id);
        assert_string_equal(json_string_value(json_object_get(json_object_get(o, "payload"), "k")),
                            "v");
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(o, "versions"), "config_hash")),
                "abc");
        assert_string_equal(json_string_value(json_object_get(o, "origin")), "kafka");
        assert_int_equal(json_integer_value(json_object_get(o, "created_at_ms")), 42);
        json_decref(o);
}

static void test_result_to_json(void **state) {
        Agentfleet__V1__TaskResult r = AGENTFLEET__V1__TASK_RESULT__INIT;
        Agentfleet__V1__Error e = AGENTFLEET__V1__ERROR__INIT;
        Agentfleet__V1__Usage u = AGENTFLEET__V1__USAGE__INIT;
        r.task_id = "T";
        r.status = AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED;
        r.output = "not json";
        e.code = "http_503";
        e.message = "upstream";
        e.retriable = 1;
        r.error = &e;
        u.prompt_tokens = 350;
        r.usage = &u;
        json_t *o = af_wire_taskresult_to_json(&r);
        assert_string_equal(json_string_value(json_object_get(o, "status")), "failed");
        assert_string_equal(json_string_value(json_object_get(o, "output")), "not json");
        assert_true(json_is_true(json_object_get(json_object_get(o, "error"), "retriable")));
        assert_int_equal(
                json_integer_value(json_object_get(json_object_get(o, "usage"), "prompt_tokens")),
                350);
        assert_true(json_is_null(json_object_get(o, "timings")));
        json_decref(o);
}

static void test_status_names(void **state) {
        assert_string_equal(
                af_wire_status2str(AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_WAITING_APPROVAL),
                "waiting_approval");
        assert_int_equal(af_wire_str2status("cancelled"),
                         AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_CANCELLED);
        assert_int_equal(af_wire_str2status("unspecified"), -1);
        assert_int_equal(af_wire_str2status("bogus"), -1);
        assert_string_equal(af_wire_status2str((Agentfleet__V1__TaskStatus) 99), "unspecified");
        assert_true(af_wire_status_is_final(AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_DEAD));
        assert_false(af_wire_status_is_final(AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_RUNNING));
        assert_false(af_wire_status_is_final(AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_QUEUED));
}

static void test_sign_canonical_string(void **state) {
        Agentfleet__V1__TaskRequest req = AGENTFLEET__V1__TASK_REQUEST__INIT;
        req.type = "t";
        req.tenant = "acme";
        req.payload = "{}";
        req.request_id = "r";
        req.token = "ignored";
        af_buf_t b;
        af_buf_init(&b, 1024);
        assert_int_equal(af_wire_taskrequest_canonical(&req, &b), AF_OK);
        assert_string_equal(af_buf_str(&b), "t\nacme\n\n\n\n{}\nr");

        char sig[65], want[65];
        af_hmac_sha256_hex("key", 3, af_buf_str(&b), b.len, want);
        assert_int_equal(af_wire_taskrequest_sign(&req, "key", 3, sig), AF_OK);
        assert_string_equal(sig, want);
        req.signature = sig;
        assert_true(af_wire_taskrequest_verify(&req, "key", 3));
        assert_false(af_wire_taskrequest_verify(&req, "other", 5));
        req.case_key = "tampered";
        assert_false(af_wire_taskrequest_verify(&req, "key", 3));
        req.case_key = "";
        req.signature = "abc"; /* wrong length */
        assert_false(af_wire_taskrequest_verify(&req, "key", 3));
        af_buf_free(&b);
}

static void test_dlq_pack_roundtrip(void **state) {
        af_dlq_entry_t e;
        memset(&e, 0, sizeof(e));
        e.source_topic = "agentfleet.requests";
        e.source_partition = 2;
        e.source_offset = 77;
        e.original = "\x01\x02garbage";
        e.original_len = 9;
        e.content_type = "application/x-protobuf";
        e.component = "coordinator";
        e.err = AF_ERR_INVALID;
        e.reason = "protobuf decode failed";
        e.attempts = 1;
        size_t len = 0;
        char id[27];
        uint8_t *bytes = af_dlq_pack(&e, &len, id);
        assert_non_null(bytes);
        Agentfleet__V1__DeadLetter *dl = agentfleet__v1__dead_letter__unpack(NULL, len, bytes);
        assert_non_null(dl);
        assert_string_equal(dl->id, id);
        assert_string_equal(dl->reason, "protobuf decode failed");
        assert_string_equal(dl->error->code, af_err2code(AF_ERR_INVALID));
        assert_int_equal(dl->source_offset, 77);
        assert_int_equal(dl->original.len, 9);
        assert_memory_equal(dl->original.data, "\x01\x02garbage", 9);
        json_t *o = af_wire_deadletter_to_json(dl);
        assert_string_equal(json_string_value(json_object_get(o, "original_hex")),
                            "010267617262616765");
        json_decref(o);
        agentfleet__v1__dead_letter__free_unpacked(dl, NULL);
        free(bytes);

        /* Too large for the dlq topic: the same record without the original, saying so. */
        char *why = NULL;
        assert_true(af_dlq_omit_original(&e, "agentfleet.dlq", &why));
        assert_non_null(why);
        assert_ptr_equal(e.reason, why);
        assert_string_equal(why, "protobuf decode failed (original omitted: too large for "
                                 "agentfleet.dlq; it stays at agentfleet.requests[2]@77)");
        assert_null(e.original);
        assert_int_equal(e.original_len, 0);
        bytes = af_dlq_pack(&e, &len, id);
        assert_non_null(bytes);
        dl = agentfleet__v1__dead_letter__unpack(NULL, len, bytes);
        assert_non_null(dl);
        assert_int_equal(dl->original.len, 0);
        assert_string_equal(dl->reason, why);
        agentfleet__v1__dead_letter__free_unpacked(dl, NULL);
        free(bytes);
        /* Nothing left to drop: nothing smaller to send. */
        char *again = NULL;
        assert_false(af_dlq_omit_original(&e, "agentfleet.dlq", &again));
        assert_null(again);
        free(why);
}

static void check_fails(const char *json, size_t max, af_err_t want, const char *needle) {
        Agentfleet__V1__TaskRequest *req = parse_ok(json, 0);
        char errstr[256] = "";
        af_err_t err = af_wire_taskrequest_check(req, max, 1000, errstr, sizeof(errstr));
        assert_int_equal(err, want);
        if (!strstr(errstr, needle))
                fail_msg("error \"%s\" does not contain \"%s\"", errstr, needle);
        af_wire_taskrequest_free(req);
}

/* A payload that came as an object is known to be one: the check trusts it (and still
 * checks its size); one that came as a string of JSON text is parsed. */
static void test_payload_object_is_not_parsed_again(void **state) {
        Agentfleet__V1__TaskRequest *req = NULL;
        char errstr[256];
        bool object = false;

        assert_int_equal(af_wire_taskrequest_from_json_ex("{\"payload\":{\"b\":1,\"a\":[2]}}", 27,
                                                          0, &req, &object, errstr, sizeof(errstr)),
                         AF_OK);
        assert_true(object);
        assert_string_equal(req->payload, "{\"a\":[2],\"b\":1}");
        assert_int_equal(
                af_wire_taskrequest_check_payload(req, 1024, true, 1000, errstr, sizeof(errstr)),
                AF_OK);
        assert_int_equal(
                af_wire_taskrequest_check_payload(req, 10, true, 1000, errstr, sizeof(errstr)),
                AF_ERR_TOO_LARGE);
        af_wire_taskrequest_free(req);

        const char *as_text = "{\"payload\":\"[1]\"}";
        assert_int_equal(af_wire_taskrequest_from_json_ex(as_text, strlen(as_text), 0, &req,
                                                          &object, errstr, sizeof(errstr)),
                         AF_OK);
        assert_false(object);
        assert_int_equal(
                af_wire_taskrequest_check_payload(req, 1024, object, 1000, errstr, sizeof(errstr)),
                AF_ERR_INVALID);
        af_wire_taskrequest_free(req);
}

static void test_check_values(void **state) {
        Agentfleet__V1__TaskRequest *req = parse_ok(
                "{\"type\":\"t\",\"payload\":{\"a\":1},\"priority\":9,\"deadline_ms\":2000,"
                "\"traceparent\":\"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\"}",
                0);
        char errstr[256];
        assert_int_equal(af_wire_taskrequest_check(req, 1024, 1000, errstr, sizeof(errstr)), AF_OK);
        af_wire_taskrequest_free(req);
        /* no payload at all is {} */
        req = parse_ok("{\"type\":\"t\"}", 0);
        assert_int_equal(af_wire_taskrequest_check(req, 1024, 1000, errstr, sizeof(errstr)), AF_OK);
        af_wire_taskrequest_free(req);

        check_fails("{\"payload\":{\"a\":\"0123456789\"}}", 10, AF_ERR_TOO_LARGE,
                    "over the limit of 10");
        check_fails("{\"payload\":\"[1]\"}", 100, AF_ERR_INVALID,
                    "expected a JSON object, got an array");
        check_fails("{\"payload\":\"{bad\"}", 100, AF_ERR_INVALID,
                    "field \"payload\": invalid JSON");
        check_fails("{\"priority\":10}", 100, AF_ERR_INVALID, "field \"priority\"");
        check_fails("{\"priority\":-1}", 100, AF_ERR_INVALID, "field \"priority\"");
        check_fails("{\"deadline_ms\":999}", 100, AF_ERR_INVALID, "field \"deadline_ms\"");
        check_fails("{\"max_attempts\":101}", 100, AF_ERR_INVALID, "field \"max_attempts\"");
        check_fails("{\"traceparent\":\"00-abc\"}", 100, AF_ERR_INVALID, "field \"traceparent\"");
        char big[400];
        snprintf(big, sizeof(big), "{\"case_key\":\"%0300d\"}", 0);
        check_fails(big, 100, AF_ERR_INVALID, "field \"case_key\": longer than 256");

        /* A protobuf string that is not UTF-8 (JSON cannot carry one): refused, named. */
        Agentfleet__V1__TaskRequest bad = AGENTFLEET__V1__TASK_REQUEST__INIT;
        bad.type = "t";
        bad.case_key = "ab\xffz";
        assert_int_equal(af_wire_taskrequest_check(&bad, 100, 1000, errstr, sizeof(errstr)),
                         AF_ERR_INVALID);
        assert_string_equal(errstr, "field \"case_key\": not UTF-8 (byte 0xff at offset 2)");
        bad.case_key = "caf\xc3\xa9"; /* well-formed: fine */
        bad.request_id = "r\xc3";     /* cut short */
        assert_int_equal(af_wire_taskrequest_check(&bad, 100, 1000, errstr, sizeof(errstr)),
                         AF_ERR_INVALID);
        assert_string_equal(errstr, "field \"request_id\": not UTF-8 (byte 0xc3 at offset 1)");
}

/* Reals are written in the fewest digits (15..17) at which every one reads back exactly. */
static void test_json_dumps_keeps_numbers(void **state) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                {"{\"amount\":172.46,\"score\":0.86,\"n\":3,\"x\":2.0}",
                 "{\"amount\":172.46,\"score\":0.86,\"n\":3,\"x\":2.0}"},
                {"[0.1,[{\"deep\":1e-7}]]", "[0.1,[{\"deep\":1e-7}]]"},
                /* needs 17 digits: then every real gets them, and still reads back */
                {"[0.30000000000000004,0.5]", "[0.30000000000000004,0.5]"},
                {"[5e-324]", "[4.94065645841247e-324]"},
        };
        json_error_t jerr;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                json_t *j = json_loads(cases[i].in, 0, &jerr);
                assert_non_null(j);
                char *s = af_json_dumps(j, JSON_COMPACT);
                assert_string_equal(s, cases[i].out);
                json_t *back = json_loads(s, 0, &jerr);
                assert_true(json_equal(back, j));
                json_decref(back);
                free(s);
                json_decref(j);
        }
        json_t *r = json_real(172.46);
        char *s = af_json_dumps(r, JSON_ENCODE_ANY | JSON_REAL_PRECISION(4)); /* caller's wins */
        assert_string_equal(s, "172.5");
        free(s);
        json_decref(r);
}

static void test_traceparent(void **state) {
        assert_true(af_wire_traceparent_valid(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        assert_false(af_wire_traceparent_valid(
                "00-00000000000000000000000000000000-b7ad6b7169203331-01"));
        assert_false(af_wire_traceparent_valid(
                "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"));
        assert_false(af_wire_traceparent_valid(
                "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"));
        assert_false(af_wire_traceparent_valid(
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        assert_false(af_wire_traceparent_valid(""));
}

/* ---- af_wire_json_surely_valid: never yes where jansson says no ------------------------- */

static bool jansson_accepts(const char *text) {
        json_error_t jerr;
        json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
        json_decref(v);
        return v != NULL;
}

static void expect_sure(const char *text, bool want) {
        bool got = af_wire_json_surely_valid(text);
        if (got != want)
                fail_msg("af_wire_json_surely_valid(\"%s\") = %d, expected %d", text, got, want);
        if (got && !jansson_accepts(text))
                fail_msg("\"%s\": surely valid, but jansson refuses it", text);
        if (!got && want == false && jansson_accepts(text))
                print_message("(not sure of \"%s\", which jansson accepts: parsed the slow way)\n",
                              text);
}

static void test_json_surely_valid_cases(void **state) {
        static const char *yes[] = {
                "{}",
                "[]",
                "0",
                "-0",
                "1",
                "-12",
                "1.5",
                "-0.25e-3",
                "2E+10",
                "1e300",
                "\"\"",
                "true",
                "false",
                "null",
                " \t\r\n{ \"a\" : [ 1 , 2.0 , \"x\" , null ] } \n",
                "{\"a\":{\"b\":{\"c\":[[],{}]}}}",
                "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uFFFF\"",
                "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \x7f\"",
                "{\"a\":1,\"a\":2}",
                "123456789012345678",
                "-123456789012345678",
                "1e307",
                "9.99e307",
                "1.5e-999",
                ("{\"claim_id\":\"CLM-1\",\"amount\":172.46,\"codes\":[\"M75.101\"],"
                 "\"provider\":{\"id\":\"PRV-1\",\"name\":\"Peak\"}}"),
        };
        static const char *no[] = {
                "",
                " ",
                "{",
                "}",
                "[",
                "]",
                "[1,]",
                "{,}",
                "{\"a\"}",
                "{\"a\":}",
                "{\"a\" 1}",
                "{1:2}",
                "[1 2]",
                "01",
                "-",
                "1.",
                ".5",
                "1e",
                "1e+",
                "+1",
                "0x10",
                "tru",
                "truex",
                "nul",
                "True",
                "NaN",
                "Infinity",
                "\"abc",
                "\"a\nb\"",
                "\"a\tb\"",
                "\"\\x\"",
                "\"\\u12\"",
                "\"\\u12G4\"",
                "{} {}",
                "1 2",
                "[]]",
                "{}}",
                "[1}",
                "{\"a\":1]",
                "\"\xc3\"",
                "\"\xc0\xaf\"",
                "\"\xe0\x80\xaf\"",
                "\"\xed\xa0\x80\"",
                "\"\xf4\x90\x80\x80\"",
                "\"\xf8\x88\x80\x80\x80\"",
                "\"\x80\"",
                "\xef\xbb\xbf{}",
                "'a'",
                "[1,,2]",
                "{\"a\":1,}",
                "1true",
                "[true false]",
                /* valid JSON the quick check leaves to jansson */
                "\"\\u0000\"",
                "\"\\ud83d\\ude00\"",
                "\"\\udc00\"",
                "1234567890123456789",
                "1e308",
                "9e999",
                "1e-99999",
        };
        for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
                expect_sure(yes[i], true);
        for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
                expect_sure(no[i], false);
        assert_false(af_wire_json_surely_valid(NULL));
}

static void test_json_surely_valid_depth(void **state) {
        char deep[2 * 600 + 1];
        for (int n = 500; n <= 600; n += 100) {
                memset(deep, '[', (size_t) n);
                memset(deep + n, ']', (size_t) n);
                deep[2 * n] = '\0';
                assert_int_equal(af_wire_json_surely_valid(deep), n <= 512);
                assert_true(jansson_accepts(deep));
        }
}

/* Mutations of valid documents (bytes replaced, inserted, deleted, cut): whatever the quick
 * check calls valid, jansson must parse; and most valid documents must take the quick way. */
static void test_json_surely_valid_never_disagrees(void **state) {
        static const char *seeds[] = {
                "{\"claim_id\":\"CLM-2026-104211\",\"amount\":172.46,\"currency\":\"USD\","
                "\"diagnosis_codes\":[\"M75.101\"],\"provider\":{\"id\":\"PRV-16058\","
                "\"specialty\":\"physical therapy\"},\"flag\":true,\"none\":null,\"n\":-3e-2}",
                "[1,-0,2.5e+3,\"\\u00e9\\n\",[],{},[{\"a\":[false]}]]",
                "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"",
        };
        static const char alphabet[] = "{}[]:,\"\\0123456789-+.eEtrufalsn u\t\n\x01\x7f\xc3\xa9"
                                       "\xed\xa0\xf0\x9f\x80";
        char buf[512];
        unsigned seed = 12345;
        int sure = 0, accepted = 0;

        for (int i = 0; i < 60000; i++) {
                const char *src = seeds[i % 3];
                size_t len = strlen(src);
                memcpy(buf, src, len + 1);
                int edits = 1 + (int) ((seed = seed * 1103515245u + 12345u) >> 16) % 3;
                for (int k = 0; k < edits; k++) {
                        unsigned r = (seed = seed * 1103515245u + 12345u) >> 8;
                        size_t at = r % (len + 1);
                        char c = alphabet[(r >> 12) % (sizeof(alphabet) - 1)];
                        switch ((r >> 20) % 4) {
                        case 0: /* replace */
                                if (at < len)
                                        buf[at] = c;
                                break;
                        case 1: /* insert */
                                if (len + 2 < sizeof(buf)) {
                                        memmove(buf + at + 1, buf + at, len - at + 1);
                                        buf[at] = c;
                                        len++;
                                }
                                break;
                        case 2: /* delete */
                                if (at < len) {
                                        memmove(buf + at, buf + at + 1, len - at);
                                        len--;
                                }
                                break;
                        default: /* cut */
                                buf[at] = '\0';
                                len = at;
                                break;
                        }
                }
                bool quick = af_wire_json_surely_valid(buf);
                bool slow = jansson_accepts(buf);
                if (quick && !slow)
                        fail_msg("surely valid, but jansson refuses: \"%s\"", buf);
                sure += quick;
                accepted += slow;
        }
        print_message("mutations: %d accepted by jansson, %d of them surely valid\n", accepted,
                      sure);
        assert_true(sure > 0);
        for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
                assert_true(af_wire_json_surely_valid(seeds[i]));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_request_all_fields),
                cmocka_unit_test(test_request_payload_string_kept_verbatim),
                cmocka_unit_test(test_request_nulls_are_absent),
                cmocka_unit_test(test_request_unknown_field),
                cmocka_unit_test(test_request_errors_name_the_field),
                cmocka_unit_test(test_request_not_json),
                cmocka_unit_test(test_request_to_json_hides_token),
                cmocka_unit_test(test_task_to_json),
                cmocka_unit_test(test_result_to_json),
                cmocka_unit_test(test_status_names),
                cmocka_unit_test(test_sign_canonical_string),
                cmocka_unit_test(test_dlq_pack_roundtrip),
                cmocka_unit_test(test_payload_object_is_not_parsed_again),
                cmocka_unit_test(test_check_values),
                cmocka_unit_test(test_traceparent),
                cmocka_unit_test(test_json_dumps_keeps_numbers),
                cmocka_unit_test(test_json_surely_valid_cases),
                cmocka_unit_test(test_json_surely_valid_depth),
                cmocka_unit_test(test_json_surely_valid_never_disagrees),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
