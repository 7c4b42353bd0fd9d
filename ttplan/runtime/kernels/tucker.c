/* ttplan's fused CPU kernel: one pass over each image for a 1x1 mixing, a k_h x k_w convolution and a second
 * 1x1 mixing (a folded hodec / Tucker-2 layer), with the intermediates kept in per-thread buffers that stay in
 * cache, instead of three passes of stock ops over maps in memory.
 *
 *   y[b] = Wc @ conv(Wa @ x[b], G)        x [B, C, H, W], Wa [R1, C], G [R2, R1, KH, KW], Wc [O, R2], float32
 *
 * Either mixing may be absent (R1 = 0: the conv reads x; O = 0: the conv writes y). A stride-1 conv reads its map
 * in place, padded once, through one shifted view per window position (`Layer`, the direct form); other strides
 * unfold it (im2col). The arithmetic is the three products' multiply-accumulates, nothing recomputed: ttplan counts
 * them as the planned MACs. Like every blocked product it computes whole register tiles and drops what lies past
 * the result (the rows past a multiple of 8, the columns past one of 32; the direct form also a padding's worth of
 * columns per output row), which the planner's cost model knows (`ttplan.core.fusion.FusedForm.tile_macs`); a thin
 * mixing (at most THIN_K channels summed per result channel, as hodec's grouped mixings are) runs row by row
 * instead, exactly its MACs. The last product may add a bias per output channel and a residual map (a ResNet block's
 * shortcut) and apply a ReLU as it stores each tile or row (a folded BatchNorm's shift, the block's add and the ReLU
 * after it), so the result needs no further pass.
 * Built by ttplan/runtime/kernels/build.py with the C compiler found at run time; without one, ttplan runs
 * the same steps as stock torch ops. Vectors are GCC/Clang vector extensions, so the code is portable C
 * that the compiler maps to AVX-512, AVX2, NEON or plain scalar code for the machine it builds on. */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The vector width and the register block follow the machine the kernel is built for: AVX-512 has 32 vector
 * registers of 16 floats, so a block of 8 rows x 2 vectors (16 accumulators) stays in registers; AVX2 (and NEON,
 * and plain scalar code) have 16 registers of at most 8 floats, so a block of 4 rows x 2 vectors (8 accumulators,
 * the two vectors of B and a broadcast of A: 11 registers). A block the registers cannot hold spills its
 * accumulators to the stack on every step and runs at half speed (8 x 32 floats on AVX2: 32 accumulators).
 * The tile (MR x NR, what the weights' packing and the planner's cost model see) is the same on every machine:
 * the register blocks cover it. */
#if defined(__AVX512F__)
#define VL 16 /* floats per vector */
#define SR 8  /* rows of a register block */
#else
#define VL 8
#define SR 4
#endif
#define SV 2          /* vectors per row of a register block */
#define MR 8          /* rows of a tile */
#define NR 32         /* columns of a tile */
#define NV (NR / VL)  /* vectors per row of a tile */
/* A mixing that sums at most this many channels per output channel is thin: a register tile would spend its time
 * storing, and its rows past the few the product has (hodec's grouped mixings: 1 to 4 rows, 2 to 4 channels) */
#define THIN_K 4

typedef float vf __attribute__((vector_size(VL * 4)));
typedef float vfu __attribute__((vector_size(VL * 4), aligned(4), may_alias));
typedef int vi __attribute__((vector_size(VL * 4)));

static inline vf loadu(const float *p) { return *(const vfu *)p; }
static inline void storeu(float *p, vf v) { *(vfu *)p = v; }

/* max(v, 0) lane by lane, NaN kept (as torch.relu keeps it): the lanes below zero cleared */
static inline vf relu(vf v) { return (vf)((vi)v & ~(vi)(v < (vf){0})); }

/* the even lanes of a then b: a stride-2 row of 2 * VL floats as VL consecutive ones */
static inline vf evens(vf a, vf b) {
#if VL == 16
#define EVENS 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#else
#define EVENS 0, 2, 4, 6, 8, 10, 12, 14
#endif
#if defined(__clang__)
    return __builtin_shufflevector(a, b, EVENS);
#else
    return __builtin_shuffle(a, b, (vi){EVENS});
#endif
}

/* acc[r0.., v0..] = the SR x sv vectors of A[m0 + r0.., :] @ B[:, n0 + v0 * VL..]: one register block, `a` the
 * tile's packed row block of A ([K][MR]) and `b` the tile's first column of B, whose row k starts off[k] floats
 * further; with `ahead`, the next tile's columns prefetched as it goes, since K rows far apart are K streams no
 * hardware prefetcher follows. Always inlined, so that each constant `sv` (SV, or 1 for a tile's odd last vector)
 * gets its own unrolled loop. */
