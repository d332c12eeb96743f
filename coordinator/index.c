/*
 * index: the task status index in Redis, behind GET /v1/tasks[/{id}] and cancel.
 *
 * Kafka is the system of record; this is soft state fed from the `results` topic (and by
 * admit.c directly, so a task is visible the moment its 202 is sent). Per task a hash
 * af:{<id>}:status {status, rank, attempt, tenant, type, pb}, where pb is the winning
 * TaskResult as its protobuf bytes, exactly as read from `results`: every record of every
 * task is written here but few are ever read, so the JSON view is built on the read path
 * (converting each record on the way in was a third of the coordinator's CPU per task).
 * Entries written before that change carry the JSON view in a field `json`, still read.
 * Per tenant sorted sets of task ids (all scores 0, so ids -- ULIDs --
 * sort by admission time and pages are cut by id): af:idx:{<tenant>}:all, :s:<status>,
 * :y:<type>, :sy:<status>:<type>.
 *
 * Order does not matter: a final state wins over QUEUED/RUNNING whatever order records come in,
 * a later attempt wins over an earlier one, and the first final record is kept. Each script
 * touches one slot (the task's, then the tenant's), so a Redis Cluster needs no redesign.
 *
 * Rebuild: the consumer's group is "<coordinator.group_id>-index", shared by every
 * coordinator (they split the partitions and write the same Redis), and resumes from its
 * committed offsets, so a restart does not replay history. When Redis comes back without the
 * marker af:idx:epoch (emptied, restarted without persistence; checked on every reconnect and
 * every few seconds), or after updates failed while it was down, the consumer seeks back to
 * the beginning and replays `results` (compacted: one record per task). Offsets are stored as
 * records are applied: a failed apply triggers that replay, so nothing is skipped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "coord.h"
#include "ids.h"
#include "log.h"
#include "wire_json.h"

#define RANK_FINAL            10
#define RANK_CANCEL_REQUESTED 3
#define PENDING_HOLD          4000 /* Redis updates in flight before the consumer is held */
#define PENDING_RESUME        1000
#define EPOCH_CHECK_MS        5000
#define TRIM_FIRST_MS         (30LL * 1000)   /* first sweep of the index sets */
#define TRIM_EVERY_MS         (3600LL * 1000) /* and the next ones */
#define OWN_BUCKETS           4096  /* hash buckets of the own-record table (a power of 2) */
#define OWN_MAX               32768 /* records remembered at most; past that, applied twice */
#define OWN_TTL_MS            10000 /* how long an applied record waits for its read-back */

/* A QUEUED record this process produces to `results` and applies itself (see "own records"
 * below). Only the entry's hash chain and the expiry list point at it. */
typedef struct own_s {
        struct own_s *chain; /* next in the same bucket */
        struct own_s *prev;  /* expiry list (applied entries only), oldest first */
        struct own_s *next;
        int64_t expires_ms; /* monotonic; applied entries only */
        bool applied;       /* the admission applied it: its read-back is redundant */
        bool seen;          /* read back while the admission was still waiting for Kafka */
        char id[AF_ULID_LEN + 1];
        size_t id_len;
        size_t len;
        uint8_t pb[]; /* the record's bytes, as produced */
} own_t;

struct af_index_s {
        af_coord_t *co;
        af_consumer_t *consumer;
        int64_t ttl_ms;   /* coordinator.index_ttl: an entry's life after its last change */
        int script_apply; /* on the task's hash */
        int script_sets;  /* on the tenant's sorted sets */
        int pending;      /* apply chains in flight */
        bool held;
        bool replay_needed; /* an update was lost while Redis was down */
        bool caught_up;
        af_timer_t *epoch_timer; /* looks for a lost index without a reconnect (FLUSHALL) */
        af_timer_t *trim_timer;  /* drops ids older than the entries' TTL from the sets */
        bool trimming;           /* a SCAN pass is under way */
        own_t *own[OWN_BUCKETS]; /* own QUEUED records by task id */
        own_t *own_head;         /* applied ones by expiry, oldest first */
        own_t *own_tail;
        int own_cnt;
};

/* The two scripts run for every record read from `results` (the QUEUED one of an admission
 * and the worker's final one at least), so they are written for Redis's cost like the lease
 * scripts (libcommon/lease.c): inside Redis each KEYS/ARGV entry and each Lua table replied
 * costs more than most of the work. The usual path takes no more redis.call's than it must,
 * the entry's ttl is written into the script at start (not passed), and the usual outcome is
 * answered as a bare string. Measured with callgrind on Redis 7.0, both records of a task
 * through both scripts: 274k instructions before, 243k after. */

/* KEYS[1] task hash. ARGV: status, rank, attempt, tenant, type, pb.
 * Returns, when applied, the previous status ("" when new) as a bare string if the record
 * named its tenant and type (the usual case: the caller knows them), else
 * {previous status, tenant, type}; when the record lost (superseded), {'=', status, tenant,
 * type} of the stored entry, so the caller can write the sets again (a replay after a failed
 * sets call finds its records superseded, and would otherwise never repair the listings). A
 * record without tenant or type (a writer that left them out) keeps the known ones; an empty
 * pb (a cancel mark) keeps the stored record. The entry lives coordinator.index_ttl after
 * its last change: af_index_new() writes it between the script's two halves. */
