/*
 * redis: the one Redis connection of a process, async hiredis 0.14 on the process's libevent
 * loop. Workers take leases, count rate limits and keep back-off state through it; the
 * coordinator keeps its task index through it. Redis holds soft state only, so this module's
 * job is to fail fast and visibly (a retriable error to every caller) while Redis is away, and
 * to come back on its own when Redis does.
 *
 * What hiredis 0.14 lacks is added here (TRAPS.md):
 * - command timeouts: every command in flight has a record on a list ordered by deadline (one
 *   timeout for all, so issue order is deadline order) and ONE timer armed for the earliest;
 *   a timed-out record is flagged and stays with hiredis until its late reply or the
 *   disconnect, which is then dropped;
 * - reconnect: the connect/disconnect callbacks only record state and start a timer; the
 *   timer reconnects with capped jittered back-off (libcommon/backoff.h) and, once connected,
 *   pipelines AUTH (if a password is set), the scripts and a PING outside hiredis's
 *   callbacks. The connection counts as up only when the PING is answered: a TCP connect
 *   alone proves nothing (the kernel accepts for a frozen or still-loading server);
 * - a connection that answers nothing for a whole command timeout while commands wait is
 *   treated as dead (a half-open TCP connection never reports an error by itself);
 * - scripts run by SHA-1 (EVALSHA); a NOSCRIPT reply (Redis restarted or flushed its script
 *   cache) is retried once with EVAL, which also loads the script.
 *
 * The libevent adapter leak of older hiredis (#618) is not present in 0.14.1's adapter (its
 * cleanup frees both events); the restart test runs under LeakSanitizer to keep it so.
 *
 * Commands issued while the connection is not up fail with AF_ERR_UNAVAILABLE from a
 * zero-delay timer, never from inside the call. Everything runs on the loop thread; there are
 * no locks. Not to be destroyed from inside one of its own callbacks.
 */
#include "redis.h"

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/sds.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "buf.h"
#include "clock.h"
#include "log.h"

#define AF_REDIS_MAX_SCRIPTS  256  /* scripts are registered at start-up: a small fixed set */
#define AF_REDIS_CMD_POOL_MAX 4096 /* plain command records kept for reuse */

/* ---------------------------------------------------------------------------------------- */
/* Types                                                                                    */
/* ---------------------------------------------------------------------------------------- */

typedef enum {
        CONN_DOWN,       /* no context; conn_timer = reconnect back-off */
        CONN_CONNECTING, /* connect(2) in progress; conn_timer = connect deadline */
        CONN_CONNECTED,  /* TCP up; conn_timer = zero-delay kick to the handshake */
        CONN_HANDSHAKE,  /* [AUTH,] SCRIPT LOADs, INFO, PING sent: up on the PONG */
        CONN_UP,         /* user commands flow */
} conn_state_t;

typedef struct cmd_s {
        struct cmd_s *prev, *next; /* on r->live (in flight) or r->failq (to fail) */
        af_redis_t *r;
        af_redis_reply_cb_t *cb;
        void *opaque;
        int64_t deadline_ms; /* monotonic ms */
        af_err_t fail_err;   /* on failq: the error to deliver */
        int script;          /* script handle (for a NOSCRIPT retry), or -1 */
        bool answered;       /* callback already called (timed out): drop late reply */
        bool retried;        /* NOSCRIPT retry done */
        bool on_live;
        /* Script commands: the whole EVALSHA command in RESP, formatted here into this
         * record (hiredis's sdscatfmt per argument cost more than the rest of sending it)
         * and kept for the EVAL retry after a NOSCRIPT, which reuses what follows the sha. */
        char *resp;
        size_t resp_len;
        size_t resp_tail; /* offset of the numkeys argument */
        int argc;
} cmd_t;

typedef struct {
        cmd_t *head, *tail;
} cmd_list_t;

typedef struct {
        char *lua;
        size_t len;
        char sha[41];
} script_t;

struct af_redis_s {
        af_loop_t *loop;
        char *host;
        int port;
        char *password; /* never logged */
        int64_t timeout_ms;
        int64_t reconnect_min_ms;
        int64_t reconnect_max_ms;

        redisAsyncContext *rc; /* NULL while CONN_DOWN */
        conn_state_t state;
        bool up; /* as last reported to the state callback */
        bool destroying;
        uint32_t attempt;      /* failed connects since the last up, for back-off */
        bool down_logged;      /* one warning per outage, not one per attempt */
        int64_t last_reply_ms; /* monotonic ms of the last reply (stall detection) */

        af_timer_t *conn_timer;     /* reconnect / connect deadline / post-connect kick */
        af_timer_t *deadline_timer; /* earliest deadline on live */
        bool deadline_armed;
        af_timer_t *fail_timer; /* zero-delay: deliver failq */
        bool fail_armed;

        cmd_list_t live;  /* sent, no reply yet, not timed out; deadline order */
        cmd_list_t failq; /* to fail from fail_timer */
        cmd_t *pool;      /* free plain records (singly linked through next) */
        int pool_cnt;

        script_t *scripts;
        int script_cnt;

