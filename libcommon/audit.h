/*
 * audit: the tamper-evident audit trail. Each process is one chain ("emitter"): every event
 * gets the next seq, prev_hash = the previous event's chain_hash, chain_hash =
 * sha256(prev_hash || event encoded with chain_hash and hmac empty), and hmac =
 * HMAC-SHA256(audit.hmac_key, chain_hash). Events go to the `audit` topic keyed by task id
 * through the process's idempotent producer. af_audit_verify() checks one event against its
 * predecessor, for auditors and tests.
 */
#ifndef AF_AUDIT_H
#define AF_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "agentfleet/v1/audit.pb-c.h"
#include "config.h"
#include "err.h"
#include "kafka.h"

typedef struct af_audit_s af_audit_t;

/* emitter: "coordinator" or "worker:<id>" (copied). Reads audit.hmac_key and topic.prefix.
 * The producer is borrowed and must outlive the audit. */
af_audit_t *af_audit_new(af_producer_t *p, const af_config_t *conf, const char *emitter,
                         char *errstr, size_t errstr_size);
void af_audit_destroy(af_audit_t *a); /* NULL is fine */

/* Chain, sign and produce ev (caller keeps ownership; the chain fields, id, at_ms, emitter
 * and seq are filled in). cb may be NULL. @returns what af_producer_send returns. */
af_err_t af_audit_emit(af_audit_t *a, Agentfleet__V1__AuditEvent *ev, af_delivery_cb_t *cb,
                       void *opaque);

/* Chain and sign ev like af_audit_emit, without producing it: *bytesp (caller frees, *lenp
 * bytes) is the event as it would travel. For tools and tests. */
af_err_t af_audit_seal(af_audit_t *a, Agentfleet__V1__AuditEvent *ev, uint8_t **bytesp,
                       size_t *lenp);

/* Convenience for the common shape. details is JSON text or NULL. */
af_err_t af_audit_record(af_audit_t *a, const char *actor, Agentfleet__V1__ActorKind kind,
                         const char *action, const char *task_id, const char *tenant,
                         const char *decision, const char *reason, const char *details);

/* @returns AF_OK if ev's chain_hash and hmac are right and it follows prev_chain_hash
 * ("" for the first event), else AF_ERR_INVALID with errstr saying which check failed. */
af_err_t af_audit_verify(const Agentfleet__V1__AuditEvent *ev, const char *prev_chain_hash,
                         const void *key, size_t key_len, char *errstr, size_t errstr_size);

#endif
