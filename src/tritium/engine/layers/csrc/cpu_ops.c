/* The small fused ops of a CPU decode step, called from cpu_ops.py:
 *
 *   tritium_add_rms_norm:    residual += x (optional), out = rmsnorm(residual) * weight
 *   tritium_head_rms_norm:   Qwen3's per-head q/k RMSNorm, in place in the qkv rows
 *   tritium_rope:            rotate-half RoPE of q and k heads, in place in the qkv rows
 *   tritium_silu_mul:        out = silu(gate) * up, from the packed gate/up rows
 *   tritium_store_kv:        a step's keys and values into the paged pool and, for decodes,
 *                            into the contiguous decode copy (DecodeKV)
 *   tritium_decode_attention: one query token per sequence against its contiguous context,
 *                            grouped-query, with an optional additive mask (AVX-512 where
 *                            the build has it: 16 keys a step, a vector exp)
 *
 * A SmolLM2 decode step at batch 1 is ~1,200 torch ops of 2-20 us of dispatch each for
 * vectors of a few hundred floats; these do each group's work in one call of about a
 * microsecond. All fp32, row-major; the KV caches fp32, fp16 or bf16 (kv_cache_dtype). Built
 * with -ffp-contract=off so the plain-C expressions round as torch's do: RoPE is bit-identical to the torch expression; the norm, SiLU and
 * attention sum in a different order (within a few ulp).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "tritium_cpu.h"

#if defined(__AVX2__) && defined(__FMA__)
#define HAVE_AVX2 1
#endif

/* Work below this many multiply-adds stays on the calling thread: waking the OpenMP team
 * costs more than a 576-float row. */
#define PARALLEL_WORK 32768

static float sum_squares(const float* x, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
#ifdef HAVE_AVX2
  __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m256 u = _mm256_loadu_ps(x + i), v = _mm256_loadu_ps(x + i + 8);
    a = _mm256_fmadd_ps(u, u, a);
    b = _mm256_fmadd_ps(v, v, b);
  }
  s = hsum(_mm256_add_ps(a, b));
#endif
  for (; i < n; ++i) s += x[i] * x[i];
  return s;
}

void tritium_add_rms_norm(const float* x, float* residual, const float* weight, int64_t T,
                          int64_t N, float eps, float* out) {
  /* residual NULL: out = norm(x). Otherwise residual += x, then out = norm(residual). */
#pragma omp parallel for schedule(static) if (T * N >= PARALLEL_WORK)
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * N;
    float* src = (float*)xr;
    if (residual) {
      src = residual + t * N;
      for (int64_t i = 0; i < N; ++i) src[i] += xr[i];
    }
    const float r = 1.0f / sqrtf(sum_squares(src, N) / (float)N + eps);
    float* o = out + t * N;
    for (int64_t i = 0; i < N; ++i) o[i] = weight[i] * (src[i] * r);
  }
}

void tritium_head_rms_norm(float* qkv, int64_t T, int64_t row_stride, int64_t first_head,
                           int64_t heads, int64_t D, const float* weight, float eps) {
  /* Qwen3's q/k norms: RMSNorm over each of `heads` heads of D from `first_head` on, in
   * place in the qkv rows. */
#pragma omp parallel for schedule(static) if (T * heads * D >= PARALLEL_WORK)
  for (int64_t t = 0; t < T; ++t) {
    float* x = qkv + t * row_stride + first_head * D;
    tritium_add_rms_norm(x, NULL, weight, heads, D, eps, x);
  }
}

void tritium_rope(float* qkv, int64_t T, int64_t row_stride, int64_t heads, int64_t D,
                  const float* cos, const float* sin) {
  /* x * cos + roll(x, D/2) * sin per head, for the first `heads` heads of each row; cos and
   * sin are the step's rows [T, D] with rotate-half's sign already folded into sin. */
  const int64_t half = D / 2;
#pragma omp parallel for schedule(static) if (T * heads * D >= PARALLEL_WORK)
  for (int64_t t = 0; t < T; ++t) {
    const float* c = cos + t * D;
    const float* s = sin + t * D;
    for (int64_t h = 0; h < heads; ++h) {
      float* x = qkv + t * row_stride + h * D;
      for (int64_t i = 0; i < half; ++i) { /* each pair (i, i + half) only needs itself */
        const float lo = x[i], hi = x[i + half];
        x[i] = lo * c[i] + hi * s[i];
        x[i + half] = hi * c[i + half] + lo * s[i + half];
      }
    }
  }
}

