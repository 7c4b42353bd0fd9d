/* ttplan's fused CPU kernel: one pass over each image for a 1x1 mixing, a k_h x k_w convolution and a second
 * 1x1 mixing (a folded hodec / Tucker-2 layer), with the intermediates kept in per-thread buffers that stay in
 * cache, instead of three passes of stock ops over maps in memory.
 *
 *   y[b] = Wc @ conv(Wa @ x[b], G)        x [B, C, H, W], Wa [R1, C], G [R2, R1, KH, KW], Wc [O, R2], float32
 *
 * Either mixing may be absent (R1 = 0: the conv reads x; O = 0: the conv writes y). The arithmetic is exactly
 * the three products' multiply-accumulates, nothing recomputed: ttplan counts them as the planned MACs. The last
 * product may add a bias per output channel and a residual map (a ResNet block's shortcut) and apply a ReLU as it
 * stores each tile (a folded BatchNorm's shift, the block's add and the ReLU after it), so the result needs no
 * further pass.
 * Built by ttplan/runtime/kernels/build.py with the C compiler found at run time; without one, ttplan runs
 * the same steps as stock torch ops. Vectors are GCC/Clang vector extensions, so the code is portable C
 * that the compiler maps to AVX-512, AVX2, NEON or plain scalar code for the machine it builds on. */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef float vf __attribute__((vector_size(64)));
typedef float vfu __attribute__((vector_size(64), aligned(4), may_alias));
#define VL 16        /* floats per vector */
#define MR 8         /* rows of a register tile */
#define NR (2 * VL)  /* columns of a register tile */

static inline vf loadu(const float *p) { return *(const vfu *)p; }
static inline void storeu(float *p, vf v) { *(vfu *)p = v; }

/* max(v, 0) lane by lane, NaN kept (as torch.relu keeps it): the lanes below zero cleared */
typedef int vi __attribute__((vector_size(64)));
static inline vf relu(vf v) { return (vf)((vi)v & ~(vi)(v < (vf){0})); }

/* the even lanes of a then b: a stride-2 row of 2 * VL floats as VL consecutive ones */
static inline vf evens(vf a, vf b) {
#if defined(__clang__)
    return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
#else
    return __builtin_shuffle(a, b, (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30});
#endif
}

/* acc = A[m0:m0+MR, :] @ B[:, n0:n0+NR] with `a` the packed row block of A ([K][MR], contiguous) and B rows ldb
 * apart; the next tile's columns are prefetched, since K rows far apart are K streams no hardware prefetcher follows */
static inline void tile(int K, const float *restrict a, const float *restrict b, int ldb, vf acc[MR][2]) {
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = (vf){0};
    for (int k = 0; k < K; k++, b += ldb, a += MR) {
        vf b0 = loadu(b), b1 = loadu(b + VL);
        __builtin_prefetch(b + NR);
        __builtin_prefetch(b + NR + VL);
        for (int i = 0; i < MR; i++) {
            acc[i][0] += a[i] * b0;
            acc[i][1] += a[i] * b1;
        }
    }
}

/* Store a tile's mb rows and nb columns into C, rows ldc apart; with `bias` (the tile's first row's entry) each row
 * plus its bias, with `res` (the residual's entry at the tile's first element, laid out as C) plus the residual, with
 * `relu` then max(., 0): the last product's epilogue, on the tile while it is in registers. */
