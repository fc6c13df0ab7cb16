/*
 * st_test_hooks.h - internal to the core (not installed, not exported from
 * the library): what the C tests (csrc/tests) look at inside the descriptor
 * cache (st_descriptors.c).
 */
#ifndef ST_TEST_HOOKS_H
#define ST_TEST_HOOKS_H

#include "st_core.h"

/* Whether file holds an open descriptor now, and how many the descriptor
 * cache holds (in use or not). */
bool st_file_has_descriptor(const st_file *file);
size_t st_file_descriptors(void);

#endif