#ifdef HAVE_AVX2
/* Cephes' expf: exp(x) = 2^n * p(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 in two
 * parts), p(r) = 1 + r + r^2 * poly(r) with these coefficients, highest first. */
#define EXP_LN2_HI 0.693359375f
#define EXP_LN2_LO -2.12194440e-4f
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LOWEST -87.33654f
static const float EXP_POLY[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                  4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

/* exp(x), 8 lanes (EXP_POLY), within 2 ulp of expf over [-87.3, 88.3] (x is
 * clamped there, so 2^n stays a normal float). libm's scalar expf was most of a 20-row
 * SiLU (30,000 calls a layer). */
static inline __m256 exp256(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LOWEST)), _mm256_set1_ps(88.3762626647949f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_HI), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_LO), r);
  __m256 p = _mm256_set1_ps(EXP_POLY[0]);
  for (int c = 1; c < 6; ++c) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_POLY[c]));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

void tritium_silu_mul(const float* gate_up, int64_t T, int64_t I, float* out) {
#pragma omp parallel for schedule(static) if (T * I >= PARALLEL_WORK)
  for (int64_t t = 0; t < T; ++t) {
    const float* g = gate_up + t * 2 * I;
    const float* u = g + I;
    float* o = out + t * I;
    int64_t i = 0;
#ifdef HAVE_AVX2
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (; i + 8 <= I; i += 8) {
      const __m256 gv = _mm256_loadu_ps(g + i);
      const __m256 e = exp256(_mm256_xor_ps(gv, sign));
      _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)),
                                            _mm256_loadu_ps(u + i)));
    }
#endif
    for (; i < I; ++i) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
  }
}

/* One row of `width` floats into a cache row: as it is (fp32 caches), or rounded to fp16
 * or bf16 (kv_format). */
static inline void cache_row(void* dst, const float* src, int64_t width, int kv_format) {
  if (kv_format == KV_FP32) {
    memcpy(dst, src, sizeof(float) * (size_t)width);
    return;
  }
  uint16_t* d = (uint16_t*)dst;
  int64_t i = 0;
  if (kv_format == KV_BF16) {
    for (; i < width; ++i) d[i] = fp32_to_bf16(src[i]);
    return;
  }
#ifdef __F16C__
  for (; i + 8 <= width; i += 8)
    _mm_storeu_si128((__m128i*)(d + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < width; ++i) d[i] = fp32_to_fp16(src[i]);
}

void tritium_store_kv(const float* k, const float* v, int64_t T, int64_t row_stride,
                      int64_t width, void* k_pool, void* v_pool, const int64_t* slots,
                      void* k_dense, void* v_dense, const int64_t* rows, int64_t num_rows,
                      int kv_format) {
  /* k, v: T rows of `width` floats, `row_stride` apart (views into the qkv rows). Token t
   * goes to pool row slots[t]; the first num_rows tokens also to dense row rows[t]. The
   * caches hold fp32, fp16 or bf16 (kv_format). */
  const int64_t row_bytes = (kv_format == KV_FP32 ? 4 : 2) * width;
  for (int64_t t = 0; t < T; ++t) {
    cache_row((char*)k_pool + slots[t] * row_bytes, k + t * row_stride, width, kv_format);
    cache_row((char*)v_pool + slots[t] * row_bytes, v + t * row_stride, width, kv_format);
  }
  for (int64_t t = 0; t < num_rows; ++t) {
    cache_row((char*)k_dense + rows[t] * row_bytes, k + t * row_stride, width, kv_format);
    cache_row((char*)v_dense + rows[t] * row_bytes, v + t * row_stride, width, kv_format);
  }
}

static inline float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
#ifdef HAVE_AVX2
  __m256 acc = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc2);
  }
  for (; i + 8 <= n; i += 8)
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  s = hsum(_mm256_add_ps(acc, acc2));
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

