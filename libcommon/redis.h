/*
 * redis: async hiredis on the loop, with what hiredis 0.14 lacks (TRAPS.md): per-command
 * timeouts (own timers), reconnect with capped jittered back-off (from a timer, never from a
 * connect/disconnect callback), and Lua scripts loaded once and run by SHA (EVALSHA, with a
 * transparent EVAL/SCRIPT LOAD on NOSCRIPT after a Redis restart).
 *
 * Every command's callback is called exactly once, always from the loop and never from
 * inside the call that issued it: with the reply, or with an error (AF_ERR_TIMEOUT,
 * AF_ERR_UNAVAILABLE while disconnected or when the connection drops with the command
 * pending, both retriable; AF_ERR_UPSTREAM for a Redis error reply, not retriable;
 * AF_ERR_CANCELLED on destroy). No command is ever dropped silently.
 */
#ifndef AF_REDIS_H
#define AF_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "err.h"
#include "loop.h"

typedef struct af_redis_s af_redis_t;

/* reply is valid only during the call (NULL when err->err != AF_OK). */
typedef void(af_redis_reply_cb_t)(af_redis_t *r, const redisReply *reply, const af_error_t *err,
                                  void *opaque);
/* Connection went up (true) or down (false). */
typedef void(af_redis_state_cb_t)(af_redis_t *r, bool up, void *opaque);

typedef struct af_redis_opts_s {
        const char *host;
        int port;
        const char *password; /* NULL = no AUTH; never logged */
        int64_t command_timeout_ms;
        int64_t reconnect_min_ms; /* back-off floor */
        int64_t reconnect_max_ms; /* back-off cap */
} af_redis_opts_t;

/* Starts connecting at once; commands issued before it is up fail with AF_ERR_UNAVAILABLE. */
af_redis_t *af_redis_new(af_loop_t *loop, const af_redis_opts_t *opts, char *errstr,
                         size_t errstr_size);
/* Pending callbacks get AF_ERR_CANCELLED. NULL is fine. Loop thread. */
void af_redis_destroy(af_redis_t *r);
bool af_redis_is_up(const af_redis_t *r);
void af_redis_set_state_cb(af_redis_t *r, af_redis_state_cb_t *cb, void *opaque);

/* printf-style command, as redisAsyncCommand (%s, %b). */
void af_redis_command(af_redis_t *r, af_redis_reply_cb_t *cb, void *opaque, const char *fmt, ...);
/* argv-style command (binary-safe); argvlen may be NULL for C strings. */
void af_redis_commandv(af_redis_t *r, af_redis_reply_cb_t *cb, void *opaque, int argc,
                       const char **argv, const size_t *argvlen);

/* Register a Lua script (copied); @returns its handle (>= 0). Call at start-up. */
int af_redis_script_add(af_redis_t *r, const char *lua);
/* Run a registered script: EVALSHA sha nkeys keys... args... */
void af_redis_script_run(af_redis_t *r, int script, af_redis_reply_cb_t *cb, void *opaque,
                         int nkeys, const char **keys, int nargs, const char **args);

/* ==== Appended by the redis module (binary-safe scripts; helpers exposed for unit tests).
 * Implemented in redis.c. Nothing above this banner was changed. ========================== */

/* Like af_redis_script_run, with explicit lengths so keys and args may hold any bytes
 * (a serialized TaskResult as a script argument). keylens/arglens may be NULL for C strings.
 * The keys and args are copied: the caller's buffers may go away once this returns. */
void af_redis_script_runv(af_redis_t *r, int script, af_redis_reply_cb_t *cb, void *opaque,
                          int nkeys, const char **keys, const size_t *keylens, int nargs,
                          const char **args, const size_t *arglens);

/* Note: af_redis_script_add() of a script already registered on this client returns the
 * existing handle (so modules may register lazily, on first use). */

/* The SHA-1 of a script as Redis names it for EVALSHA: 40 lower-case hex chars and a NUL. */
void af_redis_script_sha1(const char *lua, size_t len, char out[41]);

/* @returns whether a Redis error reply (its text, e.g. "LOADING Redis is loading...") is
 * transient: LOADING, BUSY, TRYAGAIN, MASTERDOWN, CLUSTERDOWN, READONLY. The error code is
 * AF_ERR_UPSTREAM either way; this only sets its retriable flag. */
bool af_redis_error_is_transient(const char *msg, size_t len);

/* The oldest Redis the programs run on, as af_redis_info_version() counts: 6.2, for the
 * lease script's SET ... GET. Each connection's handshake asks INFO server; a server known
 * to be older is disconnected with a warning that says so (and retried with back-off, as a
 * failover may bring another); one that does not tell its version is trusted. */
#define AF_REDIS_MIN_VERSION      60200L
#define AF_REDIS_MIN_VERSION_TEXT "6.2"

/* The most elements one array of a reply may announce. hiredis 0.14 allocates an array at
 * the length its header announces, before any element arrives: a bare "*999999999" from a
 * broken or hostile server would ask for 8 GB. A longer one fails the reader ("out of
 * memory") and the connection is dropped and retried. The programs read at most a few
 * hundred elements (SCAN COUNT 500, listings of up to 500). */
#define AF_REDIS_MAX_ELEMENTS (1 << 20)

/* Make reader refuse arrays longer than AF_REDIS_MAX_ELEMENTS (done for every connection;
 * exposed for tests). */
void af_redis_reader_cap(redisReader *reader);

/* From INFO's text, the redis_version line's major * 10000 + minor * 100 + patch (minor and
 * patch must be below 100). @returns -1 when there is no such line or it does not read as
 * N.N.N. */
long af_redis_info_version(const char *info, size_t len);

#endif