        af_redis_state_cb_t *state_cb;
        void *state_opaque;
};

static void on_reply(redisAsyncContext *rc, void *reply, void *privdata);
static void conn_start(af_redis_t *r);

/* ---------------------------------------------------------------------------------------- */
/* Lists and records                                                                        */
/* ---------------------------------------------------------------------------------------- */

static void list_append(cmd_list_t *l, cmd_t *cmd) {
        cmd->next = NULL;
        cmd->prev = l->tail;
        if (l->tail)
                l->tail->next = cmd;
        else
                l->head = cmd;
        l->tail = cmd;
}

static void list_remove(cmd_list_t *l, cmd_t *cmd) {
        if (cmd->prev)
                cmd->prev->next = cmd->next;
        else
                l->head = cmd->next;
        if (cmd->next)
                cmd->next->prev = cmd->prev;
        else
                l->tail = cmd->prev;
        cmd->prev = cmd->next = NULL;
}

/* @returns a zeroed plain record (no inline RESP), from the pool when possible; NULL on OOM. */
static cmd_t *cmd_new(af_redis_t *r, af_redis_reply_cb_t *cb, void *opaque) {
        cmd_t *cmd = r->pool;
        if (cmd) {
                r->pool = cmd->next;
                r->pool_cnt--;
                memset(cmd, 0, sizeof(*cmd));
        } else if (!(cmd = calloc(1, sizeof(*cmd)))) {
                return NULL;
        }
        cmd->r = r;
        cmd->cb = cb;
        cmd->opaque = opaque;
        cmd->script = -1;
        return cmd;
}

static void cmd_free(af_redis_t *r, cmd_t *cmd) {
        /* Records with inline RESP have their own size: only plain ones are pooled. */
        if (!cmd->resp && r->pool_cnt < AF_REDIS_CMD_POOL_MAX) {
                cmd->next = r->pool;
                r->pool = cmd;
                r->pool_cnt++;
                return;
        }
        free(cmd);
}

/* Call the user's callback once. reply is NULL unless err == AF_OK. */
static void cmd_deliver(af_redis_t *r, cmd_t *cmd, const redisReply *reply, af_err_t err,
                        const char *msg) {
        af_error_t e;
        e.err = err;
        e.retriable = af_err_is_retriable_default(err);
        e.http_status = 0;
        e.msg[0] = '\0';
        if (err != AF_OK)
                snprintf(e.msg, sizeof(e.msg), "redis %s:%d: %s", r->host, r->port, msg);
        cmd->answered = true;
        if (cmd->cb)
                cmd->cb(r, err == AF_OK ? reply : NULL, &e, cmd->opaque);
}

/* ---------------------------------------------------------------------------------------- */
/* Failing without a connection: always from a zero-delay timer, never re-entrantly         */
/* ---------------------------------------------------------------------------------------- */

static void cmd_fail_later(af_redis_t *r, cmd_t *cmd, af_err_t err) {
        cmd->fail_err = err;
        list_append(&r->failq, cmd);
        if (!r->fail_armed && !r->destroying) {
                r->fail_armed = true;
                af_timer_start(r->fail_timer, 0, false);
        }
}

static const char *fail_msg(af_err_t err) {
        switch (err) {
        case AF_ERR_UNAVAILABLE:
                return "not connected";
        case AF_ERR_CANCELLED:
                return "client destroyed";
        case AF_ERR_NOMEM:
                return "out of memory";
        default:
                return "invalid command";
        }
}

/* Deliver the failures queued so far; ones queued by these callbacks wait for the next tick,
 * so a caller retrying at once cannot spin this loop forever. */
static void fail_fire(void *opaque) {
        af_redis_t *r = opaque;
        cmd_list_t batch = r->failq;
        r->failq.head = r->failq.tail = NULL;
        r->fail_armed = false;
        cmd_t *cmd;
        while ((cmd = batch.head)) {
                list_remove(&batch, cmd);
                cmd_deliver(r, cmd, NULL, cmd->fail_err, fail_msg(cmd->fail_err));
                cmd_free(r, cmd);
        }
}

/* ---------------------------------------------------------------------------------------- */
/* Deadlines: one timer for the earliest command in flight                                  */
/* ---------------------------------------------------------------------------------------- */

static void live_add(af_redis_t *r, cmd_t *cmd) {
        cmd->deadline_ms = af_clock_mono_ms() + r->timeout_ms;
        cmd->on_live = true;
        list_append(&r->live, cmd);
        if (!r->deadline_armed) {
                r->deadline_armed = true;
                af_timer_start(r->deadline_timer, r->timeout_ms, false);
        }
}

static void live_del(af_redis_t *r, cmd_t *cmd) {
        if (cmd->on_live) {
                list_remove(&r->live, cmd);
                cmd->on_live = false;
        }
}

static void force_close(af_redis_t *r, const char *why);

/* Fail every command past its deadline, then re-arm for the new earliest one. A reply that
 * arrives later finds its record flagged and is dropped. */
