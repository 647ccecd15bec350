"""Peak training memory of one step, split into parameters, gradients, optimizer state
and activations, measured on the tensors themselves.

Method (the same on every device; the CUDA allocator's own peak is added beside it):

- parameters: bytes of every member's parameter storage;
- gradients: bytes of each gradient when autograd has accumulated it
  (``register_post_accumulate_grad_hook``), the largest size seen per parameter;
- optimizer state: bytes of the tensors in every optimizer's ``state`` after the step
  (AdamW: two moments per parameter, plus a step counter);
- activations: the peak, over the step, of the bytes autograd keeps for the backward
  (``torch.autograd.graph.saved_tensors_hooks``): each saved tensor's storage counted
  once while any reference to it lives, parameters excluded. Copies of weights that an
  op saves count here: under autocast the low-precision casts of the weights (what
  mixed precision adds), and in a batched ensemble step the members' weights stacked
  for the wide pass (``engine/wide.py``).

On CUDA ``torch.cuda.max_memory_allocated`` over the same step is recorded as
``peak_allocated``; it also holds temporaries (kernels' workspaces, the logits' softmax)
that none of the four parts names, so it is >= their sum at its peak moment.
"""
from __future__ import annotations

import weakref

import torch
from torch import Tensor

METHOD = ("tensor sizes: parameters, gradients as accumulated, optimizer state after the step; "
          "activations: peak of the storages saved for backward (saved_tensors_hooks), "
          "including weight copies ops save (autocast casts, an ensemble's stacked weights)")
PARTS = ("params", "grads", "optimizer", "activations")


def _storage(t: Tensor) -> tuple[int, int]:
    st = t.untyped_storage()
    return st.data_ptr(), st.nbytes()


class _SavedBytes:
    """Live and peak bytes of the storages autograd holds for the backward."""

    def __init__(self, exclude: set[int]):
        self.exclude = exclude
        self.refs: dict[int, list] = {}   # storage ptr -> [references, bytes, dtype]
        self.live = 0
        self.peak = 0
        self.by_dtype: dict[str, int] = {}   # live bytes per dtype
        self.peak_by_dtype: dict[str, int] = {}   # their split at the peak

    def pack(self, t: Tensor) -> Tensor:
        if t.layout != torch.strided or t.device.type == "meta":
            return t
        ptr, nbytes = _storage(t)
        if ptr == 0 or ptr in self.exclude:
            return t
        ent = self.refs.get(ptr)
        if ent is None:
            dt = str(t.dtype).replace("torch.", "")
            self.refs[ptr] = [1, nbytes, dt]
            self.live += nbytes
            self.by_dtype[dt] = self.by_dtype.get(dt, 0) + nbytes
            if self.live > self.peak:
                self.peak = self.live
                self.peak_by_dtype = dict(self.by_dtype)
        else:
            ent[0] += 1
        # A tensor is freed when autograd drops it after the backward (or the graph);
        # the finalizer runs then, so ``live`` follows what is really held.
        weakref.finalize(t, self._release, ptr)
        return t

    def _release(self, ptr: int) -> None:
        ent = self.refs.get(ptr)
        if ent is None:
            return
        ent[0] -= 1
        if ent[0] == 0:
            self.live -= ent[1]
            self.by_dtype[ent[2]] -= ent[1]
            del self.refs[ptr]

    @staticmethod
    def unpack(t: Tensor) -> Tensor:
        return t


class FootprintProbe:
    """Measures one training step of ``models`` / ``optimizers`` on ``device``:
    ``begin()`` before the step's forwards, ``end()`` after its optimizer steps returns
    the split (bytes) with ``total``, ``peak_allocated`` (CUDA, else None) and ``method``."""

    def __init__(self, models: list[torch.nn.Module], optimizers: list[torch.optim.Optimizer],
                 device: torch.device):
        self.models = models
        self.optimizers = optimizers
        self.device = device
        self.params = [p for m in models for p in m.parameters()]
        self._grad_bytes: dict[int, int] = {}
        self._handles: list = []
        self._saved: _SavedBytes | None = None
        self._ctx = None

    def begin(self) -> None:
        self._saved = _SavedBytes({p.untyped_storage().data_ptr() for p in self.params})
        for i, p in enumerate(self.params):
            if p.requires_grad:
                self._handles.append(p.register_post_accumulate_grad_hook(self._grad_hook(i)))
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._saved.pack, self._saved.unpack)
        self._ctx.__enter__()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def _grad_hook(self, i: int):
        def hook(p: Tensor) -> None:
            if p.grad is not None:
                self._grad_bytes[i] = max(self._grad_bytes.get(i, 0),
                                          p.grad.numel() * p.grad.element_size())
        return hook

    def close(self) -> None:
        """Remove the hooks (``end`` does; also safe after an exception)."""
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def end(self) -> dict:
        peak = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = int(torch.cuda.max_memory_allocated(self.device))
        self.close()
        out = {
            "params": sum(p.numel() * p.element_size() for p in self.params),
            "grads": sum(self._grad_bytes.values()),
            "optimizer": optimizer_state_bytes(self.optimizers),
            "activations": int(self._saved.peak if self._saved else 0),
        }
        out["total"] = sum(out[k] for k in PARTS)
        out["activations_by_dtype"] = dict(self._saved.peak_by_dtype) if self._saved else {}
        out["peak_allocated"] = peak
        out["method"] = METHOD + ("; CUDA: peak_allocated = torch.cuda.max_memory_allocated "
                                  "over the step" if peak is not None else "")
        return out


def optimizer_state_bytes(optimizers: list[torch.optim.Optimizer]) -> int:
    """Bytes of every tensor in the optimizers' per-parameter state."""
    seen: set[int] = set()
    total = 0
    for opt in optimizers:
        for state in opt.state.values():
            for v in state.values():
                if isinstance(v, Tensor):
                    ptr, nbytes = _storage(v)
                    if ptr not in seen:
                        seen.add(ptr)
                        total += nbytes
    return total
