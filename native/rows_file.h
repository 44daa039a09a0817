/*
 * rows_file.h - the rows file the parity driver and the C benchmark read: one reader, with
 * every check, for both (included by native/parity_driver.c and benchmarks/c_bench.c).
 *
 *   "EBPR"  uint32 version (1)  int64 n_rows  int32 n_cols  int32 reserved (0)  then
 *   n_rows * n_cols float32 values, row-major; all integers little-endian.
 *
 * eb_read_rows returns NULL and the rows through *rows, or a message saying what is wrong
 * (the caller adds the path and exits): no shape that overflows size_t (32 bits on armv7),
 * no short file, no trailing bytes.
 */
#ifndef EDGEBOOST_ROWS_FILE_H
#define EDGEBOOST_ROWS_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EB_ROWS_HEADER_SIZE 24
#define EB_ROWS_FORMAT_VERSION 1

static uint64_t eb_get_le(const unsigned char *bytes, int width) {
  uint64_t value = 0;
  for (int i = width - 1; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

/* n_rows * n_cols float32 values as a byte count in *bytes, or a message. */
static const char *eb_float_bytes(int64_t n_rows, int32_t n_cols, size_t *bytes) {
  if (n_rows < 0 || n_cols <= 0) return "bad shape";
  uint64_t count = (uint64_t)n_rows * (uint64_t)n_cols;
  if (n_rows != 0 && count / (uint64_t)n_rows != (uint64_t)n_cols) return "shape overflows";
  if (count > SIZE_MAX / sizeof(float)) return "more values than memory can hold";
  *bytes = (size_t)count * sizeof(float);
  return NULL;
}

static const char *eb_read_rows(const char *path, float **rows, int64_t *n_rows,
                                int32_t *n_cols) {
  FILE *file = fopen(path, "rb");
  if (file == NULL) return "cannot open it";
  unsigned char header[EB_ROWS_HEADER_SIZE];
  const char *problem = NULL;
  size_t bytes = 0;
  *rows = NULL;
  if (fread(header, 1, sizeof header, file) != sizeof header)
    problem = "shorter than its header";
  else if (memcmp(header, "EBPR", 4) != 0)
    problem = "not a rows file (bad magic)";
  else if (eb_get_le(header + 4, 4) != EB_ROWS_FORMAT_VERSION)
    problem = "unsupported format version";
  if (problem == NULL) {
    *n_rows = (int64_t)eb_get_le(header + 8, 8);
    *n_cols = (int32_t)(uint32_t)eb_get_le(header + 16, 4);
    problem = eb_float_bytes(*n_rows, *n_cols, &bytes);
  }
  if (problem == NULL && (*rows = malloc(bytes ? bytes : 1)) == NULL) problem = "out of memory";
  if (problem == NULL && bytes != 0 && fread(*rows, 1, bytes, file) != bytes)
    problem = "shorter than its header says";
  if (problem == NULL && fgetc(file) != EOF) problem = "trailing bytes after the rows";
  fclose(file);
  if (problem != NULL) {
    free(*rows);
    *rows = NULL;
  }
  return problem;
}

#endif /* EDGEBOOST_ROWS_FILE_H */
