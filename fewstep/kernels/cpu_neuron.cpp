// Fused multi-step neuron kernels for the CPU (forward and backward), called through ctypes.
//
// The dynamics are those of fewstep/neurons/functional.py (the oracle the tests compare with):
//
//   h_t = v_rest + lam (v_{t-1} - v_rest) + x_t          (hard reset: v_rest = v_reset)
//   h_t = lam v_{t-1} + x_t                              (soft reset)
//   s_t = sum_{k=1..K} H(h_t - k V_th)
//   v_t = v_reset if h_t >= V_th else h_t                (hard)
//   v_t = h_t - s_t V_th                                 (soft)
//   out_t = s_t (or s_t V_th with scale_output)
//
// Layout: time-major [T, N], contiguous; or the input as one step [N] repeated over time (a
// direct-encoded image), then dL/dx is [N] too and the repeated copy is never made. Neurons are processed in blocks of BLK; inside a block
// the time loop is outside and the neuron loop inside, so the inner loops are plain contiguous
// streams the compiler vectorises (the block's state lives in a small stack array). Blocks are
// shared among threads with OpenMP. The shared object is linked against the libgomp that PyTorch
// has already loaded (same soname), so it uses PyTorch's own thread pool rather than a second one.
//
// The backward pass re-runs the forward recurrence of a block from x (into a per-thread scratch
// of T x BLK values), then walks back in time: forward reads x and writes the spikes (2 passes),
// backward reads x and grad_out and writes grad_x (3 passes), the five-pass floor.
// The gradients of a scalar decay / threshold are summed per block (in double) into a buffer the
// host reduces in a fixed order: deterministic for any number of threads.
//
// Arithmetic keeps the reference's operation order and roundings (built with -ffp-contract=off):
// the forward pass matches the PyTorch reference bit for bit. The backward pass computes what
// autograd computes through the reference's graph, in the order autograd sums it (for each
// tensor used twice or more, gradients arrive in decreasing creation order of their consumers):
// input gradients match bit for bit too, except with the sigmoid surrogate (PyTorch's vectorised
// exp and this libm's may differ in the last bit). Parameter gradients are summed in double per
// block rather than in PyTorch's float order: equal up to rounding.

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

// The helpers are forced inline: the kernels are built at -O2 (a few seconds) rather than -O3
// (tens of seconds), and -O2 alone would leave them as calls inside the vectorised loops.
#define FEWSTEP_INLINE inline __attribute__((always_inline))