static inline __attribute__((always_inline)) void block(int K, const float *restrict a, const float *restrict b,
                                                        const int *restrict off, vf acc[MR][NV], int r0, int v0,
                                                        int ahead, int sv) {
    vf sum[SR][SV];
    for (int i = 0; i < SR; i++)
        for (int j = 0; j < sv; j++) sum[i][j] = (vf){0};
    a += r0;
    b += v0 * VL;
    for (int k = 0; k < K; k++, a += MR) {
        const float *row = b + off[k];
        if (ahead) {
            __builtin_prefetch(row + NR);
            __builtin_prefetch(row + NR + 16);
        }
        vf bv[SV];
        for (int j = 0; j < sv; j++) bv[j] = loadu(row + j * VL);
        for (int i = 0; i < SR; i++)
            for (int j = 0; j < sv; j++) sum[i][j] += a[i] * bv[j];
    }
    for (int i = 0; i < SR; i++)
        for (int j = 0; j < sv; j++) acc[r0 + i][v0 + j] = sum[i][j];
}

/* acc = A[m0:m0+MR, :] @ B[:, n0:n0+nv VL] (nv: the vectors the tile needs, NV for a whole one) with `a` the packed
 * row block of A ([K][MR], contiguous) and B's rows at `off`, register block by register block, the first
 * prefetching the next tile's columns; the vectors past nv are left as they are */
static inline void tile(int K, const float *restrict a, const float *restrict b, const int *restrict off,
                        vf acc[MR][NV], int nv) {
    for (int r0 = 0; r0 < MR; r0 += SR)
        for (int v0 = 0; v0 < nv; v0 += SV) {
            if (nv - v0 >= SV)
                block(K, a, b, off, acc, r0, v0, r0 == 0 && v0 == 0, SV);
            else
                block(K, a, b, off, acc, r0, v0, r0 == 0 && v0 == 0, 1);
        }
}

/* The epilogue of one stored row segment: times scale, plus bias, plus residual (NULL: none), then ReLU (NaN kept, as
 * torch.relu); one loop for each combination, so that each element is written once and every loop vectorizes */
static inline void finish(float *restrict d, const float *restrict s, int len, float scale, float bias,
                          const float *restrict res, int relu_on) {
    if (res && relu_on)
        for (int t = 0; t < len; t++) {
            float v = s[t] * scale + bias + res[t];
            d[t] = v < 0.f ? 0.f : v;
        }
    else if (res)
        for (int t = 0; t < len; t++) d[t] = s[t] * scale + bias + res[t];
    else if (relu_on)
        for (int t = 0; t < len; t++) {
            float v = s[t] * scale + bias;
            d[t] = v < 0.f ? 0.f : v;
        }
    else
        for (int t = 0; t < len; t++) d[t] = s[t] * scale + bias;
}

/* Store a tile's mb rows and nb columns into C, rows ldc apart; with `bias` (the tile's first row's entry) each row
 * plus its bias, with `res` (the residual's entry at the tile's first element, laid out as C) plus the residual, with
 * `relu` then max(., 0): the last product's epilogue, on the tile while it is in registers. */
static inline void put(float *restrict c, int ldc, vf acc[MR][NV], int mb, int nb, const float *bias,
                       const float *res, int relu_on) {
    if (bias)
        for (int i = 0; i < mb; i++)
            for (int j = 0; j < NV; j++) acc[i][j] += bias[i];
    if (res) {
        if (nb == NR)
            for (int i = 0; i < mb; i++)
                for (int j = 0; j < NV; j++) acc[i][j] += loadu(res + (size_t)i * ldc + j * VL);
        else
            for (int i = 0; i < mb; i++) {
                float row[NR] = {0};
                memcpy(row, res + (size_t)i * ldc, sizeof(float) * (size_t)nb);
                for (int j = 0; j < NV; j++) acc[i][j] += loadu(row + j * VL);
            }
    }
    if (relu_on)
        for (int i = 0; i < mb; i++)
            for (int j = 0; j < NV; j++) acc[i][j] = relu(acc[i][j]);
    if (nb == NR) {
        for (int i = 0; i < mb; i++)
            for (int j = 0; j < NV; j++) storeu(c + (size_t)i * ldc + j * VL, acc[i][j]);
        return;
    }
    for (int i = 0; i < mb; i++) {
        float row[NR];
        for (int j = 0; j < NV; j++) storeu(row + j * VL, acc[i][j]);
        memcpy(c + (size_t)i * ldc, row, sizeof(float) * (size_t)nb);
    }
}

/* C (rows ldc apart) = A[M, K] @ B[K, lo:hi] (+ bias[M], + res laid out as C, then ReLU with relu_on: `put`), A packed
 * in row blocks (see ttplan_tucker_bind), B's row k at B + off[k]. Of its tiles (row block x column block), in
 * loop order, this call computes the `part`-th of `parts` runs of equal length: threads sharing one product each
 * take a run (0 of 1: all), so that a product of few columns but many rows (a small map, many channels) still
 * splits evenly. The last, partial column block computes only the vectors it needs: read in place where B may be
 * read a tile past its columns (`slack`: a buffer of the kernel's own, allocated so), else copied zero-padded into
 * `panel` (K x NR floats, then K ints: the caller's x). Whichever operand is larger is read once: rows outer when A
 * is (each row block of A stays in cache while all of B's columns pass, B itself re-read from cache), columns outer
 * when B is (each column block of B stays in cache while every row block of A passes). */
