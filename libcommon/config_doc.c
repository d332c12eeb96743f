/*
 * config_doc: the settings table (config_table.c) rendered for people: each program's
 * --help (af_config_print_help, by scope) and the generated CONFIGURATION.md
 * (af_config_print_markdown, kept equal to the committed file by tests/unit/
 * test_config_doc.c). Secrets are shown as "(secret)", never with a value.
 */
#include "config.h"

#include <inttypes.h>
#include <string.h>

#include "config_buffer.h"
#include "yamlwalk.h"

static const char *type_name(af_setting_type_t t) {
        switch (t) {
        case AF_SETTING_INT:
                return "integer";
        case AF_SETTING_BOOL:
                return "boolean";
        case AF_SETTING_DURATION:
                return "duration";
        case AF_SETTING_SIZE:
                return "size";
        default:
                return "string";
        }
}

/* The default as shown to people: secrets never, empty/unset spelled out. */
static const char *default_shown(const af_setting_t *s) {
        if (s->flags & AF_SETTING_F_SECRET)
                return "(secret)";
        if (!s->def)
                return "(unset)";
        if (!*s->def)
                return "(empty)";
        return s->def;
}

static void bounds_shown(const af_setting_t *s, char *out, size_t out_size) {
        char lo[32], hi[32];
        switch (s->type) {
        case AF_SETTING_INT:
                if (s->max == INT64_MAX)
                        snprintf(out, out_size, ">= %" PRId64, s->min);
                else
                        snprintf(out, out_size, "%" PRId64 " .. %" PRId64, s->min, s->max);
                break;
        case AF_SETTING_DURATION:
                af_yaml_format_duration(s->min, lo, sizeof(lo));
                af_yaml_format_duration(s->max, hi, sizeof(hi));
                snprintf(out, out_size, "%s .. %s", lo, hi);
                break;
        case AF_SETTING_SIZE:
                af_yaml_format_size(s->min, lo, sizeof(lo));
                af_yaml_format_size(s->max, hi, sizeof(hi));
                snprintf(out, out_size, "%s .. %s", lo, hi);
                break;
        default:
                out[0] = '\0';
                break;
        }
}

void af_config_print_help(FILE *out, unsigned scope) {
        fprintf(out, "Settings (YAML file given with --config, AGENTFLEET_<NAME> environment "
                     "variables, --set name=value; later wins):\n");
        for (size_t i = 0; i < af_settings_cnt; i++) {
                const af_setting_t *s = &af_settings[i];
                char bounds[96];
                if (!(s->scope & scope))
                        continue;
                bounds_shown(s, bounds, sizeof(bounds));
                /* A secret's default is never shown: "(secret)" stands in its place. */
                fprintf(out, "  %-28s %-8s %s%s%s%s\n      %s\n", s->name, type_name(s->type),
                        (s->flags & AF_SETTING_F_SECRET) ? "" : "default ", default_shown(s),
                        bounds[0] ? ", range " : "", bounds, s->desc);
        }
        if (scope & (AF_SCOPE_COORDINATOR | AF_SCOPE_WORKER | AF_SCOPE_CLI))
                fprintf(out,
                        "  %-28s %-8s passed to librdkafka as is (e.g. --set "
                        "kafka.linger.ms=5)\n",
                        "kafka.*", "string");
}

