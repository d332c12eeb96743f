/*
 * Fuzz target: protobuf decoding of what arrives from Kafka (TaskRequest on `requests`, Task on
 * the task topics, TaskResult on `results`) followed by what we do with a decoded message:
 * value checks, the signing rule, and the JSON views the API and the index build from it.
 * Nothing here may crash, leak or read out of bounds, whatever the bytes; a request that
 * passes the checks holds only UTF-8 strings, and a refusal says why in UTF-8.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"
#include "wire_json.h"

static void use_json(json_t *j) {
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        free(s);
        json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char errstr[256];
        Agentfleet__V1__TaskRequest *req = agentfleet__v1__task_request__unpack(NULL, size, data);
        if (req) {
                char sig[AF_SHA256_HEX_LEN + 1];
                errstr[0] = '\0';
                if (af_wire_taskrequest_check(req, 64 * 1024, 1700000000000LL, errstr,
                                              sizeof(errstr)) == AF_OK) {
                        const char *text[] = {req->type,       req->tenant,          req->principal,
                                              req->case_key,   req->idempotency_key, req->payload,
                                              req->request_id, req->key_id};
                        for (size_t i = 0; i < sizeof(text) / sizeof(text[0]); i++)
                                if (text[i] &&
                                    af_utf8_prefix(text[i], strlen(text[i])) != strlen(text[i]))
                                        abort(); /* admitted bytes that are not text */
                } else if (af_utf8_prefix(errstr, strlen(errstr)) != strlen(errstr)) {
                        abort();
                }
                af_wire_taskrequest_verify(req, "k", 1);
                af_wire_taskrequest_sign(req, "k", 1, sig);
                use_json(af_wire_taskrequest_to_json(req));
                agentfleet__v1__task_request__free_unpacked(req, NULL);
        }
        Agentfleet__V1__Task *task = agentfleet__v1__task__unpack(NULL, size, data);
        if (task) {
                use_json(af_wire_task_to_json(task));
                agentfleet__v1__task__free_unpacked(task, NULL);
        }
        Agentfleet__V1__TaskResult *res = agentfleet__v1__task_result__unpack(NULL, size, data);
        if (res) {
                af_wire_status_is_final(res->status);
                use_json(af_wire_taskresult_to_json(res));
                agentfleet__v1__task_result__free_unpacked(res, NULL);
        }
        Agentfleet__V1__DeadLetter *dl = agentfleet__v1__dead_letter__unpack(NULL, size, data);
        if (dl) {
                use_json(af_wire_deadletter_to_json(dl));
                agentfleet__v1__dead_letter__free_unpacked(dl, NULL);
        }
        return 0;
}