namespace {

constexpr int64_t BLK = 512;
constexpr int MAXK = 32;

template <typename F>
struct Params {
    int64_t T, N;
    int64_t xs;        // x's stride between steps: N, or 0 for one input step repeated T times
    bool bcast;        // xs == 0: dL/dx is one step, the sum over t
    int K;
    F lam, vr, thr;
    F kthr[MAXK + 1];  // kthr[k] = k V_th, rounded as the reference rounds it
    F out_mult;        // 1 or V_th (scale_output)
    F width;           // surrogate width w, and the constants the reference derives from it
    F two_w;           // 2 w, rounded from double as the reference's Python float is
    F w_sq;            // w * w, likewise
    bool scale;        // scale_output
    bool detach;
};

// Surrogate derivative g(z); SG follows fewstep.neurons.surrogate.SURROGATES:
// 0 rectangle, 1 triangle, 2 sigmoid, 3 arctan.
// Each is written as fewstep/neurons/surrogate.py computes it, operation for operation.
template <typename F, int SG>
FEWSTEP_INLINE F surrogate_grad(F z, const Params<F>& p) {
    if (SG == 0) return (std::fabs(z) < p.width) ? F(1) / p.two_w : F(0);
    if (SG == 1) { const F d = p.width - std::fabs(z); return (d > F(0) ? d : F(0)) / p.w_sq; }
    if (SG == 2) { const F s = F(1) / (F(1) + std::exp(-(z / p.width))); return s * (F(1) - s) / p.width; }
    const F a = (z * F(M_PI)) / p.two_w;
    return F(1) / (p.two_w * (a * a + F(1)));
}

template <typename F, bool HARD>
FEWSTEP_INLINE F charge(F v, F x, const Params<F>& p) {
    if (HARD) return (p.vr + p.lam * (v - p.vr)) + x;
    return p.lam * v + x;
}

template <typename F, bool HARD>
FEWSTEP_INLINE F next_state(F h, F s, const Params<F>& p) {
    if (HARD) return (h - p.thr >= F(0)) ? p.vr : h;
    return h - s * p.thr;
}

template <typename F>
FEWSTEP_INLINE void initial_block(F* v, const F* v0, int64_t i0, int64_t n, const Params<F>& p, bool hard) {
    if (v0) {
        std::memcpy(v, v0 + i0, sizeof(F) * n);
    } else {
        const F rest = hard ? p.vr : F(0);
        for (int64_t i = 0; i < n; ++i) v[i] = rest;
    }
}

// Ask for the next block's rows of a [T, N] tensor while this block computes: the rows of one
// block are T short runs far apart, which the hardware prefetchers alone do not keep up with.
template <typename F>
FEWSTEP_INLINE void prefetch_rows(const F* base, int64_t T, int64_t N, int64_t i0, int64_t n) {
    if (!base || n <= 0) return;
    for (int64_t t = 0; t < T; ++t) {
        const char* row = reinterpret_cast<const char*>(base + t * N + i0);
        for (int64_t off = 0; off < int64_t(sizeof(F)) * n; off += 64) __builtin_prefetch(row + off, 0, 3);
    }
}

// s[i] = sum_k H(h[i] - k V_th), thresholds in the outer loop so the inner loop vectorises.
template <typename F>
FEWSTEP_INLINE void count_spikes(const F* h, F* s, int64_t n, const Params<F>& p) {
    const F th1 = p.kthr[1];
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) s[i] = (h[i] - th1 >= F(0)) ? F(1) : F(0);
    for (int k = 2; k <= p.K; ++k) {
        const F thk = p.kthr[k];
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) s[i] += (h[i] - thk >= F(0)) ? F(1) : F(0);
    }
}

// One step of the recurrence for a block: h = charge(v, x) (kept in h), spikes into s, v advanced.
template <typename F, bool HARD>
FEWSTEP_INLINE void step_block(F* v, const F* xt, F* h, F* s, int64_t n, const Params<F>& p) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) h[i] = charge<F, HARD>(v[i], xt[i], p);
    count_spikes(h, s, n, p);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) v[i] = next_state<F, HARD>(h[i], s[i], p);
}

template <typename F, bool HARD>
void forward_block(const F* x, F* out, F* mem, const F* v0, F* vT, int64_t i0, int64_t n, const Params<F> p) {
    // p by value: a local copy the compiler knows no output pointer aliases (the loops vectorise).
    alignas(64) F v[BLK];
    alignas(64) F h[BLK];
    alignas(64) F s[BLK];
    initial_block(v, v0, i0, n, p, HARD);
    const F th1 = p.kthr[1];
    const F mult = p.out_mult;
    prefetch_rows(x, p.bcast ? 1 : p.T, p.N, i0 + n, (p.N - i0 - n) < BLK ? (p.N - i0 - n) : BLK);
    for (int64_t t = 0; t < p.T; ++t) {
        const F* xt = x + t * p.xs + i0;
        F* ot = out + t * p.N + i0;
        if (p.K == 1 && !mem) {  // the common case in one pass
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) {
                const F hi = charge<F, HARD>(v[i], xt[i], p);
                const F si = (hi - th1 >= F(0)) ? F(1) : F(0);
                v[i] = next_state<F, HARD>(hi, si, p);
                ot[i] = si * mult;
            }
            continue;
        }
        step_block<F, HARD>(v, xt, h, s, n, p);
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) ot[i] = s[i] * mult;
        if (mem) std::memcpy(mem + t * p.N + i0, h, sizeof(F) * n);
    }
    std::memcpy(vT + i0, v, sizeof(F) * n);
}

