/*
 * crypto: the few primitives agentfleet needs, on OpenSSL libcrypto: SHA-256 (config hashes,
 * token storage, the audit chain), HMAC-SHA256 (signed TaskRequests, audit HMACs) and a
 * constant-time comparison for anything secret.
 */
#ifndef AF_CRYPTO_H
#define AF_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AF_SHA256_LEN     32
#define AF_SHA256_HEX_LEN 64

void af_sha256(const void *data, size_t len, uint8_t out[AF_SHA256_LEN]);
/* out gets 64 hex chars and a NUL. */
void af_sha256_hex(const void *data, size_t len, char out[AF_SHA256_HEX_LEN + 1]);
void af_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                    uint8_t out[AF_SHA256_LEN]);
void af_hmac_sha256_hex(const void *key, size_t key_len, const void *data, size_t len,
                        char out[AF_SHA256_HEX_LEN + 1]);
/* Lower-case hex of n bytes into out (2n+1 bytes). */
void af_hex_encode(const uint8_t *in, size_t n, char *out);
/* @returns true if hex is exactly 2n hex chars, decoded into out. */
bool af_hex_decode(const char *hex, uint8_t *out, size_t n);
/* Compare n bytes without early exit. */
bool af_const_eq(const void *a, const void *b, size_t n);

#endif
