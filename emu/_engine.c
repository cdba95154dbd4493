/*
 * The hot calls from the model into a Unicorn engine, as CPython functions (see emu/engine_calls.py).
 *
 * A round trip starts an engine a dozen times and reads and writes its registers around each run.
 * Through ctypes every such call converts its arguments and builds its result in Python (a few
 * microseconds each); here each is one call. `start` runs the engine and, when the run stopped at
 * a `syscall`, reads the syscall's registers in the same call. Nothing here links against Unicorn:
 * Python hands over the addresses of its C functions once (`bind`).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define ENGINE_MAX_REGISTERS 32

typedef int (*uc_emu_start_fn)(void *uc, uint64_t begin, uint64_t until, uint64_t timeout, size_t count);
typedef int (*uc_reg_batch_fn)(void *uc, const int *regs, void *const *vals, int count);

static uc_emu_start_fn emu_start;
static uc_reg_batch_fn reg_read_batch;
static uc_reg_batch_fn reg_write_batch;

static int as_u64(PyObject *object, uint64_t *value)
{
    *value = PyLong_AsUnsignedLongLongMask(object);
    return !(*value == (uint64_t)-1 && PyErr_Occurred());
}

static int bound(void)
{
    if (emu_start == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "emu._engine is not bound to Unicorn (call bind first)");
        return 0;
    }
    return 1;
}

/* bind(uc_emu_start, uc_reg_read_batch, uc_reg_write_batch): the functions' addresses. */
static PyObject *engine_bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    uint64_t start, read, write;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "bind takes three function addresses");
        return NULL;
    }
    if (!as_u64(args[0], &start) || !as_u64(args[1], &read) || !as_u64(args[2], &write)) {
        return NULL;
    }
    emu_start = (uc_emu_start_fn)(uintptr_t)start;
    reg_read_batch = (uc_reg_batch_fn)(uintptr_t)read;
    reg_write_batch = (uc_reg_batch_fn)(uintptr_t)write;
    Py_RETURN_NONE;
}

/* Read `count` registers (Unicorn ids at `ids`): a tuple of ints, or the int status on failure. */
static PyObject *read_registers(void *uc, const int *ids, int count)
{
    uint64_t values[ENGINE_MAX_REGISTERS];
    void *pointers[ENGINE_MAX_REGISTERS];
    for (int i = 0; i < count; i++) {
        values[i] = 0;
        pointers[i] = &values[i];
    }
    const int status = reg_read_batch(uc, ids, pointers, count);
    if (status != 0) {
        return PyLong_FromLong(status);
    }
    PyObject *tuple = PyTuple_New(count);
    if (tuple == NULL) {
        return NULL;
    }
    for (int i = 0; i < count; i++) {
        PyObject *value = PyLong_FromUnsignedLongLong(values[i]);
        if (value == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, value);
    }
    return tuple;
}

/* Write `values` (a tuple or list of ints, low 64 bits kept) to the registers at `ids`: the status,
 * or -1 with a Python error set. */
static int write_registers(void *uc, const int *ids, PyObject *values)
{
    PyObject *sequence = PySequence_Fast(values, "values must be a sequence");
    if (sequence == NULL) {
        return -1;
    }
    const Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    if (count > ENGINE_MAX_REGISTERS) {
        Py_DECREF(sequence);
        PyErr_Format(PyExc_ValueError, "at most %d registers per call", ENGINE_MAX_REGISTERS);
        return -1;
    }
    uint64_t numbers[ENGINE_MAX_REGISTERS];
    void *pointers[ENGINE_MAX_REGISTERS];
    PyObject **items = PySequence_Fast_ITEMS(sequence);
    for (Py_ssize_t i = 0; i < count; i++) {
        if (!as_u64(items[i], &numbers[i])) {
            Py_DECREF(sequence);
            return -1;
        }
        pointers[i] = &numbers[i];
    }
    Py_DECREF(sequence);
    return reg_write_batch(uc, ids, pointers, (int)count);
}

static int register_args(PyObject *uc_arg, PyObject *ids_arg, PyObject *count_arg, void **uc, const int **ids,
                         int *count)
{
    uint64_t handle, address, n;
    if (!as_u64(uc_arg, &handle) || !as_u64(ids_arg, &address) || !as_u64(count_arg, &n)) {
        return 0;
    }
    if (n > ENGINE_MAX_REGISTERS) {
        PyErr_Format(PyExc_ValueError, "at most %d registers per call", ENGINE_MAX_REGISTERS);
        return 0;
    }
    *uc = (void *)(uintptr_t)handle;
    *ids = (const int *)(uintptr_t)address;
    *count = (int)n;
    return 1;
}

