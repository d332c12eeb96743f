/*
 * Unit tests of metrics: the exact Prometheus text of counters, gauges and histograms, series
 * kept apart by label values, label value and HELP escaping, and refusal of bad names,
 * clashing registrations and wrong label counts; the process's own figures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "metrics.h"

static char *render(af_metrics_t *m, af_buf_t *out) {
        af_buf_init(out, 1 << 20);
        assert_int_equal(af_metrics_render(m, out), AF_OK);
        return out->data ? out->data : "";
}

static void test_counter_with_labels_renders_each_series(void **state) {
        af_metrics_t *m = af_metrics_new();
        const char *const names[] = {"type", "status", NULL};
        af_metric_t *c =
                af_metrics_counter(m, "af_tasks_total", "Tasks by type and status.", names);
        assert_non_null(c);
        af_metric_add(c, (const char *const[]){"claim.triage", "succeeded", NULL}, 1);
        af_metric_add(c, (const char *const[]){"noop", "failed", NULL}, 2);
        af_metric_add(c, (const char *const[]){"claim.triage", "succeeded", NULL}, 2);
        af_buf_t out;
        assert_string_equal(render(m, &out),
                            "# HELP af_tasks_total Tasks by type and status.\n"
                            "# TYPE af_tasks_total counter\n"
                            "af_tasks_total{type=\"claim.triage\",status=\"succeeded\"} 3\n"
                            "af_tasks_total{type=\"noop\",status=\"failed\"} 2\n");
        af_buf_free(&out);
        af_metrics_destroy(m);
}

static void test_counter_never_goes_down(void **state) {
        af_metrics_t *m = af_metrics_new();
        af_metric_t *c = af_metrics_counter(m, "c_total", "c", NULL);
        af_metric_add(c, NULL, 5);
        af_metric_add(c, NULL, -3);
        af_metric_add(c, NULL, NAN);
        af_buf_t out;
        assert_non_null(strstr(render(m, &out), "\nc_total 5\n"));
        af_buf_free(&out);
        af_metrics_destroy(m);
}

static void test_gauge_set_and_add(void **state) {
        af_metrics_t *m = af_metrics_new();
        af_metric_t *g = af_metrics_gauge(m, "af_in_flight", "In flight.", NULL);
        af_metric_set(g, NULL, 10);
        af_metric_add(g, NULL, -2.5);
        af_buf_t out;
        assert_string_equal(render(m, &out), "# HELP af_in_flight In flight.\n"
                                             "# TYPE af_in_flight gauge\n"
                                             "af_in_flight 7.5\n");
        af_buf_free(&out);
        af_metrics_destroy(m);
}

static void test_histogram_buckets_are_cumulative(void **state) {
        af_metrics_t *m = af_metrics_new();
        const double b[] = {0.1, 1, 10};
        const char *const names[] = {"route", NULL};
        af_metric_t *h = af_metrics_histogram(m, "lat_seconds", "Latency.", names, b, 3);
        const char *const v[] = {"/v1/tasks", NULL};
        af_metric_observe(h, v, 0.05);
        af_metric_observe(h, v, 0.1); /* le is inclusive */
        af_metric_observe(h, v, 5);
        af_metric_observe(h, v, 100);
        af_buf_t out;
        assert_string_equal(render(m, &out),
                            "# HELP lat_seconds Latency.\n"
                            "# TYPE lat_seconds histogram\n"
                            "lat_seconds_bucket{route=\"/v1/tasks\",le=\"0.1\"} 2\n"
                            "lat_seconds_bucket{route=\"/v1/tasks\",le=\"1\"} 2\n"
                            "lat_seconds_bucket{route=\"/v1/tasks\",le=\"10\"} 3\n"
                            "lat_seconds_bucket{route=\"/v1/tasks\",le=\"+Inf\"} 4\n"
                            "lat_seconds_sum{route=\"/v1/tasks\"} 105.15\n"
                            "lat_seconds_count{route=\"/v1/tasks\"} 4\n");
        af_buf_free(&out);
        af_metrics_destroy(m);
}

