/*
 * catalog: reads and validates what the fleet can run — integrations, agents, task types, API
 * tokens and service keys — from the sections of the YAML config file (the settings in the
 * same file belong to config.c). The coordinator uses it to admit tasks and authenticate
 * callers, the workers to run them; both record its content hash in every Task and
 * TaskResult so a decision can be traced to the exact prompt and integration it ran under.
 *
 * Everything is checked at load, so a worker never meets a dangling reference at run time:
 * agent tools and task targets must exist, methods and limits must be sane, ${env:NAME}
 * references must resolve. Each error names the file, line and field. A loaded catalog is
 * immutable; a reload builds a new one.
 */
#include "catalog.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "crypto.h"
#include "log.h"
#include "utf8.h"
#include "yamlwalk.h"

#define CATALOG_MAX_FILE     (16 * 1024 * 1024)
#define CATALOG_MAX_TEMPLATE (1024 * 1024)
#define CATALOG_MAX_NAME     128
#define CATALOG_MAX_PAYLOAD  (16LL * 1024 * 1024)

/* Parse state: where we are, for messages. */
typedef struct pctx_s {
        const char *file;
        char *errstr;
        size_t errstr_size;
        af_catalog_t *cat;
} pctx_t;

/* One entry of a section: its name, where it starts, its fields. */
typedef struct entry_s {
        const char *name;
        int line;
        const af_ynode_t *node;
        char path[CATALOG_MAX_NAME + 32]; /* "agents.claims-triage" / "tokens[2]" */
} entry_t;