/* read(uc, ids, count) -> tuple | int status */
static PyObject *engine_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    void *uc;
    const int *ids;
    int count;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "read(uc, ids, count)");
        return NULL;
    }
    if (!bound() || !register_args(args[0], args[1], args[2], &uc, &ids, &count)) {
        return NULL;
    }
    return read_registers(uc, ids, count);
}

/* write(uc, ids, values) -> int status; `values` a tuple or list, one int per id (low 64 bits kept). */
static PyObject *engine_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    uint64_t handle, ids;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "write(uc, ids, values)");
        return NULL;
    }
    if (!bound() || !as_u64(args[0], &handle) || !as_u64(args[1], &ids)) {
        return NULL;
    }
    const int status = write_registers((void *)(uintptr_t)handle, (const int *)(uintptr_t)ids, args[2]);
    return status < 0 ? NULL : PyLong_FromLong(status);
}

/*
 * start(uc, begin, flag, ids, count[, write_ids, write_values]) -> int status | tuple
 *
 * Writes `write_values` to the registers at `write_ids` first, if given (a syscall's results).
 * Then runs the engine from `begin` with no end address (hooks stop it), the GIL released as
 * ctypes does. If it returned without error and the uint32 at `flag` is set (the native syscall
 * stop's mark), the `count` registers at `ids` are read and returned as a tuple; otherwise the
 * status.
 */
static PyObject *engine_start(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    uint64_t handle, begin, flag;
    void *uc;
    const int *ids;
    int count;
    if (nargs != 5 && nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "start(uc, begin, flag, ids, count[, write_ids, write_values])");
        return NULL;
    }
    if (!bound() || !as_u64(args[0], &handle) || !as_u64(args[1], &begin) || !as_u64(args[2], &flag) ||
        !register_args(args[0], args[3], args[4], &uc, &ids, &count)) {
        return NULL;
    }
    if (nargs == 7) {
        uint64_t write_ids;
        if (!as_u64(args[5], &write_ids)) {
            return NULL;
        }
        const int written = write_registers(uc, (const int *)(uintptr_t)write_ids, args[6]);
        if (written < 0) {
            return NULL;
        }
        if (written != 0) {
            return PyLong_FromLong(written);
        }
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = emu_start(uc, begin, UINT64_MAX, 0, 0);
    Py_END_ALLOW_THREADS
    if (status != 0 || *(const volatile uint32_t *)(uintptr_t)flag == 0) {
        return PyLong_FromLong(status);
    }
    return read_registers(uc, ids, count);
}

/*
 * put_pages(host, saved, page_size) -> int
 *
 * Put `saved` (bytes, a whole number of pages) back at host address `host`, page by page,
 * rewriting only the pages that differ: the number rewritten. (A world restore puts back a
 * guest's volatile pages; most of them are unchanged since the snapshot.)
 */
static PyObject *engine_put_pages(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    uint64_t host, page;
    if (nargs != 3 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "put_pages(host, saved: bytes, page_size)");
        return NULL;
    }
    if (!as_u64(args[0], &host) || !as_u64(args[2], &page)) {
        return NULL;
    }
    const char *saved = PyBytes_AS_STRING(args[1]);
    const uint64_t size = (uint64_t)PyBytes_GET_SIZE(args[1]);
    if (page == 0 || size % page != 0) {
        PyErr_SetString(PyExc_ValueError, "put_pages: saved is not a whole number of pages");
        return NULL;
    }
    char *where = (char *)(uintptr_t)host;
    long written = 0;
    if (memcmp(where, saved, size) != 0) {
        for (uint64_t offset = 0; offset < size; offset += page) {
            if (memcmp(where + offset, saved + offset, page) != 0) {
                memcpy(where + offset, saved + offset, page);
                written++;
            }
        }
    }
    return PyLong_FromLong(written);
}

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)(void (*)(void))engine_bind, METH_FASTCALL, "bind(start, read_batch, write_batch)"},
    {"read", (PyCFunction)(void (*)(void))engine_read, METH_FASTCALL, "read(uc, ids, count) -> tuple | status"},
    {"write", (PyCFunction)(void (*)(void))engine_write, METH_FASTCALL, "write(uc, ids, values) -> status"},
    {"start", (PyCFunction)(void (*)(void))engine_start, METH_FASTCALL,
     "start(uc, begin, flag, ids, count[, write_ids, write_values]) -> status | tuple"},
    {"put_pages", (PyCFunction)(void (*)(void))engine_put_pages, METH_FASTCALL,
     "put_pages(host, saved, page_size) -> pages rewritten"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_engine", "Hot calls into a Unicorn engine.", -1, methods};

PyMODINIT_FUNC PyInit__engine(void) { return PyModule_Create(&module); }
