/* What the C sources of Tritium's CPU library share: the horizontal sum of an AVX vector
 * and the compact-weight matmuls (quant_linear.c), which the fused decode layer (cpu_ops.c)
 * calls. */
#ifndef TRITIUM_CPU_H
#define TRITIUM_CPU_H

#include <stdint.h>

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
#endif

/* out[M, N] = x[M, K] @ W^T + bias; 0, or -1 when a scratch buffer cannot be allocated. */
int tritium_int8_linear(const float* x, int64_t M, int64_t K, const int8_t* w,
                        const float* scale, const float* bias, int64_t N, float* out,
                        int nthreads);
int tritium_q4_linear(const float* x, int64_t M, int64_t K, const uint8_t* codes,
                      const uint16_t* dm, const float* bias, int64_t N, float* out,
                      int nthreads);
int tritium_bf16_linear(const float* x, int64_t M, int64_t K, const uint16_t* w,
                        const float* bias, int64_t N, float* out, int nthreads);
int tritium_fp16_linear(const float* x, int64_t M, int64_t K, const uint16_t* w,
                        const float* bias, int64_t N, float* out, int nthreads);

#endif