static const char lua_apply_head[] =
        "local cur = redis.call('HMGET', KEYS[1], 'rank', 'attempt', 'status', 'tenant', 'type')\n"
        "local crank = tonumber(cur[1])\n"
        "if crank then\n"
        "  local nrank = tonumber(ARGV[2])\n"
        "  local natt = tonumber(ARGV[3])\n"
        "  local catt = tonumber(cur[2]) or 0\n"
        "  if crank >= 10 or (nrank < 10 and (natt < catt or (natt == catt and nrank <= crank)))\n"
        "  then return {'=', cur[3] or '', cur[4] or '', cur[5] or ''} end\n"
        "end\n"
        "local tenant = ARGV[4]\n"
        "local ttype = ARGV[5]\n"
        "local merged = tenant == '' or ttype == ''\n"
        "if merged then\n"
        "  if tenant == '' then tenant = cur[4] or '' end\n"
        "  if ttype == '' then ttype = cur[5] or '' end\n"
        "end\n"
        "if ARGV[6] ~= '' then\n"
        "  redis.call('HSET', KEYS[1], 'status', ARGV[1], 'rank', ARGV[2], 'attempt', ARGV[3],\n"
        "             'tenant', tenant, 'type', ttype, 'pb', ARGV[6])\n"
        "else\n"
        "  redis.call('HSET', KEYS[1], 'status', ARGV[1], 'rank', ARGV[2], 'attempt', ARGV[3],\n"
        "             'tenant', tenant, 'type', ttype)\n"
        "end\n"
        "redis.call('PEXPIRE', KEYS[1], '";
static const char lua_apply_tail[] = "')\n"
                                     "if merged then return {cur[3] or '', tenant, ttype} end\n"
                                     "return cur[3] or ''\n";

/* KEYS: all, y:<type>, s:<new>, sy:<new>:<type>, and when the status moved s:<old>,
 * sy:<old>:<type> (six keys: the id leaves those). ARGV: id. */
static const char lua_sets[] = "local id = ARGV[1]\n"
                               "redis.call('ZADD', KEYS[1], 0, id)\n"
                               "redis.call('ZADD', KEYS[2], 0, id)\n"
                               "if #KEYS == 6 then\n"
                               "  redis.call('ZREM', KEYS[5], id)\n"
                               "  redis.call('ZREM', KEYS[6], id)\n"
                               "end\n"
                               "redis.call('ZADD', KEYS[3], 0, id)\n"
                               "redis.call('ZADD', KEYS[4], 0, id)\n"
                               "return 1\n";

static int status_rank(Agentfleet__V1__TaskStatus st) {
        if (af_wire_status_is_final(st))
                return RANK_FINAL;
        switch (st) {
        case AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_QUEUED:
                return 1;
        case AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_RUNNING:
        case AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_RETRYING:
        case AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_WAITING_APPROVAL:
                return 2;
        default:
                return 0;
        }
}

/* Concatenate the non-NULL strings of parts into out (n > 0 bytes), cut to fit like
 * snprintf. The six keys of an update are built with this: with snprintf they were a sixth
 * of the index's instructions. @returns the length written. */
static size_t str_join(char *out, size_t n, const char *const *parts, size_t cnt) {
        size_t o = 0;
        for (size_t i = 0; i < cnt; i++) {
                size_t l;
                if (!parts[i])
                        continue;
                l = strlen(parts[i]);
                if (l > n - 1 - o)
                        l = n - 1 - o;
                memcpy(out + o, parts[i], l);
                o += l;
        }
        out[o] = '\0';
        return o;
}

static void copy_str(char *out, size_t n, const char *s) {
        str_join(out, n, &s, 1);
}

static void task_key(char *out, size_t n, const char *id) {
        const char *parts[] = {"af:{", id, "}:status"};
        str_join(out, n, parts, 3);
}

/* af:idx:{<tenant>}:<kind>[:<a>[:<b>]] */
static void set_key(char *out, size_t n, const char *tenant, const char *kind, const char *a,
                    const char *b) {
        const char *parts[] = {"af:idx:{",          tenant,      "}:", kind, a ? ":" : NULL, a,
                               a && b ? ":" : NULL, a ? b : NULL};
        str_join(out, n, parts, sizeof(parts) / sizeof(parts[0]));
}

/* ---- apply -------------------------------------------------------------------------------- */

typedef struct apply_s {
        af_index_t *ix;
        char id[64];
        char tenant[128];
        char type[128];
        char status[32];
        int rank;              /* the record's, status_rank() */
        af_index_get_cb_t *cb; /* for mark_cancel: the entry after the change */
        void *opaque;
} apply_t;

static void pending_done(af_index_t *ix) {
        ix->pending--;
        if (ix->held && ix->pending < PENDING_RESUME && ix->consumer) {
                ix->held = false;
                af_consumer_hold(ix->consumer, false);
        }
}

static void apply_finish(apply_t *ap, const af_error_t *err) {
        af_index_t *ix = ap->ix;
        if (ap->cb) {
                if (err)
                        ap->cb(NULL, err, ap->opaque);
                else
                        af_index_get(ix, ap->id, ap->cb, ap->opaque);
        }
        pending_done(ix);
        free(ap);
}

static void sets_cb(af_redis_t *r, const redisReply *reply, const af_error_t *err, void *opaque) {
        apply_t *ap = opaque;
        if (err && err->err) {
                ap->ix->replay_needed = true;
                af_warn("index: sets of task %s not updated: %s", ap->id, err->msg);
        }
        apply_finish(ap, err && err->err ? err : NULL);
}

