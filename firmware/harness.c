/*
 * harness.c - the test-vector runner, identical on the host and on the target.
 *
 * Reads inputs.bin (N input vectors of EK_INPUT_COUNT codes, back to back), runs each
 * through ek_model_run() and writes outputs.bin (N output vectors). Exit codes:
 * 0 ok, 2 I/O error, 3 inputs.bin is not a whole number of vectors.
 */
#include "ek_io.h"
#include "model.h"

enum { EXIT_OK = 0, EXIT_IO = 2, EXIT_FORMAT = 3 };

static ek_input_t input_vector[EK_INPUT_COUNT];
static ek_output_t output_vector[EK_OUTPUT_COUNT];

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
    if (input_bytes % sizeof input_vector != 0u) {
        ek_io_log("edgekit harness: inputs.bin is not a whole number of input vectors\n");
        return EXIT_FORMAT;
    }
    const uint32_t count = input_bytes / (uint32_t)sizeof input_vector;
    for (uint32_t i = 0; i < count; ++i) {
        if (ek_io_read(input_vector, sizeof input_vector) != 0) {
            return EXIT_IO;
        }
        ek_model_run(input_vector, output_vector);
        if (ek_io_write(output_vector, sizeof output_vector) != 0) {
            return EXIT_IO;
        }
    }
    ek_io_close();
    log_number("EK_VECTORS=", count);
    log_number("EK_STACK_USED=", ek_io_stack_used());
    return EXIT_OK;
}