static void gemm(int M, int lo, int hi, int K, const float *restrict Ap, const float *restrict B,
                 const int *restrict off, int slack, float *restrict C, int ldc, float *restrict panel,
                 const float *bias, const float *res, int relu_on, int part, int parts) {
    int full = lo + (hi - lo) / NR * NR, blocks = (M + MR - 1) / MR, columns = (hi - lo + NR - 1) / NR;
    long units = (long)blocks * columns, first = units * part / parts, last = units * (part + 1) / parts, unit = 0;
    vf acc[MR][NV];
#define STORE(m0, n0, nb)                                                                                          \
    put(C + (size_t)(m0) * ldc + (n0), ldc, acc, M - (m0) < MR ? M - (m0) : MR, (nb), bias ? bias + (m0) : NULL,  \
        res ? res + (size_t)(m0) * ldc + (n0) : NULL, relu_on)
#define MINE (unit >= first && unit < last)
    if (M >= hi - lo) {
        for (int m0 = 0; m0 < M; m0 += MR, unit += full < hi) /* (the partial block's unit of this row block) */
            for (int n0 = lo; n0 < full; n0 += NR, unit++)
                if (MINE) {
                    tile(K, Ap + (size_t)m0 * K, B + n0, off, acc, NV);
                    STORE(m0, n0, NR);
                }
    } else {
        for (int n0 = lo; n0 < full; n0 += NR)
            for (int m0 = 0; m0 < M; m0 += MR, unit++)
                if (MINE) {
                    tile(K, Ap + (size_t)m0 * K, B + n0, off, acc, NV);
                    STORE(m0, n0, NR);
                }
    }
    if (full < hi) {
        int nb = hi - full, nv = (nb + VL - 1) / VL, ready = slack;
        const float *b = B + full;
        const int *rows = off;
        for (int m0 = 0, r = 0; m0 < M; m0 += MR, r++) {
            /* the partial block's unit of row block r: last in its row (rows outer), else after every full one */
            unit = M >= hi - lo ? (long)r * columns + columns - 1 : (long)(columns - 1) * blocks + r;
            if (!MINE) continue;
            if (!ready) {
                int *at = (int *)(panel + (size_t)K * NR); /* the panel's row offsets, after its K x NR floats */
                for (int k = 0; k < K; k++) {
                    memcpy(panel + (size_t)k * NR, B + off[k] + full, sizeof(float) * (size_t)nb);
                    memset(panel + (size_t)k * NR + nb, 0, sizeof(float) * (size_t)(NR - nb));
                    at[k] = k * NR;
                }
                b = panel;
                rows = at;
                ready = 1;
            }
            tile(K, Ap + (size_t)m0 * K, b, rows, acc, nv);
            STORE(m0, full, nb);
        }
    }
#undef MINE
#undef STORE
}

/* The rows of a register tile: the weights arrive packed in blocks of this many rows (ttplan/runtime/kernels/tucker.py
 * packs them and checks it against this). */
int ttplan_tile_rows(void) { return MR; }

/* The most channels a thin mixing sums (ttplan/core/fusion.py's cost model checks it against this) */
int ttplan_thin_channels(void) { return THIN_K; }

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

/* One call's layer: its sizes, packed weights and epilogue, and how the conv reads its map.
 * im2col: the conv's operand is the unfolded map col [(c, kh, kw), (oh, ow)], built per image (9 copies of the map
 * for a 3x3 window).
 * direct (stride 1 where the padding fits, see `plan_direct`): the conv's map is copied once into a padded buffer,
 * each channel CS floats holding H + 2 ph rows of Wp = W + pw columns (one run of pw zeros between rows pads the
 * right of one row and the left of the next), its first element S in; row (c, kh, kw) of the conv's operand is then
 * that buffer shifted by c CS + kh dh Wp + kw dw, read in place. The conv computes NW = OH Wp "wide" columns, of which
 * OW of every Wp are outputs (the rest, a padding's worth per row, are computed and dropped), rounded up to whole
 * vectors (NWr); the last product stores them in a staging buffer, from which each output row is copied to y with the
 * epilogue. That staged epilogue also serves a per-channel scale and grouped output mixings (J > 1), whose output
 * channel is not a tile's row alone; otherwise the last product applies the epilogue to its tiles as it stores them.
 * Grouped mixings: Wa [R1 / G, C / G] maps channels [g C/G, (g+1) C/G) to [g R1/G, (g+1) R1/G) for each of G blocks;
 * Wc [O / J, R2 / J] maps the conv result, viewed as [R2 / J, J OH OW], to [O / J, J OH OW]: output channel
 * o J + j from conv channels r J + j. */
