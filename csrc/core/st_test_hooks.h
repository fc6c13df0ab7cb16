/*
 * st_test_hooks.h - internal to the core (not installed, not exported from
 * the library): what the C tests (csrc/tests, csrc/fuzz) reach inside it.
 */
#ifndef ST_TEST_HOOKS_H
#define ST_TEST_HOOKS_H

#include "st_core.h"

/* Makes the n-th allocation from now on (1-based) fail, then all later ones
 * succeed again; 0 disables. Not thread-safe. (st_alloc.c) */
void st_alloc_fail_after(uint64_t n);
/* Whether file holds an open descriptor now, and how many the descriptor
 * cache holds (in use or not). (st_descriptors.c) */
bool st_file_has_descriptor(const st_file *file);
size_t st_file_descriptors(void);

#endif
