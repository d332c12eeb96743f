/*
 * kafka: librdkafka producer and consumer served by the process's one libevent loop.
 *
 * Every Kafka message agentfleet writes (tasks, results, audit, dlq, events) leaves through
 * an af_producer_t and every one it reads arrives through an af_consumer_t, so the rules
 * that make at-least-once delivery with effectively-once effects hold are written once here:
 * the idempotent producer with acks=all and one delivery report per message, offsets stored
 * only when the caller says every earlier one is done, a synchronous commit before a
 * partition is given away, and a hold that stops delivery without skipping anything.
 *
 * Both handles plug into the loop the same way (TRAPS.md): librdkafka writes a byte into a
 * non-blocking pipe when its queue goes from empty to non-empty; the loop reads the pipe and
 * polls until the queue is empty. A periodic timer polls too, because the pipe only fires on
 * that transition and an idle consumer must still poll to stay in its group. librdkafka's own
 * logs are routed onto the same queue (log.queue), so every callback here, and every user
 * callback, runs on the loop thread.
 *
 * The consumer keeps messages and events apart: every assigned partition's fetch queue is
 * forwarded to a message queue of our own (msgq), so the consumer queue carries only
 * rebalances, errors, logs and statistics. Events are served always; msgq is read only while
 * the caller does not hold the consumer. A hold is therefore cheap: no pause, which in
 * librdkafka rewinds the fetch position to the last message handed out and so fetches
 * everything pre-fetched a second time after resume; what was pre-fetched simply waits in
 * msgq, bounded by the pre-fetch limits (queued.*, see af_consumer_new).
 */
#include "kafka.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define AF_KAFKA_POLL_MS     100   /* periodic poll of the queues */
#define AF_KAFKA_BATCH       1000  /* messages (or events) served per loop turn before yielding */
#define AF_KAFKA_SHUTDOWN_MS 10000 /* flush bound on destroy / commit bound on close */

/* ---- shared plumbing ------------------------------------------------------------------------ */

/* The fd + timer pair that serves one rd_kafka queue on the loop. */
typedef struct kafka_pump_s {
        int fds[2];             /* [0] read by the loop, [1] written by librdkafka */
        struct event *ev;       /* EV_READ|EV_PERSIST on fds[0] */
        af_timer_t *poll_timer; /* periodic poll, AF_KAFKA_POLL_MS */
        af_timer_t *kick;       /* zero-delay continuation after a full batch */
} kafka_pump_t;

char *af_kafka_topic(const af_config_t *conf, const char *suffix, char *out, size_t out_size) {
        const char *prefix = af_config_str(conf, "topic.prefix");
        snprintf(out, out_size, "%s%s", prefix ? prefix : "", suffix);
        return out;
}

/* @returns the af_err_t that best describes a librdkafka error, for retry decisions. */
static af_err_t kafka_err_map(rd_kafka_resp_err_t err) {
        switch (err) {
        case RD_KAFKA_RESP_ERR_NO_ERROR:
                return AF_OK;
        case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
        case RD_KAFKA_RESP_ERR__TIMED_OUT:
        case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
                return AF_ERR_TIMEOUT;
        case RD_KAFKA_RESP_ERR__TRANSPORT:
        case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
        case RD_KAFKA_RESP_ERR__RESOLVE:
                return AF_ERR_TRANSPORT;
        case RD_KAFKA_RESP_ERR__QUEUE_FULL:
                return AF_ERR_UNAVAILABLE;
        case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
                return AF_ERR_TOO_LARGE;
        case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
        case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
                return AF_ERR_NOT_FOUND;
        case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
        case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
        case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
                return AF_ERR_FORBIDDEN;
        case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
        case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
                return AF_ERR_CANCELLED;
        case RD_KAFKA_RESP_ERR__STATE:
                return AF_ERR_STATE;
        case RD_KAFKA_RESP_ERR__INVALID_ARG:
                return AF_ERR_INVALID;
        case RD_KAFKA_RESP_ERR__FATAL:
                return AF_ERR_INTERNAL;
        default:
                return AF_ERR_UNAVAILABLE;
        }
}

/* librdkafka's log lines, served from the queue on the loop thread (log.queue=true). */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
        /* syslog levels; librdkafka reports a refused connection at LOG_ERR, which is a
         * warning for us: it reconnects by itself. */
        af_log_level_t lvl = level <= 2   ? AF_LOG_ERROR
                             : level <= 4 ? AF_LOG_WARN
                             : level <= 6 ? AF_LOG_INFO
                                          : AF_LOG_DEBUG;
        /* One kafka.* section configures both clients, so a consumer-only key reaching the
         * producer (and the reverse) is expected, not worth a warning. */
        if (!strcmp(fac, "CONFWARN") && strstr(buf, "will be ignored by this"))
                lvl = AF_LOG_DEBUG;
        af_log(lvl, "kafka %s: %s: %s", rd_kafka_name(rk), fac, buf);
}

