/* The bookkeeping around the expert matmuls of a dropless top-k MoE layer, on the CPU:
 * moe_studio/engine/native_moe.py wraps each pair of functions below as one autograd
 * node.
 *
 * In torch ops this work is a dozen small kernels per direction (softmax, topk, the
 * renormalisation, logsumexp, argsort, counts, a row gather and its accumulating
 * scatter, a weighted permutation write and a sum), each a separate sweep over memory
 * with its own dispatch; at the trainer's shape (768 tokens, d 128, 8 experts) they
 * took about as long as the expert matmuls' extra cost over one dense FFN. Here each
 * step is one pass:
 *
 *   route    softmax, top-k by logit (ties to the lower expert id, as a stable sort),
 *            gate weights (optionally renormalised over the k), logsumexp, and back;
 *   sort     a counting sort of the (token, choice) pairs by expert, stable in pair
 *            order, with each pair's position in the sorted order;
 *   gather   the sorted rows of x, and back: each token's k row gradients summed
 *            (no scatter, so no accumulation order to depend on);
 *   combine  every token's k expert outputs weighted by its gates and summed, and
 *            back: the rows' gradients and the gates' gradients.
 *
 * float32 and int64 only, C-contiguous, no Python API (ctypes, which releases the
 * GIL). Built by setup.py like agreement_kernel.c, with -ffast-math at compile time
 * only; NaN and inf logits are found with integer tests on the bits and reported
 * (return 1), and the caller takes its torch path for that step.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fastmath.h"

static inline int not_finite(float x)
{
    return (as_int(x) & 0x7f800000) == 0x7f800000;
}

/* logits [T, E] -> probs [T, E] (softmax), idx [T, k] (the k largest scores, largest
 * first, ties to the lower id; the score is the logit, or with bias [E] the probability
 * plus the expert's bias: aux-loss-free balancing), weight [T, k] (their probabilities,
 * divided by their sum when renorm), lse [T] (logsumexp of the logits). Returns 1 if
 * any logit is NaN or infinite (nothing else is then meaningful), else 0. */
EXPORT int moe_route_topk(const float *logits, int64_t T, int64_t E, int64_t k, int renorm,
                          const float *bias, float *probs, int64_t *idx, float *weight,
                          float *lse)
{
    for (int64_t t = 0; t < T; t++) {
        const float *l = logits + t * E;
        float *p = probs + t * E;
        int bad = 0;
        float mx = l[0];
        for (int64_t e = 0; e < E; e++) {
            bad |= not_finite(l[e]);
            mx = l[e] > mx ? l[e] : mx;
        }
        if (bad)
            return 1;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t e = 0; e < E; e++) {
            float v = exp_nonpos(l[e] - mx);
            p[e] = v;
            s += v;
        }
        float inv = 1.0f / s;
#pragma omp simd
        for (int64_t e = 0; e < E; e++)
            p[e] *= inv;
        lse[t] = mx + log_pos(s);

        /* The j-th choice is the largest score below the (j-1)-th in the order
         * (score descending, id ascending): O(k E), no marks to keep. */
        int64_t *ix = idx + t * k;
        float *w = weight + t * k;
        float prev = 0.0f, sum = 0.0f;
        int64_t prev_id = -1;
        for (int64_t j = 0; j < k; j++) {
            int64_t best = -1;
            float bv = 0.0f;
            for (int64_t e = 0; e < E; e++) {
                float v = bias != NULL ? p[e] + bias[e] : l[e];
                int after_prev = j == 0 || v < prev || (v == prev && e > prev_id);
                if (after_prev && (best < 0 || v > bv)) {
                    best = e;
                    bv = v;
                }
            }
            ix[j] = best;
            w[j] = p[best];
            sum += p[best];
            prev = bv;
            prev_id = best;
        }
        if (renorm) {
            float r = 1.0f / sum;
            for (int64_t j = 0; j < k; j++)
                w[j] *= r;
        }
    }
    return 0;
}

/* The gradient of the logits from those of probs, weight and lse (any may be NULL:
 * that output was not used). probs, idx and weight as moe_route_topk returned them. */
