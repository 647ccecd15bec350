"""The two expert kernels of sort-based dispatch, and the tuner that picks one.

Both compute ``act(xs_e @ w1[e]) @ w2[e]`` on each expert e's contiguous block of
``xs`` (rows sorted by expert, ``counts`` [E] rows each): ``loop`` runs one pair of
matmuls per non-empty expert, ``grouped`` two ``torch._grouped_mm`` calls for all of
them. Which one is faster depends on the build, the device, the dtype and the shapes,
so :class:`KernelTuner` decides at runtime. ``act`` is GELU, or SwiGLU when ``w1``
holds gate and up projections side by side (twice as wide as ``w2`` is tall; see
``activations``). The process shares one tuner (:data:`TUNER`, driven by the module
functions below) so that a run keeps its choice.
"""
from __future__ import annotations

import contextlib
import os
import time

import torch
from torch import Tensor

from .activations import activate_for

KERNELS = ("auto", "loop", "grouped")

# "auto" keeps the grouped kernel unless the loop is faster by more than this share of
# the grouped time: on the CPU the two are often within noise of each other, and a
# choice made by noise differs from process to process. The kernel timed alone also
# flatters the loop: on the default MoE (1 thread) the loop timed 15 % faster alone,
# while whole training steps with either pinned came out even (grouped / loop 1.01,
# 95 % CI 0.93-1.12), and the grouped kernel's op count stays fixed as experts grow.
LOOP_MARGIN = 0.20
# Interleaved timing rounds per decision (the first is warm-up), compared by median.
TUNE_ROUNDS = 7


def mlp_loop(xs: Tensor, w1: Tensor, w2: Tensor, counts: Tensor) -> Tensor:
    """Experts on contiguous blocks, one pair of matmuls per non-empty expert.

    xs [N, d] sorted by expert, counts [E] (sum N) -> [N, d]. Reads ``counts`` on the
    host to split the blocks (one device sync on CUDA).
    """
    sizes = counts.tolist()
    # unbind, not w1[e]: the backward of each w1[e] would allocate and add a full
    # [E, d, h] zero gradient per expert; unbind's backward stacks the E slices once.
    w1s, w2s = w1.unbind(0), w2.unbind(0)
    h = w2.shape[-2]
    outs = [activate_for(block @ w1s[e], h) @ w2s[e]
            for e, block in enumerate(xs.split(sizes)) if sizes[e]]
    if not outs:
        return xs.new_zeros(0, w2.shape[-1])
    return outs[0] if len(outs) == 1 else torch.cat(outs)


# On the CPU the grouped kernel runs the experts in chunks whose hidden activations
# (rows x w1's width) stay under this many bytes. One call over all experts writes the
# whole hidden tensor before the activation reads it back: at 4,096 tokens top-2 of 8
# experts 1,024 wide that is 32 MB, out of cache, and forward + backward took 350 ms
# against 294 ms in chunks of 2-4 MB (311 ms at 8 MB; 64 experts: 440 vs 424 ms at 2 MB;
# one thread, outputs bit-identical). The trainer's default shape (1.5 MB) is one chunk.
GROUPED_CHUNK_BYTES = 4 << 20


def _grouped_pair(xs: Tensor, w1: Tensor, w2: Tensor, counts: Tensor) -> Tensor:
    offs = counts.cumsum(0).to(torch.int32)
    hidden = activate_for(torch._grouped_mm(xs, w1, offs=offs), w2.shape[-2])
    return torch._grouped_mm(hidden, w2, offs=offs)


def _expert_chunks(sizes: list[int], row_bytes: int) -> list[int]:
    """Consecutive experts per chunk, each chunk's rows x ``row_bytes`` within
    GROUPED_CHUNK_BYTES (an expert larger than that alone)."""
    chunks, n, rows = [], 0, 0
    for size in sizes:
        if n and (rows + size) * row_bytes > GROUPED_CHUNK_BYTES:
            chunks.append(n)
            n, rows = 0, 0
        n += 1
        rows += size
    return chunks + [n]


