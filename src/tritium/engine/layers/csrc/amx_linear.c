/* The several-row compact matmuls on Intel AMX (Sapphire Rapids and later), called by
 * quant_linear.c when 2 <= M rows share a weight (a decode step of several sequences, a
 * prompt):
 *
 *   tritium_amx_block_linear: q4 weights (4-bit codes, fp16 d and m per block of 32) or q8
 *       weights (8-bit codes, fp16 d per block) against inputs quantized to 8 bits per
 *       block as the one-row path does (tritium_quantize_row_q8, each thread a share of
 *       the rows). TDPBUSD (q4: u8 x s8) or TDPBSSD (q8: s8 x s8) multiplies the codes as
 *       bytes, one block of 32 at a time, and each block's integer dot product is scaled as
 *       the one-row path does: d_w * d_x * (q_w . q_x) (+ m_w * s_x for q4). The integers
 *       are exact, so a row's result is the one-row kernel's up to the order of the fp32
 *       sums.
 *   tritium_amx_linear: int8 (per-row scale) and bf16 weights, inputs fp32. Weights of
 *       both are exact in bf16; each fp32 input is split into three bf16 parts whose sum is
 *       exactly that input (8 + 8 + 8 significant bits), so TDPBF16PS (bf16 products, exact,
 *       summed in fp32) computes fp32 math on the stored weights, up to summation order.
 *       The parts of the last rows (M % 16) share tiles rather than fill three. Under dtype
 *       bfloat16 the inputs are rounded to bf16 instead: one part, a third of the work.
 *
 * A row's result does not depend on which rows share its call (each is summed in the same
 * order whatever M is). Long prompts go over the weights in passes of rows whose inputs
 * stay in L2 (PASS_BYTES).
 *
 * A weight tile is 16 rows of the weight as stored (the A operand, row-major, so it needs no
 * transposition: the codes are only unpacked or widened); the inputs are the B operand,
 * interleaved once per call into the VNNI layout (4 bytes of K per column for the 8-bit
 * inputs, 2 values for the bf16 parts) and padded to 16 columns; a C tile is 16 weight rows x 16 input rows, transposed in
 * registers on its way out. On the 2-core Sapphire Rapids VMs we measure on, the AVX2 tiles
 * these replace were bound by FMA issue at about 150 GFLOP/s; at 20 rows these are 1.3-3x
 * faster (benchmarks/matmul_cpu.py), q4 about as fast as oneDNN's bf16 on a quarter of
 * the bytes.
 *
 * Used only where the compiler targets AMX and the kernel grants this process the tile
 * state (arch_prctl); tritium_amx_enabled() says so, and TRITIUM_CPU_AMX=0 turns it off.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tritium_cpu.h"

#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AMX_BF16__) && \
    defined(__AVX512F__) && defined(__AVX512BF16__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define T 16 /* rows of a tile: weight rows per A tile, input rows per B tile */
#define PASS_BYTES (1 << 20) /* inputs' B tiles per pass over the weights (in L2) */

/* 0: not asked yet; 1: on; -1: off (no permission, or turned off). */
static int amx_state = 0;

int tritium_set_amx(int enable) {
  int state = -1;
  if (enable && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0) state = 1;
  __atomic_store_n(&amx_state, state, __ATOMIC_RELEASE);
  return state > 0;
}

int tritium_amx_enabled(void) {
  int state = __atomic_load_n(&amx_state, __ATOMIC_ACQUIRE);
  if (state == 0) {
    const char* env = getenv("TRITIUM_CPU_AMX");
    return tritium_set_amx(!(env && env[0] == '0'));
  }
  return state > 0;
}

typedef struct {
  uint8_t palette_id, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} TileConfig;

/* Tiles 0 to c - 1: C, 16 x 16 of 32 bits; the next a: A, 16 weight rows of a_bytes each;
 * the next b: B, b_rows of 16 input columns (64 bytes). Several of each let independent
 * tile operations overlap: a chain on one C tile waits for each instruction's latency. */
