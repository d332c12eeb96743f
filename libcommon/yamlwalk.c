/*
 * yamlwalk: libyaml events -> a small tree with line numbers, plus the unit conversions that
 * the settings parser (config.c) and the catalog parser (catalog.c) share. See yamlwalk.h for
 * why the tree is built from events (aliases refused, depth and size capped).
 */
#include "yamlwalk.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "buf.h"

/* One open container while parsing: the node, and for a map the key read but not yet
 * matched with its value. */
typedef struct frame_s {
        af_ynode_t *node;
        char *key;
        int key_line;
} frame_t;

typedef struct builder_s {
        const char *name;
        char *errstr;
        size_t errstr_size;
        frame_t stack[AF_YAML_MAX_DEPTH];
        int depth;
        size_t nodes;
        af_ynode_t *root;
} builder_t;

void af_yaml_free(af_ynode_t *n) {
        if (!n)
                return;
        for (size_t i = 0; i < n->cnt; i++)
                af_yaml_free(n->items[i]);
        free(n->items);
        free(n->key);
        free(n->str);
        free(n);
}

/* The dotted path of the open containers, for messages: "agents.claims-triage.tools[1]".
 * A container being filled is always its parent's last item, hence cnt - 1. */
static void builder_path(const builder_t *bld, char *out, size_t out_size) {
        size_t o = 0;
        out[0] = '\0';
        for (int i = 1; i < bld->depth && o < out_size; i++) {
                const af_ynode_t *n = bld->stack[i].node;
                const af_ynode_t *parent = bld->stack[i - 1].node;
                if (parent->kind == AF_YNODE_SEQ)
                        o += snprintf(out + o, out_size - o, "[%zu]", parent->cnt - 1);
                else
                        o += snprintf(out + o, out_size - o, "%s%s", o ? "." : "", n->key);
        }
}

static int cmp_key(const void *a, const void *b) {
        const af_ynode_t *x = *(const af_ynode_t *const *) a;
        const af_ynode_t *y = *(const af_ynode_t *const *) b;
        int c = strcmp(x->key, y->key);
        if (c)
                return c;
        return x->key_line < y->key_line ? -1 : x->key_line > y->key_line;
}

/* Called when a map closes (it is still on top of the stack): a key given twice is a
 * mistake we name, instead of silently letting the last one win. Sorting keeps this
 * O(n log n) on hostile input. @returns false with errstr set. */
static bool builder_check_dups(builder_t *bld, af_ynode_t *map) {
        bool ok = true;
        if (map->cnt < 2)
                return true;
        af_ynode_t **v = malloc(map->cnt * sizeof(*v));
        if (!v) {
                af_errstr(AF_ERR_NOMEM, bld->errstr, bld->errstr_size, "%s: out of memory",
                          bld->name);
                return false;
        }
        memcpy(v, map->items, map->cnt * sizeof(*v));
        qsort(v, map->cnt, sizeof(*v), cmp_key);
        for (size_t i = 1; i < map->cnt; i++) {
                if (strcmp(v[i - 1]->key, v[i]->key))
                        continue;
                char path[512];
                builder_path(bld, path, sizeof(path));
                af_errstr(AF_ERR_CONFIG, bld->errstr, bld->errstr_size,
                          "%s:%d: %s%s%s: duplicate key (first at line %d)", bld->name,
                          v[i]->key_line, path, path[0] ? "." : "", v[i]->key, v[i - 1]->key_line);
                ok = false;
                break;
        }
        free(v);
        return ok;
}

static bool node_append(af_ynode_t *parent, af_ynode_t *child) {
        if (parent->cnt == parent->alloc) {
                size_t na = parent->alloc ? parent->alloc * 2 : 4;
                af_ynode_t **ni = realloc(parent->items, na * sizeof(*ni));
                if (!ni)
                        return false;
                parent->items = ni;
                parent->alloc = na;
        }
        parent->items[parent->cnt++] = child;
        return true;
}

/* Handle one scalar/sequence-start/mapping-start event. A scalar in key position of a map
 * becomes that map's pending key; anything else becomes a node attached to its parent.
 * @returns false with errstr set. */
