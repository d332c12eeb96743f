/*
 * config_buffer: additions to config.h (kept apart so config.h stays the contract it was):
 * loading settings from YAML already in memory (tests, the fuzzer, a config received over a
 * channel other than a file) and asking whether a setting still holds its table default
 * (the daemons warn while audit.hmac_key is the public development key), and the name of a
 * setting's environment variable.
 */
#ifndef AF_CONFIG_BUFFER_H
#define AF_CONFIG_BUFFER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* Apply the settings in a YAML document held in memory, exactly as af_config_load applies a
 * file, but without reading the environment. `name` prefixes messages ("x.yaml:3: ...").
 * On error some settings of the document may already be applied: discard the config. */
af_err_t af_config_load_buffer(af_config_t *conf, const char *name, const char *data, size_t len,
                               char *errstr, size_t errstr_size);

/* @returns true while nothing (file, environment, af_config_set) has set `name`. */
bool af_config_is_default(const af_config_t *conf, const char *name);

/* Write the environment variable of setting `name` into out: AGENTFLEET_ + upper case with
 * '.' -> '_' ("redis.port" -> "AGENTFLEET_REDIS_PORT"). */
void af_config_env_name(const char *name, char *out, size_t out_size);

#endif
