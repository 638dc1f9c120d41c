// Fused CPU kernels for the stateless layers around the neurons, called through ctypes:
//
// * 2x2 max pooling, stride 2 (the pooling of spiking VGGs and CNNs). PyTorch's CPU kernel for
//   NCHW keeps 64-bit indices and zero-fills the gradient before scattering into it; this one
//   keeps a 2-bit code per output (in a byte) and writes every input gradient once. Ties go to the
//   first maximum in row-major order and a NaN wins, as in PyTorch, so outputs and gradients are
//   PyTorch's bit for bit.
// * Dropout with a counter-based random mask: element i of a call with seed s is kept when
//   hash(s, i) < (1 - p) 2^32, so the backward pass recomputes the mask instead of storing it.
//   y = x * (1 / (1 - p)) where kept, as PyTorch's dropout scales.
//
// * Batch norm in training mode (statistics in double, fused passes); equal to PyTorch's up to
//   rounding.
//
// Layout: contiguous; pooling works on [M, H, W] planes (M = batch x channels), floor mode (an odd
// last row or column is dropped and gets zero gradient).

#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define FEWSTEP_POOL_AVX512 1
#endif

namespace {

// v replaces the running maximum when larger, or when NaN (PyTorch's rule); branch-free so the
// loops vectorise.
template <typename F>
inline bool better(F v, F best) { return (v > best) | (v != v); }

#ifdef FEWSTEP_POOL_AVX512
// One row pair of float32 pooling, 16 outputs per step with masks: the rows of small feature maps
// (14 outputs at 28x28) are shorter than a vector, which leaves auto-vectorised loops scalar.
inline __m512 evens(__m512 lo, __m512 hi) {
    const __m512i idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(lo, idx, hi);
}
inline __m512 odds(__m512 lo, __m512 hi) {
    const __m512i idx = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_permutex2var_ps(lo, idx, hi);
}
inline __mmask16 beats(__m512 v, __m512 best) {  // v > best, or v is NaN
    return _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
}

inline void pool_row_fwd(const float* r0, const float* r1, float* y, uint8_t* code, int64_t Wo) {
    for (int64_t j = 0; j < Wo; j += 16) {
        const int64_t n = Wo - j < 16 ? Wo - j : 16;
        const __mmask16 m = __mmask16((1u << n) - 1u);
        const __mmask16 mlo = __mmask16(n >= 8 ? 0xFFFFu : (1u << (2 * n)) - 1u);
        const __mmask16 mhi = __mmask16(n > 8 ? (1u << (2 * (n - 8))) - 1u : 0u);
        const __m512 a_lo = _mm512_maskz_loadu_ps(mlo, r0 + 2 * j), a_hi = _mm512_maskz_loadu_ps(mhi, r0 + 2 * j + 16);
        const __m512 b_lo = _mm512_maskz_loadu_ps(mlo, r1 + 2 * j), b_hi = _mm512_maskz_loadu_ps(mhi, r1 + 2 * j + 16);
        __m512 best = evens(a_lo, a_hi);
        __m512i c = _mm512_setzero_si512();
        const __m512 v1 = odds(a_lo, a_hi), v2 = evens(b_lo, b_hi), v3 = odds(b_lo, b_hi);
        __mmask16 t = beats(v1, best);
        best = _mm512_mask_mov_ps(best, t, v1);
        c = _mm512_mask_mov_epi32(c, t, _mm512_set1_epi32(1));
        t = beats(v2, best);
        best = _mm512_mask_mov_ps(best, t, v2);
        c = _mm512_mask_mov_epi32(c, t, _mm512_set1_epi32(2));
        t = beats(v3, best);
        best = _mm512_mask_mov_ps(best, t, v3);
        c = _mm512_mask_mov_epi32(c, t, _mm512_set1_epi32(3));
        _mm512_mask_storeu_ps(y + j, m, best);
        _mm_mask_storeu_epi8(code + j, m, _mm512_cvtepi32_epi8(c));
    }
}

inline void pool_row_bwd(const float* g, const uint8_t* code, float* r0, float* r1, int64_t Wo) {
    const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (int64_t j = 0; j < Wo; j += 16) {
        const int64_t n = Wo - j < 16 ? Wo - j : 16;
        const __mmask16 m = __mmask16((1u << n) - 1u);
        const __mmask16 mlo = __mmask16(n >= 8 ? 0xFFFFu : (1u << (2 * n)) - 1u);
        const __mmask16 mhi = __mmask16(n > 8 ? (1u << (2 * (n - 8))) - 1u : 0u);
        const __m512 v = _mm512_maskz_loadu_ps(m, g + j);
        const __m512i c = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, code + j));
        const __m512 z = _mm512_setzero_ps();
        const __m512 v0 = _mm512_mask_mov_ps(z, _mm512_cmpeq_epi32_mask(c, _mm512_set1_epi32(0)), v);
        const __m512 v1 = _mm512_mask_mov_ps(z, _mm512_cmpeq_epi32_mask(c, _mm512_set1_epi32(1)), v);
        const __m512 v2 = _mm512_mask_mov_ps(z, _mm512_cmpeq_epi32_mask(c, _mm512_set1_epi32(2)), v);
        const __m512 v3 = _mm512_mask_mov_ps(z, _mm512_cmpeq_epi32_mask(c, _mm512_set1_epi32(3)), v);
        _mm512_mask_storeu_ps(r0 + 2 * j, mlo, _mm512_permutex2var_ps(v0, lo_idx, v1));
        _mm512_mask_storeu_ps(r0 + 2 * j + 16, mhi, _mm512_permutex2var_ps(v0, hi_idx, v1));
        _mm512_mask_storeu_ps(r1 + 2 * j, mlo, _mm512_permutex2var_ps(v2, lo_idx, v3));
        _mm512_mask_storeu_ps(r1 + 2 * j + 16, mhi, _mm512_permutex2var_ps(v2, hi_idx, v3));
    }
}
#endif