static bool builder_node(builder_t *bld, const yaml_event_t *ev, af_ynode_kind_t kind) {
        int line = (int) ev->start_mark.line + 1;
        frame_t *top = bld->depth ? &bld->stack[bld->depth - 1] : NULL;

        if (++bld->nodes > AF_YAML_MAX_NODES) {
                af_errstr(AF_ERR_TOO_LARGE, bld->errstr, bld->errstr_size,
                          "%s:%d: too many YAML nodes (more than %d)", bld->name, line,
                          AF_YAML_MAX_NODES);
                return false;
        }
        if (top && top->node->kind == AF_YNODE_MAP && !top->key) {
                if (kind != AF_YNODE_SCALAR) {
                        char path[512];
                        builder_path(bld, path, sizeof(path));
                        af_errstr(AF_ERR_CONFIG, bld->errstr, bld->errstr_size,
                                  "%s:%d: %s%smap keys must be plain scalars", bld->name, line,
                                  path, path[0] ? ": " : "");
                        return false;
                }
                top->key = strndup((const char *) ev->data.scalar.value, ev->data.scalar.length);
                top->key_line = line;
                if (!top->key)
                        goto oom;
                return true;
        }

        af_ynode_t *n = calloc(1, sizeof(*n));
        if (!n)
                goto oom;
        n->kind = kind;
        n->line = line;
        if (kind == AF_YNODE_SCALAR) {
                n->len = ev->data.scalar.length;
                n->str = malloc(n->len + 1);
                if (!n->str) {
                        free(n);
                        goto oom;
                }
                memcpy(n->str, ev->data.scalar.value, n->len);
                n->str[n->len] = '\0';
                n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        }
        if (top) {
                if (top->node->kind == AF_YNODE_MAP) {
                        n->key = top->key;
                        n->key_line = top->key_line;
                        top->key = NULL;
                }
                if (!node_append(top->node, n)) {
                        af_yaml_free(n);
                        goto oom;
                }
        } else {
                bld->root = n;
        }
        if (kind != AF_YNODE_SCALAR) {
                if (bld->depth == AF_YAML_MAX_DEPTH) {
                        af_errstr(AF_ERR_CONFIG, bld->errstr, bld->errstr_size,
                                  "%s:%d: nesting deeper than %d levels", bld->name, line,
                                  AF_YAML_MAX_DEPTH);
                        return false;
                }
                bld->stack[bld->depth].node = n;
                bld->stack[bld->depth].key = NULL;
                bld->depth++;
        }
        return true;
oom:
        af_errstr(AF_ERR_NOMEM, bld->errstr, bld->errstr_size, "%s: out of memory", bld->name);
        return false;
}

af_ynode_t *af_yaml_parse(const char *name, const char *data, size_t len, char *errstr,
                          size_t errstr_size) {
        yaml_parser_t parser;
        yaml_event_t ev;
        builder_t bld = {
                .name = name ? name : "<config>", .errstr = errstr, .errstr_size = errstr_size};
        bool ok = false, done = false;
        int docs = 0;

        if (!yaml_parser_initialize(&parser)) {
                af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "%s: out of memory", bld.name);
                return NULL;
        }
        yaml_parser_set_input_string(&parser, (const unsigned char *) data, len);

        while (!done) {
                if (!yaml_parser_parse(&parser, &ev)) {
                        const char *ctx = parser.context;
                        af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                  "%s:%zu: malformed YAML: %s%s%s", bld.name,
                                  (size_t) parser.problem_mark.line + 1,
                                  parser.problem ? parser.problem : "unknown problem",
                                  ctx ? " " : "", ctx ? ctx : "");
                        goto out;
                }
                bool step = true;
                switch (ev.type) {
                case YAML_STREAM_END_EVENT:
                        done = true;
                        break;
                case YAML_DOCUMENT_START_EVENT:
                        if (++docs > 1) {
                                af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                          "%s:%zu: only one YAML document is allowed", bld.name,
                                          (size_t) ev.start_mark.line + 1);
                                step = false;
                        }
                        break;
                case YAML_ALIAS_EVENT:
                        af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                  "%s:%zu: YAML aliases (*%s) are not supported", bld.name,
                                  (size_t) ev.start_mark.line + 1,
                                  (const char *) ev.data.alias.anchor);
                        step = false;
                        break;
                case YAML_SCALAR_EVENT:
                        step = builder_node(&bld, &ev, AF_YNODE_SCALAR);
                        break;
                case YAML_SEQUENCE_START_EVENT:
                        step = builder_node(&bld, &ev, AF_YNODE_SEQ);
                        break;
                case YAML_MAPPING_START_EVENT:
                        step = builder_node(&bld, &ev, AF_YNODE_MAP);
                        break;
                case YAML_SEQUENCE_END_EVENT:
                case YAML_MAPPING_END_EVENT:
                        if (bld.depth > 0) {
                                af_ynode_t *c = bld.stack[bld.depth - 1].node;
                                if (c->kind == AF_YNODE_MAP)
                                        step = builder_check_dups(&bld, c);
                                bld.depth--;
                                free(bld.stack[bld.depth].key);
                                bld.stack[bld.depth].key = NULL;
                        }
                        break;
                default:
                        break;
                }
                yaml_event_delete(&ev);
                if (!step)
                        goto out;
        }
        ok = true;
