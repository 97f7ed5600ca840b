/* Linear layers with compact weights for CPU decode, called from quant_kernel.py:
 *
 *   tritium_int8_linear: int8 weights, one fp32 scale per output row.
 *   tritium_bf16_linear, tritium_fp16_linear: 16-bit float weights as the checkpoint stores
 *                        them, widened to fp32 in registers (exact), fp32 math.
 *   tritium_q4_linear:   4-bit codes in blocks of 32 with an fp16 scale d and minimum m per
 *                        block (w = d * q + m: llama.cpp's Q4_1 layout, so a Q4_1 GGUF's
 *                        weights are kept exactly); half the bytes of int8. Its input rows
 *                        are quantized to 8 bits per block of 32, as llama.cpp does.
 *   tritium_q8_linear:   8-bit codes in blocks of 32 with an fp16 scale d per block (w = d * q:
 *                        llama.cpp's Q8_0 layout, so a Q8_0 GGUF's weights are kept
 *                        exactly), inputs quantized as for q4: llama.cpp's Q8_0 x Q8_0.
 *
 * out[M, N] = x[M, K] @ W^T + bias. Decode steps multiply a few rows by every weight of the
 * model, so they are bound by reading weights from memory.
 *
 * int8 keeps activations fp32: the result equals fp32 math on the dequantized weights up to
 * summation order. Each thread takes tiles of NR weight rows. One input row (batch-1
 * decode) streams the tile straight into FMAs, with explicit prefetch (on the 2-core VMs we
 * measure on, the hardware prefetcher alone leaves about a third of the bandwidth unused).
 * Several rows widen the tile to fp32 once into an L1-resident buffer and multiply it by
 * the rows three at a time (12 independent FMA chains).
 *
 * Built at run time with the system C compiler; the AVX2 path is used where the compiler
 * targets it (-mavx2 -mfma -mf16c), plain C loops elsewhere.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "tritium_cpu.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define NR 4
#define PREFETCH_BYTES 2048

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

/* K is a multiple of 8 here (checked by the caller). */
static void widen_tile(const int8_t* w, int64_t K, int nr, float* wf) {
  for (int j = 0; j < NR; ++j)
    for (int64_t k = 0; k < K; k += 8) {
      if (j < nr && (k & 63) == 0)
        _mm_prefetch((const char*)(w + j * K + k + PREFETCH_BYTES), _MM_HINT_T0);
      __m256 v = j < nr ? _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                              _mm_loadl_epi64((const __m128i*)(w + j * K + k))))
                        : _mm256_setzero_ps();
      _mm256_store_ps(wf + j * K + k, v);
    }
}

/* One input row: each weight is used once, so convert and multiply straight from memory. */
static void gemv_tile(const float* x, int64_t K, const int8_t* w, int nr, const float* scale,
                      const float* bias, float* out) {
  __m256 a[NR], b[NR];  /* two accumulators per row: 8 independent FMA chains */
  for (int j = 0; j < NR; ++j) a[j] = b[j] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
    for (int j = 0; j < nr; ++j) {
      const int8_t* p = w + j * K + k;
      _mm_prefetch((const char*)(p + PREFETCH_BYTES), _MM_HINT_T0);
      const __m128i q = _mm_loadu_si128((const __m128i*)p);
      a[j] = _mm256_fmadd_ps(x0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), a[j]);
      b[j] = _mm256_fmadd_ps(
          x1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8))), b[j]);
    }
  }
  for (; k < K; k += 8) {
    const __m256 x0 = _mm256_loadu_ps(x + k);
    for (int j = 0; j < nr; ++j)
      a[j] = _mm256_fmadd_ps(x0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                     _mm_loadl_epi64((const __m128i*)(w + j * K + k)))),
                             a[j]);
  }
  for (int j = 0; j < nr; ++j)
    out[j] = hsum(_mm256_add_ps(a[j], b[j])) * scale[j] + (bias ? bias[j] : 0.0f);
}