static inline void put(float *restrict c, int ldc, vf acc[MR][2], int mb, int nb, const float *bias,
                       const float *res, int relu_on) {
    if (bias)
        for (int i = 0; i < mb; i++) {
            acc[i][0] += bias[i];
            acc[i][1] += bias[i];
        }
    if (res) {
        if (nb == NR)
            for (int i = 0; i < mb; i++) {
                acc[i][0] += loadu(res + (size_t)i * ldc);
                acc[i][1] += loadu(res + (size_t)i * ldc + VL);
            }
        else
            for (int i = 0; i < mb; i++) {
                float row[NR] = {0};
                memcpy(row, res + (size_t)i * ldc, sizeof(float) * (size_t)nb);
                acc[i][0] += loadu(row);
                acc[i][1] += loadu(row + VL);
            }
    }
    if (relu_on)
        for (int i = 0; i < mb; i++) {
            acc[i][0] = relu(acc[i][0]);
            acc[i][1] = relu(acc[i][1]);
        }
    if (nb == NR) {
        for (int i = 0; i < mb; i++) {
            storeu(c + (size_t)i * ldc, acc[i][0]);
            storeu(c + (size_t)i * ldc + VL, acc[i][1]);
        }
        return;
    }
    for (int i = 0; i < mb; i++) {
        float row[NR];
        storeu(row, acc[i][0]);
        storeu(row + VL, acc[i][1]);
        memcpy(c + (size_t)i * ldc, row, sizeof(float) * (size_t)nb);
    }
}

/* C[M, N] (rows ldc apart) = A @ B (+ bias[M], + res[M, N] rows ldc apart, then ReLU with relu_on: `put`), A packed in row blocks (see
 * ttplan_tucker_conv2d), B [K, N] rows ldb apart. `panel` holds K x NR
 * floats for the last, partial column block, copied and zero-padded so that every tile runs full vectors.
 * Whichever operand is larger is read once: rows outer when A is (each row block of A stays in cache while all of
 * B's columns pass, B itself re-read from cache), columns outer when B is (each column block of B stays in cache
 * while every row block of A passes). */
static void gemm(int M, int N, int K, const float *restrict Ap, const float *restrict B, int ldb,
                 float *restrict C, int ldc, float *restrict panel, const float *bias, const float *res,
                 int relu_on) {
    int full = N - N % NR;
    vf acc[MR][2];
    if (M >= N) {
        for (int m0 = 0; m0 < M; m0 += MR) {
            int mb = M - m0 < MR ? M - m0 : MR;
            for (int n0 = 0; n0 < full; n0 += NR) {
                tile(K, Ap + (size_t)m0 * K, B + n0, ldb, acc);
                put(C + (size_t)m0 * ldc + n0, ldc, acc, mb, NR, bias ? bias + m0 : NULL,
                    res ? res + (size_t)m0 * ldc + n0 : NULL, relu_on);
            }
        }
    } else {
        for (int n0 = 0; n0 < full; n0 += NR)
            for (int m0 = 0; m0 < M; m0 += MR) {
                tile(K, Ap + (size_t)m0 * K, B + n0, ldb, acc);
                put(C + (size_t)m0 * ldc + n0, ldc, acc, M - m0 < MR ? M - m0 : MR, NR, bias ? bias + m0 : NULL,
                    res ? res + (size_t)m0 * ldc + n0 : NULL, relu_on);
            }
    }
    if (full < N) {
        int nb = N - full;
        for (int k = 0; k < K; k++) {
            memcpy(panel + (size_t)k * NR, B + (size_t)k * ldb + full, sizeof(float) * (size_t)nb);
            memset(panel + (size_t)k * NR + nb, 0, sizeof(float) * (size_t)(NR - nb));
        }
        for (int m0 = 0; m0 < M; m0 += MR) {
            tile(K, Ap + (size_t)m0 * K, panel, NR, acc);
            put(C + (size_t)m0 * ldc + full, ldc, acc, M - m0 < MR ? M - m0 : MR, nb, bias ? bias + m0 : NULL,
                res ? res + (size_t)m0 * ldc + full : NULL, relu_on);
        }
    }
}

/* The rows of a register tile: the weights arrive packed in blocks of this many rows (ttplan/runtime/kernels/tucker.py
 * packs them and checks it against this). */
int ttplan_tile_rows(void) { return MR; }

/* col[(c, kh, kw), (oh, ow)] = the padded, strided, dilated window of src [Cn, H, W] (im2col of one image).
 * Stride 2 along the width runs whole vectors (two loads, one shuffle) wherever both loads stay inside src and
 * the store inside col: lanes past the row's last valid column are overwritten by the padding or the next row. */
