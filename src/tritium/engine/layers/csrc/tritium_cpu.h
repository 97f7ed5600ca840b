/* What the C sources of Tritium's CPU library share: the horizontal sum of an AVX vector,
 * the unpacking of q4 codes, the compact-weight matmuls (quant_linear.c), which the fused
 * decode layer (cpu_ops.c) calls, and their AMX versions (amx_linear.c). */
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

/* The 32 4-bit codes of one q4 block as bytes in value order (0-15 from the low nibbles). */
static inline __m256i q4_bytes(const uint8_t* p) {
  const __m128i bytes = _mm_loadu_si128((const __m128i*)p);
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(bytes, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  return _mm256_set_m128i(hi, lo);
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

/* Several-row matmuls on AMX (amx_linear.c); tritium_amx_enabled() says whether they run
 * here. kind_int8: int8 weights with per-row scales, else bf16 weights (scale NULL). */
int tritium_amx_enabled(void);
int tritium_set_amx(int enable);
int tritium_amx_q4_linear(const float* x, int64_t M, int64_t K, const uint8_t* codes,
                          const uint16_t* dm, const float* bias, int64_t N, float* out,
                          int nthreads);
/* One input row to 8 bits per block of 32 (scales d, sums s = d * sum(q)), and back to fp32
 * into xf when given: the q4 kernels' inputs (quant_linear.c). */
void tritium_quantize_row_q8(const float* x, int64_t K, int8_t* q, float* d, float* s, float* xf);
int tritium_amx_linear(int kind_int8, const float* x, int64_t M, int64_t K, const void* w,
                       const float* scale, const float* bias, int64_t N, float* out,
                       int nthreads);

#endif
