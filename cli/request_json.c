/*
 * request_json: the TaskRequests the CLI produces straight to the `requests` topic, in the
 * JSON form of the wire contract — what "another service" in any language would write.
 * Authentication follows libcommon/wire_json.h: a service key signs the canonical string
 * (payload travels as a JSON string, signed verbatim), or the request carries a token.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "ids.h"
#include "jsonfmt.h"
#include "wire_json.h"

#include "cli.h"

void af_cli_traceparent(char out[AF_CLI_TRACEPARENT_LEN + 1]) {
        uint8_t rnd[24];
        char hex[2 * sizeof(rnd) + 1];

        af_random_bytes(rnd, sizeof(rnd));
        rnd[0] |= 1;  /* an all-zero trace id is invalid; make sure it cannot be */
        rnd[16] |= 1; /* same for the span id */
        af_hex_encode(rnd, sizeof(rnd), hex);
        snprintf(out, AF_CLI_TRACEPARENT_LEN + 1, "00-%.32s-%.16s-01", hex, hex + 32);
}

char *af_cli_request_json(const af_cli_request_t *r, char *errstr, size_t errstr_size) {
        Agentfleet__V1__TaskRequest req = AGENTFLEET__V1__TASK_REQUEST__INIT;
        char sig[AF_SHA256_HEX_LEN + 1], traceparent[AF_CLI_TRACEPARENT_LEN + 1];
        json_t *j = NULL;
        char *text = NULL;

        if (!r->type || !r->payload) {
                snprintf(errstr, errstr_size, "a request needs a type and a payload");
                goto out;
        }
        /* The proto struct only borrows the strings: it is never packed or freed here. */
        req.type = (char *) r->type;
        req.case_key = (char *) (r->case_key ? r->case_key : "");
        req.idempotency_key = (char *) (r->idempotency_key ? r->idempotency_key : "");
        req.payload = (char *) r->payload;
        req.request_id = (char *) (r->request_id ? r->request_id : "");
        req.priority = r->priority;

        j = json_pack("{s:s, s:s}", "type", r->type, "payload", r->payload);
        if (!j) {
                snprintf(errstr, errstr_size, "out of memory");
                goto out;
        }
        if (r->case_key)
                json_object_set_new(j, "case_key", json_string(r->case_key));
        if (r->idempotency_key)
                json_object_set_new(j, "idempotency_key", json_string(r->idempotency_key));
        if (r->request_id)
                json_object_set_new(j, "request_id", json_string(r->request_id));
        if (r->priority)
                json_object_set_new(j, "priority", json_integer(r->priority));
        if (!r->traceparent)
                af_cli_traceparent(traceparent);
        json_object_set_new(j, "traceparent",
                            json_string(r->traceparent ? r->traceparent : traceparent));

        if (r->key_id && r->secret) {
                if (af_wire_taskrequest_sign(&req, r->secret, strlen(r->secret), sig) != AF_OK) {
                        snprintf(errstr, errstr_size, "signing the request failed");
                        goto out;
                }
                json_object_set_new(j, "key_id", json_string(r->key_id));
                json_object_set_new(j, "signature", json_string(sig));
        } else if (r->token) {
                json_object_set_new(j, "token", json_string(r->token));
        } else {
                snprintf(errstr, errstr_size, "a request needs a service key or a token");
                goto out;
        }
        text = af_json_dumps(j, JSON_COMPACT);
        if (!text)
                snprintf(errstr, errstr_size, "out of memory");
out:
        json_decref(j);
        return text;
}
