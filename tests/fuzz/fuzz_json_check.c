/*
 * Fuzz target: af_wire_json_surely_valid, the worker's allocation-free check of a Task's
 * payload, against jansson. "Surely valid" must never be said of a text jansson refuses:
 * such a payload would reach an integration unparsed. (The converse may differ: the check
 * answers "not sure" for a few valid texts, which are then parsed.)
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *text = malloc(size + 1);
        json_error_t jerr;

        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0'; /* payloads are C strings: a NUL inside ends the text */
        if (af_wire_json_surely_valid(text)) {
                json_t *doc = json_loads(text, JSON_DECODE_ANY, &jerr);
                if (!doc)
                        abort();
                json_decref(doc);
        }
        free(text);
        return 0;
}
