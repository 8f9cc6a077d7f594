/* semihosting.c - the few semihosting operations the harness needs, without newlib. */
#include "semihosting.h"

#include <string.h>

enum {
    SYS_OPEN = 0x01,
    SYS_CLOSE = 0x02,
    SYS_WRITE0 = 0x04,
    SYS_WRITE = 0x05,
    SYS_READ = 0x06,
    SYS_FLEN = 0x0C,
    SYS_EXIT = 0x18,
    SYS_EXIT_EXTENDED = 0x20,
};

#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

static int32_t sh_call(int32_t op, const void *arg)
{
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

int32_t sh_open(const char *path, int32_t mode)
{
    const uint32_t args[3] = {(uint32_t)path, (uint32_t)mode, (uint32_t)strlen(path)};
    return sh_call(SYS_OPEN, args);
}

int32_t sh_close(int32_t fd)
{
    const uint32_t args[1] = {(uint32_t)fd};
    return sh_call(SYS_CLOSE, args);
}

int32_t sh_read(int32_t fd, void *buf, uint32_t len)
{
    const uint32_t args[3] = {(uint32_t)fd, (uint32_t)buf, len};
    return sh_call(SYS_READ, args);
}

int32_t sh_write(int32_t fd, const void *buf, uint32_t len)
{
    const uint32_t args[3] = {(uint32_t)fd, (uint32_t)buf, len};
    return sh_call(SYS_WRITE, args);
}

int32_t sh_flen(int32_t fd)
{
    const uint32_t args[1] = {(uint32_t)fd};
    return sh_call(SYS_FLEN, args);
}

void sh_write0(const char *text)
{
    sh_call(SYS_WRITE0, text);
}

void sh_exit(int32_t code)
{
    const uint32_t args[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
    sh_call(SYS_EXIT_EXTENDED, args);
    for (;;) {
        /* a debugger without SYS_EXIT_EXTENDED support stops here */
    }
}