typedef struct {
    int C, H, W, R1, R2, KH, KW, O, sh, sw, ph, pw, dh, dw, OH, OW;
    int G, J; /* the mixings' groups: Wa mixes each of G blocks of channels, Wc each of J interleaved ones */
    const float *At, *Gt, *Ct, *scale, *bias;
    int relu_on;
    int direct, Wp, CS, S, NWr;
    int staged; /* the last product stores as it is, and a pass per output row applies the epilogue */
    int thin;   /* the output mixing sums at most THIN_K channels: one pass straight into y (`thin_out`) */
    int *offA, *offG, *offC; /* the three products' B row offsets */
    int ys;                  /* the channel stride of y and the residual: the whole image's OH OW (a band's too) */
} Layer;

/* The columns of the conv's result: NWr wide ones (direct) or OH * OW */
static int conv_columns(const Layer *L) { return L->direct ? L->NWr : L->OH * L->OW; }

/* Whether the direct form applies: stride 1, and the padding at most the dilated window's reach (so the wide rows
 * hold every output column), and it computes at most twice the unfolded map's tiles of columns. Measured on an
 * AVX-512 machine, it ran 1.25x faster than im2col even for 8x8 maps, when it still computed 96 columns (rows of 9,
 * rounded to tiles; now to vectors: 80) for 64 outputs; `ttplan_direct_form` tells the tests which form a geometry
 * takes. */
static void plan_direct(Layer *L) {
    L->direct = 0;
    if (L->sh != 1 || L->sw != 1 || L->pw > L->dw * (L->KW - 1)) return;
    int Wp = L->W + L->pw, NWr = (L->OH * Wp + VL - 1) / VL * VL;
    int tiles = (L->OH * L->OW + NR - 1) / NR * NR;
    if (NWr > 2 * tiles) return;
    L->direct = 1;
    L->Wp = Wp;
    L->CS = (L->H + 2 * L->ph) * Wp + L->pw;
    L->S = L->ph * Wp + L->pw;
    L->NWr = NWr;
}

/* How L runs: the conv's form (`plan_direct`); whether the output mixing is thin (`thin_out`), else whether the last
 * product stages its result for an epilogue pass (the direct form's wide rows, grouped output mixings, a scale) */
static void plan_forms(Layer *L) {
    plan_direct(L);
    L->thin = L->O && L->R2 / L->J <= THIN_K;
    L->staged = !L->thin && (L->direct || L->J > 1 || L->scale);
}

/* A thin product's row m of A, packed in row blocks of MR ([K][MR] each), as K floats */
static inline void thin_row(const float *Ap, int K, int m, float w[THIN_K]) {
    for (int k = 0; k < K; k++) w[k] = Ap[(size_t)(m / MR) * K * MR + (size_t)k * MR + m % MR];
}

/* dst[m][0:n] = sum over k < K of w[k] src_k[0:n]: a thin product's row (K <= THIN_K), vector by vector, the sum in
 * the order a register tile sums it, so the result is the same */
static inline void thin_sum(const float *w, int K, const float *const *src, float *restrict dst, int n) {
    int at = 0;
    for (; at + VL <= n; at += VL) {
        vf acc = w[0] * loadu(src[0] + at);
        for (int k = 1; k < K; k++) acc += w[k] * loadu(src[k] + at);
        storeu(dst + at, acc);
    }
    for (; at < n; at++) {
        float acc = w[0] * src[0][at];
        for (int k = 1; k < K; k++) acc += w[k] * src[k][at];
        dst[at] = acc;
    }
}

/* The output mixing, thin (at most THIN_K conv channels per output channel), with the epilogue, straight into y: output
 * channel c = o J + j sums conv channels r J + j of t2 (rows N apart; output row oh's columns start at oh * row),
 * for the channels [c0, c1). Exactly its MACs but the direct form's wide columns between rows (summed in the same
 * pass, so that each pass is a few long runs), with no register tile's rows past O / J and no staging pass. */
static void thin_out(const Layer *L, const float *t2, int N, int row, float *yb, const float *rb, int c0, int c1) {
    enum { LINE = 4096 }; /* floats summed per pass: whole output rows of t2 (wide ones included), then finished */
    int J = L->J, K = L->R2 / J, per = row <= LINE ? LINE / row : 0; /* output rows per pass; 0: a row in pieces */
    float w[THIN_K], line[LINE];
    const float *src[THIN_K];
    for (int c = c0; c < c1; c++) {
        int j = c % J;
        thin_row(L->Ct, K, c / J, w);
        float scale = L->scale ? L->scale[c] : 1.f, bias = L->bias ? L->bias[c] : 0.f;
        for (int oh = 0; oh < L->OH; oh += per ? per : 1) {
            int rows = per ? (L->OH - oh < per ? L->OH - oh : per) : 1;
            for (int ow = 0; ow < (per ? 1 : L->OW); ow += LINE) {
                int n = per ? (rows - 1) * row + L->OW : (L->OW - ow < LINE ? L->OW - ow : LINE);
                for (int k = 0; k < K; k++) src[k] = t2 + (size_t)(k * J + j) * N + (size_t)oh * row + ow;
                thin_sum(w, K, src, line, n);
                for (int r = 0; r < rows; r++) {
                    size_t at = (size_t)c * L->ys + (size_t)(oh + r) * L->OW + ow;
                    finish(yb + at, line + (size_t)r * row, per ? L->OW : n, scale, bias, rb ? rb + at : NULL,
                           L->relu_on);
                }
            }
        }
    }
}

