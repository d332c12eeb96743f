/*
 * catalog: what the fleet can run, as configuration: task types, agents, integrations, API
 * tokens and service keys, read from the same YAML file as the settings (sections
 * task_types, agents, integrations, tokens, service_keys) and identified by a content hash
 * (sha256 hex of the file's bytes) that every Task and TaskResult records.
 *
 * Secrets are referenced, never written in the file: `api_key_env: OPENAI_API_KEY`,
 * header values `${env:CRM_TOKEN}`, tokens stored as `sha256:<hex>`. Resolved secret values
 * are registered with af_log_redact_add() at load.
 *
 * A catalog is immutable once loaded; a reload builds a new one (SIGHUP) and swaps pointers.
 */
#ifndef AF_CATALOG_H
#define AF_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct af_kv_s {
        char *name;
        char *value; /* resolved (env references expanded) */
} af_kv_t;

/* An HTTP integration: CRM update, ticket, rules check. Offered to agents as a tool. */
typedef struct af_integration_s {
        char *name;
        char *description; /* shown to the model as the tool's description */
        char *method;      /* GET, POST, PUT, PATCH, DELETE */
        char *url;         /* template: {{payload.claim_id}}, {{task.id}}, {{args.x}} */
        char *body;        /* template or NULL: the task payload / tool args as JSON */
        af_kv_t *headers;  /* values are templates too, secrets resolved */
        size_t header_cnt;
        char *parameters; /* JSON schema text of the tool arguments, or NULL */
        int64_t timeout_ms;
        char *compensation; /* name of the integration that undoes it, or NULL */
} af_integration_t;

/* An agent: an LLM behind an OpenAI-compatible chat-completions API. */
typedef struct af_agent_s {
        char *name;
        char *version;
        char *base_url; /* e.g. https://api.openai.com/v1 (…/chat/completions appended) */
        char *model;
        char *api_key_env;   /* environment variable holding the key, or NULL */
        char *api_key;       /* resolved value or NULL; secret */
        char *system_prompt; /* template over the task */
        char *prompt_hash;   /* sha256 hex of system_prompt */
        char **tools;        /* integration names it may call */
        size_t tool_cnt;
        int max_steps;                          /* model round trips */
        int64_t timeout_ms;                     /* per model call */
        int64_t price_prompt_micros_per_1k;     /* cost per 1000 prompt tokens */
        int64_t price_completion_micros_per_1k; /* cost per 1000 completion tokens */
        double temperature;
} af_agent_t;

typedef enum {
        AF_HANDLER_AGENT = 1,
        AF_HANDLER_INTEGRATION = 2,
} af_handler_kind_t;

typedef struct af_task_type_s {
        char *name;
        char *lane; /* tasks.<lane>; default "default" */
        af_handler_kind_t kind;
        char *target; /* agent or integration name */
        int max_attempts;
        int64_t timeout_ms; /* whole task */
        int64_t max_payload_bytes;
} af_task_type_t;

/* An API bearer token, stored as its sha256. */
typedef struct af_token_s {
        char *principal;
        char *tenant;
        char **roles;
        size_t role_cnt;
        uint8_t sha256[32];
} af_token_t;

/* A key for services that sign TaskRequests produced straight to Kafka (HMAC-SHA256). */
typedef struct af_service_key_s {
        char *key_id;
        char *principal;
        char *tenant;
        char *secret; /* resolved from secret_env; secret */
} af_service_key_t;

typedef struct af_catalog_s {
        af_task_type_t *task_types;
        size_t task_type_cnt;
        af_agent_t *agents;
        size_t agent_cnt;
        af_integration_t *integrations;
        size_t integration_cnt;
        af_token_t *tokens;
        size_t token_cnt;
        af_service_key_t *service_keys;
        size_t service_key_cnt;
        char hash[65]; /* sha256 hex of the file */
        char *path;
} af_catalog_t;

/* Load and validate (every agent tool and task target must exist, ...).
 * @returns NULL with errstr naming file, line and field. */
af_catalog_t *af_catalog_load(const char *path, char *errstr, size_t errstr_size);
/* Same from memory (tests, fuzzing); name is used in messages. */
af_catalog_t *af_catalog_parse(const char *name, const char *yaml, size_t len, char *errstr,
                               size_t errstr_size);
void af_catalog_destroy(af_catalog_t *cat); /* NULL is fine */

const af_task_type_t *af_catalog_task_type(const af_catalog_t *cat, const char *name);
const af_agent_t *af_catalog_agent(const af_catalog_t *cat, const char *name);
const af_integration_t *af_catalog_integration(const af_catalog_t *cat, const char *name);
/* Hash the bearer and compare against every token in constant time.
 * @returns the token or NULL. */
const af_token_t *af_catalog_authenticate(const af_catalog_t *cat, const char *bearer);
const af_service_key_t *af_catalog_service_key(const af_catalog_t *cat, const char *key_id);

#endif