/* Client-level errors: brokers down, auth, fatal idempotence errors. librdkafka recovers
 * from transport errors by itself, so these are logged, not acted on, unless fatal. */
static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
        if (err == RD_KAFKA_RESP_ERR__FATAL) {
                char fatal[512];
                rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
                af_error("kafka %s: fatal error: %s: %s", rd_kafka_name(rk),
                         rd_kafka_err2name(orig), fatal);
        } else {
                af_warn("kafka %s: %s: %s", rd_kafka_name(rk),
                        rd_kafka_err2name((rd_kafka_resp_err_t) err), reason);
        }
}

static af_err_t conf_set(rd_kafka_conf_t *kconf, const char *key, const char *value, char *errstr,
                         size_t errstr_size) {
        char kerr[512];
        if (rd_kafka_conf_set(kconf, key, value, kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK)
                return af_errstr(AF_ERR_CONFIG, errstr, errstr_size, "kafka.%s: %s", key, kerr);
        return AF_OK;
}

typedef struct conf_apply_s {
        rd_kafka_conf_t *kconf;
        af_err_t err;
        char errstr[512];
} conf_apply_t;

static void conf_apply_cb(const char *key, const char *value, void *opaque) {
        conf_apply_t *ca = opaque;
        if (ca->err == AF_OK)
                ca->err = conf_set(ca->kconf, key, value, ca->errstr, sizeof(ca->errstr));
}

/* Build a librdkafka config: our defaults first, then every kafka.* setting, then what
 * must hold for our guarantees (forced). Each list is key, value pairs ending in NULL.
 * @returns a conf the caller owns, or NULL with errstr naming the offending key. */
static rd_kafka_conf_t *kafka_conf_build(const af_config_t *conf, const char *const *defaults,
                                         const char *const *forced, char *errstr,
                                         size_t errstr_size) {
        rd_kafka_conf_t *kconf = rd_kafka_conf_new();
        conf_apply_t ca = {.kconf = kconf, .err = AF_OK};
        const char *bootstrap = af_config_str(conf, "kafka.bootstrap.servers");
        size_t i;

        if (bootstrap && conf_set(kconf, "bootstrap.servers", bootstrap, errstr, errstr_size))
                goto fail;
        for (i = 0; defaults[i]; i += 2)
                if (conf_set(kconf, defaults[i], defaults[i + 1], errstr, errstr_size))
                        goto fail;
        af_config_kafka_foreach(conf, conf_apply_cb, &ca);
        if (ca.err) {
                af_errstr(ca.err, errstr, errstr_size, "%s", ca.errstr);
                goto fail;
        }
        for (i = 0; forced[i]; i += 2)
                if (conf_set(kconf, forced[i], forced[i + 1], errstr, errstr_size))
                        goto fail;
        rd_kafka_conf_set_log_cb(kconf, kafka_log_cb);
        rd_kafka_conf_set_error_cb(kconf, kafka_error_cb);
        return kconf;
fail:
        rd_kafka_conf_destroy(kconf);
        return NULL;
}

static void pump_drain_pipe(kafka_pump_t *pump) {
        char junk[256];
        while (read(pump->fds[0], junk, sizeof(junk)) > 0)
                ;
}

/* Wire a queue's io events into the loop. cb gets arg on every fd event and timer tick.
 * @returns AF_OK or an error with errstr; on error the caller calls pump_fini(). */
static af_err_t pump_init(kafka_pump_t *pump, af_loop_t *loop, rd_kafka_queue_t *q,
                          event_callback_fn fd_cb, af_timer_cb_t *timer_cb, void *arg, char *errstr,
                          size_t errstr_size) {
        af_err_t err = AF_OK;

        pump->fds[0] = pump->fds[1] = -1;
        /* Non-blocking on both ends: a blocking write end can stall librdkafka while it
         * holds a queue lock (TRAPS.md, librdkafka #2932). */
        if (pipe2(pump->fds, O_NONBLOCK | O_CLOEXEC) < 0) {
                err = af_errstr(AF_ERR_INTERNAL, errstr, errstr_size, "pipe: %s", strerror(errno));
                goto out;
        }
        pump->ev = event_new(af_loop_base(loop), pump->fds[0], EV_READ | EV_PERSIST, fd_cb, arg);
        pump->poll_timer = af_timer_new(loop, timer_cb, arg);
        pump->kick = af_timer_new(loop, timer_cb, arg);
        if (!pump->ev || !pump->poll_timer || !pump->kick || event_add(pump->ev, NULL) < 0) {
                err = af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "cannot add kafka events");
                goto out;
        }
        rd_kafka_queue_io_event_enable(q, pump->fds[1], "1", 1);
        af_timer_start(pump->poll_timer, AF_KAFKA_POLL_MS, true /*repeat*/);
out:
        return err;
}