static void deadline_fire(void *opaque) {
        af_redis_t *r = opaque;
        int64_t now = af_clock_mono_ms();
        int expired = 0;
        cmd_t *cmd;

        r->deadline_armed = false;
        while ((cmd = r->live.head) && cmd->deadline_ms <= now) {
                live_del(r, cmd);
                expired++;
                cmd_deliver(r, cmd, NULL, AF_ERR_TIMEOUT, "command timed out");
        }
        /* Nothing came back for a whole timeout while commands waited: the connection is
         * dead even if TCP has not noticed (peer frozen, network partition). */
        if (expired && r->state == CONN_UP && now - r->last_reply_ms >= r->timeout_ms)
                force_close(r, "no reply within the command timeout");

        /* Always for the head: a callback above may have armed it for its own, later,
         * command (live_add), which must not delay an earlier deadline. */
        if ((cmd = r->live.head)) {
                r->deadline_armed = true;
                af_timer_start(r->deadline_timer, cmd->deadline_ms - now, false);
        }
}

/* ---------------------------------------------------------------------------------------- */
/* Sending                                                                                  */
/* ---------------------------------------------------------------------------------------- */

/* Why hiredis refused a command: the context is going away (retriable), or the command
 * itself could not be formatted (a bad printf format: retrying cannot help). */
static af_err_t refused_err(const af_redis_t *r) {
        if (!r->rc || (r->rc->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)))
                return AF_ERR_UNAVAILABLE;
        return AF_ERR_INVALID;
}

/* hiredis appends each command to its output buffer, which is empty again after every write
 * and grows by doubling: a burst of script commands (a poll's worth of lease finishes, each
 * with its TaskResult) went through a dozen reallocations, each large one making malloc
 * consolidate its fast bins. The first command of a burst makes room for a burst at once. */
#define AF_REDIS_OBUF_RESERVE (16 * 1024)

static void obuf_reserve(af_redis_t *r, size_t len) {
        sds obuf = r->rc->c.obuf;
        if (obuf && sdsavail(obuf) < len) {
                sds grown = sdsMakeRoomFor(
                        obuf, len > AF_REDIS_OBUF_RESERVE ? len : AF_REDIS_OBUF_RESERVE);
                if (grown) /* else hiredis's own append reports the failure */
                        r->rc->c.obuf = grown;
        }
}

/* Send argv (or cmd's own RESP, when it has it) on the current context (any state with a
 * context). @returns false if hiredis refused (context disconnecting); the record is then
 * still the caller's. */
static bool send_argv(af_redis_t *r, cmd_t *cmd, int argc, const char **argv,
                      const size_t *argvlen) {
        int rv;

        if (!r->rc)
                return false;
        if (cmd->resp) {
                obuf_reserve(r, cmd->resp_len);
                rv = redisAsyncFormattedCommand(r->rc, on_reply, cmd, cmd->resp, cmd->resp_len);
        } else {
                rv = redisAsyncCommandArgv(r->rc, on_reply, cmd, argc, argv, argvlen);
        }
        if (rv != REDIS_OK)
                return false;
        live_add(r, cmd);
        return true;
}

/* Send a user command if up, else fail it from the timer. Takes cmd. */
static void send_user(af_redis_t *r, cmd_t *cmd, int argc, const char **argv,
                      const size_t *argvlen) {
        if (r->destroying)
                cmd_fail_later(r, cmd, AF_ERR_CANCELLED);
        else if (r->state != CONN_UP)
                cmd_fail_later(r, cmd, AF_ERR_UNAVAILABLE);
        else if (!send_argv(r, cmd, argc, argv, argvlen))
                cmd_fail_later(r, cmd, refused_err(r));
}

/* Last resort when not even a record can be allocated: there is nothing to queue the
 * failure on, so the callback runs now, inside the call. The one exception to "never
 * re-entrantly", and only when the process is out of memory anyway. */
static void fail_nomem(af_redis_t *r, af_redis_reply_cb_t *cb, void *opaque) {
        af_error_t e;
        af_error_set(&e, AF_ERR_NOMEM, "redis: out of memory");
        af_error("redis: out of memory allocating a command record");
        if (cb)
                cb(r, NULL, &e, opaque);
}

/* ---------------------------------------------------------------------------------------- */
/* Replies                                                                                  */
/* ---------------------------------------------------------------------------------------- */

bool af_redis_error_is_transient(const char *msg, size_t len) {
        static const char *const transient[] = {"LOADING",    "BUSY",        "TRYAGAIN",
                                                "MASTERDOWN", "CLUSTERDOWN", "READONLY"};
        if (!msg)
                return false;
        for (size_t i = 0; i < sizeof(transient) / sizeof(transient[0]); i++) {
                size_t n = strlen(transient[i]);
                /* The code is the first word: "BUSY Redis is busy", not "BUSYKEY ..." */
                if (len >= n && memcmp(msg, transient[i], n) == 0 && (len == n || msg[n] == ' '))
                        return true;
        }
        return false;
}

static void mark_down(af_redis_t *r) {
        if (!r->up)
                return;
        r->up = false;
        if (r->state_cb && !r->destroying)
                r->state_cb(r, false, r->state_opaque);
}

/* ---- RESP, written by hand for script commands ------------------------------------------ */

