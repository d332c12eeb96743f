/*
 * utf8: well-formed UTF-8 (RFC 3629, as jansson checks it), for the strings that leave a
 * process: error messages quote what they refuse (a task type, a model's answer), cut to a
 * byte length, and end up in protobuf `string` fields (which other languages' decoders refuse
 * when they are not UTF-8), in JSON (jansson refuses to build such a string) and in audit
 * events.
 */
#ifndef AF_UTF8_H
#define AF_UTF8_H

#include <stddef.h>

/* Length of the well-formed multi-byte sequence (2-4 bytes: no overlong forms, no surrogates,
 * at most U+10FFFF) starting at p, or 0. Stops at the first byte that does not fit, so it
 * never reads past a NUL. */
static inline size_t af_utf8_seq_len(const unsigned char *p) {
        unsigned char c = p[0], lo = 0x80, hi = 0xBF;
        size_t n;

        if (c >= 0xC2 && c <= 0xDF)
                n = 2;
        else if (c >= 0xE0 && c <= 0xEF)
                n = 3;
        else if (c >= 0xF0 && c <= 0xF4)
                n = 4;
        else
                return 0;
        if (c == 0xE0)
                lo = 0xA0; /* overlong */
        else if (c == 0xED)
                hi = 0x9F; /* U+D800..U+DFFF */
        else if (c == 0xF0)
                lo = 0x90; /* overlong */
        else if (c == 0xF4)
                hi = 0x8F; /* past U+10FFFF */
        if (p[1] < lo || p[1] > hi)
                return 0;
        for (size_t i = 2; i < n; i++)
                if (p[i] < 0x80 || p[i] > 0xBF)
                        return 0;
        return n;
}

/* Make the NUL-terminated s well-formed in place: every byte that does not belong to a
 * well-formed sequence (a stray continuation byte, a sequence cut short by a truncating
 * printf) becomes '?'. Length and every well-formed character stay as they were. */
void af_utf8_repair(char *s);

/* @returns the length of the longest prefix of the len bytes at s that is well-formed UTF-8
 * without NUL: len when all of it is, else the offset of the first byte that is not. */
size_t af_utf8_prefix(const char *s, size_t len);

#endif
