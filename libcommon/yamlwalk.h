/*
 * yamlwalk: the one YAML reader behind both config.c (settings) and catalog.c (task types,
 * agents, integrations, tokens). It turns libyaml's event stream into a small tree of maps,
 * sequences and scalars that remembers the 1-based line of every node and key, so that each
 * parser can say "agentfleet.yaml:12: redis.port: ..." without re-reading the file.
 *
 * The tree is built from events rather than with yaml_parser_load() so that outside input
 * cannot hurt us: aliases are refused (no billion laughs, no cycles), nesting depth and node
 * count are capped, and a duplicate key in one map is an error at parse time.
 *
 * Also here: the scalar conversions both parsers share (integers, booleans, durations with
 * units, sizes with units), so that "5s" or "1MiB" means the same everywhere.
 */
#ifndef AF_YAMLWALK_H
#define AF_YAMLWALK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define AF_YAML_MAX_DEPTH 64
#define AF_YAML_MAX_NODES 200000

typedef enum {
        AF_YNODE_SCALAR,
        AF_YNODE_MAP,
        AF_YNODE_SEQ,
} af_ynode_kind_t;

typedef struct af_ynode_s af_ynode_t;
struct af_ynode_s {
        af_ynode_kind_t kind;
        int line;           /* 1-based line where the node starts */
        char *key;          /* the key when this node is a map value, else NULL */
        int key_line;       /* 1-based line of that key */
        char *str;          /* SCALAR: the text (NUL-terminated, may hold NULs) */
        size_t len;         /* SCALAR: bytes of str */
        bool plain;         /* SCALAR: written without quotes (so `~` can be null) */
        af_ynode_t **items; /* MAP: values (each with .key); SEQ: items */
        size_t cnt;
        size_t alloc;
};

/* Parse one YAML document from memory. An empty input (or only comments) is an empty map.
 * `name` (a file name) only prefixes messages.
 * @returns the root (caller frees with af_yaml_free), or NULL with errstr like
 *   "agentfleet.yaml:3: malformed YAML: mapping values are not allowed in this context". */
af_ynode_t *af_yaml_parse(const char *name, const char *data, size_t len, char *errstr,
                          size_t errstr_size);
void af_yaml_free(af_ynode_t *n); /* NULL is fine */
/* Read a whole file of at most max_bytes into *data (NUL-terminated; caller frees).
 * @returns AF_ERR_CONFIG with errstr "path: cannot read: No such file or directory". */
af_err_t af_yaml_read_file(const char *path, size_t max_bytes, char **data, size_t *len,
                           char *errstr, size_t errstr_size);

/* @returns the value of key in a MAP node, or NULL (also when n is not a map). */
const af_ynode_t *af_yaml_get(const af_ynode_t *map, const char *key);
/* @returns "a scalar", "a map" or "a sequence", for messages. */
const char *af_yaml_kind_str(const af_ynode_t *n);
/* @returns whether n is a YAML null: an unquoted empty scalar, `~` or `null`. */
bool af_yaml_is_null(const af_ynode_t *n);

/* Scalar conversions. Each @returns true on success, never partial input. */
bool af_yaml_parse_int(const char *s, int64_t *out);
bool af_yaml_parse_bool(const char *s, bool *out);           /* true/false/yes/no/on/off/1/0 */
bool af_yaml_parse_duration(const char *s, int64_t *out_ms); /* 250ms 5s 2m 1h, bare = ms */
bool af_yaml_parse_size(const char *s, int64_t *out_bytes); /* 512 512B 64KiB 1MiB 1GiB, kB MB GB */
/* Render ms / bytes back in the largest exact unit ("5s", "1MiB"); out >= 32 bytes. */
void af_yaml_format_duration(int64_t ms, char *out, size_t out_size);
void af_yaml_format_size(int64_t bytes, char *out, size_t out_size);

/* Edit distance (a swap of neighbours counts as one edit), capped at `cap` + 1, for
 * "did you mean". */
size_t af_yaml_distance(const char *a, const char *b, size_t cap);

#endif
