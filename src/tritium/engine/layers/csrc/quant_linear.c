/* Weight-only quantized linear layers for CPU decode, called from quant_kernel.py:
 *
 *   tritium_int8_linear: int8 weights, one fp32 scale per output row.
 *   tritium_q4_linear:   4-bit codes in blocks of 32 with an fp16 scale d and minimum m per
 *                        block (w = d * q + m: llama.cpp's Q4_1 layout, so a Q4_1 GGUF's
 *                        weights are kept exactly); half the bytes of int8.
 *
 * out[M, N] = x[M, K] @ W^T + bias. Decode steps multiply a few rows by every weight of the
 * model, so they are bound by reading weights from memory. Each thread takes tiles of NR
 * weight rows. One input row (batch-1 decode) streams the tile straight into FMAs, with
 * explicit prefetch (on the 2-core VMs we measure on, the hardware prefetcher alone leaves
 * about a third of the bandwidth unused). Several rows widen the tile to fp32 once into an
 * L1-resident buffer and multiply it by the rows three at a time (12 independent FMA chains).
 * Activations stay fp32 (no activation quantization), so the result equals fp32 math on the
 * dequantized weights up to summation order.
 *
 * Built at run time with the system C compiler; the AVX2 path is used where the compiler
 * targets it (-mavx2 -mfma -mf16c), plain C loops elsewhere.
 */
#include <stdint.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define NR 4
#define PREFETCH_BYTES 2048

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

static inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo), s = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, s);
  s = _mm_add_ss(s, sh);
  return _mm_cvtss_f32(s);
}

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

/* Returns 0, or -1 when a scratch buffer cannot be allocated. */
int tritium_int8_linear(const float* x, int64_t M, int64_t K, const int8_t* w,
                        const float* scale, const float* bias, int64_t N, float* out,
                        int nthreads) {
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
#ifdef HAVE_GEMV
      if (M == 1) {
        gemv_tile(x, K, w + n0 * K, nr, scale + n0, bias ? bias + n0 : 0, out + n0);
        continue;
      }
#endif
      widen_tile(w + n0 * K, K, nr, wf);
      tile_rows(x, M, K, wf, nr, scale + n0, bias ? bias + n0 : 0, N, out + n0);
    }
    free(wf);
  }
  return failed ? -1 : 0;
}

#define QB 32 /* q4 values per block */

#ifdef HAVE_GEMV
/* The 32 codes of one block as four fp32 vectors (values 0-7, 8-15, 16-23, 24-31). */
static inline void q4_unpack(const uint8_t* p, __m256* q) {
  const __m128i bytes = _mm_loadu_si128((const __m128i*)p);
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(bytes, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  q[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
  q[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
  q[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
  q[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
}

/* out[j] = sum_b d_jb * (x_b . q_jb) + m_jb * sum(x_b), for the nr rows of one tile. */
static void q4_gemv_tile(const float* x, const float* xsum, int64_t K, const uint8_t* codes,
                         const uint16_t* dm, int nr, const float* bias, float* out) {
  const int64_t nb = K / QB;
  for (int j = 0; j < nr; ++j) {
    const uint8_t* row = codes + j * (K / 2);
    const uint16_t* rdm = dm + j * nb * 2;
    __m256 acc = _mm256_setzero_ps();
    float macc = 0.0f;
    for (int64_t b = 0; b < nb; ++b) {
      _mm_prefetch((const char*)(row + 16 * b + PREFETCH_BYTES / 2), _MM_HINT_T0);
      __m256 q[4];
      q4_unpack(row + 16 * b, q);
      const float* xb = x + b * QB;
      __m256 t = _mm256_mul_ps(_mm256_loadu_ps(xb), q[0]);
      t = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 8), q[1], t);
      t = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 16), q[2], t);
      t = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 24), q[3], t);
      acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(rdm[2 * b])), t, acc);
      macc += _cvtsh_ss(rdm[2 * b + 1]) * xsum[b];
    }
    out[j] = hsum(acc) + macc + (bias ? bias[j] : 0.0f);
  }
}

static void q4_widen_row(const uint8_t* row, const uint16_t* rdm, int64_t K, float* wf) {
  for (int64_t b = 0; b < K / QB; ++b) {
    __m256 q[4];
    q4_unpack(row + 16 * b, q);
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(rdm[2 * b]));
    const __m256 m = _mm256_set1_ps(_cvtsh_ss(rdm[2 * b + 1]));
    for (int i = 0; i < 4; ++i) _mm256_store_ps(wf + b * QB + 8 * i, _mm256_fmadd_ps(d, q[i], m));
  }
}

#else /* portable */

static inline float q4_half(uint16_t h) {
  const uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal: renormalize */
      int e = -1;
      uint32_t mm = man;
      do { ++e; mm <<= 1; } while (!(mm & 0x400));
      bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mm & 0x3FF) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
}

static void q4_widen_row(const uint8_t* row, const uint16_t* rdm, int64_t K, float* wf) {
  for (int64_t b = 0; b < K / QB; ++b) {
    const float d = q4_half(rdm[2 * b]), m = q4_half(rdm[2 * b + 1]);
    for (int i = 0; i < 16; ++i) {
      wf[b * QB + i] = d * (float)(row[16 * b + i] & 0x0F) + m;
      wf[b * QB + 16 + i] = d * (float)(row[16 * b + i] >> 4) + m;
    }
  }
}

#endif

/* Returns 0, or -1 when a scratch buffer cannot be allocated. K is a multiple of 32. */
int tritium_q4_linear(const float* x, int64_t M, int64_t K, const uint8_t* codes,
                      const uint16_t* dm, const float* bias, int64_t N, float* out,
                      int nthreads) {
  const int64_t nb = K / QB;
  static const float ones[NR] = {1.0f, 1.0f, 1.0f, 1.0f};
  int failed = 0;
  float* xsum = 0;
  if (M == 1) { /* the one-row path folds each block's minimum in through sum(x_b) */
    xsum = (float*)malloc(sizeof(float) * (nb ? nb : 1));
    if (!xsum) return -1;
    for (int64_t b = 0; b < nb; ++b) {
      float s = 0.0f;
      for (int i = 0; i < QB; ++i) s += x[b * QB + i];
      xsum[b] = s;
    }
  }
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
      const uint8_t* c = codes + n0 * (K / 2);
      const uint16_t* d = dm + n0 * nb * 2;
#ifdef HAVE_GEMV
      if (M == 1) {
        q4_gemv_tile(x, xsum, K, c, d, nr, bias ? bias + n0 : 0, out + n0);
        continue;
      }
#endif
      for (int j = 0; j < NR; ++j) {
        if (j < nr) {
          q4_widen_row(c + j * (K / 2), d + j * nb * 2, K, wf + j * K);
        } else {
          for (int64_t k = 0; k < K; ++k) wf[j * K + k] = 0.0f;
        }
      }
      tile_rows(x, M, K, wf, nr, ones, bias ? bias + n0 : 0, N, out + n0);
    }
    free(wf);
  }
  free(xsum);
  return failed ? -1 : 0;
}
