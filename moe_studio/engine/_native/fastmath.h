/* What the native kernels share: the export macro, the module stub setuptools wants,
 * and branch-free float32 exp and log that the compiler can vectorise (calls to the C
 * library's expf and logf would keep a loop scalar). Plain C99, no Python API. */
#ifndef MOE_FASTMATH_H
#define MOE_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(_WIN32)
#define EXPORT __declspec(dllexport)
#else
#define EXPORT
#endif

/* setuptools links every extension as a Python module and has the Windows linker export
 * PyInit_<name>: give it one (never called; the library is loaded with ctypes). */
#ifdef MOE_PYINIT
EXPORT void *MOE_PYINIT(void) { return 0; }
#endif

#define LN2 0.6931471805599453f


static inline int32_t as_int(float f) { int32_t i; memcpy(&i, &f, 4); return i; }
static inline float as_float(int32_t i) { float f; memcpy(&f, &i, 4); return f; }

/* e^x for x <= 0 (log-probabilities; a few ulp above 0 is fine): exactly 0 below
 * -87.3, where float32 e^x is subnormal or 0. x = k ln2 + r, |r| <= ln2 / 2, e^r by a
 * degree-5 polynomial with constant term 1, fitted for least maximum relative error
 * on that interval (9.2e-8, below float32 rounding; Taylor needs degree 6 for 1.3e-7). */
static inline float exp_nonpos(float x)
{
    float xc = fmaxf(x, -87.0f);
    int32_t k = (int32_t)(xc * 1.4426950408889634f - 0.5f);  /* round to nearest (<= 0) */
    float kf = (float)k;
    float r = xc - kf * 0.693145751953125f;                  /* ln2 split hi + lo */
    r = r - kf * 1.428606765330187e-06f;
    float p = 0.008290310094620668f;
    p = p * r + 0.041897931518462474f;
    p = p * r + 0.16667636268653938f;
    p = p * r + 0.49999149507435964f;
    p = p * r + 0.9999997071647564f;
    p = p * r + 1.0f;                                       /* e^0 = 1 exactly */
    float e = p * as_float((k + 127) << 23);
    int32_t keep = -(int32_t)(x >= -87.0f);                 /* all ones or 0, no branch */
    return as_float(as_int(e) & keep);
}

/* ln x for normal x > 0 (callers clamp to PROB_FLOOR). x = 2^k z with z in
 * [0.707, 1.414); ln z = 2 atanh(u), u = (z - 1) / (z + 1), |u| <= 0.172, and
 * atanh(u) / u by a quadratic in u^2 fitted for least maximum relative error
 * (1.2e-7; the Taylor series needs the u^6 term for 3e-8). */
static inline float log_pos(float x)
{
    int32_t xi = as_int(x);
    int32_t tmp = xi - 0x3f3504f3;                         /* 0x3f3504f3 = sqrt(0.5) */
    int32_t k = tmp >> 23;
    float z = as_float(xi - (int32_t)((uint32_t)k << 23));
    float u = (z - 1.0f) / (z + 1.0f);
    float u2 = u * u;
    float p = 0.20648185055104712f;
    p = p * u2 + 0.3332611189060558f;
    p = p * u2 + 1.0000001186855216f;
    return (float)k * LN2 + 2.0f * u * p;
}

#endif /* MOE_FASTMATH_H */
