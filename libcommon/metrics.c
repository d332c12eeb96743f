/*
 * metrics: a Prometheus registry for one process (see metrics.h), rendered by GET /metrics
 * in the text exposition format 0.0.4.
 *
 * Each metric keeps its series (one per distinct tuple of label values) in a small chained
 * hash table for updates and in a list in creation order for rendering, so a scrape is stable
 * from one call to the next. Label values come from task types and tenants, i.e. from
 * configuration and callers: the series count per metric is capped (AF_METRICS_MAX_SERIES)
 * so that a misbehaving caller cannot grow the registry without bound.
 */
#include "metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define AF_METRICS_MAX_SERIES 10000 /* per metric; updates past it are dropped */
#define AF_METRICS_HASH_SIZE  64    /* chains per metric */
#define AF_METRICS_MAX_LABELS 16

const double af_metrics_latency_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                             0.5,   1,      2.5,   5,    10,    30,   60};
const size_t af_metrics_latency_bucket_cnt =
        sizeof(af_metrics_latency_buckets) / sizeof(af_metrics_latency_buckets[0]);

typedef enum { AF_METRIC_COUNTER, AF_METRIC_GAUGE, AF_METRIC_HISTOGRAM } af_metric_kind_t;

typedef struct af_series_s {
        char **values; /* label_cnt copies */
        uint32_t hash;
        double value;              /* counter, gauge */
        uint64_t *counts;          /* histogram: per bucket, not cumulative */
        uint64_t count;            /* histogram: observations (also the +Inf bucket) */
        double sum;                /* histogram: sum of observations */
        struct af_series_s *chain; /* next in the same hash chain */
        struct af_series_s *next;  /* next in creation order */
} af_series_t;

struct af_metric_s {
        af_metrics_t *m;
        af_metric_kind_t kind;
        char *name;
        char *help;
        char **label_names;
        size_t label_cnt;
        double *buckets; /* histogram upper bounds, ascending */
        size_t bucket_cnt;
        af_series_t *table[AF_METRICS_HASH_SIZE];
        af_series_t *first, *last;
        size_t series_cnt;
        bool warned_full; /* cap reached (logged once) */
        struct af_metric_s *next;
};

struct af_metrics_s {
        af_metric_t *first, *last;
};

/* ---- registry ------------------------------------------------------------------------------ */

af_metrics_t *af_metrics_new(void) {
        return calloc(1, sizeof(af_metrics_t));
}

static void series_free(af_series_t *s, size_t label_cnt) {
        for (size_t i = 0; i < label_cnt; i++)
                free(s->values[i]);
        free(s->values);
        free(s->counts);
        free(s);
}

static void metric_free(af_metric_t *mt) {
        if (!mt)
                return;
        af_series_t *s = mt->first;
        while (s) {
                af_series_t *next = s->next;
                series_free(s, mt->label_cnt);
                s = next;
        }
        for (size_t i = 0; i < mt->label_cnt; i++)
                free(mt->label_names[i]);
        free(mt->label_names);
        free(mt->buckets);
        free(mt->name);
        free(mt->help);
        free(mt);
}

void af_metrics_destroy(af_metrics_t *m) {
        if (!m)
                return;
        af_metric_t *mt = m->first;
        while (mt) {
                af_metric_t *next = mt->next;
                metric_free(mt);
                mt = next;
        }
        free(m);
}

/* Prometheus names: [a-zA-Z_:][a-zA-Z0-9_:]*; label names the same without ':'. */
static bool metrics_name_valid(const char *s, bool colon_ok) {
        if (!s || !*s || (*s >= '0' && *s <= '9'))
                return false;
        for (; *s; s++) {
                bool ok = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                          (*s >= '0' && *s <= '9') || *s == '_' || (colon_ok && *s == ':');
                if (!ok)
                        return false;
        }
        return true;
}

static size_t metrics_count(const char *const *v) {
        size_t n = 0;
        while (v && v[n])
                n++;
        return n;
}

