/*
 * Native block accounting for procd-emu (see emu/accounting.py, which owns the layout).
 *
 * Unicorn calls emu_account_block before every translated block runs. It finds the block's
 * summary (which holds its instruction count, taken from the per-range prefix tables when Python
 * learned the block) and times it with it (emu/blockmodel.py): a throughput bound and, for each variable the block writes
 * (registers, flags, the branch-resolution time), its new ready time as a max over live-in
 * ready times plus offsets. The dispatch clock -- the guest's cost in millicycles -- moves by the
 * block's throughput, held back by the reorder window, and a small deterministic branch predictor
 * charges a refill after each miss. It stops emulation *before* a block that would cross a budget,
 * or one it has no tables or summary for (Python then learns that block and resumes). A loop
 * whose laps time alike is replayed: each block adds what it added the lap before (see "Loops").
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
#define EMU_NVARS 40
#define EMU_ROW_SOURCES 4
#define EMU_ROWS_MAX 320 /* 34 variables, each with at most 35 sources in rows of 4 */
#define EMU_NO_SOURCE (-(1 << 30)) /* an unused source slot's offset: never the largest */
#define EMU_PRED_SIZE 4096
#define EMU_BTB_SIZE 256
#define EMU_BUCKETS 4096
#define EMU_MEMO_VARS 8 /* a block with more live-ins or results is timed row by row every time */
#define EMU_MEMO_WAYS 2 /* timings remembered per block */
#define EMU_LAP_MAX 64  /* blocks in a loop the hook can replay without timing them */
#define EMU_TRAIL 128   /* slow-path blocks remembered to find loops in (a power of two >= EMU_LAP_MAX) */
#define EMU_LOOP_TRIES 8 /* turns a loop head may take to reach a steady state before it rests */
#define EMU_LOOP_REST_MAX 4096 /* the longest a loop head rests (in its recurrences) between tries */

enum emu_stop_reason { EMU_STOP_NONE = 0, EMU_STOP_INSNS = 1, EMU_STOP_UNKNOWN = 2, EMU_STOP_CYCLES = 3 };
enum emu_branch { EMU_BR_NONE = 0, EMU_BR_COND = 1, EMU_BR_DIRECT = 2, EMU_BR_INDIRECT = 3, EMU_BR_RET = 4,
                  EMU_BR_SERIAL = 5 };

typedef int (*emu_stop_fn)(void *uc);

struct emu_range {
    uint64_t base;
    uint64_t end;            /* exclusive */
    const uint64_t *insns;   /* [end - base + 1] prefix instruction counts, EMU_NO_BOUNDARY off-boundary */
    const uint64_t *cost;    /* [end - base + 1] prefix front-end millicycles (for positions inside a block) */
};

/*
 * One row of a summary: ready[dst] = max over its slots of ready[src] + off, where ready[0] holds
 * the block's dispatch start; with `merge`, also the previous row's value for the same dst (a dst
 * with more than EMU_ROW_SOURCES sources takes several rows). Fixed slots keep the loop branch-free.
 */
struct emu_row {
    int32_t off[EMU_ROW_SOURCES];
    uint8_t src[EMU_ROW_SOURCES];
    uint8_t dst;
    uint8_t merge;
    uint16_t pad;
};

/*
 * A block's timings, relative to its dispatch start: the ready times of its live-ins (each raised
 * to `lo`, below which it changes no result: every result has a term from the start) and the
 * results and the new dispatch clock they gave. Timing is a pure function of those live-ins, so
 * when they repeat -- a loop in its steady state -- the results are reused exactly. Two timings
 * are kept, the one used last first: a loop's first run after its entry and its steady runs.
 * Python fills in the live-ins, results and floors; the hook keeps the rest.
 */
struct emu_timing {
    int64_t key[EMU_MEMO_VARS];
    int64_t out[EMU_MEMO_VARS];
    int64_t clock;
    uint32_t gen;            /* which of the block's timings this is: each one learned gets a new number */
    uint8_t valid;
    uint8_t fixed;           /* the results, started `clock` later, give back these live-ins */
    uint16_t pad;
};

struct emu_memo {
    uint8_t usable;          /* 0: never memoized (too many variables, or a serializing block) */
    uint8_t nsrc;
    uint8_t ndst;
    uint8_t last;            /* the timing used last */
    uint32_t gens;           /* timings learned so far (every timing of an unmemoized block is a new one) */
    uint8_t src[EMU_MEMO_VARS];
    uint8_t dst[EMU_MEMO_VARS];
    int64_t lo[EMU_MEMO_VARS];
    struct emu_timing way[EMU_MEMO_WAYS];
};

