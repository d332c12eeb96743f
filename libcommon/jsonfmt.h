/*
 * jsonfmt: writing JSON without changing its numbers. jansson writes a real with 17
 * significant digits unless told otherwise, so a claim's `"amount": 172.46` went out as
 * 172.46000000000001 (in API answers, integration bodies and URLs, results) and a model's
 * `"confidence": 0.86` as 0.85999999999999999. Here each dump uses the fewest digits (15, 16
 * or 17) at which every real in the value reads back as the same double: what was written
 * with up to 15 significant digits comes out as it came in, and nothing loses precision.
 */
#ifndef AF_JSONFMT_H
#define AF_JSONFMT_H

#include <stddef.h>

#include <jansson.h>

/* flags (for json_dumps and friends) with the JSON_REAL_PRECISION that writes every real in
 * j exactly, in as few digits as possible; a JSON_REAL_PRECISION already in flags wins. */
size_t af_json_flags(const json_t *j, size_t flags);

/* json_dumps(j, af_json_flags(j, flags)). */
char *af_json_dumps(const json_t *j, size_t flags);

#endif