out:
        /* On error, free pending keys of frames still open (values are owned by the tree). */
        for (int i = 0; i < bld.depth; i++)
                free(bld.stack[i].key);
        yaml_parser_delete(&parser);
        if (!ok) {
                af_yaml_free(bld.root);
                return NULL;
        }
        if (!bld.root || af_yaml_is_null(bld.root)) {
                /* An empty file (or a bare `---`) is an empty configuration. */
                af_yaml_free(bld.root);
                bld.root = calloc(1, sizeof(*bld.root));
                if (!bld.root) {
                        af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "%s: out of memory", bld.name);
                        return NULL;
                }
                bld.root->kind = AF_YNODE_MAP;
                bld.root->line = 1;
        }
        return bld.root;
}

af_err_t af_yaml_read_file(const char *path, size_t max_bytes, char **data, size_t *len,
                           char *errstr, size_t errstr_size) {
        af_err_t err = AF_OK;
        af_buf_t b;
        char chunk[8192];
        size_t n;
        FILE *f = fopen(path, "rb");

        af_buf_init(&b, max_bytes);
        if (!f) {
                err = af_errstr(AF_ERR_CONFIG, errstr, errstr_size, "%s: cannot read: %s", path,
                                strerror(errno));
                goto out;
        }
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
                if ((err = af_buf_append(&b, chunk, n))) {
                        af_errstr(err, errstr, errstr_size, "%s: larger than %zu bytes", path,
                                  max_bytes);
                        err = AF_ERR_CONFIG;
                        goto out;
                }
        }
        if (ferror(f)) {
                err = af_errstr(AF_ERR_CONFIG, errstr, errstr_size, "%s: cannot read: %s", path,
                                strerror(errno));
                goto out;
        }
        if (!b.data && (err = af_buf_append(&b, "", 0))) {
                af_errstr(err, errstr, errstr_size, "%s: out of memory", path);
                goto out;
        }
        *data = af_buf_steal(&b, len);
        if (!*data)
                err = af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "%s: out of memory", path);
out:
        if (f)
                fclose(f);
        af_buf_free(&b);
        return err;
}

const af_ynode_t *af_yaml_get(const af_ynode_t *map, const char *key) {
        if (!map || map->kind != AF_YNODE_MAP)
                return NULL;
        for (size_t i = 0; i < map->cnt; i++)
                if (!strcmp(map->items[i]->key, key))
                        return map->items[i];
        return NULL;
}

const char *af_yaml_kind_str(const af_ynode_t *n) {
        switch (n->kind) {
        case AF_YNODE_MAP:
                return "a map";
        case AF_YNODE_SEQ:
                return "a sequence";
        default:
                return "a scalar";
        }
}

bool af_yaml_is_null(const af_ynode_t *n) {
        return n && n->kind == AF_YNODE_SCALAR && n->plain &&
               (!n->len || !strcmp(n->str, "~") || !strcmp(n->str, "null") ||
                !strcmp(n->str, "Null") || !strcmp(n->str, "NULL"));
}

bool af_yaml_parse_int(const char *s, int64_t *out) {
        char *end;
        if (!s || !*s || (*s != '-' && *s != '+' && (*s < '0' || *s > '9')))
                return false;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || *end)
                return false;
        *out = (int64_t) v;
        return true;
}

