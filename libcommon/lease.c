/*
 * lease: per-task leases as Lua scripts on Redis (see lease.h for the key layout).
 *
 * Why scripts: each step (check done/cancel/held, INCR the fence, SET the lease) must be one
 * atomic decision, or two workers could both see "free" and both run the task. Every script
 * touches only af:{<task_id>}:* keys, one hash slot, so it runs unchanged on Redis Cluster.
 *
 * The token is generated here from the OS CSPRNG (128 bits) rather than in Lua, because
 * Redis's Lua math.random is deterministic per script run and must not make ownership proofs.
 * The lease value is "<token>:<fence>:<owner>"; a holder proves ownership by the prefix
 * "<token>:", so owners may contain any byte.
 *
 * Replies are parsed strictly: a reply of an unexpected shape (another script loaded under
 * the same SHA, a proxy in the way) is an error for the caller, never a guess.
 */
#include "lease.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "crypto.h"
#include "ids.h"

/* clang-format off */
/*
 * The scripts are written for Redis's cost, not only for brevity: inside Redis an EVALSHA
 * costs far more than a plain command, and most of it grows with what Lua allocates (the
 * KEYS and ARGV tables, a table per reply converted back to RESP, the garbage collector
 * that follows). So each script takes the path a task usually takes with as few
 * redis.call's as possible, calls that answer integers (no Lua table), and answers the
 * usual outcome as a bare integer; the rare outcomes keep a {'WORD', ...} array. The holder
 * passes its token as "<token>:" (the prefix of its lease value), which the scripts compare
 * with a plain find (no substring, no concatenation). Measured with callgrind on Redis
 * 7.0, acquire + finish of one task: 121k instructions before, 102k after.
 *
 * Why not MULTI/EXEC of plain commands: acquire must write nothing unless done, cancel and
 * lease are all absent, and finish/renew/release must write only if the lease value starts
 * with our token. A transaction cannot branch on what it reads, and WATCH needs the read
 * answered before MULTI is sent, on a connection that every task of the process shares
 * (another task's MULTI could start in between). A script is the one atomic decision.
 */

/* KEYS: lease fence done cancel. ARGV: "<token>:" owner ttl_ms.
 * → fence (integer > 0, ACQUIRED) | {'DONE', result} | {'CANCELLED'} | {'HELD'}.
 * One EXISTS over done, cancel and lease answers the usual case (all absent: take it); only
 * when one exists are they told apart, in the same precedence (done, cancel, held).
 *
 * The fence is Redis's clock in microseconds (TIME's seconds, and its microseconds padded to
 * six digits), or the last fence + 1 when that is not below it (the clock stepped back). So
 * it grows strictly while the fence key lives, and stays above every earlier fence of the
 * task once the key is gone (finished, expired, or Redis restarted empty) as long as Redis's
 * clock does not step back; finish deletes the key, and a finished task keeps only its done
 * record. (A bare INCR restarted at 1 after a Redis loss, under fences a stale holder could
 * still present.) Fences are compared as decimal strings of equal length, and SET ... GET
 * (Redis 6.2) writes the new one and reads the last in one call: number conversions cost
 * Redis about as much as a redis.call, so the usual path converts only its reply. A last
 * value that is not a whole number below 2^53 - 1 (so that it and the next are exact in Lua's
 * doubles) is ignored. The fence's ttl (AF_LEASE_FENCE_TTL_MS) is written here, not passed:
 * one argument less. Measured with callgrind on Redis 7.0: ~10k instructions more per
 * acquire than INCR + PEXPIRE (~55k). */
static const char lua_acquire[] =
        "if redis.call('EXISTS', KEYS[3], KEYS[4], KEYS[1]) ~= 0 then\n"
        "  local done = redis.call('GET', KEYS[3])\n"
        "  if done then return {'DONE', done} end\n"
        "  if redis.call('EXISTS', KEYS[4]) == 1 then return {'CANCELLED'} end\n"
        "  return {'HELD'}\n"
        "end\n"
        "local now = redis.call('TIME')\n"
        "local f = now[1] .. string.sub('00000' .. now[2], -6)\n"
        "local last = redis.call('SET', KEYS[2], f, 'PX', '604800000', 'GET')\n"
        "if last and (#last > #f or (#last == #f and last >= f)) and #last <= 16\n"
        "   and string.find(last, '^%d+$') and tonumber(last) < 9007199254740991 then\n"
        "  redis.call('SET', KEYS[2], last, 'PX', '604800000')\n"
        "  f = string.format('%.0f', redis.call('INCR', KEYS[2]))\n"
        "end\n"
        "redis.call('SET', KEYS[1], ARGV[1] .. f .. ':' .. ARGV[2], 'PX', ARGV[3])\n"
        "return tonumber(f)\n";