static inline void axpy(float* y, float a, const float* x, int64_t n) {
  int64_t i = 0;
#ifdef HAVE_AVX2
  const __m256 av = _mm256_set1_ps(a);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
  for (; i < n; ++i) y[i] += a * x[i];
}

#ifdef HAVE_AVX2
/* 8 values of a 16-bit cache row (fp16, or bf16: kv_format) as floats. */
static inline __m256 load8_kv16(const uint16_t* h, int kv_format) {
  const __m128i bits = _mm_loadu_si128((const __m128i*)h);
  if (kv_format == KV_BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  return _mm256_cvtph_ps(bits);
}
#endif

static inline float kv16_to_fp32(uint16_t h, int kv_format) {
  return kv_format == KV_BF16 ? bf16_to_fp32(h) : fp16_to_fp32(h);
}

/* dot and axpy against a cache row of fp32, or fp16 or bf16 (kv_format) widened as it is
 * read. */
static inline float dot_kv(const float* a, const void* row, int64_t n, int kv_format) {
  if (kv_format == KV_FP32) return dot(a, (const float*)row, n);
  const uint16_t* h = (const uint16_t*)row;
  int64_t i = 0;
  float s = 0.0f;
#ifdef HAVE_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8_kv16(h + i, kv_format), acc);
  s = hsum(acc);
#endif
  for (; i < n; ++i) s += a[i] * kv16_to_fp32(h[i], kv_format);
  return s;
}

static inline void axpy_kv(float* y, float a, const void* row, int64_t n, int kv_format) {
  if (kv_format == KV_FP32) {
    axpy(y, a, (const float*)row, n);
    return;
  }
  const uint16_t* h = (const uint16_t*)row;
  int64_t i = 0;
#ifdef HAVE_AVX2
  const __m256 av = _mm256_set1_ps(a);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, load8_kv16(h + i, kv_format), _mm256_loadu_ps(y + i)));
#endif
  for (; i < n; ++i) y[i] += a * kv16_to_fp32(h[i], kv_format);
}

#define KEY_CHUNK 128
#define MAX_GROUP 16
#define MAX_HEAD_DIM 512

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define HAVE_AVX512 1
/* exp(x) for the x <= 0 of a softmax (a score minus the running maximum), 16 lanes
 * (EXP_POLY), within 2 ulp of expf; 0 for -inf and below -87.3. */
static inline __m512 exp512(__m512 x) {
  const __m512 lowest = _mm512_set1_ps(EXP_LOWEST);
  const __mmask16 keep = _mm512_cmp_ps_mask(x, lowest, _CMP_GE_OQ);
  x = _mm512_max_ps(x, lowest);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_HI), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_LO), r);
  __m512 p = _mm512_set1_ps(EXP_POLY[0]);
  for (int c = 1; c < 6; ++c) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_POLY[c]));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_scalef_ps(keep, p, n);
}

/* Lane i of the result: the sum of the lanes of a[KEY_ORDER[i]] (a reduction tree of 45
 * instructions for 16 dot products, against 16 x 8 for one horizontal sum each). */
static const int KEY_ORDER[16] = {0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15};

static inline __m512 sum_lanes16(const __m512* a) {
  __m512 c[8], d[4], e[2];
  for (int i = 0; i < 8; ++i)
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[i], a[i + 8], 0x44),
                         _mm512_shuffle_f32x4(a[i], a[i + 8], 0xEE));
  for (int i = 0; i < 4; ++i)
    d[i] = _mm512_add_ps(_mm512_shuffle_f32x4(c[i], c[i + 4], 0x88),
                         _mm512_shuffle_f32x4(c[i], c[i + 4], 0xDD));
  for (int i = 0; i < 2; ++i)
    e[i] = _mm512_add_ps(_mm512_unpacklo_ps(d[i], d[i + 2]), _mm512_unpackhi_ps(d[i], d[i + 2]));
  return _mm512_add_ps(_mm512_shuffle_ps(e[0], e[1], 0x44), _mm512_shuffle_ps(e[0], e[1], 0xEE));
}

