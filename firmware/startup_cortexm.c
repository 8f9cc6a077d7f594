/*
 * startup_cortexm.c - reset handler and vector table for every Cortex-M target.
 *
 * Enables the FPU (and MVE) when the core has one, before any loop runs (GCC may emit
 * FP/vector instructions in copy loops), copies .data, zeroes .bss, paints the stack so
 * its high-water mark can be read after the run, calls main() and reports its return
 * value through semihosting. Any fault exits with code 100 + exception number instead of hanging.
 */
#include <stdint.h>

#include "ek_io.h"
#include "semihosting.h"

#define STACK_PAINT 0xC5C5C5C5u

extern uint32_t __data_load__, __data_start__, __data_end__;
extern uint32_t __bss_start__, __bss_end__;
extern uint32_t __stack_limit__, __stack_top__;

int main(void);
void reset_handler(void) __attribute__((noreturn));
static void fault_handler(void);

uint32_t ek_io_stack_used(void)
{
    const uint32_t *p = &__stack_limit__;
    while (p < &__stack_top__ && *p == STACK_PAINT) {
        ++p;
    }
    return (uint32_t)((uintptr_t)&__stack_top__ - (uintptr_t)p);
}

/* Naked, so it has no frame of its own: it paints everything from the stack limit up to
 * the caller's stack pointer exactly and returns that stack pointer. Only r0-r2 are used
 * (caller-saved), with ARMv6-M-compatible instructions. */
__attribute__((naked)) uintptr_t ek_io_stack_mark(void)
{
    __asm__ volatile(
        ".syntax unified\n" /* GCC hands Thumb-1 (Armv6-M) inline asm over in divided syntax */
        "ldr r0, =__stack_limit__\n"
        "ldr r1, =0xC5C5C5C5\n"
        "mov r2, sp\n"
        "1:\n"
        "cmp r0, r2\n"
        "bhs 2f\n"
        "str r1, [r0]\n"
        "adds r0, r0, #4\n"
        "b 1b\n"
        "2:\n"
        "mov r0, sp\n"
        "bx lr\n"
        ".ltorg\n");
}

uintptr_t ek_io_stack_low_water(void)
{
    const uint32_t *p = &__stack_limit__;
    while (p < &__stack_top__ && *p == STACK_PAINT) {
        ++p;
    }
    return (uintptr_t)p;
}

void reset_handler(void)
{
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    /* First of all, CPACR: full access to CP10/CP11 (FPU, and MVE on Armv8.1-M). GCC may
     * vectorise the copy, zero and paint loops below (FP/MVE registers at -O3 on the
     * Cortex-M55), which would fault with the coprocessors still disabled. */
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    uint32_t *src = &__data_load__;
    for (uint32_t *dst = &__data_start__; dst < &__data_end__;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = &__bss_start__; dst < &__bss_end__;) {
        *dst++ = 0u;
    }
    /* Paint up to 64 bytes below the current stack pointer (the live frame is above). */
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = &__stack_limit__; p < sp - 16; ++p) {
        *p = STACK_PAINT;
    }
    sh_exit(main());
}

static void fault_handler(void)
{
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    sh_write0("edgekit firmware: fault exception\n");
    sh_exit((int32_t)(100u + (ipsr & 0x1FFu)));
}

typedef void (*vector_t)(void);

/* Initial stack pointer, reset, then NMI..SysTick all routed to the fault handler. */
__attribute__((section(".isr_vector"), used)) static const vector_t vector_table[16] = {
    (vector_t)(uintptr_t)&__stack_top__,
    reset_handler,
    fault_handler, fault_handler, fault_handler, fault_handler, fault_handler,
    0, 0, 0, 0,
    fault_handler, fault_handler, 0,
    fault_handler, fault_handler,
};