static bool all_strings(const redisReply *reply, size_t n) {
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != n)
                return false;
        for (size_t i = 0; i < n; i++)
                if (reply->element[i]->type != REDIS_REPLY_STRING)
                        return false;
        return true;
}

static void apply_cb(af_redis_t *r, const redisReply *reply, const af_error_t *err, void *opaque) {
        apply_t *ap = opaque;
        af_index_t *ix = ap->ix;
        const char *outcome = "applied", *old = "";

        if (err && err->err) {
                ix->replay_needed = true;
                af_warn("index: task %s not updated: %s", ap->id, err->msg);
                outcome = "error";
        } else if (reply->type == REDIS_REPLY_STRING && *ap->tenant && *ap->type) {
                old = reply->str;           /* the bare form: only for a record that named both */
        } else if (all_strings(reply, 3)) { /* merged with the known tenant and type */
                old = reply->element[0]->str;
                copy_str(ap->tenant, sizeof(ap->tenant), reply->element[1]->str);
                copy_str(ap->type, sizeof(ap->type), reply->element[2]->str);
        } else if (all_strings(reply, 4) && !strcmp(reply->element[0]->str, "=")) {
                /* An older or repeated record: the entry stays. A final one (what a replay of
                 * the compacted topic reads, or a re-emitted result) writes the entry's sets
                 * again as it stands: ZADDs of members already there change nothing, and
                 * after a failed sets call they repair it. Others write nothing: most are
                 * this coordinator's own QUEUED records read back late under load, one per
                 * task, where the sets call would cost Redis ~7 % more per task. */
                outcome = "superseded";
                if (ap->rank >= RANK_FINAL) {
                        copy_str(ap->status, sizeof(ap->status), reply->element[1]->str);
                        copy_str(ap->tenant, sizeof(ap->tenant), reply->element[2]->str);
                        copy_str(ap->type, sizeof(ap->type), reply->element[3]->str);
                } else {
                        ap->status[0] = '\0'; /* nothing to write */
                }
        } else { /* not this binary's script: a replay would not help */
                af_warn("index: task %s: unexpected reply to the update (type %d)", ap->id,
                        reply->type);
                outcome = "error";
        }
        const char *lv[] = {outcome, NULL};
        af_metric_add(ix->co->m.index_results, lv, 1);
        if (!strcmp(outcome, "error") || !*ap->status || !*ap->tenant) {
                apply_finish(ap, err && err->err ? err : NULL);
                return;
        }
        bool moved = *old && strcmp(old, ap->status);
        char k[6][512];
        set_key(k[0], sizeof(k[0]), ap->tenant, "all", NULL, NULL);
        set_key(k[1], sizeof(k[1]), ap->tenant, "y", ap->type, NULL);
        set_key(k[2], sizeof(k[2]), ap->tenant, "s", ap->status, NULL);
        set_key(k[3], sizeof(k[3]), ap->tenant, "sy", ap->status, ap->type);
        if (moved) {
                set_key(k[4], sizeof(k[4]), ap->tenant, "s", old, NULL);
                set_key(k[5], sizeof(k[5]), ap->tenant, "sy", old, ap->type);
        }
        const char *keys[] = {k[0], k[1], k[2], k[3], k[4], k[5]};
        const char *args[] = {ap->id};
        af_redis_script_run(ix->co->redis, ix->script_sets, sets_cb, ap, moved ? 6 : 4, keys, 1,
                            args);
}

/* Start the two-step update of one task's entry. pb: the TaskResult bytes to store (len 0:
 * keep the stored ones). */
static void apply_entry(af_index_t *ix, const char *id, const char *tenant, const char *type,
                        const char *status, int rank, int attempt, const void *pb, size_t pb_len,
                        af_index_get_cb_t *cb, void *opaque) {
        apply_t *ap = calloc(1, sizeof(*ap));
        char key[128], rank_s[16], att_s[16];

        if (!ap) {
                if (cb) {
                        af_error_t e;
                        af_error_set(&e, AF_ERR_NOMEM, "out of memory");
                        cb(NULL, &e, opaque);
                }
                return;
        }
        ap->ix = ix;
        copy_str(ap->id, sizeof(ap->id), id);
        copy_str(ap->tenant, sizeof(ap->tenant), tenant);
        copy_str(ap->type, sizeof(ap->type), type);
        copy_str(ap->status, sizeof(ap->status), status);
        ap->cb = cb;
        ap->opaque = opaque;
        ap->rank = rank;
        task_key(key, sizeof(key), ap->id);
        snprintf(rank_s, sizeof(rank_s), "%d", rank);
        snprintf(att_s, sizeof(att_s), "%d", attempt);
        const char *keys[] = {key};
        const char *args[] = {ap->status, rank_s, att_s, ap->tenant, ap->type, (const char *) pb};
        size_t arglens[] = {strlen(ap->status), strlen(rank_s),   strlen(att_s),
                            strlen(ap->tenant), strlen(ap->type), pb ? pb_len : 0};
        if (!pb)
                args[5] = "";
        ix->pending++;
        if (ix->pending >= PENDING_HOLD && !ix->held && ix->consumer) {
                ix->held = true;
                af_consumer_hold(ix->consumer, true);
        }
        af_redis_script_runv(ix->co->redis, ix->script_apply, apply_cb, ap, 1, keys, NULL, 6, args,
                             arglens);
}

