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

void af_test_delete_topics(const af_config_t *conf, const char *bootstrap) {
        static const char *const suffixes[] = {
                "requests",  "tasks.default", "tasks.claims", "results",  "audit",    "dlq",
                "approvals", "events",        "retry.5s",     "retry.1m", "retry.10m"};
        enum { N = sizeof(suffixes) / sizeof(suffixes[0]) };
        char errstr[512], names[N][256];
        rd_kafka_DeleteTopic_t *dt[N];
        rd_kafka_conf_t *kc = rd_kafka_conf_new();
        rd_kafka_event_t *ev;
        rd_kafka_queue_t *q;
        rd_kafka_t *rk;

        rd_kafka_conf_set(kc, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
        if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, sizeof(errstr)))) {
                rd_kafka_conf_destroy(kc);
                return;
        }
        q = rd_kafka_queue_new(rk);
        for (int i = 0; i < N; i++) {
                af_kafka_topic(conf, suffixes[i], names[i], sizeof(names[i]));
                dt[i] = rd_kafka_DeleteTopic_new(names[i]);
        }
        rd_kafka_DeleteTopics(rk, dt, N, NULL, q);
        if ((ev = rd_kafka_queue_poll(q, 30000)))
                rd_kafka_event_destroy(ev);
        rd_kafka_DeleteTopic_destroy_array(dt, N);
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
}

/* One admin request of rk on q: @returns whether it answered without a request-level error. */
static bool admin_answered(rd_kafka_queue_t *q) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
        bool ok = ev && !rd_kafka_event_error(ev);
        if (ev)
                rd_kafka_event_destroy(ev);
        return ok;
}

/* Whether topic is listed (listed_only) or listed with its one partition led. */
static bool topic_state(rd_kafka_t *rk, const char *topic, bool listed_only) {
        const struct rd_kafka_metadata *md = NULL;
        bool hit = false;
        if (rd_kafka_metadata(rk, 1, NULL, &md, 2000) != RD_KAFKA_RESP_ERR_NO_ERROR)
                return false;
        for (int t = 0; t < md->topic_cnt; t++)
                if (!strcmp(md->topics[t].topic, topic) && !md->topics[t].err)
                        hit = listed_only || (md->topics[t].partition_cnt == 1 &&
                                              md->topics[t].partitions[0].leader >= 0);
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

void af_test_delete_topic(const char *bootstrap, const char *topic) {
        rd_kafka_t *rk = admin_client(bootstrap);
        rd_kafka_queue_t *q;
        rd_kafka_DeleteTopic_t *dt;

        if (!rk)
                return;
        q = rd_kafka_queue_new(rk);
        dt = rd_kafka_DeleteTopic_new(topic);
        rd_kafka_DeleteTopics(rk, &dt, 1, NULL, q);
        rd_kafka_DeleteTopic_destroy(dt);
        admin_answered(q); /* absent is fine */
        for (int i = 0; i < 150 && topic_state(rk, topic, true); i++)
                usleep(200 * 1000);
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
}

bool af_test_create_topic(const char *bootstrap, const char *topic, int max_bytes) {
        char errstr[512], limit[32];
        rd_kafka_t *rk = admin_client(bootstrap);
        rd_kafka_NewTopic_t *nt;
        rd_kafka_queue_t *q;
        bool ok = false;

        if (!rk)
                return false;
        q = rd_kafka_queue_new(rk);
        nt = rd_kafka_NewTopic_new(topic, 1, 1, errstr, sizeof(errstr));
        if (nt && max_bytes > 0) {
                snprintf(limit, sizeof(limit), "%d", max_bytes);
                rd_kafka_NewTopic_set_config(nt, "max.message.bytes", limit);
        }
        if (nt) {
                rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
                rd_kafka_NewTopic_destroy(nt);
                if (admin_answered(q))
                        for (int i = 0; i < 150 && !ok; i++)
                                if (!(ok = topic_state(rk, topic, false)))
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