template <typename F>
void pool_fwd(const F* x, F* y, uint8_t* code, int64_t M, int64_t H, int64_t W, int nthreads) {
    const int64_t Ho = H / 2, Wo = W / 2;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int64_t m = 0; m < M; ++m) {
        const F* xm = x + m * H * W;
        F* ym = y + m * Ho * Wo;
        uint8_t* cm = code + m * Ho * Wo;
        for (int64_t i = 0; i < Ho; ++i) {
            const F* r0 = xm + (2 * i) * W;
            const F* r1 = r0 + W;
            F* yr = ym + i * Wo;
            uint8_t* cr = cm + i * Wo;
#ifdef FEWSTEP_POOL_AVX512
            if (sizeof(F) == 4) {
                pool_row_fwd(reinterpret_cast<const float*>(r0), reinterpret_cast<const float*>(r1),
                             reinterpret_cast<float*>(yr), cr, Wo);
                continue;
            }
#endif
#pragma omp simd
            for (int64_t j = 0; j < Wo; ++j) {
                // PyTorch starts from -inf at the window's first index; starting from the first
                // value is the same (it wins against -inf unless it is -inf itself).
                F best = r0[2 * j];
                int c = 0;
                const F a = r0[2 * j + 1], b = r1[2 * j], d = r1[2 * j + 1];
                const bool ta = better(a, best);
                best = ta ? a : best;
                c = ta ? 1 : c;
                const bool tb = better(b, best);
                best = tb ? b : best;
                c = tb ? 2 : c;
                const bool td = better(d, best);
                best = td ? d : best;
                c = td ? 3 : c;
                yr[j] = best;
                cr[j] = uint8_t(c);
            }
        }
    }
}

