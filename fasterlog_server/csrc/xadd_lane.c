/* fasterlog_server._resp_speedups.xadd_lone: the server's commonest write, one `XADD key * field value
 * [field value ...]` that arrived alone and whole, from the received bytes to the pending record
 * in one call.
 *
 * Why: a producer that waits for each reply (redis-benchmark -c 50, most applications) sends
 * one XADD per read. In Python that read cost about 5 us of the loop thread (split, checks,
 * StreamStore.add_now: the id, msgpack, five list and attribute updates), as much as the
 * kernel's share of the request. This function does exactly what StreamStore.add_now does
 * for that frame, to the byte (add_now is the one Python encoder of entry records, and
 * tests/fasterlog_server/test_service_xadd_lane.py compares the records and the index changes), and declines (returns None, having changed nothing) for anything else, which then takes the
 * Python path: another shape or command, more or less than one whole frame, a stream that
 * does not exist yet, a record over entry_size_max (the Python path answers the error).
 * The stream index stays Python objects (fasterlog_server/streams.py's Stream): this only appends to
 * its lists, so every other command keeps reading them as before. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>
#include <time.h>

#include "resp_split.h"

/* StreamStore's PENDING_ADDRESS_BASE: placeholders for records not yet appended. */
#define PENDING_ADDRESS_BASE (UINT64_C(1) << 62)
/* Field-value pairs taken here; more go the Python path (a bound for the stack arrays). */
#define FIELD_PAIRS_MAX 32
#define ARGUMENTS_MAX (3 + 2 * FIELD_PAIRS_MAX)
/* The record's largest possible msgpack bytes besides its strings' own: the array (1), "xadd"
 * as bin (6), the key's bin header (5), two uint64 (2 x 9), the fields' array (3), and a bin
 * header (5) per field and value. */
#define RECORD_OVERHEAD_MAX_BYTES (1 + 6 + 5 + 18 + 3 + 5 * 2 * FIELD_PAIRS_MAX)

static PyObject *name_last_id, *name_ids, *name_addresses, *name_entries_added;

int xadd_lane_init(void) {
    name_last_id = PyUnicode_InternFromString("last_id");
    name_ids = PyUnicode_InternFromString("ids");
    name_addresses = PyUnicode_InternFromString("addresses");
    name_entries_added = PyUnicode_InternFromString("entries_added");
    return name_last_id && name_ids && name_addresses && name_entries_added ? 0 : -1;
}

/* msgpack as msgpack-python packs with use_bin_type=True: bytes as bin 8/16/32, unsigned
 * integers in the smallest form. */
static char *pack_bin(char *out, const char *data, uint32_t size) {
    if (size < 256) {
        *out++ = (char)0xc4;
        *out++ = (char)size;
    } else if (size < 65536) {
        *out++ = (char)0xc5;
        *out++ = (char)(size >> 8);
        *out++ = (char)size;
    } else {
        *out++ = (char)0xc6;
        for (int shift = 24; shift >= 0; shift -= 8) *out++ = (char)(size >> shift);
    }
    memcpy(out, data, size);
    return out + size;
}

static char *pack_unsigned(char *out, uint64_t value) {
    if (value < 128) {
        *out++ = (char)value;
    } else if (value < 256) {
        *out++ = (char)0xcc;
        *out++ = (char)value;
    } else if (value < 65536) {
        *out++ = (char)0xcd;
        *out++ = (char)(value >> 8);
        *out++ = (char)value;
    } else if (value <= UINT32_MAX) {
        *out++ = (char)0xce;
        for (int shift = 24; shift >= 0; shift -= 8) *out++ = (char)(value >> shift);
    } else {
        *out++ = (char)0xcf;
        for (int shift = 56; shift >= 0; shift -= 8) *out++ = (char)(value >> shift);
    }
    return out;
}

/* The stream's last id, as StreamStore keeps it: a tuple of two ints below 2**64. */
static int read_last_id(PyObject *stream, uint64_t *ms_out, uint64_t *seq_out) {
    PyObject *last = PyObject_GetAttr(stream, name_last_id);
    if (last == NULL) return -1;
    int rc = -1;
    if (PyTuple_Check(last) && PyTuple_GET_SIZE(last) == 2) {
        *ms_out = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(last, 0));
        *seq_out = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(last, 1));
        rc = PyErr_Occurred() ? -1 : 0;
    } else {
        PyErr_SetString(PyExc_TypeError, "xadd_lone: a stream's last_id is not a pair");
    }
    Py_DECREF(last);
    return rc;
}

