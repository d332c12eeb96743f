/*
 * audit: the tamper-evident audit trail, one hash chain per emitting process.
 *
 * Every event this process emits is sealed before it goes to Kafka: it gets the next seq, the
 * previous event's chain hash as prev_hash, chain_hash = sha256(prev_hash || the event packed
 * with chain_hash and hmac empty) and hmac = HMAC-SHA256(audit key, chain_hash hex). An
 * auditor who replays the `audit` topic per emitter can therefore tell a removed, reordered
 * or edited event (the chain breaks) from a forged one (the HMAC fails). Both daemons use it:
 * the coordinator for admissions and denials, workers for leases, handler calls and results.
 *
 * The canonical bytes are protobuf-c's packing of the event, which writes fields in field
 * number order and is deterministic for a given message, so verify() can recompute them from
 * a decoded event.
 */
#include "audit.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "config_buffer.h"
#include "crypto.h"
#include "ids.h"
#include "log.h"

struct af_audit_s {
        af_producer_t *p; /* borrowed; NULL = seal only (tests, tools) */
        char *emitter;    /* "coordinator", "worker:<id>" */
        char *key;        /* audit.hmac_key (secret, never logged) */
        size_t key_len;
        char topic[256];                       /* <prefix>audit */
        uint64_t seq;                          /* seq of the last event sealed */
        char prev_hash[AF_SHA256_HEX_LEN + 1]; /* chain_hash of the last event; "" first */
        /* Storage the last sealed event's filled-in string fields point to. */
        char id[AF_ULID_LEN + 1];
        char chain_hash[AF_SHA256_HEX_LEN + 1];
        char hmac[AF_SHA256_HEX_LEN + 1];
        char used_prev[AF_SHA256_HEX_LEN + 1];
};

af_audit_t *af_audit_new(af_producer_t *p, const af_config_t *conf, const char *emitter,
                         char *errstr, size_t errstr_size) {
        af_audit_t *a = NULL;
        const char *key = af_config_str(conf, "audit.hmac_key");

        if (!key || !*key) {
                af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                          "audit.hmac_key: must be set (the audit trail is signed with it)");
                goto out;
        }
        if (!emitter || !*emitter) {
                af_errstr(AF_ERR_INVALID, errstr, errstr_size, "audit: emitter is empty");
                goto out;
        }
        if (af_config_is_default(conf, "audit.hmac_key"))
                af_warn("audit.hmac_key is the public development key: the audit trail's HMACs "
                        "prove nothing until AGENTFLEET_AUDIT_HMAC_KEY (or audit.hmac_key) is "
                        "set to a secret of your own");
        a = calloc(1, sizeof(*a));
        if (!a)
                goto nomem;
        a->p = p;
        a->emitter = strdup(emitter);
        a->key = strdup(key);
        if (!a->emitter || !a->key)
                goto nomem;
        a->key_len = strlen(key);
        af_kafka_topic(conf, "audit", a->topic, sizeof(a->topic));
        goto out;
nomem:
        af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "audit: out of memory");
        af_audit_destroy(a);
        a = NULL;
out:
        return a;
}

void af_audit_destroy(af_audit_t *a) {
        if (!a)
                return;
        free(a->emitter);
        if (a->key) {
                memset(a->key, 0, a->key_len);
                free(a->key);
        }
        free(a);
}

/* chain_hash of ev given its prev_hash, computed over ev packed with chain_hash and hmac
 * empty. ev is not modified (a shallow copy is packed). @returns AF_OK or AF_ERR_NOMEM. */
static af_err_t audit_chain_hash(const Agentfleet__V1__AuditEvent *ev, const char *prev_hash,
                                 char out[AF_SHA256_HEX_LEN + 1]) {
        Agentfleet__V1__AuditEvent copy = *ev;
        size_t plen = strlen(prev_hash);
        size_t len;
        uint8_t *bytes = NULL;
        af_err_t err = AF_OK;

        copy.chain_hash = (char *) "";
        copy.hmac = (char *) "";
        len = agentfleet__v1__audit_event__get_packed_size(&copy);
        bytes = malloc(plen + len + 1);
        if (!bytes) {
                err = AF_ERR_NOMEM;
                goto out;
        }
        memcpy(bytes, prev_hash, plen);
        agentfleet__v1__audit_event__pack(&copy, bytes + plen);
        af_sha256_hex(bytes, plen + len, out);
out:
        free(bytes);
        return err;
}

/* The sealed event's bytes are the hashed bytes with chain_hash (field 14) and hmac (15)
 * spliced in: protobuf-c packs fields in field-number order and leaves empty strings out, so
 * the event is packed once, not once to hash and again to send. Each spliced field is its
 * key byte ((number << 3) | length-delimited), the length 64 and the hex. */