template <typename F>
void pool_bwd(const F* gy, const uint8_t* code, F* gx, int64_t M, int64_t H, int64_t W, int nthreads) {
    const int64_t Ho = H / 2, Wo = W / 2;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int64_t m = 0; m < M; ++m) {
        const F* gm = gy + m * Ho * Wo;
        const uint8_t* cm = code + m * Ho * Wo;
        F* xm = gx + m * H * W;
        for (int64_t i = 0; i < Ho; ++i) {
            F* r0 = xm + (2 * i) * W;
            F* r1 = r0 + W;
            const F* g = gm + i * Wo;
            const uint8_t* c = cm + i * Wo;
#ifdef FEWSTEP_POOL_AVX512
            if (sizeof(F) == 4) {
                pool_row_bwd(reinterpret_cast<const float*>(g), c, reinterpret_cast<float*>(r0),
                             reinterpret_cast<float*>(r1), Wo);
                if (W & 1) { r0[W - 1] = F(0); r1[W - 1] = F(0); }
                continue;
            }
#endif
            // one pass per input row, in input order: contiguous stores
#pragma omp simd
            for (int64_t w = 0; w < 2 * Wo; ++w) {
                const int k = c[w >> 1], par = int(w & 1);
                const F v = g[w >> 1];
                r0[w] = k == par ? v : F(0);
                r1[w] = k == 2 + par ? v : F(0);
            }
            if (W & 1) { r0[W - 1] = F(0); r1[W - 1] = F(0); }
        }
        if (H & 1) std::memset(xm + (H - 1) * W, 0, sizeof(F) * W);
    }
}

// splitmix64's finaliser: a counter-based generator of well-mixed 64-bit words.
inline uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

inline bool keep(uint64_t seed, int64_t i, uint32_t threshold) {
    return uint32_t(mix(seed + 0x9E3779B97F4A7C15ULL * uint64_t(i + 1)) >> 32) < threshold;
}

template <typename F>
void dropout(const F* x, F* y, int64_t n, uint64_t seed, uint32_t threshold, F scale, int nthreads) {
#pragma omp parallel for simd schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int64_t i = 0; i < n; ++i) y[i] = keep(seed, i, threshold) ? x[i] * scale : F(0);
}

// Batch norm in training mode over [N, C, HW] (NCHW, contiguous): per-channel statistics in double
// (sum and sum of squares, exact enough for any realistic batch and far more than float
// accumulation), then y = x a_c + b_c with a_c = gamma_c / sigma_c, b_c = beta_c - mean_c a_c.
// Backward: dL/dx = a_c (g - mean(g) - xhat mean(g xhat)), with the two means per channel.
template <typename F>
void bn_stats(const F* x, int64_t N, int64_t C, int64_t HW, double* mean, double* var, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int64_t c = 0; c < C; ++c) {
        double s = 0.0, ss = 0.0;
        for (int64_t n = 0; n < N; ++n) {
            const F* p = x + (n * C + c) * HW;
            double ps = 0.0, pss = 0.0;
#pragma omp simd reduction(+ : ps, pss)
            for (int64_t i = 0; i < HW; ++i) {
                const double v = double(p[i]);
                ps += v;
                pss += v * v;
            }
            s += ps;
            ss += pss;
        }
        const double cnt = double(N * HW);
        const double m = s / cnt;
        mean[c] = m;
        const double v = ss / cnt - m * m;
        var[c] = v > 0.0 ? v : 0.0;
    }
}

template <typename F>
void bn_apply(const F* x, F* y, int64_t N, int64_t C, int64_t HW, const F* a, const F* b, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int64_t nc = 0; nc < N * C; ++nc) {
        const F ac = a[nc % C], bc = b[nc % C];
        const F* p = x + nc * HW;
        F* q = y + nc * HW;
#pragma omp simd
        for (int64_t i = 0; i < HW; ++i) q[i] = p[i] * ac + bc;
    }
}