static size_t resp_digits(size_t n) {
        size_t d = 1;
        while (n >= 10) {
                n /= 10;
                d++;
        }
        return d;
}

static char *resp_uint(char *p, size_t n) {
        char tmp[AF_I64_STR_SIZE];
        size_t len = af_i64_to_str(tmp, (int64_t) n); /* lengths and counts: far below 2^63 */
        memcpy(p, tmp, len);
        return p + len;
}

/* Bytes of "$<len>\r\n<bytes>\r\n". */
static size_t resp_bulk_size(size_t len) {
        return 1 + resp_digits(len) + 2 + len + 2;
}

static char *resp_bulk(char *p, const char *s, size_t len) {
        *p++ = '$';
        p = resp_uint(p, len);
        *p++ = '\r';
        *p++ = '\n';
        memcpy(p, s, len);
        p += len;
        *p++ = '\r';
        *p++ = '\n';
        return p;
}

/* Retry a script once with EVAL after NOSCRIPT. @returns true if it was resent. */
static bool script_retry(af_redis_t *r, cmd_t *cmd) {
        const script_t *s = &r->scripts[cmd->script];
        size_t tail = cmd->resp_len - cmd->resp_tail;
        size_t len = 1 + resp_digits((size_t) cmd->argc) + 2 + resp_bulk_size(4) +
                     resp_bulk_size(s->len) + tail;
        char *eval = malloc(len), *p = eval;
        int rv;

        cmd->retried = true;
        live_del(r, cmd);
        if (!eval || !r->rc) {
                free(eval);
                return false;
        }
        /* EVAL <lua> and the same numkeys, keys and args as the EVALSHA. */
        *p++ = '*';
        p = resp_uint(p, (size_t) cmd->argc);
        *p++ = '\r';
        *p++ = '\n';
        p = resp_bulk(p, "EVAL", 4);
        p = resp_bulk(p, s->lua, s->len);
        memcpy(p, cmd->resp + cmd->resp_tail, tail);
        rv = redisAsyncFormattedCommand(r->rc, on_reply, cmd, eval, len);
        free(eval); /* hiredis copied it into its output buffer */
        if (rv != REDIS_OK)
                return false;
        /* Keep the original deadline: the caller's budget does not restart. Its reply was
         * the oldest outstanding (replies are FIFO), so its place is near the head. */
        cmd_t *before = r->live.head;
        while (before && before->deadline_ms <= cmd->deadline_ms)
                before = before->next;
        cmd->on_live = true;
        cmd->next = before;
        cmd->prev = before ? before->prev : r->live.tail;
        if (cmd->prev)
                cmd->prev->next = cmd;
        else
                r->live.head = cmd;
        if (before)
                before->prev = cmd;
        else
                r->live.tail = cmd;
        if (!r->deadline_armed) {
                r->deadline_armed = true;
                int64_t d = cmd->deadline_ms - af_clock_mono_ms();
                af_timer_start(r->deadline_timer, d, false);
        }
        return true;
}

/* hiredis reply callback: a reply, or NULL when the context is going away (disconnect, free).
 * Called from the loop (inside hiredis); the user callback runs from here. */
static void on_reply(redisAsyncContext *rc, void *reply, void *privdata) {
        cmd_t *cmd = privdata;
        af_redis_t *r = cmd->r;
        redisReply *rep = reply;

        if (!rep) {
                /* The context is being freed: stop new commands reaching it first, so that a
                 * callback that retries at once goes to the fail queue. */
                if (r->rc == rc)
                        mark_down(r);
                live_del(r, cmd);
                if (!cmd->answered)
                        cmd_deliver(r, cmd, NULL,
                                    r->destroying ? AF_ERR_CANCELLED : AF_ERR_UNAVAILABLE,
                                    r->destroying ? "client destroyed" : "connection lost");
                cmd_free(r, cmd);
                return;
        }

        r->last_reply_ms = af_clock_mono_ms();
        if (cmd->answered) { /* late reply to a timed-out command */
                cmd_free(r, cmd);
                return;
        }
        if (rep->type == REDIS_REPLY_ERROR && cmd->script >= 0 && !cmd->retried && rep->len >= 8 &&
            memcmp(rep->str, "NOSCRIPT", 8) == 0) {
                if (script_retry(r, cmd))
                        return;
                cmd_deliver(r, cmd, NULL, AF_ERR_UNAVAILABLE, "connection lost");
                cmd_free(r, cmd);
                return;
        }
        live_del(r, cmd);
        if (rep->type == REDIS_REPLY_ERROR) {
                af_error_t e;
                af_error_set_retriable(&e, AF_ERR_UPSTREAM,
                                       af_redis_error_is_transient(rep->str, rep->len),
                                       "redis: %.*s", (int) rep->len, rep->str);
                cmd->answered = true;
                if (cmd->cb)
                        cmd->cb(r, NULL, &e, cmd->opaque);
        } else {
                cmd_deliver(r, cmd, rep, AF_OK, NULL);
        }
        cmd_free(r, cmd);
}

