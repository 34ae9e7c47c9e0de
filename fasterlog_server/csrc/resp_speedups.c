/* fasterlog_server._resp_speedups: rs_split (resp_split.c) returning Python objects directly, and the
 * lone XADD's whole path to its pending record (xadd_lane.c).
 *
 * Why a CPython extension and not cffi like the log core: the result is a list of lists of
 * bytes, and building it in Python from offsets cost more than the split itself (about 1.1 us
 * of a 1.4 us call for one GET, against 0.3 us here). The C core stays cffi; this module is
 * the service's only use of the C API and holds no state. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "resp_split.h"

PyObject *xadd_lone(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
int xadd_lane_init(void);

enum { COMMANDS_MAX = 1024, ARGUMENTS_MAX = 8192 };

/* split(buffer, start, bulk_size_max_bytes, arguments_count_max, commands_max)
 *   -> (commands, consumed_bytes)
 * The whole commands rs_split takes at buffer[start:], as lists of bytes, and how many bytes
 * they span. At most min(commands_max, 1024) commands and 8192 arguments per call. */
static PyObject *split(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "split takes 5 arguments");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    unsigned long bulk_size_max_bytes = PyLong_AsUnsignedLong(args[2]);
    unsigned long arguments_count_max = PyLong_AsUnsignedLong(args[3]);
    Py_ssize_t commands_max = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *commands = NULL;
    if (start < 0 || start > view.len || commands_max < 0 || bulk_size_max_bytes > UINT32_MAX ||
        arguments_count_max > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "split: an argument is out of range");
        goto done;
    }
    if (commands_max > COMMANDS_MAX)
        commands_max = COMMANDS_MAX;
    uint32_t counts[COMMANDS_MAX];
    static __thread uint32_t bounds[2 * ARGUMENTS_MAX];  /* 64 KiB: not on the stack */
    rs_split_result result;
    const char *base = (const char *)view.buf + start;
    rs_split(base, (size_t)(view.len - start), (uint32_t)bulk_size_max_bytes,
             (uint32_t)arguments_count_max, (uint32_t)commands_max, ARGUMENTS_MAX, counts,
             bounds, &result);
    commands = PyList_New((Py_ssize_t)result.commands_count);
    if (commands == NULL)
        goto done;
    const uint32_t *bound = bounds;
    for (uint32_t i = 0; i < result.commands_count; i++) {
        PyObject *command = PyList_New((Py_ssize_t)counts[i]);
        if (command == NULL)
            goto fail;
        PyList_SET_ITEM(commands, i, command);
        for (uint32_t j = 0; j < counts[i]; j++, bound += 2) {
            PyObject *argument = PyBytes_FromStringAndSize(base + bound[0],
                                                           (Py_ssize_t)(bound[1] - bound[0]));
            if (argument == NULL)
                goto fail;
            PyList_SET_ITEM(command, j, argument);
        }
    }
    PyObject *pair = Py_BuildValue("(NK)", commands, (unsigned long long)result.consumed_bytes);
    PyBuffer_Release(&view);
    return pair;
fail:
    Py_CLEAR(commands);
done:
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"split", (PyCFunction)(void (*)(void))split, METH_FASTCALL,
     "split(buffer, start, bulk_size_max_bytes, arguments_count_max, commands_max)"
     " -> (commands, consumed_bytes)"},
    {"xadd_lone", (PyCFunction)(void (*)(void))xadd_lone, METH_FASTCALL,
     "xadd_lone(data, bulk_size_max_bytes, arguments_count_max, streams, pending,"
     " entry_size_max) -> (key, reply) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "fasterlog_server._resp_speedups",
    "The server's fast paths in C (csrc/resp_split.c, csrc/xadd_lane.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__resp_speedups(void) {
    if (xadd_lane_init() < 0)
        return NULL;
    return PyModule_Create(&module);
}
