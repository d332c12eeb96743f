/*
 * crypto: SHA-256, HMAC-SHA256, hex and constant-time comparison over OpenSSL.
 */
#include "crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

void af_sha256(const void *data, size_t len, uint8_t out[AF_SHA256_LEN]) {
        unsigned int n = AF_SHA256_LEN;
        EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

void af_hex_encode(const uint8_t *in, size_t n, char *out) {
        static const char hex[] = "0123456789abcdef";
        for (size_t i = 0; i < n; i++) {
                out[2 * i] = hex[in[i] >> 4];
                out[2 * i + 1] = hex[in[i] & 15];
        }
        out[2 * n] = '\0';
}

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

bool af_hex_decode(const char *hex, uint8_t *out, size_t n) {
        for (size_t i = 0; i < n; i++) {
                if (!hex[2 * i] || !hex[2 * i + 1])
                        return false;
                int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return false;
                out[i] = (uint8_t) (hi << 4 | lo);
        }
        return hex[2 * n] == '\0';
}

void af_sha256_hex(const void *data, size_t len, char out[AF_SHA256_HEX_LEN + 1]) {
        uint8_t md[AF_SHA256_LEN];
        af_sha256(data, len, md);
        af_hex_encode(md, sizeof(md), out);
}

void af_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                    uint8_t out[AF_SHA256_LEN]) {
        unsigned int n = AF_SHA256_LEN;
        HMAC(EVP_sha256(), key, (int) key_len, data, len, out, &n);
}

void af_hmac_sha256_hex(const void *key, size_t key_len, const void *data, size_t len,
                        char out[AF_SHA256_HEX_LEN + 1]) {
        uint8_t md[AF_SHA256_LEN];
        af_hmac_sha256(key, key_len, data, len, md);
        af_hex_encode(md, sizeof(md), out);
}

bool af_const_eq(const void *a, const void *b, size_t n) {
        return CRYPTO_memcmp(a, b, n) == 0;
}
