/*
 * support: free ports, program lookup, loop waits and topic clean-up for the tests.
 */
#include "support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "clock.h"
#include "kafka.h"

int af_test_free_port(void) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sa);
        int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;

        if (fd >= 0 && !bind(fd, (struct sockaddr *) &sa, sizeof(sa)) &&
            !getsockname(fd, (struct sockaddr *) &sa, &len))
                port = ntohs(sa.sin_port);
        if (fd >= 0)
                close(fd);
        return port;
}

bool af_test_find_program(const char *name, char *out, size_t out_size) {
        const char *path = getenv("PATH");
        char dirs[4096];

        snprintf(dirs, sizeof(dirs), "%s:/usr/sbin:/usr/bin", path ? path : "");
        for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d;
             d = strtok_r(NULL, ":", &save)) {
                snprintf(out, out_size, "%s/%s", d, name);
                if (access(out, X_OK) == 0)
                        return true;
        }
        return false;
}

bool af_test_flag_set(void *arg) {
        return *(bool *) arg;
}

typedef struct waiter_s {
        af_loop_t *loop;
        af_test_cond_t *cond;
        void *arg;
} waiter_t;

static void waiter_check(void *opaque) {
        waiter_t *w = opaque;
        if (w->cond && w->cond(w->arg))
                af_loop_stop(w->loop);
}

static void waiter_expire(void *opaque) {
        waiter_t *w = opaque;
        af_loop_stop(w->loop);
}

bool af_test_loop_until(af_loop_t *loop, af_test_cond_t *cond, void *arg, int64_t timeout_ms) {
        waiter_t w = {.loop = loop, .cond = cond, .arg = arg};
        af_timer_t *check = af_timer_new(loop, waiter_check, &w);
        af_timer_t *deadline = af_timer_new(loop, waiter_expire, &w);

        af_timer_start(check, 5, true);
        af_timer_start(deadline, timeout_ms, false);
        if (!cond || !cond(arg))
                af_loop_run(loop);
        af_timer_destroy(check);
        af_timer_destroy(deadline);
        return cond ? cond(arg) : true;
}

/* One admin request of rk on q: @returns whether it answered without a request-level error. */
static bool admin_answered(rd_kafka_queue_t *q) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
        bool ok = ev && !rd_kafka_event_error(ev);
        if (ev)
                rd_kafka_event_destroy(ev);
        return ok;
}

/* Whether topic is listed with its one partition led. */
static bool topic_led(rd_kafka_t *rk, const char *topic, int partitions) {
        const struct rd_kafka_metadata *md = NULL;
        bool hit = false;
        if (rd_kafka_metadata(rk, 1, NULL, &md, 2000) != RD_KAFKA_RESP_ERR_NO_ERROR)
                return false;
        for (int t = 0; t < md->topic_cnt; t++)
                if (!strcmp(md->topics[t].topic, topic) && !md->topics[t].err) {
                        hit = md->topics[t].partition_cnt == partitions;
                        for (int i = 0; hit && i < partitions; i++)
                                hit = md->topics[t].partitions[i].leader >= 0;
                }
        rd_kafka_metadata_destroy(md);
        return hit;
}

/* Whether the metadata lists any of topics[0..cnt); true also when it cannot be had, since
 * then none is known to be gone. */
static bool any_listed(rd_kafka_t *rk, const char *const topics[], size_t cnt) {
        const struct rd_kafka_metadata *md = NULL;
        bool hit = false;
        if (rd_kafka_metadata(rk, 1, NULL, &md, 2000) != RD_KAFKA_RESP_ERR_NO_ERROR)
                return true;
        for (int t = 0; t < md->topic_cnt && !hit; t++)
                for (size_t i = 0; i < cnt && !hit; i++)
                        hit = !md->topics[t].err && !strcmp(md->topics[t].topic, topics[i]);
        rd_kafka_metadata_destroy(md);
        return hit;
}

static rd_kafka_t *admin_client(const char *bootstrap) {
        char errstr[512];
        rd_kafka_conf_t *kc = rd_kafka_conf_new();
        rd_kafka_t *rk;
        rd_kafka_conf_set(kc, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
        if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, sizeof(errstr))))
                rd_kafka_conf_destroy(kc);
        return rk;
}

/* Delete topics[0..cnt) in one request (absent ones are fine) and wait up to 30 s until the
 * metadata lists none of them. @returns whether they are gone; if not, errstr says why. */
static bool topics_delete(const char *bootstrap, const char *const topics[], size_t cnt,
                          char *errstr, size_t errstr_size) {
        rd_kafka_t *rk = admin_client(bootstrap);
        rd_kafka_DeleteTopic_t **dt = calloc(cnt ? cnt : 1, sizeof(*dt));
        const rd_kafka_topic_result_t **res;
        rd_kafka_queue_t *q = NULL;
        rd_kafka_event_t *ev = NULL;
        size_t n = 0;
        bool gone = false;

        snprintf(errstr, errstr_size, "no admin client for %s", bootstrap);
        if (!rk || !dt)
                goto out;
        q = rd_kafka_queue_new(rk);
        for (size_t i = 0; i < cnt; i++)
                dt[i] = rd_kafka_DeleteTopic_new(topics[i]);
        rd_kafka_DeleteTopics(rk, dt, cnt, NULL, q);
        if (!(ev = rd_kafka_queue_poll(q, 30000)) || rd_kafka_event_error(ev)) {
                snprintf(errstr, errstr_size, "DeleteTopics: %s",
                         ev ? rd_kafka_event_error_string(ev) : "no answer within 30 s");
                goto out;
        }
        res = rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &n);
        for (size_t i = 0; i < n; i++) {
                rd_kafka_resp_err_t err = rd_kafka_topic_result_error(res[i]);
                if (err && err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
                        snprintf(errstr, errstr_size, "%s: %s", rd_kafka_topic_result_name(res[i]),
                                 rd_kafka_topic_result_error_string(res[i]));
                        goto out;
                }
        }
        /* The controller answers before every broker has forgotten the topics: wait, so that
         * the next test (or a recreation under the same name) finds them gone. A deadline, not
         * a count: each metadata request may itself take its 2 s when the broker is away. */
        for (int64_t end = af_clock_mono_ms() + 30000; af_clock_mono_ms() < end;) {
                if ((gone = !any_listed(rk, topics, cnt)))
                        break;
                usleep(200 * 1000);
        }
        if (!gone)
                snprintf(errstr, errstr_size, "still listed after 30 s");
