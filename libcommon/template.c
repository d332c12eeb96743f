/*
 * template: `{{name}}` substitution over the task being run (see template.h). Used by the
 * worker's integration handler (URL, body, headers) and agent handler (system prompt); the
 * encoding of each value follows where it goes, so a payload value cannot break out of a
 * URL path segment, a JSON string or a header line.
 */
#include "template.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonfmt.h"

#define TEMPLATE_NAME_MAX 256

/* One resolved value: either a JSON value or a plain string. */
typedef struct {
        const json_t *json;
        const char *str;
        char num[32]; /* storage for task.attempt */
} tvalue_t;

static af_err_t tmpl_error(const char *tmpl, char *errstr, size_t errstr_size, const char *fmt,
                           const char *a, size_t off, const char *b) {
        char what[384];
        snprintf(what, sizeof(what), fmt, a, off, b);
        return af_errstr(AF_ERR_INVALID, errstr, errstr_size, "template \"%.80s%s\": %s", tmpl,
                         strlen(tmpl) > 80 ? "..." : "", what);
}

/* Walk "a.b.0.c" inside root. @returns the value, or NULL with *missing set to the segment
 * that did not resolve (copied into missing_buf). */
static const json_t *tmpl_walk(const json_t *root, const char *path, char *missing_buf,
                               size_t missing_size) {
        const json_t *cur = root;
        char seg[TEMPLATE_NAME_MAX];
        const char *p = path;

        while (cur && *p) {
                const char *dot = strchr(p, '.');
                size_t n = dot ? (size_t) (dot - p) : strlen(p);
                if (n >= sizeof(seg))
                        n = sizeof(seg) - 1;
                memcpy(seg, p, n);
                seg[n] = '\0';
                if (json_is_object(cur)) {
                        cur = json_object_get(cur, seg);
                } else if (json_is_array(cur) && n > 0 && strspn(seg, "0123456789") == n) {
                        cur = json_array_get(cur, strtoul(seg, NULL, 10));
                } else {
                        cur = NULL;
                }
                if (!cur)
                        snprintf(missing_buf, missing_size, "%s", seg);
                p = dot ? dot + 1 : p + strlen(p);
        }
        return cur;
}

/* Resolve name into v. @returns AF_OK or AF_ERR_INVALID with a precise message. */
static af_err_t tmpl_resolve(const char *tmpl, const char *name, size_t off,
                             const af_template_vars_t *vars, tvalue_t *v, char *errstr,
                             size_t errstr_size) {
        char missing[TEMPLATE_NAME_MAX] = "";
        const char *rest;
        const json_t *root = NULL;
        const char *root_name = NULL;

        memset(v, 0, sizeof(*v));
        if (!strcmp(name, "payload") || !strncmp(name, "payload.", 8)) {
                root = vars ? vars->payload : NULL;
                root_name = "payload";
                rest = name[7] ? name + 8 : "";
        } else if (!strcmp(name, "args") || !strncmp(name, "args.", 5)) {
                root = vars ? vars->args : NULL;
                root_name = "args";
                rest = name[4] ? name + 5 : "";
        } else if (!strncmp(name, "task.", 5)) {
                const char *f = name + 5;
                if (!strcmp(f, "id"))
                        v->str = vars ? vars->task_id : NULL;
                else if (!strcmp(f, "type"))
                        v->str = vars ? vars->task_type : NULL;
                else if (!strcmp(f, "tenant"))
                        v->str = vars ? vars->tenant : NULL;
                else if (!strcmp(f, "principal"))
                        v->str = vars ? vars->principal : NULL;
                else if (!strcmp(f, "case_key"))
                        v->str = vars ? vars->case_key : NULL;
                else if (!strcmp(f, "idempotency_key"))
                        v->str = vars ? vars->idempotency_key : NULL;
                else if (!strcmp(f, "attempt") && vars && vars->attempt > 0) {
                        snprintf(v->num, sizeof(v->num), "%d", vars->attempt);
                        v->str = v->num;
                } else if (strcmp(f, "attempt") != 0)
                        return tmpl_error(tmpl, errstr, errstr_size,
                                          "{{%s}} at offset %zu: unknown task field%s", name, off,
                                          " (known: id, type, tenant, principal, "
                                          "case_key, idempotency_key, attempt)");
                if (!v->str)
                        return tmpl_error(tmpl, errstr, errstr_size,
                                          "{{%s}} at offset %zu: no value for this task%s", name,
                                          off, "");
                return AF_OK;
        } else {
                return tmpl_error(tmpl, errstr, errstr_size,
                                  "{{%s}} at offset %zu: unknown variable%s", name, off,
                                  " (known roots: payload, args, task)");
        }
        if (!root)
                return tmpl_error(tmpl, errstr, errstr_size, "{{%s}} at offset %zu: no %s here",
                                  name, off, root_name);
        v->json = tmpl_walk(root, rest, missing, sizeof(missing));
        if (!v->json) {
                char why[TEMPLATE_NAME_MAX + 64];
                snprintf(why, sizeof(why), "%s has no field \"%s\"", root_name, missing);
                return tmpl_error(tmpl, errstr, errstr_size, "{{%s}} at offset %zu: %s", name, off,
                                  why);
        }
        return AF_OK;
}