_Static_assert(AF_LEASE_FENCE_TTL_MS == 604800000LL, "lua_acquire writes the fence ttl");

/* Shared prefix: is the lease (KEYS[1]) still ours (ARGV[1] = "<token>:")? find() returns
 * the first match, so 1 exactly when the value starts with it. */
#define LUA_OURS \
        "local cur = redis.call('GET', KEYS[1])\n" \
        "if not cur or string.find(cur, ARGV[1], 1, true) ~= 1 then return {'LOST'} end\n"

/* KEYS: lease cancel. ARGV: "<token>:" ttl_ms. → 1 (OK) | {'LOST'} | {'CANCELLED'}. */
static const char lua_renew[] =
        LUA_OURS
        "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
        "if redis.call('EXISTS', KEYS[2]) == 1 then return {'CANCELLED'} end\n"
        "return 1\n";

/* KEYS: lease done fence. ARGV: "<token>:" result done_ttl_ms. → 1 (OK) | {'LOST'}.
 * The fence key goes with the lease: the done record now stops every later owner. */
static const char lua_finish[] =
        LUA_OURS
        "redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])\n"
        "redis.call('DEL', KEYS[1], KEYS[3])\n"
        "return 1\n";

/* KEYS: lease. ARGV: "<token>:". → 1 (OK) | {'LOST'}. */
static const char lua_release[] =
        LUA_OURS
        "redis.call('DEL', KEYS[1])\n"
        "return 1\n";
/* clang-format on */

#define KEY_MAX 96 /* "af:{" + 63-char task id + "}:cancel" */

typedef struct {
        af_lease_op_t op;
        af_lease_t *lease; /* the caller's; for CANCEL points at tmp */
        af_lease_cb_t *cb;
        void *opaque;
        char token[33];    /* ACQUIRE: the token we offered */
        char invalid[128]; /* set when the request was refused before Redis */
        af_lease_t tmp;    /* CANCEL: what the callback gets */
} lease_op_t;

/* ---------------------------------------------------------------------------------------- */
/* Reply parsing (pure)                                                                     */
/* ---------------------------------------------------------------------------------------- */

const char *af_lease_status2str(af_lease_status_t st) {
        switch (st) {
        case AF_LEASE_ACQUIRED:
                return "acquired";
        case AF_LEASE_HELD:
                return "held";
        case AF_LEASE_DONE:
                return "done";
        case AF_LEASE_CANCELLED:
                return "cancelled";
        case AF_LEASE_LOST:
                return "lost";
        case AF_LEASE_OK:
                return "ok";
        }
        return "unknown";
}

static bool word_is(const redisReply *e, const char *w) {
        size_t n = strlen(w);
        return (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS) && e->str &&
               e->len == n && memcmp(e->str, w, n) == 0;
}

