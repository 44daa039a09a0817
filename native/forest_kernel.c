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
 *   - splits decide float32 `x < threshold` with the thresholds as XGBoost stores them, through
 *     order keys that compare exactly like the floats (forest_kernel.h, "Keys");
 *   - transforms are XGBoost's own formulas (sigmoid with its clamp, softmax summed in
 *     double), using the C library's expf, which XGBoost uses too.
 * Build without -ffast-math and with -ffp-contract=off (compile/toolchain.py does).
 *
 * No global mutable state and no allocation: every buffer is on the stack, sized by the
 * generated constants, so concurrent calls are safe.
 */
#include "forest_kernel.h"

#if defined(__FAST_MATH__)
#error "edgeboost's kernel must not be built with -ffast-math: it removes isnan and reorders adds"
#endif

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "edgeboost.h"

/* Complete unrolling keeps every lane's index in a register; forced inlining turns the depth
 * and the row count into constants in each caller (see walk_run and predict_rows). */
#if defined(__GNUC__)
#define EB_UNROLL _Pragma("GCC unroll 16")
#define EB_INLINE static inline __attribute__((always_inline))
/* Hides where a pointer came from, so that the compiler addresses each lane as this pointer
 * plus a constant displacement instead of keeping a per-lane index (measured on x86_64: 5
 * instructions per step instead of 8). Changes no value. */
#define EB_OPAQUE(pointer) __asm__("" : "+r"(pointer))
#else
#define EB_UNROLL
#define EB_INLINE static inline
#define EB_OPAQUE(pointer) (void)0
#endif

/* Rows walked together through a group: two on x86_64, where 16 lanes of indices still fit the
 * registers and the extra independent chains raise batch throughput by ~10% (measured: 400
 * trees of depth 6, 1.79 -> 1.58 us per row). One elsewhere: armv7 has too few registers, and
 * on aarch64 the gain is unmeasured (qemu, which counts instructions, not overlap, shows none). */
#if defined(__x86_64__)
#define EB_PAIR 2
#else
#define EB_PAIR 1
#endif

/* Every row starts from XGBoost's own float32 base margin (computed by compile/source.py). */
static const float base_score[EB_NUM_OUTPUT] = EDGEBOOST_MODEL_BASE_SCORE;

/* One step down a tree: 2 * at + (*x < key), unsigned (see "Keys" in forest_kernel.h). On
 * x86_64 GCC computes the flag into a register and adds it (compare, setb, zero-extend, lea);
 * compare and add-with-carry do the same in two instructions, with the row's key read by the
 * compare itself. Measured (400 trees of depth 6): one row 2.37 -> 2.07 us, batches 1.48 ->
 * 1.41 us per row. The same results: the carry of `cmp key, *x` is (*x < key). */
EB_INLINE size_t step(size_t at, const uint32_t *x, uint32_t key) {
#if defined(__x86_64__) && defined(__GNUC__)
  __asm__("cmpl %[key], %[x]\n\tadcq %[at], %[at]"
          : [at] "+r"(at)
          : [key] "r"(key), [x] "m"(*x)
          : "cc");
  return at;
#else
  return 2 * at + (*x < key);
#endif
}

/* Walk one group (depth `depth` and n_rows, 1 or EB_PAIR, constants once inlined) for n_rows
 * expanded rows, then store each lane's leaf for each row r in the window buffer
 * (leaves[slot * stride + r]). See "Complete trees" in forest_kernel.h. Each lane of each
 * row is an independent chain of loads, which the CPU overlaps. */
EB_INLINE void walk_group(const struct eb_group *group, const uint32_t *xk, float *leaves,
                          int stride, const int n_rows, const int depth) {
  const size_t width = (size_t)1 << depth; /* entries per lane */
  const uint32_t *key = eb_key + group->offset;
  const eb_slot_t *slot = eb_slot + group->offset;
  /* Both rows of a pair from one base (xk: the block's expanded rows, one after the other):
   * one register fewer for 16 chains (x86_64 batches 1.41 -> 1.36 us per row). */
  size_t at[EB_PAIR][EB_LANES];
  EB_OPAQUE(key);
  EB_OPAQUE(slot);
  EB_OPAQUE(xk);
  EB_UNROLL
  for (int r = 0; r < n_rows; ++r) {
    EB_UNROLL
    for (int k = 0; k < EB_LANES; ++k) at[r][k] = 1;
  }
  EB_UNROLL
  for (int level = 0; level < depth; ++level) {
    EB_UNROLL
    for (int k = 0; k < EB_LANES; ++k) {
      EB_UNROLL
      for (int r = 0; r < n_rows; ++r) {
        size_t node = k * width + at[r][k];
        at[r][k] = step(at[r][k], &xk[r * EB_ROW_SLOTS + slot[node]], key[node]);
      }
    }
  }
  const float *leaf = eb_leaf + group->offset - width; /* at - width: the bottom entry */
  EB_UNROLL
  for (int k = 0; k < EB_LANES; ++k) {
    EB_UNROLL
    for (int r = 0; r < n_rows; ++r)
      leaves[group->slot[k] * stride + r] = leaf[k * width + at[r][k]];
  }
}

/* Groups [first, end), all of one depth, for n_rows expanded rows: the walk for the depth is
 * picked once per run of groups (compile/ sorts a window's groups by depth, so runs are long),
 * and rows go EB_PAIR at a time. */
