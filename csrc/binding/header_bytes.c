/*
 * header_bytes.c - the core's header rules on bytes that came from elsewhere
 * (a remote object read in ranges by safetensors/remote.py), and the core's
 * writer layout without the data (for uploads written part by part).
 *
 *   _header_length(prefix, file_size) -> N
 *       rules 1-3 on the first min(file_size, 8) bytes.
 *   _parse_header(header, file_size) -> (tensors, metadata)
 *       rules 4-8 on the N header bytes; tensors is a list, in data-offset
 *       order, of (name, dtype, shape, begin, end) with offsets relative to
 *       the data section; metadata is a dict or None.
 *   _write_layout(entries, metadata) -> (header, order)
 *       entries is a list of (name, dtype code, shape, data length), checked
 *       by the core as serialize checks them; header is the bytes
 *       that start the file (length prefix + padded JSON) and order the entry
 *       indices in file order.
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

int stpy_parse_declaration(stpy_state *state, PyObject *item, bool with_len, st_write_tensor *w,
                           uint64_t *dims)
{
    PyObject *name, *dtype, *shape;
    Py_ssize_t len, ndim, data_len = 0;
    const char *code;
    if (!PyTuple_Check(item)) {
        PyErr_Format(PyExc_TypeError, "each tensor is a tuple (name, dtype, shape%s), not %R",
                     with_len ? ", data length" : "", item);
        return -1;
    }
    if (!PyArg_ParseTuple(item,
                          with_len ? "UUOn;each tensor is (name, dtype, shape, data length)"
                                   : "UUO;each tensor is (name, dtype, shape)",
                          &name, &dtype, &shape, &data_len) ||
        (w->name = PyUnicode_AsUTF8AndSize(name, &len)) == NULL)
        return -1;
    w->name_len = (size_t)len;
    if ((code = PyUnicode_AsUTF8AndSize(dtype, &len)) == NULL)
        return -1;
    if (!st_dtype_from_name(code, (size_t)len, &w->dtype)) {
        PyErr_Format(state->SafetensorError,
                     "Unknown dtype %R for tensor %R (a header name such as 'F32')", dtype, name);
        return -1;
    }
    if ((ndim = stpy_parse_dims(shape, dims)) < 0)
        return -1;
    w->ndim = (size_t)ndim;
    w->shape = dims;
    w->data_len = (uint64_t)data_len;
    return 0;
}

PyObject *stpy_write_layout_only(PyObject *module, PyObject *args)
{
    stpy_state *state = stpy_state_from_module(module);
    PyObject *entries, *metadata, *items = NULL, *order_list = NULL, *result = NULL;
    st_write_tensor *tensors = NULL;
    stpy_metadata_list meta = {0};
    st_layout layout = {0};
    uint64_t(*shapes)[ST_MAX_DIMS] = NULL;
    size_t *order = NULL, count;
    st_error err;

    if (!PyArg_ParseTuple(args, "OO:_write_layout", &entries, &metadata))
        return NULL;
    items = PySequence_Fast(entries, "entries must be a list");
    if (items == NULL)
        return NULL;
    count = (size_t)PySequence_Fast_GET_SIZE(items);
    tensors = PyMem_Calloc(count + 1, sizeof(*tensors));
    shapes = PyMem_Calloc(count + 1, sizeof(*shapes));
    order = PyMem_Calloc(count + 1, sizeof(*order));
    if (tensors == NULL || shapes == NULL || order == NULL) {
        PyErr_NoMemory();
        goto exit;
    }
    for (size_t i = 0; i < count; i++)
        if (stpy_parse_declaration(state, PySequence_Fast_GET_ITEM(items, (Py_ssize_t)i), true,
                                   &tensors[i], shapes[i]) < 0)
            goto exit;
    if (stpy_collect_metadata(metadata, &meta) < 0)
        goto exit;
    layout = (st_layout){.tensors = tensors,
                         .count = count,
                         .metadata = meta.entries,
                         .metadata_count = meta.count,
                         .has_metadata = meta.present,
                         .order = order};
    if (st_write_layout(&layout, &err) != ST_OK) {
        stpy_raise(state, &err, STPY_CTX_SERIALIZE, NULL);
        goto exit;
    }
    order_list = PyList_New((Py_ssize_t)count);
    for (size_t i = 0; order_list != NULL && i < count; i++) {
        PyObject *index = PyLong_FromSize_t(order[i]);
        if (index == NULL)
            Py_CLEAR(order_list);
        else
            PyList_SET_ITEM(order_list, (Py_ssize_t)i, index);
    }
    if (order_list != NULL)
        result = Py_BuildValue("(y#O)", (const char *)layout.header, (Py_ssize_t)layout.header_size,
                               order_list);
exit:
    st_free(layout.header);
    PyMem_Free(tensors);
    PyMem_Free(shapes);
    PyMem_Free(order);
    stpy_metadata_list_release(&meta);
    Py_XDECREF(order_list);
    Py_XDECREF(items);
    return result;
}
