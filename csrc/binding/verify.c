/*
 * verify.c - safe_open(..., verify=True): every tensor handed out matches the digest its file
 * records (docs/integrity.md).
 *
 * The rules (which digests, which hasher, what a mismatch says) are safetensors._verify's
 * Verifier, one per handle, registered with _set_verifier; this file only feeds it bytes:
 * - reads (pread, a byte source, a copy from the mapping) go through st_file_read_consumed:
 *   each request is read by one thread, chunk by chunk, and each chunk is hashed right after it
 *   is read, while other threads read and hash other requests. The consumer takes the GIL for
 *   hasher.update(memoryview), which releases it again while it hashes; an exception it raises
 *   stops the read (every thread has stopped when st_file_read_consumed returns) and is the one
 *   raised;
 * - zero-copy views of a mapping are hashed over the mapping (stpy_verify_memory): the pages are
 *   read by the hash itself;
 * - a slice's tensor is read and hashed whole once per handle (stpy_verify_once).
 * Destinations are owned by the caller and outlive the call, as for every read.
 */
#include "tensors.h"

#include <pthread.h>
#include <string.h>

/* ---- MARK: at open ---- */

PyObject *stpy_verifier_new(stpy_state *state, st_file *file, PyObject *metadata, PyObject *where)
{
    const st_header *header = st_file_header(file);
    PyObject *names = PyList_New((Py_ssize_t)st_header_count(header)), *verifier = NULL;
    if (state->verifier_factory == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "safe_open: safetensors' verifier is not registered");
        goto exit;
    }
    for (size_t i = 0; names != NULL && i < st_header_count(header); i++) {
        PyObject *name = stpy_tensor_name(st_header_tensor(header, i));
        if (name == NULL)
            goto exit;
        PyList_SET_ITEM(names, (Py_ssize_t)i, name);
    }
    if (names != NULL)
        verifier =
            PyObject_CallFunctionObjArgs(state->verifier_factory, metadata, names, where, NULL);
exit:
    Py_XDECREF(names);
    return verifier;
}

/* ---- MARK: hashing ---- */

