/*
 * arguments.c - safe_open's framework, device and backend arguments, parsed
 * and checked with upstream's messages, and the writers' alignment.
 */
#include "module.h"

#include <string.h>

int stpy_parse_framework(stpy_state *state, PyObject *obj, stpy_framework *out)
{
    static const struct {
        const char *name;
        stpy_framework fw;
    } table[] = {
        {"pt", FW_PYTORCH},  {"torch", FW_PYTORCH}, {"pytorch", FW_PYTORCH},       {"np", FW_NUMPY},
        {"numpy", FW_NUMPY}, {"tf", FW_TENSORFLOW}, {"tensorflow", FW_TENSORFLOW}, {"jax", FW_FLAX},
        {"flax", FW_FLAX},   {"mlx", FW_MLX},       {"paddle", FW_PADDLE},
    };
    const char *name;
    Py_ssize_t len;
    if (stpy_check_arg(obj, &PyUnicode_Type, "framework") < 0 ||
        (name = PyUnicode_AsUTF8AndSize(obj, &len)) == NULL)
        return -1;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (strlen(table[i].name) == (size_t)len && strcmp(name, table[i].name) == 0) {
            *out = table[i].fw;
            return 0;
        }
    }
    PyErr_Format(state->SafetensorError, "framework %U is invalid", obj);
    return -1;
}

PyObject *stpy_parse_device(stpy_state *state, PyObject *obj)
{
    static const char *const kinds[] = {"cuda", "mps", "npu", "xpu", "xla", "mlu", "hpu", "musa"};
    PyObject *text = NULL, *result = NULL;
    const char *s, *colon;
    size_t kind_len;
    Py_ssize_t len;

    if (obj == NULL || obj == Py_None)
        return Py_NewRef(Py_None);
    if (PyLong_Check(obj) && !PyBool_Check(obj)) {
        long long index = PyLong_AsLongLong(obj);
        if (index == -1 && PyErr_Occurred())
            return NULL;
        if (index < 0)
            goto invalid_repr;
        return Py_NewRef(obj);
    }
    if (PyUnicode_Check(obj)) {
        text = Py_NewRef(obj);
    } else {
        /* torch.device: accepted by its string form (upstream rejects it). */
        PyTypeObject *type = Py_TYPE(obj);
        if (strcmp(type->tp_name, "torch.device") != 0)
            goto invalid_repr;
        text = PyObject_Str(obj);
        if (text == NULL)
            return NULL;
    }
    s = PyUnicode_AsUTF8AndSize(text, &len);
    if (s == NULL)
        goto exit;
    if (strlen(s) != (size_t)len) /* an embedded NUL: nothing valid contains one */
        goto invalid_str;
    if (strcmp(s, "cpu") == 0) {
        result = Py_NewRef(Py_None);
        goto exit;
    }
    colon = strchr(s, ':');
    kind_len = colon ? (size_t)(colon - s) : strlen(s);
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        unsigned long long index = 0;
        if (strlen(kinds[i]) != kind_len || strncmp(s, kinds[i], kind_len) != 0)
            continue;
        if (colon != NULL) {
            const char *digits = colon + 1;
            if (strchr(digits, ':') != NULL)
                break;
            if (*digits == '\0') {
                PyErr_SetString(PyExc_ValueError, "cannot parse integer from empty string");
                goto exit;
            }
            for (const char *p = digits; *p; p++) {
                if (*p < '0' || *p > '9') {
                    PyErr_SetString(PyExc_ValueError, "invalid digit found in string");
                    goto exit;
                }
                index = index * 10 + (unsigned long long)(*p - '0');
                if (index > 1000000) {
                    PyErr_SetString(PyExc_ValueError, "number too large to fit in target type");
                    goto exit;
                }
            }
        }
        if (strcmp(kinds[i], "mps") == 0 && index != 0) {
            PyErr_Format(state->SafetensorError,
                         "device %s is invalid: only mps or mps:0 is supported", s);
            goto exit;
        }
        /* Upstream shows a bare "mps" as is, other bare kinds as "<kind>:0". */
        if (strcmp(kinds[i], "mps") == 0)
            result = PyUnicode_FromString("mps");
        else
            result = PyUnicode_FromFormat("%s:%llu", kinds[i], index);
        goto exit;
    }
invalid_str:
    PyErr_Format(state->SafetensorError, "device %U is invalid", text);
    goto exit;
invalid_repr:
    PyErr_Format(state->SafetensorError, "device %R is invalid", obj);
exit:
    Py_XDECREF(text);
    return result;
}

int stpy_parse_backend(stpy_state *state, PyObject *obj, st_backend *out)
{
    const char *name;
    Py_ssize_t len;
    PyObject *quoted;
    if (obj == NULL || obj == Py_None) {
        *out = ST_BACKEND_AUTO;
        return 0;
    }
    if (stpy_check_arg(obj, &PyUnicode_Type, "backend") < 0 ||
        (name = PyUnicode_AsUTF8AndSize(obj, &len)) == NULL)
        return -1;
    if (strlen(name) != (size_t)len)
        name = ""; /* an embedded NUL: invalid */
    if (strcmp(name, "mmap") == 0) {
        *out = ST_BACKEND_MMAP;
        return 0;
    }
    if (strcmp(name, "pread") == 0) {
        *out = ST_BACKEND_PREAD;
        return 0;
    }
    quoted = stpy_debug_quote(obj);
    if (quoted == NULL)
        return -1;
    PyErr_Format(state->SafetensorError,
                 "backend %U is invalid (expected one of: \"mmap\", \"pread\")", quoted);
    Py_DECREF(quoted);
    return -1;
}

int stpy_parse_alignment(PyObject *obj, uint64_t *out)
{
    st_error err;
    int overflow = 0;
    long long value = 0;
    PyObject *number;
    *out = 0;
    if (obj == NULL || obj == Py_None)
        return 0;
    if (!PyIndex_Check(obj) || PyBool_Check(obj)) { /* an int, a NumPy integer */
        PyErr_Format(PyExc_TypeError, "alignment must be an int or None, not '%.100s'",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    if ((number = PyNumber_Index(obj)) == NULL)
        return -1;
    value = PyLong_AsLongLongAndOverflow(number, &overflow);
    Py_DECREF(number);
    if (value == -1 && PyErr_Occurred())
        return -1;
    /* 0 is the core's "upstream's layout", which None spells here */
    if (overflow || value <= 0 || st_check_alignment((uint64_t)value, &err) != ST_OK) {
        PyErr_Format(PyExc_ValueError,
                     "alignment must be None (upstream's layout) or a power of two from 8 to %u, "
                     "not %R",
                     ST_MAX_ALIGNMENT, obj);
        return -1;
    }
    *out = (uint64_t)value;
    return 0;
}