static void tile_rows(const float* x, int64_t M, int64_t K, const float* wf, int nr,
                      const float* scale, const float* bias, int64_t N, float* out) {
  int64_t m = 0;
  for (; m + 3 <= M; m += 3) {
    __m256 a0[NR], a1[NR], a2[NR];
    for (int j = 0; j < NR; ++j) a0[j] = a1[j] = a2[j] = _mm256_setzero_ps();
    const float* x0 = x + m * K;
    const float* x1 = x0 + K;
    const float* x2 = x1 + K;
    for (int64_t k = 0; k < K; k += 8) {
      const __m256 v0 = _mm256_loadu_ps(x0 + k), v1 = _mm256_loadu_ps(x1 + k),
                   v2 = _mm256_loadu_ps(x2 + k);
      for (int j = 0; j < NR; ++j) {
        const __m256 wv = _mm256_load_ps(wf + j * K + k);
        a0[j] = _mm256_fmadd_ps(v0, wv, a0[j]);
        a1[j] = _mm256_fmadd_ps(v1, wv, a1[j]);
        a2[j] = _mm256_fmadd_ps(v2, wv, a2[j]);
      }
    }
    for (int j = 0; j < nr; ++j) {
      const float b = bias ? bias[j] : 0.0f;
      out[m * N + j] = hsum(a0[j]) * scale[j] + b;
      out[(m + 1) * N + j] = hsum(a1[j]) * scale[j] + b;
      out[(m + 2) * N + j] = hsum(a2[j]) * scale[j] + b;
    }
  }
  for (; m + 2 <= M; m += 2) {
    __m256 a0[NR], a1[NR];
    for (int j = 0; j < NR; ++j) a0[j] = a1[j] = _mm256_setzero_ps();
    const float* x0 = x + m * K;
    const float* x1 = x0 + K;
    for (int64_t k = 0; k < K; k += 8) {
      const __m256 v0 = _mm256_loadu_ps(x0 + k), v1 = _mm256_loadu_ps(x1 + k);
      for (int j = 0; j < NR; ++j) {
        const __m256 wv = _mm256_load_ps(wf + j * K + k);
        a0[j] = _mm256_fmadd_ps(v0, wv, a0[j]);
        a1[j] = _mm256_fmadd_ps(v1, wv, a1[j]);
      }
    }
    for (int j = 0; j < nr; ++j) {
      const float b = bias ? bias[j] : 0.0f;
      out[m * N + j] = hsum(a0[j]) * scale[j] + b;
      out[(m + 1) * N + j] = hsum(a1[j]) * scale[j] + b;
    }
  }
  for (; m < M; ++m) {
    __m256 a0[NR];
    for (int j = 0; j < NR; ++j) a0[j] = _mm256_setzero_ps();
    const float* x0 = x + m * K;
    for (int64_t k = 0; k < K; k += 8) {
      const __m256 v0 = _mm256_loadu_ps(x0 + k);
      for (int j = 0; j < NR; ++j)
        a0[j] = _mm256_fmadd_ps(v0, _mm256_load_ps(wf + j * K + k), a0[j]);
    }
    for (int j = 0; j < nr; ++j) out[m * N + j] = hsum(a0[j]) * scale[j] + (bias ? bias[j] : 0.0f);
  }
}

#define HAVE_GEMV 1

#else /* portable: the compiler vectorizes these loops where it can */

static void widen_tile(const int8_t* w, int64_t K, int nr, float* wf) {
  for (int j = 0; j < NR; ++j)
    for (int64_t k = 0; k < K; ++k) wf[j * K + k] = j < nr ? (float)w[j * K + k] : 0.0f;
}

static void tile_rows(const float* x, int64_t M, int64_t K, const float* wf, int nr,
                      const float* scale, const float* bias, int64_t N, float* out) {
  for (int64_t m = 0; m < M; ++m)
    for (int j = 0; j < nr; ++j) {
      const float* xr = x + m * K;
      const float* wr = wf + j * K;
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) acc += xr[k] * wr[k];
      out[m * N + j] = acc * scale[j] + (bias ? bias[j] : 0.0f);
    }
}

#endif