/* @returns the metric (new, or the one already registered under this name if it has the
 * same kind and labels, so modules may register lazily), or NULL on a bad name, a clash or
 * no memory (logged). Owned by m. */
static af_metric_t *metrics_register(af_metrics_t *m, af_metric_kind_t kind, const char *name,
                                     const char *help, const char *const *label_names,
                                     const double *buckets, size_t bucket_cnt) {
        af_metric_t *mt = NULL;
        size_t label_cnt = metrics_count(label_names);

        if (!m || !metrics_name_valid(name, true) || label_cnt > AF_METRICS_MAX_LABELS)
                goto bad;
        for (size_t i = 0; i < label_cnt; i++)
                if (!metrics_name_valid(label_names[i], false) ||
                    !strncmp(label_names[i], "__", 2) ||
                    (kind == AF_METRIC_HISTOGRAM && !strcmp(label_names[i], "le")))
                        goto bad;
        for (size_t i = 1; i < bucket_cnt; i++)
                if (!(buckets[i] > buckets[i - 1]))
                        goto bad;
        for (af_metric_t *o = m->first; o; o = o->next) {
                if (strcmp(o->name, name))
                        continue;
                if (o->kind != kind || o->label_cnt != label_cnt)
                        goto bad;
                for (size_t i = 0; i < label_cnt; i++)
                        if (strcmp(o->label_names[i], label_names[i]))
                                goto bad;
                return o;
        }

        mt = calloc(1, sizeof(*mt));
        if (!mt)
                goto nomem;
        mt->m = m;
        mt->kind = kind;
        mt->name = strdup(name);
        mt->help = strdup(help ? help : "");
        mt->label_cnt = label_cnt;
        mt->label_names = calloc(label_cnt + 1, sizeof(char *));
        if (!mt->name || !mt->help || !mt->label_names)
                goto nomem;
        for (size_t i = 0; i < label_cnt; i++)
                if (!(mt->label_names[i] = strdup(label_names[i])))
                        goto nomem;
        if (kind == AF_METRIC_HISTOGRAM && bucket_cnt) {
                mt->buckets = malloc(bucket_cnt * sizeof(double));
                if (!mt->buckets)
                        goto nomem;
                memcpy(mt->buckets, buckets, bucket_cnt * sizeof(double));
                mt->bucket_cnt = bucket_cnt;
        }
        if (m->last)
                m->last->next = mt;
        else
                m->first = mt;
        m->last = mt;
        return mt;
bad:
        af_error("metric %s: bad name, label names or buckets, or registered before with "
                 "another kind or labels",
                 name ? name : "(null)");
        return NULL;
nomem:
        metric_free(mt);
        af_error("metric %s: out of memory", name);
        return NULL;
}

af_metric_t *af_metrics_counter(af_metrics_t *m, const char *name, const char *help,
                                const char *const *label_names) {
        return metrics_register(m, AF_METRIC_COUNTER, name, help, label_names, NULL, 0);
}

af_metric_t *af_metrics_gauge(af_metrics_t *m, const char *name, const char *help,
                              const char *const *label_names) {
        return metrics_register(m, AF_METRIC_GAUGE, name, help, label_names, NULL, 0);
}

af_metric_t *af_metrics_histogram(af_metrics_t *m, const char *name, const char *help,
                                  const char *const *label_names, const double *buckets,
                                  size_t bucket_cnt) {
        return metrics_register(m, AF_METRIC_HISTOGRAM, name, help, label_names, buckets,
                                bucket_cnt);
}

/* ---- series -------------------------------------------------------------------------------- */

/* FNV-1a over the values, each terminated by its NUL so ("ab","c") != ("a","bc"). */
static uint32_t series_hash(const char *const *values, size_t cnt) {
        uint32_t h = 2166136261u;
        for (size_t i = 0; i < cnt; i++) {
                const unsigned char *p = (const unsigned char *) values[i];
                do {
                        h ^= *p;
                        h *= 16777619u;
                } while (*p++);
        }
        return h;
}