/* The conv and the output mixing of one image, from the conv's input `src` [Cin, H, W] (the first mixing's result,
 * or x itself), then the epilogue into yb (channels L->ys apart, as the residual rb), by the `threads` threads of
 * the enclosing parallel region (thread `t`) sharing each product's columns (and each copy's channels) with a
 * barrier between steps, or by one thread (threads 1, no barrier). map: the padded map (direct; zero outside the
 * map, with a tile's slack after it) or the unfolded one (im2col); t2: the conv's result before the output mixing;
 * stage: the last product's wide result (direct). */
static void convolve(const Layer *L, const float *src, float *yb, const float *rb, float *map, float *t2,
                     float *stage, float *panel, int t, int threads) {
    int HW = L->H * L->W, OHW = L->OH * L->OW, Cin = L->R1 ? L->R1 : L->C, N = conv_columns(L);
    int KK = Cin * L->KH * L->KW, out = L->O ? L->O : L->R2;
    int c0 = Cin * t / threads, c1 = Cin * (t + 1) / threads;
    if (L->direct)
        for (int c = c0; c < c1; c++)
            for (int h = 0; h < L->H; h++)
                memcpy(map + (size_t)c * L->CS + L->S + (size_t)h * L->Wp, src + (size_t)c * HW + (size_t)h * L->W,
                       sizeof(float) * (size_t)L->W);
    else if (c1 > c0)
        unfold(src + (size_t)c0 * HW, c1 - c0, L->H, L->W, L->KH, L->KW, L->sh, L->sw, L->ph, L->pw, L->dh, L->dw,
               L->OH, L->OW, map + (size_t)c0 * L->KH * L->KW * OHW);
    if (threads > 1) {
#pragma omp barrier
    }
    /* the last product stores into y with the epilogue, or into the staging buffer as it is (`staged`) */
    float *last = L->staged ? stage : yb;
    int ld = L->staged ? N : L->ys, tail = !L->staged;
    if (L->O)
        gemm(L->R2, 0, N, KK, L->Gt, map, L->offG, 1, t2, N, panel, NULL, NULL, 0, t, threads);
    else
        gemm(L->R2, 0, N, KK, L->Gt, map, L->offG, 1, last, ld, panel, tail ? L->bias : NULL, tail ? rb : NULL,
             tail && L->relu_on, t, threads);
    if (L->thin) {
        if (threads > 1) {
#pragma omp barrier
        }
        thin_out(L, t2, N, L->direct ? L->Wp : L->OW, yb, rb, out * t / threads, out * (t + 1) / threads);
    } else if (L->O) {
        if (threads > 1) {
#pragma omp barrier
        }
        /* grouped: [R2 / J, J N] -> [O / J, J N], the columns of every group in one product */
        gemm(L->O / L->J, 0, L->J * N, L->R2 / L->J, L->Ct, t2, L->offC, 1, last, L->J * ld, panel,
             tail ? L->bias : NULL, tail ? rb : NULL, tail && L->relu_on, t, threads);
    }
    if (L->staged) {
        if (threads > 1) {
#pragma omp barrier
        }
        int row = L->direct ? L->Wp : L->OW; /* a staged row's stride: wide rows (direct) or the output's */
        for (int c = out * t / threads; c < out * (t + 1) / threads; c++)
            for (int oh = 0; oh < L->OH; oh++) {
                size_t at = (size_t)c * L->ys + (size_t)oh * L->OW;
                finish(yb + at, stage + (size_t)c * N + (size_t)oh * row, L->OW, L->scale ? L->scale[c] : 1.f,
                       L->bias ? L->bias[c] : 0.f, rb ? rb + at : NULL, L->relu_on);
            }
    }
    if (threads > 1) {
#pragma omp barrier
    }
}

/* The first mixing of rows [r0, r1) of one image xb [C, H, W] into dst, its channels ld floats apart (each group's
 * Wa over its block of channels), by the threads sharing its columns (`gemm`'s part) */
static void mix_rows(const Layer *L, const float *xb, int r0, int r1, float *dst, int ld, float *panel, int t,
                     int threads) {
    int HW = L->H * L->W, rows = L->R1 / L->G, inner = L->C / L->G;
    if (inner <= THIN_K) { /* thin: each of the R1 result rows in one pass (`thin_sum`), the threads sharing them */
        float w[THIN_K];
        for (int m = L->R1 * t / threads; m < L->R1 * (t + 1) / threads; m++) {
            const float *src[THIN_K];
            for (int k = 0; k < inner; k++) src[k] = xb + (size_t)(m / rows * inner + k) * HW + (size_t)r0 * L->W;
            thin_row(L->At, inner, m % rows, w);
            thin_sum(w, inner, src, dst + (size_t)m * ld, (r1 - r0) * L->W);
        }
        return;
    }
    for (int g = 0; g < L->G; g++)
        gemm(rows, 0, (r1 - r0) * L->W, inner, L->At, xb + (size_t)g * inner * HW + (size_t)r0 * L->W, L->offA, 0,
             dst + (size_t)g * rows * ld, ld, panel, NULL, NULL, 0, t, threads);
}