/* -- 16-bit float weights (bf16, fp16) ------------------------------------------------- */

/* Kept as stored in the checkpoint and widened to fp32 in registers: fp32 math on exactly
 * the checkpoint's values (widening is exact) at half the bytes of fp32 weights. */

#ifdef HAVE_GEMV
/* 8 weights to fp32. bf16 is the top half of an fp32; fp16 goes through F16C. */
static inline __attribute__((always_inline)) __m256 load8_half(const uint16_t* p, int bf16) {
  const __m128i h = _mm_loadu_si128((const __m128i*)p);
  return bf16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
              : _mm256_cvtph_ps(h);
}

/* K is a multiple of 8 here (checked by the caller). */
static inline __attribute__((always_inline)) void widen_tile_half(const uint16_t* w, int64_t K,
                                                                  int nr, float* wf, int bf16) {
  for (int j = 0; j < NR; ++j)
    for (int64_t k = 0; k < K; k += 8) {
      if (j < nr && (k & 31) == 0)
        _mm_prefetch((const char*)(w + j * K + k) + PREFETCH_BYTES, _MM_HINT_T0);
      _mm256_store_ps(wf + j * K + k, j < nr ? load8_half(w + j * K + k, bf16) : _mm256_setzero_ps());
    }
}

/* One input row, straight from memory, as the int8 gemv_tile. */
static inline __attribute__((always_inline)) void gemv_tile_half(const float* x, int64_t K,
                                                                 const uint16_t* w, int nr,
                                                                 const float* bias, float* out,
                                                                 int bf16) {
  __m256 a[NR], b[NR];
  for (int j = 0; j < NR; ++j) a[j] = b[j] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
    for (int j = 0; j < nr; ++j) {
      const uint16_t* p = w + j * K + k;
      _mm_prefetch((const char*)p + PREFETCH_BYTES, _MM_HINT_T0);
      a[j] = _mm256_fmadd_ps(x0, load8_half(p, bf16), a[j]);
      b[j] = _mm256_fmadd_ps(x1, load8_half(p + 8, bf16), b[j]);
    }
  }
  for (; k < K; k += 8) {
    const __m256 x0 = _mm256_loadu_ps(x + k);
    for (int j = 0; j < nr; ++j) a[j] = _mm256_fmadd_ps(x0, load8_half(w + j * K + k, bf16), a[j]);
  }
  for (int j = 0; j < nr; ++j) out[j] = hsum(_mm256_add_ps(a[j], b[j])) + (bias ? bias[j] : 0.0f);
}
#else
static void widen_tile_half(const uint16_t* w, int64_t K, int nr, float* wf, int bf16) {
  for (int j = 0; j < NR; ++j)
    for (int64_t k = 0; k < K; ++k) {
      float f = 0.0f;
      if (j < nr && bf16) {
        const uint32_t bits = (uint32_t)w[j * K + k] << 16;
        __builtin_memcpy(&f, &bits, sizeof f);
      } else if (j < nr) {
        f = fp16_to_fp32(w[j * K + k]);
      }
      wf[j * K + k] = f;
    }
}
#endif

enum { W_INT8 = 1, W_BF16 = 3, W_FP16 = 4 }; /* cpu_ops.c's TritiumLinear kinds */

/* x rounded to bf16 (to nearest even), as floats: bf16 x bf16 products are exact in fp32,
 * so the fp32 kernels then compute a bf16 matmul. */
static void round_to_bf16(const float* x, int64_t n, float* out) {
  int64_t i = 0;
#ifdef HAVE_GEMV
  const __m256i half = _mm256_set1_epi32(0x7FFF), one = _mm256_set1_epi32(1);
  const __m256i top = _mm256_set1_epi32((int)0xFFFF0000u);
  for (; i + 8 <= n; i += 8) {
    const __m256i u = _mm256_castps_si256(_mm256_loadu_ps(x + i));
    const __m256i even = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
    const __m256i r = _mm256_and_si256(_mm256_add_epi32(u, _mm256_add_epi32(half, even)), top);
    _mm256_storeu_ps(out + i, _mm256_castsi256_ps(r));
  }
#endif
  for (; i < n; ++i) out[i] = bf16_to_fp32(fp32_to_bf16(x[i]));
}