af_err_t af_lease_parse_reply(af_lease_op_t op, const redisReply *reply, af_lease_status_t *st,
                              int64_t *fence, const char **data, size_t *data_len, char *errstr,
                              size_t errstr_size) {
        static const struct {
                const char *word;
                af_lease_status_t st;
                size_t elements; /* exact element count of the reply array */
                unsigned ops;    /* bit per af_lease_op_t that may return it */
        } words[] = {
                {"HELD", AF_LEASE_HELD, 1, 1u << AF_LEASE_OP_ACQUIRE},
                {"DONE", AF_LEASE_DONE, 2, 1u << AF_LEASE_OP_ACQUIRE},
                {"CANCELLED", AF_LEASE_CANCELLED, 1,
                 1u << AF_LEASE_OP_ACQUIRE | 1u << AF_LEASE_OP_RENEW},
                {"LOST", AF_LEASE_LOST, 1,
                 1u << AF_LEASE_OP_RENEW | 1u << AF_LEASE_OP_FINISH | 1u << AF_LEASE_OP_RELEASE},
        };
        af_err_t err = AF_ERR_UPSTREAM;

        *data = NULL;
        *data_len = 0;
        if (!reply) {
                af_errstr(err, errstr, errstr_size, "lease: no reply");
                goto out;
        }
        if (op == AF_LEASE_OP_CANCEL) { /* a plain SET ... PX: +OK */
                if (reply->type != REDIS_REPLY_STATUS || !word_is(reply, "OK")) {
                        af_errstr(err, errstr, errstr_size,
                                  "lease: cancel: expected +OK, got reply type %d", reply->type);
                        goto out;
                }
                *st = AF_LEASE_OK;
                err = AF_OK;
                goto out;
        }
        if (reply->type == REDIS_REPLY_INTEGER) { /* the usual outcome, see the scripts */
                if (op == AF_LEASE_OP_ACQUIRE) {
                        if (reply->integer <= 0) {
                                af_errstr(err, errstr, errstr_size,
                                          "lease: ACQUIRED without a positive integer fence");
                                goto out;
                        }
                        *fence = reply->integer;
                        *st = AF_LEASE_ACQUIRED;
                } else {
                        if (reply->integer != 1) {
                                af_errstr(err, errstr, errstr_size,
                                          "lease: integer reply %lld, expected 1 (ok)",
                                          (long long) reply->integer);
                                goto out;
                        }
                        *st = AF_LEASE_OK;
                }
                err = AF_OK;
                goto out;
        }
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 || !reply->element ||
            !reply->element[0]) {
                af_errstr(err, errstr, errstr_size,
                          "lease: expected a non-empty array, got reply type %d", reply->type);
                goto out;
        }
        const redisReply *w = reply->element[0];
        size_t i;
        for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
                if (word_is(w, words[i].word))
                        break;
        if (i == sizeof(words) / sizeof(words[0])) {
                af_errstr(err, errstr, errstr_size, "lease: unknown status in reply");
                goto out;
        }
        if (!((words[i].ops >> op) & 1u)) {
                af_errstr(err, errstr, errstr_size, "lease: status %s not expected here",
                          words[i].word);
                goto out;
        }
        if (reply->elements != words[i].elements) {
                af_errstr(err, errstr, errstr_size, "lease: %s with %zu elements, expected %zu",
                          words[i].word, reply->elements, words[i].elements);
                goto out;
        }
        if (words[i].st == AF_LEASE_DONE) {
                const redisReply *d = reply->element[1];
                if (!d || d->type != REDIS_REPLY_STRING || (!d->str && d->len)) {
                        af_errstr(err, errstr, errstr_size,
                                  "lease: DONE without a stored result string");
                        goto out;
                }
                *data = d->str;
                *data_len = d->len;
        }
        *st = words[i].st;
        err = AF_OK;
out:
        return err;
}

/* ---------------------------------------------------------------------------------------- */
/* Operations                                                                               */
/* ---------------------------------------------------------------------------------------- */

static void lease_reply(af_redis_t *r, const redisReply *reply, const af_error_t *err,
                        void *opaque) {
        lease_op_t *o = opaque;
        af_error_t e;
        af_lease_status_t st = AF_LEASE_LOST;
        int64_t fence = 0;
        const char *data = NULL;
        size_t data_len = 0;
        char errstr[200];

        if (o->invalid[0]) {
                af_error_set(&e, AF_ERR_INVALID, "%s", o->invalid);
                o->cb(o->lease, st, NULL, 0, &e, o->opaque);
                goto out;
        }
        if (err->err != AF_OK) {
                o->cb(o->lease, st, NULL, 0, err, o->opaque);
                goto out;
        }
        if (af_lease_parse_reply(o->op, reply, &st, &fence, &data, &data_len, errstr,
                                 sizeof(errstr)) != AF_OK) {
                af_error_set(&e, AF_ERR_UPSTREAM, "task %s: %s", o->lease->task_id, errstr);
                o->cb(o->lease, st, NULL, 0, &e, o->opaque);
                goto out;
        }
        if (st == AF_LEASE_ACQUIRED) {
                memcpy(o->lease->token, o->token, sizeof(o->lease->token));
                o->lease->fence = fence;
        }
        o->cb(o->lease, st, data, data_len, NULL, o->opaque);
out:
        free(o);
}