/* 16 values of a cache row from element e: fp32, or fp16 or bf16 widened; zeros where
 * `live` is clear (a masked key's row may hold NaN, and is not read). */
static inline __m512 load16_kv(const void* row, int64_t e, int kv_format, __mmask16 live) {
  if (kv_format == KV_FP32) return _mm512_maskz_loadu_ps(live, (const float*)row + e);
  const __m256i bits = _mm256_maskz_loadu_epi16(live, (const uint16_t*)row + e);
  if (kv_format == KV_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
  return _mm512_cvtph_ps(bits);
}

/* acc[0..nd) += sum over keys j of p[j] * v[j] (nd vectors of 16 per value row, rows
 * row_bytes apart), two keys at a time into separate sums (an FMA chain per accumulator
 * waits on its latency). A key whose p is 0 (masked) loads zeros instead of its row. */
static inline __attribute__((always_inline)) void value_sums(const float* p, int64_t nj,
                                                             const char* v, int64_t row_bytes,
                                                             int64_t nd, int kv_format,
                                                             __m512* acc) {
  __m512 odd[8];
  for (int t = 0; t < 8; ++t) odd[t] = _mm512_setzero_ps();
  const __m512 zero = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 2 <= nj; j += 2) {
    const __m512 p0 = _mm512_set1_ps(p[j]), p1 = _mm512_set1_ps(p[j + 1]);
    const __mmask16 live0 = _mm512_cmp_ps_mask(p0, zero, _CMP_NEQ_UQ);
    const __mmask16 live1 = _mm512_cmp_ps_mask(p1, zero, _CMP_NEQ_UQ);
    const char* v0 = v + j * row_bytes;
    const char* v1 = v0 + row_bytes;
    for (int64_t t = 0; t < nd; ++t) {
      acc[t] = _mm512_fmadd_ps(p0, load16_kv(v0, 16 * t, kv_format, live0), acc[t]);
      odd[t] = _mm512_fmadd_ps(p1, load16_kv(v1, 16 * t, kv_format, live1), odd[t]);
    }
  }
  if (j < nj) {
    const __m512 p0 = _mm512_set1_ps(p[j]);
    const __mmask16 live0 = _mm512_cmp_ps_mask(p0, zero, _CMP_NEQ_UQ);
    for (int64_t t = 0; t < nd; ++t)
      acc[t] = _mm512_fmadd_ps(p0, load16_kv(v + j * row_bytes, 16 * t, kv_format, live0), acc[t]);
  }
  for (int64_t t = 0; t < nd; ++t) acc[t] = _mm512_add_ps(acc[t], odd[t]);
}

/* The heads of one KV head (q and out: `group` rows of D, D a multiple of 16 up to 128)
 * against keys/values [0, len) at kb/vb, as the generic loop below computes it: scores 16
 * keys at a time, exp 16 at a time, the value sum in registers. */