/* ---------------------------------------------------------------------------------------- */
/* Connection life-cycle                                                                    */
/* ---------------------------------------------------------------------------------------- */

/* The context is gone or going (hiredis frees it right after the callback that told us):
 * forget it and schedule the next attempt. */
static void conn_gone(af_redis_t *r) {
        r->rc = NULL;
        r->state = CONN_DOWN;
        mark_down(r);
        if (r->destroying)
                return;
        if (r->attempt < UINT32_MAX)
                r->attempt++;
        int64_t delay = af_backoff_delay_ms(r->attempt, r->reconnect_min_ms, r->reconnect_max_ms);
        af_debug("redis %s:%d: reconnecting in %lld ms (attempt %u)", r->host, r->port,
                 (long long) delay, r->attempt);
        af_timer_start(r->conn_timer, delay, false);
}

/* Drop the connection from a loop callback. Pending commands fail with AF_ERR_UNAVAILABLE. */
static void force_close(af_redis_t *r, const char *why) {
        redisAsyncContext *rc = r->rc;
        if (!rc)
                return;
        if (!r->down_logged)
                af_warn("redis %s:%d: closing the connection: %s", r->host, r->port, why);
        else
                af_debug("redis %s:%d: closing the connection: %s", r->host, r->port, why);
        r->down_logged = true;
        mark_down(r);
        redisAsyncFree(rc);
        /* Not yet connected: hiredis calls no disconnect callback. Inside a hiredis callback:
         * the free is deferred, and its disconnect callback will find rc no longer ours. */
        if (r->rc == rc)
                conn_gone(r);
}

/* One warning per outage; the attempts after it only at debug level. */
static void log_connect_failed(af_redis_t *r, const char *why) {
        if (!r->down_logged)
                af_warn("redis %s:%d: connect failed: %s", r->host, r->port, why);
        else
                af_debug("redis %s:%d: connect failed: %s", r->host, r->port, why);
        r->down_logged = true;
}

static void on_connect(const redisAsyncContext *rc, int status) {
        af_redis_t *r = rc->data;
        if (r->rc != rc)
                return;
        if (status != REDIS_OK) {
                log_connect_failed(r, rc->errstr);
                conn_gone(r); /* hiredis frees rc when this returns */
                return;
        }
        /* Never send from here (hiredis < 1.1): finish the set-up from the loop. */
        r->state = CONN_CONNECTED;
        af_timer_start(r->conn_timer, 0, false);
}

static void on_disconnect(const redisAsyncContext *rc, int status) {
        af_redis_t *r = rc->data;
        if (r->rc != rc)
                return;
        if (!r->destroying && !r->down_logged) {
                if (status != REDIS_OK)
                        af_warn("redis %s:%d: connection lost: %s; reconnecting", r->host, r->port,
                                rc->errstr);
                else
                        af_warn("redis %s:%d: connection closed; reconnecting", r->host, r->port);
                r->down_logged = true;
        }
        conn_gone(r);
}

static void become_up(af_redis_t *r) {
        r->state = CONN_UP;
        r->attempt = 0;
        r->last_reply_ms = af_clock_mono_ms();
        if (r->down_logged)
                af_info("redis %s:%d: connected again", r->host, r->port);
        else
                af_info("redis %s:%d: connected", r->host, r->port);
        r->down_logged = false;
        r->up = true;
        if (r->state_cb)
                r->state_cb(r, true, r->state_opaque);
}

static void auth_done(af_redis_t *r, const redisReply *reply, const af_error_t *err, void *opaque) {
        /* Only the reason is logged here; the PING behind it fails and closes. err->msg
         * holds Redis's reply text, never the password we sent. */
        if (err->err == AF_ERR_UPSTREAM)
                af_error("redis %s:%d: AUTH failed: %s", r->host, r->port, err->msg);
}

static void ping_done(af_redis_t *r, const redisReply *reply, const af_error_t *err, void *opaque) {
        if (r->state != CONN_HANDSHAKE)
                return;
        if (err->err == AF_OK) {
                become_up(r);
                return;
        }
        if (err->err == AF_ERR_UNAVAILABLE || err->err == AF_ERR_CANCELLED)
                return; /* the connection is already going; conn_gone() follows */
        force_close(r, err->err == AF_ERR_TIMEOUT ? "no answer to the handshake PING"
                                                  : "handshake refused");
}

#if HIREDIS_MAJOR >= 1
void af_redis_reader_cap(redisReader *reader) {
        if (reader)
                reader->maxelements = AF_REDIS_MAX_ELEMENTS;
}
#else
/* hiredis 0.14 has no limit of its own: its reply functions, with createArray wrapped. */
static redisReplyObjectFunctions capped_fns;
static void *(*hiredis_create_array)(const redisReadTask *, int);

static void *capped_create_array(const redisReadTask *task, int elements) {
        if (elements > AF_REDIS_MAX_ELEMENTS) {
                af_warn("redis: a reply announces an array of %d elements, more than the %d "
                        "accepted: dropping the connection",
                        elements, AF_REDIS_MAX_ELEMENTS);
                return NULL; /* the reader fails: "out of memory" */
        }
        return hiredis_create_array(task, elements);
}

