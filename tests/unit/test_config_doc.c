/*
 * Keeps CONFIGURATION.md true: renders af_config_print_markdown (the settings table of
 * libcommon/config_table.c) into memory and compares it with the committed file. After a
 * change to the table, regenerate the file with AF_REGEN=1 (the test then rewrites it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "yamlwalk.h"

static void test_configuration_md_is_current(void **state) {
        const char *src = getenv("AF_SOURCE_DIR");
        const char *regen = getenv("AF_REGEN");
        char path[1024], errstr[512];
        char *want = NULL, *have = NULL;
        size_t want_len = 0, have_len = 0;
        FILE *f;

        assert_non_null(src);
        snprintf(path, sizeof(path), "%s/CONFIGURATION.md", src);
        f = open_memstream(&want, &want_len);
        assert_non_null(f);
        af_config_print_markdown(f);
        fclose(f);

        if (regen && !strcmp(regen, "1")) {
                f = fopen(path, "w");
                assert_non_null(f);
                assert_int_equal(fwrite(want, 1, want_len, f), want_len);
                assert_int_equal(fclose(f), 0);
                printf("rewrote %s\n", path);
        }
        if (af_yaml_read_file(path, 1 << 22, &have, &have_len, errstr, sizeof(errstr))) {
                free(want);
                fail_msg("%s\nCreate it with: AF_REGEN=1 ctest -R test_config_doc", errstr);
        }
        if (have_len != want_len || memcmp(have, want, want_len)) {
                free(want);
                free(have);
                fail_msg("CONFIGURATION.md does not match libcommon/config_table.c.\n"
                         "Regenerate it with: AF_REGEN=1 ctest -R test_config_doc "
                         "(from the build folder), then commit it.");
        }
        free(want);
        free(have);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_configuration_md_is_current),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