static void unfold(const float *restrict src, int Cn, int H, int W, int KH, int KW, int sh, int sw, int ph,
                   int pw, int dh, int dw, int OH, int OW, float *restrict col) {
    const float *src_end = src + (size_t)Cn * H * W;
    const float *col_end = col + (size_t)Cn * KH * KW * OH * OW;
    for (int c = 0; c < Cn; c++)
        for (int kh = 0; kh < KH; kh++)
            for (int kw = 0; kw < KW; kw++) {
                float *dst = col + (size_t)((c * KH + kh) * KW + kw) * OH * OW;
                const float *plane = src + (size_t)c * H * W;
                int lo = 0, hi = OW;  /* output columns whose input column lies inside the map */
                while (lo < OW && lo * sw - pw + kw * dw < 0) lo++;
                while (hi > lo && (hi - 1) * sw - pw + kw * dw >= W) hi--;
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * sh - ph + kh * dh;
                    float *d = dst + (size_t)oh * OW;
                    if (ih < 0 || ih >= H) {
                        memset(d, 0, sizeof(float) * (size_t)OW);
                        continue;
                    }
                    const float *s = plane + (size_t)ih * W - pw + kw * dw;
                    for (int ow = 0; ow < lo; ow++) d[ow] = 0.f;
                    int ow = lo;
                    if (sw == 1)
                        for (; ow < hi; ow++) d[ow] = s[ow];
                    else if (sw == 2)
                        for (; ow < hi && s + 2 * ow + 2 * VL <= src_end && d + ow + VL <= col_end; ow += VL)
                            storeu(d + ow, evens(loadu(s + 2 * ow), loadu(s + 2 * ow + VL)));
                    if (ow > hi) ow = hi;
                    for (; ow < hi; ow++) d[ow] = s[ow * sw];
                    for (ow = hi; ow < OW; ow++) d[ow] = 0.f;
                }
            }
}

/* The columns [lo, hi) of `n` that thread `t` of `threads` computes: whole register tiles, split evenly. */
static void share(int n, int t, int threads, int *lo, int *hi) {
    int tiles = (n + NR - 1) / NR;
    *lo = (int)((long)tiles * t / threads) * NR;
    *hi = (int)((long)tiles * (t + 1) / threads) * NR;
    if (*lo > n) *lo = n;
    if (*hi > n) *hi = n;
}

/* One image, its columns shared among the threads of the enclosing parallel region (batches smaller than the
 * thread count): each product's columns split into whole tiles, a barrier between products. */
static void image_shared(const float *xb, float *yb, int C, int H, int W, int R1, const float *At, int R2, int KH,
                         int KW, const float *Gt, int O, const float *Ct, int sh, int sw, int ph, int pw, int dh,
                         int dw, int OH, int OW, float *t1, float *col, float *t2, float *panel, const float *bias,
                         const float *rb, int relu_on) {
    int HW = H * W, OHW = OH * OW, Cin = R1 ? R1 : C, KK = Cin * KH * KW, lo, hi;
#ifdef _OPENMP
    int t = omp_get_thread_num(), threads = omp_get_num_threads();
#else
    int t = 0, threads = 1;
#endif
    if (R1) {
        share(HW, t, threads, &lo, &hi);
        if (hi > lo) gemm(R1, hi - lo, C, At, xb + lo, HW, t1 + lo, HW, panel, NULL, NULL, 0);
#pragma omp barrier
    }
    int c0 = Cin * t / threads, c1 = Cin * (t + 1) / threads;
    if (c1 > c0)
        unfold((R1 ? t1 : xb) + (size_t)c0 * HW, c1 - c0, H, W, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW,
               col + (size_t)c0 * KH * KW * OHW);
#pragma omp barrier
    share(OHW, t, threads, &lo, &hi);
    if (hi > lo)
        gemm(R2, hi - lo, KK, Gt, col + lo, OHW, (O ? t2 : yb) + lo, OHW, panel, O ? NULL : bias,
             O || !rb ? NULL : rb + lo, O ? 0 : relu_on);
    if (O) {
#pragma omp barrier
        if (hi > lo) gemm(O, hi - lo, R2, Ct, t2 + lo, OHW, yb + lo, OHW, panel, bias, rb ? rb + lo : NULL, relu_on);
    }
#pragma omp barrier
}

