/*
 * Fuzz target: the JSON form of TaskRequest as other services produce it to `requests`
 * (lenient: unknown members ignored), then what intake does with an accepted one: value
 * checks, signature verification and the JSON view. Differential: where the parser says the
 * payload came as an object, the check that trusts it must agree with the one that parses it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char errstr[256];
        Agentfleet__V1__TaskRequest *req = NULL;
        bool object = false;

        if (af_wire_taskrequest_from_json_ex((const char *) data, size, 0, &req, &object, errstr,
                                             sizeof(errstr)) == AF_OK) {
                af_err_t full = af_wire_taskrequest_check(req, 256 * 1024, 1700000000000LL, errstr,
                                                          sizeof(errstr));
                if (object &&
                    af_wire_taskrequest_check_payload(req, 256 * 1024, true, 1700000000000LL,
                                                      errstr, sizeof(errstr)) != full)
                        abort(); /* trusting the object payload changed the verdict */
                af_wire_taskrequest_verify(req, "secret", 6);
                json_t *j = af_wire_taskrequest_to_json(req);
                if (j && json_object_get(j, "token"))
                        abort(); /* the view never carries the credential */
                char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
                free(s);
                json_decref(j);
                af_wire_taskrequest_free(req);
        } else if (req || !memchr(errstr, '\0', sizeof(errstr))) {
                abort();
        }
        return 0;
}
