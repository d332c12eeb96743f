/*
 * watermark: the contiguous-completion watermark (see watermark.h). Each partition keeps its
 * in-flight offsets in a sorted array used as a queue: delivered offsets are appended at the
 * tail, a finished one is found by binary search and flagged, and the done prefix is popped
 * from the head, which moves the watermark. The array is compacted when the head passes half
 * of it, so memory follows the number of offsets in flight, not the partition's history.
 */
#include "watermark.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
        int64_t offset;
        bool done;
} wm_entry_t;

typedef struct {
        int topic;
        int32_t partition;
        uint32_t epoch;
        bool active;   /* assigned (or first seen) and not revoked */
        wm_entry_t *e; /* e[head..tail) in flight, sorted by offset */
        size_t head, tail, alloc;
} wm_part_t;

struct af_watermark_s {
        wm_part_t *parts;
        size_t part_cnt, part_alloc;
        uint32_t next_epoch;
        size_t pending; /* sum of tail - head over all partitions */
};

af_watermark_t *af_watermark_new(void) {
        af_watermark_t *wm = calloc(1, sizeof(*wm));
        if (wm)
                wm->next_epoch = 1;
        return wm;
}

void af_watermark_destroy(af_watermark_t *wm) {
        if (!wm)
                return;
        for (size_t i = 0; i < wm->part_cnt; i++)
                free(wm->parts[i].e);
        free(wm->parts);
        free(wm);
}

/* @returns the partition's slot, creating it when create is set (NULL on OOM / absent). */
static wm_part_t *wm_part(af_watermark_t *wm, int topic, int32_t partition, bool create) {
        for (size_t i = 0; i < wm->part_cnt; i++)
                if (wm->parts[i].topic == topic && wm->parts[i].partition == partition)
                        return &wm->parts[i];
        if (!create)
                return NULL;
        if (wm->part_cnt == wm->part_alloc) {
                size_t n = wm->part_alloc ? wm->part_alloc * 2 : 16;
                wm_part_t *p = realloc(wm->parts, n * sizeof(*p));
                if (!p)
                        return NULL;
                wm->parts = p;
                wm->part_alloc = n;
        }
        wm_part_t *p = &wm->parts[wm->part_cnt++];
        memset(p, 0, sizeof(*p));
        p->topic = topic;
        p->partition = partition;
        p->epoch = wm->next_epoch++;
        p->active = true;
        return p;
}

static void wm_part_reset(af_watermark_t *wm, wm_part_t *p) {
        wm->pending -= p->tail - p->head;
        p->head = p->tail = 0;
}

void af_watermark_assign(af_watermark_t *wm, int topic, int32_t partition) {
        wm_part_t *p = wm_part(wm, topic, partition, true);
        if (!p)
                return;
        wm_part_reset(wm, p);
        p->epoch = wm->next_epoch++;
        p->active = true;
}

void af_watermark_revoke(af_watermark_t *wm, int topic, int32_t partition) {
        wm_part_t *p = wm_part(wm, topic, partition, false);
        if (!p)
                return;
        wm_part_reset(wm, p);
        p->active = false;
        p->epoch = wm->next_epoch++;
}

af_err_t af_watermark_track(af_watermark_t *wm, int topic, int32_t partition, int64_t offset,
                            uint32_t *epochp) {
        wm_part_t *p = wm_part(wm, topic, partition, true);
        if (!p)
                return AF_ERR_NOMEM;
        if (!p->active) {
                /* A message of a partition we were told was revoked: librdkafka has assigned
                 * it again (the assign callback may come after with some assignors). */
                p->active = true;
                p->epoch = wm->next_epoch++;
        }
        if (p->tail > p->head && offset <= p->e[p->tail - 1].offset)
                return AF_ERR_INVALID;
        if (p->tail == p->alloc) {
                if (p->head > 0 && p->head >= p->alloc / 2) {
                        memmove(p->e, p->e + p->head, (p->tail - p->head) * sizeof(*p->e));
                        p->tail -= p->head;
                        p->head = 0;
                } else {
                        size_t n = p->alloc ? p->alloc * 2 : 64;
                        wm_entry_t *e = realloc(p->e, n * sizeof(*e));
                        if (!e)
                                return AF_ERR_NOMEM;
                        p->e = e;
                        p->alloc = n;
                }
        }
        p->e[p->tail].offset = offset;
        p->e[p->tail].done = false;
        p->tail++;
        wm->pending++;
        *epochp = p->epoch;
        return AF_OK;
}

bool af_watermark_current(const af_watermark_t *wm, int topic, int32_t partition, uint32_t epoch) {
        const wm_part_t *p = wm_part((af_watermark_t *) wm, topic, partition, false);
        return p && p->active && p->epoch == epoch;
}

int64_t af_watermark_done(af_watermark_t *wm, int topic, int32_t partition, uint32_t epoch,
                          int64_t offset) {
        wm_part_t *p = wm_part(wm, topic, partition, false);
        size_t lo, hi;
        int64_t next = -1;

        if (!p || !p->active || p->epoch != epoch)
                goto out;
        lo = p->head;
        hi = p->tail;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (p->e[mid].offset < offset)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        if (lo == p->tail || p->e[lo].offset != offset)
                goto out;
        p->e[lo].done = true;
        while (p->head < p->tail && p->e[p->head].done) {
                next = p->e[p->head].offset + 1;
                p->head++;
                wm->pending--;
        }
        if (p->head == p->tail)
                p->head = p->tail = 0;
out:
        return next;
}

size_t af_watermark_pending(const af_watermark_t *wm) {
        return wm->pending;
}