/* Index res, whose protobuf bytes are pb (as read from `results`). */
static void index_apply_bytes(af_index_t *ix, const Agentfleet__V1__TaskResult *res, const void *pb,
                              size_t pb_len) {
        if (!ix || !res->task_id || !af_ulid_valid(res->task_id) || !pb_len)
                return;
        int rank = status_rank(res->status);
        if (!rank)
                return; /* UNSPECIFIED or unknown: nothing a reader could use */
        apply_entry(ix, res->task_id, res->tenant ? res->tenant : "", res->type ? res->type : "",
                    af_wire_status2str(res->status), rank, res->attempt, pb, pb_len, NULL, NULL);
}

void af_index_apply(af_index_t *ix, const Agentfleet__V1__TaskResult *res) {
        size_t len;
        uint8_t *bytes;

        if (!ix || !res->task_id || !af_ulid_valid(res->task_id) || !status_rank(res->status))
                return;
        len = agentfleet__v1__task_result__get_packed_size(res);
        if (!(bytes = malloc(len ? len : 1)))
                return;
        agentfleet__v1__task_result__pack(res, bytes);
        index_apply_bytes(ix, res, bytes, len);
        free(bytes);
}

/* ---- own records ----------------------------------------------------------------------------
 * Every admission produces a QUEUED record to `results` and applies it to the index itself, so
 * that the task is visible as soon as it is accepted; the consumer below then reads the same
 * record back. Applying it again was one Redis script call per task for nothing (the script
 * answered "superseded"). So admit.c registers the record's bytes before producing them, and a
 * record read back with the same key and the very same bytes is not applied a second time:
 *  - read back after the admission applied it: skipped, and the entry dropped;
 *  - read back before (the consumer may see the record before this process sees Kafka's
 *    acknowledgement of it): marked seen and skipped; the admission applies it when the
 *    acknowledgement comes, or, if Kafka reports a failure after all, still applies it, since
 *    it is in `results` and a rebuild would show it.
 * Everything else is applied as before: records another coordinator wrote (their ids are not
 * here), any record that differs in a byte, every record of a replay (a replay empties the
 * table of applied entries: what they wrote may be what Redis lost), and read-backs later than
 * OWN_TTL_MS (the table is bounded; another instance may be the one consuming the partition).
 * Order never mattered to the apply script, so applying the record at acknowledgement instead
 * of at read-back changes no outcome. */

static uint32_t own_hash(const char *id, size_t len) {
        uint32_t h = 2166136261u; /* FNV-1a */
        for (size_t i = 0; i < len; i++)
                h = (h ^ (uint8_t) id[i]) * 16777619u;
        return h & (OWN_BUCKETS - 1);
}

/* @returns the link that points at the entry for id, or the NULL link at its chain's end. */
static own_t **own_link(af_index_t *ix, const char *id, size_t len) {
        own_t **pp = &ix->own[own_hash(id, len)];
        while (*pp && ((*pp)->id_len != len || memcmp((*pp)->id, id, len)))
                pp = &(*pp)->chain;
        return pp;
}

static void own_unlink_expiry(af_index_t *ix, own_t *e) {
        if (e->prev)
                e->prev->next = e->next;
        else
                ix->own_head = e->next;
        if (e->next)
                e->next->prev = e->prev;
        else
                ix->own_tail = e->prev;
        e->prev = e->next = NULL;
}

/* Free the entry *pp points at. */
static void own_free(af_index_t *ix, own_t **pp) {
        own_t *e = *pp;
        *pp = e->chain;
        if (e->applied)
                own_unlink_expiry(ix, e);
        ix->own_cnt--;
        free(e);
}

static void own_expire(af_index_t *ix, int64_t now_ms) {
        while (ix->own_head && ix->own_head->expires_ms <= now_ms)
                own_free(ix, own_link(ix, ix->own_head->id, ix->own_head->id_len));
}

/* A replay starts (keep_waiting) or the index goes (!keep_waiting). Entries still waiting for
 * their admission's acknowledgement stay, unseen again: their read-back comes again, and their
 * apply is still to be sent. */
static void own_reset(af_index_t *ix, bool keep_waiting) {
        for (int b = 0; b < OWN_BUCKETS; b++) {
                own_t **pp = &ix->own[b];
                while (*pp) {
                        if (keep_waiting && !(*pp)->applied) {
                                (*pp)->seen = false;
                                pp = &(*pp)->chain;
                        } else {
                                own_free(ix, pp);
                        }
                }
        }
}

void af_index_own_expect(af_index_t *ix, const char *task_id, const void *pb, size_t len) {
        size_t id_len;
        own_t **pp, *e;

        if (!ix || !task_id || !len || (id_len = strlen(task_id)) > AF_ULID_LEN)
                return;
        own_expire(ix, af_clock_mono_ms());
        if (ix->own_cnt >= OWN_MAX)
                return; /* applied twice, as before the table */
        pp = own_link(ix, task_id, id_len);
        if (*pp || !(e = calloc(1, sizeof(*e) + len)))
                return;
        memcpy(e->id, task_id, id_len);
        e->id_len = id_len;
        memcpy(e->pb, pb, len);
        e->len = len;
        *pp = e;
        ix->own_cnt++;
}