static void configure_tiles(int c, int a, int a_bytes, int b, int b_rows) {
  TileConfig cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette_id = 1;
  for (int t = 0; t < c + a + b; ++t) {
    cfg.rows[t] = t < c + a ? T : (uint8_t)b_rows;
    cfg.colsb[t] = t >= c && t < c + a ? (uint16_t)a_bytes : 4 * T;
  }
  _tile_loadconfig(&cfg);
}

/* r[j] lane i -> r[i] lane j, in registers (4 rounds of 16 shuffles). */
static inline void transpose16(__m512* r) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
  }
  for (int h = 0; h < 16; h += 8)
    for (int i = 0; i < 4; ++i) {
      t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xDD);
    }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
  }
}

/* out[m0 + i, n0 + j] = r[j] lane i * scale[n0 + j] + bias[n0 + j] (scale, bias optional)
 * for the rows and columns that exist: a C tile's weight rows become output columns, so
 * the tile is transposed in registers and each output row is one masked store. The scale
 * and the bias are applied as the one-row kernels do (a product, then a sum). */
static void store_tile(__m512* r, int64_t m0, int64_t M, int64_t n0, int nr,
                       const float* scale, const float* bias, int64_t N, float* out) {
  transpose16(r);
  const __mmask16 cols = nr == T ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
  const __m512 s = scale ? _mm512_maskz_loadu_ps(cols, scale + n0) : _mm512_set1_ps(1.0f);
  const __m512 b = bias ? _mm512_maskz_loadu_ps(cols, bias + n0) : _mm512_setzero_ps();
  for (int64_t i = 0; i < T && m0 + i < M; ++i) {
    __m512 v = scale ? _mm512_mul_ps(r[i], s) : r[i];
    if (bias) v = _mm512_add_ps(v, b);
    _mm512_mask_storeu_ps(out + (m0 + i) * N + n0, cols, v);
  }
}

/* -- q4 and q8 blocks x q8 inputs -------------------------------------------------------- */

#define QB 32
#define Q4_GROUP 16 /* blocks whose dots are stored before they are scaled */

