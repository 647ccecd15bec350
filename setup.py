"""Build of the optional native kernel; everything else about the package is in
pyproject.toml.

``moe_studio/engine/_native/agreement_kernel.c`` (the fused pass behind the ensemble
agreement metrics) is plain C loaded with ctypes. It is built twice: a baseline library
that runs on any CPU, and on x86-64 one for AVX2 + FMA that ``moe_studio.engine._native``
picks when the CPU has them. Both are optional: without a C compiler the install goes on
and the metrics use their torch path (same numbers, slower on the CPU).
"""
import platform
import sys

from setuptools import Extension, find_packages, setup

SOURCE = "moe_studio/engine/_native/agreement_kernel.c"


def _flags() -> list[str]:
    if sys.platform == "win32":
        return ["/O2", "/fp:fast"]
    # -ffast-math at compile time only (never at link time, where GCC would add
    # crtfastmath.o and switch the whole process to flush-to-zero); -fopenmp-simd for
    # the SIMD reductions, without any OpenMP runtime.
    return ["-O3", "-ffast-math", "-fopenmp-simd", "-std=c99"]


def _extensions() -> list[Extension]:
    def ext(name: str, extra: list[str]) -> Extension:
        return Extension(f"moe_studio.engine._native.{name}", [SOURCE],
                         extra_compile_args=_flags() + extra, optional=True,
                         define_macros=[("MOE_PYINIT", f"PyInit_{name}")])

    exts = [ext("_agreement", [])]
    if platform.machine().lower() in ("x86_64", "amd64"):
        exts.append(ext("_agreement_avx2", ["/arch:AVX2"] if sys.platform == "win32"
                        else ["-mavx2", "-mfma"]))
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