void af_index_own_apply(af_index_t *ix, const Agentfleet__V1__TaskResult *res) {
        own_t **pp, *e;

        if (!ix || !res->task_id)
                return;
        pp = own_link(ix, res->task_id, strlen(res->task_id));
        if (!(e = *pp) || e->applied) {
                af_index_apply(ix, res); /* not registered (table full): as before */
                return;
        }
        index_apply_bytes(ix, res, e->pb, e->len);
        if (e->seen) {
                own_free(ix, pp);
                return;
        }
        e->applied = true;
        e->expires_ms = af_clock_mono_ms() + OWN_TTL_MS;
        e->prev = ix->own_tail;
        if (ix->own_tail)
                ix->own_tail->next = e;
        else
                ix->own_head = e;
        ix->own_tail = e;
}

void af_index_own_drop(af_index_t *ix, const Agentfleet__V1__TaskResult *res) {
        own_t **pp;

        if (!ix || !res->task_id)
                return;
        pp = own_link(ix, res->task_id, strlen(res->task_id));
        if (!*pp)
                return;
        if ((*pp)->seen)
                index_apply_bytes(ix, res, (*pp)->pb, (*pp)->len);
        own_free(ix, pp);
}

/* @returns whether msg is an own record already applied or about to be (see above); if so,
 * it has been accounted for. */
static bool own_read_back(af_index_t *ix, const af_kafka_msg_t *msg) {
        own_t **pp, *e;

        if (!ix->own_cnt || !msg->key || !msg->key_len || msg->key_len > AF_ULID_LEN)
                return false;
        pp = own_link(ix, msg->key, msg->key_len);
        if (!(e = *pp) || e->len != msg->value_len || memcmp(e->pb, msg->value, e->len))
                return false;
        if (e->applied)
                own_free(ix, pp);
        else
                e->seen = true;
        return true;
}

/* ---- get ---------------------------------------------------------------------------------- */

typedef struct get_s {
        af_index_get_cb_t *cb;
        void *opaque;
} get_t;

/* The fields entry_from_reply reads, in its order. */
#define ENTRY_FIELDS  "status", "pb", "tenant", "type", "json"
#define ENTRY_NFIELDS 5

/* The JSON view of a stored TaskResult (protobuf bytes), as the API shows it. */
static json_t *entry_view_of_pb(const redisReply *pb) {
        Agentfleet__V1__TaskResult *res =
                agentfleet__v1__task_result__unpack(NULL, pb->len, (const uint8_t *) pb->str);
        json_t *j = NULL;
        if (!res)
                return NULL;
        if ((j = af_wire_taskresult_to_json(res)))
                json_object_set_new(j, "id", json_string(res->task_id));
        agentfleet__v1__task_result__free_unpacked(res, NULL);
        return j;
}

/* Build a view from HMGET ENTRY_FIELDS: the stored record (pb, or the JSON of an entry
 * written before pb) with the hash's status, tenant and type on top (they may be merged from
 * earlier records). */
static json_t *entry_from_reply(const redisReply *reply) {
        json_t *j;
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != ENTRY_NFIELDS)
                return NULL;
        const redisReply *st = reply->element[0], *pb = reply->element[1];
        const redisReply *tn = reply->element[2], *ty = reply->element[3];
        const redisReply *js = reply->element[4];
        if (st->type != REDIS_REPLY_STRING)
                return NULL;
        if (pb->type == REDIS_REPLY_STRING && pb->len)
                j = entry_view_of_pb(pb);
        else if (js->type == REDIS_REPLY_STRING)
                j = json_loadb(js->str, js->len, 0, NULL);
        else
                return NULL;
        if (!j || !json_is_object(j)) {
                json_decref(j);
                return NULL;
        }
        json_object_set_new(j, "status", json_stringn(st->str, st->len));
        if (tn->type == REDIS_REPLY_STRING && tn->len)
                json_object_set_new(j, "tenant", json_stringn(tn->str, tn->len));
        if (ty->type == REDIS_REPLY_STRING && ty->len)
                json_object_set_new(j, "type", json_stringn(ty->str, ty->len));
        return j;
}

static void get_cb(af_redis_t *r, const redisReply *reply, const af_error_t *err, void *opaque) {
        get_t *g = opaque;
        json_t *j = NULL;
        if (err && err->err) {
                g->cb(NULL, err, g->opaque);
                free(g);
                return;
        }
        j = entry_from_reply(reply);
        g->cb(j, NULL, g->opaque);
        json_decref(j);
        free(g);
}

void af_index_get(af_index_t *ix, const char *task_id, af_index_get_cb_t *cb, void *opaque) {
        char key[128];
        get_t *g = malloc(sizeof(*g));
        if (!g) {
                af_error_t e;
                af_error_set(&e, AF_ERR_NOMEM, "out of memory");
                cb(NULL, &e, opaque);
                return;
        }
        g->cb = cb;
        g->opaque = opaque;
        task_key(key, sizeof(key), task_id);
        const char *argv[] = {"HMGET", key, ENTRY_FIELDS};
        af_redis_commandv(ix->co->redis, get_cb, g, 2 + ENTRY_NFIELDS, argv, NULL);
}

/* ---- list --------------------------------------------------------------------------------- */

typedef struct list_s {
        af_redis_t *redis;
        af_index_list_cb_t *cb;
        void *opaque;
        int limit;
        char status[32]; /* the status listed, or "" */
        char type[128];  /* the type listed, or "" */
        size_t cnt;      /* ids in the page */
        size_t got;      /* entries answered */
        char **ids;
        json_t **entries;
        bool failed;
        af_error_t err;
} list_t;