/* @returns the series for these label values, created on first use; NULL when the values do
 * not fit the metric, the series cap is reached, or memory ran out. */
static af_series_t *series_get(af_metric_t *mt, const char *const *values) {
        af_series_t *s = NULL;
        if (!mt || metrics_count(values) != mt->label_cnt) {
                af_warn("metric %s: updated with the wrong number of label values",
                        mt ? mt->name : "(null)");
                return NULL;
        }
        uint32_t h = series_hash(values, mt->label_cnt);
        af_series_t **chain = &mt->table[h % AF_METRICS_HASH_SIZE];
        for (s = *chain; s; s = s->chain) {
                if (s->hash != h)
                        continue;
                size_t i = 0;
                while (i < mt->label_cnt && !strcmp(s->values[i], values[i]))
                        i++;
                if (i == mt->label_cnt)
                        return s;
        }
        if (mt->series_cnt >= AF_METRICS_MAX_SERIES) {
                if (!mt->warned_full)
                        af_warn("metric %s: over %d series, new label values are dropped", mt->name,
                                AF_METRICS_MAX_SERIES);
                mt->warned_full = true;
                return NULL;
        }
        s = calloc(1, sizeof(*s));
        if (!s)
                goto nomem;
        s->hash = h;
        s->values = calloc(mt->label_cnt + 1, sizeof(char *));
        if (!s->values)
                goto nomem;
        for (size_t i = 0; i < mt->label_cnt; i++)
                if (!(s->values[i] = strdup(values[i])))
                        goto nomem;
        if (mt->kind == AF_METRIC_HISTOGRAM && mt->bucket_cnt &&
            !(s->counts = calloc(mt->bucket_cnt, sizeof(uint64_t))))
                goto nomem;
        s->chain = *chain;
        *chain = s;
        if (mt->last)
                mt->last->next = s;
        else
                mt->first = s;
        mt->last = s;
        mt->series_cnt++;
        return s;
nomem:
        if (s)
                series_free(s, mt->label_cnt);
        return NULL;
}

void af_metric_add(af_metric_t *mt, const char *const *label_values, double v) {
        /* A counter only goes up: a negative add would make rate() see a reset. */
        if (!mt || mt->kind == AF_METRIC_HISTOGRAM || (mt->kind == AF_METRIC_COUNTER && !(v >= 0)))
                return;
        af_series_t *s = series_get(mt, label_values);
        if (s)
                s->value += v;
}

void af_metric_set(af_metric_t *mt, const char *const *label_values, double v) {
        if (!mt || mt->kind == AF_METRIC_HISTOGRAM)
                return;
        af_series_t *s = series_get(mt, label_values);
        if (s)
                s->value = v;
}

void af_metric_observe(af_metric_t *mt, const char *const *label_values, double v) {
        if (!mt || mt->kind != AF_METRIC_HISTOGRAM || isnan(v))
                return;
        af_series_t *s = series_get(mt, label_values);
        if (!s)
                return;
        /* Stored per bucket; made cumulative when rendered. */
        for (size_t i = 0; i < mt->bucket_cnt; i++) {
                if (v <= mt->buckets[i]) {
                        s->counts[i]++;
                        break;
                }
        }
        s->count++;
        s->sum += v;
}

/* ---- exposition ---------------------------------------------------------------------------- */

/* Shortest of %.15g / %.17g that reads back the same; +Inf, -Inf, NaN as Prometheus spells
 * them. */
static af_err_t render_double(af_buf_t *out, double v) {
        char tmp[32];
        if (isnan(v))
                return af_buf_puts(out, "NaN");
        if (isinf(v))
                return af_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
        snprintf(tmp, sizeof(tmp), "%.15g", v);
        if (strtod(tmp, NULL) != v)
                snprintf(tmp, sizeof(tmp), "%.17g", v);
        return af_buf_puts(out, tmp);
}

