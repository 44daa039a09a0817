/*
 * forest_kernel.c - edgeboost's own backend: one branch-free kernel over the forest as data.
 *
 * Compiled with the generated forest_model.c (the tables) and edgeboost_model.h (their sizes)
 * into one libmodel.so, behind the same ABI as every backend (edgeboost.h). The layout of the
 * tables, and why, is described in forest_kernel.h.
 *
 * What makes it bit-exact with XGBoost's CPU predictor:
 *   - each row starts from the float32 base margin XGBoost itself computes (compile/);
 *   - leaves are float32 and added one by one, in tree order, in float32;
 *   - splits compare float32 `x < threshold` with the thresholds as XGBoost stores them;
 *   - transforms are XGBoost's own formulas (sigmoid with its clamp, softmax summed in
 *     double), using the C library's expf, which XGBoost uses too.
 * Build without -ffast-math and with -ffp-contract=off (compile/toolchain.py does).
 *
 * No global mutable state and no allocation: every buffer is on the stack, sized by the
 * generated constants, so concurrent calls are safe.
 */
#include "forest_kernel.h"

#include <math.h>
#include <stddef.h>

#include "edgeboost.h"

/* Complete unrolling keeps every lane's node pointer in a register; forced inlining turns
 * the row count into a constant in each caller (see predict_rows). */
#if defined(__GNUC__)
#define EB_UNROLL_LANES _Pragma("GCC unroll 8")
#define EB_INLINE static inline __attribute__((always_inline))
#else
#define EB_UNROLL_LANES
#define EB_INLINE static inline
#endif

/* Every row starts from XGBoost's own float32 base margin (computed by compile/source.py). */
static const float base_score[EB_NUM_OUTPUT] = EDGEBOOST_MODEL_BASE_SCORE;

/* Walk one group's lanes in lock-step for one row, then store each lane's leaf in the window
 * buffer of that row (leaves[slot * stride]). */
EB_INLINE void walk_group(const struct eb_group *group, const float *xr, float *leaves,
                          int stride) {
  const struct eb_node *at[EB_LANES];
  EB_UNROLL_LANES
  for (int k = 0; k < EB_LANES; ++k) at[k] = eb_nodes + group->root[k];
  for (unsigned step = 0; step < group->depth; ++step) {
    /* Independent chains: the CPU overlaps the loads of all lanes. */
    EB_UNROLL_LANES
    for (int k = 0; k < EB_LANES; ++k) {
      const struct eb_node *n = at[k];
      at[k] = n + n->left + !(xr[n->slot] < n->threshold);
    }
  }
  EB_UNROLL_LANES
  for (int k = 0; k < EB_LANES; ++k) leaves[group->slot[k] * stride] = at[k]->threshold;
}

/* Add one window's leaves (leaves[i * n_rows + r]: tree i, row r) to the rows' outputs, in
 * tree order (XGBoost's order). The rows' sums are independent chains, so their latencies
 * overlap; for a single output they are also adjacent, so the compiler may use SIMD adds
 * (lane-wise IEEE float adds: the same results). */
EB_INLINE void add_window(const struct eb_window *window, const float *leaves, float *acc,
                          int n_rows) {
  int count = (int)(window->end_tree - window->first_tree);
  for (int i = 0; i < count; ++i) {
#if EB_NUM_OUTPUT == 1
    for (int r = 0; r < n_rows; ++r) acc[r] += leaves[i * n_rows + r];
#else
    int o = eb_tree_output[window->first_tree + (uint32_t)i];
    for (int r = 0; r < n_rows; ++r) acc[r * EB_NUM_OUTPUT + o] += leaves[i * n_rows + r];
#endif
  }
}

/* xr: see "Expanded row" in forest_kernel.h. */
static void expand_row(const float *row, float *xr) {
  for (int f = 0; f < EB_NUM_FEATURE; ++f) {
    float x = row[f];
    xr[2 * f] = x;
    xr[2 * f + 1] = isnan(x) ? -INFINITY : x;
  }
  xr[EB_LEAF_SLOT] = -INFINITY;
}

#if EB_TRANSFORM == EB_TRANSFORM_SIGMOID
/* XGBoost's common::Sigmoid: exp(-x) clamped at 88.7 so that it cannot overflow. */
static float sigmoid(float x) {
  float e = -x;
  if (88.7f < e) e = 88.7f; /* std::min(-x, 88.7f), NaN included */
  return 1.0f / (expf(e) + 1.0f + 1e-16f);
}
#endif