int tritium_amx_block_linear(int q8, const float* x, int64_t M, int64_t K, const void* codes,
                             const uint16_t* dm, const float* bias, int64_t N, float* out,
                             int nthreads) {
  const int64_t nb = K / QB, mt_count = (M + T - 1) / T;
  const int64_t row_bytes = q8 ? K : K / 2, row_scales = q8 ? nb : 2 * nb;
  /* Inputs as B tiles, one per (input tile, block): 8 rows of 16 columns x 4 bytes, zero
   * past M; and their scales d_x and sums s_x as 16-wide vectors. */
  int8_t* xv = (int8_t*)aligned_alloc(64, (size_t)(mt_count * nb) * 512);
  float* xdv = (float*)aligned_alloc(64, sizeof(float) * (size_t)(mt_count * nb) * T);
  float* xsv = (float*)aligned_alloc(64, sizeof(float) * (size_t)(mt_count * nb) * T);
  if (!xv || !xdv || !xsv) {
    free(xv), free(xdv), free(xsv);
    return -1;
  }
  const int64_t last = (mt_count - 1) * nb; /* the tiles that may hold rows past M */
  memset(xv + last * 512, 0, (size_t)nb * 512);
  memset(xdv + last * T, 0, sizeof(float) * (size_t)nb * T);
  memset(xsv + last * T, 0, sizeof(float) * (size_t)nb * T);
  int failed = 0;
#ifdef _OPENMP
  omp_set_num_threads(nthreads);
#pragma omp parallel
#endif
  {
    /* A 16-row weight tile, unpacked for every block (reused by each input tile); its d
     * and m as floats, [row][block][2]; the integer dots of every block of one input tile. */
    uint8_t* wbuf = (uint8_t*)aligned_alloc(64, (size_t)nb * T * QB);
    float* wdm = (float*)aligned_alloc(64, sizeof(float) * (size_t)(nb * 2 * T + 16));
    int32_t* cbuf = (int32_t*)aligned_alloc(64, sizeof(int32_t) * Q4_GROUP * T * T);
    int8_t* xq = (int8_t*)malloc((size_t)K);
    float* xd = (float*)malloc(sizeof(float) * (size_t)nb * 2);
    const int ok = wbuf && wdm && cbuf && xq && xd;
    if (!ok) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
      failed = 1;
    }
    /* Each thread quantizes some input tiles' rows and interleaves them into the B tiles
     * (whole tiles per thread: rows of one tile share cache lines); each 4 bytes of K stay
     * together (VNNI), so that moves 32-bit words. */
#ifdef _OPENMP
#pragma omp for schedule(static, T)
#endif
    for (int64_t m = 0; m < M; ++m) {
      if (!ok) continue;
      tritium_quantize_row_q8(x + m * K, K, xq, xd, xd + nb, 0);
      const int64_t mt = m / T, i = m % T;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t* tile = (int32_t*)(xv + (mt * nb + b) * 512);
        int32_t words[QB / 4];
        memcpy(words, xq + b * QB, QB);
        for (int k4 = 0; k4 < QB / 4; ++k4) tile[k4 * T + i] = words[k4];
        xdv[(mt * nb + b) * T + i] = xd[b];
        xsv[(mt * nb + b) * T + i] = xd[nb + b];
      }
    }
    if (ok) configure_tiles(2, 2, QB, 2, QB / 4);
    /* Passes over the weights, each for the input tiles whose B tiles and scales fit in
     * about 2 x PASS_BYTES (see tritium_amx_linear): unpacking 4-bit weights costs more
     * than widening int8 or bf16, so each pass takes more rows. */
    const int64_t pass = 2 * PASS_BYTES / (nb * 640) > 0 ? 2 * PASS_BYTES / (nb * 640) : 1;
    for (int64_t mb0 = 0; mb0 < mt_count; mb0 += pass) {
      const int64_t mb1 = mb0 + pass < mt_count ? mb0 + pass : mt_count;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
      for (int64_t n0 = 0; n0 < N; n0 += T) {
        if (!ok) continue;
        const int nr = N - n0 < T ? (int)(N - n0) : T;
        for (int j = 0; j < T; ++j) {
          float* row_dm = wdm + j * nb * 2;
          if (j >= nr) {
            memset(wbuf + j * QB, 0, QB);
            for (int64_t b = 1; b < nb; ++b) memset(wbuf + (b * T + j) * QB, 0, QB);
            memset(row_dm, 0, sizeof(float) * (size_t)nb * 2);
            continue;
          }
          const uint8_t* src = (const uint8_t*)codes + (n0 + j) * row_bytes;
          for (int64_t b = 0; b < nb; ++b) {
            /* The next tile's codes, as the hardware prefetcher alone leaves the VM's memory
             * bandwidth half used. A prefetch past the end is dropped, never a fault. */
            if (q8) {
              if ((b & 1) == 0) _mm_prefetch((const char*)(src + QB * b + T * K), _MM_HINT_T1);
              _mm256_store_si256((__m256i*)(wbuf + (b * T + j) * QB),
                                 _mm256_loadu_si256((const __m256i*)(src + QB * b)));
              continue;
            }
            if ((b & 3) == 0) _mm_prefetch((const char*)(src + 16 * b + T * (K / 2)), _MM_HINT_T1);
            _mm256_store_si256((__m256i*)(wbuf + (b * T + j) * QB), q4_bytes(src + 16 * b));
          }
          /* (d, m) pairs for q4; q8's scales d alone, laid out the same with m = 0 */
          const uint16_t* s = dm + (n0 + j) * row_scales;
          if (q8) {
            for (int64_t b = 0; b < nb; ++b) row_dm[2 * b] = _cvtsh_ss(s[b]), row_dm[2 * b + 1] = 0.0f;
            continue;
          }
          int64_t e = 0;
          for (; e + 16 <= nb * 2; e += 16)
            _mm512_storeu_ps(row_dm + e, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(s + e))));
          for (; e < nb * 2; ++e) row_dm[e] = _cvtsh_ss(s[e]);
        }
        for (int64_t mt = mb0; mt < mb1; ++mt) {
          /* A group of blocks' integer dots first, two C tiles in turn, into cbuf; then the
           * vector units scale them. A load right after a tile store waits for it; by the
           * second loop the stores have long landed. */
#define Q4_DOTS(c, at, bt, b)                                      \
  do {                                                             \
    _tile_zero(c);                                                 \
    _tile_loadd(at, wbuf + (b) * T * QB, QB);                      \
    _tile_loadd(bt, xv + (mt * nb + (b)) * 512, 64);               \
    if (q8)                                                        \
      _tile_dpbssd(c, at, bt);                                     \
    else                                                           \
      _tile_dpbusd(c, at, bt);                                     \
    _tile_stored(c, cbuf + ((b) - g0) * T * T, 64);                \
  } while (0)
          __m512 a[T];
          for (int j = 0; j < T; ++j) a[j] = _mm512_setzero_ps();
          for (int64_t g0 = 0; g0 < nb; g0 += Q4_GROUP) {
            const int64_t g1 = g0 + Q4_GROUP < nb ? g0 + Q4_GROUP : nb;
            int64_t b = g0;
            for (; b + 2 <= g1; b += 2) {
              Q4_DOTS(0, 2, 4, b);
              Q4_DOTS(1, 3, 5, b + 1);
            }
            if (b < g1) Q4_DOTS(0, 2, 4, b);
            for (b = g0; b < g1; ++b) {
              const int32_t* dots = cbuf + (b - g0) * T * T;
              const __m512 dx = _mm512_load_ps(xdv + (mt * nb + b) * T);
              const __m512 sx = _mm512_load_ps(xsv + (mt * nb + b) * T);
              if (q8) { /* no minimum: d_w * d_x * dot */
#pragma GCC unroll 16
                for (int j = 0; j < T; ++j) {
                  const __m512 dot = _mm512_cvtepi32_ps(_mm512_load_si512(dots + j * T));
                  const float dw = wdm[(j * nb + b) * 2];
                  a[j] = _mm512_fmadd_ps(dot, _mm512_mul_ps(_mm512_set1_ps(dw), dx), a[j]);
                }
                continue;
              }
#pragma GCC unroll 16
              for (int j = 0; j < T; ++j) {
                const float* dmj = wdm + (j * nb + b) * 2;
                const __m512 dot = _mm512_cvtepi32_ps(_mm512_load_si512(dots + j * T));
                a[j] = _mm512_fmadd_ps(dot, _mm512_mul_ps(_mm512_set1_ps(dmj[0]), dx), a[j]);
                a[j] = _mm512_fmadd_ps(_mm512_set1_ps(dmj[1]), sx, a[j]);
              }
            }
          }
#undef Q4_DOTS
          store_tile(a, mt * T, M, n0, nr, 0, bias, N, out);
        }
      }
    }
    if (ok) _tile_release();
    free(wbuf), free(wdm), free(cbuf), free(xq), free(xd);
  }
  free(xv), free(xdv), free(xsv);
  return failed ? -1 : 0;
}