def mlp_grouped(xs: Tensor, w1: Tensor, w2: Tensor, counts: Tensor) -> Tensor:
    """The same computation as :func:`mlp_loop` with two ``torch._grouped_mm`` calls.

    ``offs`` holds the int32 end offset of each expert's block; nothing is read back to
    the host, so on CUDA the whole dispatch runs without a sync when nothing is dropped.
    On the CPU, where reading ``counts`` costs nothing, a large batch runs in chunks of
    experts that keep the hidden activations in cache (GROUPED_CHUNK_BYTES).
    """
    row_bytes = w1.shape[-1] * xs.element_size()
    if xs.device.type != "cpu" or xs.shape[0] * row_bytes <= GROUPED_CHUNK_BYTES \
            or torch.compiler.is_compiling():
        return _grouped_pair(xs, w1, w2, counts)
    sizes = counts.tolist()
    chunks = _expert_chunks(sizes, row_bytes)
    if len(chunks) == 1:
        return _grouped_pair(xs, w1, w2, counts)
    rows, at = [], 0
    for n in chunks:
        rows.append(sum(sizes[at:at + n]))
        at += n
    # split (not slicing per chunk): each split's backward writes its part of one
    # gradient, instead of a full-size zero gradient per chunk
    return torch.cat([_grouped_pair(x, a, b, c) for x, a, b, c in
                      zip(xs.split(rows), w1.split(chunks), w2.split(chunks), counts.split(chunks))])


MLP = {"loop": mlp_loop, "grouped": mlp_grouped}
# Under torch.compile the loop runs eagerly: its block sizes come from the data, and a
# traced loop would be recompiled for every new split of the tokens.
_LOOP_OUTSIDE_GRAPH = torch.compiler.disable(mlp_loop)


@contextlib.contextmanager
def _clean_context(device: torch.device):
    """Neither inference mode nor autocast, whatever the caller runs under."""
    with torch.inference_mode(False), torch.autocast(device.type, enabled=False):
        yield


def _probe_grouped(device: torch.device, dtype: torch.dtype, d: int, h: int, h_out: int) -> bool:
    if not hasattr(torch, "_grouped_mm"):
        return False
    # Deterministic inputs (no RNG: a probe must not shift the training random stream).
    # Three experts, the middle one empty, because empty groups are the edge case.
    n = 16
    xs = torch.linspace(-1, 1, n * d, device=device).reshape(n, d).to(dtype)
    w1 = torch.linspace(-0.1, 0.1, 3 * d * h, device=device).reshape(3, d, h).to(dtype)
    w2 = torch.linspace(0.1, -0.1, 3 * h_out * d, device=device).reshape(3, h_out, d).to(dtype)
    counts = torch.tensor([10, 0, n - 10], device=device)
    try:
        # The answer must not depend on the caller's context: inference mode would forbid
        # the backward, and autocast would turn the float32 reference into a bf16 one.
        with _clean_context(device), torch.enable_grad():
            ins = [t.clone().requires_grad_() for t in (xs, w1, w2)]
            out = mlp_grouped(*ins, counts)
            out.backward(torch.ones_like(out))
        with _clean_context(device), torch.no_grad():
            ref = mlp_loop(xs.float(), w1.float(), w2.float(), counts)
        tol = 1e-4 if dtype == torch.float32 else 5e-2
        return bool(torch.allclose(out.float(), ref, atol=tol, rtol=tol)
                    and all(t.grad is not None and torch.isfinite(t.grad).all() for t in ins))
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _time_kernel(fn, xs: Tensor, w1: Tensor, w2: Tensor, counts: Tensor, backward: bool) -> float:
    """Seconds for one call of ``fn`` on copies of the real inputs (forward + backward
    when ``backward``)."""
    with _clean_context(xs.device), torch.enable_grad():
        ins = [t.detach().clone().requires_grad_(backward) for t in (xs, w1, w2)]
        _sync(xs.device)
        start = time.perf_counter()
        out = fn(*ins, counts)
        if backward:
            out.backward(torch.ones_like(out))
        _sync(xs.device)
    return time.perf_counter() - start