static af_err_t perr(pctx_t *pc, int line, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Fill errstr with "file:line: " + message. @returns AF_ERR_CONFIG. */
static af_err_t perr(pctx_t *pc, int line, const char *fmt, ...) {
        if (pc->errstr && pc->errstr_size) {
                int n = snprintf(pc->errstr, pc->errstr_size, "%s:%d: ", pc->file, line);
                if (n >= 0 && (size_t) n < pc->errstr_size) {
                        va_list ap;
                        va_start(ap, fmt);
                        vsnprintf(pc->errstr + n, pc->errstr_size - (size_t) n, fmt, ap);
                        va_end(ap);
                        af_utf8_repair(pc->errstr);
                }
        }
        return AF_ERR_CONFIG;
}

static int field_line(const af_ynode_t *field, const entry_t *e) {
        return field && field->key_line ? field->key_line : e->line;
}

/* Refuse fields we do not know: a misspelt `max_step` must not silently mean "default". */
static af_err_t check_fields(pctx_t *pc, const entry_t *e, const char *const *allowed) {
        for (size_t i = 0; i < e->node->cnt; i++) {
                const af_ynode_t *f = e->node->items[i];
                const char *best = NULL;
                size_t best_d = 3;
                bool known = false;
                for (size_t j = 0; allowed[j] && !known; j++) {
                        size_t d = af_yaml_distance(f->key, allowed[j], 2);
                        known = d == 0;
                        if (d < best_d) {
                                best_d = d;
                                best = allowed[j];
                        }
                }
                if (!known)
                        return perr(pc, f->key_line, "%s.%s: unknown field%s%s%s", e->path, f->key,
                                    best ? " (did you mean " : "", best ? best : "",
                                    best ? "?)" : "");
        }
        return AF_OK;
}

/* A scalar field as text (NULL when absent or null). */
static af_err_t get_scalar(pctx_t *pc, const entry_t *e, const char *key, bool required,
                           const char **out) {
        const af_ynode_t *f = af_yaml_get(e->node, key);
        *out = NULL;
        if (!f || af_yaml_is_null(f)) {
                if (required)
                        return perr(pc, field_line(f, e), "%s: missing required field \"%s\"",
                                    e->path, key);
                return AF_OK;
        }
        if (f->kind != AF_YNODE_SCALAR)
                return perr(pc, f->key_line, "%s.%s: expected a scalar, got %s", e->path, key,
                            af_yaml_kind_str(f));
        if (strlen(f->str) != f->len)
                return perr(pc, f->key_line, "%s.%s: contains a NUL byte", e->path, key);
        if (required && !*f->str)
                return perr(pc, f->key_line, "%s.%s: must not be empty", e->path, key);
        *out = f->str;
        return AF_OK;
}

static af_err_t get_str(pctx_t *pc, const entry_t *e, const char *key, bool required,
                        const char *def, char **out) {
        const char *s;
        af_err_t err = get_scalar(pc, e, key, required, &s);
        if (err)
                return err;
        if (!s)
                s = def;
        *out = NULL;
        if (s && !(*out = strdup(s)))
                return perr(pc, e->line, "out of memory");
        return AF_OK;
}

typedef bool(conv_fn_t)(const char *s, int64_t *out);

/* A number field through conv (int, duration or size) within [min, max]. */
static af_err_t get_num(pctx_t *pc, const entry_t *e, const char *key, conv_fn_t *conv,
                        const char *what, int64_t def, int64_t min, int64_t max, int64_t *out) {
        const char *s;
        af_err_t err = get_scalar(pc, e, key, false, &s);
        if (err)
                return err;
        *out = def;
        if (!s)
                return AF_OK;
        if (!conv(s, out) || *out < min || *out > max) {
                char lo[32], hi[32];
                if (conv == af_yaml_parse_duration) {
                        af_yaml_format_duration(min, lo, sizeof(lo));
                        af_yaml_format_duration(max, hi, sizeof(hi));
                } else if (conv == af_yaml_parse_size) {
                        af_yaml_format_size(min, lo, sizeof(lo));
                        af_yaml_format_size(max, hi, sizeof(hi));
                } else {
                        snprintf(lo, sizeof(lo), "%lld", (long long) min);
                        snprintf(hi, sizeof(hi), "%lld", (long long) max);
                }
                return perr(pc, field_line(af_yaml_get(e->node, key), e),
                            "%s.%s: expected %s in [%s, %s], got \"%.64s\"", e->path, key, what, lo,
                            hi, s);
        }
        return AF_OK;
}

static af_err_t get_double(pctx_t *pc, const entry_t *e, const char *key, double def, double min,
                           double max, double *out) {
        const char *s;
        char *end;
        af_err_t err = get_scalar(pc, e, key, false, &s);
        if (err)
                return err;
        *out = def;
        if (!s)
                return AF_OK;
        errno = 0;
        *out = strtod(s, &end);
        if (!*s || *end || errno || !isfinite(*out) || *out < min || *out > max)
                return perr(pc, field_line(af_yaml_get(e->node, key), e),
                            "%s.%s: expected a number in [%g, %g], got \"%.64s\"", e->path, key,
                            min, max, s);
        return AF_OK;
}

/* A sequence of non-empty scalars (absent = empty). */
static af_err_t get_str_list(pctx_t *pc, const entry_t *e, const char *key, char ***out,
                             size_t *cnt) {
        const af_ynode_t *f = af_yaml_get(e->node, key);
        *out = NULL;
        *cnt = 0;
        if (!f || af_yaml_is_null(f))
                return AF_OK;
        if (f->kind != AF_YNODE_SEQ)
                return perr(pc, f->key_line, "%s.%s: expected a sequence of names, got %s", e->path,
                            key, af_yaml_kind_str(f));
        if (!f->cnt)
                return AF_OK;
        if (!(*out = calloc(f->cnt, sizeof(**out))))
                return perr(pc, f->key_line, "out of memory");
        for (size_t i = 0; i < f->cnt; i++) {
                const af_ynode_t *it = f->items[i];
                if (it->kind != AF_YNODE_SCALAR || !it->len || strlen(it->str) != it->len)
                        return perr(pc, it->line, "%s.%s[%zu]: expected a name, got %s", e->path,
                                    key, i,
                                    it->kind == AF_YNODE_SCALAR ? "an empty or binary value"
                                                                : af_yaml_kind_str(it));
                if (!((*out)[i] = strdup(it->str)))
                        return perr(pc, it->line, "out of memory");
                (*cnt)++;
        }
        return AF_OK;
}

/* YAML -> JSON: plain scalars that read as JSON literals keep their type. */
static json_t *yaml_to_json(const af_ynode_t *n) {
        json_t *j = NULL;
        if (n->kind == AF_YNODE_MAP) {
                j = json_object();
                for (size_t i = 0; j && i < n->cnt; i++) {
                        json_t *v = yaml_to_json(n->items[i]);
                        if (!v || json_object_set_new(j, n->items[i]->key, v)) {
                                json_decref(j);
                                return NULL;
                        }
                }
        } else if (n->kind == AF_YNODE_SEQ) {
                j = json_array();
                for (size_t i = 0; j && i < n->cnt; i++) {
                        json_t *v = yaml_to_json(n->items[i]);
                        if (!v || json_array_append_new(j, v)) {
                                json_decref(j);
                                return NULL;
                        }
                }
        } else if (n->plain) {
                int64_t iv;
                double dv;
                char *end;
                if (af_yaml_is_null(n))
                        return json_null();
                if (!strcmp(n->str, "true") || !strcmp(n->str, "false"))
                        return json_boolean(n->str[0] == 't');
                if (af_yaml_parse_int(n->str, &iv))
                        return json_integer(iv);
                errno = 0;
                dv = strtod(n->str, &end);
                if (*n->str && !*end && !errno && isfinite(dv))
                        return json_real(dv);
                j = json_stringn(n->str, n->len);
        } else {
                j = json_stringn(n->str, n->len);
        }
        return j;
}

/* A field holding JSON: a YAML map/sequence (converted) or JSON text (checked). */
static af_err_t get_json(pctx_t *pc, const entry_t *e, const char *key, bool want_object,
                         char **out) {
        const af_ynode_t *f = af_yaml_get(e->node, key);
        json_t *j = NULL;
        json_error_t jerr;
        af_err_t err = AF_OK;
        *out = NULL;
        if (!f || af_yaml_is_null(f))
                return AF_OK;
        if (f->kind == AF_YNODE_SCALAR) {
                if (!(j = json_loadb(f->str, f->len, 0, &jerr))) {
                        err = perr(pc, f->key_line, "%s.%s: invalid JSON: %s", e->path, key,
                                   jerr.text);
                        goto out;
                }
        } else if (!(j = yaml_to_json(f))) {
                err = perr(pc, f->key_line, "%s.%s: cannot be expressed as JSON", e->path, key);
                goto out;
        }
        if (want_object && !json_is_object(j)) {
                err = perr(pc, f->key_line, "%s.%s: expected a JSON object", e->path, key);
                goto out;
        }
        if (!(*out = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY)))
                err = perr(pc, f->key_line, "out of memory");
out:
        json_decref(j);
        return err;
}