struct emu_summary {
    uint64_t start;
    uint64_t end;
    uint64_t target;         /* a conditional branch's taken target */
    uint64_t branch_pc;
    uint32_t next;           /* next summary in the bucket, index + 1; 0 ends the chain */
    uint32_t first;          /* rows[first .. first + count) */
    uint32_t count;
    uint32_t through;        /* millicycles */
    uint32_t kind;           /* enum emu_branch: how the block ends */
    uint32_t branch_var;     /* the final branch resolves at max(ready[var] + off, start + issue) */
    int32_t branch_off;
    uint32_t branch_issue;
    uint32_t insns;          /* the block's instruction count */
    uint32_t pad;
    struct emu_memo memo;    /* next to what the hook reads of the summary */
    uint64_t seen;           /* the trail index at which it last began, + 1 (see emu_loop) */
    uint32_t rest;           /* recurrences to let pass before trying it as a loop head again */
    uint16_t rested;         /* the length of its last rest (doubled each time it fails) */
    uint16_t tries;          /* recurrences it failed to close a lap since its last rest */
};

/* One block of the loop being replayed: where it must begin and end, and what it adds. */
struct emu_lap_block {
    uint64_t start;
    uint64_t size;
    const struct emu_lap_block *next; /* the block after it (the first after the last) */
    uint64_t insns;
    uint64_t cost;           /* millicycles */
};

struct emu_loop;

struct emu_account {
    uint64_t insns;          /* instructions retired */
    uint64_t cost;           /* millicycles retired: the dispatch clock */
    uint64_t insn_limit;     /* stop before a block that would retire more than this */
    uint64_t cost_limit;
    uint64_t block_start;    /* the block being executed, and the totals before it */
    uint64_t block_insns;
    uint64_t block_cost;
    uint64_t unknown_address;
    uint64_t unknown_size;
    uint32_t stop;
    uint32_t nranges;
    uint32_t continued;      /* the block about to run is the rest of one already counted (see cont_start) */
    uint32_t syscalled;      /* set by emu_syscall_stop: the run stopped after a `syscall` */
    emu_stop_fn emu_stop;
    struct emu_range ranges[EMU_MAX_RANGES];
    /* The block model. */
    struct emu_summary *summaries;
    const struct emu_row *rows;
    int64_t penalty;         /* millicycles a mispredicted branch costs after it resolves */
    uint64_t taken_cost;     /* least millicycles from a block's start to the start of its taken successor */
    uint64_t jump_cost;      /* the same after an unconditional jump, call or return */
    uint64_t window;         /* the dispatch clock stays within this of the slowest result in flight */
    uint32_t buckets[EMU_BUCKETS]; /* first summary of the bucket, index + 1; 0 = none */
    const struct emu_summary *repeat; /* the last block, if its memo gave its results (else NULL);
                                       * reset whenever anything else may have moved the ready times */
    const struct emu_lap_block *looping; /* replaying a loop (see emu_loop): the block expected next; else NULL */
    struct emu_loop *loop;   /* finding and replaying loops; NULL: never */
    uint64_t block_end;
    uint64_t cont_start;     /* non-zero: a block starting here continues the current one (see emu_continue) */
    uint64_t last_start;     /* dispatch start of the last block */
    uint64_t pending_kind;   /* how the last block ended, for the predictor */
    uint64_t pending_target;
    uint64_t pending_pc;
    uint64_t pending_var;
    int64_t pending_off;
    uint64_t pending_issue;
    uint64_t mispredicts;
    int64_t ready[EMU_NVARS]; /* [0] is scratch: the dispatch start of the block being timed */
    uint64_t btb[EMU_BTB_SIZE];
    uint8_t pred[EMU_PRED_SIZE];
};

static uint32_t emu_bucket(uint64_t start) { return (uint32_t)((start ^ (start >> 12)) & (EMU_BUCKETS - 1)); }

static struct emu_summary *emu_find(const struct emu_account *a, uint64_t start, uint64_t end)
{
    for (uint32_t i = a->buckets[emu_bucket(start)]; i != 0; i = a->summaries[i - 1].next) {
        struct emu_summary *s = &a->summaries[i - 1];
        if (s->start == start && s->end == end) {
            return s;
        }
    }
    return NULL;
}

static int64_t emu_max(int64_t x, int64_t y) { return x > y ? x : y; }

/* The predictor's verdict on the last block's branch, now that `address` is known to follow it. */
struct emu_outcome {
    int64_t start;           /* this block's dispatch start */
    uint32_t pred_index;
    uint8_t counter;
    uint8_t taken;
    uint8_t missed;
};

