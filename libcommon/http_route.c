/*
 * http_route: pattern matching and percent-decoding for http_server's router (see
 * http_route.h). No evhttp state is touched here, only its decoder, so the fuzzer and the
 * unit tests drive exactly the code the server runs.
 */
#include "http_route.h"

#include <event2/http.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* A capture ends where a path segment ends: at '/', at ':' (custom method) or at the end. */
static bool route_is_capture_end(char c) {
        return c == '\0' || c == '/' || c == ':';
}

static bool route_is_name_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_';
}

bool af_http_route_valid(const char *pattern, char *errstr, size_t errstr_size) {
        int captures = 0;
        bool ok = false;
        const char *p = pattern;

        if (!pattern || pattern[0] != '/') {
                af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                          "route pattern \"%s\" must start with '/'", pattern ? pattern : "");
                goto out;
        }
        while (*p) {
                if (*p == '}') {
                        af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                  "route pattern \"%s\": '}' without '{'", pattern);
                        goto out;
                }
                if (*p != '{') {
                        p++;
                        continue;
                }
                const char *name = ++p;
                while (route_is_name_char(*p))
                        p++;
                size_t name_len = (size_t) (p - name);
                if (*p != '}' || name_len == 0 || name_len >= AF_HTTP_ROUTE_MAX_NAME) {
                        af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                  "route pattern \"%s\": a capture must be {name} with 1..%d "
                                  "letters, digits or '_'",
                                  pattern, AF_HTTP_ROUTE_MAX_NAME - 1);
                        goto out;
                }
                p++;
                /* Two captures in a row would make the first one swallow the second. */
                if (*p == '{') {
                        af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                  "route pattern \"%s\": two captures in a row", pattern);
                        goto out;
                }
                if (++captures > AF_HTTP_ROUTE_MAX_PARAMS) {
                        af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                  "route pattern \"%s\": more than %d captures", pattern,
                                  AF_HTTP_ROUTE_MAX_PARAMS);
                        goto out;
                }
        }
        ok = true;
out:
        return ok;
}

char *af_http_route_decode(const char *s, size_t len) {
        char *raw = NULL, *dec = NULL;
        size_t dec_len = 0;

        /* Nothing to decode (most paths and ids): evhttp's decoder would return the same
         * bytes, after a second allocation and a second pass. */
        if (!memchr(s, '%', len)) {
                dec = strndup(s, len);
                goto out;
        }
        raw = strndup(s, len);
        if (!raw)
                goto out;
        dec = evhttp_uridecode(raw, 0 /*'+' is literal in paths*/, &dec_len);
        if (dec && strlen(dec) != dec_len) {
                /* "%00": a C string would silently truncate it, so refuse it. */
                free(dec);
                dec = NULL;
        }
out:
        free(raw);
        return dec;
}

af_http_route_result_t af_http_route_match(const char *pattern, const char *path,
                                           af_http_params_t *params) {
        af_http_route_result_t res = AF_HTTP_ROUTE_NOMATCH;
        const char *p = pattern, *s = path;
        struct {
                const char *name, *val;
                size_t name_len, val_len;
        } span[AF_HTTP_ROUTE_MAX_PARAMS];
        int cnt = 0;

        params->cnt = 0;
        /* First the shape, without allocating: most routes do not match most paths. */
        while (*p) {
                if (*p != '{') {
                        if (*p != *s)
                                goto out;
                        p++;
                        s++;
                        continue;
                }
                const char *name = ++p;
                while (*p && *p != '}')
                        p++;
                if (!*p || cnt == AF_HTTP_ROUTE_MAX_PARAMS ||
                    (size_t) (p - name) >= AF_HTTP_ROUTE_MAX_NAME)
                        goto out; /* not a valid pattern: af_http_route_valid() refuses it */
                span[cnt].name = name;
                span[cnt].name_len = (size_t) (p - name);
                p++;
                span[cnt].val = s;
                while (!route_is_capture_end(*s))
                        s++;
                span[cnt].val_len = (size_t) (s - span[cnt].val);
                if (span[cnt].val_len == 0)
                        goto out; /* an empty segment is not an id */
                cnt++;
        }
        if (*s != '\0')
                goto out;

        /* Then the captures, each decoded on its own. */
        res = AF_HTTP_ROUTE_MATCH;
        for (int i = 0; i < cnt; i++) {
                memcpy(params->p[i].name, span[i].name, span[i].name_len);
                params->p[i].name[span[i].name_len] = '\0';
                params->p[i].value = af_http_route_decode(span[i].val, span[i].val_len);
                params->cnt = i + 1;
                if (!params->p[i].value) {
                        res = AF_HTTP_ROUTE_BADPATH;
                        af_http_params_clear(params);
                        break;
                }
        }
out:
        return res;
}

const char *af_http_params_get(const af_http_params_t *params, const char *name) {
        for (int i = 0; i < params->cnt; i++)
                if (!strcmp(params->p[i].name, name))
                        return params->p[i].value;
        return NULL;
}

void af_http_params_clear(af_http_params_t *params) {
        for (int i = 0; i < params->cnt; i++) {
                free(params->p[i].value);
                params->p[i].value = NULL;
        }
        params->cnt = 0;
}
