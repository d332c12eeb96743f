/*
 * offsets: per partition, a queue of received offsets with a done flag; the head advances
 * over finished ones and its new position is what may be committed (see offsets.h).
 */
#include "offsets.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot_s {
        int64_t offset;
        bool done;
} slot_t;

typedef struct part_s {
        int32_t partition;
        uint64_t gen;
        slot_t *q;
        size_t head, tail, cap; /* live slots are q[head..tail) */
} part_t;

struct af_offsets_s {
        part_t *parts;
        size_t cnt;
};

af_offsets_t *af_offsets_new(void) {
        return calloc(1, sizeof(af_offsets_t));
}

void af_offsets_destroy(af_offsets_t *o) {
        if (!o)
                return;
        for (size_t i = 0; i < o->cnt; i++)
                free(o->parts[i].q);
        free(o->parts);
        free(o);
}

static part_t *part_get(af_offsets_t *o, int32_t partition, bool create) {
        for (size_t i = 0; i < o->cnt; i++)
                if (o->parts[i].partition == partition)
                        return &o->parts[i];
        if (!create)
                return NULL;
        part_t *parts = realloc(o->parts, (o->cnt + 1) * sizeof(*parts));
        if (!parts)
                return NULL;
        o->parts = parts;
        memset(&parts[o->cnt], 0, sizeof(parts[0]));
        parts[o->cnt].partition = partition;
        return &parts[o->cnt++];
}

af_err_t af_offsets_add(af_offsets_t *o, int32_t partition, int64_t offset, uint64_t *genp) {
        part_t *p = part_get(o, partition, true);
        if (!p)
                return AF_ERR_NOMEM;
        if (p->tail == p->cap) {
                if (p->head > 0) {
                        /* slide the live window to the front before growing */
                        memmove(p->q, p->q + p->head, (p->tail - p->head) * sizeof(slot_t));
                        p->tail -= p->head;
                        p->head = 0;
                }
                if (p->tail == p->cap) {
                        size_t cap = p->cap ? p->cap * 2 : 64;
                        slot_t *q = realloc(p->q, cap * sizeof(*q));
                        if (!q)
                                return AF_ERR_NOMEM;
                        p->q = q;
                        p->cap = cap;
                }
        }
        p->q[p->tail].offset = offset;
        p->q[p->tail].done = false;
        p->tail++;
        *genp = p->gen;
        return AF_OK;
}

int64_t af_offsets_done(af_offsets_t *o, int32_t partition, uint64_t gen, int64_t offset) {
        part_t *p = part_get(o, partition, false);
        int64_t next = -1;
        if (!p || p->gen != gen)
                return -1;
        for (size_t i = p->head; i < p->tail; i++)
                if (p->q[i].offset == offset) {
                        p->q[i].done = true;
                        break;
                }
        while (p->head < p->tail && p->q[p->head].done) {
                next = p->q[p->head].offset + 1;
                p->head++;
        }
        if (p->head == p->tail)
                p->head = p->tail = 0;
        return next;
}

void af_offsets_reset(af_offsets_t *o, int32_t partition) {
        part_t *p = part_get(o, partition, false);
        if (!p)
                return;
        p->gen++;
        p->head = p->tail = 0;
}

size_t af_offsets_pending(const af_offsets_t *o) {
        size_t n = 0;
        for (size_t i = 0; i < o->cnt; i++)
                n += o->parts[i].tail - o->parts[i].head;
        return n;
}