template <typename F, bool HARD, int SG>
void backward_block(const F* x, const F* v0, const F* gout, const F* gmem, const F* gvT, F* gx, F* gv0,
                    double* pdecay, double* pthr, int64_t blk, int64_t i0, int64_t n, const Params<F> p,
                    F* scratch_h, F* scratch_v) {  // p by value, as in forward_block
    alignas(64) F v[BLK];
    alignas(64) F s[BLK];      // spike counts of the current step
    alignas(64) static const F zeros[BLK] = {};
    // Phase 1: the forward recurrence again (bit-identical), h_t and v_{t-1} into the scratch.
    {
        const int64_t next = (p.N - i0 - n) < BLK ? (p.N - i0 - n) : BLK;
        prefetch_rows(x, p.bcast ? 1 : p.T, p.N, i0 + n, next);
        prefetch_rows(gout, p.T, p.N, i0, n);
    }
    initial_block(v, v0, i0, n, p, HARD);
    const bool one = p.K == 1;  // one threshold: each step is one fused loop (no per-step arrays)
    for (int64_t t = 0; t < p.T; ++t) {
        if (scratch_v) std::memcpy(scratch_v + t * BLK, v, sizeof(F) * n);
        if (one) {
            const F* xt = x + t * p.xs + i0;
            F* ht = scratch_h + t * BLK;
            const F th1 = p.kthr[1];
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) {
                const F h = charge<F, HARD>(v[i], xt[i], p);
                ht[i] = h;
                v[i] = next_state<F, HARD>(h, (h - th1 >= F(0)) ? F(1) : F(0), p);
            }
        } else {
            step_block<F, HARD>(v, x + t * p.xs + i0, scratch_h + t * BLK, s, n, p);
        }
    }
    // Phase 2: reverse time. Per step, as autograd evaluates the reference's graph:
    //   gso     = dL/d out * (V_th if scale_output)                (out = s or s V_th)
    //   soft:   g_s = gso + (-dL/dv) V_th  (r = s; gso without the reset term if detached)
    //   hard:   g_1 = (gso + dL/dv v_reset) + (-(dL/dv h))  for K = 1 (r = H(h - V_th) = the first
    //           spike); ((dL/dv v_reset) + (-(dL/dv h))) + gso for K > 1; gso if detached
    //   dL/dh   = ((dL/dmembrane + v-path) + g_K g(z_K) + ... + g_2 g(z_2)) + g_1 g(z_1),
    //           v-path = dL/dv (soft) or dL/dv (1 - r) (hard), z_k = h - k V_th
    //   dL/dx_t = dL/dh,  dL/dv_{t-1} = dL/dh * decay
    alignas(64) F acc[BLK];    // dL/dh being summed
    alignas(64) F gs[BLK];     // dL/d(spike term k), k >= 2
    alignas(64) F gz1[BLK];    // the first spike term's contribution to dL/dh
    alignas(64) F gth[BLK];    // this step's dL/dV_th per neuron
    alignas(64) F gv[BLK];     // dL/dv_t
    if (gvT) std::memcpy(gv, gvT + i0, sizeof(F) * n);
    else std::memset(gv, 0, sizeof(F) * n);
    double gdecay = 0.0, gthr = 0.0;
    const F thr = p.thr, vr = p.vr, lam = p.lam, th1 = p.kthr[1];
    const bool scale = p.scale, detach = p.detach, multi = p.K > 1, has_gm = gmem != nullptr;
    for (int64_t t = p.T - 1; t >= 0; --t) {
        const F* h = scratch_h + t * BLK;
        const F* go = gout ? gout + t * p.N + i0 : zeros;
        const F* gm = gmem ? gmem + t * p.N + i0 : zeros;
        F* gxt = p.bcast ? scratch_h + t * BLK : gx + t * p.N + i0;  // h_t is not read after this step
        if (one && !pthr) {  // the same sums as below, in one loop
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) {
                const F hi = h[i], g_v = gv[i];
                const F gso = scale ? go[i] * thr : go[i];
                const F z1 = hi - th1;
                const F g1 = surrogate_grad<F, SG>(z1, p);
                F g_first, vpath;
                if (HARD) {
                    g_first = detach ? gso : (gso + g_v * vr) + (-(g_v * hi));
                    vpath = g_v * (F(1) - ((z1 >= F(0)) ? F(1) : F(0)));
                } else {
                    g_first = detach ? gso : gso + ((-g_v) * thr);
                    vpath = g_v;
                }
                const F gh = (has_gm ? gm[i] + vpath : vpath) + g_first * g1;
                gxt[i] = gh;
                gv[i] = gh * lam;
            }
        } else {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
            const F hi = h[i], g_v = gv[i];
            const F gso = scale ? go[i] * thr : go[i];
            const F z1 = hi - th1;
            const F r = (z1 >= F(0)) ? F(1) : F(0);
            const F g1 = surrogate_grad<F, SG>(z1, p);
            F g_s, g_first, vpath;
            if (HARD) {
                const F by_reset = (g_v * vr) + (-(g_v * hi));
                g_s = gso;
                g_first = detach ? gso : (multi ? by_reset + gso : (gso + g_v * vr) + (-(g_v * hi)));
                vpath = g_v * (F(1) - r);
            } else {
                g_s = detach ? gso : gso + ((-g_v) * thr);
                g_first = g_s;
                vpath = g_v;
            }
            acc[i] = has_gm ? gm[i] + vpath : vpath;
            gs[i] = g_s;
            gz1[i] = g_first * g1;
            s[i] = r;
            gth[i] = -(g_first * g1);
        }
        for (int k = p.K; k >= 2; --k) {
            const F thk = p.kthr[k], fk = F(k);
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) {
                const F z = h[i] - thk;
                const F gz = gs[i] * surrogate_grad<F, SG>(z, p);
                acc[i] += gz;
                s[i] += (z >= F(0)) ? F(1) : F(0);
                gth[i] -= fk * gz;
            }
        }
        if (pthr) {  // dL/dV_th: the surrogates' -k g terms, plus out = s V_th and the soft reset h - s V_th
            double sum = 0.0;
#pragma omp simd reduction(+ : sum)
            for (int64_t i = 0; i < n; ++i) {
                F g = gth[i];
                if (scale) g += go[i] * s[i];
                if (!HARD) g -= gv[i] * s[i];  // gv still holds dL/dv_t here
                sum += double(g);
            }
            gthr += sum;
        }
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
            const F gh = acc[i] + gz1[i];
            gxt[i] = gh;
            gv[i] = gh * lam;
        }
        }
        if (scratch_v) {
            const F* vp = scratch_v + t * BLK;
            double sum = 0.0;
#pragma omp simd reduction(+ : sum)
            for (int64_t i = 0; i < n; ++i) sum += double(gxt[i] * (HARD ? vp[i] - vr : vp[i]));
            gdecay += sum;
        }
    }
    if (p.bcast) {  // dL/dx = sum_t dL/dx_t, in increasing t as autograd's sum over the expanded dim
        F* g = gx + i0;
        std::memcpy(g, scratch_h, sizeof(F) * n);
        for (int64_t t = 1; t < p.T; ++t) {
            const F* row = scratch_h + t * BLK;
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) g[i] += row[i];
        }
    }
    if (gv0) std::memcpy(gv0 + i0, gv, sizeof(F) * n);
    if (pdecay) pdecay[blk] = gdecay;
    if (pthr) pthr[blk] = gthr;
}

