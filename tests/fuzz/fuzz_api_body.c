/*
 * Fuzz target: the body of POST /v1/tasks as the coordinator parses it: strict JSON
 * TaskRequest (unknown members refused), then the value checks admission applies before
 * anything is written. A refusal must come with a message, in UTF-8 (it travels in JSON and
 * protobuf); nothing may crash.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"
#include "wire_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char errstr[512] = "";
        Agentfleet__V1__TaskRequest *req = NULL;
        af_err_t err = af_wire_taskrequest_from_json((const char *) data, size, AF_WIRE_F_STRICT,
                                                     &req, errstr, sizeof(errstr));
        if (err) {
                if (req || !errstr[0] || af_utf8_prefix(errstr, strlen(errstr)) != strlen(errstr))
                        abort(); /* a refusal names its reason and leaves nothing behind */
                return 0;
        }
        errstr[0] = '\0';
        err = af_wire_taskrequest_check(req, 16 * 1024, 1700000000000LL, errstr, sizeof(errstr));
        if (err && (!errstr[0] || af_utf8_prefix(errstr, strlen(errstr)) != strlen(errstr)))
                abort();
        af_wire_taskrequest_free(req);
        return 0;
}