/* @returns a new op, or NULL (then cb was told, from the loop). The task id is checked: it
 * must be non-empty, fit, and hold no brace (a brace would move the key's hash slot). */
static lease_op_t *op_new(af_redis_t *r, af_lease_op_t op, af_lease_t *lease, const char *task_id,
                          af_lease_cb_t *cb, void *opaque) {
        lease_op_t *o = calloc(1, sizeof(*o));
        if (!o) {
                af_error_t e;
                af_error_set(&e, AF_ERR_NOMEM, "lease: out of memory");
                cb(lease, AF_LEASE_LOST, NULL, 0, &e, opaque);
                return NULL;
        }
        o->op = op;
        o->lease = lease;
        o->cb = cb;
        o->opaque = opaque;
        size_t n = task_id ? strnlen(task_id, sizeof(lease->task_id)) : 0;
        if (n == 0 || n == sizeof(lease->task_id) || strpbrk(task_id, "{}"))
                snprintf(o->invalid, sizeof(o->invalid),
                         "lease: task id must be 1..%zu chars without braces",
                         sizeof(lease->task_id) - 1);
        return o;
}

/* Refused before Redis: deliver the error from the loop like any other reply (an empty
 * command fails through af_redis's zero-delay queue). */
static void op_refuse(af_redis_t *r, lease_op_t *o) {
        af_redis_commandv(r, lease_reply, o, 0, NULL, NULL);
}

/* "af:{<task_id>}:<what>", the task id already checked to fit (op_new). A few keys per task
 * step: copied, since snprintf costs about ten times as much. */
static void key_of(char out[KEY_MAX], const char *task_id, const char *what) {
        size_t n = strnlen(task_id, sizeof(((af_lease_t *) 0)->task_id) - 1);
        memcpy(out, "af:{", 4);
        memcpy(out + 4, task_id, n);
        memcpy(out + 4 + n, "}:", 2);
        memcpy(out + 6 + n, what, strlen(what) + 1);
}

/* "<token>:", the prefix of the holder's lease value, as the scripts take it. */
static void token_arg(char out[34], const char *token) {
        size_t n = strnlen(token, 32);
        memcpy(out, token, n);
        out[n] = ':';
        out[n + 1] = '\0';
}

/* ms in decimal (at least 1: PX refuses 0). */
static void ms_str(char out[AF_I64_STR_SIZE], int64_t ms) {
        af_i64_to_str(out, ms > 0 ? ms : 1);
}

void af_lease_acquire(af_redis_t *r, af_lease_t *lease, af_lease_cb_t *cb, void *opaque) {
        lease_op_t *o = op_new(r, AF_LEASE_OP_ACQUIRE, lease, lease->task_id, cb, opaque);
        if (!o)
                return;
        if (o->invalid[0] || !memchr(lease->owner, '\0', sizeof(lease->owner))) {
                if (!o->invalid[0])
                        snprintf(o->invalid, sizeof(o->invalid), "lease: owner too long");
                op_refuse(r, o);
                return;
        }
        uint8_t raw[16];
        af_random_bytes(raw, sizeof(raw));
        af_hex_encode(raw, sizeof(raw), o->token);

        char k_lease[KEY_MAX], k_fence[KEY_MAX], k_done[KEY_MAX], k_cancel[KEY_MAX];
        char tok[34], ttl[AF_I64_STR_SIZE];
        key_of(k_lease, lease->task_id, "lease");
        key_of(k_fence, lease->task_id, "fence");
        key_of(k_done, lease->task_id, "done");
        key_of(k_cancel, lease->task_id, "cancel");
        token_arg(tok, o->token);
        ms_str(ttl, lease->ttl_ms);
        const char *keys[4] = {k_lease, k_fence, k_done, k_cancel};
        const char *args[3] = {tok, lease->owner, ttl};
        af_redis_script_run(r, af_redis_script_add(r, lua_acquire), lease_reply, o, 4, keys, 3,
                            args);
}