class KernelTuner:
    """Which expert kernel each dispatch uses: "auto" (measure once per shape, keep the
    faster), or a forced "loop" / "grouped". Remembers where ``torch._grouped_mm``
    works and what "auto" chose."""

    def __init__(self, setting: str = "auto"):
        # an unknown name (from the environment) measures, as "auto" does
        self.setting = setting if setting in KERNELS else "auto"
        self._grouped_works: dict[tuple, bool] = {}
        self._auto_choice: dict[tuple, str] = {}
        self._timings: dict[tuple, dict[str, float]] = {}
        self._ran: dict[tuple, str] = {}

    def set(self, name: str) -> None:
        """Choose the kernel for every later dispatch ('auto', 'loop' or 'grouped');
        'grouped' still falls back to 'loop' where ``torch._grouped_mm`` cannot run."""
        if name not in KERNELS:
            raise ValueError(f"expert kernel must be one of {', '.join(KERNELS)}, got {name!r}")
        self.setting = name
        self._auto_choice.clear()
        self._ran.clear()

    def reset(self) -> None:
        """Forget every measurement: support of the grouped kernel and auto's choices."""
        self._grouped_works.clear()
        self._auto_choice.clear()
        self._timings.clear()
        self._ran.clear()

    def choices(self) -> list[dict]:
        """What 'auto' has chosen so far, one dict per measured shape."""
        names = ("device", "index", "dtype", "n_experts", "d_model", "d_hidden", "size_bucket",
                 "backward")
        return [{**dict(zip(names, key)), "dtype": str(key[2]), "kernel": choice,
                 "median_s": self._timings.get(key, {})}
                for key, choice in self._auto_choice.items()]

    def ran(self, record: tuple[str, int, int, int], name: str) -> None:
        """Note that kernel ``name`` ran for (device type, E, d, h)."""
        self._ran[record] = name

    def kernels_run(self) -> list[dict]:
        """The kernel each expert shape last ran with, whatever the setting: what a
        benchmark reports (a forced or measured choice, or the loop fallback)."""
        return [{"device": dev, "n_experts": E, "d_model": d, "d_hidden": h, "kernel": name}
                for (dev, E, d, h), name in self._ran.items()]

    def grouped_mm_works(self, device: torch.device, dtype: torch.dtype, d: int, h: int,
                         h_out: int | None = None) -> bool:
        """Whether ``torch._grouped_mm`` runs forward and backward for these weights, and
        agrees with the loop (cached); ``h`` is w1's width, ``h_out`` w2's height (default
        ``h``; half of it for SwiGLU). Support depends on the build, the device (on CUDA
        e.g. the compute capability), the dtype and the alignment of the widths."""
        h_out = h if h_out is None else h_out
        key = (device.type, device.index, dtype, d, h, h_out)
        if key not in self._grouped_works:
            self._grouped_works[key] = _probe_grouped(device, dtype, d, h, h_out)
        return self._grouped_works[key]

    def choose(self, xs: Tensor, w1: Tensor, w2: Tensor, counts: Tensor) -> str:
        """'grouped' or 'loop' for this dispatch.

        Under 'auto' the first dispatch of each (device, dtype, E, d, h, size bucket,
        grad on/off) times both kernels on its own data (forward + backward when
        autograd is on, as in training), interleaved, and keeps the faster;
        ``torch._grouped_mm`` is only a candidate where :meth:`grouped_mm_works`. The
        grouped kernel wins on GPUs (no host sync, one launch); on CPU the two are close.

        The choice is fixed for the rest of the process, so a run is deterministic; two
        processes may choose differently where the timings are close (on CUDA the
        kernels agree to rounding, not bit for bit). The decision compares the medians
        of TUNE_ROUNDS interleaved timings and keeps the grouped kernel unless the loop
        is faster by more than LOOP_MARGIN, so near-ties (the CPU) resolve the same way
        in every process. Set MOE_STUDIO_EXPERT_KERNEL to pin it.
        """
        E, d, h = w1.shape
        if torch.compiler.is_compiling():
            return self._traced_choice(xs, d, h, w2.shape[-2])
        if self.setting == "loop" or not self.grouped_mm_works(xs.device, xs.dtype, d, h,
                                                               w2.shape[-2]):
            return "loop"
        if self.setting == "grouped":
            return "grouped"
        backward = torch.is_grad_enabled()
        key = (xs.device.type, xs.device.index, xs.dtype, E, d, h, xs.shape[0].bit_length(),
               backward)
        if key not in self._auto_choice:
            times: dict[str, list[float]] = {"loop": [], "grouped": []}
            for r in range(TUNE_ROUNDS):   # interleaved; round 0 is warm-up
                for name, fn in MLP.items():
                    t = _time_kernel(fn, xs, w1, w2, counts, backward)
                    if r:
                        times[name].append(t)
            med = {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}
            self._timings[key] = med
            loop_wins = med["loop"] < (1.0 - LOOP_MARGIN) * med["grouped"]
            self._auto_choice[key] = "loop" if loop_wins else "grouped"
        return self._auto_choice[key]


    def _traced_choice(self, xs: Tensor, d: int, h: int, h_out: int) -> str:
        """The kernel inside ``torch.compile``, where nothing can be timed or probed: the
        grouped kernel only where an eager dispatch already found it working and its
        tracing rule accepts the dtype (bfloat16 in current torch), else the loop."""
        works = self._grouped_works.get((xs.device.type, xs.device.index, xs.dtype, d, h, h_out))
        if works and xs.dtype == torch.bfloat16 and self.setting != "loop":
            return "grouped"
        return "loop"


