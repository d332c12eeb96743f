/*
 * http_route: the path router of http_server, kept apart from evhttp's state so that it can be
 * unit tested and fuzzed with arbitrary URIs. A pattern is literal text with {name} captures;
 * a capture takes one segment, which ends at '/' or ':' (so "/v1/tasks/{id}:cancel" routes
 * Google-style custom methods). Paths are matched still percent-encoded and each capture is
 * decoded on its own, so "%2F" inside an id never splits a segment.
 */
#ifndef AF_HTTP_ROUTE_H
#define AF_HTTP_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#define AF_HTTP_ROUTE_MAX_PARAMS 8  /* captures per pattern */
#define AF_HTTP_ROUTE_MAX_NAME   32 /* capture name, including the NUL */

typedef struct af_http_params_s {
        int cnt;
        struct {
                char name[AF_HTTP_ROUTE_MAX_NAME];
                char *value; /* decoded, NUL-terminated, owned (malloc) */
        } p[AF_HTTP_ROUTE_MAX_PARAMS];
} af_http_params_t;

typedef enum {
        AF_HTTP_ROUTE_NOMATCH = 0,
        AF_HTTP_ROUTE_MATCH,
        AF_HTTP_ROUTE_BADPATH, /* matched, but a capture does not decode (e.g. %00) */
} af_http_route_result_t;

/* @returns whether pattern is well formed: starts with '/', balanced {name} with a name of
 * [A-Za-z0-9_] shorter than AF_HTTP_ROUTE_MAX_NAME, at most AF_HTTP_ROUTE_MAX_PARAMS captures,
 * and a capture is never directly followed by another. Fills errstr when not. */
bool af_http_route_valid(const char *pattern, char *errstr, size_t errstr_size);

/* Match a raw (percent-encoded, query-less) path against a valid pattern. On MATCH, params
 * holds the decoded captures (caller clears with af_http_params_clear); on any other result
 * params is left empty. Pure function, any thread. */
af_http_route_result_t af_http_route_match(const char *pattern, const char *path,
                                           af_http_params_t *params);

/* @returns the value captured as name, or NULL. */
const char *af_http_params_get(const af_http_params_t *params, const char *name);
/* Free the captured values; params may be reused. */
void af_http_params_clear(af_http_params_t *params);

/* Percent-decode len bytes of s ('+' stays '+': this is for paths). @returns a malloc'd,
 * NUL-terminated string owned by the caller, or NULL when the result would hold a NUL byte
 * (which C strings downstream could not carry faithfully) or memory ran out. */
char *af_http_route_decode(const char *s, size_t len);

#endif