static struct emu_outcome emu_predict(const struct emu_account *a, uint64_t address)
{
    struct emu_outcome o = {(int64_t)a->cost, 0, 0, 0, 0};
    switch (a->pending_kind) {
    case EMU_BR_COND:
        o.taken = address == a->pending_target;
        o.pred_index = (uint32_t)((a->pending_pc ^ (a->pending_pc >> 12)) & (EMU_PRED_SIZE - 1));
        o.counter = a->pred[o.pred_index];
        /* 0: never seen, predicted statically (backward taken, forward not); 1-2 not taken, 3-4 taken */
        o.missed = (o.counter == 0 ? a->pending_target < a->pending_pc : o.counter >= 3) != o.taken;
        break;
    case EMU_BR_INDIRECT:
        o.missed = a->btb[a->pending_pc & (EMU_BTB_SIZE - 1)] != address;
        break;
    default:
        break;
    }
    if (o.missed) { /* the front end refills after the branch resolves */
        const int64_t resolved = emu_max(a->ready[a->pending_var] + a->pending_off,
                                         (int64_t)(a->last_start + a->pending_issue));
        o.start = emu_max(o.start, resolved + a->penalty);
    }
    if (o.taken) {
        o.start = emu_max(o.start, (int64_t)(a->last_start + a->taken_cost));
    }
    if (a->pending_kind == EMU_BR_DIRECT || a->pending_kind == EMU_BR_INDIRECT || a->pending_kind == EMU_BR_RET) {
        o.start = emu_max(o.start, (int64_t)(a->last_start + a->jump_cost));
    }
    return o;
}

/* A counter's next value by [taken][counter]: 0 (never seen) goes to 3 or 2, then up to 4 or down to 1. */
static const uint8_t emu_counter_next[2][5] = {{2, 1, 1, 2, 3}, {3, 2, 3, 4, 4}};

static void emu_learn(struct emu_account *a, const struct emu_outcome *o, uint64_t address)
{
    if (a->pending_kind == EMU_BR_COND) {
        a->pred[o->pred_index] = emu_counter_next[o->taken][o->counter];
    } else if (a->pending_kind == EMU_BR_INDIRECT) {
        a->btb[a->pending_pc & (EMU_BTB_SIZE - 1)] = address;
    }
    a->mispredicts += o->missed;
}

/* The block's new ready times, row by row, into `out`; returns the new dispatch clock. ready[0] must
 * hold `start`. */
static int64_t emu_time_block(const struct emu_account *a, const struct emu_summary *s, int64_t start, int64_t *out)
{
    const int64_t *ready = a->ready;
    const struct emu_row *rows = &a->rows[s->first];
    int64_t slowest = start; /* no rows: no bound */
    int64_t previous = INT64_MIN;
    for (uint32_t k = 0; k < s->count; k++) {
        const struct emu_row *r = &rows[k];
        int64_t v = emu_max(emu_max(ready[r->src[0]] + r->off[0], ready[r->src[1]] + r->off[1]),
                            emu_max(ready[r->src[2]] + r->off[2], ready[r->src[3]] + r->off[3]));
        v = emu_max(v, r->merge ? previous : INT64_MIN);
        out[k] = previous = v;
        slowest = emu_max(slowest, v);
    }
    /* dispatch stays within the reorder window of the slowest result */
    int64_t clock = emu_max(start + (int64_t)s->through, slowest - (int64_t)a->window);
    if (s->kind == EMU_BR_SERIAL) { /* everything in flight completes first */
        for (uint32_t v = 1; v < EMU_NVARS; v++) {
            clock = emu_max(clock, ready[v]);
        }
        clock = emu_max(clock, slowest);
    }
    return clock;
}

/* Whether the block, run again right after itself and started `clock` after its last start, finds
 * the live-ins of its key: each live-in it writes is its result less `clock` (raised to its floor),
 * and each it does not write was at its floor (and only sinks further below it as time goes on). */
static uint8_t emu_fixed_point(const struct emu_memo *m, const struct emu_timing *w)
{
    if (w->clock <= 0) {
        return 0;
    }
    for (uint32_t j = 0; j < m->nsrc; j++) {
        int64_t expected = m->lo[j];
        for (uint32_t k = 0; k < m->ndst; k++) {
            if (m->dst[k] == m->src[j]) {
                expected = emu_max(w->out[k] - w->clock, m->lo[j]);
            }
        }
        if (expected != w->key[j]) {
            return 0;
        }
    }
    return 1;
}

