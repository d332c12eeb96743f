/*
 * config: the settings every agentfleet program starts from. Values come, lowest precedence
 * first, from the table defaults (config_table.c), the YAML file, AGENTFLEET_* environment
 * variables and --set (af_config_set). Every value is checked against the table's type and
 * bounds when it arrives, so a program reads typed values and never re-validates; a mistake
 * is reported with the file, line and key and what was expected, and the program refuses to
 * start rather than run with half its configuration.
 *
 * The YAML is read by yamlwalk.c (shared with catalog.c); nested maps flatten to dotted
 * names; the catalog sections are skipped here. kafka.* keys are kept in order for
 * librdkafka. Values of secret settings are registered with the log's redaction list.
 * --help and CONFIGURATION.md are rendered from the same table by config_doc.c.
 */
#include "config.h"

#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>

#include "config_buffer.h"
#include "log.h"
#include "yamlwalk.h"

#define CONFIG_MAX_FILE   (4 * 1024 * 1024)
#define CONFIG_MAX_NAME   256
#define CONFIG_ENV_PREFIX "AGENTFLEET_"

/* Variables that start with AGENTFLEET_ but are not settings: the cache folder of the
 * scripts, the config path, the CLI token, and what the example catalog refers to (its
 * secrets and the simulated agent's URL). Variables the loaded file's catalog refers to are
 * allowed as well (config_note_env_refs). */
static const char *const env_allow[] = {"AGENTFLEET_CACHE",
                                        "AGENTFLEET_CONFIG",
                                        "AGENTFLEET_TOKEN",
                                        "AGENTFLEET_LLM_API_KEY",
                                        "AGENTFLEET_INTAKE_KEY",
                                        "AGENTFLEET_SIMAGENT_URL",
                                        NULL};

/* Top-level sections owned by catalog.c. */
static const char *const catalog_sections[] = {"task_types", "agents",       "integrations",
                                               "tokens",     "service_keys", NULL};

typedef struct cval_s {
        char *text; /* NULL = unset */
        int64_t i;  /* INT, DURATION (ms), SIZE (bytes) */
        bool b;
        bool from_user; /* set by file, environment or af_config_set */
        int line;       /* line that set it during the current file load, else 0 */
} cval_t;

typedef struct kv_s {
        char *key; /* without "kafka." */
        char *value;
        int line; /* as cval_t.line */
} kv_t;

struct af_config_s {
        cval_t *vals; /* af_settings_cnt, same order as the table */
        kv_t *kafka;
        size_t kafka_cnt;
        size_t kafka_alloc;
        char *path;
        char **env_refs; /* variables the catalog sections refer to */
        size_t env_ref_cnt;
        size_t env_ref_alloc;
};

/* Where a value came from, for messages: "file.yaml:12: " / "AGENTFLEET_X: " / "". */
typedef struct origin_s {
        const char *file;
        int line;
        const char *env;
} origin_t;

static int setting_find(const char *name) {
        for (size_t i = 0; i < af_settings_cnt; i++)
                if (!strcmp(af_settings[i].name, name))
                        return (int) i;
        return -1;
}

static const af_setting_t *setting_must(const char *name, int *idx) {
        int i = setting_find(name);
        if (i < 0) {
                fprintf(stderr, "af_config: \"%s\" is not in the settings table (config_table.c)\n",
                        name);
                abort();
        }
        *idx = i;
        return &af_settings[i];
}

static void origin_str(const origin_t *o, char *out, size_t out_size) {
        if (o && o->file)
                snprintf(out, out_size, "%s:%d: ", o->file, o->line);
        else if (o && o->env)
                snprintf(out, out_size, "%s: ", o->env);
        else
                out[0] = '\0';
}

/* The closest setting (or, for a map, section) name to an unknown key, or NULL. Allow about
 * one typo per four letters so that "workers" does not suggest "worker.id". */