static void test_histogram_without_labels(void **state) {
        af_metrics_t *m = af_metrics_new();
        af_metric_t *h = af_metrics_histogram(m, "h", "h", NULL, af_metrics_latency_buckets,
                                              af_metrics_latency_bucket_cnt);
        af_metric_observe(h, NULL, 0.003);
        af_buf_t out;
        const char *s = render(m, &out);
        assert_non_null(strstr(s, "h_bucket{le=\"0.0025\"} 0\n"));
        assert_non_null(strstr(s, "h_bucket{le=\"0.005\"} 1\n"));
        assert_non_null(strstr(s, "h_bucket{le=\"60\"} 1\n"));
        assert_non_null(strstr(s, "h_count 1\n"));
        af_buf_free(&out);
        af_metrics_destroy(m);
}

static void test_label_values_and_help_are_escaped(void **state) {
        af_metrics_t *m = af_metrics_new();
        const char *const names[] = {"tenant", NULL};
        af_metric_t *c = af_metrics_counter(m, "e_total", "a \\ and a\nnewline", names);
        af_metric_add(c, (const char *const[]){"a\"b\\c\nd", NULL}, 1);
        af_buf_t out;
        assert_string_equal(render(m, &out), "# HELP e_total a \\\\ and a\\nnewline\n"
                                             "# TYPE e_total counter\n"
                                             "e_total{tenant=\"a\\\"b\\\\c\\nd\"} 1\n");
        af_buf_free(&out);
        af_metrics_destroy(m);
}

static void test_label_values_do_not_collide_across_boundaries(void **state) {
        af_metrics_t *m = af_metrics_new();
        const char *const names[] = {"a", "b", NULL};
        af_metric_t *c = af_metrics_counter(m, "x_total", "x", names);
        af_metric_add(c, (const char *const[]){"ab", "c", NULL}, 1);
        af_metric_add(c, (const char *const[]){"a", "bc", NULL}, 1);
        af_buf_t out;
        const char *s = render(m, &out);
        assert_non_null(strstr(s, "x_total{a=\"ab\",b=\"c\"} 1\n"));
        assert_non_null(strstr(s, "x_total{a=\"a\",b=\"bc\"} 1\n"));
        af_buf_free(&out);
        af_metrics_destroy(m);
}

static void test_many_series_are_found_again(void **state) {
        af_metrics_t *m = af_metrics_new();
        const char *const names[] = {"id", NULL};
        af_metric_t *c = af_metrics_counter(m, "many_total", "many", names);
        char id[16];
        for (int round = 0; round < 3; round++)
                for (int i = 0; i < 500; i++) {
                        snprintf(id, sizeof(id), "s%d", i);
                        af_metric_add(c, (const char *const[]){id, NULL}, 1);
                }
        af_buf_t out;
        const char *s = render(m, &out);
        assert_non_null(strstr(s, "many_total{id=\"s0\"} 3\n"));
        assert_non_null(strstr(s, "many_total{id=\"s499\"} 3\n"));
        int lines = 0;
        for (const char *p = s; *p; p++)
                lines += *p == '\n';
        assert_int_equal(lines, 2 + 500);
        af_buf_free(&out);
        af_metrics_destroy(m);
}

static void test_bad_registrations_are_refused(void **state) {
        af_metrics_t *m = af_metrics_new();
        const char *const bad_label[] = {"bad-label", NULL};
        const char *const le[] = {"le", NULL};
        const char *const one[] = {"a", NULL};
        const double unsorted[] = {1, 0.5};
        assert_null(af_metrics_counter(m, "9starts_with_digit", "x", NULL));
        assert_null(af_metrics_counter(m, "has space", "x", NULL));
        assert_null(af_metrics_counter(m, "ok_total", "x", bad_label));
        assert_null(af_metrics_histogram(m, "h1", "x", le, af_metrics_latency_buckets, 3));
        assert_null(af_metrics_histogram(m, "h2", "x", NULL, unsorted, 2));
        af_metric_t *c = af_metrics_counter(m, "same_total", "x", one);
        assert_non_null(c);
        /* Same name, kind and labels: the same metric; anything else clashes. */
        assert_ptr_equal(af_metrics_counter(m, "same_total", "x", one), c);
        assert_null(af_metrics_gauge(m, "same_total", "x", one));
        assert_null(af_metrics_counter(m, "same_total", "x", NULL));
        af_metrics_destroy(m);
}