/* The tile loop of the int8 and 16-bit formats: each thread takes tiles of NR weight rows;
 * one input row runs the format's gemv, several rows widen the tile to fp32 once in L1.
 * scale: int8's per output row; NULL for 16-bit weights. bf16_inputs: round the inputs to
 * bf16 first (tritium_bf16_linear). Returns 0, or -1 when a scratch buffer cannot be
 * allocated. */
static int tiled_linear(int kind, const float* x, int64_t M, int64_t K, const void* w,
                        const float* scale, const float* bias, int64_t N, float* out,
                        int nthreads, int bf16_inputs) {
  static const float ones[NR] = {1.0f, 1.0f, 1.0f, 1.0f};
  const int64_t elt = kind == W_INT8 ? 1 : 2;
  if (M > 1 && kind != W_FP16 && tritium_amx_enabled()) /* a rounded input is its own part */
    return tritium_amx_linear(kind == W_INT8, bf16_inputs ? 1 : 3, x, M, K, w, scale, bias, N,
                              out, nthreads);
  float* rounded = NULL;
  if (bf16_inputs) {
    rounded = (float*)malloc(sizeof(float) * (size_t)(M * K));
    if (!rounded) return -1;
    round_to_bf16(x, M * K, rounded);
    x = rounded;
  }
  int failed = 0;
#ifdef _OPENMP
  omp_set_num_threads(nthreads);
#pragma omp parallel
#endif
  {
    float* wf = (float*)aligned_alloc(64, sizeof(float) * NR * ((K + 15) / 16) * 16);
    if (!wf) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
      failed = 1;
    }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (int64_t n0 = 0; n0 < N; n0 += NR) {
      if (!wf) continue;
      const int nr = N - n0 < NR ? (int)(N - n0) : NR;
      const void* tile = (const char*)w + n0 * K * elt;
      const float* b = bias ? bias + n0 : 0;
#ifdef HAVE_GEMV
      if (M == 1 && kind == W_INT8) {
        gemv_tile(x, K, (const int8_t*)tile, nr, scale + n0, b, out + n0);
        continue;
      }
      if (M == 1) {
        if (kind == W_BF16)
          gemv_tile_half(x, K, (const uint16_t*)tile, nr, b, out + n0, 1);
        else
          gemv_tile_half(x, K, (const uint16_t*)tile, nr, b, out + n0, 0);
        continue;
      }
#endif
      if (kind == W_INT8)
        widen_tile((const int8_t*)tile, K, nr, wf);
      else if (kind == W_BF16)
        widen_tile_half((const uint16_t*)tile, K, nr, wf, 1);
      else
        widen_tile_half((const uint16_t*)tile, K, nr, wf, 0);
      tile_rows(x, M, K, wf, nr, scale ? scale + n0 : ones, b, N, out + n0);
    }
    free(wf);
  }
  free(rounded);
  return failed ? -1 : 0;
}

/* Returns 0, or -1 when a scratch buffer cannot be allocated. */
int tritium_int8_linear(const float* x, int64_t M, int64_t K, const int8_t* w,
                        const float* scale, const float* bias, int64_t N, float* out,
                        int nthreads) {
  return tiled_linear(W_INT8, x, M, K, w, scale, bias, N, out, nthreads, 0);
}

int tritium_bf16_linear(const float* x, int64_t M, int64_t K, const uint16_t* w,
                        const float* bias, int64_t N, float* out, int nthreads, int bf16_inputs) {
  return tiled_linear(W_BF16, x, M, K, w, 0, bias, N, out, nthreads, bf16_inputs);
}

int tritium_fp16_linear(const float* x, int64_t M, int64_t K, const uint16_t* w,
                        const float* bias, int64_t N, float* out, int nthreads) {
  return tiled_linear(W_FP16, x, M, K, w, 0, bias, N, out, nthreads, 0);
}

