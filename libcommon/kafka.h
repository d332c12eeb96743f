/*
 * kafka: librdkafka producer and consumer served by the process's one loop.
 *
 * Producer: idempotent (enable.idempotence=true, acks=all), delivery reports are served on
 * the loop (the main queue's io-event fd plus a periodic poll timer) and reach the caller's
 * callback exactly once per message, on the loop thread.
 *
 * Consumer: rd_kafka_poll_set_consumer(); every assigned partition's messages are forwarded
 * to a message queue of our own, so the consumer queue carries only events (rebalances,
 * errors, logs); both queues wake the loop through one io-event fd (non-blocking pipe), and a
 * periodic poll timer serves the events (TRAPS.md). enable.auto.offset.store=false, so an
 * offset is committed only after the caller says every earlier offset of its partition is
 * done (af_consumer_store_offset); stored offsets are committed by librdkafka's auto-commit
 * and synchronously on revoke and close.
 *
 * Topic names given here are full names (prefix included); af_kafka_topic() builds them.
 * Settings read: kafka.* (passed through), topic.prefix, kafka poll interval.
 */
#ifndef AF_KAFKA_H
#define AF_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"
#include "loop.h"

typedef struct af_producer_s af_producer_t;
typedef struct af_consumer_s af_consumer_t;

typedef struct af_kafka_header_s {
        const char *name;
        const void *value;
        size_t len;
} af_kafka_header_t;

/* Build "<topic.prefix><suffix>" into out; @returns out. */
char *af_kafka_topic(const af_config_t *conf, const char *suffix, char *out, size_t out_size);

/* ---- producer ----------------------------------------------------------------------------- */

/* Delivery report: err is AF_OK once the broker acknowledged (acks=all), else the reason:
 * AF_ERR_IN_DOUBT when the message was sent but no acknowledgement came in time (it may be in
 * the log), any other error when it surely is not. Called exactly once per accepted
 * af_producer_send(), from the loop thread. */
typedef void(af_delivery_cb_t)(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                               void *opaque);

af_producer_t *af_producer_new(af_loop_t *loop, const af_config_t *conf, char *errstr,
                               size_t errstr_size);
/* Queue a message (key, value and headers are copied). partition -1 = by key.
 * @returns AF_OK (cb will be called), or AF_ERR_UNAVAILABLE (retriable: local queue full)
 *          or AF_ERR_INVALID with errstr; cb is then not called. */
af_err_t af_producer_send(af_producer_t *p, const char *topic, int32_t partition, const void *key,
                          size_t key_len, const void *value, size_t value_len,
                          const af_kafka_header_t *hdrs, size_t hdr_cnt, af_delivery_cb_t *cb,
                          void *opaque, char *errstr, size_t errstr_size);
/* af_producer_send of one of our protobuf records, the way every record on our topics goes:
 * keyed (key NULL or "": none), partitioned by key, with the header content-type
 * application/x-protobuf and, when traceparent is non-empty, traceparent. */
af_err_t af_producer_send_pb(af_producer_t *p, const char *topic, const char *key,
                             const void *value, size_t value_len, const char *traceparent,
                             af_delivery_cb_t *cb, void *opaque, char *errstr, size_t errstr_size);
/* Messages queued but not yet reported. */
int af_producer_outq_len(af_producer_t *p);
/* Block up to timeout_ms serving delivery reports (shutdown only; not inside callbacks). */
af_err_t af_producer_flush(af_producer_t *p, int timeout_ms);
/* Flushes (bounded by kafka shutdown timeout), then frees. NULL is fine. */
void af_producer_destroy(af_producer_t *p);
rd_kafka_t *af_producer_rk(af_producer_t *p);

/* ---- consumer ----------------------------------------------------------------------------- */

typedef struct af_kafka_msg_s {
        const char *topic;
        int32_t partition;
        int64_t offset;
        const void *key;
        size_t key_len;
        const void *value;
        size_t value_len;
        int64_t timestamp_ms;
        rd_kafka_message_t *rkm; /* valid only during the callback */
} af_kafka_msg_t;

/* @returns a header's value (not NUL-terminated; *lenp set) or NULL. */
const void *af_kafka_msg_header(const af_kafka_msg_t *msg, const char *name, size_t *lenp);

/* A message, on the loop thread. msg and its memory are valid only during the call. */
typedef void(af_consume_cb_t)(af_consumer_t *c, const af_kafka_msg_t *msg, void *opaque);
/* Partitions assigned (assigned=true) or about to be revoked (false). On revoke the caller
 * stores what it can before returning; the consumer then commits synchronously and
 * unassigns. parts is valid only during the call. */
typedef void(af_rebalance_cb_t)(af_consumer_t *c, bool assigned,
                                const rd_kafka_topic_partition_list_t *parts, void *opaque);

af_consumer_t *af_consumer_new(af_loop_t *loop, const af_config_t *conf, const char *group_id,
                               const char *const *topics, size_t topic_cnt, af_consume_cb_t *cb,
                               af_rebalance_cb_t *rebalance_cb, void *opaque, char *errstr,
                               size_t errstr_size);
/* Mark offsets < next_offset of this partition done; committed with the next commit.
 * @returns AF_ERR_STATE if the partition is no longer assigned (ERR__STATE): not an error
 *          for the caller to act on beyond dropping its bookkeeping. */
af_err_t af_consumer_store_offset(af_consumer_t *c, const char *topic, int32_t partition,
                                  int64_t next_offset);
/* Commit stored offsets now. */
af_err_t af_consumer_commit(af_consumer_t *c, bool sync);
/* Stop (hold=true) or resume delivering messages, e.g. while the caller is at its concurrency
 * limit or draining. Held, the consumer stays in its group (rebalances are served) and keeps
 * what it pre-fetched, fetching more only up to librdkafka's pre-fetch limits (queued.*);
 * resumed, delivery continues from the first undelivered message without fetching anything
 * again. Nothing is skipped. Loop thread; may be called from inside the message callback. */
void af_consumer_hold(af_consumer_t *c, bool hold);
/* What this consumer has fetched from the brokers: messages and their key + value bytes as
 * librdkafka counts them on arrival (statistics "rxmsgs" and "rxmsg_bytes"; a message fetched
 * twice counts twice), as of its last statistics report, so 0 unless
 * kafka.statistics.interval.ms is set. Against what was delivered it shows refetching. */
void af_consumer_fetch_stats(af_consumer_t *c, int64_t *msgs, int64_t *bytes);
/* Commit synchronously and leave the group. Loop thread; blocks briefly. */
af_err_t af_consumer_close(af_consumer_t *c);
void af_consumer_destroy(af_consumer_t *c); /* closes if needed; NULL is fine */
rd_kafka_t *af_consumer_rk(af_consumer_t *c);

#endif
