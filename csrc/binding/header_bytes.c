/*
 * header_bytes.c - headers as Python objects (tensor rows, metadata), and
 * the core's header rules on bytes that came from elsewhere (a remote
 * object read in ranges by safetensors/distributed.py):
 *
 *   _header_length(prefix, file_size) -> N
 *       rules 1-3 on the first min(file_size, 8) bytes.
 *   _parse_header(header, file_size) -> (tensors, metadata)
 *       rules 4-8 on the N header bytes; tensors is a list, in data-offset
 *       order, of (name, dtype, shape, begin, end) with offsets relative to
 *       the data section; metadata is a dict or None.
 *
 * Errors are raised through stpy_raise with the contexts (message prefixes)
 * of the local path, so a hostile server gets exactly the exceptions a
 * hostile file gets.
 */
#include "module.h"

#include <string.h>

/* A PyArg "O&" converter: a file size, a non-negative int. */
static int file_size(PyObject *obj, void *out)
{
    *(uint64_t *)out = PyLong_AsUnsignedLongLong(obj);
    return !PyErr_Occurred();
}

PyObject *stpy_header_length_from_bytes(PyObject *module, PyObject *args)
{
    stpy_state *state = stpy_state_from_module(module);
    PyObject *result = NULL;
    Py_buffer prefix;
    uint64_t size, header_len;
    st_error err;

    if (!PyArg_ParseTuple(args, "y*O&:_header_length", &prefix, file_size, &size))
        return NULL;
    if (st_header_length(prefix.buf, prefix.len < 8 ? (size_t)prefix.len : 8, size, &header_len,
                         &err) != ST_OK)
        stpy_raise(state, &err, STPY_CTX_DESERIALIZE_HEADER, NULL);
    else
        result = PyLong_FromUnsignedLongLong(header_len);
    PyBuffer_Release(&prefix);
    return result;
}

PyObject *stpy_int_list(const uint64_t *values, size_t count)
{
    PyObject *list = PyList_New((Py_ssize_t)count);
    for (size_t i = 0; list != NULL && i < count; i++) {
        PyObject *value = PyLong_FromUnsignedLongLong(values[i]);
        if (value == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, (Py_ssize_t)i, value);
    }
    return list;
}

PyObject *stpy_tensor_rows(const st_header *header, uint64_t base)
{
    PyObject *rows = PyList_New((Py_ssize_t)st_header_count(header));
    for (size_t i = 0; rows != NULL && i < st_header_count(header); i++) {
        const st_tensor *t = st_header_tensor(header, i);
        PyObject *row =
            Py_BuildValue("(NsNKK)", stpy_tensor_name(t), st_dtype_name(t->dtype),
                          stpy_int_list(t->shape, t->ndim), (unsigned long long)(base + t->begin),
                          (unsigned long long)(base + t->end));
        if (row == NULL)
            Py_CLEAR(rows);
        else
            PyList_SET_ITEM(rows, (Py_ssize_t)i, row);
    }
    return rows;
}

PyObject *stpy_metadata_dict(const st_header *header)
{
    PyObject *result;
    if (!st_header_has_metadata(header))
        return Py_NewRef(Py_None);
    result = PyDict_New();
    for (size_t i = 0; result != NULL && i < st_header_metadata_count(header); i++) {
        const st_metadata_item *item = st_header_metadata_item(header, i);
        PyObject *key = PyUnicode_DecodeUTF8(item->key, (Py_ssize_t)item->key_len, "surrogatepass");
        PyObject *value =
            key ? PyUnicode_DecodeUTF8(item->value, (Py_ssize_t)item->value_len, "surrogatepass")
                : NULL;
        if (value == NULL || PyDict_SetItem(result, key, value) < 0)
            Py_CLEAR(result);
        Py_XDECREF(key);
        Py_XDECREF(value);
    }
    return result;
}

PyObject *stpy_parse_header_from_bytes(PyObject *module, PyObject *args)
{
    stpy_state *state = stpy_state_from_module(module);
    PyObject *result = NULL;
    st_header *header = NULL;
    Py_buffer json;
    uint64_t size;
    st_error err;
    st_code code;

    if (!PyArg_ParseTuple(args, "y*O&:_parse_header", &json, file_size, &size))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
        code = st_header_parse(json.buf, (size_t)json.len, size, &header, &err);
    Py_END_ALLOW_THREADS
    if (code != ST_OK)
        stpy_raise(state, &err, STPY_CTX_DESERIALIZE_HEADER, NULL);
    else
        result = Py_BuildValue("(NN)", stpy_tensor_rows(header, 0), stpy_metadata_dict(header));
    st_header_free(header);
    PyBuffer_Release(&json);
    return result;
}