EXPORT void moe_route_topk_backward(const float *probs, const int64_t *idx, const float *weight,
                                    const float *gprobs, const float *gweight, const float *glse,
                                    int64_t T, int64_t E, int64_t k, int renorm, float *glogits)
{
    for (int64_t t = 0; t < T; t++) {
        const float *p = probs + t * E;
        float *g = glogits + t * E;
        if (gprobs != NULL)
            memcpy(g, gprobs + t * E, sizeof(float) * (size_t)E);
        else
            memset(g, 0, sizeof(float) * (size_t)E);
        if (gweight != NULL) {
            const int64_t *ix = idx + t * k;
            const float *gw = gweight + t * k;
            if (renorm) {
                /* w_j = p_j / S over the k chosen: dL/dp_j = (gw_j - sum_m gw_m w_m) / S */
                const float *w = weight + t * k;
                float s = 0.0f, dot = 0.0f;
                for (int64_t j = 0; j < k; j++) {
                    s += p[ix[j]];
                    dot += gw[j] * w[j];
                }
                float r = 1.0f / s;
                for (int64_t j = 0; j < k; j++)
                    g[ix[j]] += (gw[j] - dot) * r;
            } else {
                for (int64_t j = 0; j < k; j++)
                    g[ix[j]] += gw[j];
            }
        }
        /* through the softmax: p * (g - <p, g>); d lse / d logits = p */
        float c = 0.0f;
#pragma omp simd reduction(+ : c)
        for (int64_t e = 0; e < E; e++)
            c += p[e] * g[e];
        float gl = glse != NULL ? glse[t] : 0.0f;
#pragma omp simd
        for (int64_t e = 0; e < E; e++)
            g[e] = p[e] * (g[e] - c + gl);
    }
}

/* idx [P] expert of each pair (P = T k, pair p = t k + j) -> order [P] (pair ids by
 * expert, in pair order within an expert), pos [P] (where pair p sits in order),
 * counts [E] (pairs per expert); start [E] is scratch. Returns 1 if an id is outside
 * [0, E). */
EXPORT int moe_sort_pairs(const int64_t *idx, int64_t P, int64_t E, int64_t *order,
                          int64_t *pos, int64_t *counts, int64_t *start)
{
    memset(counts, 0, sizeof(int64_t) * (size_t)E);
    for (int64_t p = 0; p < P; p++) {
        int64_t e = idx[p];
        if (e < 0 || e >= E)
            return 1;
        counts[e]++;
    }
    int64_t at = 0;
    for (int64_t e = 0; e < E; e++) {
        start[e] = at;
        at += counts[e];
    }
    for (int64_t p = 0; p < P; p++) {
        int64_t q = start[idx[p]]++;
        order[q] = p;
        pos[p] = q;
    }
    return 0;
}

/* xs [P, d]: xs[i] = x[order[i] / k] (x [T, d]). */
EXPORT void moe_gather_rows(const float *x, const int64_t *order, int64_t P, int64_t k,
                            int64_t d, float *xs)
{
    for (int64_t i = 0; i < P; i++)
        memcpy(xs + i * d, x + (order[i] / k) * d, sizeof(float) * (size_t)d);
}

/* gx [T, d]: gx[t] = sum over j of gxs[pos[t k + j]] (the gather's backward). */
EXPORT void moe_gather_rows_backward(const float *gxs, const int64_t *pos, int64_t T, int64_t k,
                                     int64_t d, float *gx)
{
    for (int64_t t = 0; t < T; t++) {
        float *o = gx + t * d;
        memcpy(o, gxs + pos[t * k] * d, sizeof(float) * (size_t)d);
        for (int64_t j = 1; j < k; j++) {
            const float *r = gxs + pos[t * k + j] * d;
#pragma omp simd
            for (int64_t c = 0; c < d; c++)
                o[c] += r[c];
        }
    }
}

/* out [T, d]: out[t] = sum over j of w[t k + j] * ys[pos[t k + j]] (ys [P, d] in the
 * sorted order). */
EXPORT void moe_combine(const float *ys, const int64_t *pos, const float *w, int64_t T,
                        int64_t k, int64_t d, float *out)
{
    for (int64_t t = 0; t < T; t++) {
        float *o = out + t * d;
        const float *r = ys + pos[t * k] * d;
        float a = w[t * k];
#pragma omp simd
        for (int64_t c = 0; c < d; c++)
            o[c] = a * r[c];
        for (int64_t j = 1; j < k; j++) {
            r = ys + pos[t * k + j] * d;
            a = w[t * k + j];
#pragma omp simd
            for (int64_t c = 0; c < d; c++)
                o[c] += a * r[c];
        }
    }
}

/* The combine's backward: gys[pos[p]] = w[p] * gout[t] and, when gw is not NULL,
 * gw[p] = <ys[pos[p]], gout[t]> for every pair p = t k + j. */
EXPORT void moe_combine_backward(const float *ys, const int64_t *pos, const float *w,
                                 const float *gout, int64_t T, int64_t k, int64_t d,
                                 float *gys, float *gw)
{
    for (int64_t t = 0; t < T; t++) {
        const float *go = gout + t * d;
        for (int64_t j = 0; j < k; j++) {
            int64_t p = t * k + j;
            float *gr = gys + pos[p] * d;
            float a = w[p];
#pragma omp simd
            for (int64_t c = 0; c < d; c++)
                gr[c] = a * go[c];
            if (gw != NULL) {
                const float *r = ys + pos[p] * d;
                float s = 0.0f;
#pragma omp simd reduction(+ : s)
                for (int64_t c = 0; c < d; c++)
                    s += r[c] * go[c];
                gw[p] = s;
            }
        }
    }
}
