/*
 * edgeboost_common.c - the part of the ABI (edgeboost.h) that is the same for every backend;
 * compiled into every model library next to the backend's own file.
 */
#include "edgeboost.h"

/* The one table from status codes to words; the runtime shows these in its exceptions. */
const char *edgeboost_status_message(int32_t status) {
  switch (status) {
    case EDGEBOOST_OK:
      return "ok";
    case EDGEBOOST_E_NULL_POINTER:
      return "rows or out is NULL";
    case EDGEBOOST_E_NEGATIVE_ROWS:
      return "n_rows is negative";
    case EDGEBOOST_E_WIDTH_MISMATCH:
      return "n_cols differs from the model's number of features";
    case EDGEBOOST_E_OUT_OF_MEMORY:
      return "out of memory";
    default:
      return "unknown status code";
  }
}

int32_t edgeboost_abi_version(void) { return EDGEBOOST_ABI_VERSION; }
