/*
 * Unit tests of catalog: the claims example loads with everything the demo relies on, each
 * reference and validation mistake gets its precise message, bearer tokens authenticate by
 * hash, ${env:NAME} references resolve (and are redacted) or fail by name.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "catalog.h"
#include "crypto.h"
#include "log.h"
#include "yamlwalk.h"

static af_catalog_t *parse(const char *yaml, char *errstr, size_t size) {
        errstr[0] = '\0';
        return af_catalog_parse("c.yaml", yaml, strlen(yaml), errstr, size);
}

static void expect_error(const char *yaml, const char *msg) {
        char errstr[512];
        af_catalog_t *cat = parse(yaml, errstr, sizeof(errstr));
        assert_null(cat);
        assert_string_equal(errstr, msg);
}

static af_catalog_t *load_example(char **datap, size_t *lenp) {
        const char *src = getenv("AF_SOURCE_DIR");
        char path[1024], errstr[512] = "";
        af_catalog_t *cat;
        assert_non_null(src);
        snprintf(path, sizeof(path), "%s/examples/claims/agentfleet.yaml", src);
        cat = af_catalog_load(path, errstr, sizeof(errstr));
        if (!cat)
                fail_msg("%s", errstr);
        if (datap)
                assert_int_equal(
                        af_yaml_read_file(path, 1 << 22, datap, lenp, errstr, sizeof(errstr)),
                        AF_OK);
        return cat;
}

static void test_catalog_example_loads(void **state) {
        char *data;
        size_t len;
        char hex[AF_SHA256_HEX_LEN + 1];
        json_error_t jerr;

        setenv("AGENTFLEET_INTAKE_KEY", "intake-hmac-secret-1", 1);
        unsetenv("AGENTFLEET_SIMAGENT_URL"); /* the file's default applies */
        af_catalog_t *cat = load_example(&data, &len);
        unsetenv("AGENTFLEET_INTAKE_KEY");

        af_sha256_hex(data, len, hex);
        assert_string_equal(cat->hash, hex);
        assert_int_equal(cat->integration_cnt, 4);
        assert_int_equal(cat->agent_cnt, 1);
        assert_int_equal(cat->task_type_cnt, 4);
        assert_int_equal(cat->token_cnt, 3);
        assert_int_equal(cat->service_key_cnt, 1);

        const af_task_type_t *tt = af_catalog_task_type(cat, "claim.triage");
        assert_non_null(tt);
        assert_int_equal(tt->kind, AF_HANDLER_AGENT);
        assert_string_equal(tt->target, "claims-triage");
        assert_string_equal(tt->lane, "claims");
        assert_int_equal(tt->max_attempts, 3);
        assert_int_equal(tt->timeout_ms, 120000);
        assert_int_equal(tt->max_payload_bytes, 64 * 1024);
        tt = af_catalog_task_type(cat, "noop");
        assert_non_null(tt);
        assert_int_equal(tt->kind, AF_HANDLER_INTEGRATION);
        assert_string_equal(tt->target, "noop");
        assert_string_equal(tt->lane, "default");
        assert_non_null(af_catalog_task_type(cat, "crm.update"));
        assert_non_null(af_catalog_task_type(cat, "ticket.create"));
        assert_null(af_catalog_task_type(cat, "claim.pay"));

        const af_agent_t *a = af_catalog_agent(cat, "claims-triage");
        assert_non_null(a);
        assert_string_equal(a->base_url, "http://127.0.0.1:8090/v1");
        assert_string_equal(a->model, "sim-triage-1");
        assert_string_equal(a->api_key_env, "AGENTFLEET_LLM_API_KEY");
        assert_int_equal(a->tool_cnt, 3);
        assert_string_equal(a->tools[0], "rules_check");
        assert_string_equal(a->tools[1], "crm_update");
        assert_string_equal(a->tools[2], "ticket_create");
        assert_int_equal(a->max_steps, 4);
        assert_int_equal(a->price_prompt_micros_per_1k, 500);
        assert_int_equal(a->price_completion_micros_per_1k, 1500);
        assert_non_null(strstr(a->system_prompt, "\"decision\""));
        af_sha256_hex(a->system_prompt, strlen(a->system_prompt), hex);
        assert_string_equal(a->prompt_hash, hex);

        const af_integration_t *in = af_catalog_integration(cat, "crm_update");
        assert_non_null(in);
        assert_string_equal(in->method, "POST");
        assert_string_equal(in->url, "http://127.0.0.1:8090/crm/claims/{{payload.claim_id}}");
        assert_null(in->body);
        assert_int_equal(in->timeout_ms, 5000);
        assert_int_equal(in->header_cnt, 1);
        assert_string_equal(in->headers[0].name, "X-Agentfleet-Client");
        json_t *params = json_loads(in->parameters, 0, &jerr);
        assert_non_null(params);
        assert_string_equal(json_string_value(json_object_get(params, "type")), "object");
        assert_true(json_is_array(json_object_get(params, "required")));
        json_decref(params);
        assert_non_null(af_catalog_integration(cat, "rules_check"));
        assert_non_null(af_catalog_integration(cat, "ticket_create"));
        assert_non_null(af_catalog_integration(cat, "noop"));

        const af_service_key_t *k = af_catalog_service_key(cat, "intake-svc");
        assert_non_null(k);
        assert_string_equal(k->tenant, "acme-health");
        assert_string_equal(k->secret, "intake-hmac-secret-1");
        assert_null(af_catalog_service_key(cat, "other"));

        free(data);
        af_catalog_destroy(cat);
        af_catalog_destroy(NULL);
}