/* Does an environment variable's name say it holds a secret? Values resolved into header
 * values are always treated as secrets; elsewhere (URLs, prompts, bodies) only these, so a
 * base URL from the environment stays readable in the logs. */
static bool env_name_is_secret(const char *name) {
        static const char *const words[] = {"KEY",  "TOKEN", "SECRET",    "PASS",
                                            "AUTH", "CRED",  "SIGNATURE", NULL};
        for (size_t i = 0; words[i]; i++)
                if (strstr(name, words[i]))
                        return true;
        return false;
}

/* Replace every ${env:NAME} or ${env:NAME:-default} in *s by the variable's value (or the
 * default when it is unset). Values of secret-looking variables, and every value when
 * `secret` (header values), are registered for redaction.
 * @returns an error naming `what` and the variable when it is unset without a default. */
static af_err_t resolve_env(pctx_t *pc, int line, const char *what, bool secret, char **s) {
        af_buf_t b;
        af_err_t err = AF_OK;
        const char *p = *s, *ref;
        if (!p || !strstr(p, "${env:"))
                return AF_OK;
        af_buf_init(&b, CATALOG_MAX_TEMPLATE);
        while ((ref = strstr(p, "${env:"))) {
                const char *name = ref + 6, *end = strchr(name, '}');
                const char *dflt = NULL;
                char var[CATALOG_MAX_NAME];
                size_t nl = 0;
                bool valid = end && !isdigit((unsigned char) *name);
                while (valid && name + nl < end &&
                       (isalnum((unsigned char) name[nl]) || name[nl] == '_'))
                        nl++;
                if (valid && name + nl < end) {
                        valid = name[nl] == ':' && name[nl + 1] == '-';
                        dflt = name + nl + 2;
                }
                if (!valid || !nl || nl >= sizeof(var)) {
                        err = perr(pc, line, "%s: malformed ${env:NAME} reference", what);
                        goto out;
                }
                memcpy(var, name, nl);
                var[nl] = '\0';
                const char *val = getenv(var);
                bool too_long;
                if (val) {
                        if (secret || env_name_is_secret(var))
                                af_log_redact_add(val);
                        too_long = af_buf_append(&b, p, (size_t) (ref - p)) || af_buf_puts(&b, val);
                } else if (dflt) {
                        too_long = af_buf_append(&b, p, (size_t) (ref - p)) ||
                                   af_buf_append(&b, dflt, (size_t) (end - dflt));
                } else {
                        err = perr(pc, line, "%s: environment variable %s is not set", what, var);
                        goto out;
                }
                if (too_long) {
                        err = perr(pc, line, "%s: too long once resolved", what);
                        goto out;
                }
                p = end + 1;
        }
        if (af_buf_puts(&b, p)) {
                err = perr(pc, line, "%s: too long once resolved", what);
                goto out;
        }
        free(*s);
        *s = af_buf_steal(&b, NULL);
out:
        af_buf_free(&b);
        return err;
}

/* {{...}} must be closed, so a broken template fails at load and not in a worker. */
static af_err_t check_template(pctx_t *pc, int line, const char *what, const char *t) {
        const char *p = t;
        while (p && (p = strstr(p, "{{"))) {
                const char *end = strstr(p + 2, "}}");
                if (!end)
                        return perr(pc, line, "%s: unclosed {{ in template", what);
                p = end + 2;
        }
        return AF_OK;
}

/* Names appear in topics, metrics and (for integrations) as a model's tool name. */
static bool name_valid(const char *s, bool tool) {
        size_t n = strlen(s);
        if (!n || n > (tool ? 64 : CATALOG_MAX_NAME))
                return false;
        for (; *s; s++)
                if (!isalnum((unsigned char) *s) && *s != '_' && *s != '-' &&
                    (tool || (*s != '.' && *s != ':')))
                        return false;
        return true;
}

/* Call fn for every entry of a section written either as a map (name -> fields) or a
 * sequence of field maps carrying `name_field`. Sequence names are checked for uniqueness
 * here; the YAML reader already refuses a duplicate map key. */
typedef af_err_t(entry_fn_t)(pctx_t *pc, entry_t *e, size_t idx);