#define AUDIT_SPLICE_FIRST 14 /* chain_hash */
#define AUDIT_SPLICE_LEN   (2 * (2 + AF_SHA256_HEX_LEN))

/* Read a varint at b[*i] (b has len bytes). @returns false when it runs past the end. */
static bool audit_varint(const uint8_t *b, size_t len, size_t *i, uint64_t *v) {
        *v = 0;
        for (int shift = 0; *i < len && shift < 64; shift += 7) {
                uint8_t c = b[(*i)++];
                *v |= (uint64_t) (c & 0x7f) << shift;
                if (!(c & 0x80))
                        return true;
        }
        return false;
}

/* @returns the offset in the packed event b where the fields numbered AUDIT_SPLICE_FIRST and
 * above begin (len when none is there), or SIZE_MAX when b does not walk as expected. */
static size_t audit_splice_at(const uint8_t *b, size_t len) {
        size_t i = 0;
        while (i < len) {
                size_t start = i;
                uint64_t key, n;
                if (!audit_varint(b, len, &i, &key))
                        return SIZE_MAX;
                if ((key >> 3) >= AUDIT_SPLICE_FIRST)
                        return start;
                switch (key & 7) {
                case 0: /* varint */
                        if (!audit_varint(b, len, &i, &n))
                                return SIZE_MAX;
                        break;
                case 2: /* length-delimited */
                        if (!audit_varint(b, len, &i, &n) || n > len - i)
                                return SIZE_MAX;
                        i += (size_t) n;
                        break;
                default: /* AuditEvent has no fixed-width fields */
                        return SIZE_MAX;
                }
        }
        return len;
}

/* Seal ev: fill id (if empty), at_ms (if 0), emitter, seq and the chain fields, and pack it
 * as it travels into *bytesp (caller frees; bytes at *bytesp + *offp, *lenp long). The string
 * fields filled point into a and stay valid until the next seal. */
static af_err_t audit_seal(af_audit_t *a, Agentfleet__V1__AuditEvent *ev, uint8_t **bytesp,
                           size_t *offp, size_t *lenp) {
        Agentfleet__V1__AuditEvent copy;
        size_t plen = strlen(a->prev_hash), len, at;
        uint8_t *buf = NULL, *b;
        af_err_t err = AF_OK;

        if (!ev->id || !*ev->id) {
                af_ulid_new(a->id);
                ev->id = a->id;
        }
        if (!ev->at_ms)
                ev->at_ms = af_clock_wall_ms();
        ev->emitter = a->emitter;
        ev->seq = a->seq + 1;
        memcpy(a->used_prev, a->prev_hash, sizeof(a->used_prev));
        ev->prev_hash = a->used_prev;

        /* prev_hash || the event without chain_hash and hmac: what the chain hash covers
         * (the same bytes as audit_chain_hash, which verify uses), with room for both. */
        copy = *ev;
        copy.chain_hash = (char *) "";
        copy.hmac = (char *) "";
        len = agentfleet__v1__audit_event__get_packed_size(&copy);
        buf = malloc(plen + len + AUDIT_SPLICE_LEN);
        if (!buf) {
                err = AF_ERR_NOMEM;
                goto out;
        }
        memcpy(buf, a->prev_hash, plen);
        b = buf + plen;
        agentfleet__v1__audit_event__pack(&copy, b);
        af_sha256_hex(buf, plen + len, a->chain_hash);
        af_hmac_sha256_hex(a->key, a->key_len, a->chain_hash, AF_SHA256_HEX_LEN, a->hmac);
        ev->chain_hash = a->chain_hash;
        ev->hmac = a->hmac;

        at = audit_splice_at(b, len);
        if (at == SIZE_MAX) {
                /* Not the layout we know: pack the sealed event the plain way. */
                len = agentfleet__v1__audit_event__get_packed_size(ev);
                free(buf);
                plen = 0;
                if (!(buf = b = malloc(len ? len : 1))) {
                        err = AF_ERR_NOMEM;
                        goto out;
                }
                agentfleet__v1__audit_event__pack(ev, b);
        } else {
                memmove(b + at + AUDIT_SPLICE_LEN, b + at, len - at);
                b[at] = (AUDIT_SPLICE_FIRST << 3) | 2;
                b[at + 1] = AF_SHA256_HEX_LEN;
                memcpy(b + at + 2, a->chain_hash, AF_SHA256_HEX_LEN);
                at += 2 + AF_SHA256_HEX_LEN;
                b[at] = ((AUDIT_SPLICE_FIRST + 1) << 3) | 2;
                b[at + 1] = AF_SHA256_HEX_LEN;
                memcpy(b + at + 2, a->hmac, AF_SHA256_HEX_LEN);
                len += AUDIT_SPLICE_LEN;
        }
        /* Only a sealed event advances the chain. */
        a->seq++;
        memcpy(a->prev_hash, a->chain_hash, sizeof(a->prev_hash));
        *bytesp = buf;
        *offp = plen;
        *lenp = len;
        buf = NULL;
out:
        free(buf);
        return err;
}