/* Stop serving: the queue must no longer write into the pipe (io events disabled). */
static void pump_fini(kafka_pump_t *pump) {
        if (pump->ev)
                event_free(pump->ev);
        pump->ev = NULL;
        af_timer_destroy(pump->poll_timer);
        pump->poll_timer = NULL;
        af_timer_destroy(pump->kick);
        pump->kick = NULL;
        for (int i = 0; i < 2; i++) {
                if (pump->fds[i] >= 0)
                        close(pump->fds[i]);
                pump->fds[i] = -1;
        }
}

/* ---- producer ------------------------------------------------------------------------------- */

struct af_producer_s {
        rd_kafka_t *rk;
        rd_kafka_queue_t *mainq; /* where delivery reports, logs and errors arrive */
        kafka_pump_t pump;
        int outq;             /* accepted sends whose report has not been served yet */
        bool flush_timed_out; /* a flush already waited in vain: destroy does not wait again */
};

/* What travels with each message as its opaque, freed when its report is served. */
typedef struct producer_dr_s {
        af_delivery_cb_t *cb;
        void *opaque;
} producer_dr_t;

/* One delivery report; runs inside rd_kafka_poll() on the loop thread. */
static void producer_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
        af_producer_t *p = opaque;
        producer_dr_t *dr = rkm->_private;

        p->outq--;
        if (!dr)
                return;
        af_err_t err = kafka_err_map(rkm->err);
        /* A message sent whose acknowledgement never came (message.timeout.ms) may be in the
         * log all the same: a caller must not act as if it were not. */
        if (err && rd_kafka_message_status(rkm) == RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED)
                err = AF_ERR_IN_DOUBT;
        dr->cb(err, rkm->err ? rd_kafka_err2str(rkm->err) : NULL, rkm->partition,
               rkm->err ? -1 : rkm->offset, dr->opaque);
        free(dr);
}

/* Serve everything queued (delivery reports, logs, errors) until the queue is empty. */
static void producer_serve(af_producer_t *p) {
        while (rd_kafka_poll(p->rk, 0) > 0)
                ;
}

static void producer_fd_cb(evutil_socket_t fd, short what, void *arg) {
        af_producer_t *p = arg;
        pump_drain_pipe(&p->pump);
        producer_serve(p);
}

static void producer_timer_cb(void *arg) {
        producer_serve(arg);
}

af_producer_t *af_producer_new(af_loop_t *loop, const af_config_t *conf, char *errstr,
                               size_t errstr_size) {
        /* clang-format off */
        static const char *const defaults[] = {
                "client.id", "agentfleet",
                "acks", "all",
                /* Every message we produce is small and every task produces several, to
                 * partitions spread by key; librdkafka 2.0 sends one request per partition
                 * batch, and on a small broker the per-request cost dominates. 20 ms cuts the
                 * broker's CPU per task by about half against 5 ms (bench/run) and stays far
                 * below a handler's own latency. */
                "linger.ms", "20",
                "compression.type", "lz4",
                NULL,
        };
        /* clang-format on */
        /* Idempotence is what makes a retried send land once and in order: not optional. */
        /* clang-format off */
        static const char *const forced[] = {
                "enable.idempotence", "true",
                "log.queue", "true",
                NULL,
        };
        /* clang-format on */
        af_producer_t *p = calloc(1, sizeof(*p));
        rd_kafka_conf_t *kconf = NULL;
        char kerr[512];

        if (!p) {
                af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                goto fail;
        }
        p->pump.fds[0] = p->pump.fds[1] = -1;
        kconf = kafka_conf_build(conf, defaults, forced, errstr, errstr_size);
        if (!kconf)
                goto fail;
        rd_kafka_conf_set_dr_msg_cb(kconf, producer_dr_cb);
        rd_kafka_conf_set_opaque(kconf, p);
        p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kconf, kerr, sizeof(kerr));
        if (!p->rk) {
                af_errstr(AF_ERR_CONFIG, errstr, errstr_size, "kafka producer: %s", kerr);
                goto fail;
        }
        kconf = NULL; /* owned by rk now */
        rd_kafka_set_log_queue(p->rk, NULL /*main queue*/);
        p->mainq = rd_kafka_queue_get_main(p->rk);
        if (pump_init(&p->pump, loop, p->mainq, producer_fd_cb, producer_timer_cb, p, errstr,
                      errstr_size))
                goto fail;
        return p;
fail:
        if (kconf)
                rd_kafka_conf_destroy(kconf);
        af_producer_destroy(p);
        return NULL;
}