static af_err_t section_foreach(pctx_t *pc, const af_ynode_t *root, const char *section,
                                const char *name_field, bool tool_names, entry_fn_t *fn,
                                size_t *cnt) {
        const af_ynode_t *s = af_yaml_get(root, section);
        *cnt = 0;
        if (!s || af_yaml_is_null(s))
                return AF_OK;
        if (s->kind == AF_YNODE_SCALAR || (s->kind == AF_YNODE_MAP && !name_field))
                return perr(pc, s->key_line, "%s: expected a %s, got %s", section,
                            name_field ? "map of entries by name" : "sequence of entries",
                            af_yaml_kind_str(s));
        for (size_t i = 0; i < s->cnt; i++) {
                const af_ynode_t *it = s->items[i];
                entry_t e = {.node = it, .line = it->line};
                if (it->kind != AF_YNODE_MAP)
                        return perr(pc, it->line, "%s: expected each entry to be a map, got %s",
                                    section, af_yaml_kind_str(it));
                if (s->kind == AF_YNODE_MAP) {
                        e.name = it->key;
                        e.line = it->key_line;
                } else if (name_field) {
                        const af_ynode_t *nf = af_yaml_get(it, name_field);
                        if (!nf || nf->kind != AF_YNODE_SCALAR || !nf->len)
                                return perr(pc, it->line,
                                            "%s[%zu]: missing required field "
                                            "\"%s\"",
                                            section, i, name_field);
                        e.name = nf->str;
                        for (size_t j = 0; j < i; j++) {
                                const af_ynode_t *o = af_yaml_get(s->items[j], name_field);
                                if (o && o->kind == AF_YNODE_SCALAR && !strcmp(o->str, e.name))
                                        return perr(pc, nf->line,
                                                    "%s: \"%s\" is defined twice "
                                                    "(first at line %d)",
                                                    section, e.name, o->line);
                        }
                }
                if (e.name) {
                        if (!name_valid(e.name, tool_names))
                                return perr(pc, e.line,
                                            "%s: invalid name \"%.64s\" (letters, "
                                            "digits, '_', '-'%s; at most %d)",
                                            section, e.name, tool_names ? "" : ", '.', ':'",
                                            tool_names ? 64 : CATALOG_MAX_NAME);
                        snprintf(e.path, sizeof(e.path), "%s.%s", section, e.name);
                } else {
                        snprintf(e.path, sizeof(e.path), "%s[%zu]", section, i);
                }
                af_err_t err = fn(pc, &e, i);
                if (err)
                        return err;
                (*cnt)++;
        }
        return AF_OK;
}

static size_t section_size(const af_ynode_t *root, const char *section) {
        const af_ynode_t *s = af_yaml_get(root, section);
        return s && s->kind != AF_YNODE_SCALAR ? s->cnt : 0;
}

/* "did you mean" among the integration names. */
static const char *integration_suggest(const af_catalog_t *cat, const char *name) {
        const char *best = NULL;
        size_t best_d = 3;
        for (size_t i = 0; i < cat->integration_cnt; i++) {
                size_t d = af_yaml_distance(name, cat->integrations[i].name, 2);
                if (d < best_d) {
                        best_d = d;
                        best = cat->integrations[i].name;
                }
        }
        return best;
}

static af_err_t parse_integration(pctx_t *pc, entry_t *e, size_t idx) {
        static const char *const fields[] = {"name",         "description", "method",     "url",
                                             "body",         "headers",     "parameters", "timeout",
                                             "compensation", NULL};
        static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", NULL};
        af_integration_t *in = &pc->cat->integrations[idx];
        const af_ynode_t *f;
        af_err_t err;
        char what[512];
        bool ok = false;

        if ((err = check_fields(pc, e, fields)))
                return err;
        if (!(in->name = strdup(e->name)))
                return perr(pc, e->line, "out of memory");
        if ((err = get_str(pc, e, "description", false, NULL, &in->description)) ||
            (err = get_str(pc, e, "method", false, "POST", &in->method)) ||
            (err = get_str(pc, e, "url", true, NULL, &in->url)) ||
            (err = get_str(pc, e, "compensation", false, NULL, &in->compensation)) ||
            (err = get_json(pc, e, "parameters", true, &in->parameters)) ||
            (err = get_num(pc, e, "timeout", af_yaml_parse_duration, "a duration", 10000, 1, 600000,
                           &in->timeout_ms)))
                return err;
        for (char *m = in->method; *m; m++)
                *m = (char) toupper((unsigned char) *m);
        for (size_t i = 0; methods[i]; i++)
                ok |= !strcmp(in->method, methods[i]);
        if (!ok)
                return perr(pc, field_line(af_yaml_get(e->node, "method"), e),
                            "%s.method: expected GET, POST, PUT, PATCH or DELETE, got \"%.32s\"",
                            e->path, in->method);

        f = af_yaml_get(e->node, "body");
        if (f && f->kind != AF_YNODE_SCALAR) {
                if ((err = get_json(pc, e, "body", false, &in->body)))
                        return err;
        } else if ((err = get_str(pc, e, "body", false, NULL, &in->body))) {
                return err;
        }

        snprintf(what, sizeof(what), "%s.url", e->path);
        f = af_yaml_get(e->node, "url");
        if ((err = resolve_env(pc, field_line(f, e), what, false, &in->url)) ||
            (err = check_template(pc, field_line(f, e), what, in->url)))
                return err;
        if (strncasecmp(in->url, "http://", 7) && strncasecmp(in->url, "https://", 8))
                return perr(pc, field_line(f, e), "%s: expected an http:// or https:// URL", what);
        snprintf(what, sizeof(what), "%s.body", e->path);
        f = af_yaml_get(e->node, "body");
        if ((err = resolve_env(pc, field_line(f, e), what, false, &in->body)) ||
            (err = check_template(pc, field_line(f, e), what, in->body)))
                return err;

        f = af_yaml_get(e->node, "headers");
        if (f && !af_yaml_is_null(f)) {
                if (f->kind != AF_YNODE_MAP)
                        return perr(pc, f->key_line,
                                    "%s.headers: expected a map of header "
                                    "name to value, got %s",
                                    e->path, af_yaml_kind_str(f));
                if (f->cnt && !(in->headers = calloc(f->cnt, sizeof(*in->headers))))
                        return perr(pc, f->key_line, "out of memory");
                for (size_t i = 0; i < f->cnt; i++) {
                        const af_ynode_t *h = f->items[i];
                        af_kv_t *kv = &in->headers[i];
                        bool name_ok = *h->key != '\0';
                        for (const char *c = h->key; *c; c++)
                                name_ok &= isgraph((unsigned char) *c) && *c != ':';
                        snprintf(what, sizeof(what), "%s.headers.%.64s", e->path, h->key);
                        if (!name_ok)
                                return perr(pc, h->key_line, "%s: invalid header name", what);
                        if (h->kind != AF_YNODE_SCALAR || strlen(h->str) != h->len)
                                return perr(pc, h->key_line, "%s: expected a text value, got %s",
                                            what, af_yaml_kind_str(h));
                        in->header_cnt++; /* counted first: destroy frees a half-filled kv */
                        if (!(kv->name = strdup(h->key)) || !(kv->value = strdup(h->str)))
                                return perr(pc, h->key_line, "out of memory");
                        if ((err = resolve_env(pc, h->key_line, what, true, &kv->value)) ||
                            (err = check_template(pc, h->key_line, what, kv->value)))
                                return err;
                        if (strpbrk(kv->value, "\r\n"))
                                return perr(pc, h->key_line, "%s: line break in a header value",
                                            what);
                }
        }
        return AF_OK;
}