#define QB 32 /* q4 values per block */

/* The 4-bit path quantizes each input row to 8 bits in blocks of 32 as it starts (llama.cpp's
 * Q8_1: a scale d_x and s_x = d_x * sum(q_x) per block), so a block's dot product is integer
 * work: d_w * d_x * (q_w . q_x) + m_w * s_x. Widening 4-bit codes to fp32 costs more than
 * reading them from memory; bytes times bytes do 32 multiply-adds in two instructions. The
 * per-row arithmetic does not depend on M, so a row's result is the same alone or batched. */

#ifdef HAVE_GEMV
/* The same arithmetic, 8 lanes at a time (the rounding is round-half-even in both); also
 * writes the rounded row back as fp32 (d * q) when xf is given, for the several-row path. */
void tritium_quantize_row_q8(const float* x, int64_t K, int8_t* q, float* d, float* s,
                             float* xf) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < K / QB; ++b) {
    const float* xb = x + b * QB;
    __m256 v[4], amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(xb + 8 * i);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float db = _mm_cvtss_f32(m4) / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
    const __m256 vid = _mm256_set1_ps(id), vdb = _mm256_set1_ps(db);
    __m256i sum = _mm256_setzero_si256();
    for (int i = 0; i < 4; ++i) {
      const __m256 r = _mm256_round_ps(_mm256_mul_ps(v[i], vid),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m256i qi = _mm256_cvtps_epi32(r);
      sum = _mm256_add_epi32(sum, qi);
      const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
      _mm_storel_epi64((__m128i*)(q + b * QB + 8 * i), _mm_packs_epi16(q16, q16));
      if (xf) _mm256_storeu_ps(xf + b * QB + 8 * i, _mm256_mul_ps(vdb, r));
    }
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    d[b] = db;
    s[b] = db * (float)_mm_cvtsi128_si32(s4);
  }
}
#else
void tritium_quantize_row_q8(const float* x, int64_t K, int8_t* q, float* d, float* s,
                             float* xf) {
  for (int64_t b = 0; b < K / QB; ++b) {
    const float* xb = x + b * QB;
    float amax = 0.0f;
    for (int i = 0; i < QB; ++i) {
      const float a = xb[i] < 0 ? -xb[i] : xb[i];
      amax = a > amax ? a : amax;
    }
    const float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
    int sum = 0;
    for (int i = 0; i < QB; ++i) {
      const int v = (int)nearbyintf(xb[i] * id); /* round half to even, as torch.round */
      q[b * QB + i] = (int8_t)v;
      sum += v;
    }
    d[b] = db;
    s[b] = db * (float)sum;
    if (xf)
      for (int i = 0; i < QB; ++i) xf[b * QB + i] = db * (float)q[b * QB + i];
  }
}
#endif

#ifdef HAVE_GEMV
/* One weight row against one quantized input row, straight from memory with prefetch; two
 * FMA chains (even and odd blocks), as one would wait on the FMA latency. */
static float q4q8_row(const uint8_t* row, const uint16_t* rdm, int64_t nb, const int8_t* xq,
                      const float* xd, const float* xs) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  float macc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    _mm_prefetch((const char*)(row + 16 * b + PREFETCH_BYTES / 2), _MM_HINT_T0);
    const __m256i w = q4_bytes(row + 16 * b);
    const __m256i x = _mm256_loadu_si256((const __m256i*)(xq + QB * b));
    /* codes are 0-15, so u8 x s8 pairs fit int16 without saturating */
    const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones);
    acc[b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot),
                                 _mm256_set1_ps(_cvtsh_ss(rdm[2 * b]) * xd[b]), acc[b & 1]);
    macc += _cvtsh_ss(rdm[2 * b + 1]) * xs[b];
  }
  return hsum(_mm256_add_ps(acc[0], acc[1])) + macc;
}