static void test_catalog_missing_service_secret_is_a_warning(void **state) {
        unsetenv("AGENTFLEET_INTAKE_KEY");
        af_catalog_t *cat = load_example(NULL, NULL);
        const af_service_key_t *k = af_catalog_service_key(cat, "intake-svc");
        assert_non_null(k);
        assert_null(k->secret);
        af_catalog_destroy(cat);
}

static void test_catalog_authenticate(void **state) {
        af_catalog_t *cat = load_example(NULL, NULL);
        const af_token_t *t = af_catalog_authenticate(cat, "demo-intake-token");
        assert_non_null(t);
        assert_string_equal(t->principal, "claims-intake");
        assert_string_equal(t->tenant, "acme-health");
        assert_int_equal(t->role_cnt, 1);
        assert_string_equal(t->roles[0], "submitter");
        t = af_catalog_authenticate(cat, "demo-ops-token");
        assert_non_null(t);
        assert_string_equal(t->principal, "claims-ops");
        t = af_catalog_authenticate(cat, "demo-bench-token");
        assert_non_null(t);
        assert_string_equal(t->tenant, "bench");
        assert_null(af_catalog_authenticate(cat, "demo-intake-tokeN"));
        assert_null(af_catalog_authenticate(cat, "demo-intake-token "));
        assert_null(af_catalog_authenticate(cat, ""));
        assert_null(af_catalog_authenticate(cat, NULL));
        assert_null(af_catalog_authenticate(NULL, "demo-intake-token"));
        af_catalog_destroy(cat);
}

