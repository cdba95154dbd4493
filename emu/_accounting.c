/*
 * Native block accounting for procd-emu (see emu/accounting.py, which owns the layout).
 *
 * Unicorn calls emu_account_block before every translated block runs. It costs the block from
 * per-range prefix tables (instructions and millicycles retired before each byte offset) with two
 * loads and a subtraction, and stops emulation *before* a block that would cross a budget, or one
 * that starts off the swept instruction boundaries (Python then accounts that block itself).
 * It runs without the GIL and touches no Python object.
 *
 * The file is also a (method-less) CPython extension module so that the ordinary package install
 * builds it; Python finds the function with ctypes.
 */
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define EMU_MAX_RANGES 16
#define EMU_NO_BOUNDARY UINT64_MAX

enum emu_stop_reason { EMU_STOP_NONE = 0, EMU_STOP_INSNS = 1, EMU_STOP_UNKNOWN = 2, EMU_STOP_CYCLES = 3 };

typedef int (*emu_stop_fn)(void *uc);

struct emu_range {
    uint64_t base;
    uint64_t end;            /* exclusive */
    const uint64_t *insns;   /* [end - base + 1] prefix instruction counts, EMU_NO_BOUNDARY off-boundary */
    const uint64_t *cost;    /* [end - base + 1] prefix millicycles */
};

struct emu_account {
    uint64_t insns;          /* instructions retired */
    uint64_t cost;           /* millicycles retired */
    uint64_t insn_limit;     /* stop before a block that would retire more than this */
    uint64_t cost_limit;
    uint64_t block_start;    /* the block being executed, and the totals before it */
    uint64_t block_insns;
    uint64_t block_cost;
    uint64_t unknown_address;
    uint64_t unknown_size;
    uint32_t stop;
    uint32_t nranges;
    uint32_t paused;         /* non-zero: count nothing (a per-instruction step hook counts instead) */
    uint32_t syscalled;      /* set by emu_syscall_stop: the run stopped after a `syscall` */
    emu_stop_fn emu_stop;
    struct emu_range ranges[EMU_MAX_RANGES];
};

void emu_account_block(void *uc, uint64_t address, uint32_t size, struct emu_account *a)
{
    const uint64_t end = address + size;
    if (a->paused) {
        return;
    }
    for (uint32_t i = 0; i < a->nranges; i++) {
        const struct emu_range *r = &a->ranges[i];
        if (address < r->base || end > r->end) {
            continue;
        }
        const uint64_t first = address - r->base, last = end - r->base;
        const uint64_t i0 = r->insns[first], i1 = r->insns[last];
        if (i0 == EMU_NO_BOUNDARY || i1 == EMU_NO_BOUNDARY) {
            continue; /* not this range's instruction stream; a later (per-block) range may know it */
        }
        const uint64_t n = i1 - i0, c = r->cost[last] - r->cost[first];
        if (a->insns + n > a->insn_limit || a->cost + c > a->cost_limit) {
            a->stop = a->insns + n > a->insn_limit ? EMU_STOP_INSNS : EMU_STOP_CYCLES;
            a->emu_stop(uc);
            return;
        }
        a->block_start = address;
        a->block_insns = a->insns;
        a->block_cost = a->cost;
        a->insns += n;
        a->cost += c;
        return;
    }
    a->stop = EMU_STOP_UNKNOWN;
    a->unknown_address = address;
    a->unknown_size = size;
    a->emu_stop(uc);
}

uint64_t emu_account_layout_size(void) { return sizeof(struct emu_account); }

/* UC_HOOK_INSN for `syscall`: note it and stop; RIP is left after the instruction, so resuming
 * continues there. Native, so that a syscall costs no Python callback. */
void emu_syscall_stop(void *uc, struct emu_account *a)
{
    a->syscalled = 1;
    a->emu_stop(uc);
}

/* Mirrors Unicorn's struct uc_tlb_entry. */
struct emu_tlb_entry {
    uint64_t paddr;
    uint32_t perms;
};

/* UC_HOOK_TLB_FILL: every virtual page maps to the physical address equal to it, with every
 * permission (the memory map's own permissions decide). Native, so that a TLB miss, a host read
 * or a host write costs no Python callback. */
_Bool emu_identity_tlb_fill(void *uc, uint64_t page, int access, struct emu_tlb_entry *entry, void *user)
{
    (void)uc;
    (void)access;
    (void)user;
    entry->paddr = page;
    entry->perms = 7; /* UC_PROT_ALL */
    return 1;
}

/* An independent per-instruction count (a code hook), for tests that check the block accounting. */
void emu_count_insn(void *uc, uint64_t address, uint32_t size, uint64_t *counter)
{
    (void)uc;
    (void)address;
    (void)size;
    (*counter)++;
}

/*
 * Instruction trace lines, rendered natively (emu/insnlog.py owns the layout).
 *
 * emu_log_insn runs as a Unicorn code hook before each traced instruction. It works out how many
 * instructions and millicycles the guest had retired before it (from the accounting state and the
 * prefix tables), looks up the instruction's pre-rendered fragments, and appends one JSONL line
 * (and one text line, if asked) to output buffers that Python drains. It stops emulation, without
 * logging, when a buffer is full or an instruction has no fragment yet; Python then drains or adds
 * the fragment and resumes at the same instruction.
 */

#define EMU_NO_FRAGMENT UINT32_MAX

enum emu_log_stop { EMU_LOG_OK = 0, EMU_LOG_FULL = 1, EMU_LOG_MISSING = 2 };

