/*
 * st_source.h - internal to the core (not installed): the header of a file
 * over a byte source (st_source.c), for st_file_open_source (st_file.c).
 */
#ifndef ST_SOURCE_H
#define ST_SOURCE_H

#include "st_core.h"

/* Reads the length prefix and the header through source->read_many and
 * parses them with st_file_open's rules. */
st_code st_source_load_header(const st_source *source, st_header **header, st_error *err);

#endif