/* -- int8 and bf16 weights, fp32 inputs as three bf16 parts ----------------------------- */

#define KC 32 /* K per tile: 32 bf16 = 64 bytes */

static inline uint16_t bf16_nearest(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  u += 0x7FFF + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

/* bf16_nearest of 16 floats, each in the low half of a 32-bit lane; and back to floats. */
static inline __m512i bf16_nearest16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  return _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
}

static inline __m512 bf16_value16(__m512i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)); }

/* Input row x (K floats) as its bf16 parts into the B tiles of its group of r rows
 * (group: the group's first tile; the row is row i of it): part p goes to column p * r + i,
 * each pair of K one 32-bit word of a tile row (VNNI), zeros past K to the last chunk's
 * end. Three parts: each fp32 input split into three bf16 parts whose sum is exactly that
 * input; one part: the input rounded to bf16. */
static void split_row(const float* x, int64_t K, int64_t kc_count, uint16_t* group, int64_t r,
                      int64_t i, int parts) {
  const __m256i pair_rows = _mm256_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112);
  for (int64_t k = 0; k < kc_count * KC; k += 16) {
    const __mmask16 in = k + 16 <= K ? (__mmask16)0xFFFF
                         : k < K     ? (__mmask16)((1u << (K - k)) - 1)
                                     : (__mmask16)0;
    const __m512 v = _mm512_maskz_loadu_ps(in, x + k);
    __m512i part[3];
    part[0] = bf16_nearest16(v);
    if (parts == 3) {
      const __m512 r0 = _mm512_sub_ps(v, bf16_value16(part[0])); /* exact: within 2^8 ulps of v */
      part[1] = bf16_nearest16(r0);
      part[2] = bf16_nearest16(_mm512_sub_ps(r0, bf16_value16(part[1]))); /* exact */
    }
    for (int64_t p = 0; p < parts; ++p) {
      const int64_t c = p * r + i;
      /* the 8 pairs of k..k+15: rows (k % KC) / 2 .. + 7 of tile c / 16, column c % 16 */
      int32_t* at = (int32_t*)(group + ((c / T) * kc_count + k / KC) * 512) + ((k % KC) / 2) * T + c % T;
      _mm256_i32scatter_epi32(at, pair_rows, _mm512_cvtepi32_epi16(part[p]), 4);
    }
  }
}

