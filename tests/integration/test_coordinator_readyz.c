/*
 * test_coordinator_readyz: GET /readyz checks Kafka with a metadata round trip that takes up
 * to a second while no broker answers; it must not hold the coordinator's loop meanwhile.
 * The coordinator is started with kafka.bootstrap.servers pointing at a socket of this test
 * that accepts connections and never answers (a broker gone silent), and the real Redis.
 *
 * Asserts: /readyz says 503 with a Kafka reason (not ready within a few seconds), and while
 * /readyz requests are being evaluated back to back, /healthz keeps answering quickly (the
 * old synchronous check blocked the loop for the full second of every /readyz).
 *
 * Prints SKIP (and passes) only when AF_TEST_KAFKA or AF_TEST_REDIS_PORT is unset (the real
 * Kafka is not used, but this belongs to the integration label that needs Redis).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>

#include "test_coordinator_harness.h"

#define HEALTHZ_MAX_MS 600 /* far below the 1 s a blocked loop would take */

static bool skipped;
static int silent_fd = -1; /* the broker that never answers */
static volatile bool readyz_running;
static int readyz_answers, readyz_503;

static int silent_broker(void) {
        struct sockaddr_in sa;
        socklen_t len = sizeof(sa);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, 64) < 0 ||
            getsockname(fd, (struct sockaddr *) &sa, &len) < 0)
                return -1;
        silent_fd = fd; /* connections wait in the backlog: accepted by TCP, never answered */
        return ntohs(sa.sin_port);
}

static int setup(void **state) {
        const char *kafka = getenv("AF_TEST_KAFKA");
        const char *redis = getenv("AF_TEST_REDIS_PORT");
        const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        char id[AF_ULID_LEN + 1];
        int port;

        if (!kafka || !*kafka || !redis || !*redis) {
                printf("SKIP: AF_TEST_KAFKA and AF_TEST_REDIS_PORT are not set\n");
                skipped = true;
                return 0;
        }
        if ((port = silent_broker()) < 0)
                return -1;
        af_ulid_new(id);
        for (char *p = id; *p; p++)
                *p = (char) (*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        snprintf(H.prefix, sizeof(H.prefix), "tctrz.%s.", id);
        snprintf(H.bootstrap, sizeof(H.bootstrap), "127.0.0.1:%d", port);
        H.redis_port = atoi(redis);
        H.http_port = h_free_port();
        snprintf(H.base_url, sizeof(H.base_url), "http://127.0.0.1:%d", H.http_port);
        snprintf(H.config_path, sizeof(H.config_path), "%.160s/af-ctrz-%s.yaml", tmp, id);
        snprintf(H.log_path, sizeof(H.log_path), "%.160s/af-ctrz-%s.log", tmp, id);
        if (!h_write_config())
                return -1;
        curl_global_init(CURL_GLOBAL_DEFAULT);
        const char *args[] = {"--config", H.config_path, NULL};
        H.pid = af_test_spawn("agentfleet-coordinator", H.log_path, args);
        for (int i = 0; i < 300; i++) {
                h_resp_t r = h_http("GET", "/healthz", NULL, NULL, NULL, 0);
                long status = r.status;
                h_resp_free(&r);
                if (status == 200)
                        return 0;
                h_sleep_ms(100);
        }
        fprintf(stderr, "coordinator does not answer; log: %s\n", H.log_path);
        return -1;
}

static int teardown(void **state) {
        if (skipped)
                return 0;
        if (H.pid > 0) {
                /* No broker to drain to: SIGKILL after the harness's wait is not a failure. */
                kill(H.pid, SIGKILL);
                waitpid(H.pid, NULL, 0);
                H.pid = 0;
        }
        if (silent_fd >= 0)
                close(silent_fd);
        return 0;
}

static void *readyz_loop(void *arg) {
        int64_t end = af_clock_mono_ms() + 4000;
        while (af_clock_mono_ms() < end) {
                h_resp_t r = h_http("GET", "/readyz", NULL, NULL, NULL, 0);
                readyz_answers++;
                if (r.status == 503 && strcmp(h_str(r.json, "kafka"), "ok") &&
                    !strcmp(h_str(r.json, "status"), "not_ready"))
                        readyz_503++;
                h_resp_free(&r);
        }
        readyz_running = false;
        return NULL;
}

static void test_readyz_says_not_ready_without_blocking_the_loop(void **state) {
        pthread_t th;
        int64_t worst = 0;
        int healthz = 0;

        if (skipped)
                skip();
        readyz_running = true;
        assert_int_equal(pthread_create(&th, NULL, readyz_loop, NULL), 0);
        h_sleep_ms(200);
        while (readyz_running) {
                int64_t t0 = af_clock_mono_ms();
                h_resp_t r = h_http("GET", "/healthz", NULL, NULL, NULL, 0);
                int64_t took = af_clock_mono_ms() - t0;
                assert_int_equal(r.status, 200);
                h_resp_free(&r);
                if (took > worst)
                        worst = took;
                healthz++;
                h_sleep_ms(50);
        }
        pthread_join(th, NULL);
        printf("readyz answers %d (503 %d), healthz %d, slowest healthz %lld ms\n", readyz_answers,
               readyz_503, healthz, (long long) worst);
        assert_true(readyz_answers >= 2);
        assert_int_equal(readyz_503, readyz_answers);
        assert_true(healthz >= 10);
        assert_true(worst < HEALTHZ_MAX_MS);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_readyz_says_not_ready_without_blocking_the_loop),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
