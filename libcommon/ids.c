/*
 * ids: ULID generation and validation, random numbers.
 */
#include "ids.h"

#include <pthread.h>
#include <string.h>
#include <sys/random.h>

#include "clock.h"

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static pthread_mutex_t ulid_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t ulid_last_ms = -1;
static uint8_t ulid_last_rand[10];

void af_random_bytes(void *p, size_t n) {
        uint8_t *out = p;
        while (n > 0) {
                ssize_t r = getrandom(out, n, 0);
                if (r <= 0)
                        continue; /* EINTR; getrandom on Linux >= 3.17 does not fail otherwise */
                out += r;
                n -= (size_t) r;
        }
}

uint64_t af_rand_u64(void) {
        static __thread uint64_t s;
        if (!s) {
                while (!s)
                        af_random_bytes(&s, sizeof(s));
        }
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        return s;
}

/* Increment an 80-bit big-endian number; @returns false on overflow. */
static bool rand80_incr(uint8_t r[10]) {
        for (int i = 9; i >= 0; i--) {
                if (++r[i] != 0)
                        return true;
        }
        return false;
}

static void ulid_encode_time(char *out, int64_t ms) {
        uint64_t t = (uint64_t) ms & 0xFFFFFFFFFFFFULL;
        for (int i = 9; i >= 0; i--) {
                out[i] = crockford[t & 31];
                t >>= 5;
        }
}

void af_ulid_time_prefix(int64_t unix_ms, char out[11]) {
        ulid_encode_time(out, unix_ms < 0 ? 0 : unix_ms);
        out[10] = '\0';
}

void af_ulid_encode(char out[AF_ULID_LEN + 1], int64_t unix_ms, const uint8_t rand80[10]) {
        ulid_encode_time(out, unix_ms < 0 ? 0 : unix_ms);
        /* 80 random bits -> 16 chars of 5 bits, most significant first. Two 40-bit halves of 8
         * chars each: a shift per char, not a loop per bit (every audit event mints a ULID). */
        for (int half = 0; half < 2; half++) {
                const uint8_t *b = rand80 + 5 * half;
                uint64_t v = (uint64_t) b[0] << 32 | (uint64_t) b[1] << 24 | (uint64_t) b[2] << 16 |
                             (uint64_t) b[3] << 8 | b[4];
                for (int i = 7; i >= 0; i--) {
                        out[10 + 8 * half + i] = crockford[v & 31];
                        v >>= 5;
                }
        }
        out[AF_ULID_LEN] = '\0';
}

void af_ulid_new_at(char out[AF_ULID_LEN + 1], int64_t ms) {
        uint8_t r[10];
        pthread_mutex_lock(&ulid_lock);
        if (ms <= ulid_last_ms) {
                /* Same (or stepped-back) millisecond: keep order by incrementing. */
                ms = ulid_last_ms;
                if (!rand80_incr(ulid_last_rand)) {
                        ms = ++ulid_last_ms;
                        af_random_bytes(ulid_last_rand, sizeof(ulid_last_rand));
                }
        } else {
                ulid_last_ms = ms;
                af_random_bytes(ulid_last_rand, sizeof(ulid_last_rand));
                ulid_last_rand[0] &= 0x7F; /* headroom so increments rarely overflow */
        }
        memcpy(r, ulid_last_rand, sizeof(r));
        pthread_mutex_unlock(&ulid_lock);
        af_ulid_encode(out, ms, r);
}

void af_ulid_new(char out[AF_ULID_LEN + 1]) {
        af_ulid_new_at(out, af_clock_wall_ms());
}

static int crockford_val(char c) {
        const char *p = c ? strchr(crockford, c) : NULL;
        return p ? (int) (p - crockford) : -1;
}

bool af_ulid_valid(const char *s) {
        if (!s || strlen(s) != AF_ULID_LEN)
                return false;
        for (int i = 0; i < AF_ULID_LEN; i++)
                if (crockford_val(s[i]) < 0)
                        return false;
        return crockford_val(s[0]) <= 7; /* 10 chars = 50 bits; only 48 are used */
}

int64_t af_ulid_time_ms(const char *s) {
        if (!af_ulid_valid(s))
                return -1;
        int64_t t = 0;
        for (int i = 0; i < 10; i++)
                t = (t << 5) | crockford_val(s[i]);
        return t;
}