static void list_free(list_t *l) {
        for (size_t i = 0; i < l->cnt; i++) {
                free(l->ids[i]);
                json_decref(l->entries[i]);
        }
        free(l->ids);
        free(l->entries);
        free(l);
}

static void list_finish(list_t *l) {
        json_t *arr = json_array();
        const char *next = NULL;
        for (size_t i = 0; i < l->cnt; i++)
                if (l->entries[i])
                        json_array_append(arr, l->entries[i]);
        /* A full page may have more behind it; the cursor is the last id of this page. */
        if (l->cnt && (int) l->cnt == l->limit)
                next = l->ids[l->cnt - 1];
        if (l->failed)
                l->cb(NULL, NULL, &l->err, l->opaque);
        else
                l->cb(arr, next, NULL, l->opaque);
        json_decref(arr);
        list_free(l);
}

typedef struct list_item_s {
        list_t *l;
        size_t i;
} list_item_t;

/* Is the entry (HMGET ENTRY_FIELDS) at odds with the set l lists? Then the set is stale: a
 * sets call failed after the task's status moved (an entry that is gone altogether is left
 * out by entry_from_reply). The entry is left out of the page, not removed from the set:
 * the hash and the set are in different slots, so no script can check and remove at once,
 * and a ZREM sent now could land after an update that has just put the task back in that
 * set. The task's next update, a replay (a superseded final record writes its task's sets
 * again, see apply_cb) or the trim puts the set right. */
static bool list_item_stale(const list_t *l, const redisReply *reply) {
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != ENTRY_NFIELDS)
                return false;
        const redisReply *st = reply->element[0], *ty = reply->element[3];
        if (st->type != REDIS_REPLY_STRING)
                return false;
        if (*l->status && (st->len != strlen(l->status) || memcmp(st->str, l->status, st->len)))
                return true;
        return *l->type && ty->type == REDIS_REPLY_STRING && ty->len &&
               (ty->len != strlen(l->type) || memcmp(ty->str, l->type, ty->len));
}

static void list_item_cb(af_redis_t *r, const redisReply *reply, const af_error_t *err,
                         void *opaque) {
        list_item_t *it = opaque;
        list_t *l = it->l;
        if (err && err->err) {
                l->failed = true;
                l->err = *err;
        } else if (!list_item_stale(l, reply)) {
                l->entries[it->i] = entry_from_reply(reply);
        }
        free(it);
        if (++l->got == l->cnt)
                list_finish(l);
}

static void list_ids_cb(af_redis_t *r, const redisReply *reply, const af_error_t *err,
                        void *opaque) {
        list_t *l = opaque;
        if (err && err->err) {
                l->failed = true;
                l->err = *err;
                list_finish(l);
                return;
        }
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
                list_finish(l);
                return;
        }
        l->ids = calloc(reply->elements, sizeof(*l->ids));
        l->entries = calloc(reply->elements, sizeof(*l->entries));
        if (!l->ids || !l->entries) {
                l->failed = true;
                af_error_set(&l->err, AF_ERR_NOMEM, "out of memory");
                list_finish(l);
                return;
        }
        for (size_t i = 0; i < reply->elements; i++)
                if (reply->element[i]->type == REDIS_REPLY_STRING)
                        l->ids[l->cnt++] = strndup(reply->element[i]->str, reply->element[i]->len);
        if (!l->cnt) {
                list_finish(l);
                return;
        }
        /* The loop below may finish l from a callback only after the last command is sent,
         * since callbacks never run inside the issuing call (redis.h). */
        size_t cnt = l->cnt;
        for (size_t i = 0; i < cnt; i++) {
                char key[128];
                list_item_t *it = malloc(sizeof(*it));
                if (!it) {
                        /* account for it as answered, with an error */
                        l->failed = true;
                        af_error_set(&l->err, AF_ERR_NOMEM, "out of memory");
                        if (++l->got == l->cnt) {
                                list_finish(l);
                                return;
                        }
                        continue;
                }
                it->l = l;
                it->i = i;
                task_key(key, sizeof(key), l->ids[i] ? l->ids[i] : "");
                const char *argv[] = {"HMGET", key, ENTRY_FIELDS};
                af_redis_commandv(l->redis, list_item_cb, it, 2 + ENTRY_NFIELDS, argv, NULL);
        }
}

void af_index_list(af_index_t *ix, const af_index_query_t *q, af_index_list_cb_t *cb,
                   void *opaque) {
        char key[512], max[96], lim[16];
        list_t *l = calloc(1, sizeof(*l));

        if (!l) {
                af_error_t e;
                af_error_set(&e, AF_ERR_NOMEM, "out of memory");
                cb(NULL, NULL, &e, opaque);
                return;
        }
        l->redis = ix->co->redis;
        l->cb = cb;
        l->opaque = opaque;
        l->limit = q->limit;
        copy_str(l->status, sizeof(l->status), q->status ? q->status : "");
        copy_str(l->type, sizeof(l->type), q->type ? q->type : "");
        if (q->status && q->type)
                set_key(key, sizeof(key), q->tenant, "sy", q->status, q->type);
        else if (q->status)
                set_key(key, sizeof(key), q->tenant, "s", q->status, NULL);
        else if (q->type)
                set_key(key, sizeof(key), q->tenant, "y", q->type, NULL);
        else
                set_key(key, sizeof(key), q->tenant, "all", NULL, NULL);
        /* Newest first; the next page starts strictly below the cursor id. */
        if (q->cursor && *q->cursor)
                snprintf(max, sizeof(max), "(%s", q->cursor);
        else
                snprintf(max, sizeof(max), "+");
        snprintf(lim, sizeof(lim), "%d", q->limit);
        const char *argv[] = {"ZREVRANGEBYLEX", key, max, "-", "LIMIT", "0", lim};
        af_redis_commandv(ix->co->redis, list_ids_cb, l, 7, argv, NULL);
}