af_err_t af_producer_send(af_producer_t *p, const char *topic, int32_t partition, const void *key,
                          size_t key_len, const void *value, size_t value_len,
                          const af_kafka_header_t *hdrs, size_t hdr_cnt, af_delivery_cb_t *cb,
                          void *opaque, char *errstr, size_t errstr_size) {
        rd_kafka_headers_t *kh = NULL;
        producer_dr_t *dr = NULL;
        rd_kafka_resp_err_t kerr;
        af_err_t err = AF_OK;

        if (!topic || !*topic || !cb) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "af_producer_send: topic and delivery callback are required");
                goto out;
        }
        dr = malloc(sizeof(*dr));
        if (!dr) {
                err = af_errstr(AF_ERR_UNAVAILABLE, errstr, errstr_size, "out of memory");
                goto out;
        }
        dr->cb = cb;
        dr->opaque = opaque;
        if (hdr_cnt) {
                kh = rd_kafka_headers_new(hdr_cnt);
                for (size_t i = 0; i < hdr_cnt; i++)
                        rd_kafka_header_add(kh, hdrs[i].name, -1, hdrs[i].value,
                                            (ssize_t) hdrs[i].len);
        }
        kerr = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                                 RD_KAFKA_V_KEY(key, key_len),
                                 RD_KAFKA_V_VALUE((void *) value, value_len),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(kh),
                                 RD_KAFKA_V_OPAQUE(dr), RD_KAFKA_V_END);
        if (kerr) {
                /* Queue full is back-pressure: the caller waits for reports and retries. Too
                 * large (over message.max.bytes) is told apart: retrying never helps, and the
                 * caller may send something smaller instead, as when the broker refuses it. */
                err = kerr == RD_KAFKA_RESP_ERR__QUEUE_FULL || kerr == RD_KAFKA_RESP_ERR__FATAL
                              ? AF_ERR_UNAVAILABLE
                      : kerr == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? AF_ERR_TOO_LARGE
                                                                     : AF_ERR_INVALID;
                af_errstr(err, errstr, errstr_size, "produce to %s: %s", topic,
                          rd_kafka_err2str(kerr));
                goto out;
        }
        kh = NULL; /* owned by the message now */
        dr = NULL; /* freed by producer_dr_cb */
        p->outq++;
out:
        if (kh)
                rd_kafka_headers_destroy(kh);
        free(dr);
        return err;
}

af_err_t af_producer_send_pb(af_producer_t *p, const char *topic, const char *key,
                             const void *value, size_t value_len, const char *traceparent,
                             af_delivery_cb_t *cb, void *opaque, char *errstr, size_t errstr_size) {
        static const char ct[] = "application/x-protobuf";
        af_kafka_header_t hdrs[2] = {{"content-type", ct, sizeof(ct) - 1}};
        size_t n = 1;
        size_t key_len = key ? strlen(key) : 0;

        if (traceparent && *traceparent)
                hdrs[n++] = (af_kafka_header_t){"traceparent", traceparent, strlen(traceparent)};
        return af_producer_send(p, topic, -1 /*by key*/, key_len ? key : NULL, key_len, value,
                                value_len, hdrs, n, cb, opaque, errstr, errstr_size);
}

int af_producer_outq_len(af_producer_t *p) {
        return p->outq;
}

af_err_t af_producer_flush(af_producer_t *p, int timeout_ms) {
        /* rd_kafka_flush() polls the main queue itself, so reports are served here. */
        rd_kafka_resp_err_t kerr = rd_kafka_flush(p->rk, timeout_ms);
        producer_serve(p);
        p->flush_timed_out = kerr || p->outq > 0;
        return p->flush_timed_out ? AF_ERR_TIMEOUT : AF_OK;
}

void af_producer_destroy(af_producer_t *p) {
        if (!p)
                return;
        if (p->rk) {
                /* A flush that already timed out (the caller's drain) is not waited out again. */
                int wait_ms = p->flush_timed_out ? 0 : AF_KAFKA_SHUTDOWN_MS;
                if (af_producer_flush(p, wait_ms) && wait_ms)
                        af_warn("kafka producer: %d messages not delivered within %d ms; "
                                "purging them",
                                p->outq, wait_ms);
                else if (p->outq)
                        af_warn("kafka producer: %d messages still undelivered after the earlier "
                                "flush timed out; purging them",
                                p->outq);
                /* What could not be delivered is reported as cancelled, so every accepted
                 * send still gets its one report and its opaque back. */
                rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
                rd_kafka_flush(p->rk, 1000);
                producer_serve(p);
                rd_kafka_queue_io_event_enable(p->mainq, -1, NULL, 0);
        }
        pump_fini(&p->pump);
        if (p->mainq)
                rd_kafka_queue_destroy(p->mainq);
        if (p->rk)
                rd_kafka_destroy(p->rk);
        free(p);
}

rd_kafka_t *af_producer_rk(af_producer_t *p) {
        return p->rk;
}

/* ---- consumer ------------------------------------------------------------------------------- */