void af_redis_reader_cap(redisReader *reader) {
        if (!reader || !reader->fn || reader->fn->createArray == capped_create_array)
                return;
        if (!hiredis_create_array) { /* hiredis's own table, copied once */
                capped_fns = *reader->fn;
                hiredis_create_array = capped_fns.createArray;
                capped_fns.createArray = capped_create_array;
        }
        reader->fn = &capped_fns;
}
#endif

long af_redis_info_version(const char *info, size_t len) {
        static const char key[] = "redis_version:";
        const char *end = info + len, *p = info;
        long part[3] = {0, 0, 0};

        /* the key at the start of a line */
        while (p && (size_t) (end - p) >= sizeof(key) - 1 && memcmp(p, key, sizeof(key) - 1)) {
                p = memchr(p, '\n', (size_t) (end - p));
                p = p ? p + 1 : NULL;
        }
        if (!p || (size_t) (end - p) < sizeof(key) - 1)
                return -1;
        p += sizeof(key) - 1;
        for (int i = 0; i < 3; i++) {
                int digits = 0;
                for (; p < end && *p >= '0' && *p <= '9' && digits < 6; p++, digits++)
                        part[i] = part[i] * 10 + (*p - '0');
                if (!digits || (i < 2 && (p == end || *p++ != '.')))
                        return -1;
        }
        if (part[1] > 99 || part[2] > 99)
                return -1;
        return part[0] * 10000 + part[1] * 100 + part[2];
}

/* INFO server, pipelined before the PING: a server known to be too old is left at once. */
static void info_done(af_redis_t *r, const redisReply *reply, const af_error_t *err, void *opaque) {
        char why[160];
        long v;

        if (r->state != CONN_HANDSHAKE || err->err != AF_OK || !reply->str)
                return; /* refused (a proxy without INFO) or gone: the PING decides */
        if ((v = af_redis_info_version(reply->str, reply->len)) < 0 || v >= AF_REDIS_MIN_VERSION)
                return;
        snprintf(why, sizeof(why),
                 "it is Redis %ld.%ld.%ld; agentfleet needs " AF_REDIS_MIN_VERSION_TEXT
                 " or later (the lease script uses SET ... GET)",
                 v / 10000, v / 100 % 100, v % 100);
        force_close(r, why);
}

static void preload_done(af_redis_t *r, const redisReply *reply, const af_error_t *err,
                         void *opaque) {
        /* Not fatal: a script not loaded here is loaded by the EVAL after its NOSCRIPT. */
        if (err->err != AF_OK && err->err != AF_ERR_UNAVAILABLE && err->err != AF_ERR_CANCELLED)
                af_debug("redis: SCRIPT LOAD: %s", err->msg);
}

/* Internal command on the current context regardless of state. */
static bool send_internal(af_redis_t *r, af_redis_reply_cb_t *cb, int argc, const char **argv,
                          const size_t *argvlen) {
        cmd_t *cmd = cmd_new(r, cb, NULL);
        if (!cmd)
                return false;
        if (!send_argv(r, cmd, argc, argv, argvlen)) {
                cmd_free(r, cmd);
                return false;
        }
        return true;
}

/* TCP is up: AUTH first, then the scripts, INFO server (the version), then a PING, all
 * pipelined in one round trip. User commands wait for the PONG, so they never meet a NOAUTH,
 * a frozen server or one too old for the scripts. */
static void conn_setup(af_redis_t *r) {
        r->state = CONN_HANDSHAKE;
        if (r->password) {
                const char *argv[2] = {"AUTH", r->password};
                send_internal(r, auth_done, 2, argv, NULL);
        }
        for (int i = 0; i < r->script_cnt; i++) {
                const char *argv[3] = {"SCRIPT", "LOAD", r->scripts[i].lua};
                size_t argvlen[3] = {6, 4, r->scripts[i].len};
                send_internal(r, preload_done, 3, argv, argvlen);
        }
        const char *info[2] = {"INFO", "server"};
        send_internal(r, info_done, 2, info, NULL);
        const char *argv[1] = {"PING"};
        if (!send_internal(r, ping_done, 1, argv, NULL))
                force_close(r, "cannot send the handshake");
}

static void conn_timer_fire(void *opaque) {
        af_redis_t *r = opaque;
        switch (r->state) {
        case CONN_DOWN:
                conn_start(r);
                break;
        case CONN_CONNECTING:
                force_close(r, "connect timed out");
                break;
        case CONN_CONNECTED:
                conn_setup(r);
                break;
        case CONN_HANDSHAKE: /* the PING has its own command deadline */
        case CONN_UP:
                break;
        }
}

