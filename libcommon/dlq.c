/*
 * dlq: build and produce DeadLetter records (see dlq.h). The record keeps the original bytes
 * untouched, so a replay re-feeds exactly what the producer wrote.
 */
#include "dlq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "ids.h"

void af_dlq_entry_from_msg(af_dlq_entry_t *e, const af_kafka_msg_t *msg) {
        size_t ct_len = 0;
        const void *ct;

        memset(e, 0, sizeof(*e));
        e->source_topic = msg->topic;
        e->source_partition = msg->partition;
        e->source_offset = msg->offset;
        e->original = msg->value;
        e->original_len = msg->value_len;
        e->original_key = msg->key;
        e->original_key_len = msg->key_len;
        e->attempts = 1;
        ct = af_kafka_msg_header(msg, "content-type", &ct_len);
        if (ct) {
                /* Header bytes are not NUL-terminated and come from outside: bound them. */
                if (ct_len >= sizeof(e->content_type_buf))
                        ct_len = sizeof(e->content_type_buf) - 1;
                memcpy(e->content_type_buf, ct, ct_len);
                e->content_type_buf[ct_len] = '\0';
                e->content_type = e->content_type_buf;
        }
}

/* protobuf-c wants non-const char *; it never writes through them when packing. */
static char *nc(const char *s) {
        return (char *) (s ? s : "");
}

uint8_t *af_dlq_pack(const af_dlq_entry_t *e, size_t *lenp, char id_out[27]) {
        Agentfleet__V1__DeadLetter dl = AGENTFLEET__V1__DEAD_LETTER__INIT;
        Agentfleet__V1__Error error = AGENTFLEET__V1__ERROR__INIT;
        char id[AF_ULID_LEN + 1];
        uint8_t *out;

        af_ulid_new(id);
        dl.id = id;
        dl.at_ms = af_clock_wall_ms();
        dl.task_id = nc(e->task_id);
        dl.source_topic = nc(e->source_topic);
        dl.source_partition = e->source_partition;
        dl.source_offset = e->source_offset;
        dl.reason = nc(e->reason);
        error.code = nc(af_err2code(e->err));
        error.message = nc(e->reason);
        error.retriable = e->retriable;
        dl.error = &error;
        dl.original.data = (uint8_t *) e->original;
        dl.original.len = e->original ? e->original_len : 0;
        dl.content_type = nc(e->content_type);
        dl.original_key.data = (uint8_t *) e->original_key;
        dl.original_key.len = e->original_key ? e->original_key_len : 0;
        dl.component = nc(e->component);
        dl.attempts = e->attempts;

        *lenp = agentfleet__v1__dead_letter__get_packed_size(&dl);
        out = malloc(*lenp ? *lenp : 1);
        if (!out)
                return NULL;
        agentfleet__v1__dead_letter__pack(&dl, out);
        if (id_out)
                memcpy(id_out, id, sizeof(id));
        return out;
}

bool af_dlq_omit_original(af_dlq_entry_t *e, const char *dlq_topic, char **reason_out) {
        *reason_out = NULL;
        if (!e->original)
                return false;
        if (asprintf(reason_out, "%s (original omitted: too large for %s; it stays at %s[%d]@%lld)",
                     e->reason ? e->reason : "", dlq_topic, e->source_topic ? e->source_topic : "",
                     (int) e->source_partition, (long long) e->source_offset) < 0)
                *reason_out = NULL;
        else
                e->reason = *reason_out;
        e->original = NULL;
        e->original_len = 0;
        return true;
}

af_err_t af_dlq_send(af_producer_t *p, const char *topic, const af_dlq_entry_t *e,
                     af_delivery_cb_t *cb, void *opaque, char *errstr, size_t errstr_size) {
        static const char ct[] = "application/x-protobuf";
        af_kafka_header_t hdr = {"content-type", ct, sizeof(ct) - 1};
        const void *key = NULL;
        size_t key_len = 0, len = 0;
        af_err_t err;
        uint8_t *bytes = af_dlq_pack(e, &len, NULL);

        if (!bytes)
                return af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
        if (e->task_id && *e->task_id) {
                key = e->task_id;
                key_len = strlen(e->task_id);
        } else if (e->original_key) {
                key = e->original_key;
                key_len = e->original_key_len;
        }
        err = af_producer_send(p, topic, -1 /*by key*/, key, key_len, bytes, len, &hdr, 1, cb,
                               opaque, errstr, errstr_size);
        free(bytes);
        return err;
}
