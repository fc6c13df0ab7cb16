/* st_alloc.c - allocation wrappers, with a failure-injection hook for tests. */
#include "st_internal.h"
#include "st_test_hooks.h"

#include <stdlib.h>

/* 0 = disabled, else the number of allocations left until the one that fails. */
static uint64_t fail_countdown = 0;

static bool should_fail(void)
{
    return fail_countdown != 0 && --fail_countdown == 0;
}

void st_alloc_fail_after(uint64_t n)
{
    fail_countdown = n;
}

void *st_malloc(size_t size)
{
    return should_fail() ? NULL : malloc(size ? size : 1);
}

void *st_calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    return count == 0 || size == 0 ? calloc(1, 1) : calloc(count, size);
}

void *st_realloc(void *ptr, size_t size)
{
    return should_fail() ? NULL : realloc(ptr, size ? size : 1);
}

void st_free(void *ptr)
{
    free(ptr);
}

bool st_grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    size_t nc = *cap ? *cap : 16;
    if (need <= *cap)
        return true;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / elem)
            return false;
        nc *= 2;
    }
    void *p = st_realloc(*arr, nc * elem);
    if (p == NULL)
        return false;
    *arr = p;
    *cap = nc;
    return true;
}