/* The block's ready times were written; record its branch for the predictor, and where it lies. */
static void emu_commit(struct emu_account *a, const struct emu_summary *s, const struct emu_outcome *o,
                       uint64_t from, uint64_t end)
{
    emu_learn(a, o, from);
    a->cont_start = 0;
    a->block_start = from;
    a->block_end = end;
    a->block_insns = a->insns;
    a->block_cost = a->cost;
    a->last_start = (uint64_t)o->start;
    a->pending_kind = s->kind;
    a->pending_target = s->target;
    a->pending_pc = s->branch_pc;
    a->pending_var = s->branch_var;
    a->pending_off = s->branch_off;
    a->pending_issue = s->branch_issue;
}

/*
 * Loops.
 *
 * The timing of a block is a pure function of the state it finds, relative to its dispatch start:
 * its live-ins' ready times (each only above its floor: its memo key), the last block's start and
 * branch, and the predictor entry it reads. When one lap of a loop times every block exactly as the
 * lap before did (each block ran with the same timing of its memo: its live-ins were the same), and
 * leaves each predictor entry it touches as it found it, the next lap finds the same again: the
 * variables the lap writes are the last lap's shifted by the clock the lap added, and the ones it
 * does not write only sink further below the floors. So every later lap adds what the last one did.
 *
 * The slow path keeps a trail of the blocks it timed. When a block recurs within EMU_LAP_MAX blocks
 * and the trail shows two such laps, the hook replays the lap: it checks that each block is the
 * one expected and adds its counts, nothing more. Any other block, a budget, or the end of the run
 * ends the replay: the variables the lap writes are rebuilt from the replay's start and the laps
 * done, and the blocks of the unfinished lap are timed again, which gives exactly what the replay
 * counted for them. The trail goes on as if the laps had been timed, so that a loop around a
 * replayed one (whose lap holds the inner loop's block many times) can close a lap of its own.
 */

enum emu_table { EMU_TABLE_NONE = 0, EMU_TABLE_PRED = 1, EMU_TABLE_BTB = 2 };

/* One block as the slow path timed it. */
struct emu_trail {
    struct emu_summary *s;
    uint64_t insns;
    uint64_t cost;           /* millicycles it added */
    uint64_t before;         /* the predictor entry it read, and what it left there */
    uint64_t after;
    uint32_t index;
    uint32_t gen;            /* the block's timing it ran with (see struct emu_timing) */
    uint8_t table;           /* enum emu_table */
    uint8_t missed;
    uint16_t pad;
};

struct emu_loop {
    uint64_t count;          /* trail entries written so far (the trail is a ring of the last EMU_TRAIL) */
    uint64_t valid;          /* entries from this index on are contiguous blocks of the current run */
    uint64_t replayed;       /* blocks counted by replaying laps, over the loop's life (a statistic) */
    uint64_t replays;        /* replays begun, over the loop's life (a statistic) */
    struct emu_trail trail[EMU_TRAIL];
    /* the lap being replayed, and the state when its replay began */
    int64_t base_ready[EMU_NVARS]; /* of the variables the lap writes */
    int64_t base_last_start;
    uint64_t base_cost;
    uint64_t base_insns;
    uint64_t base_mispredicts;
    uint64_t base_pending[6]; /* pending_kind .. pending_issue */
    uint64_t lap_insns;
    int64_t lap_cost;
    uint64_t lap_misses;
    uint32_t length;
    uint32_t nwritten;
    uint8_t written[EMU_NVARS];
    uint64_t prefix_insns[EMU_LAP_MAX + 1];
    struct emu_trail lap_trail[EMU_LAP_MAX]; /* the lap's blocks as the trail had them */
    struct emu_lap_block lap[EMU_LAP_MAX];
};

#define EMU_PENDING(a) (&(a)->pending_kind)

/* Forget the trail: what follows does not continue it (a stop, a state changed from outside). */
static void emu_loop_forget(struct emu_loop *l) { l->valid = l->count; }

static int emu_step(struct emu_account *a, struct emu_summary *s, uint64_t from, uint64_t end, int limited,
                    struct emu_trail *t);

/*
 * The trail goes on as if the `laps` laps replayed had been timed, each as the lap the replay
 * began with (every lap timed alike), so that a loop around this one can still close a lap. Only
 * the last EMU_TRAIL entries are written: the ring holds no more.
 */