static af_err_t parse_agent(pctx_t *pc, entry_t *e, size_t idx) {
        static const char *const fields[] = {
                "name",        "description",   "version", "base_url",  "model",
                "api_key_env", "system_prompt", "tools",   "max_steps", "timeout",
                "temperature", "prices",        NULL};
        static const char *const price_fields[] = {"prompt_per_1k", "completion_per_1k", NULL};
        af_agent_t *a = &pc->cat->agents[idx];
        const af_ynode_t *f;
        af_err_t err;
        int64_t steps;
        char what[512];
        uint8_t sha[AF_SHA256_LEN];

        if ((err = check_fields(pc, e, fields)))
                return err;
        if (!(a->name = strdup(e->name)))
                return perr(pc, e->line, "out of memory");
        if ((err = get_str(pc, e, "version", false, "1", &a->version)) ||
            (err = get_str(pc, e, "base_url", true, NULL, &a->base_url)) ||
            (err = get_str(pc, e, "model", true, NULL, &a->model)) ||
            (err = get_str(pc, e, "api_key_env", false, NULL, &a->api_key_env)) ||
            (err = get_str(pc, e, "system_prompt", true, NULL, &a->system_prompt)) ||
            (err = get_str_list(pc, e, "tools", &a->tools, &a->tool_cnt)) ||
            (err = get_num(pc, e, "max_steps", af_yaml_parse_int, "an integer", 4, 1, 32,
                           &steps)) ||
            (err = get_num(pc, e, "timeout", af_yaml_parse_duration, "a duration", 60000, 1, 600000,
                           &a->timeout_ms)) ||
            (err = get_double(pc, e, "temperature", 0.0, 0.0, 2.0, &a->temperature)))
                return err;
        a->max_steps = (int) steps;

        snprintf(what, sizeof(what), "%s.base_url", e->path);
        f = af_yaml_get(e->node, "base_url");
        if ((err = resolve_env(pc, field_line(f, e), what, false, &a->base_url)))
                return err;
        if (strncasecmp(a->base_url, "http://", 7) && strncasecmp(a->base_url, "https://", 8))
                return perr(pc, field_line(f, e), "%s: expected an http:// or https:// URL", what);
        snprintf(what, sizeof(what), "%s.system_prompt", e->path);
        f = af_yaml_get(e->node, "system_prompt");
        if ((err = resolve_env(pc, field_line(f, e), what, false, &a->system_prompt)) ||
            (err = check_template(pc, field_line(f, e), what, a->system_prompt)))
                return err;
        af_sha256(a->system_prompt, strlen(a->system_prompt), sha);
        if (!(a->prompt_hash = malloc(AF_SHA256_HEX_LEN + 1)))
                return perr(pc, e->line, "out of memory");
        af_hex_encode(sha, sizeof(sha), a->prompt_hash);

        f = af_yaml_get(e->node, "tools");
        for (size_t i = 0; i < a->tool_cnt; i++) {
                int line = f->items[i]->line;
                if (!af_catalog_integration(pc->cat, a->tools[i])) {
                        const char *sug = integration_suggest(pc->cat, a->tools[i]);
                        return perr(pc, line, "%s.tools[%zu]: unknown integration \"%.64s\"%s%s%s",
                                    e->path, i, a->tools[i], sug ? " (did you mean " : "",
                                    sug ? sug : "", sug ? "?)" : "");
                }
                for (size_t j = 0; j < i; j++)
                        if (!strcmp(a->tools[i], a->tools[j]))
                                return perr(pc, line, "%s.tools[%zu]: \"%s\" is listed twice",
                                            e->path, i, a->tools[i]);
        }

        f = af_yaml_get(e->node, "prices");
        if (f && !af_yaml_is_null(f)) {
                entry_t pe = {.name = e->name, .line = f->key_line, .node = f};
                double p, c;
                if (f->kind != AF_YNODE_MAP)
                        return perr(pc, f->key_line,
                                    "%s.prices: expected a map "
                                    "{prompt_per_1k, completion_per_1k}, got %s",
                                    e->path, af_yaml_kind_str(f));
                snprintf(pe.path, sizeof(pe.path), "%.140s.prices", e->path);
                if ((err = check_fields(pc, &pe, price_fields)) ||
                    (err = get_double(pc, &pe, "prompt_per_1k", 0, 0, 1e6, &p)) ||
                    (err = get_double(pc, &pe, "completion_per_1k", 0, 0, 1e6, &c)))
                        return err;
                a->price_prompt_micros_per_1k = llround(p * 1e6);
                a->price_completion_micros_per_1k = llround(c * 1e6);
        }

        if (a->api_key_env) {
                const char *key = getenv(a->api_key_env);
                if (key && *key) {
                        if (!(a->api_key = strdup(key)))
                                return perr(pc, e->line, "out of memory");
                        af_log_redact_add(key);
                } else {
                        af_warn("%s: agent %s: %s is not set; its model calls go without an "
                                "API key",
                                pc->file, a->name, a->api_key_env);
                }
        }
        return AF_OK;
}

