/*
 * libc_min.c - memcpy/memset/strlen for freestanding target builds. GCC may call
 * these for struct copies and zeroing even with -ffreestanding; the firmware links
 * no C library.
 */
#include <stddef.h>
#include <stdint.h>

void *memcpy(void *restrict dst, const void *restrict src, size_t n)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    while (n--) {
        *d++ = *s++;
    }
    return dst;
}

void *memset(void *dst, int value, size_t n)
{
    uint8_t *d = dst;
    while (n--) {
        *d++ = (uint8_t)value;
    }
    return dst;
}

size_t strlen(const char *s)
{
    const char *p = s;
    while (*p != '\0') {
        ++p;
    }
    return (size_t)(p - s);
}
