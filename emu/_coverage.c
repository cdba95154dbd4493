/*
 * Native block coverage for procd-emu's fuzzer (see emu/coverage.py, which owns the layout).
 *
 * Unicorn calls emu_cover_block before every translated block in one address range runs; it
 * marks the block's first byte in a byte map (one byte per code byte of the range). After an
 * example, emu_cover_merge folds the map into the campaign's and says how many blocks were new.
 * It runs without the GIL and touches no Python object.
 *
 * Like _accounting.c, the file is also a (method-less) CPython extension module so that the
 * ordinary package install builds it; Python finds the functions with ctypes.
 */
#include <Python.h>
#include <stdint.h>
#include <string.h>

struct emu_cover {
    uint64_t begin;    /* first address covered */
    uint64_t end;      /* exclusive */
    uint8_t *hits;     /* [end - begin]: 1 where a block started since the last merge */
};

void emu_cover_block(void *uc, uint64_t address, uint32_t size, void *user)
{
    struct emu_cover *cover = (struct emu_cover *)user;
    (void)uc;
    (void)size;
    if (address >= cover->begin && address < cover->end)
        cover->hits[address - cover->begin] = 1;
}

/* Fold `run` into `total` (both `n` bytes), clear `run`; the number of entries new to `total`. */
uint64_t emu_cover_merge(uint8_t *run, uint8_t *total, uint64_t n)
{
    uint64_t fresh = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (run[i]) {
            fresh += !total[i];
            total[i] = 1;
            run[i] = 0;
        }
    }
    return fresh;
}

/* The number of non-zero bytes of `map` (`n` bytes). */
uint64_t emu_cover_count(const uint8_t *map, uint64_t n)
{
    uint64_t count = 0;
    for (uint64_t i = 0; i < n; i++)
        count += map[i] != 0;
    return count;
}

uint64_t emu_cover_layout_size(void)
{
    return sizeof(struct emu_cover);
}

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_coverage", "Native block coverage.", -1, NULL};

PyMODINIT_FUNC PyInit__coverage(void)
{
    return PyModule_Create(&module);
}