/* One image, by the `threads` threads of the enclosing parallel region (thread `t`) sharing each step, or by one:
 * the first mixing into t1 [R1, H W] (where there is one), then `convolve`. */
static void image(const Layer *L, const float *xb, float *yb, const float *rb, float *t1, float *map, float *t2,
                  float *stage, float *panel, int t, int threads) {
    if (L->R1) {
        mix_rows(L, xb, 0, L->H, t1, L->H * L->W, panel, t, threads);
        if (threads > 1) {
#pragma omp barrier
        }
    }
    convolve(L, L->R1 ? t1 : xb, yb, rb, map, t2, stage, panel, t, threads);
}

/* The calling thread's scratch memory, kept from call to call and grown as needed (never freed while the thread
 * lives: at most the largest layer's buffers). Buffers allocated and freed per call cost page faults on every call
 * wherever they exceed glibc's trim threshold (128 KiB by default), which returns them to the system: a tenth of a
 * batch-1 layer's time. NULL if the memory cannot be had. */
static float *workspace(size_t floats) {
    static _Thread_local float *data;
    static _Thread_local size_t held;
    if (floats > held) {
        free(data);
        data = malloc(sizeof(float) * floats);
        held = data ? floats : 0;
    }
    return data;
}

/* One worker's buffers (t1, the conv's map, t2, stage: `image`) and `panels` panels of `panel` floats in this
 * thread's workspace, each 16 floats aligned; the map zeroed where the direct form needs its padding (the rest of
 * the buffers is written before it is read). Returns the first panel, or NULL without memory. */
static float *buffers_of(const size_t sizes[4], int zero_map, size_t panel, int panels, float *buffers[4]) {
    size_t total = 0, at[4];
    for (int i = 0; i < 4; i++) {
        at[i] = total;
        total += (sizes[i] + 15) / 16 * 16;
    }
    float *base = workspace(total + panel * (size_t)panels);
    if (!base) return NULL;
    for (int i = 0; i < 4; i++) buffers[i] = sizes[i] ? base + at[i] : NULL;
    if (zero_map) memset(buffers[1], 0, sizeof(float) * sizes[1]);
    return base + total;
}

/* One worker's buffer sizes for layer L (`image`, `band`): t1 (the first mixing's result; with `own_input`, the
 * conv's input even without a first mixing: a band's rows copied), the conv's map, t2, stage. The conv's operand
 * (the padded map, direct, or the unfolded one) and t2 carry a tile's slack past their last column, which a partial
 * column block reads in place (`gemm`). */
static void buffer_sizes(const Layer *L, int own_input, size_t sizes[4]) {
    int Cin = L->R1 ? L->R1 : L->C, KK = Cin * L->KH * L->KW, N = conv_columns(L);
    sizes[0] = (L->R1 || own_input) ? (size_t)Cin * L->H * L->W : 0;
    sizes[1] = L->direct ? (size_t)Cin * L->CS + (size_t)(L->KW - 1) * L->dw + 2 * NR
                         : (size_t)KK * L->OH * L->OW + NR;
    sizes[2] = L->O ? (size_t)L->R2 * N + NR : 0;
    sizes[3] = L->staged ? (size_t)(L->O ? L->O : L->R2) * N : 0;
}

/* The B row offsets of L's conv (into the padded map, direct, or the unfolded one) and of its output mixing (t2
 * viewed as [R2 / J, J N]) */
static void conv_offsets(const Layer *L, int *offG, int *offC) {
    int Cin = L->R1 ? L->R1 : L->C, N = conv_columns(L), OHW = L->OH * L->OW;
    for (int k = 0; k < L->R2 / L->J; k++) offC[k] = k * L->J * N;
    for (int c = 0, k = 0; c < Cin; c++)
        for (int kh = 0; kh < L->KH; kh++)
            for (int kw = 0; kw < L->KW; kw++, k++)
                offG[k] = L->direct ? c * L->CS + kh * L->dh * L->Wp + kw * L->dw : k * OHW;
}

/* Output rows [oh0, oh1) of every image, by the calling thread alone: the rows of x they read (zero rows where they
 * fall in the padding) mixed into t1, then `convolve` on that band as a layer of its own, without vertical padding,
 * its results stored at its rows of y. Threads sharing the images of a small batch each take a band: no barrier
 * between the steps, and each band's intermediates stay in its thread's cache (sharing each step's columns
 * instead moved them between cores at every step). `panel_size`: a product's panel (`gemm`). Returns 0, or 1
 * without memory. */
