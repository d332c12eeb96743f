/*
 * config: process settings from one YAML file plus AGENTFLEET_* environment overrides, driven
 * by one settings table (config_table.c: name, type, default, bounds, description, flags)
 * that also produces `--help` and the generated CONFIGURATION.md.
 *
 * YAML maps nest into dotted names (`kafka: {bootstrap.servers: x}` is `kafka.bootstrap.servers`).
 * `kafka.*` keys are not in the table: they pass straight to librdkafka. The top-level
 * sections that describe the catalog (task_types, agents, integrations, tokens,
 * service_keys) belong to catalog.c and are skipped here. Precedence, lowest first: table
 * default, file, environment (AGENTFLEET_REDIS_PORT -> redis.port;
 * AGENTFLEET_KAFKA_BOOTSTRAP_SERVERS -> kafka.bootstrap.servers), then af_config_set() (the
 * command line). Errors name the file, line and key, and what was expected.
 */
#ifndef AF_CONFIG_H
#define AF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

typedef enum {
        AF_SETTING_STRING,
        AF_SETTING_INT,      /* int64 within [min, max] */
        AF_SETTING_BOOL,     /* true/false/yes/no/on/off/1/0 */
        AF_SETTING_DURATION, /* int64 ms; accepts 250ms, 5s, 2m, 1h or a bare ms number */
        AF_SETTING_SIZE,     /* int64 bytes; accepts 512, 64KiB, 1MiB */
} af_setting_type_t;

/* Which programs read a setting (for --help of each program). */
#define AF_SCOPE_COORDINATOR 0x1
#define AF_SCOPE_WORKER      0x2
#define AF_SCOPE_CLI         0x4
#define AF_SCOPE_SIMAGENT    0x8
#define AF_SCOPE_ALL         0xF

#define AF_SETTING_F_SECRET 0x1 /* value is never logged or printed (redacted) */

typedef struct af_setting_s {
        const char *name; /* dotted: "redis.port" */
        af_setting_type_t type;
        const char *def;  /* default as text, parsed like any other value; NULL=unset */
        int64_t min, max; /* bounds for INT/DURATION/SIZE */
        unsigned scope;   /* AF_SCOPE_* */
        unsigned flags;   /* AF_SETTING_F_* */
        const char *desc;
} af_setting_t;

/* The one table (config_table.c). */
extern const af_setting_t af_settings[];
extern const size_t af_settings_cnt;

typedef struct af_config_s af_config_t;

/* @returns a config holding every table default. Never NULL except on OOM. */
af_config_t *af_config_new(void);
void af_config_destroy(af_config_t *conf); /* NULL is fine */

/* Load a YAML file (path may be NULL: defaults + environment only), then the environment.
 * @returns AF_ERR_CONFIG with errstr like
 *   "agentfleet.yaml:12: redis.port: expected an integer in [1, 65535], got \"abc\"". */
af_err_t af_config_load(af_config_t *conf, const char *path, char *errstr, size_t errstr_size);
/* Apply AGENTFLEET_* variables from envp-style array (environ when NULL). */
af_err_t af_config_load_env(af_config_t *conf, char **envp, char *errstr, size_t errstr_size);
/* Set one value by name ("redis.port", "kafka.linger.ms"), as from `--set name=value`. */
af_err_t af_config_set(af_config_t *conf, const char *name, const char *value, char *errstr,
                       size_t errstr_size);

/* Apply one command-line "name=value" (the argument of --set) with af_config_set().
 * @returns AF_ERR_CONFIG with errstr "--set x: expected name=value" when there is no '='. */
af_err_t af_config_set_arg(af_config_t *conf, const char *arg, char *errstr, size_t errstr_size);

/* Typed getters; the name must be in the table (abort otherwise: a programming error). */
const char *af_config_str(const af_config_t *conf, const char *name); /* NULL when unset */
int64_t af_config_int(const af_config_t *conf, const char *name);     /* INT/DURATION/SIZE */
bool af_config_bool(const af_config_t *conf, const char *name);
/* Path of the YAML file loaded, or NULL. */
const char *af_config_path(const af_config_t *conf);

/* The settings that only hold together: worker.done_ttl must be at least
 * coordinator.idempotency_ttl, because a coordinator that takes over an in-doubt admission
 * republishes its Task, and only a done record still in Redis keeps a worker from running that
 * task a second time; coordinator.index_ttl too, because a repeated submit reads its task's
 * index entry, and one that finds none publishes the task again. Checked by every daemon, so
 * a fleet sharing one file refuses it everywhere.
 * @returns AF_ERR_CONFIG with errstr naming both values. */
af_err_t af_config_check_relations(const af_config_t *conf, char *errstr, size_t errstr_size);

/* Every kafka.* key with the "kafka." stripped, in the order set. */
typedef void(af_config_kv_cb_t)(const char *key, const char *value, void *opaque);
void af_config_kafka_foreach(const af_config_t *conf, af_config_kv_cb_t *cb, void *opaque);

/* Print the settings of `scope` as --help text / the whole table as CONFIGURATION.md. */
void af_config_print_help(FILE *out, unsigned scope);
void af_config_print_markdown(FILE *out);

#endif