static const char *setting_suggest(const char *name, bool section) {
        static char best_sec[64];
        const char *best = NULL;
        size_t len = strlen(name);
        size_t cap = len / 4 < 1 ? 1 : len / 4 > 3 ? 3 : len / 4;
        size_t best_d = cap + 1;
        for (size_t i = 0; i < af_settings_cnt; i++) {
                const char *cand = af_settings[i].name;
                char sec[64];
                if (section) {
                        const char *dot = strchr(cand, '.');
                        snprintf(sec, sizeof(sec), "%.*s", (int) (dot ? dot - cand : 63), cand);
                        cand = sec;
                }
                size_t d = af_yaml_distance(name, cand, cap);
                if (d < best_d) {
                        best_d = d;
                        if (section) {
                                snprintf(best_sec, sizeof(best_sec), "%s", sec);
                                best = best_sec;
                        } else {
                                best = af_settings[i].name;
                        }
                }
        }
        return best;
}

/* The "expected ..." part of a message for setting s. */
static void setting_expect(const af_setting_t *s, char *out, size_t out_size) {
        char lo[32], hi[32];
        switch (s->type) {
        case AF_SETTING_INT:
                if (s->max == INT64_MAX)
                        snprintf(out, out_size, "an integer >= %" PRId64, s->min);
                else
                        snprintf(out, out_size, "an integer in [%" PRId64 ", %" PRId64 "]", s->min,
                                 s->max);
                break;
        case AF_SETTING_DURATION:
                af_yaml_format_duration(s->min, lo, sizeof(lo));
                af_yaml_format_duration(s->max, hi, sizeof(hi));
                snprintf(out, out_size, "a duration (250ms, 5s, 2m, 1h) in [%s, %s]", lo, hi);
                break;
        case AF_SETTING_SIZE:
                af_yaml_format_size(s->min, lo, sizeof(lo));
                af_yaml_format_size(s->max, hi, sizeof(hi));
                snprintf(out, out_size, "a size (512, 64KiB, 1MiB) in [%s, %s]", lo, hi);
                break;
        case AF_SETTING_BOOL:
                snprintf(out, out_size, "a boolean (true/false, yes/no, on/off, 1/0)");
                break;
        default:
                if (!strcmp(s->name, "log.level"))
                        snprintf(out, out_size, "one of debug, info, warn, error, off");
                else
                        snprintf(out, out_size, "a string");
                break;
        }
}

/* Parse text for setting s into v (text not copied). @returns false when it does not fit. */
static bool setting_parse(const af_setting_t *s, const char *text, cval_t *v) {
        switch (s->type) {
        case AF_SETTING_INT:
                return af_yaml_parse_int(text, &v->i) && v->i >= s->min && v->i <= s->max;
        case AF_SETTING_DURATION:
                return af_yaml_parse_duration(text, &v->i) && v->i >= s->min && v->i <= s->max;
        case AF_SETTING_SIZE:
                return af_yaml_parse_size(text, &v->i) && v->i >= s->min && v->i <= s->max;
        case AF_SETTING_BOOL:
                return af_yaml_parse_bool(text, &v->b);
        default:
                if (!strcmp(s->name, "log.level"))
                        return af_log_level_parse(text) >= 0;
                return true;
        }
}

/* Store a kafka.* value (key without the prefix), replacing an earlier one in place so the
 * order librdkafka sees is the order of first mention. */