template <typename F>
void bn_bwd_sums(const F* g, const F* x, int64_t N, int64_t C, int64_t HW, const double* mean, double* sg,
                 double* sgx, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int64_t c = 0; c < C; ++c) {
        double s = 0.0, sx = 0.0;
        const double m = mean[c];
        for (int64_t n = 0; n < N; ++n) {
            const F* gp = g + (n * C + c) * HW;
            const F* xp = x + (n * C + c) * HW;
            double ps = 0.0, psx = 0.0;
#pragma omp simd reduction(+ : ps, psx)
            for (int64_t i = 0; i < HW; ++i) {
                const double gv = double(gp[i]);
                ps += gv;
                psx += gv * (double(xp[i]) - m);
            }
            s += ps;
            sx += psx;
        }
        sg[c] = s;
        sgx[c] = sx;  // sum g (x - mean); times invstd it is dL/dgamma
    }
}

// dx = k1 g + k2 x + k3 per channel (the backward formula expanded): one fused pass.
template <typename F>
void bn_bwd_apply(const F* g, const F* x, F* dx, int64_t N, int64_t C, int64_t HW, const F* k1, const F* k2,
                  const F* k3, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int64_t nc = 0; nc < N * C; ++nc) {
        const int64_t c = nc % C;
        const F a = k1[c], b = k2[c], d = k3[c];
        const F* gp = g + nc * HW;
        const F* xp = x + nc * HW;
        F* q = dx + nc * HW;
#pragma omp simd
        for (int64_t i = 0; i < HW; ++i) q[i] = gp[i] * a + (xp[i] * b + d);
    }
}

}  // namespace

extern "C" {

int fewstep_cpu_ops_abi() { return 1; }

#define FEWSTEP_DEFINE(F, SUFFIX)                                                                         \
    void fewstep_pool2_fwd_##SUFFIX(const F* x, F* y, uint8_t* code, int64_t M, int64_t H, int64_t W,      \
                                    int nthreads) {                                                        \
        pool_fwd<F>(x, y, code, M, H, W, nthreads);                                                        \
    }                                                                                                      \
    void fewstep_pool2_bwd_##SUFFIX(const F* gy, const uint8_t* code, F* gx, int64_t M, int64_t H,         \
                                    int64_t W, int nthreads) {                                             \
        pool_bwd<F>(gy, code, gx, M, H, W, nthreads);                                                      \
    }                                                                                                      \
    void fewstep_dropout_##SUFFIX(const F* x, F* y, int64_t n, uint64_t seed, uint32_t threshold, F scale, \
                                  int nthreads) {                                                          \
        dropout<F>(x, y, n, seed, threshold, scale, nthreads);                                             \
    }                                                                                                      \
    void fewstep_bn_stats_##SUFFIX(const F* x, int64_t N, int64_t C, int64_t HW, double* mean, double* var, \
                                   int nthreads) {                                                         \
        bn_stats<F>(x, N, C, HW, mean, var, nthreads);                                                     \
    }                                                                                                      \
    void fewstep_bn_apply_##SUFFIX(const F* x, F* y, int64_t N, int64_t C, int64_t HW, const F* a,         \
                                   const F* b, int nthreads) {                                             \
        bn_apply<F>(x, y, N, C, HW, a, b, nthreads);                                                       \
    }                                                                                                      \
    void fewstep_bn_bwd_sums_##SUFFIX(const F* g, const F* x, int64_t N, int64_t C, int64_t HW,            \
                                      const double* mean, double* sg, double* sgx, int nthreads) {         \
        bn_bwd_sums<F>(g, x, N, C, HW, mean, sg, sgx, nthreads);                                           \
    }                                                                                                      \
    void fewstep_bn_bwd_apply_##SUFFIX(const F* g, const F* x, F* dx, int64_t N, int64_t C, int64_t HW,    \
                                       const F* k1, const F* k2, const F* k3, int nthreads) {              \
        bn_bwd_apply<F>(g, x, dx, N, C, HW, k1, k2, k3, nthreads);                                         \
    }

FEWSTEP_DEFINE(float, f32)
FEWSTEP_DEFINE(double, f64)

}  // extern "C"