static af_err_t parse_task_type(pctx_t *pc, entry_t *e, size_t idx) {
        static const char *const fields[] = {"name",        "description", "agent",
                                             "integration", "lane",        "max_attempts",
                                             "timeout",     "max_payload", NULL};
        af_task_type_t *tt = &pc->cat->task_types[idx];
        af_err_t err;
        const char *agent, *integ;
        int64_t attempts;

        if ((err = check_fields(pc, e, fields)))
                return err;
        if (!(tt->name = strdup(e->name)))
                return perr(pc, e->line, "out of memory");
        if ((err = get_scalar(pc, e, "agent", false, &agent)) ||
            (err = get_scalar(pc, e, "integration", false, &integ)) ||
            (err = get_str(pc, e, "lane", false, "default", &tt->lane)) ||
            (err = get_num(pc, e, "max_attempts", af_yaml_parse_int, "an integer", 3, 1, 100,
                           &attempts)) ||
            (err = get_num(pc, e, "timeout", af_yaml_parse_duration, "a duration", 300000, 1000,
                           86400000, &tt->timeout_ms)) ||
            (err = get_num(pc, e, "max_payload", af_yaml_parse_size, "a size", 0, 0,
                           CATALOG_MAX_PAYLOAD, &tt->max_payload_bytes)))
                return err;
        tt->max_attempts = (int) attempts;
        if (!!agent == !!integ)
                return perr(pc, e->line,
                            "%s: expected exactly one of \"agent\" or "
                            "\"integration\"",
                            e->path);
        if (agent) {
                tt->kind = AF_HANDLER_AGENT;
                if (!af_catalog_agent(pc->cat, agent))
                        return perr(pc, field_line(af_yaml_get(e->node, "agent"), e),
                                    "%s.agent: unknown agent \"%.64s\"", e->path, agent);
        } else {
                tt->kind = AF_HANDLER_INTEGRATION;
                if (!af_catalog_integration(pc->cat, integ)) {
                        const char *sug = integration_suggest(pc->cat, integ);
                        return perr(pc, field_line(af_yaml_get(e->node, "integration"), e),
                                    "%s.integration: unknown integration \"%.64s\"%s%s%s", e->path,
                                    integ, sug ? " (did you mean " : "", sug ? sug : "",
                                    sug ? "?)" : "");
                }
        }
        if (!(tt->target = strdup(agent ? agent : integ)))
                return perr(pc, e->line, "out of memory");
        if (!name_valid(tt->lane, true))
                return perr(pc, field_line(af_yaml_get(e->node, "lane"), e),
                            "%s.lane: expected letters, digits, '_' or '-' (it names a topic), "
                            "got \"%.64s\"",
                            e->path, tt->lane);
        return AF_OK;
}

