/* ek_io.h - file I/O for the harness: semihosting on the target, stdio on the host. */
#ifndef EK_IO_H
#define EK_IO_H

#include <stdint.h>

/* Each returns 0 on success, nonzero on failure. */
int ek_io_open(const char *inputs_path, const char *outputs_path, uint32_t *input_bytes);
int ek_io_read(void *buf, uint32_t len);
int ek_io_write(const void *buf, uint32_t len);
void ek_io_close(void);
void ek_io_log(const char *text);

/* Stack bytes ever used since reset (painted-stack high-water mark), 0 if unknown. */
uint32_t ek_io_stack_used(void);

/* Paint the free stack below the caller and return the caller's stack pointer, so that
 * ek_io_stack_low_water() afterwards tells how deep the code in between went (0 if unknown). */
uintptr_t ek_io_stack_mark(void);
uintptr_t ek_io_stack_low_water(void);

#endif /* EK_IO_H */
