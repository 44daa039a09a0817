/*
 * c_bench.c - time edgeboost_predict from C: the model's own cost, without Python or cffi.
 *
 * Usage: c_bench ROWS_FILE BATCH CALLS SAMPLES_FILE
 *
 * Linked directly against a bundle's libmodel.so (see benchmarks/harness.py). ROWS_FILE is in
 * the parity driver's format (native/parity_driver.c: "EBPR" header, then float32 rows).
 * Call i predicts BATCH rows starting at row (i % n_batches) * BATCH, where n_batches is
 * min(n_rows / BATCH, 256), so single rows are not all the same row. min(CALLS, 3) untimed
 * calls of at most 1,000 rows warm up first. Each timed call is bracketed by
 * clock_gettime(CLOCK_MONOTONIC); the whole loop by CLOCK_PROCESS_CPUTIME_ID as well.
 *
 * Writes CALLS int64 nanosecond durations (native byte order) to SAMPLES_FILE and prints one
 * JSON line: {"batch": B, "calls": K, "wall_ns": W, "cpu_ns": C, "vm_hwm_kib": H, "checksum": S}
 * where H is this process's peak resident set (VmHWM of /proc/self/status; -1 without /proc).
 * Exit status: 0, 2 on bad usage, 1 on any other error.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgeboost.h"
#include "rows_file.h"

#define MAX_BATCHES 256

static void fail(const char *message, const char *detail) {
  fprintf(stderr, "c_bench: %s%s%s\n", message, detail ? ": " : "", detail ? detail : "");
  exit(1);
}

static int64_t now_ns(clockid_t clock) {
  struct timespec t;
  if (clock_gettime(clock, &t) != 0) fail("clock_gettime failed", strerror(errno));
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Reads ROWS_FILE (native/rows_file.h, shared with the parity driver); needs at least a row. */
static float *read_rows(const char *path, int64_t *n_rows, int32_t *n_cols) {
  float *rows;
  const char *problem = eb_read_rows(path, &rows, n_rows, n_cols);
  if (problem != NULL) fail(problem, path);
  if (*n_rows <= 0) fail("empty rows file", path);
  return rows;
}

/* VmHWM in kB from /proc/self/status, or -1. */
static long peak_rss_kib(void) {
  FILE *file = fopen("/proc/self/status", "r");
  if (file == NULL) return -1;
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, file) != NULL)
    if (sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
  fclose(file);
  return kib;
}

static void predict(const float *rows, int64_t batch, int32_t n_cols, float *out) {
  int32_t status = edgeboost_predict(rows, batch, n_cols, 0, out);
  if (status != EDGEBOOST_OK) fail("edgeboost_predict failed", edgeboost_status_message(status));
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s ROWS_FILE BATCH CALLS SAMPLES_FILE\n", argv[0]);
    return 2;
  }
  int64_t batch = strtoll(argv[2], NULL, 10);
  int64_t calls = strtoll(argv[3], NULL, 10);
  if (batch <= 0 || calls <= 0) fail("BATCH and CALLS must be positive", NULL);

  int64_t n_rows;
  int32_t n_cols;
  float *rows = read_rows(argv[1], &n_rows, &n_cols);
  if (n_cols != edgeboost_num_feature()) fail("the rows do not have the model's width", argv[1]);
  if (batch > n_rows) fail("BATCH is larger than the rows file", argv[1]);
  int64_t n_batches = n_rows / batch < MAX_BATCHES ? n_rows / batch : MAX_BATCHES;
  int32_t n_out = edgeboost_num_output();
  float *out = malloc((size_t)batch * (size_t)n_out * sizeof(float));
  int64_t *samples = malloc((size_t)calls * sizeof(int64_t));
  if (out == NULL || samples == NULL) fail("out of memory", NULL);

  /* Warm-up: code, tables and the first rows into the caches, with at most 1,000 rows a call. */
  int64_t warm = batch < 1000 ? batch : 1000;
  for (int64_t i = 0; i < calls && i < 3; ++i)
    predict(rows + (i % n_batches) * batch * n_cols, warm, n_cols, out);

  double checksum = 0.0; /* read every output, so no call can be optimised away */
  int64_t cpu_start = now_ns(CLOCK_PROCESS_CPUTIME_ID);
  int64_t wall_start = now_ns(CLOCK_MONOTONIC);
  for (int64_t i = 0; i < calls; ++i) {
    const float *first = rows + (i % n_batches) * batch * n_cols;
    int64_t start = now_ns(CLOCK_MONOTONIC);
    predict(first, batch, n_cols, out);
    samples[i] = now_ns(CLOCK_MONOTONIC) - start;
    checksum += out[0];
  }
  int64_t wall_ns = now_ns(CLOCK_MONOTONIC) - wall_start;
  int64_t cpu_ns = now_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu_start;

  FILE *file = fopen(argv[4], "wb");
  if (file == NULL) fail("cannot create the samples file", strerror(errno));
  if (fwrite(samples, sizeof(int64_t), (size_t)calls, file) != (size_t)calls || fclose(file) != 0)
    fail("cannot write the samples file", strerror(errno));
  printf(
      "{\"batch\": %lld, \"calls\": %lld, \"wall_ns\": %lld, \"cpu_ns\": %lld, "
      "\"vm_hwm_kib\": %ld, \"checksum\": %.9g}\n",
      (long long)batch, (long long)calls, (long long)wall_ns, (long long)cpu_ns, peak_rss_kib(),
      checksum);
  free(rows);
  free(out);
  free(samples);
  return 0;
}
