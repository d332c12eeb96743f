/*
 * docker-compose.yml cannot run on the build machines, so this keeps it true instead: it
 * names every service the fleet needs, workers can scale (no fixed name or host port), the
 * Kafka image is the version the scripts pin (scripts/kafka/pom.xml), our services run
 * binaries this build produces, and every AGENTFLEET_* variable in compose.env is a setting
 * the binaries accept (same table, same parser as the scripts' environment overrides), and
 * the Dockerfile installs every library package the scripts build with.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "config.h"
#include "yamlwalk.h"

static char *src_path(const char *rel) {
        static char path[4096];
        const char *root = getenv("AF_SOURCE_DIR");
        snprintf(path, sizeof(path), "%s/%s", root ? root : ".", rel);
        return path;
}

static af_ynode_t *load_compose(void) {
        char *data = NULL, errstr[512];
        size_t len;
        assert_int_equal(af_yaml_read_file(src_path("docker-compose.yml"), 1 << 20, &data, &len,
                                           errstr, sizeof(errstr)),
                         AF_OK);
        af_ynode_t *root = af_yaml_parse("docker-compose.yml", data, len, errstr, sizeof(errstr));
        if (!root)
                fail_msg("%s", errstr);
        free(data);
        return root;
}

static void test_compose_names_every_service(void **state) {
        af_ynode_t *root = load_compose();
        const af_ynode_t *services = af_yaml_get(root, "services");
        assert_non_null(services);
        const char *want[] = {"kafka", "redis", "topics", "simagent", "coordinator", "worker"};
        for (size_t i = 0; i < sizeof(want) / sizeof(*want); i++)
                if (!af_yaml_get(services, want[i]))
                        fail_msg("docker-compose.yml has no service '%s'", want[i]);
        /* --scale worker=N needs no fixed container name and no host port. */
        const af_ynode_t *worker = af_yaml_get(services, "worker");
        assert_null(af_yaml_get(worker, "container_name"));
        assert_null(af_yaml_get(worker, "ports"));
        af_yaml_free(root);
}

static void test_compose_kafka_version_matches_scripts(void **state) {
        char *pom = NULL, errstr[512];
        size_t len;
        assert_int_equal(af_yaml_read_file(src_path("scripts/kafka/pom.xml"), 1 << 20, &pom, &len,
                                           errstr, sizeof(errstr)),
                         AF_OK);
        const char *v = strstr(pom, "<kafka.version>");
        assert_non_null(v);
        v += strlen("<kafka.version>");
        char version[32] = "";
        sscanf(v, "%31[^<]", version);

        af_ynode_t *root = load_compose();
        const af_ynode_t *kafka = af_yaml_get(af_yaml_get(root, "services"), "kafka");
        const af_ynode_t *image = af_yaml_get(kafka, "image");
        assert_non_null(image);
        char want[64];
        snprintf(want, sizeof(want), "apache/kafka:%s", version);
        assert_string_equal(image->str, want);
        af_yaml_free(root);
        free(pom);
}

static void test_compose_commands_are_built_binaries(void **state) {
        af_ynode_t *root = load_compose();
        const af_ynode_t *services = af_yaml_get(root, "services");
        const char *ours[] = {"topics", "simagent", "coordinator", "worker"};
        const char *bindir = getenv("AF_BINARY_DIR");
        for (size_t i = 0; i < sizeof(ours) / sizeof(*ours); i++) {
                const af_ynode_t *svc = af_yaml_get(services, ours[i]);
                const af_ynode_t *build = af_yaml_get(svc, "build");
                assert_non_null(build);
                assert_string_equal(build->str, ".");
                const af_ynode_t *cmd = af_yaml_get(svc, "command");
                assert_non_null(cmd);
                assert_int_equal(cmd->kind, AF_YNODE_SEQ);
                if (bindir) {
                        char path[4096];
                        struct stat st;
                        snprintf(path, sizeof(path), "%s/%s", bindir, cmd->items[0]->str);
                        if (stat(path, &st) != 0)
                                fail_msg("service %s runs %s, which this build does not produce",
                                         ours[i], cmd->items[0]->str);
                }
        }
        af_yaml_free(root);
}

