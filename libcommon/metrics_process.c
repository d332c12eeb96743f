/*
 * metrics_process: the process's own figures for GET /metrics, under the names Prometheus's
 * client libraries give them (process_cpu_seconds_total, process_resident_memory_bytes, ...),
 * so that the dashboards and alerts a platform team already has for other services work for
 * agentfleet's daemons too: memory that keeps growing, descriptors close to their limit.
 *
 * Read from /proc at each scrape (a few small reads; scrapes come every few seconds at most)
 * into a registry of the scrape's own, rendered like every other metric. A figure that cannot
 * be read is left out rather than reported as 0.
 */
#include "metrics.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* The fields of /proc/self/stat after the command name, which may itself hold spaces and
 * parentheses: everything after the last ')'. */
typedef struct {
        unsigned long long utime, stime, starttime; /* clock ticks */
        unsigned long long vsize;                   /* bytes */
        long long rss;                              /* pages */
} proc_stat_t;

static bool read_proc_stat(proc_stat_t *st) {
        char buf[1024];
        FILE *f = fopen("/proc/self/stat", "r");
        if (!f)
                return false;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *p = strrchr(buf, ')');
        /* ") state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
         *  stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss" */
        return p && sscanf(p + 1,
                           " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d "
                           "%*d %*d %*d %llu %llu %lld",
                           &st->utime, &st->stime, &st->starttime, &st->vsize, &st->rss) == 5;
}

/* @returns the boot time in unix seconds (btime in /proc/stat), or -1. */
static long long boot_time(void) {
        char line[256];
        long long btime = -1;
        FILE *f = fopen("/proc/stat", "r");
        if (!f)
                return -1;
        while (btime < 0 && fgets(line, sizeof(line), f))
                if (sscanf(line, "btime %lld", &btime) != 1)
                        btime = -1;
        fclose(f);
        return btime;
}

/* @returns how many descriptors the process has open, or -1. */
static long open_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        long cnt = 0;
        if (!d)
                return -1;
        for (struct dirent *e; (e = readdir(d));)
                cnt += e->d_name[0] != '.';
        closedir(d);
        return cnt - 1; /* the directory's own descriptor */
}

/* One figure, as a counter or a gauge, in the scrape's own registry. */
static void put(af_metrics_t *m, bool counter, const char *name, const char *help, double v) {
        af_metric_t *mt = counter ? af_metrics_counter(m, name, help, NULL)
                                  : af_metrics_gauge(m, name, help, NULL);
        if (mt && counter)
                af_metric_add(mt, NULL, v);
        else if (mt)
                af_metric_set(mt, NULL, v);
}

af_err_t af_metrics_render_process(af_buf_t *out) {
        proc_stat_t st;
        long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
        long long btime = boot_time();
        long fds = open_fds();
        struct rlimit rl;
        af_metrics_t *m = af_metrics_new();
        if (!m)
                return AF_ERR_NOMEM;

        if (read_proc_stat(&st) && ticks > 0 && page > 0) {
                put(m, true, "process_cpu_seconds_total",
                    "Total user and system CPU time spent in seconds.",
                    (double) (st.utime + st.stime) / (double) ticks);
                put(m, false, "process_resident_memory_bytes", "Resident memory size in bytes.",
                    (double) st.rss * (double) page);
                put(m, false, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
                    (double) st.vsize);
                if (btime >= 0)
                        put(m, false, "process_start_time_seconds",
                            "Start time of the process since unix epoch in seconds.",
                            (double) btime + (double) st.starttime / (double) ticks);
        }
        if (fds >= 0)
                put(m, false, "process_open_fds", "Number of open file descriptors.", (double) fds);
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
                put(m, false, "process_max_fds", "Maximum number of open file descriptors.",
                    (double) rl.rlim_cur);
        af_err_t err = af_metrics_render(m, out);
        af_metrics_destroy(m);
        return err;
}