static void attend_group_avx512(const float* q, int64_t group, int64_t D, const char* kb,
                                const char* vb, int64_t row_bytes, int64_t len,
                                const float* mb, float scale, int kv_format, float* out) {
  float scores[KEY_CHUNK] __attribute__((aligned(64)));
  const int64_t nd = D / 16;
  for (int64_t g = 0; g < group; ++g) {
    const float* qh = q + g * D;
    __m512 acc[8];
    for (int t = 0; t < 8; ++t) acc[t] = _mm512_setzero_ps();
    float run_max = -INFINITY, run_sum = 0.0f;
    for (int64_t j0 = 0; j0 < len; j0 += KEY_CHUNK) {
      const int64_t nj = len - j0 < KEY_CHUNK ? len - j0 : KEY_CHUNK;
      int64_t j = 0;
      for (; j + 16 <= nj; j += 16) {
        __m512 a[16];
        for (int i = 0; i < 16; ++i) a[i] = _mm512_setzero_ps();
        for (int64_t t = 0; t < nd; ++t) {
          const __m512 qv = _mm512_loadu_ps(qh + 16 * t);
          for (int i = 0; i < 16; ++i)
            a[i] = _mm512_fmadd_ps(
                qv, load16_kv(kb + (j0 + j + KEY_ORDER[i]) * row_bytes, 16 * t, kv_format, 0xFFFF),
                a[i]);
        }
        _mm512_store_ps(scores + j, _mm512_mul_ps(sum_lanes16(a), _mm512_set1_ps(scale)));
      }
      for (; j < nj; ++j) scores[j] = dot_kv(qh, kb + (j0 + j) * row_bytes, D, kv_format) * scale;
      float m = -INFINITY;
      for (j = 0; j < nj; ++j) {
        /* A masked key's score is dropped whatever it is: past a sequence's end the rows
         * hold whatever the slot held, NaN included; its value row is never read. */
        if (mb) scores[j] = mb[j0 + j] == -INFINITY ? -INFINITY : scores[j] + mb[j0 + j];
        if (scores[j] > m) m = scores[j];
      }
      if (m == -INFINITY) continue; /* every key of this chunk is masked */
      const float new_max = m > run_max ? m : run_max;
      const float correction = expf(run_max - new_max);
      run_sum *= correction;
      for (int t = 0; t < 8; ++t) acc[t] = _mm512_mul_ps(acc[t], _mm512_set1_ps(correction));
      __m512 sums = _mm512_setzero_ps();
      for (j = 0; j < nj; j += 16) {
        const __mmask16 live = nj - j >= 16 ? 0xFFFF : (__mmask16)((1u << (nj - j)) - 1);
        const __m512 s = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), live, scores + j);
        const __m512 p = exp512(_mm512_sub_ps(s, _mm512_set1_ps(new_max)));
        _mm512_mask_storeu_ps(scores + j, live, p);
        sums = _mm512_add_ps(sums, p);
      }
      run_sum += _mm512_reduce_add_ps(sums);
      /* head_dim 64: the loop specialized, its accumulators in registers */
      if (nd == 4 && kv_format == KV_FP16)
        value_sums(scores, nj, vb + j0 * row_bytes, row_bytes, 4, KV_FP16, acc);
      else if (nd == 4 && kv_format == KV_BF16)
        value_sums(scores, nj, vb + j0 * row_bytes, row_bytes, 4, KV_BF16, acc);
      else if (nd == 4)
        value_sums(scores, nj, vb + j0 * row_bytes, row_bytes, 4, KV_FP32, acc);
      else
        value_sums(scores, nj, vb + j0 * row_bytes, row_bytes, nd, kv_format, acc);
      run_max = new_max;
    }
    const __m512 inv = _mm512_set1_ps(run_sum > 0.0f ? 1.0f / run_sum : 0.0f);
    for (int64_t t = 0; t < nd; ++t) _mm512_storeu_ps(out + g * D + 16 * t, _mm512_mul_ps(acc[t], inv));
  }
}
#endif