template <typename F>
Params<F> make_params(int64_t T, int64_t N, int K, double lam, double vr, double thr, int thr_is_tensor,
                      int scale, double width, int detach, int broadcast) {
    Params<F> p;
    p.T = T; p.N = N;
    p.bcast = broadcast != 0;
    p.xs = p.bcast ? 0 : N; p.K = K < 1 ? 1 : (K > MAXK ? MAXK : K);
    p.lam = F(lam); p.vr = F(vr); p.thr = F(thr);
    p.kthr[0] = F(0);
    for (int k = 1; k <= p.K; ++k) {
        // The reference computes k * V_th in the tensor's precision for a tensor threshold and
        // in double (a Python float product) for a number; round the same way.
        p.kthr[k] = thr_is_tensor ? F(F(k) * F(thr)) : F(double(k) * thr);
    }
    p.out_mult = scale ? F(thr) : F(1);
    p.scale = scale != 0;
    p.width = F(width);
    p.two_w = F(2.0 * width);
    p.w_sq = F(width * width);
    p.detach = detach != 0;
    return p;
}

FEWSTEP_INLINE int64_t num_blocks(int64_t N) { return (N + BLK - 1) / BLK; }

template <typename F>
void forward(const F* x, F* out, F* mem, const F* v0, F* vT, const Params<F>& p, bool hard, int nthreads) {
    const int64_t nb = num_blocks(p.N);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int64_t b = 0; b < nb; ++b) {
        const int64_t i0 = b * BLK;
        const int64_t n = (p.N - i0) < BLK ? (p.N - i0) : BLK;
        if (hard) forward_block<F, true>(x, out, mem, v0, vT, i0, n, p);
        else forward_block<F, false>(x, out, mem, v0, vT, i0, n, p);
    }
}