/* Delivery of an audit event nobody waits for: a failure is worth a log line, since the
 * chain now has a gap an auditor will see. */
static void audit_delivery_log(af_err_t err, const char *errstr, int32_t partition, int64_t offset,
                               void *opaque) {
        if (err)
                af_error("audit event not delivered: %s", errstr ? errstr : af_err2str(err));
}

/* Chain, sign and produce ev. Loop thread. The filled-in string fields point into a and stay
 * valid until the next emit; ev must therefore be built by the caller (not unpacked).
 * @returns AF_OK (cb, if given, will be called), or what af_producer_send returns. */
af_err_t af_audit_emit(af_audit_t *a, Agentfleet__V1__AuditEvent *ev, af_delivery_cb_t *cb,
                       void *opaque) {
        af_err_t err;
        size_t off = 0, len = 0;
        uint8_t *bytes = NULL;
        char errstr[256] = "";

        err = audit_seal(a, ev, &bytes, &off, &len);
        if (err || !a->p)
                goto out;
        err = af_producer_send_pb(a->p, a->topic, ev->task_id, bytes + off, len, ev->traceparent,
                                  cb ? cb : audit_delivery_log, opaque, errstr, sizeof(errstr));
        if (err)
                af_error("audit event %s (%s) not produced: %s", ev->action ? ev->action : "",
                         ev->task_id ? ev->task_id : "", errstr);
out:
        free(bytes);
        return err;
}

af_err_t af_audit_seal(af_audit_t *a, Agentfleet__V1__AuditEvent *ev, uint8_t **bytesp,
                       size_t *lenp) {
        size_t off = 0;
        uint8_t *buf = NULL;
        af_err_t err = audit_seal(a, ev, &buf, &off, lenp);
        if (err)
                return err;
        memmove(buf, buf + off, *lenp);
        *bytesp = buf;
        return AF_OK;
}

af_err_t af_audit_record(af_audit_t *a, const char *actor, Agentfleet__V1__ActorKind kind,
                         const char *action, const char *task_id, const char *tenant,
                         const char *decision, const char *reason, const char *details) {
        Agentfleet__V1__AuditEvent ev = AGENTFLEET__V1__AUDIT_EVENT__INIT;

        ev.actor = (char *) (actor ? actor : "");
        ev.actor_kind = kind;
        ev.action = (char *) (action ? action : "");
        ev.task_id = (char *) (task_id ? task_id : "");
        ev.tenant = (char *) (tenant ? tenant : "");
        ev.decision = (char *) (decision ? decision : "");
        ev.reason = (char *) (reason ? reason : "");
        ev.details = (char *) (details ? details : "");
        return af_audit_emit(a, &ev, NULL, NULL);
}

af_err_t af_audit_verify(const Agentfleet__V1__AuditEvent *ev, const char *prev_chain_hash,
                         const void *key, size_t key_len, char *errstr, size_t errstr_size) {
        char want[AF_SHA256_HEX_LEN + 1];
        char mac[AF_SHA256_HEX_LEN + 1];
        const char *prev = prev_chain_hash ? prev_chain_hash : "";
        const char *have_prev = ev->prev_hash ? ev->prev_hash : "";
        const char *have_chain = ev->chain_hash ? ev->chain_hash : "";
        const char *have_mac = ev->hmac ? ev->hmac : "";
        af_err_t err = AF_OK;

        if (strcmp(have_prev, prev) != 0) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "audit event %s (seq %llu): prev_hash \"%.16s...\" does not "
                                "follow the previous event's chain hash \"%.16s...\"",
                                ev->id ? ev->id : "", (unsigned long long) ev->seq, have_prev,
                                prev);
                goto out;
        }
        err = audit_chain_hash(ev, have_prev, want);
        if (err) {
                af_errstr(err, errstr, errstr_size, "audit verify: out of memory");
                goto out;
        }
        if (strlen(have_chain) != AF_SHA256_HEX_LEN ||
            !af_const_eq(have_chain, want, AF_SHA256_HEX_LEN)) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "audit event %s (seq %llu): chain_hash does not match its "
                                "content (edited event)",
                                ev->id ? ev->id : "", (unsigned long long) ev->seq);
                goto out;
        }
        af_hmac_sha256_hex(key, key_len, have_chain, AF_SHA256_HEX_LEN, mac);
        if (strlen(have_mac) != AF_SHA256_HEX_LEN ||
            !af_const_eq(have_mac, mac, AF_SHA256_HEX_LEN)) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "audit event %s (seq %llu): hmac does not match (wrong key or "
                                "forged event)",
                                ev->id ? ev->id : "", (unsigned long long) ev->seq);
                goto out;
        }
out:
        return err;
}
