/*
 * Keeps openapi.yaml true: every route the coordinator registers (its --print-routes table,
 * the same table api.c registers from) is documented with its method, every documented
 * operation is a registered route, and each operation documents its responses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define MAX_OPS 128

typedef struct ops_s {
        char items[MAX_OPS][256]; /* "METHOD /path" */
        size_t cnt;
} ops_t;

static bool ops_has(const ops_t *o, const char *s) {
        for (size_t i = 0; i < o->cnt; i++)
                if (!strcmp(o->items[i], s))
                        return true;
        return false;
}

static yaml_node_t *map_get(yaml_document_t *doc, yaml_node_t *map, const char *key) {
        if (!map || map->type != YAML_MAPPING_NODE)
                return NULL;
        for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
             p++) {
                yaml_node_t *k = yaml_document_get_node(doc, p->key);
                if (k && k->type == YAML_SCALAR_NODE && !strcmp((char *) k->data.scalar.value, key))
                        return yaml_document_get_node(doc, p->value);
        }
        return NULL;
}

static void load_documented(ops_t *doc_ops) {
        const char *src = getenv("AF_SOURCE_DIR");
        char path[1024];
        static const char *methods[] = {"get", "put", "post", "delete", "patch", "head", "options"};
        yaml_parser_t parser;
        yaml_document_t doc;

        snprintf(path, sizeof(path), "%s/openapi.yaml", src ? src : "..");
        FILE *f = fopen(path, "rb");
        if (!f)
                fail_msg("cannot open %s", path);
        assert_true(yaml_parser_initialize(&parser));
        yaml_parser_set_input_file(&parser, f);
        if (!yaml_parser_load(&parser, &doc))
                fail_msg("%s: YAML error at line %zu: %s", path, parser.problem_mark.line + 1,
                         parser.problem ? parser.problem : "?");
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        yaml_node_t *ver = map_get(&doc, root, "openapi");
        assert_non_null(ver);
        assert_int_equal(strncmp((char *) ver->data.scalar.value, "3.", 2), 0);
        yaml_node_t *paths = map_get(&doc, root, "paths");
        assert_non_null(paths);
        assert_int_equal(paths->type, YAML_MAPPING_NODE);
        for (yaml_node_pair_t *p = paths->data.mapping.pairs.start;
             p < paths->data.mapping.pairs.top; p++) {
                yaml_node_t *k = yaml_document_get_node(&doc, p->key);
                yaml_node_t *v = yaml_document_get_node(&doc, p->value);
                for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
                        yaml_node_t *op = map_get(&doc, v, methods[m]);
                        if (!op)
                                continue;
                        char up[16];
                        size_t i;
                        for (i = 0; methods[m][i] && i < sizeof(up) - 1; i++)
                                up[i] = (char) (methods[m][i] - 'a' + 'A');
                        up[i] = '\0';
                        assert_true(doc_ops->cnt < MAX_OPS);
                        snprintf(doc_ops->items[doc_ops->cnt++], 256, "%s %s", up,
                                 (char *) k->data.scalar.value);
                        if (!map_get(&doc, op, "responses"))
                                fail_msg("%s %s: no responses documented", up,
                                         (char *) k->data.scalar.value);
                }
        }
        yaml_document_delete(&doc);
        yaml_parser_delete(&parser);
        fclose(f);
}

static void load_registered(ops_t *reg) {
        const char *bin = getenv("AF_BINARY_DIR");
        char cmd[1024], line[200];
        snprintf(cmd, sizeof(cmd), "%s/agentfleet-coordinator --print-routes", bin ? bin : ".");
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        while (fgets(line, sizeof(line), p)) {
                line[strcspn(line, "\r\n")] = '\0';
                if (!*line)
                        continue;
                assert_true(reg->cnt < MAX_OPS);
                snprintf(reg->items[reg->cnt++], 256, "%s", line);
        }
        int rc = pclose(p);
        if (rc != 0)
                fail_msg("%s exited with %d (is the coordinator built?)", cmd, rc);
}

static void test_openapi_matches_routes(void **state) {
        static ops_t doc, reg;
        load_documented(&doc);
        load_registered(&reg);
        assert_true(reg.cnt >= 7);
        for (size_t i = 0; i < reg.cnt; i++)
                if (!ops_has(&doc, reg.items[i]))
                        fail_msg("route \"%s\" is registered but not in openapi.yaml",
                                 reg.items[i]);
        for (size_t i = 0; i < doc.cnt; i++)
                if (!ops_has(&reg, doc.items[i]))
                        fail_msg("openapi.yaml documents \"%s\" but the coordinator has no such "
                                 "route",
                                 doc.items[i]);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_openapi_matches_routes),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