/* 32 weights of row `w` from column k as bf16 (k + 32 <= K), exact for both kinds. */
static inline __m512i weights_bf16(const void* w, int kind_int8, int64_t k) {
  if (kind_int8) {
    const __m256i q = _mm256_loadu_si256((const __m256i*)((const int8_t*)w + k));
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q)));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1)));
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
  }
  return _mm512_loadu_si512((const uint16_t*)w + k);
}

/* Rows m0 .. m0 + r (r < 16) of the output's columns n0.., from the n C tiles in acc of a
 * group whose three parts sit side by side (column p * r + i: part p of row i): each tile
 * is transposed into cols_of ([column][weight row]), then each row's parts are added, the
 * small ones first, and scaled and biased as store_tile does. */
static void store_parts(const float* acc, int64_t n, int64_t r, int64_t m0, int64_t n0, int nr,
                        const float* scale, const float* bias, float* cols_of, int64_t N,
                        float* out) {
  const __mmask16 live = nr == T ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
  const __m512 s = scale ? _mm512_maskz_loadu_ps(live, scale + n0) : _mm512_set1_ps(1.0f);
  const __m512 b = bias ? _mm512_maskz_loadu_ps(live, bias + n0) : _mm512_setzero_ps();
  for (int64_t t = 0; t < n; ++t) {
    __m512 c[T];
    for (int j = 0; j < T; ++j) c[j] = _mm512_load_ps(acc + (t * T + j) * T);
    transpose16(c);
    for (int i = 0; i < T; ++i) _mm512_store_ps(cols_of + (t * T + i) * T, c[i]);
  }
  for (int64_t i = 0; i < r; ++i) {
    __m512 v = _mm512_add_ps(_mm512_load_ps(cols_of + i * T),
                             _mm512_add_ps(_mm512_load_ps(cols_of + (r + i) * T),
                                           _mm512_load_ps(cols_of + (2 * r + i) * T)));
    if (scale) v = _mm512_mul_ps(v, s);
    if (bias) v = _mm512_add_ps(v, b);
    _mm512_mask_storeu_ps(out + (m0 + i) * N + n0, live, v);
  }
}

