/*
 * ids: ULIDs (26 Crockford base32 chars: 48-bit ms timestamp + 80 random bits), sortable by
 * creation time and monotonic within a millisecond inside one process (the random part is
 * incremented), so task ids sort the way they were admitted.
 */
#ifndef AF_IDS_H
#define AF_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AF_ULID_LEN 26

/* Write a new ULID and its NUL into out. Thread-safe. */
void af_ulid_new(char out[AF_ULID_LEN + 1]);
/* Same with a given unix-ms timestamp (for tests). */
void af_ulid_new_at(char out[AF_ULID_LEN + 1], int64_t unix_ms);
/* The 10-character time part of every ULID minted at unix_ms, and a NUL: ULIDs of earlier
 * milliseconds sort below it, so it cuts a ULID-ordered set by time. */
void af_ulid_time_prefix(int64_t unix_ms, char out[11]);

/* The ULID of a time and 80 random bits (big-endian), in Crockford base32. */
void af_ulid_encode(char out[AF_ULID_LEN + 1], int64_t unix_ms, const uint8_t rand80[10]);
/* @returns whether s is a syntactically valid ULID (length, alphabet, no overflow). */
bool af_ulid_valid(const char *s);
/* @returns the ms timestamp of a valid ULID, -1 otherwise. */
int64_t af_ulid_time_ms(const char *s);

/* A 64-bit random number from a per-process xorshift seeded from the OS. Not for secrets. */
uint64_t af_rand_u64(void);
/* Fill p with n bytes from the OS CSPRNG (getrandom). For tokens, leases, secrets. */
void af_random_bytes(void *p, size_t n);

#endif
