/*
 * utf8: see utf8.h.
 */
#include "utf8.h"

void af_utf8_repair(char *s) {
        unsigned char *p = (unsigned char *) s;
        while (*p) {
                size_t n = *p < 0x80 ? 1 : af_utf8_seq_len(p);
                if (!n)
                        *p++ = '?';
                else
                        p += n;
        }
}

size_t af_utf8_prefix(const char *s, size_t len) {
        const unsigned char *p = (const unsigned char *) s, *end = p + len;
        while (p < end && *p) {
                if (*p < 0x80) {
                        p++;
                        continue;
                }
                /* af_utf8_seq_len may read up to 3 bytes ahead: only when they are there. */
                unsigned char seq[4] = {0};
                for (size_t i = 0; i < 4 && p + i < end; i++)
                        seq[i] = p[i];
                size_t n = af_utf8_seq_len(seq);
                if (!n)
                        break;
                p += n;
        }
        return (size_t) (p - (const unsigned char *) s);
}
