/* Weight-only int8 linear for CPU decode: out[M, N] = x[M, K] @ (w[N, K] * scale[N])^T + bias.
 *
 * Decode steps multiply a few rows by every weight of the model, so they are bound by reading
 * weights from memory; int8 weights are a quarter of fp32's bytes. Each thread takes tiles of
 * NR weight rows. One input row (batch-1 decode) streams the tile straight into FMAs, with
 * explicit prefetch (on the 2-core VMs we measure on, the hardware prefetcher alone leaves
 * about a third of the bandwidth unused). Several rows widen the tile to fp32 once into an
 * L1-resident buffer and multiply it by the rows three at a time (12 independent FMA chains).
 * Activations stay fp32 (no activation quantization), so the result equals fp32 math on the
 * dequantized weights up to summation order.
 *
 * Built at run time by tritium.engine.layers.int8_kernel with the system C compiler; the AVX2
 * path is used where the compiler targets it, a plain C loop (auto-vectorized) elsewhere.
 */
#include <stdint.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define NR 4
#define PREFETCH_BYTES 2048

#if defined(__AVX2__) && defined(__FMA__)
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
