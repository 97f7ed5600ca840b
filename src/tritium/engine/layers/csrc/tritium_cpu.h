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

/* IEEE half <-> float, one value (the paths without F16C; round to nearest even). */
static inline float fp16_to_fp32(uint16_t h) {
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

static inline uint16_t fp32_to_fp16(float f) {
  uint32_t x;
  __builtin_memcpy(&x, &f, sizeof x);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
  x &= 0x7FFFFFFFu;
  if (x >= 0x7F800000u) return sign | 0x7C00 | (x > 0x7F800000u ? 0x200 : 0); /* inf, NaN */
  if (x >= 0x477FF000u) return sign | 0x7C00;                                   /* overflow */
  if (x < 0x38800000u) { /* below 2^-14: a subnormal half (or zero) */
    if (x < 0x33000000u) return sign;
    const uint32_t e = x >> 23, m = (x & 0x7FFFFFu) | 0x800000u, shift = 126 - e;
    uint32_t k = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (k & 1))) ++k;
    return sign | (uint16_t)k;
  }
  uint32_t hbits = (x >> 13) - (112u << 10);
  const uint32_t rem = x & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (hbits & 1))) ++hbits;
  return sign | (uint16_t)hbits;
}

/* bf16 <-> float, one value: widening is exact (the top half of the float's bits);
 * narrowing rounds to nearest even, as torch's .to(torch.bfloat16) does (NaN stays NaN). */
static inline float bf16_to_fp32(uint16_t h) {
  const uint32_t bits = (uint32_t)h << 16;
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
}

static inline uint16_t fp32_to_bf16(float f) {
  uint32_t x;
  __builtin_memcpy(&x, &f, sizeof x);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
  return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1)) >> 16);
}

/* KV cache formats of cpu_ops.c (cpu_ops.py's _KV_FORMATS): rows of fp32, fp16 or bf16. */
enum { KV_FP32 = 0, KV_FP16 = 1, KV_BF16 = 2 };

/* out[M, N] = x[M, K] @ W^T + bias; 0, or -1 when a scratch buffer cannot be allocated. */
int tritium_int8_linear(const float* x, int64_t M, int64_t K, const int8_t* w,
                        const float* scale, const float* bias, int64_t N, float* out,
                        int nthreads);
int tritium_q4_linear(const float* x, int64_t M, int64_t K, const uint8_t* codes,
                      const uint16_t* dm, const float* bias, int64_t N, float* out,
                      int nthreads);
int tritium_q8_linear(const float* x, int64_t M, int64_t K, const int8_t* codes,
                      const uint16_t* d, const float* bias, int64_t N, float* out,
                      int nthreads);
/* bf16_inputs: each input rounded to bf16 first, so the products are bf16's (exact in fp32)
 * and the sums fp32's: dtype bfloat16's matmul. Else the inputs stay fp32 (fp32 math). */
int tritium_bf16_linear(const float* x, int64_t M, int64_t K, const uint16_t* w,
                        const float* bias, int64_t N, float* out, int nthreads, int bf16_inputs);
int tritium_fp16_linear(const float* x, int64_t M, int64_t K, const uint16_t* w,
                        const float* bias, int64_t N, float* out, int nthreads);

/* Several-row matmuls on AMX (amx_linear.c); tritium_amx_enabled() says whether they run
 * here. kind_int8: int8 weights with per-row scales, else bf16 weights (scale NULL);
 * parts: 3 for fp32 inputs (each split into three bf16 parts), 1 for inputs rounded to bf16. */
int tritium_amx_enabled(void);
int tritium_set_amx(int enable);
/* q8: 0 for q4 codes with (d, m) pairs, 1 for q8 codes with one scale per block. */
int tritium_amx_block_linear(int q8, const float* x, int64_t M, int64_t K, const void* codes,
                             const uint16_t* dm, const float* bias, int64_t N, float* out,
                             int nthreads);
/* One input row to 8 bits per block of 32 (scales d, sums s = d * sum(q)), and back to fp32
 * into xf when given: the q4 kernels' inputs (quant_linear.c). */
void tritium_quantize_row_q8(const float* x, int64_t K, int8_t* q, float* d, float* s, float* xf);
int tritium_amx_linear(int kind_int8, int parts, const float* x, int64_t M, int64_t K,
                       const void* w, const float* scale, const float* bias, int64_t N,
                       float* out, int nthreads);

#endif