static void emu_trail_laps(struct emu_loop *l, uint64_t laps)
{
    const uint64_t blocks = laps * l->length, written = blocks < EMU_TRAIL ? blocks : EMU_TRAIL;
    uint64_t k = (blocks - written) % l->length;
    for (uint64_t m = blocks - written; m < blocks; m++) {
        l->trail[(l->count + m) & (EMU_TRAIL - 1)] = l->lap_trail[k];
        k = k + 1 == l->length ? 0 : k + 1;
    }
    l->count += blocks;
    for (uint64_t j = 0; laps != 0 && j < l->length; j++) { /* where each block last began */
        l->lap_trail[j].s->seen = l->count - l->length + j + 1;
    }
}

/* End the replay: rebuild the state at the start of the unfinished lap, then time its blocks again.
 * The trail goes on (a loop around this one may close a lap). */
__attribute__((noinline)) static void emu_loop_leave(struct emu_account *a)
{
    struct emu_loop *l = a->loop;
    const uint64_t pos = (uint64_t)(a->looping - l->lap);
    const uint64_t laps = (a->insns - l->base_insns - l->prefix_insns[pos]) / l->lap_insns;
    const int64_t shift = (int64_t)laps * l->lap_cost;
    l->replayed += laps * l->length + pos;
    a->looping = NULL;
    a->repeat = NULL;
    for (uint32_t j = 0; j < l->nwritten; j++) {
        a->ready[l->written[j]] = l->base_ready[l->written[j]] + shift;
    }
    a->last_start = (uint64_t)(l->base_last_start + shift);
    memcpy(EMU_PENDING(a), l->base_pending, sizeof l->base_pending);
    a->mispredicts = l->base_mispredicts + laps * l->lap_misses;
    a->insns = l->base_insns + laps * l->lap_insns;
    a->cost = l->base_cost + (uint64_t)shift;
    emu_trail_laps(l, laps);
    for (uint64_t k = 0; k < pos; k++) {
        struct emu_summary *s = l->lap_trail[k].s;
        emu_step(a, s, l->lap[k].start, l->lap[k].start + l->lap[k].size, 0, &l->trail[l->count & (EMU_TRAIL - 1)]);
        s->seen = ++l->count;
    }
}

/* The run ends (or the hook stops it): a replay ends, and the trail is forgotten. */
void emu_run_end(struct emu_account *a)
{
    if (a->looping != NULL) {
        emu_loop_leave(a);
    }
    if (a->loop != NULL) {
        emu_loop_forget(a->loop);
    }
}

static const struct emu_trail *emu_trail_at(const struct emu_loop *l, uint64_t index)
{
    return &l->trail[index & (EMU_TRAIL - 1)];
}

/*
 * Whether the trail's last `length` blocks, beginning at `first`, are a lap that repeats: the same
 * blocks as the `length` before them, each with the same timing (the same live-ins: one its memo
 * held already) and cost, each predictor entry left as the lap found it, and every mispredicted
 * branch's resolution read from a variable the lap writes. Returns the mask of the variables the
 * lap writes, or 0.
 */
static uint64_t emu_loop_closes(const struct emu_loop *l, uint64_t first, uint64_t length)
{
    uint64_t written = 0, resolved = 0;
    const struct emu_summary *before = emu_trail_at(l, first - 1)->s;
    for (uint64_t k = 0; k < length; k++) {
        const struct emu_trail *t = emu_trail_at(l, first + k), *last_lap = emu_trail_at(l, first - length + k);
        const struct emu_summary *s = t->s;
        if (s != last_lap->s || t->gen != last_lap->gen || t->cost != last_lap->cost) {
            return 0; /* another block, or another timing of it (a new one, learned in this lap) */
        }
        if (t->missed) {
            resolved |= (uint64_t)1 << before->branch_var;
        }
        for (uint32_t j = 0; j < s->memo.ndst; j++) {
            written |= (uint64_t)1 << s->memo.dst[j];
        }
        before = s;
    }
    if (written == 0 || (resolved & ~written) != 0) {
        return 0;
    }
    for (uint64_t k = 0; k < length; k++) { /* the predictor: each entry's first read == its last write */
        const struct emu_trail *t = emu_trail_at(l, first + k);
        if (t->table == EMU_TABLE_NONE) {
            continue;
        }
        const struct emu_trail *last = t;
        int first_access = 1;
        for (uint64_t q = 0; q < length && first_access; q++) {
            const struct emu_trail *u = emu_trail_at(l, first + q);
            if (u->table == t->table && u->index == t->index) {
                first_access = q >= k;
                last = u;
            }
        }
        if (first_access && t->before != last->after) {
            return 0;
        }
    }
    return written;
}