struct af_consumer_s {
        rd_kafka_t *rk;
        rd_kafka_queue_t *q;    /* the consumer queue: rebalances, errors, logs, statistics */
        rd_kafka_queue_t *msgq; /* every assigned partition's messages, forwarded here */
        kafka_pump_t pump;      /* one pipe wakes the loop for both queues */
        af_consume_cb_t *cb;
        af_rebalance_cb_t *rebalance_cb;
        void *opaque;
        bool held; /* af_consumer_hold(true): msgq is not read */
        bool closed;
        bool in_drain;         /* guards against re-entering consumer_drain */
        int64_t fetched_msgs;  /* librdkafka's "rxmsgs" at its last statistics report */
        int64_t fetched_bytes; /* its "rxmsg_bytes" (keys + values) */
};

const void *af_kafka_msg_header(const af_kafka_msg_t *msg, const char *name, size_t *lenp) {
        rd_kafka_headers_t *kh = NULL;
        const void *val = NULL;
        size_t len = 0;

        if (!msg->rkm || rd_kafka_message_headers(msg->rkm, &kh) != RD_KAFKA_RESP_ERR_NO_ERROR)
                return NULL;
        if (rd_kafka_header_get_last(kh, name, &val, &len) != RD_KAFKA_RESP_ERR_NO_ERROR)
                return NULL;
        if (lenp)
                *lenp = len;
        return val ? val : "";
}

static void consumer_deliver(af_consumer_t *c, rd_kafka_message_t *rkm) {
        af_kafka_msg_t msg = {
                .topic = rd_kafka_topic_name(rkm->rkt),
                .partition = rkm->partition,
                .offset = rkm->offset,
                .key = rkm->key,
                .key_len = rkm->key_len,
                .value = rkm->payload,
                .value_len = rkm->len,
                .timestamp_ms = rd_kafka_message_timestamp(rkm, NULL),
                .rkm = rkm,
        };
        c->cb(c, &msg, c->opaque);
}

/* Rewind rkm's partition to rkm so that it is fetched again rather than lost: for a message
 * that must not be delivered now. Asynchronous; a failure is logged. */
static void consumer_rewind(af_consumer_t *c, const rd_kafka_message_t *rkm) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_error_t *error;

        rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(rkm->rkt), rkm->partition)
                ->offset = rkm->offset;
        error = rd_kafka_seek_partitions(c->rk, l, 0 /*async*/);
        if (error) {
                af_error("kafka consumer: rewinding %s [%d] to %lld: %s",
                         rd_kafka_topic_name(rkm->rkt), (int) rkm->partition,
                         (long long) rkm->offset, rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
        }
        rd_kafka_topic_partition_list_destroy(l);
}

/* Handle one message or error polled from either queue; takes rkm.
 * @returns true when a message was delivered to the caller. */
static bool consumer_handle(af_consumer_t *c, rd_kafka_message_t *rkm) {
        bool delivered = false;

        if (rkm->err) {
                if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                        af_warn("kafka consumer: %s [%d]: %s",
                                rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "-",
                                (int) rkm->partition, rd_kafka_message_errstr(rkm));
        } else if (c->held) {
                /* Only a message on the consumer queue can reach here (msgq is not read while
                 * held), and only if a partition could not be routed to msgq: fetch it
                 * again after resume rather than deliver it now. */
                consumer_rewind(c, rkm);
        } else {
                consumer_deliver(c, rkm);
                delivered = true;
        }
        rd_kafka_message_destroy(rkm);
        return delivered;
}

/* Serve the consumer queue (events), then msgq (messages) unless held, each up to a batch; a
 * full batch yields to the loop and continues from a zero-delay timer, since the pipe will not
 * fire again while the queue stays non-empty. */
static void consumer_drain(af_consumer_t *c) {
        rd_kafka_message_t *rkm;
        int events = 0, delivered = 0;

        if (c->closed || c->in_drain)
                return;
        c->in_drain = true;
        /* Events always, held or not: they run the rebalance callback, and polling the
         * consumer queue is the poll that max.poll.interval.ms asks for (librdkafka 2.0.2
         * rd_kafka_consume0 marks the application polled even when nothing is returned). */
        while (!c->closed && events < AF_KAFKA_BATCH && (rkm = rd_kafka_consumer_poll(c->rk, 0))) {
                consumer_handle(c, rkm);
                events++;
        }
        /* The caller may hold from inside its callback: stop reading msgq at once then. A
         * revoked partition's messages still in msgq are not returned: revoking bumps the
         * partition's op version and rd_kafka_consume_queue() drops older ops, as
         * rd_kafka_consumer_poll() does for its own queue (librdkafka 2.0.2
         * rd_kafka_toppar_op_fetch_stop, rd_kafka_op_version_outdated). */
        while (!c->closed && !c->held && delivered < AF_KAFKA_BATCH) {
                rkm = rd_kafka_consume_queue(c->msgq, 0);
                if (!rkm)
                        break;
                if (consumer_handle(c, rkm))
                        delivered++;
        }
        if (!c->closed && (events >= AF_KAFKA_BATCH || (!c->held && delivered >= AF_KAFKA_BATCH)))
                af_timer_start(c->pump.kick, 0, false);
        c->in_drain = false;
}

