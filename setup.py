"""Build of the optional native kernel; everything else about the package is in
pyproject.toml.

``moe_studio/engine/_native/agreement_kernel.c`` (the fused pass behind the ensemble
agreement metrics) and ``moe_kernel.c`` (the routing bookkeeping of a dropless top-k MoE
layer) are plain C loaded with ctypes. Each is built twice: a baseline library that runs
on any CPU, and on x86-64 one for AVX2 + FMA that ``moe_studio.engine._native`` picks
when the CPU has them. All are optional: without a C compiler the install goes on and
the callers use their torch paths (same numbers to float rounding, slower on the CPU).
"""
import platform
import sys

from setuptools import Extension, find_packages, setup

NATIVE = "moe_studio/engine/_native"
# library name -> its C source; both include fastmath.h
SOURCES = {"_agreement": f"{NATIVE}/agreement_kernel.c", "_moe": f"{NATIVE}/moe_kernel.c"}


def _flags() -> list[str]:
    if sys.platform == "win32":
        return ["/O2", "/fp:fast"]
    # -ffast-math at compile time only (never at link time, where GCC would add
    # crtfastmath.o and switch the whole process to flush-to-zero); -fopenmp-simd for
    # the SIMD reductions, without any OpenMP runtime.
    return ["-O3", "-ffast-math", "-fopenmp-simd", "-std=c99"]


def _extensions() -> list[Extension]:
    def ext(name: str, source: str, extra: list[str]) -> Extension:
        return Extension(f"moe_studio.engine._native.{name}", [source],
                         depends=[f"{NATIVE}/fastmath.h"],
                         extra_compile_args=_flags() + extra, optional=True,
                         define_macros=[("MOE_PYINIT", f"PyInit_{name}")])

    x86 = platform.machine().lower() in ("x86_64", "amd64")
    avx2 = ["/arch:AVX2"] if sys.platform == "win32" else ["-mavx2", "-mfma"]
    exts = []
    for name, source in SOURCES.items():
        exts.append(ext(name, source, []))
        if x86:
            exts.append(ext(f"{name}_avx2", source, avx2))
    return exts


# The recorded sample runs ship inside the package as ``moe_studio/sample_runs`` (data
# only), so an installed app finds them beside its code; in a checkout they stay in the
# top-level ``sample_runs/`` (see moe_studio.paths.sample_runs_dir).
setup(ext_modules=_extensions(),
      packages=[*find_packages(include=["moe_studio", "moe_studio.*"]), "moe_studio.sample_runs"],
      package_dir={"moe_studio.sample_runs": "sample_runs"},
      package_data={"moe_studio.sample_runs": ["**/*"]},
      # what a reader or writer may have left beside a run is not part of it
      exclude_package_data={"moe_studio.sample_runs": ["**/*-wal", "**/*-shm", "**/writer.lock",
                                                       "**/*.tmp", "**/__pycache__/*"]})