static af_err_t parse_token(pctx_t *pc, entry_t *e, size_t idx) {
        static const char *const fields[] = {"principal",    "tenant",      "roles", "sha256",
                                             "token_sha256", "description", NULL};
        af_token_t *t = &pc->cat->tokens[idx];
        const char *h1, *h2, *hex;
        af_err_t err;

        if ((err = check_fields(pc, e, fields)) ||
            (err = get_str(pc, e, "principal", true, NULL, &t->principal)) ||
            (err = get_str(pc, e, "tenant", true, NULL, &t->tenant)) ||
            (err = get_str_list(pc, e, "roles", &t->roles, &t->role_cnt)) ||
            (err = get_scalar(pc, e, "sha256", false, &h1)) ||
            (err = get_scalar(pc, e, "token_sha256", false, &h2)))
                return err;
        if (!!h1 == !!h2)
                return perr(pc, e->line,
                            "%s: expected exactly one of \"sha256\" or "
                            "\"token_sha256\"",
                            e->path);
        hex = h1 ? h1 : h2;
        if (!strncmp(hex, "sha256:", 7))
                hex += 7;
        if (strlen(hex) != AF_SHA256_HEX_LEN || !af_hex_decode(hex, t->sha256, AF_SHA256_LEN))
                return perr(pc, field_line(af_yaml_get(e->node, h1 ? "sha256" : "token_sha256"), e),
                            "%s.%s: expected sha256:<64 hex digits> (printf %%s TOKEN | "
                            "sha256sum)",
                            e->path, h1 ? "sha256" : "token_sha256");
        for (size_t j = 0; j < idx; j++)
                if (!memcmp(pc->cat->tokens[j].sha256, t->sha256, AF_SHA256_LEN))
                        return perr(pc, e->line, "%s: the same token as tokens[%zu]", e->path, j);
        return AF_OK;
}

static af_err_t parse_service_key(pctx_t *pc, entry_t *e, size_t idx) {
        static const char *const fields[] = {"key_id", "principal", "tenant", "secret_env", NULL};
        af_service_key_t *k = &pc->cat->service_keys[idx];
        char *env = NULL;
        af_err_t err;

        if ((err = check_fields(pc, e, fields)))
                return err;
        if (!(k->key_id = strdup(e->name)))
                return perr(pc, e->line, "out of memory");
        if ((err = get_str(pc, e, "principal", true, NULL, &k->principal)) ||
            (err = get_str(pc, e, "tenant", true, NULL, &k->tenant)) ||
            (err = get_str(pc, e, "secret_env", true, NULL, &env)))
                goto out;
        const char *secret = getenv(env);
        if (secret && *secret) {
                if (!(k->secret = strdup(secret))) {
                        err = perr(pc, e->line, "out of memory");
                        goto out;
                }
                af_log_redact_add(secret);
        } else {
                af_warn("%s: service key %s: %s is not set; requests signed with it are refused",
                        pc->file, k->key_id, env);
        }
out:
        free(env);
        return err;
}

/* Allocate a section's array up front (entries are filled in place); `n` remembers its
 * size so that a failed parse can free entries it filled but did not count. */
#define SECTION_ALLOC(pc, root, section, arr, n)                                                   \
        do {                                                                                       \
                (n) = section_size(root, section);                                                 \
                if ((n) && !((arr) = calloc((n), sizeof(*(arr))))) {                               \
                        err = perr(pc, 1, "out of memory");                                        \
                        goto out;                                                                  \
                }                                                                                  \
        } while (0)

af_catalog_t *af_catalog_parse(const char *name, const char *yaml, size_t len, char *errstr,
                               size_t errstr_size) {
        pctx_t pc = {
                .file = name ? name : "<catalog>", .errstr = errstr, .errstr_size = errstr_size};
        af_catalog_t *cat = NULL;
        af_ynode_t *root = NULL;
        af_err_t err = AF_OK;
        size_t n_int = 0, n_agent = 0, n_tt = 0, n_tok = 0, n_sk = 0;

        if (!(root = af_yaml_parse(pc.file, yaml ? yaml : "", yaml ? len : 0, errstr,
                                   errstr_size))) {
                err = AF_ERR_CONFIG;
                goto out;
        }
        if (!(cat = calloc(1, sizeof(*cat))) || !(cat->path = strdup(pc.file))) {
                err = af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                goto out;
        }
        pc.cat = cat;
        af_sha256_hex(yaml ? yaml : "", yaml ? len : 0, cat->hash);
        if (root->kind != AF_YNODE_MAP) {
                err = perr(&pc, root->line, "expected a map at the top level, got %s",
                           af_yaml_kind_str(root));
                goto out;
        }

        /* Integrations first: agents and task types refer to them. Counts grow as entries
         * parse, so a lookup during parsing only sees what is complete. */
        SECTION_ALLOC(&pc, root, "integrations", cat->integrations, n_int);
        SECTION_ALLOC(&pc, root, "agents", cat->agents, n_agent);
        SECTION_ALLOC(&pc, root, "task_types", cat->task_types, n_tt);
        SECTION_ALLOC(&pc, root, "tokens", cat->tokens, n_tok);
        SECTION_ALLOC(&pc, root, "service_keys", cat->service_keys, n_sk);
        if ((err = section_foreach(&pc, root, "integrations", "name", true, parse_integration,
                                   &cat->integration_cnt)))
                goto out;
        for (size_t i = 0; i < cat->integration_cnt; i++) {
                const af_integration_t *in = &cat->integrations[i];
                if (in->compensation && !af_catalog_integration(cat, in->compensation)) {
                        const af_ynode_t *s = af_yaml_get(root, "integrations");
                        const af_ynode_t *c = af_yaml_get(s->items[i], "compensation");
                        err = perr(&pc, c ? c->key_line : s->items[i]->line,
                                   "integrations.%s.compensation: unknown integration \"%.64s\"",
                                   in->name, in->compensation);
                        goto out;
                }
        }
        if ((err = section_foreach(&pc, root, "agents", "name", false, parse_agent,
                                   &cat->agent_cnt)) ||
            (err = section_foreach(&pc, root, "task_types", "name", false, parse_task_type,
                                   &cat->task_type_cnt)) ||
            (err = section_foreach(&pc, root, "tokens", NULL, false, parse_token,
                                   &cat->token_cnt)) ||
            (err = section_foreach(&pc, root, "service_keys", "key_id", false, parse_service_key,
                                   &cat->service_key_cnt)))
                goto out;
out:
        af_yaml_free(root);
        if (err && cat) {
                /* Entries filled in place but not yet counted still own memory (the arrays
                 * were zeroed, so unfilled entries free nothing). */
                cat->integration_cnt = n_int;
                cat->agent_cnt = n_agent;
                cat->task_type_cnt = n_tt;
                cat->token_cnt = n_tok;
                cat->service_key_cnt = n_sk;
                af_catalog_destroy(cat);
                cat = NULL;
        }
        return cat;
}