static void conn_start(af_redis_t *r) {
        redisAsyncContext *rc = redisAsyncConnect(r->host, r->port);
        if (!rc || rc->err) {
                log_connect_failed(r, rc ? rc->errstr : "out of memory");
                if (rc)
                        redisAsyncFree(rc);
                conn_gone(r);
                return;
        }
        rc->data = r;
        af_redis_reader_cap(rc->c.reader);
        if (redisLibeventAttach(rc, af_loop_base(r->loop)) != REDIS_OK) {
                af_error("redis %s:%d: cannot attach to the event loop", r->host, r->port);
                redisAsyncFree(rc);
                conn_gone(r);
                return;
        }
        redisAsyncSetConnectCallback(rc, on_connect);
        redisAsyncSetDisconnectCallback(rc, on_disconnect);
        r->rc = rc;
        r->state = CONN_CONNECTING;
        af_timer_start(r->conn_timer, r->timeout_ms, false);
}

/* ---------------------------------------------------------------------------------------- */
/* Public API                                                                               */
/* ---------------------------------------------------------------------------------------- */

af_redis_t *af_redis_new(af_loop_t *loop, const af_redis_opts_t *opts, char *errstr,
                         size_t errstr_size) {
        af_redis_t *r = NULL;

        if (!loop || !opts || !opts->host || !*opts->host) {
                af_errstr(AF_ERR_CONFIG, errstr, errstr_size, "redis: host is required");
                goto fail;
        }
        if (opts->port < 1 || opts->port > 65535) {
                af_errstr(AF_ERR_CONFIG, errstr, errstr_size, "redis: port %d is not in [1, 65535]",
                          opts->port);
                goto fail;
        }
        if (!(r = calloc(1, sizeof(*r))))
                goto nomem;
        r->loop = loop;
        r->port = opts->port;
        r->timeout_ms = opts->command_timeout_ms > 0 ? opts->command_timeout_ms : 2000;
        r->reconnect_min_ms = opts->reconnect_min_ms > 0 ? opts->reconnect_min_ms : 100;
        r->reconnect_max_ms = opts->reconnect_max_ms >= r->reconnect_min_ms ? opts->reconnect_max_ms
                                                                            : r->reconnect_min_ms;
        if (!(r->host = strdup(opts->host)))
                goto nomem;
        if (opts->password && *opts->password && !(r->password = strdup(opts->password)))
                goto nomem;
        r->conn_timer = af_timer_new(loop, conn_timer_fire, r);
        r->deadline_timer = af_timer_new(loop, deadline_fire, r);
        r->fail_timer = af_timer_new(loop, fail_fire, r);
        if (!r->conn_timer || !r->deadline_timer || !r->fail_timer)
                goto nomem;
        r->state = CONN_DOWN;
        conn_start(r);
        return r;

nomem:
        af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "redis: out of memory");
fail:
        af_redis_destroy(r);
        return NULL;
}

void af_redis_destroy(af_redis_t *r) {
        if (!r)
                return;
        r->destroying = true;
        if (r->rc) {
                redisAsyncContext *rc = r->rc;
                redisAsyncFree(rc); /* pending callbacks get AF_ERR_CANCELLED */
                r->rc = NULL;
        }
        /* Callbacks may have queued more; each pass may queue again, until nobody does. */
        while (r->failq.head) {
                cmd_list_t batch = r->failq;
                r->failq.head = r->failq.tail = NULL;
                cmd_t *cmd;
                while ((cmd = batch.head)) {
                        list_remove(&batch, cmd);
                        cmd_deliver(r, cmd, NULL, AF_ERR_CANCELLED, "client destroyed");
                        free(cmd);
                }
        }
        while (r->pool) {
                cmd_t *cmd = r->pool;
                r->pool = cmd->next;
                free(cmd);
        }
        af_timer_destroy(r->conn_timer);
        af_timer_destroy(r->deadline_timer);
        af_timer_destroy(r->fail_timer);
        for (int i = 0; i < r->script_cnt; i++)
                free(r->scripts[i].lua);
        free(r->scripts);
        if (r->password) {
                /* Do not leave the secret in freed heap memory. */
                volatile char *p = r->password;
                while (*p)
                        *p++ = '\0';
                free(r->password);
        }
        free(r->host);
        free(r);
}

bool af_redis_is_up(const af_redis_t *r) {
        return r && r->up;
}

void af_redis_set_state_cb(af_redis_t *r, af_redis_state_cb_t *cb, void *opaque) {
        r->state_cb = cb;
        r->state_opaque = opaque;
}

void af_redis_command(af_redis_t *r, af_redis_reply_cb_t *cb, void *opaque, const char *fmt, ...) {
        cmd_t *cmd = cmd_new(r, cb, opaque);
        if (!cmd) {
                fail_nomem(r, cb, opaque);
                return;
        }
        if (r->destroying) {
                cmd_fail_later(r, cmd, AF_ERR_CANCELLED);
                return;
        }
        if (r->state != CONN_UP) {
                cmd_fail_later(r, cmd, AF_ERR_UNAVAILABLE);
                return;
        }
        va_list ap;
        va_start(ap, fmt);
        int rv = redisvAsyncCommand(r->rc, on_reply, cmd, fmt, ap);
        va_end(ap);
        if (rv != REDIS_OK)
                cmd_fail_later(r, cmd, refused_err(r));
        else
                live_add(r, cmd);
}