void tritium_decode_attention(const float* q, int64_t q_row_stride, int64_t B, int64_t H,
                              int64_t KVH, int64_t D, const void* k, const void* v,
                              int64_t stride_b, int64_t stride_h, int64_t stride_t, int64_t lo,
                              int64_t n, const float* mask, float scale, int kv_format,
                              float* out) {
  /* q: B rows of H heads of D (row b at q + b * q_row_stride); k, v: [B, KVH, tokens, D]
   * with the given strides (in elements of kv_format: fp32, fp16 or bf16; D contiguous); each
   * sequence attends to keys [lo, n), adding mask[b, j - lo] ([B, n - lo]) when given.
   * out: [B, H * D]. Online softmax over chunks of keys, in fp32. Requires H / KVH <=
   * MAX_GROUP and D <= MAX_HEAD_DIM (the caller checks). */
  const int64_t group = H / KVH, len = n - lo, elt = kv_format == KV_FP32 ? 4 : 2;
#pragma omp parallel for schedule(static) collapse(2) if (B * H * len * D >= PARALLEL_WORK)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t kh = 0; kh < KVH; ++kh) {
      const char* kb = (const char*)k + (b * stride_b + kh * stride_h + lo * stride_t) * elt;
      const char* vb = (const char*)v + (b * stride_b + kh * stride_h + lo * stride_t) * elt;
      const int64_t row_bytes = stride_t * elt;
      const float* mb = mask ? mask + b * len : NULL;
#ifdef HAVE_AVX512
      if (D % 16 == 0 && D <= 128) {
        attend_group_avx512(q + b * q_row_stride + kh * group * D, group, D, kb, vb, row_bytes,
                            len, mb, scale, kv_format, out + b * H * D + kh * group * D);
        continue;
      }
#endif
      float acc[MAX_GROUP][MAX_HEAD_DIM];
      float run_max[MAX_GROUP], run_sum[MAX_GROUP], scores[KEY_CHUNK];
      for (int64_t g = 0; g < group; ++g) {
        run_max[g] = -INFINITY;
        run_sum[g] = 0.0f;
        memset(acc[g], 0, sizeof(float) * (size_t)D);
      }
      for (int64_t j0 = 0; j0 < len; j0 += KEY_CHUNK) {
        const int64_t nj = len - j0 < KEY_CHUNK ? len - j0 : KEY_CHUNK;
        for (int64_t g = 0; g < group; ++g) {
          const float* qh = q + b * q_row_stride + (kh * group + g) * D;
          float m = -INFINITY;
          for (int64_t j = 0; j < nj; ++j) {
            /* A masked key is never read: past a sequence's end the rows hold whatever the
             * slot held, and NaN there would survive an additive -inf. */
            if (mb && mb[j0 + j] == -INFINITY) {
              scores[j] = -INFINITY;
              continue;
            }
            float s = dot_kv(qh, kb + (j0 + j) * row_bytes, D, kv_format) * scale;
            if (mb) s += mb[j0 + j];
            scores[j] = s;
            if (s > m) m = s;
          }
          if (m == -INFINITY) continue; /* every key of this chunk is masked */
          const float new_max = m > run_max[g] ? m : run_max[g];
          const float correction = expf(run_max[g] - new_max);
          run_sum[g] *= correction;
          for (int64_t i = 0; i < D; ++i) acc[g][i] *= correction;
          for (int64_t j = 0; j < nj; ++j) {
            if (scores[j] == -INFINITY) continue; /* masked: its value row is not read */
            const float p = expf(scores[j] - new_max);
            run_sum[g] += p;
            axpy_kv(acc[g], p, vb + (j0 + j) * row_bytes, D, kv_format);
          }
          run_max[g] = new_max;
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        float* o = out + b * H * D + (kh * group + g) * D;
        const float inv = run_sum[g] > 0.0f ? 1.0f / run_sum[g] : 0.0f;
        for (int64_t i = 0; i < D; ++i) o[i] = acc[g][i] * inv;
      }
    }
  }
}

/* -- one whole decoder layer for a batch of decodes ------------------------------------ */

/* A compact linear layer: kind 1 = int8 (codes int8, scales fp32 per row), 2 = q4, 3 = bf16
 * and 4 = fp16 (codes the 16-bit weights, no scales), 5 = q8 (codes int8, fp16 scales per
 * block of 32), 6 = bf16 weights with the inputs rounded to bf16 (dtype bfloat16). */
typedef struct {
  int64_t kind, in_features, out_features;
  const void* codes;
  const void* scales;
  const float* bias;
} TritiumLinear;