/* hasher.update(memoryview of data[0..len)); -1 with an exception set. */
static int update(PyObject *hasher, const uint8_t *data, size_t len)
{
    PyObject *view = PyMemoryView_FromMemory((char *)data, (Py_ssize_t)len, PyBUF_READ), *done;
    if (view == NULL)
        return -1;
    done = PyObject_CallMethod(hasher, "update", "O", view);
    Py_DECREF(view);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* verifier.check([(name, hasher) for each of n tensors]); -1 with the mismatch raised. */
static int check(PyObject *verifier, const stpy_span *spans, PyObject *const *hashers, size_t n)
{
    PyObject *pairs = PyList_New((Py_ssize_t)n), *done = NULL;
    for (size_t k = 0; pairs != NULL && k < n; k++) {
        PyObject *name = stpy_tensor_name(spans[k].tensor);
        PyObject *pair = name != NULL ? PyTuple_Pack(2, name, hashers[k]) : NULL;
        Py_XDECREF(name);
        if (pair == NULL)
            Py_CLEAR(pairs);
        else
            PyList_SET_ITEM(pairs, (Py_ssize_t)k, pair);
    }
    if (pairs != NULL)
        done = PyObject_CallMethod(verifier, "check", "O", pairs);
    Py_XDECREF(pairs);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

int stpy_verify_memory(PyObject *verifier, const st_tensor *t, const uint8_t *data)
{
    stpy_span span = {.tensor = t};
    PyObject *hasher = PyObject_CallMethod(verifier, "hasher", NULL);
    int rc = -1;
    if (hasher != NULL && update(hasher, data, (size_t)stpy_tensor_data_len(t)) == 0)
        rc = check(verifier, &span, &hasher, 1);
    Py_XDECREF(hasher);
    return rc;
}

int stpy_verify_memory_many(PyObject *verifier, const st_tensor *const *tensors,
                            uint8_t *const *data, size_t n)
{
    PyObject *names = PyList_New((Py_ssize_t)n), *views = PyList_New((Py_ssize_t)n), *done = NULL;
    size_t made = 0;
    for (; names != NULL && views != NULL && made < n; made++) {
        PyObject *name = stpy_tensor_name(tensors[made]);
        PyObject *view = PyMemoryView_FromMemory(
            (char *)data[made], (Py_ssize_t)stpy_tensor_data_len(tensors[made]), PyBUF_READ);
        if (name == NULL || view == NULL) {
            Py_XDECREF(name);
            Py_XDECREF(view);
            break;
        }
        PyList_SET_ITEM(names, (Py_ssize_t)made, name);
        PyList_SET_ITEM(views, (Py_ssize_t)made, view);
    }
    if (made == n)
        done = PyObject_CallMethod(verifier, "check_buffers", "OO", names, views);
    Py_XDECREF(names);
    Py_XDECREF(views);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* ---- MARK: hashing as the bytes are read ---- */

typedef struct {
    const stpy_span *spans; /* in request order, and by position inside a request */
    size_t nspans;
    PyObject **hashers;   /* one per span */
    size_t *cursor;       /* per request (its reading thread's): its first span not all hashed */
    pthread_mutex_t lock; /* guards error (the GIL does not, in a free-threaded build) */
    PyObject *error[3];   /* the first exception a hasher raised (type, value, traceback) */
} consumer_state;

/* Whether a hasher failed already; if `exc` (fetched), it becomes the error unless one is. */
static bool failed_with(consumer_state *c, PyObject *exc[3])
{
    bool failed;
    pthread_mutex_lock(&c->lock);
    failed = c->error[0] != NULL;
    if (exc != NULL && !failed)
        memcpy(c->error, exc, sizeof c->error);
    pthread_mutex_unlock(&c->lock);
    if (exc != NULL && failed) {
        Py_XDECREF(exc[0]);
        Py_XDECREF(exc[1]);
        Py_XDECREF(exc[2]);
    }
    return failed;
}

/* Hashes the part of each span inside requests[request]'s bytes [at, at + len). */
static st_code consume(void *ctx, size_t request, size_t at, const uint8_t *chunk, size_t len,
                       st_error *err)
{
    consumer_state *c = ctx;
    const size_t end = at + len;
    st_code code = ST_OK;
    PyGILState_STATE gil = PyGILState_Ensure();
    if (failed_with(c, NULL)) /* a hasher failed: the chunks still in flight are not hashed */
        code = st_error_set(err, ST_ERR_EXTERNAL, 0, "%s", "a hasher raised");
    for (size_t k = c->cursor[request];
         code == ST_OK && k < c->nspans && c->spans[k].request == request; k++) {
        const stpy_span *s = &c->spans[k];
        size_t s_end = s->at + (size_t)stpy_tensor_data_len(s->tensor);
        size_t lo = s->at > at ? s->at : at, hi = s_end < end ? s_end : end;
        if (s->at >= end)
            break;
        if (hi > lo && update(c->hashers[k], chunk + (lo - at), hi - lo) < 0) {
            PyObject *exc[3];
            PyErr_Fetch(&exc[0], &exc[1], &exc[2]);
            (void)failed_with(c, exc);
            code = st_error_set(err, ST_ERR_EXTERNAL, 0, "%s", "a hasher raised");
            break;
        }
        if (s_end <= end)
            c->cursor[request] = k + 1;
    }
    PyGILState_Release(gil);
    return code;
}

int stpy_read_verified(stpy_state *state, st_file *file, bool pread,
                       const st_read_request *requests, size_t nrequests, PyObject *verifier,
                       const stpy_span *spans, size_t nspans)
{
    consumer_state c = {.spans = spans, .nspans = nspans, .lock = PTHREAD_MUTEX_INITIALIZER};
    st_read_consumer consumer = {.consume = consume, .ctx = &c};
    st_error err;
    st_code code;
    int rc = -1;
    c.hashers = PyMem_Calloc(nspans ? nspans : 1, sizeof *c.hashers);
    c.cursor = PyMem_Calloc(nrequests ? nrequests : 1, sizeof *c.cursor);
    if (c.hashers == NULL || c.cursor == NULL) {
        PyErr_NoMemory();
        goto exit;
    }
    for (size_t r = 0; r < nrequests; r++)
        c.cursor[r] = nspans;
    for (size_t k = nspans; k-- > 0;) {
        if (spans[k].request < nrequests)
            c.cursor[spans[k].request] = k;
        if ((c.hashers[k] = PyObject_CallMethod(verifier, "hasher", NULL)) == NULL)
            goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
        code = st_file_read_consumed(file, requests, nrequests, pread, &consumer, &err);
    Py_END_ALLOW_THREADS
    if (c.error[0] != NULL) {
        PyErr_Restore(c.error[0], c.error[1], c.error[2]);
        c.error[0] = c.error[1] = c.error[2] = NULL;
    } else if (code != ST_OK) {
        stpy_raise(state, &err, STPY_CTX_READ_TENSOR, NULL);
    } else {
        rc = check(verifier, spans, c.hashers, nspans);
    }
exit:
    for (size_t k = 0; c.hashers != NULL && k < nspans; k++)
        Py_XDECREF(c.hashers[k]);
    PyMem_Free(c.hashers);
    PyMem_Free(c.cursor);
    return rc;
}

/* ---- MARK: once per handle (slices) ---- */

/* Bytes read and hashed per step: a slice's check holds no more than this. */
#define VERIFY_PIECE ((size_t)16 << 20)

int stpy_verify_once(stpy_state *state, st_file *file, const st_tensor *t, PyObject *verifier)
{
    uint64_t start = st_header_data_start(st_file_header(file)) + t->begin;
    size_t len = (size_t)stpy_tensor_data_len(t), piece = len < VERIFY_PIECE ? len : VERIFY_PIECE;
    PyObject *name = stpy_tensor_name(t), *verified = NULL, *hasher = NULL;
    stpy_span span = {.tensor = t};
    uint8_t *buffer = NULL;
    int rc = -1, known;
    if (name == NULL || (verified = PyObject_GetAttrString(verifier, "verified")) == NULL ||
        (known = PySequence_Contains(verified, name)) < 0)
        goto exit;
    if (known) {
        rc = 0;
        goto exit;
    }
    if ((hasher = PyObject_CallMethod(verifier, "hasher", NULL)) == NULL)
        goto exit;
    if ((buffer = PyMem_Malloc(piece ? piece : 1)) == NULL) {
        PyErr_NoMemory();
        goto exit;
    }
    for (size_t done = 0; done < len; done += piece) {
        size_t n = len - done < piece ? len - done : piece;
        if (stpy_read_into(state, file, start + done, buffer, n, NULL, NULL) < 0 ||
            update(hasher, buffer, n) < 0)
            goto exit;
    }
    rc = check(verifier, &span, &hasher, 1);
exit:
    PyMem_Free(buffer);
    Py_XDECREF(hasher);
    Py_XDECREF(verified);
    Py_XDECREF(name);
    return rc;
}
