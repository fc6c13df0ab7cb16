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

static int get_file_size(PyObject *obj, uint64_t *out)
{
    unsigned long long value = PyLong_AsUnsignedLongLong(obj);
    if (value == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = value;
    return 0;
}

PyObject *stpy_header_length_from_bytes(PyObject *module, PyObject *args)
{
    stpy_state *state = stpy_state_from_module(module);
    PyObject *size_obj, *result = NULL;
    Py_buffer prefix;
    uint64_t file_size, header_len;
    st_error err;

    if (!PyArg_ParseTuple(args, "y*O:_header_length", &prefix, &size_obj))
        return NULL;
    if (get_file_size(size_obj, &file_size) < 0)
        goto exit;
    if (st_header_length(prefix.buf, prefix.len < 8 ? (size_t)prefix.len : 8, file_size,
                         &header_len, &err) != ST_OK) {
        stpy_raise(state, &err, STPY_CTX_DESERIALIZE_HEADER, NULL);
        goto exit;
    }
    result = PyLong_FromUnsignedLongLong(header_len);
exit:
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
    PyObject *size_obj, *tensors = NULL, *metadata = NULL, *result = NULL;
    st_header *header = NULL;
    Py_buffer json;
    uint64_t file_size;
    st_error err;
    st_code code;

    if (!PyArg_ParseTuple(args, "y*O:_parse_header", &json, &size_obj))
        return NULL;
    if (get_file_size(size_obj, &file_size) < 0)
        goto exit;
    Py_BEGIN_ALLOW_THREADS
        code = st_header_parse(json.buf, (size_t)json.len, file_size, &header, &err);
    Py_END_ALLOW_THREADS
    if (code != ST_OK) {
        stpy_raise(state, &err, STPY_CTX_DESERIALIZE_HEADER, NULL);
        goto exit;
    }
    tensors = stpy_tensor_rows(header, 0);
    if (tensors == NULL)
        goto exit;
    metadata = stpy_metadata_dict(header);
    if (metadata != NULL)
        result = PyTuple_Pack(2, tensors, metadata);
exit:
    st_header_free(header);
    Py_XDECREF(tensors);
    Py_XDECREF(metadata);
    PyBuffer_Release(&json);
    return result;
}