static void test_catalog_empty_is_fine(void **state) {
        char errstr[512];
        af_catalog_t *cat = parse("", errstr, sizeof(errstr));
        assert_non_null(cat);
        assert_int_equal(cat->task_type_cnt, 0);
        assert_string_equal(cat->hash,
                            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        af_catalog_destroy(cat);
}

static void test_catalog_sequence_form(void **state) {
        char errstr[512];
        af_catalog_t *cat = parse("integrations:\n"
                                  "  - name: a\n"
                                  "    url: http://x/a\n"
                                  "    method: put\n"
                                  "    body: {id: \"{{payload.id}}\", n: 3}\n"
                                  "task_types:\n"
                                  "  - name: t\n"
                                  "    integration: a\n",
                                  errstr, sizeof(errstr));
        if (!cat)
                fail_msg("%s", errstr);
        assert_string_equal(cat->integrations[0].method, "PUT");
        assert_string_equal(cat->integrations[0].body, "{\"id\":\"{{payload.id}}\",\"n\":3}");
        assert_int_equal(cat->task_types[0].kind, AF_HANDLER_INTEGRATION);
        af_catalog_destroy(cat);
}

static void test_catalog_error_unknown_tool(void **state) {
        expect_error("integrations:\n"
                     "  rules_check: {url: \"http://x/r\"}\n"
                     "agents:\n"
                     "  triage:\n"
                     "    base_url: http://x/v1\n"
                     "    model: m\n"
                     "    system_prompt: be helpful\n"
                     "    tools:\n"
                     "      - rules_check\n"
                     "      - rule_check\n",
                     "c.yaml:10: agents.triage.tools[1]: unknown integration \"rule_check\" "
                     "(did you mean rules_check?)");
}

static void test_catalog_error_unknown_task_target(void **state) {
        expect_error("task_types:\n  t:\n    agent: nobody\n",
                     "c.yaml:3: task_types.t.agent: unknown agent \"nobody\"");
        expect_error("integrations:\n  noop: {url: \"http://x\"}\n"
                     "task_types:\n  t:\n    integration: nop\n",
                     "c.yaml:5: task_types.t.integration: unknown integration \"nop\" (did you "
                     "mean noop?)");
        expect_error("integrations:\n  noop: {url: \"http://x\"}\n"
                     "task_types:\n  t: {lane: default}\n",
                     "c.yaml:4: task_types.t: expected exactly one of \"agent\" or "
                     "\"integration\"");
}

static void test_catalog_error_unknown_compensation(void **state) {
        expect_error("integrations:\n"
                     "  crm: {url: \"http://x\"}\n"
                     "  pay:\n"
                     "    url: http://x/pay\n"
                     "    compensation: refund\n",
                     "c.yaml:5: integrations.pay.compensation: unknown integration \"refund\"");
}

static void test_catalog_error_duplicate_names(void **state) {
        expect_error("integrations:\n  a: {url: \"http://x\"}\n  a: {url: \"http://y\"}\n",
                     "c.yaml:3: integrations.a: duplicate key (first at line 2)");
        expect_error("integrations:\n  - {name: a, url: \"http://x\"}\n"
                     "  - {name: a, url: \"http://y\"}\n",
                     "c.yaml:3: integrations: \"a\" is defined twice (first at line 2)");
}

static void test_catalog_error_integration_fields(void **state) {
        expect_error("integrations:\n  a:\n    method: FETCH\n    url: http://x\n",
                     "c.yaml:3: integrations.a.method: expected GET, POST, PUT, PATCH or DELETE, "
                     "got \"FETCH\"");
        expect_error("integrations:\n  a:\n    method: GET\n",
                     "c.yaml:2: integrations.a: missing required field \"url\"");
        expect_error("integrations:\n  a:\n    url: ftp://x\n",
                     "c.yaml:3: integrations.a.url: expected an http:// or https:// URL");
        expect_error("integrations:\n  a:\n    url: http://x\n    timeout: 1h\n",
                     "c.yaml:4: integrations.a.timeout: expected a duration in [1ms, 10m], got "
                     "\"1h\"");
        expect_error("integrations:\n  a:\n    url: \"http://x/{{payload.id\"\n",
                     "c.yaml:3: integrations.a.url: unclosed {{ in template");
        expect_error("integrations:\n  a:\n    url: http://x\n    timout: 5s\n",
                     "c.yaml:4: integrations.a.timout: unknown field (did you mean timeout?)");
        expect_error("integrations:\n  \"bad name\": {url: \"http://x\"}\n",
                     "c.yaml:2: integrations: invalid name \"bad name\" (letters, digits, '_', "
                     "'-'; at most 64)");
        expect_error("integrations:\n  a:\n    url: http://x\n    parameters: \"{oops\"\n",
                     "c.yaml:4: integrations.a.parameters: invalid JSON: string or '}' expected "
                     "near 'oops'");
}

static const char *agent_yaml(const char *extra, char *buf, size_t size) {
        snprintf(buf, size,
                 "agents:\n"
                 "  triage:\n"
                 "    base_url: http://x/v1\n"
                 "    model: m\n"
                 "    system_prompt: be helpful\n"
                 "%s",
                 extra);
        return buf;
}

static void test_catalog_error_agent_fields(void **state) {
        char buf[1024];
        expect_error(agent_yaml("    max_steps: 0\n", buf, sizeof(buf)),
                     "c.yaml:6: agents.triage.max_steps: expected an integer in [1, 32], got "
                     "\"0\"");
        expect_error(agent_yaml("    max_steps: 33\n", buf, sizeof(buf)),
                     "c.yaml:6: agents.triage.max_steps: expected an integer in [1, 32], got "
                     "\"33\"");
        expect_error(agent_yaml("    max_step: 3\n", buf, sizeof(buf)),
                     "c.yaml:6: agents.triage.max_step: unknown field (did you mean max_steps?)");
        expect_error(agent_yaml("    tools: rules_check\n", buf, sizeof(buf)),
                     "c.yaml:6: agents.triage.tools: expected a sequence of names, got a scalar");
        expect_error(agent_yaml("    prices: {prompt_per_1k: -1}\n", buf, sizeof(buf)),
                     "c.yaml:6: agents.triage.prices.prompt_per_1k: expected a number in [0, "
                     "1e+06], got \"-1\"");
        expect_error("agents:\n  triage:\n    base_url: http://x/v1\n    system_prompt: x\n",
                     "c.yaml:2: agents.triage: missing required field \"model\"");
}

static void test_catalog_api_key_env(void **state) {
        char buf[1024], errstr[512];
        setenv("AF_TEST_API_KEY", "sk-test-0123456789", 1);
        af_catalog_t *cat =
                parse(agent_yaml("    api_key_env: AF_TEST_API_KEY\n", buf, sizeof(buf)), errstr,
                      sizeof(errstr));
        unsetenv("AF_TEST_API_KEY");
        if (!cat)
                fail_msg("%s", errstr);
        assert_string_equal(cat->agents[0].api_key, "sk-test-0123456789");
        af_catalog_destroy(cat);

        /* Missing: a warning, not an error; the key is simply absent. */
        cat = parse(agent_yaml("    api_key_env: AF_TEST_API_KEY\n", buf, sizeof(buf)), errstr,
                    sizeof(errstr));
        assert_non_null(cat);
        assert_null(cat->agents[0].api_key);
        af_catalog_destroy(cat);
}

static void test_catalog_error_tokens(void **state) {
        expect_error("tokens:\n  - principal: p\n    tenant: t\n    sha256: \"sha256:abc\"\n",
                     "c.yaml:4: tokens[0].sha256: expected sha256:<64 hex digits> (printf %s "
                     "TOKEN | sha256sum)");
        expect_error("tokens:\n  - tenant: t\n    sha256: \"sha256:ffb1dbaf93cf1c77cf1ed87ac0d9"
                     "16e40389264da56572ac4de9c06eb3e0d223\"\n",
                     "c.yaml:2: tokens[0]: missing required field \"principal\"");
        expect_error("tokens:\n"
                     "  - {principal: a, tenant: t, token_sha256: ffb1dbaf93cf1c77cf1ed87ac0d916"
                     "e40389264da56572ac4de9c06eb3e0d223}\n"
                     "  - {principal: b, tenant: t, sha256: \"sha256:ffb1dbaf93cf1c77cf1ed87ac0"
                     "d916e40389264da56572ac4de9c06eb3e0d223\"}\n",
                     "c.yaml:3: tokens[1]: the same token as tokens[0]");
        expect_error("tokens:\n  a: {principal: p}\n",
                     "c.yaml:1: tokens: expected a sequence of entries, got a map");
}

static void test_catalog_error_task_type_fields(void **state) {
        expect_error("integrations:\n  n: {url: \"http://x\"}\n"
                     "task_types:\n  t: {integration: n, lane: \"tasks.x\"}\n",
                     "c.yaml:4: task_types.t.lane: expected letters, digits, '_' or '-' (it "
                     "names a topic), got \"tasks.x\"");
        expect_error("integrations:\n  n: {url: \"http://x\"}\n"
                     "task_types:\n  t: {integration: n, max_attempts: 0}\n",
                     "c.yaml:4: task_types.t.max_attempts: expected an integer in [1, 100], got "
                     "\"0\"");
        expect_error("integrations:\n  n: {url: \"http://x\"}\n"
                     "task_types:\n  t: {integration: n, max_payload: 1TB}\n",
                     "c.yaml:4: task_types.t.max_payload: expected a size in [0B, 16MiB], got "
                     "\"1TB\"");
}

static void test_catalog_env_references(void **state) {
        char errstr[512];
        const char *yaml = "integrations:\n"
                           "  crm:\n"
                           "    url: \"${env:AF_TEST_CRM_BASE}/claims\"\n"
                           "    headers:\n"
                           "      Authorization: \"Bearer ${env:AF_TEST_CRM_TOKEN}\"\n"
                           "      X-Static: plain\n";
        char *out = NULL;
        size_t len = 0;
        FILE *f;

        setenv("AF_TEST_CRM_BASE", "https://crm.example", 1);
        setenv("AF_TEST_CRM_TOKEN", "crm-secret-token-42", 1);
        af_log_redact_clear();
        af_catalog_t *cat = parse(yaml, errstr, sizeof(errstr));
        if (!cat)
                fail_msg("%s", errstr);
        const af_integration_t *in = af_catalog_integration(cat, "crm");
        assert_string_equal(in->url, "https://crm.example/claims");
        assert_int_equal(in->header_cnt, 2);
        assert_string_equal(in->headers[0].name, "Authorization");
        assert_string_equal(in->headers[0].value, "Bearer crm-secret-token-42");
        assert_string_equal(in->headers[1].value, "plain");

        /* The resolved secret never reaches a log line. */
        f = open_memstream(&out, &len);
        af_log_init("test", AF_LOG_INFO);
        af_log_set_output(f);
        af_info("calling with %s", in->headers[0].value);
        fclose(f);
        af_log_set_output(NULL);
        assert_null(strstr(out, "crm-secret-token-42"));
        free(out);
        af_catalog_destroy(cat);
        af_log_redact_clear();

        unsetenv("AF_TEST_CRM_TOKEN");
        expect_error(yaml, "c.yaml:5: integrations.crm.headers.Authorization: environment "
                           "variable AF_TEST_CRM_TOKEN is not set");
        unsetenv("AF_TEST_CRM_BASE");
        expect_error(yaml, "c.yaml:3: integrations.crm.url: environment variable "
                           "AF_TEST_CRM_BASE is not set");
        expect_error("integrations:\n  a: {url: \"http://x/${env:BAD-NAME}\"}\n",
                     "c.yaml:2: integrations.a.url: malformed ${env:NAME} reference");
}

static void test_catalog_env_default_and_redaction(void **state) {
        char errstr[512];
        const char *yaml = "integrations:\n"
                           "  a:\n"
                           "    url: \"${env:AF_TEST_SIM_URL:-http://127.0.0.1:8090}/noop\"\n"
                           "    headers: {X-Api-Key: \"${env:AF_TEST_HDR:-dflt-header-val}\"}\n";
        unsetenv("AF_TEST_SIM_URL");
        unsetenv("AF_TEST_HDR");
        af_log_redact_clear();
        af_catalog_t *cat = parse(yaml, errstr, sizeof(errstr));
        if (!cat)
                fail_msg("%s", errstr);
        assert_string_equal(cat->integrations[0].url, "http://127.0.0.1:8090/noop");
        assert_string_equal(cat->integrations[0].headers[0].value, "dflt-header-val");
        af_catalog_destroy(cat);

        setenv("AF_TEST_SIM_URL", "http://sim.local:18090", 1);
        setenv("AF_TEST_HDR", "header-secret-77", 1);
        cat = parse(yaml, errstr, sizeof(errstr));
        unsetenv("AF_TEST_SIM_URL");
        unsetenv("AF_TEST_HDR");
        if (!cat)
                fail_msg("%s", errstr);
        assert_string_equal(cat->integrations[0].url, "http://sim.local:18090/noop");
        /* A header value from the environment is a secret; a URL (no secret-like name)
         * stays readable in logs. */
        char line[] = "GET http://sim.local:18090/noop with header-secret-77";
        af_log_redact(line);
        assert_string_equal(line, "GET http://sim.local:18090/noop with [redacted]");
        af_catalog_destroy(cat);
        af_log_redact_clear();
}

static void test_catalog_error_malformed(void **state) {
        expect_error("integrations: [\n", "c.yaml:2: malformed YAML: did not find expected node "
                                          "content while parsing a flow node");
        expect_error("- 1\n", "c.yaml:1: expected a map at the top level, got a sequence");
        expect_error("integrations: 3\n",
                     "c.yaml:1: integrations: expected a map of entries by name, got a scalar");
}

int main(void) {
        af_log_init("test_catalog", AF_LOG_ERROR); /* the missing-variable warnings */
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_catalog_example_loads),
                cmocka_unit_test(test_catalog_missing_service_secret_is_a_warning),
                cmocka_unit_test(test_catalog_authenticate),
                cmocka_unit_test(test_catalog_empty_is_fine),
                cmocka_unit_test(test_catalog_sequence_form),
                cmocka_unit_test(test_catalog_error_unknown_tool),
                cmocka_unit_test(test_catalog_error_unknown_task_target),
                cmocka_unit_test(test_catalog_error_unknown_compensation),
                cmocka_unit_test(test_catalog_error_duplicate_names),
                cmocka_unit_test(test_catalog_error_integration_fields),
                cmocka_unit_test(test_catalog_error_agent_fields),
                cmocka_unit_test(test_catalog_api_key_env),
                cmocka_unit_test(test_catalog_error_tokens),
                cmocka_unit_test(test_catalog_error_task_type_fields),
                cmocka_unit_test(test_catalog_env_references),
                cmocka_unit_test(test_catalog_env_default_and_redaction),
                cmocka_unit_test(test_catalog_error_malformed),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
