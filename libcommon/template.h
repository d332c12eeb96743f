/*
 * template: `{{name}}` substitution for integration URLs, bodies and headers and for agents'
 * system prompts, over the task being run.
 *
 * Variables:
 *   {{payload}}            the task payload (a JSON value)
 *   {{payload.a.b}}        a field inside it (object keys; a numeric segment indexes an array)
 *   {{args}}, {{args.x}}   the arguments of a tool call (an agent asked for it)
 *   {{task.id}} {{task.type}} {{task.tenant}} {{task.principal}} {{task.case_key}}
 *   {{task.idempotency_key}} {{task.attempt}}
 * Whitespace inside the braces is ignored. A variable that does not resolve is an error
 * naming the variable, its offset and the missing segment: a task never goes out with a
 * silently empty field.
 *
 * How a value is written depends on where the template is used (af_template_mode_t): in a
 * URL strings are percent-encoded, in a JSON body every value is written as JSON (so a
 * string gets its quotes: write `{"id": {{payload.claim_id}}}`), in a header CR and LF are
 * refused, in text (prompts) strings are written as they are and other values as JSON.
 */
#ifndef AF_TEMPLATE_H
#define AF_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "buf.h"
#include "err.h"

typedef enum {
        AF_TEMPLATE_TEXT,   /* prompts: strings raw, other values as compact JSON */
        AF_TEMPLATE_URL,    /* strings/numbers/bools percent-encoded; objects refused */
        AF_TEMPLATE_JSON,   /* every value as JSON text */
        AF_TEMPLATE_HEADER, /* like TEXT, but a value with CR or LF is refused */
} af_template_mode_t;

/* What a template can see. Every field may be NULL (then its variables do not resolve). */
typedef struct af_template_vars_s {
        const json_t *payload;
        const json_t *args;
        const char *task_id;
        const char *task_type;
        const char *tenant;
        const char *principal;
        const char *case_key;
        const char *idempotency_key;
        int attempt; /* 0 = unknown */
} af_template_vars_t;

/* Render tmpl into out (appended; out's cap bounds the result).
 * @returns AF_OK, AF_ERR_INVALID with errstr like
 *   "template \"/crm/{{payload.claim}}\": {{payload.claim}} at offset 5: payload has no
 *    field \"claim\"", or AF_ERR_TOO_LARGE (out over its cap; out is freed). Any thread. */
af_err_t af_template_render(const char *tmpl, af_template_mode_t mode,
                            const af_template_vars_t *vars, af_buf_t *out, char *errstr,
                            size_t errstr_size);

/* Check a template's syntax and variable roots without values (config load).
 * @returns AF_OK or AF_ERR_INVALID with errstr. */
af_err_t af_template_check(const char *tmpl, char *errstr, size_t errstr_size);

/* @returns whether tmpl (NULL: none) names a variable of root ("payload": {{payload}},
 * {{ payload.a.b }}), so that a caller can skip building what no template reads. */
bool af_template_reads(const char *tmpl, const char *root);

#endif
