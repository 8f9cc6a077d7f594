/*
 * ek_insn.c - edgekit's QEMU TCG plugin: exact counts of executed guest instructions.
 *
 * Every translated instruction gets an execution callback, so the count is exact
 * (not per translation block), including instructions whose condition fails inside
 * an IT block, and it does not depend on timing or on the host.
 *
 * Counting happens in windows: a window opens when the instruction at `start`
 * executes and closes when execution next enters [stop_lo, stop_hi) (the caller);
 * without `start`, the whole run is one window. Inside a window each instruction is
 * attributed to the current zone: the last zone (`zone=LO:HI`, a function's address
 * range) whose code executed, so helpers called from a zone count for that zone.
 * Instructions before any zone executed count as zone `nzones` (unattributed).
 *
 * Arguments (-plugin libek_insn.so,out=FILE,lo=A,hi=B[,start=A,stop_lo=A,stop_hi=B]
 *            [,zone=LO:HI ...][,detail=N]):
 *   out     file written at exit (format below)
 *   lo, hi  code range with per-address counters (the firmware's code)
 *   detail  window whose per-address counts are kept (default 0; -1 keeps all)
 *
 * Output, one record per line:
 *   ek_insn 1                      format version
 *   all N                          instructions executed in the whole run
 *   zones Z                        zone count (+1 unattributed column below)
 *   windows W open O               closed windows, 1 if a window was still open at exit
 *   w I C0 .. CZ                   instructions per zone in window I (CZ: unattributed)
 *   p Z PC N T                     detail window(s): instruction at PC ran N times in zone Z,
 *                                  T of them followed by a non-sequential instruction (taken)
 *   o Z N                          detail window(s): instructions outside [lo, hi) in zone Z
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MAX_ZONES 1024

static char out_path[4096];
static uint64_t lo, hi, nslots;
static uint64_t start_pc = UINT64_MAX, stop_lo, stop_hi;
static int nzones, detail;
static uint64_t zone_lo[MAX_ZONES], zone_hi[MAX_ZONES];
static int16_t *zone_of;              /* per halfword of [lo, hi): zone or -1 */
static uint64_t *counts, *taken;      /* [(nzones + 1) * nslots] */
static uint64_t outside[MAX_ZONES + 1];
static uint64_t *win;                 /* [windows * (nzones + 1)] */
static uint64_t nwin, capwin, all;
static int active, cur, last_zone;
static int64_t last_slot = -1;
static uint64_t last_next;

static int keep(void) { return detail < 0 || (uint64_t)detail == nwin; }

static void open_window(void)
{
    if (nwin == capwin) {
        capwin = capwin ? 2 * capwin : 64;
        win = realloc(win, capwin * (nzones + 1) * sizeof *win);
        if (!win) { fprintf(stderr, "ek_insn: out of memory\n"); exit(1); }
    }
    memset(win + nwin * (nzones + 1), 0, (nzones + 1) * sizeof *win);
    active = 1;
    cur = nzones;
    last_slot = -1;
}

static void on_exec(unsigned int vcpu, void *udata)
{
    uint64_t v = (uintptr_t)udata, pc = v >> 1, next = pc + ((v & 1) ? 4 : 2);
    (void)vcpu;
    ++all;
    if (!active) {
        if (pc != start_pc) return;
        open_window();
    }
    int k = keep();
    if (k && last_slot >= 0 && pc != last_next) {
        ++taken[(uint64_t)last_zone * nslots + last_slot];
    }
    if (pc >= stop_lo && pc < stop_hi) {      /* back in the caller: the window closes */
        active = 0;
        ++nwin;
        return;
    }
    int64_t slot = (pc >= lo && pc < hi) ? (int64_t)((pc - lo) >> 1) : -1;
    if (slot >= 0 && zone_of[slot] >= 0) cur = zone_of[slot];
    ++win[nwin * (nzones + 1) + cur];
    if (k) {
        if (slot >= 0) ++counts[(uint64_t)cur * nslots + slot];
        else ++outside[cur];
    }
    last_slot = slot;
    last_zone = cur;
    last_next = next;
}

