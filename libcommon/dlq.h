/*
 * dlq: dead letters. A message that cannot be processed (malformed, unknown type, forged,
 * past its attempts) is not dropped: it goes to the `dlq` topic as a DeadLetter carrying the
 * original bytes, where it came from and a precise reason, so an operator can fix and replay
 * it. Used by the coordinator's intake today and by workers for poison tasks.
 */
#ifndef AF_DLQ_H
#define AF_DLQ_H

#include <stddef.h>
#include <stdint.h>

#include "agentfleet/v1/dlq.pb-c.h"
#include "err.h"
#include "kafka.h"

/* What to dead-letter. Every pointer is borrowed for the duration of the call. */
typedef struct af_dlq_entry_s {
        const char *task_id; /* "" or NULL when unknown (undecodable) */
        const char *source_topic;
        int32_t source_partition;
        int64_t source_offset;
        const void *original; /* message value exactly as received */
        size_t original_len;
        const void *original_key;
        size_t original_key_len;
        const char *content_type; /* NULL when the message had none */
        const char *component;    /* "coordinator", "worker:<id>" */
        af_err_t err;             /* kind of failure (error.code = af_err2code) */
        bool retriable;           /* whether a replay as-is may succeed */
        const char *reason;       /* precise, human */
        int32_t attempts;
        char content_type_buf[128]; /* storage for af_dlq_entry_from_msg() */
} af_dlq_entry_t;

/* Fill e's source fields (topic, partition, offset, key, value, content-type header) from a
 * consumed message; the rest is zeroed. e borrows msg's memory: use it inside the consume
 * callback only. */
void af_dlq_entry_from_msg(af_dlq_entry_t *e, const af_kafka_msg_t *msg);

/* Encode e as a DeadLetter with a new id (written to id_out when not NULL).
 * @returns the packed bytes (caller frees) with *lenp set, or NULL on OOM. */
uint8_t *af_dlq_pack(const af_dlq_entry_t *e, size_t *lenp, char id_out[27]);

/* Kafka refused the record as too large (AF_ERR_TOO_LARGE, at send or in the report): drop
 * the original bytes from e and say so in its reason, which names where the original stays
 * readable while its topic retains it. The new reason is malloc'ed into *reason_out (NULL on
 * OOM: e keeps its reason); e->reason points at it, the caller frees it after the send.
 * @returns false when e had no original to drop (then nothing smaller can be sent). */
bool af_dlq_omit_original(af_dlq_entry_t *e, const char *dlq_topic, char **reason_out);

/* Produce e to `topic` (the full dlq topic name), keyed by the task id when known, else by the
 * original key, with content-type application/x-protobuf. cb (may be NULL) gets the delivery
 * report on the loop thread. @returns what af_producer_send returns (AF_ERR_NOMEM too). */
af_err_t af_dlq_send(af_producer_t *p, const char *topic, const af_dlq_entry_t *e,
                     af_delivery_cb_t *cb, void *opaque, char *errstr, size_t errstr_size);

#endif