/* Up to 3 C tiles, column tiles ct0.. (16 input rows' parts), against every K chunk, into
 * acc: the weight tile (K chunk kc at a_base + kc * a_step, rows a_stride bytes apart) is
 * loaded once per chunk for all of them, and their chains of tile products are
 * independent. */
#define DOTS_BF16(n)                                                         \
  do {                                                                       \
    _tile_zero(0);                                                           \
    if (n > 1) _tile_zero(1);                                                \
    if (n > 2) _tile_zero(2);                                                \
    for (int64_t kc = 0; kc < kc_count; ++kc) {                              \
      _tile_loadd(4, a_base + kc * a_step, a_stride);                        \
      _tile_loadd(5, xv + (ct0 * kc_count + kc) * 512, 64);                  \
      if (n > 1) _tile_loadd(6, xv + ((ct0 + 1) * kc_count + kc) * 512, 64); \
      if (n > 2) _tile_loadd(7, xv + ((ct0 + 2) * kc_count + kc) * 512, 64); \
      _tile_dpbf16ps(0, 4, 5);                                               \
      if (n > 1) _tile_dpbf16ps(1, 4, 6);                                    \
      if (n > 2) _tile_dpbf16ps(2, 4, 7);                                    \
    }                                                                        \
    _tile_stored(0, acc, 64);                                                \
    if (n > 1) _tile_stored(1, acc + T * T, 64);                             \
    if (n > 2) _tile_stored(2, acc + 2 * T * T, 64);                         \
  } while (0)

/* DOTS_BF16(3) and, beside it, a fourth tile (ct0 + 3: the one tile of a last group of 1 to
 * 5 rows, or of one part, the last 16 rows) into acc + 3 * T * T: alone, that tile's chain
 * of products would wait on each one's latency. */
#define DOTS_BF16_WITH_TAIL()                                      \
  do {                                                             \
    _tile_zero(0);                                                 \
    _tile_zero(1);                                                 \
    _tile_zero(2);                                                 \
    _tile_zero(3);                                                 \
    for (int64_t kc = 0; kc < kc_count; ++kc) {                    \
      _tile_loadd(4, a_base + kc * a_step, a_stride);              \
      _tile_loadd(5, xv + (ct0 * kc_count + kc) * 512, 64);        \
      _tile_loadd(6, xv + ((ct0 + 1) * kc_count + kc) * 512, 64);  \
      _tile_loadd(7, xv + ((ct0 + 2) * kc_count + kc) * 512, 64);  \
      _tile_dpbf16ps(0, 4, 5);                                     \
      _tile_dpbf16ps(1, 4, 6);                                     \
      _tile_dpbf16ps(2, 4, 7);                                     \
      _tile_loadd(5, xv + ((ct0 + 3) * kc_count + kc) * 512, 64);  \
      _tile_dpbf16ps(3, 4, 5);                                     \
    }                                                              \
    _tile_stored(0, acc, 64);                                      \
    _tile_stored(1, acc + T * T, 64);                              \
    _tile_stored(2, acc + 2 * T * T, 64);                          \
    _tile_stored(3, acc + 3 * T * T, 64);                          \
  } while (0)