void af_redis_commandv(af_redis_t *r, af_redis_reply_cb_t *cb, void *opaque, int argc,
                       const char **argv, const size_t *argvlen) {
        cmd_t *cmd = cmd_new(r, cb, opaque);
        if (!cmd) {
                fail_nomem(r, cb, opaque);
                return;
        }
        if (argc < 1 || !argv) {
                cmd_fail_later(r, cmd, AF_ERR_INVALID);
                return;
        }
        send_user(r, cmd, argc, argv, argvlen);
}

void af_redis_script_sha1(const char *lua, size_t len, char out[41]) {
        static const char hex[] = "0123456789abcdef";
        unsigned char md[SHA_DIGEST_LENGTH];
        SHA1((const unsigned char *) lua, len, md);
        for (int i = 0; i < SHA_DIGEST_LENGTH; i++) {
                out[2 * i] = hex[md[i] >> 4];
                out[2 * i + 1] = hex[md[i] & 0xf];
        }
        out[40] = '\0';
}

/* Adding a script already registered returns its handle, so a module can register lazily
 * on first use per client (lease.c does) instead of needing a start-up hook. */
int af_redis_script_add(af_redis_t *r, const char *lua) {
        if (!lua)
                return -1;
        size_t len = strlen(lua);
        for (int i = 0; i < r->script_cnt; i++)
                if (r->scripts[i].len == len && memcmp(r->scripts[i].lua, lua, len) == 0)
                        return i;
        if (r->script_cnt == AF_REDIS_MAX_SCRIPTS)
                return -1;
        script_t *s = realloc(r->scripts, (size_t) (r->script_cnt + 1) * sizeof(*s));
        if (!s)
                return -1;
        r->scripts = s;
        s = &r->scripts[r->script_cnt];
        s->len = len;
        if (!(s->lua = strdup(lua)))
                return -1;
        af_redis_script_sha1(s->lua, s->len, s->sha);
        return r->script_cnt++;
}

void af_redis_script_runv(af_redis_t *r, int script, af_redis_reply_cb_t *cb, void *opaque,
                          int nkeys, const char **keys, const size_t *keylens, int nargs,
                          const char **args, const size_t *arglens) {
        cmd_t *cmd = NULL;

        if (script < 0 || script >= r->script_cnt || nkeys < 0 || nargs < 0 || (nkeys && !keys) ||
            (nargs && !args)) {
                if ((cmd = cmd_new(r, cb, opaque)))
                        cmd_fail_later(r, cmd, AF_ERR_INVALID);
                else
                        fail_nomem(r, cb, opaque);
                return;
        }
        if (r->destroying || r->state != CONN_UP) {
                /* No point copying arguments that will never be sent. */
                if ((cmd = cmd_new(r, cb, opaque)))
                        cmd_fail_later(r, cmd,
                                       r->destroying ? AF_ERR_CANCELLED : AF_ERR_UNAVAILABLE);
                else
                        fail_nomem(r, cb, opaque);
                return;
        }

        /* One allocation: the record, then the EVALSHA command in RESP, which copies every
         * key and argument (the caller's buffers may go away once this returns). */
        int argc = 3 + nkeys + nargs;
        char nk[24];
        size_t nk_len = (size_t) (resp_uint(nk, (size_t) nkeys) - nk);
        size_t size = 1 + resp_digits((size_t) argc) + 2 + resp_bulk_size(7) + resp_bulk_size(40) +
                      resp_bulk_size(nk_len);
        for (int i = 0; i < nkeys; i++)
                size += resp_bulk_size(keylens ? keylens[i] : strlen(keys[i]));
        for (int i = 0; i < nargs; i++)
                size += resp_bulk_size(arglens ? arglens[i] : strlen(args[i]));
        if (!(cmd = malloc(sizeof(cmd_t) + size))) {
                fail_nomem(r, cb, opaque);
                return;
        }
        memset(cmd, 0, sizeof(*cmd));
        cmd->r = r;
        cmd->cb = cb;
        cmd->opaque = opaque;
        cmd->script = script;
        cmd->argc = argc;
        cmd->resp = (char *) (cmd + 1);
        char *p = cmd->resp;
        *p++ = '*';
        p = resp_uint(p, (size_t) argc);
        *p++ = '\r';
        *p++ = '\n';
        p = resp_bulk(p, "EVALSHA", 7);
        p = resp_bulk(p, r->scripts[script].sha, 40);
        cmd->resp_tail = (size_t) (p - cmd->resp);
        p = resp_bulk(p, nk, nk_len);
        for (int i = 0; i < nkeys; i++)
                p = resp_bulk(p, keys[i], keylens ? keylens[i] : strlen(keys[i]));
        for (int i = 0; i < nargs; i++)
                p = resp_bulk(p, args[i], arglens ? arglens[i] : strlen(args[i]));
        cmd->resp_len = (size_t) (p - cmd->resp);
        send_user(r, cmd, 0, NULL, NULL);
}

void af_redis_script_run(af_redis_t *r, int script, af_redis_reply_cb_t *cb, void *opaque,
                         int nkeys, const char **keys, int nargs, const char **args) {
        af_redis_script_runv(r, script, cb, opaque, nkeys, keys, NULL, nargs, args, NULL);
}