out:
        if (ev)
                rd_kafka_event_destroy(ev);
        if (dt && rk)
                rd_kafka_DeleteTopic_destroy_array(dt, cnt);
        free(dt);
        if (q)
                rd_kafka_queue_destroy(q);
        if (rk)
                rd_kafka_destroy(rk);
        return gone;
}

/* topics[0..cnt) as one space-separated line into out (cut at out_size). */
static void topics_join(const char *const topics[], size_t cnt, char *out, size_t out_size) {
        size_t len = 0;
        out[0] = '\0';
        for (size_t i = 0; i < cnt && len < out_size; i++) {
                int w = snprintf(out + len, out_size - len, "%s%s", i ? " " : "", topics[i]);
                if (w < 0)
                        break;
                len += (size_t) w;
        }
}

void af_test_teardown_topics(const char *bootstrap, const char *const topics[], size_t cnt) {
        const char *keep = getenv("FLEET_KEEP_WORK");
        char errstr[512], names[2048];

        if (!cnt)
                return;
        topics_join(topics, cnt, names, sizeof(names));
        /* Kept with the logs, like fleet.bash: what was on the topics is what one reads next. */
        if (keep && !strcmp(keep, "1"))
                fprintf(stderr, "topics kept (FLEET_KEEP_WORK=1): %s\n", names);
        else if (!topics_delete(bootstrap, topics, cnt, errstr, sizeof(errstr)))
                fprintf(stderr, "note: topics not deleted (%s): %s\n", errstr, names);
}

void af_test_delete_topics(const af_config_t *conf, const char *bootstrap) {
        static const char *const suffixes[] = {
                "requests",  "tasks.default", "tasks.claims", "results",  "audit",    "dlq",
                "approvals", "events",        "retry.5s",     "retry.1m", "retry.10m"};
        enum { N = sizeof(suffixes) / sizeof(suffixes[0]) };
        char names[N][256];
        const char *topics[N];

        for (int i = 0; i < N; i++)
                topics[i] = af_kafka_topic(conf, suffixes[i], names[i], sizeof(names[i]));
        af_test_teardown_topics(bootstrap, topics, N);
}

void af_test_delete_topic(const char *bootstrap, const char *topic) {
        char errstr[512];
        topics_delete(bootstrap, &topic, 1, errstr, sizeof(errstr)); /* absent is fine */
}

bool af_test_create_topic(const char *bootstrap, const char *topic, int partitions, int max_bytes) {
        char errstr[512], limit[32];
        rd_kafka_t *rk = admin_client(bootstrap);
        rd_kafka_NewTopic_t *nt;
        rd_kafka_queue_t *q;
        bool ok = false;

        if (!rk)
                return false;
        q = rd_kafka_queue_new(rk);
        nt = rd_kafka_NewTopic_new(topic, partitions, 1, errstr, sizeof(errstr));
        if (nt && max_bytes > 0) {
                snprintf(limit, sizeof(limit), "%d", max_bytes);
                rd_kafka_NewTopic_set_config(nt, "max.message.bytes", limit);
        }
        if (nt) {
                rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
                rd_kafka_NewTopic_destroy(nt);
                if (admin_answered(q))
                        for (int i = 0; i < 150 && !ok; i++)
                                if (!(ok = topic_led(rk, topic, partitions)))
                                        usleep(200 * 1000);
        }
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
        return ok;
}

pid_t af_test_spawn(const char *name, const char *log_path, const char *const args[]) {
        char bin[512];
        const char *argv[32];
        size_t n = 0;
        const char *dir = getenv("AF_BINARY_DIR");
        pid_t pid;

        snprintf(bin, sizeof(bin), "%s/%s", dir ? dir : ".", name);
        argv[n++] = bin;
        for (size_t i = 0; args && args[i] && n < sizeof(argv) / sizeof(argv[0]) - 1; i++)
                argv[n++] = args[i];
        argv[n] = NULL;
        pid = fork();
        if (pid == 0) {
                if (!freopen(log_path, "a", stdout) || dup2(fileno(stdout), 2) < 0)
                        _exit(126);
                execv(bin, (char *const *) argv);
                perror("exec");
                _exit(127);
        }
        return pid;
}

bool af_test_file_has(const char *path, const char *needle) {
        FILE *f = fopen(path, "r");
        char line[8192];
        bool found = false;
        while (f && !found && fgets(line, sizeof(line), f))
                found = strstr(line, needle) != NULL;
        if (f)
                fclose(f);
        return found;
}