static af_err_t kafka_store(af_config_t *conf, const char *key, const char *value, int line,
                            const origin_t *o, char *errstr, size_t errstr_size) {
        char where[CONFIG_MAX_NAME + 64];
        origin_str(o, where, sizeof(where));
        if (!*key)
                return af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                 "%skafka.: expected a librdkafka property name after \"kafka.\"",
                                 where);
        /* Ask librdkafka now, so a bad property is refused with its file and line rather
         * than later, by the client, without them. */
        char kerr[256];
        rd_kafka_conf_t *probe = rd_kafka_conf_new();
        rd_kafka_conf_res_t res = rd_kafka_conf_set(probe, key, value, kerr, sizeof(kerr));
        rd_kafka_conf_destroy(probe);
        if (res != RD_KAFKA_CONF_OK)
                return af_errstr(AF_ERR_CONFIG, errstr, errstr_size, "%skafka.%s: %s", where, key,
                                 kerr);
        /* librdkafka's own secrets (sasl.password, ssl.key.password, ...) are redacted like
         * ours. */
        if (strstr(key, "password") || strstr(key, "secret") || strstr(key, "key.pem") ||
            strstr(key, "oauthbearer.config"))
                af_log_redact_add(value);
        for (size_t i = 0; i < conf->kafka_cnt; i++) {
                kv_t *kv = &conf->kafka[i];
                if (strcmp(kv->key, key))
                        continue;
                if (line && kv->line)
                        return af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                         "%skafka.%s: duplicate key (first at line %d)", where, key,
                                         kv->line);
                char *nv = strdup(value);
                if (!nv)
                        return af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                free(kv->value);
                kv->value = nv;
                kv->line = line;
                return AF_OK;
        }
        if (conf->kafka_cnt == conf->kafka_alloc) {
                size_t na = conf->kafka_alloc ? conf->kafka_alloc * 2 : 8;
                kv_t *n = realloc(conf->kafka, na * sizeof(*n));
                if (!n)
                        return af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                conf->kafka = n;
                conf->kafka_alloc = na;
        }
        kv_t *kv = &conf->kafka[conf->kafka_cnt];
        kv->key = strdup(key);
        kv->value = strdup(value);
        kv->line = line;
        if (!kv->key || !kv->value) {
                free(kv->key);
                free(kv->value);
                return af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
        }
        conf->kafka_cnt++;
        return AF_OK;
}

/* The one place a value enters a config: checks it against the table, stores it, keeps
 * kafka.* keys for librdkafka, registers secrets for redaction. `line` > 0 when it comes
 * from the file being loaded (to catch the same key given twice). */
static af_err_t config_store(af_config_t *conf, const char *name, const char *text, int line,
                             const origin_t *o, bool from_user, char *errstr, size_t errstr_size) {
        char where[CONFIG_MAX_NAME + 64];
        af_err_t err = AF_OK;
        int idx = setting_find(name);

        origin_str(o, where, sizeof(where));
        if (idx < 0 && strncmp(name, "kafka.", 6)) {
                const char *sug = setting_suggest(name, false);
                return af_errstr(AF_ERR_CONFIG, errstr, errstr_size, "%s%s: unknown setting%s%s%s",
                                 where, name, sug ? " (did you mean " : "", sug ? sug : "",
                                 sug ? "?)" : "");
        }
        if (idx >= 0) {
                const af_setting_t *s = &af_settings[idx];
                cval_t *v = &conf->vals[idx];
                cval_t nv = {0};
                if (line && v->line)
                        return af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                         "%s%s: duplicate key (first at line %d)", where, name,
                                         v->line);
                if (!setting_parse(s, text, &nv)) {
                        char expect[160];
                        setting_expect(s, expect, sizeof(expect));
                        /* Never echo what was given for a secret. */
                        if (s->flags & AF_SETTING_F_SECRET)
                                return af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                                 "%s%s: expected %s", where, name, expect);
                        return af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                         "%s%s: expected %s, got \"%.64s\"", where, name, expect,
                                         text);
                }
                nv.text = strdup(text);
                if (!nv.text)
                        return af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                nv.line = line;
                nv.from_user = from_user;
                free(v->text);
                *v = nv;
                if (s->flags & AF_SETTING_F_SECRET)
                        af_log_redact_add(text);
        }
        if (!strncmp(name, "kafka.", 6))
                err = kafka_store(conf, name + 6, text, line, o, errstr, errstr_size);
        return err;
}