bool af_yaml_parse_bool(const char *s, bool *out) {
        static const char *const yes[] = {"true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};
        if (!s)
                return false;
        for (size_t i = 0; i < 4; i++) {
                if (!strcasecmp(s, yes[i])) {
                        *out = true;
                        return true;
                }
                if (!strcasecmp(s, no[i])) {
                        *out = false;
                        return true;
                }
        }
        return false;
}

/* Digits then a unit from `units`; @returns false on no digits, unknown unit or overflow. */
typedef struct unit_s {
        const char *name;
        int64_t mult;
} unit_t;

static bool parse_with_units(const char *s, const unit_t *units, bool nocase, int64_t *out) {
        int64_t v = 0;
        const char *p = s;
        if (!s || *p < '0' || *p > '9')
                return false;
        for (; *p >= '0' && *p <= '9'; p++) {
                if (v > (INT64_MAX - (*p - '0')) / 10)
                        return false;
                v = v * 10 + (*p - '0');
        }
        for (const unit_t *u = units; u->name; u++) {
                if (nocase ? strcasecmp(p, u->name) : strcmp(p, u->name))
                        continue;
                if (u->mult && v > INT64_MAX / u->mult)
                        return false;
                *out = v * u->mult;
                return true;
        }
        return false;
}

bool af_yaml_parse_duration(const char *s, int64_t *out_ms) {
        static const unit_t units[] = {{"", 1},        {"ms", 1},       {"s", 1000}, {"m", 60000},
                                       {"h", 3600000}, {"d", 86400000}, {NULL, 0}};
        return parse_with_units(s, units, false, out_ms);
}

bool af_yaml_parse_size(const char *s, int64_t *out_bytes) {
        static const unit_t units[] = {{"", 1},
                                       {"B", 1},
                                       {"KiB", 1024},
                                       {"MiB", 1024 * 1024},
                                       {"GiB", 1024LL * 1024 * 1024},
                                       {"kB", 1000},
                                       {"KB", 1000},
                                       {"MB", 1000000},
                                       {"GB", 1000000000LL},
                                       {NULL, 0}};
        return parse_with_units(s, units, true, out_bytes);
}

void af_yaml_format_duration(int64_t ms, char *out, size_t out_size) {
        if (ms != 0 && ms % 86400000 == 0 && ms / 86400000 < 1000)
                snprintf(out, out_size, "%" PRId64 "d", ms / 86400000);
        else if (ms != 0 && ms % 3600000 == 0)
                snprintf(out, out_size, "%" PRId64 "h", ms / 3600000);
        else if (ms != 0 && ms % 60000 == 0)
                snprintf(out, out_size, "%" PRId64 "m", ms / 60000);
        else if (ms != 0 && ms % 1000 == 0)
                snprintf(out, out_size, "%" PRId64 "s", ms / 1000);
        else
                snprintf(out, out_size, "%" PRId64 "ms", ms);
}

void af_yaml_format_size(int64_t bytes, char *out, size_t out_size) {
        const int64_t gib = 1024LL * 1024 * 1024, mib = 1024 * 1024, kib = 1024;
        if (bytes != 0 && bytes % gib == 0)
                snprintf(out, out_size, "%" PRId64 "GiB", bytes / gib);
        else if (bytes != 0 && bytes % mib == 0)
                snprintf(out, out_size, "%" PRId64 "MiB", bytes / mib);
        else if (bytes != 0 && bytes % kib == 0)
                snprintf(out, out_size, "%" PRId64 "KiB", bytes / kib);
        else
                snprintf(out, out_size, "%" PRId64 "B", bytes);
}

size_t af_yaml_distance(const char *a, const char *b, size_t cap) {
        /* Optimal string alignment: a swap of two neighbours costs 1, like one typo. */
        size_t la = strlen(a), lb = strlen(b);
        uint8_t d[65][65];
        if (la > 64 || lb > 64)
                return strcmp(a, b) ? cap + 1 : 0;
        if ((la > lb ? la - lb : lb - la) > cap)
                return cap + 1;
        for (size_t i = 0; i <= la; i++)
                d[i][0] = (uint8_t) i;
        for (size_t j = 0; j <= lb; j++)
                d[0][j] = (uint8_t) j;
        for (size_t i = 1; i <= la; i++) {
                for (size_t j = 1; j <= lb; j++) {
                        size_t best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
                        if (d[i - 1][j] + 1u < best)
                                best = d[i - 1][j] + 1u;
                        if (d[i][j - 1] + 1u < best)
                                best = d[i][j - 1] + 1u;
                        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                            d[i - 2][j - 2] + 1u < best)
                                best = d[i - 2][j - 2] + 1u;
                        d[i][j] = (uint8_t) best;
                }
        }
        return d[la][lb] > cap ? cap + 1 : d[la][lb];
}