static void consumer_fd_cb(evutil_socket_t fd, short what, void *arg) {
        af_consumer_t *c = arg;
        pump_drain_pipe(&c->pump);
        consumer_drain(c);
}

static void consumer_timer_cb(void *arg) {
        consumer_drain(arg);
}

/* Forward the partitions' fetch queues to msgq. Before they are assigned: a fetcher that
 * starts on a partition the application has not forwarded forwards it to the consumer queue
 * (librdkafka 2.0.2 rd_kafka_toppar_op_fetch_start, RD_KAFKA_Q_F_FWD_APP), where a message
 * would arrive even while held. On every assignment, because stopping a fetcher (revoke)
 * removes the forward (rd_kafka_toppar_fetch_stop). */
static void consumer_route(af_consumer_t *c, const rd_kafka_topic_partition_list_t *parts) {
        for (int i = 0; i < parts->cnt; i++) {
                rd_kafka_queue_t *partq = rd_kafka_queue_get_partition(c->rk, parts->elems[i].topic,
                                                                       parts->elems[i].partition);
                if (!partq) {
                        /* Out of memory in librdkafka: its messages then come through the
                         * consumer queue, where consumer_handle() still honours the hold. */
                        af_error("kafka consumer: no queue for %s [%d]", parts->elems[i].topic,
                                 (int) parts->elems[i].partition);
                        continue;
                }
                rd_kafka_queue_forward(partq, c->msgq);
                rd_kafka_queue_destroy(partq);
        }
}