/* A Llama-family decoder layer's weights and shapes (cpu_ops.py builds one per layer). */
typedef struct {
  TritiumLinear qkv, o, gate_up, down;
  const float* input_norm;
  const float* post_norm;
  const float* q_norm; /* Qwen3: per-head norms of q and k before RoPE; NULL otherwise */
  const float* k_norm;
  float eps, scale;
  int64_t hidden, heads, kv_heads, head_dim, intermediate;
} TritiumLayer;

static int run_linear(const TritiumLinear* l, const float* x, int64_t M, float* out, int threads) {
  const int64_t K = l->in_features, N = l->out_features;
  switch (l->kind) {
    case 1:
      return tritium_int8_linear(x, M, K, (const int8_t*)l->codes, (const float*)l->scales,
                                 l->bias, N, out, threads);
    case 2:
      return tritium_q4_linear(x, M, K, (const uint8_t*)l->codes, (const uint16_t*)l->scales,
                               l->bias, N, out, threads);
    case 3:
    case 6:
      return tritium_bf16_linear(x, M, K, (const uint16_t*)l->codes, l->bias, N, out, threads,
                                 l->kind == 6);
    case 5:
      return tritium_q8_linear(x, M, K, (const int8_t*)l->codes, (const uint16_t*)l->scales,
                               l->bias, N, out, threads);
    default:
      return tritium_fp16_linear(x, M, K, (const uint16_t*)l->codes, l->bias, N, out, threads);
  }
}

/* x [B, hidden]: the previous layer's output in, this layer's out; residual [B, hidden]: the
 * running sum (zeros before the first layer: adding +0 is exact). The same ops in the same
 * order as the layer's Python forward with the C ops, so the results are identical; one call
 * instead of ~40 Python-level operations. work: floats for h, qkv, attn and gate_up
 * (B * (hidden + qkv width + heads * head_dim + 3 * intermediate)). k/v pool, slots, dense
 * rows, strides, lo, n, mask and kv_format (KV_FP32, KV_FP16, KV_BF16) as for tritium_store_kv and
 * tritium_decode_attention. */
int tritium_decode_layer(const TritiumLayer* L, float* x, float* residual, int64_t B,
                         const float* cos, const float* sin, void* k_pool, void* v_pool,
                         const int64_t* slots, void* k_dense, void* v_dense,
                         const int64_t* rows, int64_t stride_b, int64_t stride_h,
                         int64_t stride_t, int64_t lo, int64_t n, const float* mask,
                         int kv_format, float* work, int threads) {
  const int64_t D = L->head_dim, qw = L->heads * D, kvw = L->kv_heads * D;
  const int64_t width = qw + 2 * kvw;
  float* h = work;
  float* qkv = h + B * L->hidden;
  float* attn = qkv + B * width;
  float* gate_up = attn + B * qw;
  float* act = gate_up + B * 2 * L->intermediate;
  tritium_add_rms_norm(x, residual, L->input_norm, B, L->hidden, L->eps, h);
  if (run_linear(&L->qkv, h, B, qkv, threads)) return -1;
  if (L->q_norm) {
    tritium_head_rms_norm(qkv, B, width, 0, L->heads, D, L->q_norm, L->eps);
    tritium_head_rms_norm(qkv, B, width, L->heads, L->kv_heads, D, L->k_norm, L->eps);
  }
  tritium_rope(qkv, B, width, L->heads + L->kv_heads, D, cos, sin);
  tritium_store_kv(qkv + qw, qkv + qw + kvw, B, width, kvw, k_pool, v_pool, slots, k_dense,
                   v_dense, rows, B, kv_format);
  tritium_decode_attention(qkv, width, B, L->heads, L->kv_heads, D, k_dense, v_dense, stride_b,
                           stride_h, stride_t, lo, n, mask, L->scale, kv_format, attn);
  if (run_linear(&L->o, attn, B, x, threads)) return -1;
  tritium_add_rms_norm(x, residual, L->post_norm, B, L->hidden, L->eps, h);
  if (run_linear(&L->gate_up, h, B, gate_up, threads)) return -1;
  tritium_silu_mul(gate_up, B, L->intermediate, act);
  return run_linear(&L->down, act, B, x, threads);
}
