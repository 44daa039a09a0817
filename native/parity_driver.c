/*
 * parity_driver.c - run one edgeboost model library on a file of rows, for parity tests.
 *
 * Usage: parity_driver LIBRARY ROWS_FILE OUT_FILE
 *
 * Built with the host gcc and with each cross compiler, and run under qemu-user for the
 * targets this machine cannot execute (see compile/emulation.py). It loads LIBRARY with
 * dlopen, exactly as the runtime does, so the library is exercised as it ships.
 *
 * File formats (all integers little-endian, every target of edgeboost is little-endian):
 *
 *   ROWS_FILE  "EBPR"  uint32 version (1)  int64 n_rows  int32 n_cols  int32 reserved (0)
 *              then n_rows * n_cols float32, row-major; NaN means missing.
 *   OUT_FILE   "EBPO"  uint32 version (1)  int64 n_rows  int32 n_out   int32 reserved (0)
 *              then n_rows * n_out float32 margins (margin=1),
 *              then n_rows * n_out float32 transformed values (margin=0).
 *
 * Exit status: 0 on success, 2 on bad usage, 1 on any other error (with a message on stderr).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgeboost.h"
#include "rows_file.h"


typedef int32_t (*int_fn)(void);
typedef const char *(*message_fn)(int32_t);
typedef int32_t (*predict_fn)(const float *, int64_t, int32_t, int32_t, float *);

/* The library's entry points, looked up by name. */
struct model {
  void *handle;
  int_fn abi_version;
  int_fn num_feature;
  int_fn num_output;
  message_fn status_message;
  predict_fn predict;
};

static void fail(const char *format, ...) {
  va_list args;
  va_start(args, format);
  fputs("parity_driver: ", stderr);
  vfprintf(stderr, format, args);
  fputc('\n', stderr);
  va_end(args);
  exit(1);
}

/* Byte-wise (de)coding keeps the header format independent of the host's alignment rules. */
static void put_le(unsigned char *bytes, uint64_t value, int width) {
  for (int i = 0; i < width; ++i) bytes[i] = (unsigned char)(value >> (8 * i));
}

static int host_is_little_endian(void) {
  const uint32_t probe = 1;
  unsigned char first;
  memcpy(&first, &probe, 1);
  return first == 1;
}

static void *load_symbol(void *handle, const char *library, const char *name) {
  dlerror(); /* clear any earlier error, so a NULL below is reported correctly */
  void *symbol = dlsym(handle, name);
  const char *error = dlerror();
  if (error != NULL || symbol == NULL)
    fail("%s: missing symbol %s (%s)", library, name, error ? error : "NULL");
  return symbol;
}

static struct model open_model(const char *library) {
  struct model m;
  m.handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);
  if (m.handle == NULL) fail("cannot load %s: %s", library, dlerror());
  /* Object to function pointer through memcpy: ISO C leaves the direct cast undefined. */
  void *p;
  p = load_symbol(m.handle, library, "edgeboost_abi_version");
  memcpy(&m.abi_version, &p, sizeof p);
  p = load_symbol(m.handle, library, "edgeboost_num_feature");
  memcpy(&m.num_feature, &p, sizeof p);
  p = load_symbol(m.handle, library, "edgeboost_num_output");
  memcpy(&m.num_output, &p, sizeof p);
  p = load_symbol(m.handle, library, "edgeboost_status_message");
  memcpy(&m.status_message, &p, sizeof p);
  p = load_symbol(m.handle, library, "edgeboost_predict");
  memcpy(&m.predict, &p, sizeof p);
  if (m.abi_version() != EDGEBOOST_ABI_VERSION)
    fail("%s: ABI version %d, this driver speaks %d", library, (int)m.abi_version(),
         EDGEBOOST_ABI_VERSION);
  return m;
}

/* n_rows * width float32 values as a byte count (rows_file.h's checks), or exit. */
static size_t float_bytes(int64_t n_rows, int32_t width) {
  size_t bytes = 0;
  const char *problem = eb_float_bytes(n_rows, width, &bytes);
  if (problem != NULL) fail("%lld rows of %d outputs: %s", (long long)n_rows, (int)width, problem);
  return bytes;
}

static float *allocate(size_t bytes) {
  float *buffer = malloc(bytes ? bytes : 1); /* malloc(0) may return NULL */
  if (buffer == NULL) fail("out of memory (%zu bytes)", bytes);
  return buffer;
}

static void write_exactly(FILE *file, const char *path, const void *buffer, size_t bytes) {
  if (bytes != 0 && fwrite(buffer, 1, bytes, file) != bytes) fail("%s: %s", path, strerror(errno));
}

/* Reads ROWS_FILE (rows_file.h); returns the rows and sets *n_rows, *n_cols. */
static float *read_rows(const char *path, int64_t *n_rows, int32_t *n_cols) {
  float *rows;
  const char *problem = eb_read_rows(path, &rows, n_rows, n_cols);
  if (problem != NULL) fail("%s: %s", path, problem);
  return rows;
}

static void predict_or_fail(const struct model *m, const float *rows, int64_t n_rows,
                            int32_t n_cols, int32_t margin, float *out) {
  int32_t status = m->predict(rows, n_rows, n_cols, margin, out);
  if (status != EDGEBOOST_OK)
    fail("edgeboost_predict(margin=%d) returned %d: %s", (int)margin, (int)status,
         m->status_message(status));
}

static void write_outputs(const char *path, int64_t n_rows, int32_t n_out, const float *margin,
                          const float *value, size_t bytes) {
  FILE *file = fopen(path, "wb");
  if (file == NULL) fail("cannot create %s: %s", path, strerror(errno));
  unsigned char header[EB_ROWS_HEADER_SIZE] = {'E', 'B', 'P', 'O'};
  put_le(header + 4, EB_ROWS_FORMAT_VERSION, 4);
  put_le(header + 8, (uint64_t)n_rows, 8);
  put_le(header + 16, (uint32_t)n_out, 4);
  put_le(header + 20, 0, 4);
  write_exactly(file, path, header, sizeof header);
  write_exactly(file, path, margin, bytes);
  write_exactly(file, path, value, bytes);
  if (fclose(file) != 0) fail("%s: %s", path, strerror(errno));
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s LIBRARY ROWS_FILE OUT_FILE\n", argv[0]);
    return 2;
  }
  /* The float data is copied as raw bytes, which is only right on a little-endian host. */
  if (!host_is_little_endian()) fail("big-endian hosts are not supported");

  struct model m = open_model(argv[1]);
  int64_t n_rows;
  int32_t n_cols;
  float *rows = read_rows(argv[2], &n_rows, &n_cols);
  if (n_cols != m.num_feature())
    fail("%s has %d columns, the model takes %d features", argv[2], (int)n_cols,
         (int)m.num_feature());

  int32_t n_out = m.num_output();
  size_t out_bytes = float_bytes(n_rows, n_out);
  float *margin = allocate(out_bytes);
  float *value = allocate(out_bytes);
  predict_or_fail(&m, rows, n_rows, n_cols, 1, margin);
  predict_or_fail(&m, rows, n_rows, n_cols, 0, value);
  write_outputs(argv[3], n_rows, n_out, margin, value, out_bytes);

  free(rows);
  free(margin);
  free(value);
  dlclose(m.handle);
  return 0;
}
