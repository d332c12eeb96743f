/*
 * loop: event_base ownership, signals and timers; libevent's own messages go to our log (as
 * JSON lines like every other, instead of bare "[warn] ..." lines on stderr); the process's
 * descriptor limit raised to what it is allowed.
 */
#include "loop.h"

#include <event2/event.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "err.h"
#include "log.h"

#define AF_LOOP_MAX_SIGNALS 8

struct af_loop_s {
        struct event_base *base;
        struct {
                struct event *ev;
                af_signal_cb_t *cb;
                void *opaque;
                int signo;
        } sig[AF_LOOP_MAX_SIGNALS];
        int sig_cnt;
};

struct af_timer_s {
        struct event *ev;
        af_timer_cb_t *cb;
        void *opaque;
};

/* Called by libevent, possibly deep inside it: it must not call back into libevent. */
static void loop_log_libevent(int severity, const char *msg) {
        af_log_level_t level = severity == EVENT_LOG_DEBUG  ? AF_LOG_DEBUG
                               : severity == EVENT_LOG_MSG  ? AF_LOG_INFO
                               : severity == EVENT_LOG_WARN ? AF_LOG_WARN
                                                            : AF_LOG_ERROR;
        af_log(level, "libevent: %s", msg);
}

/* A process with a loop holds a socket per connection (API clients, curl's pool, Kafka, Redis):
 * it may use every descriptor it is allowed, not just the soft limit, which is often 1024
 * below a hard limit in the hundreds of thousands. */
static void loop_raise_fd_limit(void) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl))
                        af_debug("cannot raise the descriptor limit to %llu",
                                 (unsigned long long) rl.rlim_max);
        }
}

af_loop_t *af_loop_new(char *errstr, size_t errstr_size) {
        return af_loop_new_opts(NULL, errstr, errstr_size);
}

af_loop_t *af_loop_new_opts(const af_loop_opts_t *opts, char *errstr, size_t errstr_size) {
        af_loop_t *loop = NULL;
        struct event_config *cfg = NULL;

        if (!(loop = calloc(1, sizeof(*loop))) || !(cfg = event_config_new())) {
                af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                goto fail;
        }
        /* Only a flag: without one, event_base_new_with_config(cfg) is event_base_new(), and
         * the EVENT_* environment switches keep working as before. */
        if (opts && opts->epoll_changelist &&
            event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST) < 0) {
                af_errstr(AF_ERR_INTERNAL, errstr, errstr_size,
                          "event_config_set_flag(EPOLL_USE_CHANGELIST) failed");
                goto fail;
        }
        if (!(loop->base = event_base_new_with_config(cfg))) {
                af_errstr(AF_ERR_INTERNAL, errstr, errstr_size, "event_base_new failed");
                goto fail;
        }
        event_config_free(cfg);
        /* A peer closing a socket must be an error on that socket, not a process kill. */
        signal(SIGPIPE, SIG_IGN);
        event_set_log_callback(loop_log_libevent);
        loop_raise_fd_limit();
        return loop;
fail:
        if (cfg)
                event_config_free(cfg);
        free(loop);
        return NULL;
}

void af_loop_destroy(af_loop_t *loop) {
        if (!loop)
                return;
        for (int i = 0; i < loop->sig_cnt; i++)
                event_free(loop->sig[i].ev);
        event_base_free(loop->base);
        free(loop);
}

struct event_base *af_loop_base(af_loop_t *loop) {
        return loop->base;
}

int af_loop_run(af_loop_t *loop) {
        return event_base_loop(loop->base, EVLOOP_NO_EXIT_ON_EMPTY) < 0 ? -1 : 0;
}

void af_loop_stop(af_loop_t *loop) {
        event_base_loopbreak(loop->base);
}

static void loop_signal_cb(evutil_socket_t fd, short what, void *arg) {
        af_loop_t *loop = arg;
        for (int i = 0; i < loop->sig_cnt; i++)
                if (loop->sig[i].signo == (int) fd)
                        loop->sig[i].cb(loop, (int) fd, loop->sig[i].opaque);
}

int af_loop_on_signal(af_loop_t *loop, int signo, af_signal_cb_t *cb, void *opaque) {
        if (loop->sig_cnt == AF_LOOP_MAX_SIGNALS)
                return -1;
        struct event *ev = evsignal_new(loop->base, signo, loop_signal_cb, loop);
        if (!ev || evsignal_add(ev, NULL) < 0) {
                if (ev)
                        event_free(ev);
                return -1;
        }
        loop->sig[loop->sig_cnt].ev = ev;
        loop->sig[loop->sig_cnt].cb = cb;
        loop->sig[loop->sig_cnt].opaque = opaque;
        loop->sig[loop->sig_cnt].signo = signo;
        loop->sig_cnt++;
        return 0;
}

static void timer_fire(evutil_socket_t fd, short what, void *arg) {
        af_timer_t *t = arg;
        t->cb(t->opaque);
}

af_timer_t *af_timer_new(af_loop_t *loop, af_timer_cb_t *cb, void *opaque) {
        af_timer_t *t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        t->cb = cb;
        t->opaque = opaque;
        t->ev = event_new(loop->base, -1, 0, timer_fire, t);
        if (!t->ev) {
                free(t);
                return NULL;
        }
        return t;
}

void af_timer_start(af_timer_t *t, int64_t ms, bool repeat) {
        struct event_base *base = event_get_base(t->ev);
        event_del(t->ev);
        event_assign(t->ev, base, -1, repeat ? EV_PERSIST : 0, timer_fire, t);
        if (ms < 0)
                ms = 0;
        struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
        event_add(t->ev, &tv);
}

void af_timer_stop(af_timer_t *t) {
        event_del(t->ev);
}

bool af_timer_pending(const af_timer_t *t) {
        return event_pending(t->ev, EV_TIMEOUT, NULL) != 0;
}

void af_timer_destroy(af_timer_t *t) {
        if (!t)
                return;
        event_free(t->ev);
        free(t);
}