/* Begin replaying the lap of the trail's last `length` blocks (beginning at `first`). */
static void emu_loop_start(struct emu_account *a, struct emu_loop *l, uint64_t first, uint64_t length,
                           uint64_t written)
{
    l->nwritten = 0;
    for (uint32_t v = 1; v < EMU_NVARS; v++) {
        if (written >> v & 1) {
            l->written[l->nwritten++] = (uint8_t)v;
            l->base_ready[v] = a->ready[v];
        }
    }
    l->base_last_start = (int64_t)a->last_start;
    l->base_cost = a->cost;
    l->base_insns = a->insns;
    l->base_mispredicts = a->mispredicts;
    memcpy(l->base_pending, EMU_PENDING(a), sizeof l->base_pending);
    l->lap_insns = l->lap_misses = 0;
    l->lap_cost = 0;
    l->length = (uint32_t)length;
    for (uint64_t k = 0; k < length; k++) {
        const struct emu_trail *t = emu_trail_at(l, first + k);
        struct emu_lap_block *b = &l->lap[k];
        b->start = t->s->start;
        b->size = (uint32_t)(t->s->end - t->s->start);
        b->next = k + 1 == length ? &l->lap[0] : &l->lap[k + 1];
        b->insns = t->insns;
        b->cost = t->cost;
        l->lap_trail[k] = *t;
        l->prefix_insns[k] = l->lap_insns;
        l->lap_insns += t->insns;
        l->lap_cost += (int64_t)t->cost;
        l->lap_misses += t->missed;
    }
    l->prefix_insns[length] = l->lap_insns;
    l->replays++;
    a->looping = l->lap;
}

/*
 * A block that follows itself, at its memo's fixed point (emu_fixed_point: started its own clock
 * after its last start, it finds the live-ins of its key), not mispredicted and leaving its
 * predictor entry as it is: this run and every later one time as the last did (each one's start
 * is again its clock after the last's), so a lap of this one block closes now, a lap early.
 */
static uint64_t emu_loop_steady(struct emu_account *a, struct emu_loop *l, struct emu_summary *s)
{
    const struct emu_memo *m = &s->memo;
    const struct emu_timing *w = &m->way[m->last];
    if (a->repeat != s || !w->fixed || l->count == l->valid || emu_trail_at(l, l->count - 1)->s != s) {
        return 0;
    }
    const struct emu_outcome o = emu_predict(a, s->start);
    if (o.missed || o.start - (int64_t)a->last_start != w->clock ||
        (a->pending_kind == EMU_BR_COND && emu_counter_next[o.taken][o.counter] != o.counter)) {
        return 0;
    }
    uint64_t written = 0;
    for (uint32_t j = 0; j < m->ndst; j++) {
        written |= (uint64_t)1 << m->dst[j];
    }
    struct emu_trail *t = &l->trail[l->count & (EMU_TRAIL - 1)]; /* this block's entry, as it will time */
    *t = (struct emu_trail){.s = s, .insns = s->insns, .cost = (uint64_t)w->clock, .gen = w->gen};
    return written;
}

/* Before the slow path times `s` (a block at its own start): 1 if the trail since `s` last began
 * is a lap that repeats, whose replay then begins with this block. */
static int emu_loop_watch(struct emu_account *a, struct emu_loop *l, struct emu_summary *s)
{
    const uint64_t now = l->count;
    const uint64_t steady = emu_loop_steady(a, l, s);
    if (steady != 0) {
        emu_loop_start(a, l, now, 1, steady);
        return 1;
    }
    if (s->seen <= l->valid) {
        return 0;
    }
    const uint64_t first = s->seen - 1, length = now - first;
    if (length > EMU_LAP_MAX || first < l->valid + length + 1) {
        return 0; /* not a short loop, or fewer than two laps (and the block before them) on the trail */
    }
    if (s->rest != 0) {
        s->rest--;
        return 0;
    }
    const uint64_t written = emu_loop_closes(l, first, length);
    if (written == 0) {
        if (++s->tries >= EMU_LOOP_TRIES) { /* not steady yet: rest, longer each time */
            s->rested = s->rested == 0 ? 1 : (s->rested * 2 < EMU_LOOP_REST_MAX ? s->rested * 2 : EMU_LOOP_REST_MAX);
            s->rest = s->rested;
            s->tries = 0;
        }
        return 0;
    }
    s->tries = 0;
    s->rested = 0;
    emu_loop_start(a, l, first, length, written);
    return 1;
}