/* Escape a label value: backslash, double quote and newline (exposition format). */
static af_err_t render_label_value(af_buf_t *out, const char *v) {
        af_err_t err = AF_OK;
        const char *run = v;
        for (; *v && !err; v++) {
                const char *esc = *v == '\\'   ? "\\\\"
                                  : *v == '"'  ? "\\\""
                                  : *v == '\n' ? "\\n"
                                               : NULL;
                if (!esc)
                        continue;
                if (!(err = af_buf_append(out, run, (size_t) (v - run))))
                        err = af_buf_puts(out, esc);
                run = v + 1;
        }
        if (!err)
                err = af_buf_puts(out, run);
        return err;
}

/* HELP text escapes backslash and newline only. */
static af_err_t render_help(af_buf_t *out, const char *v) {
        af_err_t err = AF_OK;
        for (; *v && !err; v++) {
                if (*v == '\\')
                        err = af_buf_puts(out, "\\\\");
                else if (*v == '\n')
                        err = af_buf_puts(out, "\\n");
                else
                        err = af_buf_append(out, v, 1);
        }
        return err;
}

/* name{a="x",b="y"[,le="..."]} value */
static af_err_t render_sample(af_buf_t *out, const af_metric_t *mt, const af_series_t *s,
                              const char *suffix, const char *le, double v) {
        af_err_t err;
        bool any = mt->label_cnt > 0 || le;
        if ((err = af_buf_printf(out, "%s%s", mt->name, suffix)))
                goto out;
        if (any && (err = af_buf_puts(out, "{")))
                goto out;
        for (size_t i = 0; i < mt->label_cnt; i++) {
                if ((err = af_buf_printf(out, "%s%s=\"", i ? "," : "", mt->label_names[i])) ||
                    (err = render_label_value(out, s->values[i])) || (err = af_buf_puts(out, "\"")))
                        goto out;
        }
        if (le && (err = af_buf_printf(out, "%sle=\"%s\"", mt->label_cnt ? "," : "", le)))
                goto out;
        if (any && (err = af_buf_puts(out, "}")))
                goto out;
        if ((err = af_buf_puts(out, " ")) || (err = render_double(out, v)) ||
            (err = af_buf_puts(out, "\n")))
                goto out;
out:
        return err;
}

static af_err_t render_metric(const af_metric_t *mt, af_buf_t *out) {
        static const char *const kinds[] = {"counter", "gauge", "histogram"};
        af_err_t err;
        if ((err = af_buf_printf(out, "# HELP %s ", mt->name)) ||
            (err = render_help(out, mt->help)) ||
            (err = af_buf_printf(out, "\n# TYPE %s %s\n", mt->name, kinds[mt->kind])))
                goto out;
        for (const af_series_t *s = mt->first; s; s = s->next) {
                if (mt->kind != AF_METRIC_HISTOGRAM) {
                        if ((err = render_sample(out, mt, s, "", NULL, s->value)))
                                goto out;
                        continue;
                }
                uint64_t cum = 0;
                for (size_t i = 0; i < mt->bucket_cnt; i++) {
                        char le[32];
                        af_buf_t leb;
                        af_buf_init(&leb, sizeof(le) - 1);
                        cum += s->counts[i];
                        if ((err = render_double(&leb, mt->buckets[i])))
                                goto out;
                        snprintf(le, sizeof(le), "%s", af_buf_str(&leb));
                        af_buf_free(&leb);
                        if ((err = render_sample(out, mt, s, "_bucket", le, (double) cum)))
                                goto out;
                }
                if ((err = render_sample(out, mt, s, "_bucket", "+Inf", (double) s->count)) ||
                    (err = render_sample(out, mt, s, "_sum", NULL, s->sum)) ||
                    (err = render_sample(out, mt, s, "_count", NULL, (double) s->count)))
                        goto out;
        }
out:
        return err;
}

af_err_t af_metrics_render(const af_metrics_t *m, af_buf_t *out) {
        af_err_t err = AF_OK;
        for (const af_metric_t *mt = m ? m->first : NULL; mt && !err; mt = mt->next)
                err = render_metric(mt, out);
        return err;
}