/* Runs inside rd_kafka_consumer_poll() (loop thread) on every group rebalance. */
static void consumer_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                  rd_kafka_topic_partition_list_t *parts, void *opaque) {
        af_consumer_t *c = opaque;
        rd_kafka_error_t *error = NULL;
        rd_kafka_resp_err_t kerr = RD_KAFKA_RESP_ERR_NO_ERROR;
        /* Known only once the group has chosen an assignor: "NONE" before the first join. */
        bool cooperative = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");

        switch (err) {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
                af_info("kafka consumer: %d partitions assigned", parts->cnt);
                if (c->rebalance_cb)
                        c->rebalance_cb(c, true, parts, c->opaque);
                consumer_route(c, parts);
                if (cooperative)
                        error = rd_kafka_incremental_assign(rk, parts);
                else
                        kerr = rd_kafka_assign(rk, parts);
                break;
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
                af_info("kafka consumer: %d partitions revoked", parts->cnt);
                if (c->rebalance_cb)
                        c->rebalance_cb(c, false, parts, c->opaque);
                /* What msgq still holds of these partitions is never delivered: the unassign
                 * below makes it outdated (see consumer_drain). */
                /* The next owner starts at the committed offset: commit what the caller
                 * stored before letting go, synchronously. */
                if (!rd_kafka_assignment_lost(rk)) {
                        kerr = rd_kafka_commit(rk, NULL, 0 /*sync*/);
                        if (kerr && kerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
                                af_warn("kafka consumer: commit on revoke: %s",
                                        rd_kafka_err2str(kerr));
                        kerr = RD_KAFKA_RESP_ERR_NO_ERROR;
                }
                if (cooperative)
                        error = rd_kafka_incremental_unassign(rk, parts);
                else
                        kerr = rd_kafka_assign(rk, NULL);
                break;
        default:
                af_warn("kafka consumer: rebalance error: %s", rd_kafka_err2str(err));
                if (cooperative)
                        error = rd_kafka_incremental_unassign(rk, parts);
                else
                        kerr = rd_kafka_assign(rk, NULL);
                break;
        }
        if (error) {
                af_error("kafka consumer: (un)assign: %s", rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
        } else if (kerr) {
                af_error("kafka consumer: (un)assign: %s", rd_kafka_err2str(kerr));
        }
}

/* Async commit results (auto-commit included): failures are worth a line, never fatal;
 * the next commit carries the same offsets again. */
static void consumer_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t *offsets, void *opaque) {
        if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
                af_warn("kafka consumer: offset commit: %s", rd_kafka_err2str(err));
}

/* librdkafka's statistics (only with kafka.statistics.interval.ms), served from the consumer
 * queue on the loop thread: keep the fetch totals for af_consumer_fetch_stats().
 * @returns 0: librdkafka frees json. */
static int consumer_stats_cb(rd_kafka_t *rk, char *json, size_t json_len, void *opaque) {
        af_consumer_t *c = opaque;
        json_t *root = json_loadb(json, json_len, 0, NULL);

        if (root) {
                c->fetched_msgs = json_integer_value(json_object_get(root, "rxmsgs"));
                c->fetched_bytes = json_integer_value(json_object_get(root, "rxmsg_bytes"));
                json_decref(root);
        }
        return 0;
}

af_consumer_t *af_consumer_new(af_loop_t *loop, const af_config_t *conf, const char *group_id,
                               const char *const *topics, size_t topic_cnt, af_consume_cb_t *cb,
                               af_rebalance_cb_t *rebalance_cb, void *opaque, char *errstr,
                               size_t errstr_size) {
        /* range, not cooperative-sticky: librdkafka 2.0.2's cooperative protocol has
         * ownership and close bugs fixed only in 2.1/2.2 (TRAPS.md). The rebalance callback
         * still branches on the protocol, so kafka.partition.assignment.strategy may pick
         * cooperative-sticky on a newer librdkafka. */
        /* clang-format off */
        static const char *const defaults[] = {
                "client.id", "agentfleet",
                "enable.auto.commit", "true",
                "auto.commit.interval.ms", "1000",
                "session.timeout.ms", "10000",
                /* Members learn of a rebalance at their next heartbeat: with workers joining
                 * one after another, each round waits for it (librdkafka's 3 s default made a
                 * fresh fleet idle ~5 s before its first task). */
                "heartbeat.interval.ms", "1000",
                "partition.assignment.strategy", "range",
                /* A new group must see tasks produced before it joined. */
                "auto.offset.reset", "earliest",
                /* Bounds how long a partition that becomes fetchable (assigned, or its queue
                 * drained below the limits below) waits behind an idle long-poll fetch to
                 * the same broker. */
                "fetch.wait.max.ms", "100",
                /* Pre-fetch limits, i.e. what a held consumer piles up in msgq. librdkafka
                 * 2.0.2 checks them before each fetch against the queue the partitions
                 * forward to, so they bound all partitions together
                 * (rd_kafka_toppar_fetch_decide), and one fetch may overshoot them by
                 * fetch.max.bytes of compressed batches, which librdkafka lowers to
                 * queued.max.messages.kbytes (not below message.max.bytes, 1 MB). With its
                 * defaults (100000 messages, 64 MB) a consumer held over bench/run's 30000
                 * Tasks grew by 33 MB; with 1 MB, by ~5 MB (~4300 Tasks of ~1.2 KB with
                 * librdkafka's overhead). The fetcher notices that a full queue
                 * drained only on its next pass, within a second at worst, so the limit must
                 * hold more than a second of a worker's peak rate (~2500 Tasks/s): 4 MB is
                 * ~7000 Tasks. Raise
                 * kafka.queued.max.messages.kbytes for much faster handlers. */
                "queued.max.messages.kbytes", "4096",
                "queued.min.messages", "10000",
                NULL,
        };
        /* clang-format on */
        /* Offsets are stored only when the caller says every earlier one is done. */
        /* clang-format off */
        static const char *const forced[] = {
                "enable.auto.offset.store", "false",
                "log.queue", "true",
                NULL,
        };
        /* clang-format on */
        af_consumer_t *c = calloc(1, sizeof(*c));
        rd_kafka_conf_t *kconf = NULL;
        rd_kafka_topic_partition_list_t *subs = NULL;
        rd_kafka_resp_err_t kerr;
        char kerrstr[512];

        if (!c) {
                af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                goto fail;
        }
        c->pump.fds[0] = c->pump.fds[1] = -1;
        c->cb = cb;
        c->rebalance_cb = rebalance_cb;
        c->opaque = opaque;
        if (!group_id || !*group_id || !topic_cnt || !cb) {
                af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                          "kafka consumer: group id, topics and callback are required");
                goto fail;
        }
        kconf = kafka_conf_build(conf, defaults, forced, errstr, errstr_size);
        if (!kconf)
                goto fail;
        if (conf_set(kconf, "group.id", group_id, errstr, errstr_size))
                goto fail;
        rd_kafka_conf_set_rebalance_cb(kconf, consumer_rebalance_cb);
        rd_kafka_conf_set_offset_commit_cb(kconf, consumer_commit_cb);
        rd_kafka_conf_set_stats_cb(kconf, consumer_stats_cb);
        rd_kafka_conf_set_opaque(kconf, c);
        c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, kconf, kerrstr, sizeof(kerrstr));
        if (!c->rk) {
                af_errstr(AF_ERR_CONFIG, errstr, errstr_size, "kafka consumer: %s", kerrstr);
                goto fail;
        }
        kconf = NULL; /* owned by rk now */
        rd_kafka_set_log_queue(c->rk, NULL /*main queue, forwarded below*/);
        /* Events (main queue: logs, errors, statistics; rebalances) into the consumer queue;
         * messages into msgq, partition by partition as they are assigned. */
        rd_kafka_poll_set_consumer(c->rk);
        c->q = rd_kafka_queue_get_consumer(c->rk);
        c->msgq = rd_kafka_queue_new(c->rk);
        if (!c->msgq) {
                af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                goto fail;
        }
        if (pump_init(&c->pump, loop, c->q, consumer_fd_cb, consumer_timer_cb, c, errstr,
                      errstr_size))
                goto fail;
        rd_kafka_queue_io_event_enable(c->msgq, c->pump.fds[1], "1", 1);

        subs = rd_kafka_topic_partition_list_new((int) topic_cnt);
        for (size_t i = 0; i < topic_cnt; i++)
                rd_kafka_topic_partition_list_add(subs, topics[i], RD_KAFKA_PARTITION_UA);
        kerr = rd_kafka_subscribe(c->rk, subs);
        if (kerr) {
                af_errstr(kafka_err_map(kerr), errstr, errstr_size, "kafka subscribe: %s",
                          rd_kafka_err2str(kerr));
                goto fail;
        }
        rd_kafka_topic_partition_list_destroy(subs);
        return c;
