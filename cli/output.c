/*
 * output: how the CLI prints what the API returns — a readable "key  value" block or table
 * for people, one JSON document per line (--json) for scripts. The readers are tolerant of
 * the exact field names (id / task_id, status at the top or inside result) so that the CLI
 * keeps working while the API grows fields.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "jsonfmt.h"

const char *af_cli_json_str(const json_t *obj, const char *const *names) {
        for (; obj && *names; names++) {
                const char *s = json_string_value(json_object_get(obj, *names));
                if (s)
                        return s;
        }
        return NULL;
}

const char *af_cli_task_id(const json_t *task) {
        static const char *const names[] = {"id", "task_id", NULL};
        return af_cli_json_str(task, names);
}

af_cli_status_t af_cli_task_status(const json_t *task) {
        const char *s = json_string_value(json_object_get(task, "status"));
        const json_t *result;

        if (s)
                return af_cli_status_parse(s);
        result = json_object_get(task, "result");
        return af_cli_status_parse(json_string_value(json_object_get(result, "status")));
}

void af_cli_print_json(const json_t *v) {
        char *s = af_json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (s) {
                fputs(s, stdout);
                fputc('\n', stdout);
                free(s);
        }
        fflush(stdout);
}

/* One value as text: strings bare, everything else as compact JSON. */
static void print_value(const json_t *v) {
        char *s;

        if (json_is_string(v)) {
                fputs(json_string_value(v), stdout);
                return;
        }
        s = af_json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (s) {
                fputs(s, stdout);
                free(s);
        }
}

void af_cli_print_task(const json_t *task) {
        /* The fields a person looks for first, then everything else in the server's order. */
        static const char *const first[] = {"id", "task_id", "type", "status", NULL};
        const char *key;
        json_t *v;

        if (!json_is_object(task)) {
                print_value(task);
                fputc('\n', stdout);
                return;
        }
        for (size_t i = 0; first[i]; i++)
                if ((v = json_object_get(task, first[i])))
                        printf("%-18s ", first[i]), print_value(v), fputc('\n', stdout);
        json_object_foreach((json_t *) task, key, v) {
                bool seen = false;
                for (size_t i = 0; first[i]; i++)
                        seen |= !strcmp(key, first[i]);
                if (seen || json_is_null(v))
                        continue;
                printf("%-18s ", key);
                print_value(v);
                fputc('\n', stdout);
        }
        fflush(stdout);
}

void af_cli_print_table(FILE *out, size_t ncols, const char *const *header,
                        const char *const *cells, size_t nrows) {
        size_t width[16] = {0};

        if (ncols > sizeof(width) / sizeof(width[0]))
                ncols = sizeof(width) / sizeof(width[0]);
        for (size_t c = 0; c < ncols; c++) {
                width[c] = strlen(header[c]);
                for (size_t r = 0; r < nrows; r++) {
                        const char *v = cells[r * ncols + c];
                        size_t n = strlen(v ? v : "-");
                        if (n > width[c])
                                width[c] = n;
                }
        }
        for (size_t r = 0; r <= nrows; r++) {
                for (size_t c = 0; c < ncols; c++) {
                        const char *v = r ? cells[(r - 1) * ncols + c] : header[c];
                        if (!v)
                                v = "-";
                        if (c + 1 < ncols)
                                fprintf(out, "%-*s  ", (int) width[c], v);
                        else
                                fprintf(out, "%s\n", v);
                }
        }
        fflush(out);
}
