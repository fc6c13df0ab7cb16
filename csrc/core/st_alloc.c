/* st_alloc.c - allocation wrappers with a failure-injection hook for tests. */
#include "st_core.h"

#include <stdlib.h>

/* Tests only (not thread-safe by contract): 0 = disabled, else the number
 * of allocations left until the one that fails. */
static uint64_t st_fail_countdown = 0;

static bool st_should_fail(void)
{
    if (st_fail_countdown == 0)
        return false;
    st_fail_countdown--;
    return st_fail_countdown == 0;
}

void st_alloc_fail_after(uint64_t n)
{
    st_fail_countdown = n;
}

void *st_malloc(size_t size)
{
    if (st_should_fail())
        return NULL;
    return malloc(size ? size : 1);
}

void *st_calloc(size_t count, size_t size)
{
    if (st_should_fail())
        return NULL;
    if (count == 0 || size == 0)
        count = size = 1;
    return calloc(count, size);
}

void *st_realloc(void *ptr, size_t size)
{
    if (st_should_fail())
        return NULL;
    return realloc(ptr, size ? size : 1);
}

void st_free(void *ptr)
{
    free(ptr);
}