static void test_compose_env_are_real_settings(void **state) {
        FILE *f = fopen(src_path("compose.env"), "r");
        assert_non_null(f);
        char line[1024];
        char *envp[64];
        int n = 0;
        while (fgets(line, sizeof(line), f) && n < 63) {
                line[strcspn(line, "\n")] = '\0';
                if (line[0] == '#' || line[0] == '\0')
                        continue;
                assert_non_null(strchr(line, '='));
                envp[n++] = strdup(line);
        }
        fclose(f);
        envp[n] = NULL;
        assert_true(n >= 3);

        af_config_t *conf = af_config_new();
        char errstr[512] = "";
        af_err_t err = af_config_load_env(conf, envp, errstr, sizeof(errstr));
        if (err != AF_OK)
                fail_msg("compose.env: %s", errstr);
        assert_string_equal(af_config_str(conf, "redis.host"), "redis");
        assert_int_equal(af_config_int(conf, "redis.port"), 6379);
        af_config_destroy(conf);
        for (int i = 0; i < n; i++)
                free(envp[i]);
}

/* Every `--set name=value` in a service's command is a setting the binaries know, with a
 * value they accept (a typo there would stop the container at start). */
static void test_compose_set_options_are_real_settings(void **state) {
        af_ynode_t *root = load_compose();
        const af_ynode_t *services = af_yaml_get(root, "services");
        int seen = 0;
        for (size_t i = 0; i < services->cnt; i++) {
                const af_ynode_t *cmd = af_yaml_get(services->items[i], "command");
                if (!cmd || cmd->kind != AF_YNODE_SEQ)
                        continue;
                for (size_t j = 0; j + 1 < cmd->cnt; j++) {
                        if (strcmp(cmd->items[j]->str, "--set"))
                                continue;
                        af_config_t *conf = af_config_new();
                        char errstr[512] = "";
                        if (af_config_set_arg(conf, cmd->items[j + 1]->str, errstr,
                                              sizeof(errstr)) != AF_OK)
                                fail_msg("docker-compose.yml: --set %s: %s", cmd->items[j + 1]->str,
                                         errstr);
                        af_config_destroy(conf);
                        seen++;
                }
        }
        assert_true(seen >= 4);
        af_yaml_free(root);
}

/* Every lib*-dev package of scripts/lib.sh's AF_DEBIAN_PACKAGES (what the build links) is in
 * the Dockerfile too, so the image builds whatever the scripts build with; the sanitizer
 * runtime (libclang-rt-*) is for the test builds only. */
static void test_dockerfile_has_the_build_packages(void **state) {
        char *lib = NULL, *docker = NULL, errstr[512];
        size_t len;
        int seen = 0;

        assert_int_equal(af_yaml_read_file(src_path("scripts/lib.sh"), 1 << 20, &lib, &len, errstr,
                                           sizeof(errstr)),
                         AF_OK);
        assert_int_equal(af_yaml_read_file(src_path("Dockerfile"), 1 << 20, &docker, &len, errstr,
                                           sizeof(errstr)),
                         AF_OK);
        char *list = strstr(lib, "AF_DEBIAN_PACKAGES=(");
        assert_non_null(list);
        char *end = strchr(list, ')');
        assert_non_null(end);
        *end = '\0';
        for (char *tok = strtok(list + strlen("AF_DEBIAN_PACKAGES=("), " \t\n"); tok;
             tok = strtok(NULL, " \t\n")) {
                size_t n = strlen(tok);
                if (strncmp(tok, "lib", 3) || n < 5 || strcmp(tok + n - 4, "-dev") ||
                    !strncmp(tok, "libclang-rt-", 12))
                        continue;
                seen++;
                char word[128];
                snprintf(word, sizeof(word), " %s ", tok);
                if (!strstr(docker, word))
                        fail_msg("Dockerfile does not install %s (scripts/lib.sh does)", tok);
        }
        assert_true(seen >= 8);
        free(lib);
        free(docker);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_compose_names_every_service),
                cmocka_unit_test(test_compose_kafka_version_matches_scripts),
                cmocka_unit_test(test_compose_commands_are_built_binaries),
                cmocka_unit_test(test_compose_env_are_real_settings),
                cmocka_unit_test(test_compose_set_options_are_real_settings),
                cmocka_unit_test(test_dockerfile_has_the_build_packages),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