/* Percent-encode everything but RFC 3986 unreserved characters. */
static af_err_t tmpl_put_url(af_buf_t *out, const char *s, size_t n) {
        static const char hex[] = "0123456789ABCDEF";
        af_err_t err = AF_OK;
        for (size_t i = 0; i < n && !err; i++) {
                unsigned char c = (unsigned char) s[i];
                if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
                        err = af_buf_append(out, &s[i], 1);
                } else {
                        char e[3] = {'%', hex[c >> 4], hex[c & 15]};
                        err = af_buf_append(out, e, 3);
                }
        }
        return err;
}

/* Write v into out as mode asks. */
static af_err_t tmpl_put(const char *tmpl, const char *name, size_t off, af_template_mode_t mode,
                         const tvalue_t *v, af_buf_t *out, char *errstr, size_t errstr_size) {
        af_err_t err = AF_OK;
        char *dump = NULL;
        const char *s = v->str;
        size_t n = s ? strlen(s) : 0;
        json_t *tmp = NULL;

        if (v->json && json_is_string(v->json)) {
                s = json_string_value(v->json);
                n = json_string_length(v->json);
        } else if (v->json) {
                if (mode == AF_TEMPLATE_URL &&
                    (json_is_object(v->json) || json_is_array(v->json))) {
                        err = tmpl_error(tmpl, errstr, errstr_size,
                                         "{{%s}} at offset %zu: %s cannot go into a URL", name, off,
                                         json_is_object(v->json) ? "an object" : "an array");
                        goto out;
                }
                dump = af_json_dumps(v->json, JSON_COMPACT | JSON_ENCODE_ANY);
                if (!dump) {
                        err = AF_ERR_NOMEM;
                        goto out;
                }
                s = dump;
                n = strlen(dump);
                if (mode == AF_TEMPLATE_JSON) {
                        err = af_buf_append(out, s, n);
                        goto out;
                }
        }
        switch (mode) {
        case AF_TEMPLATE_URL:
                err = tmpl_put_url(out, s, n);
                break;
        case AF_TEMPLATE_JSON:
                /* A string: write it as a JSON string literal. */
                tmp = json_stringn(s, n);
                if (!tmp) {
                        err = tmpl_error(tmpl, errstr, errstr_size,
                                         "{{%s}} at offset %zu: value is not valid UTF-8%s", name,
                                         off, "");
                        goto out;
                }
                dump = json_dumps(tmp, JSON_ENCODE_ANY);
                if (!dump) {
                        err = AF_ERR_NOMEM;
                        goto out;
                }
                err = af_buf_puts(out, dump);
                break;
        case AF_TEMPLATE_HEADER:
                if (memchr(s, '\r', n) || memchr(s, '\n', n)) {
                        err = tmpl_error(tmpl, errstr, errstr_size,
                                         "{{%s}} at offset %zu: value contains a line break, "
                                         "refused in a header%s",
                                         name, off, "");
                        goto out;
                }
                err = af_buf_append(out, s, n);
                break;
        default:
                err = af_buf_append(out, s, n);
                break;
        }
out:
        if (err == AF_ERR_TOO_LARGE || err == AF_ERR_NOMEM)
                af_errstr(err, errstr, errstr_size, "template \"%.80s\": result %s", tmpl,
                          err == AF_ERR_TOO_LARGE ? "over its size cap" : "out of memory");
        json_decref(tmp);
        free(dump);
        return err;
}

