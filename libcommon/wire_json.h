/*
 * wire_json: the JSON face of the wire contract (proto/agentfleet/v1).
 *
 * Producers in any language may write a TaskRequest to `requests` as JSON with the proto's
 * own field names; the HTTP API takes the same shape in POST /v1/tasks. This file turns that
 * JSON into the protobuf-c message the rest of the pipeline uses (with a precise error naming
 * the field), and turns Task, TaskResult, AuditEvent and DeadLetter into JSON for the API, the
 * task index and the CLI. It also defines how a TaskRequest is signed.
 *
 * Signing (key_id + signature on TaskRequest): signature = lower-case hex
 * HMAC-SHA256(service key secret, canonical string), where the canonical string is the seven
 * fields joined by '\n', in this order, empty when absent:
 *
 *     type \n tenant \n principal \n case_key \n idempotency_key \n payload \n request_id
 *
 * for both the protobuf and the JSON form. `payload` is the payload text as it travels: the
 * protobuf field verbatim; in JSON, the string verbatim when `payload` is a JSON string (the
 * form to use when signing from another language), or jansson's compact, key-sorted dump
 * (JSON_COMPACT | JSON_SORT_KEYS, reals in the fewest digits that read back exactly: see
 * jsonfmt.h) when it is an object. The token, key_id, signature, priority,
 * deadline, max_attempts and traceparent fields are not signed.
 *
 * Everything here is pure (no I/O, no globals) and safe from any thread.
 */
#ifndef AF_WIRE_JSON_H
#define AF_WIRE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "agentfleet/v1/audit.pb-c.h"
#include "agentfleet/v1/dlq.pb-c.h"
#include "agentfleet/v1/result.pb-c.h"
#include "agentfleet/v1/task.pb-c.h"
#include "buf.h"
#include "crypto.h"
#include "err.h"

/* Flags for af_wire_taskrequest_from_json(). */
#define AF_WIRE_F_STRICT                                                                           \
        0x1 /* refuse members the TaskRequest does not have (API bodies);                          \
             * without it they are ignored, like unknown proto fields */

/* Parse a JSON TaskRequest (an object with the proto's field names; `payload` an object or
 * a string holding JSON text; null members count as absent). Does not check meaning (known
 * type, payload validity, ranges beyond the proto's integer widths): admission does.
 * @returns AF_OK with *reqp set (caller frees with af_wire_taskrequest_free), or
 *          AF_ERR_INVALID with errstr like "field \"priority\": expected an integer, got a
 *          string". */
af_err_t af_wire_taskrequest_from_json(const char *json, size_t len, unsigned flags,
                                       Agentfleet__V1__TaskRequest **reqp, char *errstr,
                                       size_t errstr_size);
/* The same, also telling (when payload_object is not NULL) whether `payload` came as a JSON
 * object: then req->payload is jansson's own dump of it, a JSON object text without duplicate
 * keys, which af_wire_taskrequest_check_payload need not parse again. */
af_err_t af_wire_taskrequest_from_json_ex(const char *json, size_t len, unsigned flags,
                                          Agentfleet__V1__TaskRequest **reqp, bool *payload_object,
                                          char *errstr, size_t errstr_size);
/* Free a TaskRequest from af_wire_taskrequest_from_json() or from protobuf unpack with the
 * default allocator. NULL is fine. */
void af_wire_taskrequest_free(Agentfleet__V1__TaskRequest *req);

/* Check a TaskRequest's values beyond their wire types, for admission (the task type against
 * the catalog is the caller's): payload a JSON object (empty means {}) of at most max_payload
 * bytes, priority 0..9, deadline_ms 0 or after now_ms, max_attempts 0..100, case_key,
 * idempotency_key and request_id at most AF_WIRE_KEY_MAX bytes, traceparent empty or W3C.
 * @returns AF_OK, AF_ERR_TOO_LARGE or AF_ERR_INVALID with errstr naming the field. */
#define AF_WIRE_KEY_MAX 256
af_err_t af_wire_taskrequest_check(const Agentfleet__V1__TaskRequest *req, size_t max_payload,
                                   int64_t now_ms, char *errstr, size_t errstr_size);
/* The same, where payload_object says the payload is already known to be a JSON object text
 * (af_wire_taskrequest_from_json_ex): only its size is checked. Parsing it again was about a
 * sixth of the coordinator's instructions per JSON request. */
af_err_t af_wire_taskrequest_check_payload(const Agentfleet__V1__TaskRequest *req,
                                           size_t max_payload, bool payload_object, int64_t now_ms,
                                           char *errstr, size_t errstr_size);
/* @returns whether s is a W3C traceparent of version 00 with non-zero ids. */
bool af_wire_traceparent_valid(const char *s);

/* @returns true when text (a C string, such as Task.payload) is certainly one JSON value that
 * json_loads(text, JSON_DECODE_ANY, ...) accepts, checked without building it: no allocation
 * and a few instructions a byte, where jansson's tree costs about a hundred and many mallocs.
 * false means "not sure": parse it to know and to get jansson's error. Besides every invalid
 * text, a few that jansson accepts answer false: an integer of 19 digits or more, a real
 * of 1e308 or more, nesting deeper than 512, a \u escape of NUL or of a surrogate. */
bool af_wire_json_surely_valid(const char *text);

/* ---- messages to JSON (new references; NULL only on OOM) ---------------------------------
 * JSON text fields (payload, output, details) are embedded as JSON values when they parse,
 * as strings otherwise. Enums become lower-case names ("queued", "api", "principal"). */
json_t *af_wire_taskrequest_to_json(const Agentfleet__V1__TaskRequest *req); /* no token */
json_t *af_wire_task_to_json(const Agentfleet__V1__Task *task);
json_t *af_wire_taskresult_to_json(const Agentfleet__V1__TaskResult *res);
json_t *af_wire_audit_to_json(const Agentfleet__V1__AuditEvent *ev);
json_t *af_wire_deadletter_to_json(const Agentfleet__V1__DeadLetter *dl);
json_t *af_wire_versions_to_json(const Agentfleet__V1__Versions *v); /* NULL -> {} */

/* ---- task status names -------------------------------------------------------------------- */
/* @returns "queued", "running", "succeeded", ... ("unspecified" for unknown values). */
const char *af_wire_status2str(Agentfleet__V1__TaskStatus st);
/* @returns the status for a name, or -1 when unknown. */
int af_wire_str2status(const char *s);
/* @returns whether st ends a task (succeeded, failed, dead, rejected, cancelled). */
bool af_wire_status_is_final(Agentfleet__V1__TaskStatus st);
const char *af_wire_origin2str(Agentfleet__V1__Origin o);

/* ---- signing ------------------------------------------------------------------------------ */
/* Append the canonical string (see the top of this file) to out. */
af_err_t af_wire_taskrequest_canonical(const Agentfleet__V1__TaskRequest *req, af_buf_t *out);
/* Compute the hex signature of req with key into out. */
af_err_t af_wire_taskrequest_sign(const Agentfleet__V1__TaskRequest *req, const void *key,
                                  size_t key_len, char out[AF_SHA256_HEX_LEN + 1]);
/* @returns whether req->signature is the right signature for key (constant time). */
bool af_wire_taskrequest_verify(const Agentfleet__V1__TaskRequest *req, const void *key,
                                size_t key_len);

#endif
