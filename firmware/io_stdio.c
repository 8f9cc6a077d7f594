/* io_stdio.c - harness I/O with stdio, for the host build of the same harness. */
#include <stdio.h>

#include "ek_io.h"

static FILE *f_in;
static FILE *f_out;

int ek_io_open(const char *inputs_path, const char *outputs_path, uint32_t *input_bytes)
{
    f_in = fopen(inputs_path, "rb");
    f_out = fopen(outputs_path, "wb");
    if (f_in == NULL || f_out == NULL || fseek(f_in, 0, SEEK_END) != 0) {
        return 1;
    }
    const long len = ftell(f_in);
    if (len < 0 || fseek(f_in, 0, SEEK_SET) != 0) {
        return 1;
    }
    *input_bytes = (uint32_t)len;
    return 0;
}

int ek_io_read(void *buf, uint32_t len)
{
    return fread(buf, 1, len, f_in) != len;
}

int ek_io_write(const void *buf, uint32_t len)
{
    return fwrite(buf, 1, len, f_out) != len;
}

void ek_io_close(void)
{
    fclose(f_in);
    fclose(f_out);
}

void ek_io_log(const char *text)
{
    fputs(text, stderr);
}

uint32_t ek_io_stack_used(void)
{
    return 0;
}

uintptr_t ek_io_stack_mark(void)
{
    return 0;
}

uintptr_t ek_io_stack_low_water(void)
{
    return 0;
}
