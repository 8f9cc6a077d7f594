/* semihosting.h - Arm semihosting calls (BKPT 0xAB) used by the test harness. */
#ifndef EK_SEMIHOSTING_H
#define EK_SEMIHOSTING_H

#include <stdint.h>

#define SH_MODE_RB 1 /* fopen "rb" */
#define SH_MODE_WB 5 /* fopen "wb" */

int32_t sh_open(const char *path, int32_t mode);
int32_t sh_close(int32_t fd);
/* Return the number of bytes NOT transferred (0 means all), as the protocol does. */
int32_t sh_read(int32_t fd, void *buf, uint32_t len);
int32_t sh_write(int32_t fd, const void *buf, uint32_t len);
int32_t sh_flen(int32_t fd);
void sh_write0(const char *text);
/* Ends the program; QEMU exits with `code` (SYS_EXIT_EXTENDED). */
void sh_exit(int32_t code) __attribute__((noreturn));

#endif /* EK_SEMIHOSTING_H */