af_config_t *af_config_new(void) {
        char errstr[512];
        af_config_t *conf = calloc(1, sizeof(*conf));
        if (!conf)
                return NULL;
        conf->vals = calloc(af_settings_cnt, sizeof(*conf->vals));
        if (!conf->vals) {
                free(conf);
                return NULL;
        }
        for (size_t i = 0; i < af_settings_cnt; i++) {
                const af_setting_t *s = &af_settings[i];
                if (!s->def)
                        continue;
                af_err_t err =
                        config_store(conf, s->name, s->def, 0, NULL, false, errstr, sizeof(errstr));
                if (err == AF_ERR_NOMEM) {
                        af_config_destroy(conf);
                        return NULL;
                }
                if (err) {
                        /* A default that fails its own bounds is a bug in the table. */
                        fprintf(stderr, "af_config: bad default in config_table.c: %s\n", errstr);
                        abort();
                }
        }
        return conf;
}

void af_config_destroy(af_config_t *conf) {
        if (!conf)
                return;
        for (size_t i = 0; i < af_settings_cnt; i++)
                free(conf->vals[i].text);
        free(conf->vals);
        for (size_t i = 0; i < conf->kafka_cnt; i++) {
                free(conf->kafka[i].key);
                free(conf->kafka[i].value);
        }
        free(conf->kafka);
        for (size_t i = 0; i < conf->env_ref_cnt; i++)
                free(conf->env_refs[i]);
        free(conf->env_refs);
        free(conf->path);
        free(conf);
}

static bool is_catalog_section(const char *key) {
        for (size_t i = 0; catalog_sections[i]; i++)
                if (!strcmp(key, catalog_sections[i]))
                        return true;
        return false;
}

/* Is `name` a section of the table, i.e. some setting is called name.<something>? */
static bool is_section(const char *name) {
        size_t n = strlen(name);
        for (size_t i = 0; i < af_settings_cnt; i++)
                if (!strncmp(af_settings[i].name, name, n) && af_settings[i].name[n] == '.')
                        return true;
        return false;
}

static void env_ref_add(af_config_t *conf, const char *name, size_t len) {
        if (conf->env_ref_cnt == conf->env_ref_alloc) {
                size_t na = conf->env_ref_alloc ? conf->env_ref_alloc * 2 : 8;
                char **n = realloc(conf->env_refs, na * sizeof(*n));
                if (!n)
                        return; /* at worst the variable is refused later, with its name */
                conf->env_refs = n;
                conf->env_ref_alloc = na;
        }
        if ((conf->env_refs[conf->env_ref_cnt] = strndup(name, len)))
                conf->env_ref_cnt++;
}

/* Remember the environment variables a catalog section refers to (api_key_env, secret_env,
 * ${env:NAME}), so that an AGENTFLEET_* secret reference is not mistaken for a misspelt
 * setting. */
static void config_note_env_refs(af_config_t *conf, const af_ynode_t *n) {
        if (n->kind != AF_YNODE_SCALAR) {
                for (size_t i = 0; i < n->cnt; i++)
                        config_note_env_refs(conf, n->items[i]);
                return;
        }
        if (n->key && (!strcmp(n->key, "api_key_env") || !strcmp(n->key, "secret_env")))
                env_ref_add(conf, n->str, strlen(n->str));
        for (const char *p = n->str; (p = strstr(p, "${env:"));) {
                p += 6;
                size_t l = strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                     "0123456789_");
                if (l)
                        env_ref_add(conf, p, l);
        }
}

