/*
 * buf: a growable byte buffer with a hard cap (after curl's dynbuf).
 *
 * Every buffer that holds outside input has a cap fixed by that input's limit; an append that
 * would pass it fails with AF_ERR_TOO_LARGE and frees the buffer, so a failed read never
 * leaves half a message behind. The content is always NUL-terminated (not counted in len).
 */
#ifndef AF_BUF_H
#define AF_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct af_buf_s {
        char *data;   /* NUL-terminated, NULL while empty and unallocated */
        size_t len;   /* bytes used, excluding the terminator */
        size_t alloc; /* bytes allocated */
        size_t cap;   /* hard limit on len */
} af_buf_t;

void af_buf_init(af_buf_t *b, size_t cap);
/* Append n bytes. @returns AF_ERR_TOO_LARGE (buffer freed) past the cap, AF_ERR_NOMEM. */
af_err_t af_buf_append(af_buf_t *b, const void *p, size_t n);
af_err_t af_buf_puts(af_buf_t *b, const char *s);
af_err_t af_buf_printf(af_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Room for any int64_t in decimal: "-9223372036854775808" and the NUL. */
#define AF_I64_STR_SIZE 21
/* Write v in decimal, NUL-terminated: what printf's %lld writes, without printf's cost on a
 * hot path. @returns the length (without the NUL). */
size_t af_i64_to_str(char out[AF_I64_STR_SIZE], int64_t v);
/* Append v in decimal (af_i64_to_str). */
af_err_t af_buf_append_i64(af_buf_t *b, int64_t v);
/* Make room for n more bytes now (within the cap), so that appends up to that size do not
 * reallocate. @returns AF_OK, AF_ERR_NOMEM (buffer kept), or AF_ERR_TOO_LARGE (buffer kept:
 * nothing was appended). */
af_err_t af_buf_reserve(af_buf_t *b, size_t n);
af_err_t af_buf_vprintf(af_buf_t *b, const char *fmt, va_list ap);
/* Empty the buffer but keep its allocation for reuse. */
void af_buf_reset(af_buf_t *b);
/* Free the allocation; the buffer may be used again (same cap). */
void af_buf_free(af_buf_t *b);
/* @returns the content ("" when empty); valid until the next append or free. */
const char *af_buf_str(const af_buf_t *b);
/* Hand the allocation to the caller (must free()); the buffer is left empty. */
char *af_buf_steal(af_buf_t *b, size_t *lenp);

#endif