/* Wa, G and Wc arrive packed in row blocks of MR: block j holds rows j*MR... of the [M, K] matrix as [K][MR], zero
 * rows past M (G as its [R2, R1*KH*KW] matrix), so that a tile reads its block of A contiguously. `bias` (NULL for
 * none) holds a float per output channel, added by the last product, then `res` (NULL for none: a residual laid out
 * as y, [B, O, OH, OW] contiguous), then a ReLU where `relu_on`.
 * Returns 0, or 1 when memory for the buffers could not be had (nothing is computed). Images are shared among
 * the threads when there are at least as many as threads; otherwise each image's columns are. */
int ttplan_tucker_conv2d(int B, int C, int H, int W, const float *x, int R1, const float *Wa, int R2, int KH,
                         int KW, const float *G, int O, const float *Wc, int sh, int sw, int ph, int pw, int dh,
                         int dw, int OH, int OW, float *y, const float *bias, const float *res, int relu_on,
                         int threads) {
    int HW = H * W, OHW = OH * OW, Cin = R1 ? R1 : C, KK = Cin * KH * KW;
    int maxk = KK > C ? KK : C; /* the largest inner size of the three products */
    if (R2 > maxk) maxk = R2;
    size_t out = (size_t)(O ? O : R2) * OHW;
    int failed = 0;
    const float *Gt = G, *At = Wa, *Ct = Wc;
    if (!failed && B < threads && threads > 1) { /* one image at a time, its columns shared */
        float *t1 = R1 ? malloc(sizeof(float) * (size_t)R1 * HW) : NULL;
        float *col = malloc(sizeof(float) * (size_t)KK * OHW);
        float *t2 = O ? malloc(sizeof(float) * (size_t)R2 * OHW) : NULL;
        float *panels = malloc(sizeof(float) * (size_t)maxk * NR * threads);
        if (!col || !panels || (R1 && !t1) || (O && !t2)) failed = 1;
        if (!failed) {
#pragma omp parallel num_threads(threads)
            {
#ifdef _OPENMP
                float *panel = panels + (size_t)omp_get_thread_num() * maxk * NR;
#else
                float *panel = panels;
#endif
                for (int b = 0; b < B; b++)
                    image_shared(x + (size_t)b * C * HW, y + (size_t)b * out, C, H, W, R1, At, R2, KH, KW, Gt, O,
                                 Ct, sh, sw, ph, pw, dh, dw, OH, OW, t1, col, t2, panel, bias,
                                 res ? res + (size_t)b * out : NULL, relu_on);
            }
        }
        free(t1);
        free(col);
        free(t2);
        free(panels);
    } else if (!failed) {
#pragma omp parallel num_threads(threads) reduction(| : failed)
        {
            float *t1 = R1 ? malloc(sizeof(float) * (size_t)R1 * HW) : NULL;
            float *col = malloc(sizeof(float) * (size_t)KK * OHW);
            float *t2 = O ? malloc(sizeof(float) * (size_t)R2 * OHW) : NULL;
            float *panel = malloc(sizeof(float) * (size_t)maxk * NR);
            int mine = !col || !panel || (R1 && !t1) || (O && !t2);
            failed |= mine;
#pragma omp for schedule(static)
            for (int b = 0; b < B; b++) {
                if (mine) continue;
                const float *xb = x + (size_t)b * C * HW;
                float *yb = y + (size_t)b * out;
                const float *rb = res ? res + (size_t)b * out : NULL;
                if (R1) gemm(R1, HW, C, At, xb, HW, t1, HW, panel, NULL, NULL, 0);
                unfold(R1 ? t1 : xb, Cin, H, W, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, col);
                gemm(R2, OHW, KK, Gt, col, OHW, O ? t2 : yb, OHW, panel, O ? NULL : bias, O ? NULL : rb,
                     O ? 0 : relu_on);
                if (O) gemm(O, OHW, R2, Ct, t2, OHW, yb, OHW, panel, bias, rb, relu_on);
            }
            free(t1);
            free(col);
            free(t2);
            free(panel);
        }
    }
    return failed;
}
