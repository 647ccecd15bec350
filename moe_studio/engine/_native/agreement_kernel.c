/* One fused pass over an ensemble's log-probabilities [M, N, V] for the agreement
 * metrics of moe_studio/engine/agreement.py (ensemble_metrics).
 *
 * Per token, the M members' probabilities are computed once into a small L1-resident
 * buffer, and every exp, log, entropy, mixture and argmax on the V axis is done there:
 * M exp and 1 + M(M-1)/2 log evaluations per (token, class), which is what exact
 * entropies and pairwise Jensen-Shannon divergences need. The exp and log are our own
 * branch-free polynomials (relative error <= 5e-7, near float32 rounding; the tests
 * check them against float64) so that the compiler vectorises the loops, which calls
 * to the C library's expf and logf would prevent.
 *
 * Plain C99 without the Python API, loaded with ctypes (which releases the GIL, so
 * callers split the tokens over threads: each call handles tokens [t0, t1) and adds to
 * its own sums). Built by setup.py as an optional extension with -ffast-math at compile
 * time only: linking without it keeps GCC's crtfastmath.o, which would switch the whole
 * process to flush-to-zero, out of the library (a test checks subnormals survive).
 * Fast math means no NaN handling in the arithmetic, so NaN and +inf inputs are found
 * with integer tests on the bits and reported (return 1) for the caller to take its
 * torch path; -inf log-probabilities are clamped to LOGP_FLOOR as in the torch path.
 */
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "fastmath.h"

#define LOGP_FLOOR (-1.0e4f)
#define PROB_FLOOR (1e-30f)

/* first index j with x[j] == best (best is the maximum of x), as torch.argmax */
static inline int64_t first_index_of(const float *x, int64_t v, float best)
{
    int32_t first = (int32_t)v;
#pragma omp simd reduction(min : first)
    for (int32_t j = 0; j < (int32_t)v; j++) {
        int32_t c = x[j] == best ? j : (int32_t)v;
        first = c < first ? c : first;
    }
    return first < v ? first : 0;
}

/* One pass over a mixture s: sum of s log(max(s, PROB_FLOOR)), sum of s, max of s. */
static inline void mixture_stats(const float *s, int64_t v, float *slogs, float *total,
                                 float *best)
{
    float a = 0.0f, b = 0.0f, mx = s[0];
#pragma omp simd reduction(+ : a, b) reduction(max : mx)
    for (int64_t j = 0; j < v; j++) {
        a += s[j] * log_pos(fmaxf(s[j], PROB_FLOOR));
        b += s[j];
        mx = fmaxf(mx, s[j]);
    }
    *slogs = a;
    *total = b;
    *best = mx;
}

/* The scalar check the tests run against the library's own exp and log. */
EXPORT void moe_agreement_exp_log(const float *x, int64_t n, float *exp_out, float *log_out)
{
    for (int64_t j = 0; j < n; j++) {
        exp_out[j] = exp_nonpos(x[j] < 0.0f ? x[j] : 0.0f);
        log_out[j] = log_pos(x[j] > PROB_FLOOR ? x[j] : PROB_FLOOR);
    }
}

/* Returns 0, 1 when lp holds NaN or +inf (the sums are then meaningless), or -1 when
 * the scratch buffer cannot be allocated. lp is C-contiguous [m, n, v]; per-token
 * outputs are indexed with the full n. */
EXPORT int moe_agreement_pass(const float *lp, int64_t m, int64_t n, int64_t v,
                       int64_t t0, int64_t t1,    /* token range of this call */
                       const int64_t *y,          /* [n] or NULL */
                       int64_t *pred,             /* [m, n] */
                       double *picked,            /* [m, n], written when y */
                       int64_t *ens_pred,         /* [n], written when y */
                       double *h_member_sum,      /* [m] */
                       double *h_total_sum,       /* [1] */
                       double *js_sum,            /* [m (m - 1) / 2] */
                       double *h_members_tok,     /* [m, n] or NULL */
                       double *h_total_tok)       /* [n] or NULL */
{
    float *buf = (float *)malloc(sizeof(float) * (size_t)((m + 1) * v + m));
    if (buf == NULL)
        return -1;
    float *s = buf + m * v, *h = s + v;
    const float log_m = log_pos((float)m);
    double h_tot = 0.0;
    int32_t bad = 0;
    for (int64_t t = t0; t < t1; t++) {
        for (int64_t i = 0; i < m; i++) {
            const float *row = lp + (i * n + t) * v;
            float *pi = buf + i * v;
            float hi = 0.0f, best = row[0];
#pragma omp simd reduction(+ : hi) reduction(max : best) reduction(| : bad)
            for (int64_t j = 0; j < v; j++) {
                uint32_t b = (uint32_t)as_int(row[j]);
                bad |= ((b & 0x7fffffffu) > 0x7f800000u) | (b == 0x7f800000u);  /* NaN, +inf */
                float x = fmaxf(row[j], LOGP_FLOOR);
                float e = exp_nonpos(x);
                pi[j] = e;
                hi -= e * x;
                best = fmaxf(best, row[j]);
            }
            h[i] = hi;
            h_member_sum[i] += hi;
            if (h_members_tok)
                h_members_tok[i * n + t] = hi;
            pred[i * n + t] = first_index_of(row, v, best);
            if (y)
                picked[i * n + t] = (double)row[y[t]];
        }
        memcpy(s, buf, sizeof(float) * (size_t)v);
        for (int64_t i = 1; i < m; i++) {
            const float *pi = buf + i * v;
#pragma omp simd
            for (int64_t j = 0; j < v; j++)
                s[j] += pi[j];
        }
        float slogs, total, best;
        mixture_stats(s, v, &slogs, &total, &best);
        if (y)
            ens_pred[t] = first_index_of(s, v, best);
        /* H(s / M) = (log M * sum s - sum s log s) / M */
        float ht = (log_m * total - slogs) / (float)m;
        h_tot += ht;
        if (h_total_tok)
            h_total_tok[t] = ht;
        int64_t q = 0;
        for (int64_t i = 0; i < m; i++) {
            const float *pi = buf + i * v;
            for (int64_t k = i + 1; k < m; k++, q++) {
                const float *pk = buf + k * v;
                float a = 0.0f, b = 0.0f;
#pragma omp simd reduction(+ : a, b)
                for (int64_t j = 0; j < v; j++) {
                    float sj = pi[j] + pk[j];
                    float x = fmaxf(sj, PROB_FLOOR);
                    a += sj * log_pos(x);
                    b += sj;
                }
                /* H((p_i + p_k) / 2) = (log 2 * sum s - sum s log s) / 2 */
                float hmix = (LN2 * b - a) * 0.5f;
                js_sum[q] += (double)hmix - 0.5 * ((double)h[i] + (double)h[k]);
            }
        }
    }
    *h_total_sum += h_tot;
    free(buf);
    return bad ? 1 : 0;
}
