/*
 * Fuzz target: the parsers of what a Redis server (or anything answering on its port) sends
 * back, which trust nothing in it: af_lease_parse_reply for every lease operation (each reply
 * shape and status word checked, never assumed) and af_redis_info_version for the
 * handshake's INFO text. They must never crash, read past what they were given, or accept
 * ACQUIRED without a positive fence.
 *
 * The replies are built from the input here, not read by hiredis: hiredis 0.14's reader
 * allocates a multi-bulk's element array at the length the bytes announce. Our connections
 * cap that at AF_REDIS_MAX_ELEMENTS (af_redis_reader_cap, unit-tested), but a few nested
 * headers at the cap still ask for more than libFuzzer's memory limit. What our code gets is
 * a redisReply tree of any shape, and that is what this builds: type, length and contents
 * from the bytes, arrays up to 6 elements and 3 levels deep.
 */
#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lease.h"
#include "redis.h"

typedef struct {
        const uint8_t *p;
        size_t n;
} input_t;

static uint8_t take(input_t *in) {
        if (!in->n)
                return 0;
        in->n--;
        return *in->p++;
}

static void reply_free(redisReply *r) {
        if (!r)
                return;
        for (size_t i = 0; i < r->elements; i++)
                reply_free(r->element[i]);
        free(r->element);
        free(r->str);
        free(r);
}

static redisReply *reply_build(input_t *in, int depth) {
        redisReply *r = calloc(1, sizeof(*r));
        if (!r)
                return NULL;
        uint8_t t = take(in);
        switch (t % 6) {
        case 0:
        case 1: /* a bulk string or a status: up to 255 bytes of the input, NUL-terminated */
        case 2: /* an error */
                r->type = t % 6 == 0   ? REDIS_REPLY_STRING
                          : t % 6 == 1 ? REDIS_REPLY_STATUS
                                       : REDIS_REPLY_ERROR;
                r->len = take(in);
                if (r->len > in->n)
                        r->len = in->n;
                if ((r->str = malloc(r->len + 1))) {
                        memcpy(r->str, in->p, r->len);
                        r->str[r->len] = '\0';
                }
                in->p += r->len;
                in->n -= r->len;
                break;
        case 3:
                r->type = REDIS_REPLY_INTEGER;
                for (int i = 0; i < 8; i++)
                        r->integer = (long long) ((unsigned long long) r->integer << 8 | take(in));
                break;
        case 4:
                r->type = REDIS_REPLY_NIL;
                break;
        default:
                r->type = REDIS_REPLY_ARRAY;
                r->elements = depth < 3 ? take(in) % 7 : 0;
                if (r->elements && !(r->element = calloc(r->elements, sizeof(*r->element))))
                        r->elements = 0;
                for (size_t i = 0; i < r->elements; i++)
                        r->element[i] = reply_build(in, depth + 1);
        }
        return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        input_t in = {data, size};
        char errstr[200];

        af_redis_info_version((const char *) data, size);
        while (in.n) {
                redisReply *r = reply_build(&in, 0);
                if (!r)
                        break;
                for (int op = AF_LEASE_OP_ACQUIRE; op <= AF_LEASE_OP_CANCEL; op++) {
                        af_lease_status_t st = AF_LEASE_LOST;
                        int64_t fence = 0;
                        const char *d = NULL;
                        size_t dlen = 0;
                        if (af_lease_parse_reply((af_lease_op_t) op, r, &st, &fence, &d, &dlen,
                                                 errstr, sizeof(errstr)) == AF_OK &&
                            st == AF_LEASE_ACQUIRED && fence <= 0)
                                abort();
                }
                if (r->type == REDIS_REPLY_STRING && r->str)
                        af_redis_info_version(r->str, r->len);
                reply_free(r);
        }
        return 0;
}