template <typename F>
int backward(const F* x, const F* v0, const F* gout, const F* gmem, const F* gvT, F* gx, F* gv0,
             double* pdecay, double* pthr, const Params<F>& p, bool hard, int sg, int nthreads) {
    const int64_t nb = num_blocks(p.N);
    int failed = 0;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        F* scratch = static_cast<F*>(std::malloc(sizeof(F) * BLK * p.T * (pdecay ? 2 : 1)));
        if (!scratch) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t b = 0; b < nb; ++b) {
            if (!scratch) continue;
            const int64_t i0 = b * BLK;
            const int64_t n = (p.N - i0) < BLK ? (p.N - i0) : BLK;
            F* sv = pdecay ? scratch + BLK * p.T : nullptr;
            const int variant = (hard ? 4 : 0) + sg;
            switch (variant) {
#define FEWSTEP_CASE(V, H, S) \
                case V: backward_block<F, H, S>(x, v0, gout, gmem, gvT, gx, gv0, pdecay, pthr, b, i0, n, p, scratch, sv); break;
                FEWSTEP_CASE(0, false, 0) FEWSTEP_CASE(1, false, 1) FEWSTEP_CASE(2, false, 2) FEWSTEP_CASE(3, false, 3)
                FEWSTEP_CASE(4, true, 0) FEWSTEP_CASE(5, true, 1) FEWSTEP_CASE(6, true, 2) FEWSTEP_CASE(7, true, 3)
#undef FEWSTEP_CASE
                default: break;
            }
        }
        std::free(scratch);
    }
    return failed ? 1 : 0;
}

}  // namespace

extern "C" {

// ABI version: the host checks it so a stale cached build is never used.
int fewstep_cpu_neuron_abi() { return 2; }
int64_t fewstep_cpu_neuron_block() { return BLK; }

#define FEWSTEP_DEFINE(F, SUFFIX)                                                                            \
    int fewstep_neuron_fwd_##SUFFIX(const F* x, F* out, F* mem, const F* v0, F* vT, int64_t T, int64_t N,     \
                                    int K, int hard, double lam, double vr, double thr, int thr_is_tensor,    \
                                    int scale, int broadcast, int nthreads) {                                 \
        const Params<F> p = make_params<F>(T, N, K, lam, vr, thr, thr_is_tensor, scale, 1.0, 0, broadcast);    \
        forward<F>(x, out, mem, v0, vT, p, hard != 0, nthreads);                                             \
        return 0;                                                                                             \
    }                                                                                                         \
    int fewstep_neuron_bwd_##SUFFIX(const F* x, const F* v0, const F* gout, const F* gmem, const F* gvT,     \
                                    F* gx, F* gv0, double* pdecay, double* pthr, int64_t T, int64_t N, int K, \
                                    int hard, double lam, double vr, double thr, int thr_is_tensor,          \
                                    int scale, int sg, double width, int detach, int broadcast,              \
                                    int nthreads) {                                                          \
        const Params<F> p = make_params<F>(T, N, K, lam, vr, thr, thr_is_tensor, scale, width, detach,      \
                                           broadcast);                                                       \
        return backward<F>(x, v0, gout, gmem, gvT, gx, gv0, pdecay, pthr, p, hard != 0, sg, nthreads);       \
    }

// One element type per build (-DFEWSTEP_F64 for double): float32 is what training uses, and a
// build of both takes twice as long; the host builds the float64 library only when asked.
#ifdef FEWSTEP_F64
FEWSTEP_DEFINE(double, f64)
#else
FEWSTEP_DEFINE(float, f32)
#endif

}  // extern "C"