/* Walk tmpl; with out == NULL only check syntax and roots. */
static af_err_t tmpl_run(const char *tmpl, af_template_mode_t mode, const af_template_vars_t *vars,
                         af_buf_t *out, char *errstr, size_t errstr_size) {
        const char *p = tmpl;
        af_err_t err = AF_OK;

        while (*p && !err) {
                const char *open = strstr(p, "{{");
                const char *close;
                const char *a, *b;
                char name[TEMPLATE_NAME_MAX];
                size_t off;
                tvalue_t v;

                if (!open) {
                        if (out)
                                err = af_buf_puts(out, p);
                        break;
                }
                if (out && open > p)
                        err = af_buf_append(out, p, (size_t) (open - p));
                if (err)
                        break;
                off = (size_t) (open - tmpl);
                close = strstr(open + 2, "}}");
                if (!close) {
                        err = tmpl_error(tmpl, errstr, errstr_size,
                                         "%s{{ at offset %zu is never closed with }}%s", "", off,
                                         "");
                        break;
                }
                a = open + 2;
                b = close;
                while (a < b && isspace((unsigned char) *a))
                        a++;
                while (b > a && isspace((unsigned char) b[-1]))
                        b--;
                if (a == b || (size_t) (b - a) >= sizeof(name)) {
                        err = tmpl_error(tmpl, errstr, errstr_size, "%s{{}} at offset %zu: %s", "",
                                         off, a == b ? "empty variable name" : "name too long");
                        break;
                }
                memcpy(name, a, (size_t) (b - a));
                name[b - a] = '\0';
                if (strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                 "0123456789_.-") != strlen(name)) {
                        err = tmpl_error(tmpl, errstr, errstr_size,
                                         "{{%s}} at offset %zu: bad character in variable "
                                         "name%s",
                                         name, off, "");
                        break;
                }
                if (!out) {
                        if (strcmp(name, "payload") && strncmp(name, "payload.", 8) &&
                            strcmp(name, "args") && strncmp(name, "args.", 5) &&
                            strncmp(name, "task.", 5))
                                err = tmpl_error(tmpl, errstr, errstr_size,
                                                 "{{%s}} at offset %zu: unknown variable%s", name,
                                                 off, " (known roots: payload, args, task)");
                } else {
                        err = tmpl_resolve(tmpl, name, off, vars, &v, errstr, errstr_size);
                        if (!err)
                                err = tmpl_put(tmpl, name, off, mode, &v, out, errstr, errstr_size);
                }
                p = close + 2;
        }
        if (err == AF_ERR_TOO_LARGE)
                af_errstr(err, errstr, errstr_size,
                          "template \"%.80s\": result over its "
                          "size cap",
                          tmpl);
        return err;
}

af_err_t af_template_render(const char *tmpl, af_template_mode_t mode,
                            const af_template_vars_t *vars, af_buf_t *out, char *errstr,
                            size_t errstr_size) {
        return tmpl_run(tmpl ? tmpl : "", mode, vars, out, errstr, errstr_size);
}

af_err_t af_template_check(const char *tmpl, char *errstr, size_t errstr_size) {
        return tmpl_run(tmpl ? tmpl : "", AF_TEMPLATE_TEXT, NULL, NULL, errstr, errstr_size);
}

bool af_template_reads(const char *tmpl, const char *root) {
        size_t n = strlen(root);
        const char *p = tmpl;

        while (p && (p = strstr(p, "{{"))) {
                const char *close = strstr(p + 2, "}}");
                const char *a = p + 2;
                if (!close)
                        break; /* never renders: whatever it names is not read */
                while (a < close && isspace((unsigned char) *a))
                        a++;
                if ((size_t) (close - a) >= n && !strncmp(a, root, n) &&
                    (a[n] == '.' || a[n] == '}' || isspace((unsigned char) a[n])))
                        return true;
                p = close + 2;
        }
        return false;
}
