/*
 * edgeboost.h - the stable ABI of every edgeboost model library (libmodel.so).
 *
 * The runtime reads the declarations between the "cdef" markers below and hands them to
 * cffi in ABI mode, so that part must stay plain C that pycparser understands: no macros
 * other than integer #defines, no attributes, no includes.
 *
 * Contract:
 *   - rows are dense, row-major float32: rows[i * n_cols + j] is feature j of row i;
 *   - NaN means "missing" and takes the split's default direction, exactly like XGBoost;
 *     +-inf are ordinary values;
 *   - out receives n_rows * edgeboost_num_output() float32 values, row-major;
 *   - margin != 0 returns raw scores (base score + trees); margin == 0 applies the
 *     objective's transform (identity, sigmoid, softmax, exp, or for multi:softmax, whose
 *     manifest says postprocessor "max_index", the class index: then one value per row, in
 *     out[0 .. n_rows), as XGBoost returns it);
 *   - every function is reentrant and keeps no global mutable state: concurrent calls
 *     from several threads are safe;
 *   - errors are returned as EDGEBOOST_E_* codes, never by crashing; on error, the
 *     contents of out are unspecified.
 */
#ifndef EDGEBOOST_H
#define EDGEBOOST_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* cdef:begin */
#define EDGEBOOST_ABI_VERSION 1

enum edgeboost_status {
  EDGEBOOST_OK = 0,
  EDGEBOOST_E_NULL_POINTER = 1,
  EDGEBOOST_E_NEGATIVE_ROWS = 2,
  EDGEBOOST_E_WIDTH_MISMATCH = 3,
  EDGEBOOST_E_OUT_OF_MEMORY = 4
};

/* Message for a status code; never NULL, also for unknown codes. */
const char *edgeboost_status_message(int32_t status);

int32_t edgeboost_abi_version(void);
/* Number of input features each row must have. */
int32_t edgeboost_num_feature(void);
/* Number of float32 values written per row (num_target * num_class; see max_index above). */
int32_t edgeboost_num_output(void);
/* "float32" or "float64": the type the split thresholds are compared in. */
const char *edgeboost_threshold_type(void);
/* Name of the code generator that produced the trees ("tl2cgen", ...). */
const char *edgeboost_backend(void);
/* sha256 (hex) of the source model file the library was compiled from. */
const char *edgeboost_model_sha256(void);

/* Predict n_rows rows; returns EDGEBOOST_OK or an EDGEBOOST_E_* code. */
int32_t edgeboost_predict(const float *rows, int64_t n_rows, int32_t n_cols, int32_t margin,
                          float *out);
/* cdef:end */

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif /* EDGEBOOST_H */
