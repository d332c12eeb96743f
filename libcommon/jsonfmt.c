/*
 * jsonfmt: see jsonfmt.h.
 */
#include "jsonfmt.h"

#include <stdio.h>
#include <stdlib.h>

#define JSONFMT_MIN_DIGITS 15 /* DBL_DIG: any decimal of 15 digits survives a double */
#define JSONFMT_MAX_DIGITS 17 /* every double survives 17 */

/* @returns the fewest significant digits (15..17) at which v reads back as itself. */
static int real_digits(double v) {
        char buf[40];
        for (int p = JSONFMT_MIN_DIGITS; p < JSONFMT_MAX_DIGITS; p++) {
                snprintf(buf, sizeof(buf), "%.*g", p, v);
                if (strtod(buf, NULL) == v)
                        return p;
        }
        return JSONFMT_MAX_DIGITS;
}

/* The digits j needs, at least have: stops as soon as 17 are needed. Depth is bounded by
 * jansson's own parser limit for parsed values (2048). */
static int tree_digits(const json_t *j, int have) {
        const char *key;
        json_t *v;
        size_t i;

        if (have == JSONFMT_MAX_DIGITS)
                return have;
        switch (json_typeof(j)) {
        case JSON_REAL: {
                int d = real_digits(json_real_value(j));
                return d > have ? d : have;
        }
        case JSON_OBJECT:
                json_object_foreach((json_t *) j, key, v) {
                        have = tree_digits(v, have);
                }
                return have;
        case JSON_ARRAY:
                json_array_foreach(j, i, v) {
                        have = tree_digits(v, have);
                }
                return have;
        default:
                return have;
        }
}

size_t af_json_flags(const json_t *j, size_t flags) {
        if (!j || (flags & JSON_REAL_PRECISION(0x1F)))
                return flags;
        return flags | JSON_REAL_PRECISION(tree_digits(j, JSONFMT_MIN_DIGITS));
}

char *af_json_dumps(const json_t *j, size_t flags) {
        return json_dumps(j, af_json_flags(j, flags));
}
