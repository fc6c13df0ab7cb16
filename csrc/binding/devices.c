/*
 * devices.c - tensors on devices other than the CPU: the CUDA staging path
 * and moving a loaded tensor with .to(device); stpy_tensor_load, the one
 * entry point that loads a whole tensor for a handle's framework and device.
 */
#include "tensors.h"

#include <string.h>

/*
 * CUDA: the bytes are copied (threads, GIL released) into a pinned staging
 * tensor from torch's caching host allocator, and sent with a non-blocking
 * copy, so reading the next tensor overlaps this one's transfer. The staging
 * block goes back to torch's cache, which keeps it until the copy is done.
 * Callers synchronize once (stpy_cuda_synchronize) before handing tensors out.
 */
static PyObject *tensor_to_cuda(stpy_state *state, st_file *file, const st_tensor *t,
                                PyObject *device, PyObject *verifier)
{
    PyObject *tdtype = stpy_torch_dtype(state, t->dtype), *nbytes = NULL, *kwnames = NULL,
             *staging = NULL, *typed = NULL, *shape = NULL, *shaped = NULL, *result = NULL;
    size_t len = (size_t)stpy_tensor_data_len(t);
    uint8_t *data;
    if (tdtype == NULL)
        return NULL;
    nbytes = PyLong_FromSize_t(len);
    kwnames = Py_BuildValue("(ss)", "dtype", "pin_memory");
    if (nbytes == NULL || kwnames == NULL)
        goto exit;
    {
        PyObject *args[3] = {nbytes, state->torch_dtypes[ST_U8], Py_True};
        staging = PyObject_Vectorcall(state->torch_empty, args, 1, kwnames);
    }
    if (staging == NULL || stpy_torch_data_ptr(state, staging, &data) < 0)
        goto exit;
    if (stpy_read_into(state, file, st_header_data_start(st_file_header(file)) + t->begin, data,
                       len, t, verifier) < 0)
        goto exit;
    typed = PyObject_CallMethodOneArg(staging, state->str_view, tdtype);
    shape = stpy_torch_shape(state, t);
    shaped = typed && shape ? PyObject_CallMethodOneArg(typed, state->str_view, shape) : NULL;
    if (shaped == NULL)
        goto exit;
    Py_SETREF(kwnames, Py_BuildValue("(s)", "non_blocking"));
    if (kwnames != NULL) {
        PyObject *args[3] = {shaped, device, Py_True};
        result = PyObject_VectorcallMethod(state->str_to, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                           kwnames);
    }
exit:
    Py_XDECREF(nbytes);
    Py_XDECREF(kwnames);
    Py_XDECREF(staging);
    Py_XDECREF(typed);
    Py_XDECREF(shape);
    Py_XDECREF(shaped);
    return result;
}

int stpy_cuda_synchronize(stpy_state *state, PyObject *device)
{
    PyObject *cuda = PyObject_GetAttrString(state->torch, "cuda"), *done;
    if (cuda == NULL)
        return -1;
    done = PyObject_CallMethod(cuda, "synchronize", "O", device);
    Py_DECREF(cuda);
    Py_XDECREF(done);
    return done ? 0 : -1;
}

PyObject *stpy_tensor_to_device(stpy_state *state, PyObject *tensor, PyObject *device)
{
    PyObject *moved = PyObject_CallMethodOneArg(tensor, state->str_to, device);
    Py_DECREF(tensor);
    return moved;
}

bool stpy_is_cuda(stpy_framework fw, PyObject *device)
{
    const char *name;
    if (fw != FW_PYTORCH || device == NULL || !PyUnicode_Check(device))
        return false;
    name = PyUnicode_AsUTF8(device); /* cached in the str: no error after parse_device */
    return name != NULL && strncmp(name, "cuda:", 5) == 0;
}

PyObject *stpy_tensor_load(stpy_state *state, stpy_framework fw, st_file *file, const st_tensor *t,
                           PyObject *device, PyObject *verifier)
{
    PyObject *tensor;
    if (stpy_is_cuda(fw, device))
        return tensor_to_cuda(state, file, t, device, verifier);
    tensor = st_file_backend(file) == ST_BACKEND_MMAP
                 ? stpy_tensor_view(state, fw, file, t, verifier)
                 : stpy_tensor_read(state, fw, file, t, verifier);
    if (tensor != NULL && device != NULL)
        return stpy_tensor_to_device(state, tensor, device);
    return tensor;
}