void af_config_print_markdown(FILE *out) {
        static const struct {
                unsigned bit;
                const char *name;
        } scopes[] = {{AF_SCOPE_COORDINATOR, "coordinator"},
                      {AF_SCOPE_WORKER, "worker"},
                      {AF_SCOPE_CLI, "cli"},
                      {AF_SCOPE_SIMAGENT, "simagent"}};
        char section[64] = "";

        fputs("# Configuration reference\n"
              "\n"
              "<!-- Generated from libcommon/config_table.c: do not edit. Regenerate with\n"
              "     `AF_REGEN=1 ctest -R test_config_doc` (tests/unit/test_config_doc.c). -->\n"
              "\n"
              "Every agentfleet program reads its settings from one table. A value comes, "
              "lowest precedence\nfirst, from:\n"
              "\n"
              "1. the default below;\n"
              "2. the YAML file given with `--config FILE` (nested maps are dotted names: "
              "`redis: {port: 6380}`\n   is `redis.port`);\n"
              "3. the environment: `AGENTFLEET_` + the name in upper case with `.` turned into "
              "`_`\n   (`AGENTFLEET_REDIS_PORT=6380`); `AGENTFLEET_KAFKA_LINGER_MS=5` is "
              "`kafka.linger.ms`;\n"
              "4. `--set name=value` on the command line (repeatable).\n"
              "\n"
              "Every value is checked when it is read; a mistake stops the program with the "
              "file, line and\nsetting, e.g. `agentfleet.yaml:12: redis.port: expected an "
              "integer in [1, 65535], got \"abc\"`.\nUnknown keys, a key given twice, a "
              "sequence where a value belongs and malformed YAML are\nmistakes too. An empty "
              "file is fine.\n"
              "\n"
              "- **Durations** take a unit: `250ms`, `5s`, `2m`, `1h`, `1d`; a bare number is "
              "milliseconds.\n"
              "- **Sizes** take a unit: `512` (bytes), `64KiB`, `1MiB`, `1GiB` (also `kB`, "
              "`MB`, `GB`).\n"
              "- **Booleans**: `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`.\n"
              "- **Secrets** (marked below) are never printed by `--help`, here or in logs: "
              "once loaded, their\n  value is replaced by `[redacted]` in every log line.\n"
              "- **kafka.\\*** keys other than those listed pass straight to librdkafka "
              "(`kafka: {linger.ms: 5}`);\n  librdkafka checks them when the client starts.\n"
              "- **Environment rule**: a variable `AGENTFLEET_<SECTION>_...` whose section is "
              "one of the sections\n  below (or that is one typo away from a setting's "
              "variable) must name a setting, or the\n  program refuses to start, so a typo "
              "never goes unnoticed. Other `AGENTFLEET_*` names are\n  left alone; these are "
              "always allowed: `AGENTFLEET_CACHE` (download cache of the scripts),\n  "
              "`AGENTFLEET_CONFIG`, `AGENTFLEET_TOKEN` (the CLI's token), "
              "`AGENTFLEET_LLM_API_KEY` and\n  `AGENTFLEET_INTAKE_KEY` (secrets the example "
              "catalog refers to),\n  `AGENTFLEET_SIMAGENT_URL` (the demo's simulated agent), "
              "and every variable that the\n  catalog of the loaded file refers to "
              "(`api_key_env`, `secret_env`, `${env:NAME}`).\n"
              "\n"
              "The same file also holds the catalog (sections `task_types`, `agents`, "
              "`integrations`, `tokens`,\n`service_keys`): see the end of this page.\n",
              out);

        for (size_t i = 0; i < af_settings_cnt; i++) {
                const af_setting_t *s = &af_settings[i];
                const char *dot = strchr(s->name, '.');
                size_t sl = dot ? (size_t) (dot - s->name) : strlen(s->name);
                char bounds[96], env[256], used[96] = "";
                if (strlen(section) != sl || strncmp(section, s->name, sl)) {
                        snprintf(section, sizeof(section), "%.*s", (int) sl, s->name);
                        fprintf(out,
                                "\n## %s\n\n"
                                "| Setting | Type | Default | Range | Environment | Used by | "
                                "Description |\n"
                                "|---|---|---|---|---|---|---|\n",
                                section);
                }
                bounds_shown(s, bounds, sizeof(bounds));
                af_config_env_name(s->name, env, sizeof(env));
                for (size_t j = 0; j < sizeof(scopes) / sizeof(scopes[0]); j++) {
                        if (!(s->scope & scopes[j].bit))
                                continue;
                        size_t ul = strlen(used);
                        snprintf(used + ul, sizeof(used) - ul, "%s%s", ul ? ", " : "",
                                 scopes[j].name);
                }
                fprintf(out, "| `%s` | %s%s | %s%s%s | %s | `%s` | %s | %s |\n", s->name,
                        type_name(s->type), (s->flags & AF_SETTING_F_SECRET) ? ", secret" : "",
                        (s->flags & AF_SETTING_F_SECRET) || !s->def || !*s->def ? "" : "`",
                        default_shown(s),
                        (s->flags & AF_SETTING_F_SECRET) || !s->def || !*s->def ? "" : "`", bounds,
                        env, used, s->desc);
        }

        fputs("\n## The catalog\n"
              "\n"
              "The catalog describes what the fleet can run. It lives in the same YAML file; "
              "its content hash\n(sha256 of the file's bytes) is recorded in every Task and "
              "TaskResult, and SIGHUP reloads it.\nEach section is a map from name to entry "
              "(or a sequence of entries with a `name`). Secrets are\nnever written in the "
              "file: `${env:NAME}` (or `${env:NAME:-default}`) in URLs, bodies, header\n"
              "values and prompts is replaced by that environment variable at load (unset "
              "without a default:\nan error), API keys come from `api_key_env`, tokens are "
              "stored as sha256 hashes. See "
              "`examples/claims/agentfleet.yaml`.\n"
              "\n"
              "### integrations.NAME\n"
              "\n"
              "| Field | Default | Meaning |\n"
              "|---|---|---|\n"
              "| `url` | required | URL template: `{{payload.claim_id}}`, `{{task.id}}`, "
              "`{{args.x}}` |\n"
              "| `method` | `POST` | GET, POST, PUT, PATCH or DELETE |\n"
              "| `body` | the payload / tool arguments as JSON | body template |\n"
              "| `headers` | none | map of header name to value template |\n"
              "| `description` | none | shown to a model when offered as a tool |\n"
              "| `parameters` | none | JSON schema of the tool arguments (YAML map or JSON "
              "text) |\n"
              "| `timeout` | `10s` | per call, 1ms .. 10m |\n"
              "| `compensation` | none | integration that undoes this one |\n"
              "\n"
              "### agents.NAME\n"
              "\n"
              "| Field | Default | Meaning |\n"
              "|---|---|---|\n"
              "| `base_url` | required | OpenAI-compatible base URL (`/chat/completions` is "
              "appended) |\n"
              "| `model` | required | model name |\n"
              "| `system_prompt` | required | system prompt template; its sha256 is the "
              "prompt version |\n"
              "| `version` | `1` | agent version recorded with each task |\n"
              "| `api_key_env` | none | environment variable holding the API key (missing: "
              "a warning) |\n"
              "| `tools` | none | integrations the model may call |\n"
              "| `max_steps` | `4` | model round trips, 1 .. 32 |\n"
              "| `timeout` | `60s` | per model call, 1ms .. 10m |\n"
              "| `temperature` | `0` | 0 .. 2 |\n"
              "| `prices` | 0 | `{prompt_per_1k, completion_per_1k}` in currency units |\n"
              "\n"
              "### task_types.NAME\n"
              "\n"
              "| Field | Default | Meaning |\n"
              "|---|---|---|\n"
              "| `agent` or `integration` | required (exactly one) | what runs the task |\n"
              "| `lane` | `default` | topic `tasks.<lane>` (letters, digits, `-`, `_`) |\n"
              "| `max_attempts` | `3` | 1 .. 100 |\n"
              "| `timeout` | `5m` | whole task, 1s .. 1d |\n"
              "| `max_payload` | `coordinator.max_payload` | payload size cap, up to 16MiB "
              "(0 = the setting) |\n"
              "\n"
              "### tokens (sequence)\n"
              "\n"
              "`{principal, tenant, roles: [..], sha256: \"sha256:<64 hex>\"}` (`token_sha256` "
              "is accepted too).\nCompute a hash with `printf %s \"$TOKEN\" | sha256sum`.\n"
              "\n"
              "### service_keys (sequence)\n"
              "\n"
              "`{key_id, principal, tenant, secret_env}`: services that produce TaskRequests "
              "to Kafka sign them\nwith HMAC-SHA256 under the secret held in `secret_env`. A "
              "missing variable leaves the key\nunusable (with a warning), not the program.\n",
              out);
}