static void q4_widen_row(const uint8_t* row, const uint16_t* rdm, int64_t K, float* wf) {
  for (int64_t b = 0; b < K / QB; ++b) {
    const __m256i w = q4_bytes(row + 16 * b);
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(rdm[2 * b]));
    const __m256 m = _mm256_set1_ps(_cvtsh_ss(rdm[2 * b + 1]));
    for (int i = 0; i < 4; ++i) {
      const __m128i part = i < 2 ? _mm256_castsi256_si128(w) : _mm256_extracti128_si256(w, 1);
      const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(i & 1 ? _mm_srli_si128(part, 8) : part));
      _mm256_store_ps(wf + b * QB + 8 * i, _mm256_fmadd_ps(d, q, m));
    }
  }
}

/* q8 weights (signed) against q8 inputs: |w| times x with w's sign (maddubs takes unsigned
 * times signed), as llama.cpp does; |w| <= 128, so the pairs fit int16. */
static float q8q8_row(const int8_t* row, const uint16_t* rd, int64_t nb, const int8_t* xq,
                      const float* xd) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t b = 0; b < nb; ++b) {
    _mm_prefetch((const char*)(row + QB * b + PREFETCH_BYTES), _MM_HINT_T0);
    const __m256i w = _mm256_loadu_si256((const __m256i*)(row + QB * b));
    const __m256i x = _mm256_loadu_si256((const __m256i*)(xq + QB * b));
    const __m256i prod = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    const __m256i dot = _mm256_madd_epi16(prod, ones);
    acc[b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(_cvtsh_ss(rd[b]) * xd[b]),
                                 acc[b & 1]);
  }
  return hsum(_mm256_add_ps(acc[0], acc[1]));
}

static void q8_widen_row(const int8_t* row, const uint16_t* rd, int64_t K, float* wf) {
  for (int64_t b = 0; b < K / QB; ++b) {
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(rd[b]));
    for (int i = 0; i < 4; ++i) {
      const __m128i q = _mm_loadl_epi64((const __m128i*)(row + b * QB + 8 * i));
      _mm256_store_ps(wf + b * QB + 8 * i, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
    }
  }
}

#else /* portable */

static float q8q8_row(const int8_t* row, const uint16_t* rd, int64_t nb, const int8_t* xq,
                      const float* xd) {
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int dot = 0;
    for (int i = 0; i < QB; ++i) dot += row[QB * b + i] * xq[QB * b + i];
    acc += (float)dot * (fp16_to_fp32(rd[b]) * xd[b]);
  }
  return acc;
}

static void q8_widen_row(const int8_t* row, const uint16_t* rd, int64_t K, float* wf) {
  for (int64_t b = 0; b < K / QB; ++b) {
    const float d = fp16_to_fp32(rd[b]);
    for (int i = 0; i < QB; ++i) wf[b * QB + i] = d * (float)row[b * QB + i];
  }
}

static float q4q8_row(const uint8_t* row, const uint16_t* rdm, int64_t nb, const int8_t* xq,
                      const float* xd, const float* xs) {
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int dot = 0;
    for (int i = 0; i < 16; ++i)
      dot += (row[16 * b + i] & 0x0F) * xq[QB * b + i] + (row[16 * b + i] >> 4) * xq[QB * b + 16 + i];
    acc += (float)dot * (fp16_to_fp32(rdm[2 * b]) * xd[b]) + fp16_to_fp32(rdm[2 * b + 1]) * xs[b];
  }
  return acc;
}

static void q4_widen_row(const uint8_t* row, const uint16_t* rdm, int64_t K, float* wf) {
  for (int64_t b = 0; b < K / QB; ++b) {
    const float d = fp16_to_fp32(rdm[2 * b]), m = fp16_to_fp32(rdm[2 * b + 1]);
    for (int i = 0; i < 16; ++i) {
      wf[b * QB + i] = d * (float)(row[16 * b + i] & 0x0F) + m;
      wf[b * QB + 16 + i] = d * (float)(row[16 * b + i] >> 4) + m;
    }
  }
}

#endif