static void emu_budget_stop(void *uc, struct emu_account *a, uint64_t n)
{
    a->stop = a->insns + n > a->insn_limit ? EMU_STOP_INSNS : EMU_STOP_CYCLES;
    emu_run_end(a);
    a->emu_stop(uc);
}

static void emu_unknown(void *uc, struct emu_account *a, uint64_t address, uint64_t size)
{
    a->stop = EMU_STOP_UNKNOWN;
    a->unknown_address = address;
    a->unknown_size = size;
    emu_run_end(a);
    a->emu_stop(uc);
}

/* Replaying a loop: if the block is `b`, the one the lap expects next, and within the budgets,
 * count what it added the lap before (1); else 0, with nothing changed. */
static inline int emu_replay_block(struct emu_account *a, const struct emu_lap_block *b, uint64_t address,
                                   uint32_t size)
{
    const uint64_t n = b->insns, c = b->cost;
    if (address != b->start || size != b->size || a->insns + n > a->insn_limit || a->cost + c > a->cost_limit) {
        return 0;
    }
    a->block_start = address;
    a->block_end = address + size;
    a->block_insns = a->insns;
    a->block_cost = a->cost;
    a->insns += n;
    a->cost += c;
    a->looping = b->next;
    return 1;
}

/*
 * Time the block `s` (it runs [from, end)) after the current state and count it. With `limited`,
 * a block that would cross a budget changes nothing and gives 0. With `t`, the block's trail entry.
 */
static int emu_step(struct emu_account *a, struct emu_summary *s, uint64_t from, uint64_t end, int limited,
                    struct emu_trail *t)
{
    const uint64_t n = s->insns;
    const struct emu_outcome o = emu_predict(a, from);
    struct emu_memo *m = &s->memo;
    struct emu_timing *w = &m->way[m->last];
    a->ready[0] = o.start;
    int64_t live_in[EMU_MEMO_VARS];
    int hit = 0;
    if (a->repeat == s && w->fixed && o.start - (int64_t)a->last_start == w->clock) {
        /* A loop of one block in its steady state: the live-ins are this timing's own results, so
         * they match its key (see emu_fixed_point); nothing to compare. */
        hit = 1;
    } else if (m->usable) {
        for (uint32_t j = 0; j < m->nsrc; j++) {
            live_in[j] = emu_max(a->ready[m->src[j]] - o.start, m->lo[j]);
        }
        for (uint32_t k = 0; k < EMU_MEMO_WAYS && !hit; k++) {
            const uint32_t way = (m->last + k) % EMU_MEMO_WAYS;
            uint64_t differs = !m->way[way].valid;
            for (uint32_t j = 0; j < m->nsrc; j++) {
                differs |= (uint64_t)(live_in[j] ^ m->way[way].key[j]);
            }
            if (!differs) {
                hit = 1;
                m->last = (uint8_t)way;
                w = &m->way[way];
            }
        }
    }
    uint64_t c;
    uint32_t gen;
    if (hit) { /* the live-ins repeat: so do the results */
        c = (uint64_t)(o.start + w->clock) - a->cost;
        if (limited && (a->insns + n > a->insn_limit || a->cost + c > a->cost_limit)) {
            return 0;
        }
        for (uint32_t j = 0; j < m->ndst; j++) {
            a->ready[m->dst[j]] = o.start + w->out[j];
        }
        gen = w->gen;
        a->repeat = s;
    } else {
        int64_t ready[EMU_ROWS_MAX];
        const int64_t clock = emu_time_block(a, s, o.start, ready);
        c = (uint64_t)clock - a->cost;
        if (limited && (a->insns + n > a->insn_limit || a->cost + c > a->cost_limit)) {
            return 0;
        }
        for (uint32_t k = 0; k < s->count; k++) { /* a merged row's value includes the one before */
            a->ready[a->rows[s->first + k].dst] = ready[k];
        }
        gen = ++m->gens;
        if (m->usable) { /* a new timing, in place of the one used longer ago */
            m->last = (uint8_t)((m->last + 1) % EMU_MEMO_WAYS);
            w = &m->way[m->last];
            for (uint32_t j = 0; j < m->nsrc; j++) { /* the live-ins as they were before the rows above */
                w->key[j] = live_in[j];
            }
            for (uint32_t j = 0; j < m->ndst; j++) {
                w->out[j] = a->ready[m->dst[j]] - o.start;
            }
            w->clock = clock - o.start;
            w->gen = gen;
            w->valid = 1;
            w->fixed = emu_fixed_point(m, w);
        }
        a->repeat = m->usable ? s : NULL;
    }
    if (t != NULL) {
        t->s = s;
        t->gen = gen;
        t->insns = n;
        t->cost = c;
        t->missed = o.missed;
        t->table = EMU_TABLE_NONE;
        if (a->pending_kind == EMU_BR_COND) {
            t->table = EMU_TABLE_PRED;
            t->index = o.pred_index;
            t->before = o.counter;
        } else if (a->pending_kind == EMU_BR_INDIRECT) {
            t->table = EMU_TABLE_BTB;
            t->index = (uint32_t)(a->pending_pc & (EMU_BTB_SIZE - 1));
            t->before = a->btb[t->index];
        }
    }
    emu_commit(a, s, &o, from, end);
    if (t != NULL && t->table != EMU_TABLE_NONE) {
        t->after = t->table == EMU_TABLE_PRED ? a->pred[t->index] : a->btb[t->index];
    }
    a->insns += n;
    a->cost += c;
    return 1;
}