/* ---- cancel ------------------------------------------------------------------------------- */

typedef struct cancel_s {
        af_index_t *ix;
        char id[64];
        af_index_get_cb_t *cb;
        void *opaque;
} cancel_t;

static void cancel_got(json_t *entry, const af_error_t *err, void *opaque) {
        cancel_t *c = opaque;
        if (err || !entry) {
                c->cb(NULL, err, c->opaque);
                free(c);
                return;
        }
        const char *status = json_string_value(json_object_get(entry, "status"));
        if (status && af_wire_str2status(status) > 0 &&
            af_wire_status_is_final((Agentfleet__V1__TaskStatus) af_wire_str2status(status))) {
                c->cb(entry, NULL, c->opaque); /* too late: the caller sees the final state */
                free(c);
                return;
        }
        /* Only the hash's status changes (readers see "cancel_requested" from it); the
         * stored record stays as it is. */
        const char *tenant = json_string_value(json_object_get(entry, "tenant"));
        const char *type = json_string_value(json_object_get(entry, "type"));
        json_int_t attempt = json_integer_value(json_object_get(entry, "attempt"));
        apply_entry(c->ix, c->id, tenant ? tenant : "", type ? type : "", "cancel_requested",
                    RANK_CANCEL_REQUESTED, (int) attempt, NULL, 0, c->cb, c->opaque);
        free(c);
}

void af_index_mark_cancel(af_index_t *ix, const char *task_id, af_index_get_cb_t *cb,
                          void *opaque) {
        cancel_t *c = calloc(1, sizeof(*c));
        if (!c) {
                af_error_t e;
                af_error_set(&e, AF_ERR_NOMEM, "out of memory");
                cb(NULL, &e, opaque);
                return;
        }
        c->ix = ix;
        snprintf(c->id, sizeof(c->id), "%s", task_id);
        c->cb = cb;
        c->opaque = opaque;
        af_index_get(ix, task_id, cancel_got, c);
}

/* ---- the results consumer ----------------------------------------------------------------- */

static void on_result(af_consumer_t *c, const af_kafka_msg_t *msg, void *opaque) {
        af_index_t *ix = opaque;
        Agentfleet__V1__TaskResult *res;

        ix->caught_up = true;
        if (!msg->value || !msg->value_len)
                return; /* a tombstone: compaction deleted the task; nothing to index */
        if (own_read_back(ix, msg)) {
                const char *lv[] = {"own", NULL};
                af_metric_add(ix->co->m.index_results, lv, 1);
                af_consumer_store_offset(c, msg->topic, msg->partition, msg->offset + 1);
                return;
        }
        res = agentfleet__v1__task_result__unpack(NULL, msg->value_len, msg->value);
        if (!res) {
                const char *lv[] = {"undecodable", NULL};
                af_metric_add(ix->co->m.index_results, lv, 1);
                af_warn("index: undecodable record on %s [%d] @%lld skipped", msg->topic,
                        (int) msg->partition, (long long) msg->offset);
                return;
        }
        /* The record's own bytes are what the index stores: no re-encoding. */
        index_apply_bytes(ix, res, msg->value, msg->value_len);
        agentfleet__v1__task_result__free_unpacked(res, NULL);
        af_consumer_store_offset(c, msg->topic, msg->partition, msg->offset + 1);
}

