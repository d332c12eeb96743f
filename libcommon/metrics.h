/*
 * metrics: Prometheus counters, gauges and histograms, rendered in the text exposition format
 * for GET /metrics. A metric is registered once (name, help, label names) and updated by
 * label values; the loop thread owns them all, so there are no locks.
 */
#ifndef AF_METRICS_H
#define AF_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef struct af_metrics_s af_metrics_t;
typedef struct af_metric_s af_metric_t;

af_metrics_t *af_metrics_new(void);
void af_metrics_destroy(af_metrics_t *m); /* NULL is fine */

/* Register; label_names is NULL-terminated (may be NULL). Names are copied.
 * Histogram buckets are upper bounds in the metric's unit, ascending (copied). */
af_metric_t *af_metrics_counter(af_metrics_t *m, const char *name, const char *help,
                                const char *const *label_names);
af_metric_t *af_metrics_gauge(af_metrics_t *m, const char *name, const char *help,
                              const char *const *label_names);
af_metric_t *af_metrics_histogram(af_metrics_t *m, const char *name, const char *help,
                                  const char *const *label_names, const double *buckets,
                                  size_t bucket_cnt);

/* Update the series with these label values (NULL-terminated, same count as the names;
 * NULL when the metric has no labels). */
void af_metric_add(af_metric_t *mt, const char *const *label_values, double v);
void af_metric_set(af_metric_t *mt, const char *const *label_values, double v);
void af_metric_observe(af_metric_t *mt, const char *const *label_values, double v);

/* Append the exposition text of every metric to out. */
af_err_t af_metrics_render(const af_metrics_t *m, af_buf_t *out);

/* Append the process's own metrics, as Prometheus's client libraries name them: CPU seconds,
 * resident and virtual memory, open and allowed descriptors, start time (Linux /proc). A
 * figure that cannot be read is left out. */
af_err_t af_metrics_render_process(af_buf_t *out);

/* Default latency buckets in seconds (1ms .. 60s). */
extern const double af_metrics_latency_buckets[];
extern const size_t af_metrics_latency_bucket_cnt;

#endif