af_catalog_t *af_catalog_load(const char *path, char *errstr, size_t errstr_size) {
        char *data = NULL;
        size_t len = 0;
        af_catalog_t *cat = NULL;

        if (!af_yaml_read_file(path, CATALOG_MAX_FILE, &data, &len, errstr, errstr_size))
                cat = af_catalog_parse(path, data, len, errstr, errstr_size);
        free(data);
        return cat;
}

static void strv_free(char **v, size_t n) {
        for (size_t i = 0; v && i < n; i++)
                free(v[i]);
        free(v);
}

void af_catalog_destroy(af_catalog_t *cat) {
        if (!cat)
                return;
        for (size_t i = 0; cat->integrations && i < cat->integration_cnt; i++) {
                af_integration_t *in = &cat->integrations[i];
                free(in->name);
                free(in->description);
                free(in->method);
                free(in->url);
                free(in->body);
                for (size_t j = 0; j < in->header_cnt; j++) {
                        free(in->headers[j].name);
                        free(in->headers[j].value);
                }
                free(in->headers);
                free(in->parameters);
                free(in->compensation);
        }
        free(cat->integrations);
        for (size_t i = 0; cat->agents && i < cat->agent_cnt; i++) {
                af_agent_t *a = &cat->agents[i];
                free(a->name);
                free(a->version);
                free(a->base_url);
                free(a->model);
                free(a->api_key_env);
                free(a->api_key);
                free(a->system_prompt);
                free(a->prompt_hash);
                strv_free(a->tools, a->tool_cnt);
        }
        free(cat->agents);
        for (size_t i = 0; cat->task_types && i < cat->task_type_cnt; i++) {
                free(cat->task_types[i].name);
                free(cat->task_types[i].lane);
                free(cat->task_types[i].target);
        }
        free(cat->task_types);
        for (size_t i = 0; cat->tokens && i < cat->token_cnt; i++) {
                free(cat->tokens[i].principal);
                free(cat->tokens[i].tenant);
                strv_free(cat->tokens[i].roles, cat->tokens[i].role_cnt);
        }
        free(cat->tokens);
        for (size_t i = 0; cat->service_keys && i < cat->service_key_cnt; i++) {
                free(cat->service_keys[i].key_id);
                free(cat->service_keys[i].principal);
                free(cat->service_keys[i].tenant);
                free(cat->service_keys[i].secret);
        }
        free(cat->service_keys);
        free(cat->path);
        free(cat);
}

const af_task_type_t *af_catalog_task_type(const af_catalog_t *cat, const char *name) {
        for (size_t i = 0; cat && name && i < cat->task_type_cnt; i++)
                if (!strcmp(cat->task_types[i].name, name))
                        return &cat->task_types[i];
        return NULL;
}

const af_agent_t *af_catalog_agent(const af_catalog_t *cat, const char *name) {
        for (size_t i = 0; cat && name && i < cat->agent_cnt; i++)
                if (!strcmp(cat->agents[i].name, name))
                        return &cat->agents[i];
        return NULL;
}

const af_integration_t *af_catalog_integration(const af_catalog_t *cat, const char *name) {
        for (size_t i = 0; cat && name && i < cat->integration_cnt; i++)
                if (!strcmp(cat->integrations[i].name, name))
                        return &cat->integrations[i];
        return NULL;
}

/* Every token is compared, match or not, so the time taken says nothing about which token
 * (or how much of one) matched. Only hashes are compared: the bearer's length leaks
 * nothing either. */
const af_token_t *af_catalog_authenticate(const af_catalog_t *cat, const char *bearer) {
        uint8_t sha[AF_SHA256_LEN];
        const af_token_t *found = NULL;
        if (!cat || !bearer)
                return NULL;
        af_sha256(bearer, strlen(bearer), sha);
        for (size_t i = 0; i < cat->token_cnt; i++) {
                bool eq = af_const_eq(sha, cat->tokens[i].sha256, AF_SHA256_LEN);
                found = eq ? &cat->tokens[i] : found;
        }
        return found;
}

const af_service_key_t *af_catalog_service_key(const af_catalog_t *cat, const char *key_id) {
        for (size_t i = 0; cat && key_id && i < cat->service_key_cnt; i++)
                if (!strcmp(cat->service_keys[i].key_id, key_id))
                        return &cat->service_keys[i];
        return NULL;
}