/* Flatten one YAML map under `prefix` into settings. */
static af_err_t config_walk(af_config_t *conf, const char *file, const af_ynode_t *map,
                            const char *prefix, char *errstr, size_t errstr_size) {
        af_err_t err = AF_OK;
        for (size_t i = 0; i < map->cnt && !err; i++) {
                const af_ynode_t *n = map->items[i];
                char full[CONFIG_MAX_NAME];
                origin_t o = {.file = file, .line = n->key_line};
                int w = snprintf(full, sizeof(full), "%s%s%s", prefix, *prefix ? "." : "", n->key);

                if (w < 0 || (size_t) w >= sizeof(full)) {
                        err = af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                        "%s:%d: %.64s...: key too long", file, n->key_line, full);
                        break;
                }
                if (!*prefix && is_catalog_section(n->key)) {
                        config_note_env_refs(conf, n);
                        continue;
                }

                bool kafka = !strcmp(full, "kafka") || !strncmp(full, "kafka.", 6);
                int idx = setting_find(full);
                if (idx < 0 && n->kind == AF_YNODE_MAP && (kafka || is_section(full))) {
                        err = config_walk(conf, file, n, full, errstr, errstr_size);
                } else if (idx < 0 && af_yaml_is_null(n) &&
                           (!strcmp(full, "kafka") || is_section(full))) {
                        continue; /* `redis:` with nothing under it */
                } else if (idx < 0 && (!strcmp(full, "kafka") || is_section(full))) {
                        err = af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                        "%s:%d: %s: expected a map of %s settings, got %s", file,
                                        n->key_line, full,
                                        !strcmp(full, "kafka") ? "librdkafka" : full,
                                        af_yaml_kind_str(n));
                } else if (idx < 0 && !kafka && n->kind == AF_YNODE_MAP) {
                        const char *sug = setting_suggest(full, true);
                        err = af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                        "%s:%d: %s: unknown section%s%s%s", file, n->key_line, full,
                                        sug ? " (did you mean " : "", sug ? sug : "",
                                        sug ? "?)" : "");
                } else if (idx < 0 && !kafka) {
                        err = config_store(conf, full, "", n->key_line, &o, true, errstr,
                                           errstr_size); /* reports "unknown setting" */
                } else if (n->kind != AF_YNODE_SCALAR) {
                        char expect[160] = "a librdkafka property value";
                        if (idx >= 0)
                                setting_expect(&af_settings[idx], expect, sizeof(expect));
                        err = af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                        "%s:%d: %s: expected %s, got %s", file, n->key_line, full,
                                        expect, af_yaml_kind_str(n));
                } else if (kafka && idx < 0 && af_yaml_is_null(n)) {
                        err = af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                        "%s:%d: %s: expected a librdkafka property value, got "
                                        "nothing",
                                        file, n->key_line, full);
                } else if (strlen(n->str) != n->len) {
                        err = af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                        "%s:%d: %s: value contains a NUL byte", file, n->key_line,
                                        full);
                } else {
                        /* A bare `key:` is the empty string, so `worker.id:` means "unset". */
                        const char *text = af_yaml_is_null(n) ? "" : n->str;
                        err = config_store(conf, full, text, n->key_line, &o, true, errstr,
                                           errstr_size);
                }
        }
        return err;
}

af_err_t af_config_load_buffer(af_config_t *conf, const char *name, const char *data, size_t len,
                               char *errstr, size_t errstr_size) {
        af_err_t err = AF_OK;
        const char *file = name ? name : "<config>";
        af_ynode_t *root = af_yaml_parse(file, data, len, errstr, errstr_size);

        if (!root)
                return AF_ERR_CONFIG;
        if (root->kind != AF_YNODE_MAP) {
                err = af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                "%s:%d: expected a map of settings at the top level, got %s", file,
                                root->line, af_yaml_kind_str(root));
                goto out;
        }
        for (size_t i = 0; i < af_settings_cnt; i++)
                conf->vals[i].line = 0;
        for (size_t i = 0; i < conf->kafka_cnt; i++)
                conf->kafka[i].line = 0;
        err = config_walk(conf, file, root, "", errstr, errstr_size);
out:
        af_yaml_free(root);
        return err;
}

af_err_t af_config_load(af_config_t *conf, const char *path, char *errstr, size_t errstr_size) {
        af_err_t err = AF_OK;
        char *data = NULL;
        size_t len = 0;

        if (path) {
                if ((err = af_yaml_read_file(path, CONFIG_MAX_FILE, &data, &len, errstr,
                                             errstr_size)))
                        goto out;
                if ((err = af_config_load_buffer(conf, path, data, len, errstr, errstr_size)))
                        goto out;
                free(conf->path);
                if (!(conf->path = strdup(path))) {
                        err = af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                        goto out;
                }
        }
        err = af_config_load_env(conf, NULL, errstr, errstr_size);
out:
        free(data);
        return err;
}

