/*
 * harness.c - the test-vector runner, identical on the host and on the target.
 *
 * Reads inputs.bin (N input vectors of EK_INPUT_COUNT codes, back to back), runs each
 * through ek_model_run() and writes outputs.bin (N output vectors). The vectors go where the
 * model wants them: into its arena (ek_model_input/ek_model_output, EK_IO_IN_ARENA) or the
 * harness's own buffers (--io-buffers caller). Exit codes:
 * 0 ok, 2 I/O error, 3 inputs.bin is not a whole number of vectors.
 */
#include "ek_io.h"
#include "model.h"

enum { EXIT_OK = 0, EXIT_IO = 2, EXIT_FORMAT = 3 };

#if EK_IO_IN_ARENA
/* The model's input and output are inside its arena: the harness writes and reads them there,
 * so the RAM it measures is all an inference needs. */
#define INPUT_BUFFER ek_model_input()
#define OUTPUT_BUFFER ek_model_output()
#define RUN_MODEL() ek_model_run()
#else
/* Caller-owned input and output (--io-buffers caller). */
static ek_input_t input_vector[EK_INPUT_COUNT];
static ek_output_t output_vector[EK_OUTPUT_COUNT];
#define INPUT_BUFFER input_vector
#define OUTPUT_BUFFER output_vector
#define RUN_MODEL() ek_model_run(input_vector, output_vector)
#endif
/* a copy of the first input for the second RAM measurement (harness only, not the model's RAM) */
static ek_input_t first_vector[EK_INPUT_COUNT];

/* RAM measurement: the arena is painted before inference; the highest byte that differs
 * from the paint afterwards is the arena really used. Two paints (0xA5, then 0x5A on a
 * rerun) so that data equal to one paint cannot hide a written byte. */
static void paint_arena(uint8_t value)
{
    uint8_t *arena = ek_model_arena();
    const uint32_t size = EK_ARENA_BYTES; /* a variable: no "always false" warning for an empty arena */
    for (uint32_t i = 0; i < size; ++i) {
        arena[i] = value;
    }
}

static uint32_t arena_touched(uint8_t value)
{
    const uint8_t *arena = ek_model_arena();
    uint32_t top = EK_ARENA_BYTES;
    while (top > 0u && arena[top - 1u] == value) {
        --top;
    }
    return top;
}

/* Decimal without printf, so the target needs no libc formatting code. */
static void log_number(const char *label, uint32_t value)
{
    char text[48];
    char digits[11];
    int n = 0;
    int pos = 0;
    do {
        digits[n++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0u);
    while (*label != '\0' && pos < 30) {
        text[pos++] = *label++;
    }
    while (n > 0) {
        text[pos++] = digits[--n];
    }
    text[pos++] = '\n';
    text[pos] = '\0';
    ek_io_log(text);
}

int main(void)
{
    uint32_t input_bytes = 0;
    if (ek_io_open("inputs.bin", "outputs.bin", &input_bytes) != 0) {
        ek_io_log("edgekit harness: cannot open inputs.bin/outputs.bin\n");
        return EXIT_IO;
    }
    if (input_bytes % EK_INPUT_BYTES != 0u) {
        ek_io_log("edgekit harness: inputs.bin is not a whole number of input vectors\n");
        return EXIT_FORMAT;
    }
    const uint32_t count = input_bytes / EK_INPUT_BYTES;
    uint32_t inference_stack = 0;
    paint_arena(0xA5u);
    for (uint32_t i = 0; i < count; ++i) {
        if (ek_io_read(INPUT_BUFFER, EK_INPUT_BYTES) != 0) {
            return EXIT_IO;
        }
        if (i == 0u) {
            /* copied before the run: with the input in the arena, the inference reuses its bytes */
            const ek_input_t *input = INPUT_BUFFER;
            for (uint32_t k = 0; k < EK_INPUT_COUNT; ++k) {
                first_vector[k] = input[k];
            }
            /* how deep ek_model_run goes below its caller's stack pointer */
            const uintptr_t mark = ek_io_stack_mark();
            RUN_MODEL();
            inference_stack = (uint32_t)(mark - ek_io_stack_low_water());
        } else {
            RUN_MODEL();
        }
        if (ek_io_write(OUTPUT_BUFFER, EK_OUTPUT_BYTES) != 0) {
            return EXIT_IO;
        }
    }
    ek_io_close();
    uint32_t touched = arena_touched(0xA5u);
    if (count > 0u) {
        paint_arena(0x5Au);
        ek_input_t *input = INPUT_BUFFER;
        for (uint32_t k = 0; k < EK_INPUT_COUNT; ++k) {
            input[k] = first_vector[k];
        }
        RUN_MODEL();
        const uint32_t again = arena_touched(0x5Au);
        touched = again > touched ? again : touched;
    }
    log_number("EK_VECTORS=", count);
    log_number("EK_STACK_USED=", ek_io_stack_used());
    log_number("EK_INFERENCE_STACK=", inference_stack);
    log_number("EK_ARENA_TOUCHED=", touched);
    return EXIT_OK;
}
