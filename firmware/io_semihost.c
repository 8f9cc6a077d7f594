/* io_semihost.c - harness I/O over semihosting (QEMU, or a debug probe on a real board). */
#include "ek_io.h"
#include "semihosting.h"

static int32_t fd_in = -1;
static int32_t fd_out = -1;

int ek_io_open(const char *inputs_path, const char *outputs_path, uint32_t *input_bytes)
{
    fd_in = sh_open(inputs_path, SH_MODE_RB);
    fd_out = sh_open(outputs_path, SH_MODE_WB);
    if (fd_in < 0 || fd_out < 0) {
        return 1;
    }
    const int32_t len = sh_flen(fd_in);
    if (len < 0) {
        return 1;
    }
    *input_bytes = (uint32_t)len;
    return 0;
}

int ek_io_read(void *buf, uint32_t len)
{
    return sh_read(fd_in, buf, len) != 0;
}

int ek_io_write(const void *buf, uint32_t len)
{
    return sh_write(fd_out, buf, len) != 0;
}

void ek_io_close(void)
{
    sh_close(fd_in);
    sh_close(fd_out);
}

void ek_io_log(const char *text)
{
    sh_write0(text);
}