static int band(const Layer *L, int B, const float *x, float *y, const float *res, int oh0, int oh1,
                size_t panel_size) {
    Layer Lb = *L;
    int v0 = oh0 * L->sh - L->ph; /* the band's first row of the padded map, minus the padding */
    Lb.H = (oh1 - oh0 - 1) * L->sh + (L->KH - 1) * L->dh + 1;
    Lb.ph = 0;
    Lb.OH = oh1 - oh0;
    plan_forms(&Lb);
    int Cin = L->R1 ? L->R1 : L->C, KK = Cin * L->KH * L->KW, W = L->W, HW = L->H * W, HbW = Lb.H * W;
    size_t sizes[4], out = (size_t)(L->O ? L->O : L->R2) * L->ys;
    buffer_sizes(&Lb, 1, sizes);
    float *buffers[4];
    /* the panel, then the band's own row offsets */
    float *panel = buffers_of(sizes, Lb.direct, panel_size + (size_t)KK + (size_t)L->R2, 1, buffers);
    if (!panel) return 1;
    Lb.offG = (int *)(panel + panel_size);
    Lb.offC = Lb.offG + KK;
    conv_offsets(&Lb, Lb.offG, Lb.offC);
    int r0 = v0 > 0 ? v0 : 0, r1 = v0 + Lb.H < L->H ? v0 + Lb.H : L->H; /* the map's rows the band reads */
    float *t1 = buffers[0];
    if (r1 <= r0)
        memset(t1, 0, sizeof(float) * sizes[0]);
    else
        for (int c = 0; c < Cin; c++) { /* rows in the padding: zero, and never written below */
            memset(t1 + (size_t)c * HbW, 0, sizeof(float) * (size_t)(r0 - v0) * W);
            memset(t1 + (size_t)c * HbW + (size_t)(r1 - v0) * W, 0, sizeof(float) * (size_t)(v0 + Lb.H - r1) * W);
        }
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * L->C * HW;
        if (r1 > r0) {
            if (L->R1)
                mix_rows(L, xb, r0, r1, t1 + (size_t)(r0 - v0) * W, HbW, panel, 0, 1);
            else
                for (int c = 0; c < Cin; c++)
                    memcpy(t1 + (size_t)c * HbW + (size_t)(r0 - v0) * W, xb + (size_t)c * HW + (size_t)r0 * W,
                           sizeof(float) * (size_t)(r1 - r0) * W);
        }
        size_t at = (size_t)b * out + (size_t)oh0 * L->OW;
        convolve(&Lb, t1, y + at, res ? res + at : NULL, buffers[1], buffers[2], buffers[3], panel, 0, 1);
    }
    return 0;
}

/* Whether the conv of this geometry reads its map in place (1: the direct form) or unfolds it (0: im2col) */
int ttplan_direct_form(int H, int W, int KH, int KW, int sh, int sw, int ph, int pw, int dh, int dw) {
    Layer L = {.H = H, .W = W, .KH = KH, .KW = KW, .sh = sh, .sw = sw, .ph = ph, .pw = pw, .dh = dh, .dw = dw,
               .OH = (H + 2 * ph - dh * (KH - 1) - 1) / sh + 1, .OW = (W + 2 * pw - dw * (KW - 1) - 1) / sw + 1};
    plan_direct(&L);
    return L.direct;
}

/* Free what `ttplan_tucker_bind` returned (NULL: nothing) */
void ttplan_tucker_free(void *handle) {
    Layer *L = handle;
    if (!L) return;
    free(L->offA);
    free(L->offG);
    free(L->offC);
    free(L);
}

/* Wa, G and Wc arrive packed in row blocks of MR: block j holds rows j*MR... of the [M, K] matrix as [K][MR], zero
 * rows past M (G as its [R2, R1*KH*KW] matrix), so that a tile reads its block of A contiguously; Wa is
 * [R1 / Gin, C / Gin] and Wc [O / Jout, R2 / Jout] (grouped mixings, `Layer`; 1 and 1: plain ones). `scale` and `bias`
 * (NULL for none) hold a float per output channel: the result times the scale, plus the bias, then plus the residual
 * (`ttplan_tucker_run`), then a ReLU where `relu_on`.
 * Binds a layer for maps of C x H x W: everything a call needs but the maps, planned once (the conv's form, the
 * products' row offsets), so that a call from Python passes six arguments instead of thirty and computes nothing
 * twice (a frozen model calls one bound layer for every forward). The weights are read through these pointers at
 * every call: the caller keeps them alive and unchanged. Returns NULL when memory could not be had; free with
 * `ttplan_tucker_free`. */
