/*
 * Fuzz target for the YAML config readers: the same arbitrary bytes go through the settings
 * loader (af_config_load_buffer) and the catalog parser (af_catalog_parse), which share the
 * YAML tree of yamlwalk.c. Both must refuse bad input with a message (in UTF-8, whatever the
 * input) and never crash, leak or loop; a successful catalog must also answer lookups and
 * authentication.
 *
 *   cmake -DAF_FUZZ=ON -DCMAKE_C_COMPILER=clang ... && ./fuzz_config -max_total_time=30
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "catalog.h"
#include "config.h"
#include "config_buffer.h"
#include "log.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char errstr[512];
        af_config_t *conf;
        af_catalog_t *cat;

        af_log_init("fuzz_config", AF_LOG_OFF);
        conf = af_config_new();
        if (conf) {
                errstr[0] = '\0';
                if (af_config_load_buffer(conf, "fuzz.yaml", (const char *) data, size, errstr,
                                          sizeof(errstr)) != AF_OK &&
                    (!errstr[0] || af_utf8_prefix(errstr, strlen(errstr)) != strlen(errstr)))
                        __builtin_trap(); /* every refusal says why, as text */
                (void) af_config_int(conf, "redis.port");
                (void) af_config_str(conf, "log.level");
                af_config_destroy(conf);
        }

        errstr[0] = '\0';
        cat = af_catalog_parse("fuzz.yaml", (const char *) data, size, errstr, sizeof(errstr));
        if (!cat && (!errstr[0] || af_utf8_prefix(errstr, strlen(errstr)) != strlen(errstr)))
                __builtin_trap();
        if (cat) {
                for (size_t i = 0; i < cat->task_type_cnt; i++)
                        if (!af_catalog_task_type(cat, cat->task_types[i].name))
                                __builtin_trap();
                (void) af_catalog_authenticate(cat, "demo-intake-token");
                af_catalog_destroy(cat);
        }
        /* Secret settings register their values for redaction: start each input afresh. */
        af_log_redact_clear();
        return 0;
}