static int list_attribute_append(PyObject *owner, PyObject *name, PyObject *item) {
    PyObject *list = PyObject_GetAttr(owner, name);
    if (list == NULL) return -1;
    int rc = PyList_Check(list) ? PyList_Append(list, item) : -1;
    if (rc < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "xadd_lone: a stream's ids or addresses is not a list");
    Py_DECREF(list);
    return rc;
}

/* xadd_lone(data, bulk_size_max_bytes, arguments_count_max, streams, pending, entry_size_max)
 *   -> (key, reply) or None
 * `data` must be exactly one whole frame `XADD key * field value [field value ...]` (at most
 * FIELD_PAIRS_MAX pairs, the command's name in any case); `streams` maps names to Stream objects, `pending` is StreamStore._pending. On
 * success the record is in `pending` and applied to the stream as add_now applies it; the
 * caller does the rest of add_now (writes_count, _pending_streams, on_write). */
PyObject *xadd_lone(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "xadd_lone takes 6 arguments");
        return NULL;
    }
    unsigned long bulk_size_max_bytes = PyLong_AsUnsignedLong(args[1]);
    unsigned long arguments_count_max = PyLong_AsUnsignedLong(args[2]);
    Py_ssize_t entry_size_max = PyLong_AsSsize_t(args[5]);
    if (PyErr_Occurred()) return NULL;
    PyObject *streams = args[3], *pending = args[4];
    if (!PyBytes_Check(args[0]) || !PyDict_Check(streams) || !PyList_Check(pending)) {
        PyErr_SetString(PyExc_TypeError, "xadd_lone: bytes, int, int, dict, list, int expected");
        return NULL;
    }
    if (bulk_size_max_bytes > UINT32_MAX || arguments_count_max > UINT32_MAX)
        Py_RETURN_NONE;
    const char *data = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (size < 4 || data[0] != '*' || (uint64_t)size > UINT32_MAX)
        Py_RETURN_NONE;
    uint32_t count;
    uint32_t bounds[2 * ARGUMENTS_MAX];
    rs_split_result split;
    rs_split(data, (size_t)size, (uint32_t)bulk_size_max_bytes, (uint32_t)arguments_count_max,
             1, ARGUMENTS_MAX, &count, bounds, &split);
    /* rs_split stops before a command with more than ARGUMENTS_MAX arguments: not taken. */
    if (split.commands_count != 1 || split.consumed_bytes != (uint64_t)size || count < 5 ||
        count % 2 == 0)
        Py_RETURN_NONE;
    const char *name = data + bounds[0];
    if (bounds[1] - bounds[0] != 4 || (name[0] | 0x20) != 'x' || (name[1] | 0x20) != 'a' ||
        (name[2] | 0x20) != 'd' || (name[3] | 0x20) != 'd')
        Py_RETURN_NONE;
    if (bounds[5] - bounds[4] != 1 || data[bounds[4]] != '*')
        Py_RETURN_NONE;

    PyObject *key = PyBytes_FromStringAndSize(data + bounds[2], bounds[3] - bounds[2]);
    if (key == NULL) return NULL;
    PyObject *result = NULL, *payload = NULL, *id = NULL, *address = NULL;
    PyObject *stream = PyDict_GetItemWithError(streams, key);  /* borrowed */
    if (stream == NULL) {
        if (PyErr_Occurred()) goto done;
        result = Py_NewRef(Py_None);  /* a new stream: StreamStore.create's record first */
        goto done;
    }
    Py_INCREF(stream);  /* kept while Python code (attribute access) may run */

    /* The id, as add_now: now in ms, or the last id's ms with the next seq when the clock has
     * not passed it (or went back). */
    uint64_t last_ms, last_seq;
    if (read_last_id(stream, &last_ms, &last_seq) < 0) goto release;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000, seq = 0;
    if (ms <= last_ms) {
        if (last_seq == UINT64_MAX) {  /* no next id in this ms: the Python path decides */
            result = Py_NewRef(Py_None);
            goto release;
        }
        ms = last_ms;
        seq = last_seq + 1;
    }

    /* The record [b"xadd", key, ms, seq, [field, value, ...]], packed as add_now packs it. */
    uint32_t key_size = bounds[3] - bounds[2], fields_count = count - 3;
    uint64_t strings_size = key_size;
    for (uint32_t i = 3; i < count; i++) strings_size += bounds[2 * i + 1] - bounds[2 * i];
    uint64_t payload_size_max = strings_size + RECORD_OVERHEAD_MAX_BYTES;
    if (strings_size > (uint64_t)entry_size_max) {
        result = Py_NewRef(Py_None);  /* too big for an entry: the Python path answers */
        goto release;
    }
    payload = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)payload_size_max);
    if (payload == NULL) goto release;
    char *start = PyBytes_AS_STRING(payload), *out = start;
    *out++ = (char)0x95;
    out = pack_bin(out, "xadd", 4);
    out = pack_bin(out, data + bounds[2], key_size);
    out = pack_unsigned(out, ms);
    out = pack_unsigned(out, seq);
    if (fields_count < 16) {
        *out++ = (char)(0x90 | fields_count);
    } else {
        *out++ = (char)0xdc;
        *out++ = (char)(fields_count >> 8);
        *out++ = (char)fields_count;
    }
    for (uint32_t i = 3; i < count; i++)
        out = pack_bin(out, data + bounds[2 * i], bounds[2 * i + 1] - bounds[2 * i]);
    Py_ssize_t payload_size = out - start;
    if (payload_size > entry_size_max) {
        result = Py_NewRef(Py_None);
        goto release;
    }
    if (_PyBytes_Resize(&payload, payload_size) < 0) goto release;

    /* Applied as add_now applies it: record, placeholder address, id, last id, count. Every
     * step that can fail short of memory comes before the first change. */
    id = Py_BuildValue("(KK)", (unsigned long long)ms, (unsigned long long)seq);
    address = PyLong_FromUnsignedLongLong(PENDING_ADDRESS_BASE + (uint64_t)PyList_GET_SIZE(pending));
    PyObject *entries_added = PyObject_GetAttr(stream, name_entries_added);
    if (id == NULL || address == NULL || entries_added == NULL) {
        Py_XDECREF(entries_added);
        goto release;
    }
    PyObject *one = PyLong_FromLong(1);
    PyObject *entries_added_next = one ? PyNumber_Add(entries_added, one) : NULL;
    Py_XDECREF(one);
    Py_DECREF(entries_added);
    if (entries_added_next == NULL) goto release;
    char reply[64];
    int reply_size = snprintf(reply, sizeof reply, "$%d\r\n%llu-%llu\r\n",
                              snprintf(NULL, 0, "%llu-%llu", (unsigned long long)ms,
                                       (unsigned long long)seq),
                              (unsigned long long)ms, (unsigned long long)seq);
    PyObject *reply_bytes = PyBytes_FromStringAndSize(reply, reply_size);
    if (reply_bytes == NULL || PyList_Append(pending, payload) < 0) {
        Py_XDECREF(reply_bytes);
        Py_DECREF(entries_added_next);
        goto release;
    }
    /* From here on only running out of memory can fail, and it would leave the record
     * pending but the index short of it: the log, the truth, still gets the record, and the
     * next open's replay indexes it. (Never the other way round: a placeholder address
     * without its pending record would break flush's fix-up.) */
    if (list_attribute_append(stream, name_addresses, address) < 0 ||
        list_attribute_append(stream, name_ids, id) < 0 ||
        PyObject_SetAttr(stream, name_last_id, id) < 0 ||
        PyObject_SetAttr(stream, name_entries_added, entries_added_next) < 0) {
        Py_DECREF(reply_bytes);
        Py_DECREF(entries_added_next);
        goto release;
    }
    Py_DECREF(entries_added_next);
    result = PyTuple_Pack(2, key, reply_bytes);
    Py_DECREF(reply_bytes);
release:
    Py_DECREF(stream);
done:
    Py_XDECREF(payload);
    Py_XDECREF(id);
    Py_XDECREF(address);
    Py_DECREF(key);
    return result;
}
