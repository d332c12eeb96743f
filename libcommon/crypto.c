/*
 * crypto: SHA-256, HMAC-SHA256, hex and constant-time comparison over OpenSSL.
 *
 * The hot callers are the audit chain (a SHA-256 and an HMAC per audit event, several events
 * per task) and request signatures. OpenSSL 3's one-shot calls (EVP_Digest with
 * EVP_sha256(), HMAC()) look the algorithm up in the provider tables and build a fresh
 * context on every call, which cost more than hashing a small event. So each thread keeps
 * its fetched algorithms and one reusable context per primitive; the HMAC context stays keyed
 * with the last key used (almost always the same one), and a one-shot call remains the
 * fallback when any of this fails.
 */
#include "crypto.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* Per-thread state, created on first use and kept for the thread's life. */
typedef struct crypto_cache_s {
        EVP_MD *sha256;       /* fetched once */
        EVP_MD_CTX *md_ctx;   /* reused by every af_sha256 */
        EVP_MAC *hmac;        /* fetched once */
        EVP_MAC_CTX *mac_ctx; /* keyed with key[0..key_len) */
        unsigned char *key;   /* copy of that key (secret: cleansed when replaced) */
        size_t key_len;
} crypto_cache_t;

static _Thread_local crypto_cache_t crypto_cache;

/* @returns the thread's digest context ready for a new SHA-256, or NULL. */
static EVP_MD_CTX *crypto_sha256_ctx(void) {
        crypto_cache_t *cc = &crypto_cache;
        if (!cc->sha256)
                cc->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        if (!cc->md_ctx)
                cc->md_ctx = EVP_MD_CTX_new();
        if (!cc->sha256 || !cc->md_ctx || !EVP_DigestInit_ex(cc->md_ctx, cc->sha256, NULL))
                return NULL;
        return cc->md_ctx;
}

void af_sha256(const void *data, size_t len, uint8_t out[AF_SHA256_LEN]) {
        unsigned int n = AF_SHA256_LEN;
        EVP_MD_CTX *ctx = crypto_sha256_ctx();

        if (ctx && EVP_DigestUpdate(ctx, data, len) && EVP_DigestFinal_ex(ctx, out, &n))
                return;
        n = AF_SHA256_LEN;
        EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

/* @returns the thread's HMAC-SHA256 context keyed with key and reset for a new message, or
 * NULL (then the caller uses the one-shot HMAC()). */
static EVP_MAC_CTX *crypto_hmac_ctx(const void *key, size_t key_len) {
        crypto_cache_t *cc = &crypto_cache;
        OSSL_PARAM params[2];

        if (!key_len)
                return NULL; /* EVP_MAC refuses an empty key; HMAC() takes it */
        if (cc->mac_ctx && cc->key_len == key_len && !CRYPTO_memcmp(cc->key, key, key_len))
                return EVP_MAC_init(cc->mac_ctx, NULL, 0, NULL) ? cc->mac_ctx : NULL;
        /* A new key: forget the old one first. */
        EVP_MAC_CTX_free(cc->mac_ctx);
        cc->mac_ctx = NULL;
        if (cc->key) {
                OPENSSL_cleanse(cc->key, cc->key_len);
                free(cc->key);
                cc->key = NULL;
                cc->key_len = 0;
        }
        if (!cc->hmac)
                cc->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        if (!cc->hmac || !(cc->mac_ctx = EVP_MAC_CTX_new(cc->hmac)) || !(cc->key = malloc(key_len)))
                return NULL;
        memcpy(cc->key, key, key_len);
        cc->key_len = key_len;
        params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *) "SHA256", 0);
        params[1] = OSSL_PARAM_construct_end();
        if (!EVP_MAC_init(cc->mac_ctx, key, key_len, params)) {
                /* Keep nothing half-keyed: the next call starts over. */
                EVP_MAC_CTX_free(cc->mac_ctx);
                cc->mac_ctx = NULL;
                cc->key_len = 0;
                return NULL;
        }
        return cc->mac_ctx;
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
        size_t got = 0;
        EVP_MAC_CTX *ctx = crypto_hmac_ctx(key, key_len);

        if (ctx && EVP_MAC_update(ctx, data, len) && EVP_MAC_final(ctx, out, &got, AF_SHA256_LEN) &&
            got == AF_SHA256_LEN)
                return;
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