/* The block formats (q4, q8) for every row count. Returns 0, or -1 when a scratch buffer
 * cannot be allocated. K is a multiple of 32. One input row runs the integer dot products.
 * Several rows take the same quantized inputs back to fp32 (d_x * q_x) and multiply them by
 * the weight tile widened once to fp32 in L1, as the int8 path does: the same products,
 * rounded in a different order, at a quarter of the instructions per multiply-add once a
 * tile serves a few rows. q8: codes int8 [N, K], scales [N, K / 32]; q4: codes [N, K / 2],
 * (d, m) pairs [N, K / 32, 2]. */
static int block_linear(int q8, const float* x, int64_t M, int64_t K, const void* codes,
                        const uint16_t* dm, const float* bias, int64_t N, float* out,
                        int nthreads) {
  static const float ones[NR] = {1.0f, 1.0f, 1.0f, 1.0f};
  const int64_t nb = K / QB, row_bytes = q8 ? K : K / 2, row_scales = q8 ? nb : 2 * nb;
  if (M > 1 && tritium_amx_enabled())
    return tritium_amx_block_linear(q8, x, M, K, codes, dm, bias, N, out, nthreads);
  int8_t* xq = (int8_t*)malloc((size_t)(M * K) + 64);
  float* xd = (float*)malloc(sizeof(float) * (size_t)(M * nb + 1));
  float* xs = (float*)malloc(sizeof(float) * (size_t)(M * nb + 1));
  float* xf = M > 1 ? (float*)malloc(sizeof(float) * (size_t)(M * K)) : 0;
  if (!xq || !xd || !xs || (M > 1 && !xf)) {
    free(xq), free(xd), free(xs), free(xf);
    return -1;
  }
  for (int64_t m = 0; m < M; ++m)
    tritium_quantize_row_q8(x + m * K, K, xq + m * K, xd + m * nb, xs + m * nb,
                            xf ? xf + m * K : 0);
  int failed = 0;
#ifdef _OPENMP
  omp_set_num_threads(nthreads);
#pragma omp parallel
#endif
  {
    float* wf = xf ? (float*)aligned_alloc(64, sizeof(float) * NR * ((K + 15) / 16) * 16) : 0;
    if (xf && !wf) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
      failed = 1;
    }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (int64_t n0 = 0; n0 < N; n0 += NR) {
      const int nr = N - n0 < NR ? (int)(N - n0) : NR;
      const uint8_t* c = (const uint8_t*)codes + n0 * row_bytes;
      const uint16_t* d = dm + n0 * row_scales;
      if (M == 1) {
        for (int j = 0; j < nr; ++j) {
          const float dot =
              q8 ? q8q8_row((const int8_t*)c + j * row_bytes, d + j * row_scales, nb, xq, xd)
                 : q4q8_row(c + j * row_bytes, d + j * row_scales, nb, xq, xd, xs);
          out[n0 + j] = dot + (bias ? bias[n0 + j] : 0.0f);
        }
        continue;
      }
      if (!wf) continue;
      for (int j = 0; j < NR; ++j) {
        if (j >= nr) {
          for (int64_t k = 0; k < K; ++k) wf[j * K + k] = 0.0f;
        } else if (q8) {
          q8_widen_row((const int8_t*)c + j * row_bytes, d + j * row_scales, K, wf + j * K);
        } else {
          q4_widen_row(c + j * row_bytes, d + j * row_scales, K, wf + j * K);
        }
      }
      tile_rows(xf, M, K, wf, nr, ones, bias ? bias + n0 : 0, N, out + n0);
    }
    free(wf);
  }
  free(xq), free(xd), free(xs), free(xf);
  return failed ? -1 : 0;
}

int tritium_q4_linear(const float* x, int64_t M, int64_t K, const uint8_t* codes,
                      const uint16_t* dm, const float* bias, int64_t N, float* out,
                      int nthreads) {
  return block_linear(0, x, M, K, codes, dm, bias, N, out, nthreads);
}

int tritium_q8_linear(const float* x, int64_t M, int64_t K, const int8_t* codes,
                      const uint16_t* d, const float* bias, int64_t N, float* out,
                      int nthreads) {
  return block_linear(1, x, M, K, codes, d, bias, N, out, nthreads);
}