#if EB_TRANSFORM == EB_TRANSFORM_SOFTMAX
/* XGBoost's common::Softmax: float exps of (x - max), summed in double, divided by (float)sum. */
static void softmax(float *v, int n) {
  float wmax = v[0];
  for (int i = 1; i < n; ++i) wmax = fmaxf(v[i], wmax);
  double wsum = 0.0;
  for (int i = 0; i < n; ++i) {
    v[i] = expf(v[i] - wmax);
    wsum += v[i];
  }
  float total = (float)wsum;
  for (int i = 0; i < n; ++i) v[i] /= total;
}
#endif

static void transform(float *acc) {
#if EB_TRANSFORM == EB_TRANSFORM_SIGMOID
  for (int o = 0; o < EB_NUM_OUTPUT; ++o) acc[o] = sigmoid(acc[o]);
#elif EB_TRANSFORM == EB_TRANSFORM_SOFTMAX
  /* One softmax per target over its classes (outputs are target-major). */
  for (int o = 0; o < EB_NUM_OUTPUT; o += EB_NUM_CLASS) softmax(acc + o, EB_NUM_CLASS);
#elif EB_TRANSFORM == EB_TRANSFORM_EXP
  for (int o = 0; o < EB_NUM_OUTPUT; ++o) acc[o] = expf(acc[o]);
#else
  (void)acc;
#endif
}

/* Predict n_rows rows (1 or EB_BLOCK_ROWS, a constant once inlined, so that each case gets its
 * own loops). Groups are the outer loop: a group's nodes are loaded into the cache once for
 * all the rows. */
EB_INLINE void predict_rows(const float *rows, int n_rows, int32_t margin, float *out) {
  float xr[EB_BLOCK_ROWS][EB_ROW_SLOTS];
  float leaves[EB_WINDOW_TREES * EB_BLOCK_ROWS];
  float acc[EB_BLOCK_ROWS * EB_NUM_OUTPUT];
  for (int r = 0; r < n_rows; ++r) {
    expand_row(rows + r * EB_NUM_FEATURE, xr[r]);
    for (int o = 0; o < EB_NUM_OUTPUT; ++o) acc[r * EB_NUM_OUTPUT + o] = base_score[o];
  }
  for (const struct eb_window *w = eb_windows; w != eb_windows + EB_NUM_WINDOW; ++w) {
    for (uint32_t g = w->first_group; g < w->end_group; ++g) {
      for (int r = 0; r < n_rows; ++r) walk_group(&eb_groups[g], xr[r], leaves + r, n_rows);
    }
    add_window(w, leaves, acc, n_rows);
  }
  for (int r = 0; r < n_rows; ++r) {
    if (!margin) transform(acc + r * EB_NUM_OUTPUT);
    for (int o = 0; o < EB_NUM_OUTPUT; ++o) out[r * EB_NUM_OUTPUT + o] = acc[r * EB_NUM_OUTPUT + o];
  }
}

static void predict_block(const float *rows, int32_t margin, float *out) {
  predict_rows(rows, EB_BLOCK_ROWS, margin, out);
}

static void predict_one(const float *row, int32_t margin, float *out) {
  predict_rows(row, 1, margin, out);
}

void eb_forest_predict_range(const float *rows, int64_t begin, int64_t end, int32_t margin,
                             float *out) {
  int64_t i = begin;
  for (; end - i >= EB_BLOCK_ROWS; i += EB_BLOCK_ROWS)
    predict_block(rows + i * EB_NUM_FEATURE, margin, out + i * EB_NUM_OUTPUT);
  for (; i < end; ++i) predict_one(rows + i * EB_NUM_FEATURE, margin, out + i * EB_NUM_OUTPUT);
}

/* ---- edgeboost.h ------------------------------------------------------------------------ */

int32_t edgeboost_num_feature(void) { return EB_NUM_FEATURE; }
int32_t edgeboost_num_output(void) { return EB_NUM_OUTPUT; }
const char *edgeboost_threshold_type(void) { return "float32"; }
const char *edgeboost_backend(void) { return "kernel"; }
const char *edgeboost_model_sha256(void) { return EDGEBOOST_MODEL_SHA256; }

int32_t edgeboost_predict(const float *rows, int64_t n_rows, int32_t n_cols, int32_t margin,
                          float *out) {
  if (n_rows < 0) return EDGEBOOST_E_NEGATIVE_ROWS;
  if (n_cols != EB_NUM_FEATURE) return EDGEBOOST_E_WIDTH_MISMATCH;
  if (n_rows == 0) return EDGEBOOST_OK;
  if (rows == NULL || out == NULL) return EDGEBOOST_E_NULL_POINTER;
  eb_forest_predict_range(rows, 0, n_rows, margin, out);
  return EDGEBOOST_OK;
}