void af_config_env_name(const char *name, char *out, size_t out_size) {
        size_t o = snprintf(out, out_size, "%s", CONFIG_ENV_PREFIX);
        for (; *name && o + 1 < out_size; name++)
                out[o++] = *name == '.'
                                   ? '_'
                                   : (char) (*name >= 'a' && *name <= 'z' ? *name - 32 : *name);
        out[o < out_size ? o : out_size - 1] = '\0';
}

/* Does AGENTFLEET_<rest> look like a setting that was misspelt? Its first word names a
 * section of the table, or it is one typo (a letter, or two letters swapped) away from a
 * real variable. Secret references such as AGENTFLEET_CRM_TOKEN stay allowed. */
static bool env_looks_like_setting(const char *var, const char **suggest) {
        static char best_name[CONFIG_MAX_NAME];
        const char *rest = var + strlen(CONFIG_ENV_PREFIX);
        size_t best_d = 2;
        bool section = false;
        *suggest = NULL;
        for (size_t i = 0; i < af_settings_cnt; i++) {
                char env[CONFIG_MAX_NAME];
                const char *dot = strchr(af_settings[i].name, '.');
                size_t sl = dot ? (size_t) (dot - af_settings[i].name) : 0;
                af_config_env_name(af_settings[i].name, env, sizeof(env));
                if (sl && !strncmp(env + strlen(CONFIG_ENV_PREFIX), rest, sl) && rest[sl] == '_')
                        section = true;
                size_t d = af_yaml_distance(var, env, 1);
                if (d < best_d) {
                        best_d = d;
                        snprintf(best_name, sizeof(best_name), "%s", env);
                        *suggest = best_name;
                }
        }
        return section || *suggest;
}

af_err_t af_config_load_env(af_config_t *conf, char **envp, char *errstr, size_t errstr_size) {
        extern char **environ;
        af_err_t err = AF_OK;
        size_t plen = strlen(CONFIG_ENV_PREFIX);

        if (!envp)
                envp = environ;
        for (; envp && *envp && !err; envp++) {
                const char *eq = strchr(*envp, '=');
                char var[CONFIG_MAX_NAME], name[CONFIG_MAX_NAME];
                bool allowed = false;
                if (!eq || strncmp(*envp, CONFIG_ENV_PREFIX, plen))
                        continue;
                if ((size_t) (eq - *envp) >= sizeof(var)) {
                        err = af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                        "%.64s...: environment variable name too long", *envp);
                        break;
                }
                memcpy(var, *envp, (size_t) (eq - *envp));
                var[eq - *envp] = '\0';
                for (size_t i = 0; env_allow[i]; i++)
                        allowed |= !strcmp(var, env_allow[i]);
                for (size_t i = 0; i < conf->env_ref_cnt; i++)
                        allowed |= !strcmp(var, conf->env_refs[i]);
                if (allowed)
                        continue;

                origin_t o = {.env = var};
                const char *rest = var + plen;
                name[0] = '\0';
                if (!strncmp(rest, "KAFKA_", 6)) {
                        /* AGENTFLEET_KAFKA_LINGER_MS -> kafka.linger.ms */
                        size_t k = snprintf(name, sizeof(name), "kafka.");
                        for (const char *p = rest + 6; *p && k + 1 < sizeof(name); p++)
                                name[k++] =
                                        *p == '_' ? '.'
                                                  : (char) (*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
                        name[k] = '\0';
                } else {
                        for (size_t i = 0; i < af_settings_cnt; i++) {
                                char env[CONFIG_MAX_NAME];
                                af_config_env_name(af_settings[i].name, env, sizeof(env));
                                if (!strcmp(env, var)) {
                                        snprintf(name, sizeof(name), "%s", af_settings[i].name);
                                        break;
                                }
                        }
                }
                if (name[0]) {
                        err = config_store(conf, name, eq + 1, 0, &o, true, errstr, errstr_size);
                        continue;
                }
                const char *sug = NULL;
                if (env_looks_like_setting(var, &sug))
                        err = af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                        "%s: not a setting%s%s%s (AGENTFLEET_<SECTION>_<NAME> "
                                        "variables must name a setting; see CONFIGURATION.md)",
                                        var, sug ? " (did you mean " : "", sug ? sug : "",
                                        sug ? "?)" : "");
        }
        return err;
}