# The process's tuner. The environment variable MOE_STUDIO_EXPERT_KERNEL sets its
# initial setting.
TUNER = KernelTuner(os.environ.get("MOE_STUDIO_EXPERT_KERNEL", "auto"))


def set_expert_kernel(name: str) -> None:
    """Choose the expert kernel for every later dispatch: 'auto', 'loop' or 'grouped'."""
    TUNER.set(name)


def expert_kernel_setting() -> str:
    return TUNER.setting


def kernels_run() -> list[dict]:
    """The kernel each expert shape last ran with (see :meth:`KernelTuner.kernels_run`)."""
    return TUNER.kernels_run()


def kernel_choices() -> list[dict]:
    """What 'auto' has chosen so far, one dict per measured shape (for benchmarks/logs)."""
    return TUNER.choices()


def grouped_mm_works(device: torch.device, dtype: torch.dtype, d: int, h: int,
                     h_out: int | None = None) -> bool:
    return TUNER.grouped_mm_works(device, dtype, d, h, h_out)


def run_experts(xs: Tensor, w1: Tensor, w2: Tensor, counts: Tensor) -> Tensor:
    """Every expert on its block of ``xs`` with the kernel the tuner picks: xs [N, d]
    sorted by expert, w1 [E, d, h] (SwiGLU: [E, d, 2h]), w2 [E, h, d], counts [E]
    (sum N) -> [N, d]."""
    name = TUNER.choose(xs, w1, w2, counts)
    TUNER.ran((xs.device.type, *w1.shape), name)
    if name == "loop" and torch.compiler.is_compiling():
        return _LOOP_OUTSIDE_GRAPH(xs, w1, w2, counts)
    return MLP[name](xs, w1, w2, counts)
