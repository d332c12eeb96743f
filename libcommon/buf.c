/*
 * buf: growable byte buffer with a hard cap.
 */
#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void af_buf_init(af_buf_t *b, size_t cap) {
        b->data = NULL;
        b->len = 0;
        b->alloc = 0;
        b->cap = cap;
}

af_err_t af_buf_append(af_buf_t *b, const void *p, size_t n) {
        if (n > b->cap || b->len > b->cap - n) {
                af_buf_free(b);
                return AF_ERR_TOO_LARGE;
        }
        size_t need = b->len + n + 1;
        if (need > b->alloc) {
                size_t alloc = b->alloc ? b->alloc : 64;
                while (alloc < need)
                        alloc = alloc > SIZE_MAX / 2 ? need : alloc * 2;
                char *data = realloc(b->data, alloc);
                if (!data) {
                        af_buf_free(b);
                        return AF_ERR_NOMEM;
                }
                b->data = data;
                b->alloc = alloc;
        }
        if (n)
                memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
        return AF_OK;
}

af_err_t af_buf_reserve(af_buf_t *b, size_t n) {
        if (n > b->cap || b->len > b->cap - n)
                return AF_ERR_TOO_LARGE;
        size_t need = b->len + n + 1;
        if (need <= b->alloc)
                return AF_OK;
        char *data = realloc(b->data, need);
        if (!data)
                return AF_ERR_NOMEM;
        if (!b->data)
                data[0] = '\0';
        b->data = data;
        b->alloc = need;
        return AF_OK;
}

size_t af_i64_to_str(char out[AF_I64_STR_SIZE], int64_t v) {
        char tmp[AF_I64_STR_SIZE];
        char *p = tmp + sizeof(tmp);
        /* Negate in unsigned arithmetic: -INT64_MIN does not fit an int64_t. */
        uint64_t u = v < 0 ? 0 - (uint64_t) v : (uint64_t) v;
        size_t n;

        *--p = '\0';
        do {
                *--p = (char) ('0' + u % 10);
                u /= 10;
        } while (u);
        if (v < 0)
                *--p = '-';
        n = (size_t) (tmp + sizeof(tmp) - p);
        memcpy(out, p, n);
        return n - 1;
}

af_err_t af_buf_append_i64(af_buf_t *b, int64_t v) {
        char tmp[AF_I64_STR_SIZE];
        size_t n = af_i64_to_str(tmp, v);
        return af_buf_append(b, tmp, n);
}

af_err_t af_buf_puts(af_buf_t *b, const char *s) {
        return af_buf_append(b, s, strlen(s));
}

af_err_t af_buf_vprintf(af_buf_t *b, const char *fmt, va_list ap) {
        char small[256];
        va_list ap2;
        va_copy(ap2, ap);
        int n = vsnprintf(small, sizeof(small), fmt, ap2);
        va_end(ap2);
        if (n < 0)
                return AF_ERR_INVALID;
        if ((size_t) n < sizeof(small))
                return af_buf_append(b, small, (size_t) n);
        char *big = malloc((size_t) n + 1);
        if (!big)
                return AF_ERR_NOMEM;
        vsnprintf(big, (size_t) n + 1, fmt, ap);
        af_err_t err = af_buf_append(b, big, (size_t) n);
        free(big);
        return err;
}

af_err_t af_buf_printf(af_buf_t *b, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        af_err_t err = af_buf_vprintf(b, fmt, ap);
        va_end(ap);
        return err;
}

void af_buf_reset(af_buf_t *b) {
        b->len = 0;
        if (b->data)
                b->data[0] = '\0';
}

void af_buf_free(af_buf_t *b) {
        free(b->data);
        b->data = NULL;
        b->len = 0;
        b->alloc = 0;
}

const char *af_buf_str(const af_buf_t *b) {
        return b->data ? b->data : "";
}

char *af_buf_steal(af_buf_t *b, size_t *lenp) {
        char *p = b->data;
        if (lenp)
                *lenp = b->len;
        b->data = NULL;
        b->len = 0;
        b->alloc = 0;
        return p;
}