void af_lease_renew(af_redis_t *r, af_lease_t *lease, af_lease_cb_t *cb, void *opaque) {
        lease_op_t *o = op_new(r, AF_LEASE_OP_RENEW, lease, lease->task_id, cb, opaque);
        if (!o)
                return;
        if (o->invalid[0]) {
                op_refuse(r, o);
                return;
        }
        char k_lease[KEY_MAX], k_cancel[KEY_MAX], tok[34], ttl[AF_I64_STR_SIZE];
        key_of(k_lease, lease->task_id, "lease");
        key_of(k_cancel, lease->task_id, "cancel");
        token_arg(tok, lease->token);
        ms_str(ttl, lease->ttl_ms);
        const char *keys[2] = {k_lease, k_cancel};
        const char *args[2] = {tok, ttl};
        af_redis_script_run(r, af_redis_script_add(r, lua_renew), lease_reply, o, 2, keys, 2, args);
}

void af_lease_finish(af_redis_t *r, af_lease_t *lease, const void *result, size_t len,
                     int64_t done_ttl_ms, af_lease_cb_t *cb, void *opaque) {
        lease_op_t *o = op_new(r, AF_LEASE_OP_FINISH, lease, lease->task_id, cb, opaque);
        if (!o)
                return;
        if (o->invalid[0]) {
                op_refuse(r, o);
                return;
        }
        char k_lease[KEY_MAX], k_done[KEY_MAX], k_fence[KEY_MAX], tok[34], ttl[AF_I64_STR_SIZE];
        key_of(k_lease, lease->task_id, "lease");
        key_of(k_done, lease->task_id, "done");
        key_of(k_fence, lease->task_id, "fence");
        token_arg(tok, lease->token);
        ms_str(ttl, done_ttl_ms > 0 ? done_ttl_ms : AF_LEASE_DONE_TTL_DEFAULT_MS);
        const char *keys[3] = {k_lease, k_done, k_fence};
        const char *args[3] = {tok, result ? (const char *) result : "", ttl};
        size_t arglens[3] = {strlen(tok), result ? len : 0, strlen(ttl)};
        af_redis_script_runv(r, af_redis_script_add(r, lua_finish), lease_reply, o, 3, keys, NULL,
                             3, args, arglens);
}

void af_lease_release(af_redis_t *r, af_lease_t *lease, af_lease_cb_t *cb, void *opaque) {
        lease_op_t *o = op_new(r, AF_LEASE_OP_RELEASE, lease, lease->task_id, cb, opaque);
        if (!o)
                return;
        if (o->invalid[0]) {
                op_refuse(r, o);
                return;
        }
        char k_lease[KEY_MAX], tok[34];
        key_of(k_lease, lease->task_id, "lease");
        token_arg(tok, lease->token);
        const char *keys[1] = {k_lease};
        const char *args[1] = {tok};
        af_redis_script_run(r, af_redis_script_add(r, lua_release), lease_reply, o, 1, keys, 1,
                            args);
}

void af_lease_request_cancel(af_redis_t *r, const char *task_id, int64_t ttl_ms, af_lease_cb_t *cb,
                             void *opaque) {
        lease_op_t *o = calloc(1, sizeof(*o));
        if (!o) {
                af_error_t e;
                af_error_set(&e, AF_ERR_NOMEM, "lease: out of memory");
                cb(NULL, AF_LEASE_LOST, NULL, 0, &e, opaque);
                return;
        }
        o->op = AF_LEASE_OP_CANCEL;
        o->lease = &o->tmp;
        o->cb = cb;
        o->opaque = opaque;
        size_t n = task_id ? strnlen(task_id, sizeof(o->tmp.task_id)) : 0;
        if (n == 0 || n == sizeof(o->tmp.task_id) || strpbrk(task_id, "{}")) {
                snprintf(o->invalid, sizeof(o->invalid),
                         "lease: task id must be 1..%zu chars without braces",
                         sizeof(o->tmp.task_id) - 1);
                op_refuse(r, o);
                return;
        }
        memcpy(o->tmp.task_id, task_id, n + 1);
        char k_cancel[KEY_MAX], ttl[AF_I64_STR_SIZE];
        key_of(k_cancel, task_id, "cancel");
        ms_str(ttl, ttl_ms);
        const char *argv[5] = {"SET", k_cancel, "1", "PX", ttl};
        af_redis_commandv(r, lease_reply, o, 5, argv, NULL);
}