struct emu_frag_range {
    uint64_t base;
    uint64_t end;               /* exclusive */
    const uint32_t *index;      /* [end - base]: fragment of the instruction starting there, or EMU_NO_FRAGMENT */
};

struct emu_insn_log {
    struct emu_account *acct;
    uint64_t icount_base;       /* machine instruction count = icount_base + guest count */
    uint64_t clock_base;        /* machine millicycles = clock_base + guest millicycles */
    uint64_t seq;               /* seq of the next line */
    uint64_t missing_address;
    char *json;
    uint64_t json_len;
    uint64_t json_cap;
    char *text;                 /* NULL: no text rendering */
    uint64_t text_len;
    uint64_t text_cap;
    const char *json_frags;     /* fragment i is json_frags[json_offsets[i] .. json_offsets[i + 1]) */
    const uint64_t *json_offsets;
    const char *text_frags;
    const uint64_t *text_offsets;
    uint32_t pid;
    uint32_t stop;
    uint32_t nranges;
    uint32_t count;             /* lines appended since the last drain */
    emu_stop_fn emu_stop;
    struct emu_frag_range ranges[EMU_MAX_RANGES];
};

static int emu_retired_before(const struct emu_account *a, uint64_t address, uint64_t *insns, uint64_t *cost)
{
    if (a->paused) { /* stepping: the step hook has not counted this instruction yet */
        *insns = a->insns;
        *cost = a->cost;
        return 1;
    }
    for (uint32_t i = 0; i < a->nranges; i++) {
        const struct emu_range *r = &a->ranges[i];
        if (a->block_start < r->base || a->block_start > r->end || address < r->base || address > r->end) {
            continue;
        }
        const uint64_t b = r->insns[a->block_start - r->base], n = r->insns[address - r->base];
        if (b == EMU_NO_BOUNDARY || n == EMU_NO_BOUNDARY) {
            continue;
        }
        *insns = a->block_insns + (n - b);
        *cost = a->block_cost + (r->cost[address - r->base] - r->cost[a->block_start - r->base]);
        return 1;
    }
    return 0;
}

static uint32_t emu_fragment(const struct emu_insn_log *log, uint64_t address)
{
    for (uint32_t i = 0; i < log->nranges; i++) {
        const struct emu_frag_range *r = &log->ranges[i];
        if (address >= r->base && address < r->end && r->index[address - r->base] != EMU_NO_FRAGMENT) {
            return r->index[address - r->base];
        }
    }
    return EMU_NO_FRAGMENT;
}

static char *emu_put(char *out, const char *text, uint64_t len)
{
    memcpy(out, text, len);
    return out + len;
}

static char *emu_put_u64(char *out, uint64_t value, int width)
{
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    for (int pad = n; pad < width; pad++) {
        *out++ = ' ';
    }
    while (n) {
        *out++ = digits[--n];
    }
    return out;
}

#define EMU_PUT_LITERAL(out, s) emu_put((out), (s), sizeof(s) - 1)

void emu_log_insn(void *uc, uint64_t address, uint32_t size, struct emu_insn_log *log)
{
    (void)size;
    uint64_t insns, cost;
    const uint32_t frag = emu_fragment(log, address);
    if (frag == EMU_NO_FRAGMENT || !emu_retired_before(log->acct, address, &insns, &cost)) {
        log->stop = EMU_LOG_MISSING;
        log->missing_address = address;
        log->emu_stop(uc);
        return;
    }
    const uint64_t json_frag = log->json_offsets[frag + 1] - log->json_offsets[frag];
    const uint64_t text_frag = log->text_offsets[frag + 1] - log->text_offsets[frag];
    if (log->json_len + json_frag + 160 > log->json_cap ||
        (log->text != NULL && log->text_len + text_frag + 160 > log->text_cap)) {
        log->stop = EMU_LOG_FULL;
        log->emu_stop(uc);
        return;
    }
    const uint64_t icount = log->icount_base + insns, cycle = (log->clock_base + cost) / 1000;
    char *out = log->json + log->json_len;
    out = EMU_PUT_LITERAL(out, "{\"seq\":");
    out = emu_put_u64(out, log->seq, 0);
    out = EMU_PUT_LITERAL(out, ",\"icount\":");
    out = emu_put_u64(out, icount, 0);
    out = EMU_PUT_LITERAL(out, ",\"cycle\":");
    out = emu_put_u64(out, cycle, 0);
    out = EMU_PUT_LITERAL(out, ",\"pid\":");
    out = emu_put_u64(out, log->pid, 0);
    out = EMU_PUT_LITERAL(out, ",\"kind\":\"insn\",");
    out = emu_put(out, log->json_frags + log->json_offsets[frag], json_frag);
    out = EMU_PUT_LITERAL(out, "}\n");
    log->json_len = (uint64_t)(out - log->json);
    if (log->text != NULL) {
        out = log->text + log->text_len;
        out = emu_put_u64(out, log->seq, 6);
        *out++ = ' ';
        out = emu_put_u64(out, icount, 12);
        *out++ = ' ';
        out = emu_put_u64(out, cycle, 12);
        *out++ = ' ';
        out = emu_put_u64(out, log->pid, 4);
        out = EMU_PUT_LITERAL(out, "  insn             ");
        out = emu_put(out, log->text_frags + log->text_offsets[frag], text_frag);
        *out++ = '\n';
        log->text_len = (uint64_t)(out - log->text);
    }
    log->seq++;
    log->count++;
}

uint64_t emu_insn_log_layout_size(void) { return sizeof(struct emu_insn_log); }

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_accounting", "Native block accounting.", -1, NULL};

PyMODINIT_FUNC PyInit__accounting(void) { return PyModule_Create(&module); }