void *ttplan_tucker_bind(int C, int H, int W, int R1, const float *Wa, int R2, int KH, int KW, const float *G, int O,
                         const float *Wc, int sh, int sw, int ph, int pw, int dh, int dw, int OH, int OW,
                         const float *scale, const float *bias, int relu_on, int Gin, int Jout) {
    Layer *L = malloc(sizeof(Layer));
    if (!L) return NULL;
    *L = (Layer){.C = C, .H = H, .W = W, .R1 = R1, .R2 = R2, .KH = KH, .KW = KW, .O = O, .sh = sh, .sw = sw,
                 .ph = ph, .pw = pw, .dh = dh, .dw = dw, .OH = OH, .OW = OW, .G = R1 ? Gin : 1, .J = O ? Jout : 1,
                 .At = Wa, .Gt = G, .Ct = Wc, .scale = scale, .bias = bias, .relu_on = relu_on};
    plan_forms(L);
    L->ys = OH * OW;
    int Cin = R1 ? R1 : C, KK = Cin * KH * KW;
    L->offA = malloc(sizeof(int) * (size_t)(C > 0 ? C : 1));
    L->offG = malloc(sizeof(int) * (size_t)KK);
    L->offC = malloc(sizeof(int) * (size_t)(R2 > 0 ? R2 : 1));
    if (!L->offA || !L->offG || !L->offC) {
        ttplan_tucker_free(L);
        return NULL;
    }
    for (int k = 0; k < C / L->G; k++) L->offA[k] = k * H * W;
    conv_offsets(L, L->offG, L->offC);
    return L;
}

/* y = the bound layer on x [B, C, H, W] (contiguous), plus `res` (NULL for none: a residual laid out as y,
 * [B, O, OH, OW] contiguous) before the ReLU, by `threads` threads. Returns 0, or 1 when memory for the buffers
 * could not be had (nothing is computed). Images are shared among the threads when there are at least as many as
 * threads; otherwise each thread takes a band of every image's output rows (`band`), or, where the output has fewer
 * rows than threads, a share of each step's columns. */
int ttplan_tucker_run(const void *handle, int B, const float *x, float *y, const float *res, int threads) {
    const Layer *L = handle;
    int HW = L->H * L->W, OH = L->OH, Cin = L->R1 ? L->R1 : L->C, KK = Cin * L->KH * L->KW;
    int maxk = KK > L->C ? KK : L->C; /* the largest inner size of the three products */
    if (L->R2 > maxk) maxk = L->R2;
    size_t out = (size_t)(L->O ? L->O : L->R2) * L->ys; /* one image's output */
    size_t sizes[4];                                     /* one worker's buffers, then its panels */
    buffer_sizes(L, 0, sizes);
    size_t panel_size = (size_t)maxk * NR + (size_t)maxk; /* K x NR floats, then K ints */
    int failed = 0;
    if (B < threads && threads > 1 && OH >= threads) { /* each thread a band of every image's output rows */
#pragma omp parallel num_threads(threads) reduction(| : failed)
        {
#ifdef _OPENMP
            int t = omp_get_thread_num(), n = omp_get_num_threads();
#else
            int t = 0, n = 1;
#endif
            int oh0 = OH * t / n, oh1 = OH * (t + 1) / n;
            if (oh1 > oh0) failed |= band(L, B, x, y, res, oh0, oh1, panel_size);
        }
    } else if (B < threads && threads > 1) { /* one image at a time, its columns shared (too few rows for bands) */
        float *buffers[4];
        float *panels = buffers_of(sizes, L->direct, panel_size, threads, buffers);
        if (!panels) failed = 1;
        if (!failed) {
#pragma omp parallel num_threads(threads)
            {
#ifdef _OPENMP
                int t = omp_get_thread_num(), n = omp_get_num_threads();
#else
                int t = 0, n = 1;
#endif
                for (int b = 0; b < B; b++)
                    image(L, x + (size_t)b * L->C * HW, y + (size_t)b * out, res ? res + (size_t)b * out : NULL,
                          buffers[0], buffers[1], buffers[2], buffers[3], panels + (size_t)t * panel_size, t, n);
            }
        }
    } else {
#pragma omp parallel num_threads(threads) reduction(| : failed)
        {
            float *buffers[4];
            float *panel = buffers_of(sizes, L->direct, panel_size, 1, buffers);
            failed |= !panel;
#pragma omp for schedule(static)
            for (int b = 0; b < B; b++) {
                if (!panel) continue;
                image(L, x + (size_t)b * L->C * HW, y + (size_t)b * out, res ? res + (size_t)b * out : NULL,
                      buffers[0], buffers[1], buffers[2], buffers[3], panel, 0, 1);
            }
        }
    }
    return failed;
}

/* A run of residual blocks, each two bound layers `first` (handles[2i]) and `second` (handles[2i + 1]) with the block's
 * input as the second's residual: in = x; for each block, t = first(in), out_i = second(t) + in; in = out_i. One
 * call for the whole run instead of one per layer from Python (whose checks, allocations and foreign calls took about
 * as long as a batch-1 ResNet-56 layer's arithmetic). `t` holds each block's intermediate (every first layer's
 * output has the same shape), `outs[i]` block i's output (distinct from its input; the caller may reuse a buffer two
 * blocks later). Returns 0, or 1 when a layer's buffers could not be had (the run stops there). */
int ttplan_tucker_chain(const void *const *handles, int blocks, int B, const float *x, float *t, float *const *outs,
                        int threads) {
    const float *in = x;
    for (int i = 0; i < blocks; i++) {
        if (ttplan_tucker_run(handles[2 * i], B, in, t, NULL, threads) ||
            ttplan_tucker_run(handles[2 * i + 1], B, t, outs[i], in, threads))
            return 1;
        in = outs[i];
    }
    return 0;
}