/* Re-read `results` from the beginning on every assigned partition. */
static void replay_from_start(af_index_t *ix) {
        rd_kafka_topic_partition_list_t *parts = NULL;
        rd_kafka_t *rk = ix->consumer ? af_consumer_rk(ix->consumer) : NULL;
        rd_kafka_error_t *error;

        own_reset(ix, true /*keep waiting*/);
        if (!rk || rd_kafka_assignment(rk, &parts) || !parts)
                return;
        if (parts->cnt == 0) {
                /* Not assigned yet: the fresh group starts at the earliest offset anyway. */
                rd_kafka_topic_partition_list_destroy(parts);
                return;
        }
        for (int i = 0; i < parts->cnt; i++)
                parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
        af_info("index: replaying %s from the beginning (%d partitions)", ix->co->topic_results,
                parts->cnt);
        error = rd_kafka_seek_partitions(rk, parts, 2000);
        if (error) {
                af_warn("index: seek failed: %s", rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
                ix->replay_needed = true;
        }
        rd_kafka_topic_partition_list_destroy(parts);
}

static void epoch_cb(af_redis_t *r, const redisReply *reply, const af_error_t *err, void *opaque) {
        af_index_t *ix = opaque;
        if (err && err->err)
                return; /* down again: the next "up" checks again */
        /* SET NX answered OK: the marker was missing, so Redis lost the index. */
        if (reply->type == REDIS_REPLY_STATUS || ix->replay_needed) {
                ix->replay_needed = false;
                replay_from_start(ix);
        }
}

void af_index_redis_state(af_index_t *ix, bool up) {
        char epoch[AF_ULID_LEN + 1];
        if (!ix || !up)
                return;
        af_ulid_new(epoch);
        const char *argv[] = {"SET", "af:idx:epoch", epoch, "NX"};
        af_redis_commandv(ix->co->redis, epoch_cb, ix, 4, argv, NULL);
}

static void epoch_tick(void *opaque) {
        af_index_t *ix = opaque;
        af_index_redis_state(ix, af_redis_is_up(ix->co->redis));
}

/* ---- retention ------------------------------------------------------------------------------
 * A task's hash expires coordinator.index_ttl (a week by default) after its last change, but
 * the sorted sets would keep its id forever. A SCAN pass over af:idx:{*} (soon after start,
 * then hourly) drops from every set the ids admitted longer ago than that: ULIDs sort by
 * admission time, so that is one ZREMRANGEBYLEX per set. A task still changing after that
 * stays readable by id; only the listings forget it. */

static void trim_next(af_index_t *ix, const char *cursor);

static void trim_removed_cb(af_redis_t *r, const redisReply *reply, const af_error_t *err,
                            void *opaque) {
        if (err && err->err)
                af_debug("index: trim: %s", err->msg);
}

static void trim_scan_cb(af_redis_t *r, const redisReply *reply, const af_error_t *err,
                         void *opaque) {
        af_index_t *ix = opaque;
        char prefix[11], cut[16];

        if (err && err->err) {
                ix->trimming = false; /* Redis down or shutting down: next hour */
                return;
        }
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
            reply->element[0]->type != REDIS_REPLY_STRING ||
            reply->element[1]->type != REDIS_REPLY_ARRAY) {
                af_warn("index: trim: unexpected SCAN reply");
                ix->trimming = false;
                return;
        }
        af_ulid_time_prefix(af_clock_wall_ms() - ix->ttl_ms, prefix);
        snprintf(cut, sizeof(cut), "(%s", prefix);
        for (size_t i = 0; i < reply->element[1]->elements; i++) {
                const redisReply *key = reply->element[1]->element[i];
                if (key->type != REDIS_REPLY_STRING)
                        continue;
                const char *argv[] = {"ZREMRANGEBYLEX", key->str, "-", cut};
                const size_t lens[] = {14, key->len, 1, strlen(cut)};
                af_redis_commandv(ix->co->redis, trim_removed_cb, ix, 4, argv, lens);
        }
        if (strcmp(reply->element[0]->str, "0"))
                trim_next(ix, reply->element[0]->str);
        else
                ix->trimming = false;
}

static void trim_next(af_index_t *ix, const char *cursor) {
        const char *argv[] = {"SCAN", cursor, "MATCH", "af:idx:{*", "COUNT", "500"};
        af_redis_commandv(ix->co->redis, trim_scan_cb, ix, 6, argv, NULL);
}

static void trim_tick(void *opaque) {
        af_index_t *ix = opaque;
        af_timer_start(ix->trim_timer, TRIM_EVERY_MS, false);
        if (ix->trimming || !af_redis_is_up(ix->co->redis))
                return;
        ix->trimming = true;
        trim_next(ix, "0");
}

bool af_index_ready(const af_index_t *ix) {
        return ix && ix->caught_up;
}

af_index_t *af_index_new(af_coord_t *co, char *errstr, size_t errstr_size) {
        af_index_t *ix = calloc(1, sizeof(*ix));
        char group[256];
        const char *topics[1];

        if (!ix) {
                af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                return NULL;
        }
        ix->co = co;
        ix->ttl_ms = af_config_int(co->conf, "coordinator.index_ttl");
        char lua_apply[sizeof(lua_apply_head) + 24 + sizeof(lua_apply_tail)];
        snprintf(lua_apply, sizeof(lua_apply), "%s%lld%s", lua_apply_head, (long long) ix->ttl_ms,
                 lua_apply_tail);
        ix->script_apply = af_redis_script_add(co->redis, lua_apply);
        ix->script_sets = af_redis_script_add(co->redis, lua_sets);
        /* One group for the index of every coordinator; a new group starts at the earliest
         * offset (the process's kafka.auto.offset.reset), i.e. builds the index from scratch. */
        snprintf(group, sizeof(group), "%s-index", af_config_str(co->conf, "coordinator.group_id"));
        topics[0] = co->topic_results;
        ix->consumer = af_consumer_new(co->loop, co->conf, group, topics, 1, on_result, NULL, ix,
                                       errstr, errstr_size);
        if (!ix->consumer) {
                free(ix);
                return NULL;
        }
        if ((ix->epoch_timer = af_timer_new(co->loop, epoch_tick, ix)))
                af_timer_start(ix->epoch_timer, EPOCH_CHECK_MS, true);
        if ((ix->trim_timer = af_timer_new(co->loop, trim_tick, ix)))
                af_timer_start(ix->trim_timer, TRIM_FIRST_MS, false);
        return ix;
}

void af_index_destroy(af_index_t *ix) {
        if (!ix)
                return;
        af_timer_destroy(ix->epoch_timer);
        af_timer_destroy(ix->trim_timer);
        af_consumer_destroy(ix->consumer);
        own_reset(ix, false);
        free(ix);
}