EB_INLINE void walk_run(const struct eb_group *first, const struct eb_group *end,
                        const uint32_t *xk, float *leaves, int n_rows) {
#define EB_WALK(depth)                                                                         \
  case depth:                                                                                  \
    for (const struct eb_group *g = first; g != end; ++g) {                                    \
      int r = 0;                                                                               \
      for (; r + EB_PAIR <= n_rows; r += EB_PAIR)                                              \
        walk_group(g, xk + r * EB_ROW_SLOTS, leaves + r, n_rows, EB_PAIR, depth);              \
      for (; r < n_rows; ++r)                                                                  \
        walk_group(g, xk + r * EB_ROW_SLOTS, leaves + r, n_rows, 1, depth);                    \
    }                                                                                          \
    break;
  switch (first->depth) {
#if (EB_DEPTH_MASK >> 1) & 1
    EB_WALK(1)
#endif
#if (EB_DEPTH_MASK >> 2) & 1
    EB_WALK(2)
#endif
#if (EB_DEPTH_MASK >> 3) & 1
    EB_WALK(3)
#endif
#if (EB_DEPTH_MASK >> 4) & 1
    EB_WALK(4)
#endif
#if (EB_DEPTH_MASK >> 5) & 1
    EB_WALK(5)
#endif
#if (EB_DEPTH_MASK >> 6) & 1
    EB_WALK(6)
#endif
#if (EB_DEPTH_MASK >> 7) & 1
    EB_WALK(7)
#endif
#if (EB_DEPTH_MASK >> 8) & 1
    EB_WALK(8)
#endif
#if (EB_DEPTH_MASK >> 9) & 1
    EB_WALK(9)
#endif
#if (EB_DEPTH_MASK >> 10) & 1
    EB_WALK(10)
#endif
#if (EB_DEPTH_MASK >> 11) & 1
    EB_WALK(11)
#endif
#if (EB_DEPTH_MASK >> 12) & 1
    EB_WALK(12)
#endif
#if (EB_DEPTH_MASK >> 13) & 1
    EB_WALK(13)
#endif
#if (EB_DEPTH_MASK >> 14) & 1
    EB_WALK(14)
#endif
#if (EB_DEPTH_MASK >> 15) & 1
    EB_WALK(15)
#endif
#if (EB_DEPTH_MASK >> 16) & 1
    EB_WALK(16)
#endif
  default:
    /* compile/ writes no other depth: reaching here would leave leaves unset, so stop. */
    abort();
  }
#undef EB_WALK
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

/* The order key of a float that is not NaN (see "Keys" in forest_kernel.h). */
static uint32_t order_key(float x) {
  uint32_t bits;
  x += 0.0f; /* -0.0 + 0.0 == +0.0 (round to nearest): both zeros get one key */
  memcpy(&bits, &x, sizeof bits);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

/* xk: see "Expanded row" in forest_kernel.h. */
static void expand_row(const float *row, uint32_t *xk) {
  for (int f = 0; f < EB_NUM_FEATURE; ++f) {
    float x = row[f];
    int missing = isnan(x);
    uint32_t key = order_key(x);
    xk[2 * f] = missing ? 0xFFFFFFFFu : key;
    xk[2 * f + 1] = missing ? 0u : key;
  }
  xk[EB_PAD_SLOT] = 0;
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

#if EB_TRANSFORM == EB_TRANSFORM_MAX_INDEX
/* XGBoost's multi:softmax PredTransform (common::FindMaxIndex): the first index of the largest
 * margin (a later one must be strictly greater), as a float. */
static float max_index(const float *v) {
  int best = 0;
  for (int k = 1; k < EB_NUM_OUTPUT; ++k)
    if (v[k] > v[best]) best = k;
  return (float)best;
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
  uint32_t xk[EB_BLOCK_ROWS * EB_ROW_SLOTS]; /* expanded rows, one after the other */
  float leaves[EB_WINDOW_TREES * EB_BLOCK_ROWS];
  float acc[EB_BLOCK_ROWS * EB_NUM_OUTPUT];
  for (int r = 0; r < n_rows; ++r) {
    expand_row(rows + r * EB_NUM_FEATURE, xk + r * EB_ROW_SLOTS);
    for (int o = 0; o < EB_NUM_OUTPUT; ++o) acc[r * EB_NUM_OUTPUT + o] = base_score[o];
  }
  for (const struct eb_window *w = eb_windows; w != eb_windows + EB_NUM_WINDOW; ++w) {
    const struct eb_group *run = eb_groups + w->first_group, *end = eb_groups + w->end_group;
    while (run != end) {
      const struct eb_group *run_end = run + 1;
      while (run_end != end && run_end->depth == run->depth) ++run_end;
      walk_run(run, run_end, xk, leaves, n_rows);
      run = run_end;
    }
    add_window(w, leaves, acc, n_rows);
  }
  for (int r = 0; r < n_rows; ++r) {
#if EB_TRANSFORM == EB_TRANSFORM_MAX_INDEX
    if (!margin) {
      out[r] = max_index(acc + r * EB_NUM_OUTPUT); /* one value per row: EB_VALUE_WIDTH */
      continue;
    }
#endif
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
  const int64_t width = margin ? EB_NUM_OUTPUT : EB_VALUE_WIDTH;
  int64_t i = begin;
  for (; end - i >= EB_BLOCK_ROWS; i += EB_BLOCK_ROWS)
    predict_block(rows + i * EB_NUM_FEATURE, margin, out + i * width);
  for (; i < end; ++i) predict_one(rows + i * EB_NUM_FEATURE, margin, out + i * width);
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