static void test_wrong_label_count_is_ignored(void **state) {
        af_metrics_t *m = af_metrics_new();
        const char *const names[] = {"a", "b", NULL};
        af_metric_t *c = af_metrics_counter(m, "w_total", "w", names);
        af_metric_add(c, (const char *const[]){"only-one", NULL}, 1);
        af_metric_add(c, NULL, 1);
        af_metric_add(NULL, NULL, 1); /* a failed registration must not crash updates */
        af_buf_t out;
        assert_null(strstr(render(m, &out), "w_total{"));
        af_buf_free(&out);
        af_metrics_destroy(m);
}

static void test_render_respects_buffer_cap(void **state) {
        af_metrics_t *m = af_metrics_new();
        af_metric_t *c =
                af_metrics_counter(m, "cap_total", "a help text longer than the cap", NULL);
        af_metric_add(c, NULL, 1);
        af_buf_t out;
        af_buf_init(&out, 16);
        assert_int_equal(af_metrics_render(m, &out), AF_ERR_TOO_LARGE);
        af_buf_free(&out);
        af_metrics_destroy(m);
        af_metrics_destroy(NULL);
}

/* @returns the value of the unlabelled sample name in text, after checking its TYPE line. */
static double sample(const char *text, const char *name, const char *type) {
        char want[128];
        snprintf(want, sizeof(want), "# TYPE %s %s\n%s ", name, type, name);
        const char *p = strstr(text, want);
        assert_non_null(p);
        return strtod(p + strlen(want), NULL);
}

/* The process figures are this process's: descriptors counted as they open, the limit as
 * getrlimit says, memory and CPU time non-zero, a start time in the past. */
static void test_process_figures_are_this_processes(void **state) {
        af_buf_t a, b;
        struct rlimit rl;
        volatile double spin = 0;
        for (int i = 0; i < 20000000; i++) /* some CPU time to report */
                spin += i;
        assert_true(spin > 0);
        af_buf_init(&a, 1 << 20);
        assert_int_equal(af_metrics_render_process(&a), AF_OK);
        int fd = open("/dev/null", O_RDONLY);
        assert_true(fd >= 0);
        af_buf_init(&b, 1 << 20);
        assert_int_equal(af_metrics_render_process(&b), AF_OK);
        close(fd);

        assert_true(sample(b.data, "process_open_fds", "gauge") ==
                    sample(a.data, "process_open_fds", "gauge") + 1);
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
        assert_true(sample(a.data, "process_max_fds", "gauge") == (double) rl.rlim_cur);
        assert_true(sample(a.data, "process_resident_memory_bytes", "gauge") > 1 << 20);
        assert_true(sample(a.data, "process_virtual_memory_bytes", "gauge") >=
                    sample(a.data, "process_resident_memory_bytes", "gauge"));
        assert_true(sample(a.data, "process_cpu_seconds_total", "counter") > 0);
        double start = sample(a.data, "process_start_time_seconds", "gauge");
        assert_true(start > 1.5e9 && start <= (double) time(NULL) + 1);
        assert_non_null(
                strstr(a.data, "# HELP process_open_fds Number of open file descriptors.\n"));
        af_buf_free(&a);
        af_buf_free(&b);
}

int main(void) {
        af_log_init("test", AF_LOG_OFF);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_counter_with_labels_renders_each_series),
                cmocka_unit_test(test_counter_never_goes_down),
                cmocka_unit_test(test_gauge_set_and_add),
                cmocka_unit_test(test_histogram_buckets_are_cumulative),
                cmocka_unit_test(test_histogram_without_labels),
                cmocka_unit_test(test_label_values_and_help_are_escaped),
                cmocka_unit_test(test_label_values_do_not_collide_across_boundaries),
                cmocka_unit_test(test_many_series_are_found_again),
                cmocka_unit_test(test_bad_registrations_are_refused),
                cmocka_unit_test(test_wrong_label_count_is_ignored),
                cmocka_unit_test(test_render_respects_buffer_cap),
                cmocka_unit_test(test_process_figures_are_this_processes),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
