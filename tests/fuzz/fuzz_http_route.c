/*
 * libFuzzer target: arbitrary request URIs through what http_server does before a handler
 * runs: evhttp's URI parser, percent-decoding of the path, the router against the
 * coordinator's patterns, and query parsing. It must never crash, leak or read out of bounds,
 * and a MATCH must always hold non-empty captures.
 */
#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_route.h"

static const char *const patterns[] = {
        "/v1/tasks",
        "/v1/tasks/{id}",
        "/v1/tasks/{id}:cancel",
        "/v1/approvals/{id}:approve",
        "/v1/approvals/{id}:reject",
        "/v1/workflows/{name}/runs",
        "/v1/workflow-runs/{id}",
        "/v1/dlq/{id}:replay",
        "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}",
        "/",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *uri_str = malloc(size + 1);
        if (!uri_str)
                return 0;
        memcpy(uri_str, data, size);
        uri_str[size] = '\0';

        /* The router also takes raw paths evhttp never saw: try the bytes as a path too. */
        af_http_params_t params;
        for (size_t i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++) {
                if (af_http_route_match(patterns[i], uri_str, &params) == AF_HTTP_ROUTE_MATCH) {
                        for (int k = 0; k < params.cnt; k++)
                                if (!params.p[k].value[0])
                                        abort();
                        af_http_params_clear(&params);
                }
        }

        struct evhttp_uri *uri = evhttp_uri_parse_with_flags(uri_str, 0);
        if (uri) {
                const char *path = evhttp_uri_get_path(uri);
                const char *query = evhttp_uri_get_query(uri);
                if (path) {
                        free(af_http_route_decode(path, strlen(path)));
                        for (size_t i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++) {
                                if (af_http_route_match(patterns[i], path, &params) ==
                                    AF_HTTP_ROUTE_MATCH) {
                                        for (int k = 0; k < params.cnt; k++)
                                                if (strlen(params.p[k].value) == 0)
                                                        abort();
                                        af_http_params_clear(&params);
                                }
                        }
                }
                if (query) {
                        struct evkeyvalq kv;
                        TAILQ_INIT(&kv);
                        evhttp_parse_query_str(query, &kv);
                        evhttp_find_header(&kv, "status");
                        evhttp_clear_headers(&kv);
                }
                evhttp_uri_free(uri);
        }
        free(uri_str);
        return 0;
}