af_err_t af_config_set(af_config_t *conf, const char *name, const char *value, char *errstr,
                       size_t errstr_size) {
        if (!name || !value)
                return af_errstr(AF_ERR_CONFIG, errstr, errstr_size, "--set: expected name=value");
        return config_store(conf, name, value, 0, NULL, true, errstr, errstr_size);
}

af_err_t af_config_set_arg(af_config_t *conf, const char *arg, char *errstr, size_t errstr_size) {
        const char *eq = strchr(arg, '=');
        char name[256];

        if (!eq || eq == arg || (size_t) (eq - arg) >= sizeof(name))
                return af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                 "--set %s: expected name=value", arg);
        memcpy(name, arg, (size_t) (eq - arg));
        name[eq - arg] = '\0';
        return af_config_set(conf, name, eq + 1, errstr, errstr_size);
}

const char *af_config_str(const af_config_t *conf, const char *name) {
        int idx;
        setting_must(name, &idx);
        return conf->vals[idx].text;
}

int64_t af_config_int(const af_config_t *conf, const char *name) {
        int idx;
        const af_setting_t *s = setting_must(name, &idx);
        if (s->type != AF_SETTING_INT && s->type != AF_SETTING_DURATION &&
            s->type != AF_SETTING_SIZE) {
                fprintf(stderr, "af_config: \"%s\" is not a number setting\n", name);
                abort();
        }
        return conf->vals[idx].i;
}

bool af_config_bool(const af_config_t *conf, const char *name) {
        int idx;
        const af_setting_t *s = setting_must(name, &idx);
        if (s->type != AF_SETTING_BOOL) {
                fprintf(stderr, "af_config: \"%s\" is not a boolean setting\n", name);
                abort();
        }
        return conf->vals[idx].b;
}

bool af_config_is_default(const af_config_t *conf, const char *name) {
        int idx;
        setting_must(name, &idx);
        return !conf->vals[idx].from_user;
}

const char *af_config_path(const af_config_t *conf) {
        return conf->path;
}

af_err_t af_config_check_relations(const af_config_t *conf, char *errstr, size_t errstr_size) {
        /* Each: the first setting must be at least the second, because of why. */
        static const struct {
                const char *longer, *shorter, *why;
        } at_least[] = {
                {"worker.done_ttl", "coordinator.idempotency_ttl",
                 "a task republished after a coordinator crash could otherwise run twice"},
                {"coordinator.index_ttl", "coordinator.idempotency_ttl",
                 "a repeated submit that finds no entry for its task publishes it again"},
        };
        for (size_t i = 0; i < sizeof(at_least) / sizeof(at_least[0]); i++) {
                int64_t longer = af_config_int(conf, at_least[i].longer);
                int64_t shorter = af_config_int(conf, at_least[i].shorter);
                if (longer < shorter)
                        return af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                         "%s (%lld ms) must be at least %s (%lld ms): %s",
                                         at_least[i].longer, (long long) longer,
                                         at_least[i].shorter, (long long) shorter, at_least[i].why);
        }
        return AF_OK;
}

void af_config_kafka_foreach(const af_config_t *conf, af_config_kv_cb_t *cb, void *opaque) {
        for (size_t i = 0; i < conf->kafka_cnt; i++)
                cb(conf->kafka[i].key, conf->kafka[i].value, opaque);
}