/* Kept out of line, so that the replay's path in emu_account_block stays a leaf with no frame. */
__attribute__((noinline)) static void emu_account_slow(void *uc, uint64_t address, uint32_t size,
                                                      struct emu_account *a)
{
    if (a->looping != NULL) { /* not the block the lap expects, or past a budget */
        emu_loop_leave(a);
    }
    const uint64_t end = address + size;
    uint64_t from = address;
    struct emu_loop *l = a->loop;
    a->continued = 0;
    if (a->cont_start != 0 && address == a->cont_start) {
        if (l != NULL) {
            emu_loop_forget(l);
        }
        if (end <= a->block_end) {
            a->cont_start = 0; /* the rest of a block already counted and timed */
            a->continued = 1;
            return;
        }
        from = a->block_end; /* longer than the block it continues: count and time the new tail */
    }
    struct emu_summary *s = emu_find(a, from, end);
    if (s == NULL) {
        emu_unknown(uc, a, from, end - from);
        return;
    }
    struct emu_trail *t = NULL;
    if (l != NULL && from == address) {
        if (emu_loop_watch(a, l, s)) { /* a lap closed: its replay begins with this block */
            if (emu_replay_block(a, a->looping, address, size)) {
                return;
            }
            a->looping = NULL; /* over a budget: nothing replayed yet, the state is the replay's base */
        }
        t = &l->trail[l->count & (EMU_TRAIL - 1)];
    }
    if (!emu_step(a, s, from, end, 1, t)) {
        emu_budget_stop(uc, a, s->insns);
        return;
    }
    if (t != NULL) {
        s->seen = ++l->count;
    }
}

void emu_account_block(void *uc, uint64_t address, uint32_t size, struct emu_account *a)
{
    const struct emu_lap_block *expected = a->looping;
    if (expected != NULL && emu_replay_block(a, expected, address, size)) {
        return;
    }
    emu_account_slow(uc, address, size, a);
}


uint64_t emu_account_layout_size(void) { return sizeof(struct emu_account); }

uint64_t emu_summary_layout_size(void) { return sizeof(struct emu_summary); }

uint64_t emu_memo_layout_size(void) { return sizeof(struct emu_memo); }

uint64_t emu_loop_layout_size(void) { return sizeof(struct emu_loop); }

/* Blocks a loop's replays have counted so far, and replays begun (statistics for benches and tests). */
uint64_t emu_loop_replayed(const struct emu_loop *l) { return l->replayed; }

uint64_t emu_loop_replays(const struct emu_loop *l) { return l->replays; }

/* UC_HOOK_INSN for `syscall`: note it and stop; RIP is left after the instruction, so resuming
 * continues there. Native, so that a syscall costs no Python callback. */
void emu_syscall_stop(void *uc, struct emu_account *a)
{
    emu_run_end(a);
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
    for (uint32_t i = 0; i < a->nranges; i++) {
        const struct emu_range *r = &a->ranges[i];
        if (a->block_start < r->base || a->block_start > r->end || address < r->base || address > r->end) {
            continue;
        }
        const uint64_t b = r->insns[a->block_start - r->base], n = r->insns[address - r->base];
        if (b == EMU_NO_BOUNDARY || n == EMU_NO_BOUNDARY) {
            continue;
        }
        /* Inside the block, time runs at the front end's pace, within what the block was charged. */
        const int64_t spent = (int64_t)(r->cost[address - r->base] - r->cost[a->block_start - r->base]);
        const int64_t charged = (int64_t)(a->cost - a->block_cost);
        *insns = a->block_insns + (n - b);
        *cost = a->block_cost + (uint64_t)(spent < charged ? spent : charged);
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
