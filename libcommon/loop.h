/*
 * loop: the one libevent loop of a process. Kafka (queue fd + poll timer), Redis (hiredis
 * adapter), curl multi (socket and timer callbacks) and the HTTP server all plug into the
 * event_base this owns, so a process serves everything from one thread without locks.
 *
 * Signals are delivered through libevent (a self-pipe), so a handler runs as an ordinary loop
 * callback: it may clear run flags and start a drain, never anything async-unsafe.
 */
#ifndef AF_LOOP_H
#define AF_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

typedef struct af_loop_s af_loop_t;
typedef struct af_timer_s af_timer_t;

typedef void(af_timer_cb_t)(void *opaque);
typedef void(af_signal_cb_t)(af_loop_t *loop, int signo, void *opaque);

/* Options of af_loop_new_opts(); all false is what af_loop_new() makes. */
typedef struct af_loop_opts_s {
        /* libevent's epoll changelist (EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST): the add/del
         * changes an fd goes through within one loop pass are merged into one epoll_ctl per fd,
         * so a server that answers inside its read callback (reading -> writing -> reading
         * again) makes two epoll_ctl calls per request instead of four. Opt-in because
         * libevent documents it as unsafe in a process that has any fd cloned by dup() or its
         * variants (a Linux epoll bug: "strange and hard-to-diagnose bugs"), and the libraries
         * inside a worker, coordinator or CLI (librdkafka, hiredis, curl) make no promise
         * about their fds. Only the simagent, whose only fds are evhttp's sockets and
         * libevent's own, turns it on. */
        bool epoll_changelist;
} af_loop_opts_t;

/* @returns a new loop, or NULL with errstr filled. Also sets up the process for loops: SIGPIPE
 * ignored, libevent's messages written to the log (af_log), the soft descriptor limit
 * raised to the hard one. */
af_loop_t *af_loop_new(char *errstr, size_t errstr_size);
/* Like af_loop_new(), with opts (NULL: the defaults). Backends other than epoll ignore
 * epoll_changelist. @returns a new loop, or NULL with errstr filled. */
af_loop_t *af_loop_new_opts(const af_loop_opts_t *opts, char *errstr, size_t errstr_size);
/* Frees the loop; every timer, connection and server on it must be destroyed first. */
void af_loop_destroy(af_loop_t *loop);
struct event_base *af_loop_base(af_loop_t *loop);
/* Run until af_loop_stop(). @returns 0, or -1 on a libevent error. */
int af_loop_run(af_loop_t *loop);
/* Make af_loop_run() return after the current callback. Loop thread only. */
void af_loop_stop(af_loop_t *loop);
/* Call cb from the loop when signo arrives (SIGTERM, SIGINT, SIGHUP...). Repeatable. */
int af_loop_on_signal(af_loop_t *loop, int signo, af_signal_cb_t *cb, void *opaque);

/* Timers. A timer fires once per start unless started with repeat. Loop thread only. */
af_timer_t *af_timer_new(af_loop_t *loop, af_timer_cb_t *cb, void *opaque);
void af_timer_start(af_timer_t *t, int64_t ms, bool repeat);
void af_timer_stop(af_timer_t *t);
bool af_timer_pending(const af_timer_t *t);
void af_timer_destroy(af_timer_t *t); /* NULL is fine */

#endif
