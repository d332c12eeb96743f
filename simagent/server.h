/*
 * server: agentfleet-simagent's HTTP side — one server on libcommon's http_server that stands
 * in for everything a user brings from outside: an OpenAI-compatible LLM
 * (POST /v1/chat/completions, GET /v1/models) and the claims integrations (POST /rules/check,
 * POST /crm/claims/{claim_id}, POST /tickets, POST /noop), plus GET /stats,
 * POST /stats/reset and GET /healthz for tests and the demo.
 *
 * Faults (faults.h) are applied to every upstream endpoint except /noop, which stays a pure
 * measure of agentfleet's own overhead for benchmarks. Delays are timers and deferred
 * replies: the loop never sleeps, so thousands of slow requests can be in flight at once.
 */
#ifndef AF_SIM_SERVER_H
#define AF_SIM_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "loop.h"

typedef struct af_sim_server_s af_sim_server_t;

typedef struct af_sim_opts_s {
        const char *address;       /* listen address, "127.0.0.1" */
        int port;                  /* 0 = ephemeral (see af_sim_server_port) */
        uint64_t seed;             /* every simulated choice derives from it */
        int64_t latency_ms;        /* mean added latency */
        int64_t jitter_ms;         /* +- around the mean, uniform */
        int error_rate;            /* permille answered 500/503 */
        int rate429;               /* permille answered 429 */
        int timeout_rate;          /* permille never answered */
        int64_t retry_after_ms;    /* Retry-After of a 429 (rounded up to seconds) */
        int64_t prompt_tokens;     /* mean usage.prompt_tokens */
        int64_t completion_tokens; /* mean usage.completion_tokens */
        const char *api_key;       /* bearer required on /v1/..., NULL or "" = none */
        size_t max_body;           /* request body cap, bytes (0 = 1 MiB) */
} af_sim_opts_t;

/* Bind and route. Strings in opts are copied. @returns the server or NULL with errstr
 * filled (e.g. the port is taken). Loop thread. */
af_sim_server_t *af_sim_server_new(af_loop_t *loop, const af_sim_opts_t *opts, char *errstr,
                                   size_t errstr_size);
/* Answer every parked request with 503, then close. NULL is fine. Loop thread. */
void af_sim_server_destroy(af_sim_server_t *ss);
/* @returns the bound port. */
int af_sim_server_port(const af_sim_server_t *ss);

#endif
