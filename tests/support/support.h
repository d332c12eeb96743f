/*
 * support: what several tests need and nobody else does, written once: a free loopback port,
 * where a program (redis-server) lives, running the loop until a condition holds, and removing
 * the topics a test created. Linked into every test as aftestsupport.
 */
#ifndef AF_TEST_SUPPORT_H
#define AF_TEST_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "loop.h"

/* A loopback TCP port that was free a moment ago (bind to port 0, read it, close).
 * @returns the port, or 0 if none could be had. */
int af_test_free_port(void);

/* Find an executable by name on $PATH, then in /usr/sbin and /usr/bin, into out.
 * @returns whether one was found. */
bool af_test_find_program(const char *name, char *out, size_t out_size);

/* A condition to wait for; arg is the caller's. */
typedef bool(af_test_cond_t)(void *arg);
/* The condition "*(bool *) arg is true". */
bool af_test_flag_set(void *arg);

/* Run the loop until cond(arg) holds (checked every 5 ms) or timeout_ms passes; with cond NULL
 * just run it for timeout_ms. @returns cond(arg) at the end (true when cond is NULL). */
bool af_test_loop_until(af_loop_t *loop, af_test_cond_t *cond, void *arg, int64_t timeout_ms);

/* A test's teardown of the topics it created: delete topics[0..cnt) (full names, prefix
 * included) on the broker at bootstrap and wait until the metadata no longer lists them, so
 * repeated runs do not pile up topics on a long-lived broker. FLEET_KEEP_WORK=1 (the switch
 * tests/integration/lib/fleet.bash honours for its logs and topics) keeps them instead, saying
 * so in one line on stderr. Best effort: a failure is a note on stderr, never a test failure. */
void af_test_teardown_topics(const char *bootstrap, const char *const topics[], size_t cnt);

/* af_test_teardown_topics() of every topic of conf's topic.prefix (the set scripts/services
 * creates) on the broker at bootstrap. */
void af_test_delete_topics(const af_config_t *conf, const char *bootstrap);

/* Start the program <AF_BINARY_DIR>/<name> with argv[1..] = args (NULL-terminated), its
 * stdout and stderr appended to log_path. @returns its pid, or -1 (fork failed). */
pid_t af_test_spawn(const char *name, const char *log_path, const char *const args[]);
/* @returns whether a line of the file at path contains needle (false when it cannot be read). */
bool af_test_file_has(const char *path, const char *needle);

/* Delete topic (absent is fine) and wait until the metadata no longer lists it; silent and
 * regardless of FLEET_KEEP_WORK: for a test that recreates a topic, not for teardown. */
void af_test_delete_topic(const char *bootstrap, const char *topic);
/* Create topic with partitions partitions and max.message.bytes max_bytes (0: the broker's
 * default); waits until the metadata shows every partition led, since a client that asks
 * before then is told the topic does not exist. @returns whether it did within 30 s. */
bool af_test_create_topic(const char *bootstrap, const char *topic, int partitions, int max_bytes);

#endif