fail:
        if (subs)
                rd_kafka_topic_partition_list_destroy(subs);
        if (kconf)
                rd_kafka_conf_destroy(kconf);
        af_consumer_destroy(c);
        return NULL;
}

af_err_t af_consumer_store_offset(af_consumer_t *c, const char *topic, int32_t partition,
                                  int64_t next_offset) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_add(l, topic, partition);
        rd_kafka_resp_err_t kerr;

        tp->offset = next_offset;
        kerr = rd_kafka_offsets_store(c->rk, l);
        if (!kerr)
                kerr = tp->err;
        rd_kafka_topic_partition_list_destroy(l);
        /* __STATE: assigned once, revoked since; __UNKNOWN_PARTITION: never assigned here.
         * Either way the partition is not ours and the offset belongs to its next owner. */
        if (kerr == RD_KAFKA_RESP_ERR__STATE || kerr == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION)
                return AF_ERR_STATE;
        if (kerr)
                af_warn("kafka consumer: store offset %s [%d] @%lld: %s", topic, (int) partition,
                        (long long) next_offset, rd_kafka_err2str(kerr));
        return kafka_err_map(kerr);
}

af_err_t af_consumer_commit(af_consumer_t *c, bool sync) {
        rd_kafka_resp_err_t kerr;

        if (c->closed)
                return AF_ERR_STATE;
        kerr = rd_kafka_commit(c->rk, NULL, sync ? 0 : 1 /*async*/);
        if (kerr == RD_KAFKA_RESP_ERR__NO_OFFSET) /* nothing new stored: nothing to do */
                kerr = RD_KAFKA_RESP_ERR_NO_ERROR;
        if (kerr)
                af_warn("kafka consumer: commit: %s", rd_kafka_err2str(kerr));
        return kafka_err_map(kerr);
}

void af_consumer_hold(af_consumer_t *c, bool hold) {
        if (c->closed || c->held == hold)
                return;
        c->held = hold;
        /* Held, consumer_drain stops reading msgq and librdkafka keeps fetching into it only
         * up to the pre-fetch limits. Resumed, deliver without waiting for a tick: msgq's
         * pipe stays quiet while it is non-empty. */
        if (!hold)
                af_timer_start(c->pump.kick, 0, false);
}

void af_consumer_fetch_stats(af_consumer_t *c, int64_t *msgs, int64_t *bytes) {
        if (msgs)
                *msgs = c->fetched_msgs;
        if (bytes)
                *bytes = c->fetched_bytes;
}

af_err_t af_consumer_close(af_consumer_t *c) {
        rd_kafka_resp_err_t kerr;

        if (c->closed)
                return AF_OK;
        /* Stop delivering: the close below serves the final revoke, not messages. */
        c->held = true;
        kerr = rd_kafka_commit(c->rk, NULL, 0 /*sync*/);
        if (kerr && kerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
                af_warn("kafka consumer: commit on close: %s", rd_kafka_err2str(kerr));
        kerr = rd_kafka_consumer_close(c->rk);
        c->closed = true;
        if (c->q)
                rd_kafka_queue_io_event_enable(c->q, -1, NULL, 0);
        if (c->msgq)
                rd_kafka_queue_io_event_enable(c->msgq, -1, NULL, 0);
        pump_fini(&c->pump);
        if (kerr)
                af_warn("kafka consumer: close: %s", rd_kafka_err2str(kerr));
        return kafka_err_map(kerr);
}

void af_consumer_destroy(af_consumer_t *c) {
        if (!c)
                return;
        if (c->rk && !c->closed)
                af_consumer_close(c);
        if (c->q && !c->closed)
                rd_kafka_queue_io_event_enable(c->q, -1, NULL, 0);
        if (c->msgq && !c->closed)
                rd_kafka_queue_io_event_enable(c->msgq, -1, NULL, 0);
        pump_fini(&c->pump);
        /* Before rd_kafka_destroy: the messages it still holds keep their partitions alive. */
        if (c->msgq)
                rd_kafka_queue_destroy(c->msgq);
        if (c->q)
                rd_kafka_queue_destroy(c->q);
        if (c->rk)
                rd_kafka_destroy(c->rk);
        free(c);
}

rd_kafka_t *af_consumer_rk(af_consumer_t *c) {
        return c->rk;
}