static void on_tb(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; ++i) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t pc = qemu_plugin_insn_vaddr(insn);
        uint64_t wide = qemu_plugin_insn_size(insn) == 4;
        qemu_plugin_register_vcpu_insn_exec_cb(insn, on_exec, QEMU_PLUGIN_CB_NO_REGS,
                                               (void *)(uintptr_t)((pc << 1) | wide));
    }
}

static void at_exit_cb(qemu_plugin_id_t id, void *p)
{
    (void)id; (void)p;
    FILE *f = fopen(out_path, "w");
    if (!f) { fprintf(stderr, "ek_insn: cannot write %s\n", out_path); return; }
    fprintf(f, "ek_insn 1\nall %" PRIu64 "\nzones %d\nwindows %" PRIu64 " open %d\n", all, nzones, nwin, active);
    for (uint64_t w = 0; w < nwin + (uint64_t)active; ++w) {
        fprintf(f, "w %" PRIu64, w);
        for (int z = 0; z <= nzones; ++z) fprintf(f, " %" PRIu64, win[w * (nzones + 1) + z]);
        fputc('\n', f);
    }
    for (int z = 0; z <= nzones; ++z) {
        for (uint64_t s = 0; s < nslots; ++s) {
            uint64_t c = counts[(uint64_t)z * nslots + s];
            if (c) fprintf(f, "p %d 0x%" PRIx64 " %" PRIu64 " %" PRIu64 "\n", z, lo + 2 * s, c,
                           taken[(uint64_t)z * nslots + s]);
        }
        if (outside[z]) fprintf(f, "o %d %" PRIu64 "\n", z, outside[z]);
    }
    fclose(f);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; ++i) {
        const char *a = argv[i], *eq = strchr(a, '=');
        if (!eq) { fprintf(stderr, "ek_insn: bad argument '%s'\n", a); return -1; }
        const char *v = eq + 1;
        size_t klen = (size_t)(eq - a);
        if (klen == 3 && !strncmp(a, "out", 3)) snprintf(out_path, sizeof out_path, "%s", v);
        else if (klen == 2 && !strncmp(a, "lo", 2)) lo = strtoull(v, NULL, 0);
        else if (klen == 2 && !strncmp(a, "hi", 2)) hi = strtoull(v, NULL, 0);
        else if (klen == 5 && !strncmp(a, "start", 5)) start_pc = strtoull(v, NULL, 0);
        else if (klen == 7 && !strncmp(a, "stop_lo", 7)) stop_lo = strtoull(v, NULL, 0);
        else if (klen == 7 && !strncmp(a, "stop_hi", 7)) stop_hi = strtoull(v, NULL, 0);
        else if (klen == 6 && !strncmp(a, "detail", 6)) detail = (int)strtol(v, NULL, 0);
        else if (klen == 4 && !strncmp(a, "zone", 4) && nzones < MAX_ZONES) {
            char *colon;
            zone_lo[nzones] = strtoull(v, &colon, 0);
            if (*colon != ':') { fprintf(stderr, "ek_insn: bad zone '%s'\n", v); return -1; }
            zone_hi[nzones++] = strtoull(colon + 1, NULL, 0);
        } else { fprintf(stderr, "ek_insn: unknown argument '%s'\n", a); return -1; }
    }
    if (!out_path[0] || hi <= lo) { fprintf(stderr, "ek_insn: need out=FILE and lo < hi\n"); return -1; }
    nslots = (hi - lo + 1) / 2;
    zone_of = malloc(nslots * sizeof *zone_of);
    counts = calloc((size_t)(nzones + 1) * nslots, sizeof *counts);
    taken = calloc((size_t)(nzones + 1) * nslots, sizeof *taken);
    if (!zone_of || !counts || !taken) { fprintf(stderr, "ek_insn: out of memory\n"); return -1; }
    for (uint64_t s = 0; s < nslots; ++s) zone_of[s] = -1;
    for (int z = 0; z < nzones; ++z) {
        for (uint64_t a = zone_lo[z]; a < zone_hi[z]; a += 2) {
            if (a >= lo && a < hi) zone_of[(a - lo) >> 1] = (int16_t)z;
        }
    }
    if (start_pc == UINT64_MAX) open_window();   /* no start: the whole run is one window */
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb);
    qemu_plugin_register_atexit_cb(id, at_exit_cb, NULL);
    return 0;
}
