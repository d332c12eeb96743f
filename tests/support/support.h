/*
 * support: what several tests need and nobody else does, written once: a free loopback port
 * and where a program (redis-server) lives. Linked into every test as aftestsupport.
 */
#ifndef AF_TEST_SUPPORT_H
#define AF_TEST_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>

/* A loopback TCP port that was free a moment ago (bind to port 0, read it, close).
 * @returns the port, or 0 if none could be had. */
int af_test_free_port(void);

/* Find an executable by name on $PATH, then in /usr/sbin and /usr/bin, into out.
 * @returns whether one was found. */
bool af_test_find_program(const char *name, char *out, size_t out_size);

#endif