int tritium_amx_linear(int kind_int8, int parts, const float* x, int64_t M, int64_t K,
                       const void* w, const float* scale, const float* bias, int64_t N,
                       float* out, int nthreads) {
  /* The B tiles' columns, 16 * parts per 16 input rows: column p * r + i of a group of
   * r rows is part p of its row i. A full group is a tile per part; the last group's parts
   * share tiles: with three parts, 20 rows take 4 tiles where a tile per (16 rows, part)
   * would take 6 (4 of them holding 4 rows), and 2 to 5 rows take one tile rather than
   * three. */
  const int64_t kc_count = (K + KC - 1) / KC, tail = M % T;
  const int64_t ct_count = parts * (M / T) + (parts * tail + T - 1) / T;
  const int64_t elt = kind_int8 ? 1 : 2;
  /* B tiles [column tile][K chunk], each 16 rows (pairs of K) of 16 columns x 2 bf16. */
  uint16_t* xv = (uint16_t*)aligned_alloc(64, (size_t)(ct_count * kc_count) * 512 * sizeof(uint16_t));
  if (!xv) return -1;
  /* Zeros where no row writes: the last tile's columns past parts * M. */
  memset(xv + (ct_count - 1) * kc_count * 512, 0, (size_t)kc_count * 512 * sizeof(uint16_t));
  int failed = 0;
#ifdef _OPENMP
  omp_set_num_threads(nthreads);
#pragma omp parallel
#endif
  {
    uint16_t* wbuf = (uint16_t*)aligned_alloc(64, sizeof(uint16_t) * (size_t)kc_count * T * KC);
    /* The C tiles of 16 input rows, [tile][weight row][column], then transposed:
     * [column][weight row]. */
    float* acc = (float*)aligned_alloc(64, sizeof(float) * 4 * T * T);
    float* cols_of = (float*)aligned_alloc(64, sizeof(float) * 3 * T * T);
    const int ok = wbuf && acc && cols_of;
    if (!ok) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
      failed = 1;
    }
    /* Each thread splits some rows into their three bf16 parts (zeros past K, up to the
     * last K chunk's end), whole groups of 16 rows at a time: their tiles are theirs. */
#ifdef _OPENMP
#pragma omp for schedule(static, T)
#endif
    for (int64_t m = 0; m < M; ++m) {
      const int64_t r = m - m % T + T <= M ? T : tail;
      split_row(x + m * K, K, kc_count, xv + m / T * parts * kc_count * 512, r, m % T, parts);
    }
    if (ok) configure_tiles(4, 1, 2 * KC, 3, KC / 2);
    /* Passes over the weights, each for the groups of rows whose B tiles fit in about
     * PASS_BYTES: a prompt's inputs in three parts are megabytes, and read once for every
     * weight tile they would come from memory each time. A last group's single tile goes
     * with the group before it. Every thread runs every pass (a barrier after each). */
    const int64_t groups_per_pass = PASS_BYTES / (parts * kc_count * 1024);
    const int64_t pass = parts * (groups_per_pass > 0 ? groups_per_pass : 1);
    for (int64_t cb0 = 0, cb1; cb0 < ct_count; cb0 = cb1) {
      cb1 = cb0 + pass < ct_count ? cb0 + pass : ct_count;
      if (ct_count - cb1 == 1) cb1 = ct_count;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
      for (int64_t n0 = 0; n0 < N; n0 += T) {
        if (!ok) continue;
        const int nr = N - n0 < T ? (int)(N - n0) : T;
        /* bf16 weights in whole tiles (16 rows, K a multiple of 32) load straight from
         * their rows as A tiles: no copy. */
        const int direct = !kind_int8 && nr == T && K % KC == 0;
        const uint16_t* a_base = direct ? (const uint16_t*)w + n0 * K : wbuf;
        const int64_t a_step = direct ? KC : T * KC, a_stride = direct ? 2 * K : 2 * KC;
        /* Otherwise the 16 rows as bf16, in K chunks of 32, zero past K and past N. */
        for (int j = 0; j < T && !direct; ++j) {
          const void* row = (const char*)w + (n0 + j) * K * elt;
          for (int64_t kc = 0; kc < kc_count; ++kc) {
            uint16_t* dst = wbuf + (kc * T + j) * KC;
            const int64_t k = kc * KC;
            if (j < nr && k + KC <= K) {
              /* the next tile's weights (see the q4 kernel) */
              for (int64_t b = 0; b < KC * elt; b += 64)
                _mm_prefetch((const char*)row + (T * K + k) * elt + b, _MM_HINT_T1);
              _mm512_store_si512((__m512i*)dst, weights_bf16(row, kind_int8, k));
              continue;
            }
            for (int64_t e = 0; e < KC; ++e) {
              uint16_t v = 0;
              if (j < nr && k + e < K)
                v = kind_int8 ? bf16_nearest((float)((const int8_t*)row)[k + e])
                              : ((const uint16_t*)row)[k + e];
              dst[e] = v;
            }
          }
        }
        for (int64_t ct0 = cb0; ct0 < cb1 && parts == 1;) { /* a tile per 16 rows */
          const int64_t n = cb1 - ct0 == 4 ? 4 : cb1 - ct0 < 3 ? cb1 - ct0 : 3;
          if (n == 4)
            DOTS_BF16_WITH_TAIL();
          else if (n == 3)
            DOTS_BF16(3);
          else if (n == 2)
            DOTS_BF16(2);
          else
            DOTS_BF16(1);
          for (int64_t t = 0; t < n; ++t, ++ct0) {
            __m512 c[T];
            for (int j = 0; j < T; ++j) c[j] = _mm512_load_ps(acc + (t * T + j) * T);
            store_tile(c, ct0 * T, M, n0, nr, scale, bias, N, out);
          }
        }
        for (int64_t ct0 = cb0; ct0 < cb1 && parts == 3; ct0 += 3) {
          const int64_t n = cb1 - ct0 < 3 ? cb1 - ct0 : 3;
          const int64_t m0 = ct0 / 3 * T, r = m0 + T <= M ? T : tail;
          const float* tail_acc = acc;
          if (cb1 - ct0 == 4) { /* this full group and the last one's single tile */
            DOTS_BF16_WITH_TAIL();
            tail_acc = acc + 3 * T * T;
          } else if (n == 3) {
            DOTS_BF16(3);
          } else if (n == 2) {
            DOTS_BF16(2);
          } else {
            DOTS_BF16(1);
          }
          /* The small parts first: their sum is exact or nearly, before the large one. */
          if (r == T) { /* a tile per part: add them, then transpose the sum */
            __m512 sum[T];
            for (int j = 0; j < T; ++j)
              sum[j] = _mm512_add_ps(_mm512_load_ps(acc + j * T),
                                     _mm512_add_ps(_mm512_load_ps(acc + (T + j) * T),
                                                   _mm512_load_ps(acc + (2 * T + j) * T)));
            store_tile(sum, m0, M, n0, nr, scale, bias, N, out);
            if (tail_acc == acc) continue;
            ct0 += 3; /* the last group, in acc's fourth tile */
          }
          store_parts(tail_acc, cb1 - ct0 < 3 ? cb1 - ct0 : 3, M - ct0 / 3 * T, ct0 / 3 * T,
                      n0, nr, scale, bias, cols_of, N, out);
        }
      }
    }
    if (ok) _tile_release();
    free(wbuf), free(acc), free(cols_of);
  }
  free(xv);
  return failed ? -1 : 0;
}
#undef DOTS_BF16
#undef DOTS_BF16_WITH_TAIL

#else /* no AMX from this compiler or CPU: the callers keep their AVX2 paths */

int tritium_set_amx(int enable) {
  (void)enable;
  return 0;
}

int tritium_amx_enabled(void) { return 0; }

int tritium_amx_block_linear(int q8, const float* x, int64_t M, int64_t K, const void* codes,
                             const uint16_t* dm, const float* bias, int64_t N, float* out,
                             int nthreads) {
  (void)q8, (void)x, (void)M, (void)K, (void)codes, (void)dm, (void)bias, (void)N, (void)out,
      (void)nthreads;
  return -1;
}

int tritium_amx_linear(int kind_int8, int parts, const float* x, int64_t M, int64_t K,
                       const void* w, const float* scale, const float* bias, int64_t N,
                       float* out, int nthreads) {
  (void)kind_int8, (void)parts, (void)x, (void)M, (void)K, (void)w, (void)scale, (void)bias, (void)N,
      (void)out, (void)nthreads;
  return -1;
}

#endif
