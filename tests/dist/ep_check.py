"""Run under ``torchrun --nproc_per_node 2``: expert-parallel dispatch equals one process
running the whole batch (outputs, input / gate / expert gradients), for several
top-k, capacity and kernel settings. Prints "ep ok" from every rank on success."""
from __future__ import annotations

import torch
import torch.distributed as dist

from moe_studio.engine.dispatch import expert_capacity, moe_dispatch
from moe_studio.engine.expert_kernels import set_expert_kernel
from moe_studio.engine.parallel.expert_parallel import expert_parallel_dispatch, local_experts


def check(k: int, factor: float, kernel: str, T: int = 24, d: int = 8, h: int = 16, E: int = 4):
    set_expert_kernel(kernel)
    P, r = dist.get_world_size(), dist.get_rank()
    g = torch.Generator().manual_seed(1234 + 10 * k + int(factor * 10))
    x_all = torch.randn(P * T, d, generator=g)
    wg = torch.randn(d, E, generator=g)
    w1 = torch.randn(E, d, h, generator=g) * 0.3
    w2 = torch.randn(E, h, d, generator=g) * 0.3
    upstream = torch.randn(P * T, d, generator=g)
    cap = expert_capacity(factor, P * T, k, E)

    def route(x, gate):
        probs = torch.softmax(x @ gate, dim=-1)
        w, idx = probs.topk(k, dim=-1)
        return idx, w

    # one process, the whole batch
    ref_in = [t.clone().requires_grad_() for t in (x_all, wg, w1, w2)]
    idx, w = route(ref_in[0], ref_in[1])
    ref = moe_dispatch(ref_in[0], idx, w, ref_in[2], ref_in[3], cap)
    (ref.out * upstream).sum().backward()

    # this rank's shard, this rank's experts
    mine = local_experts(E)
    rows = slice(r * T, (r + 1) * T)
    x = x_all[rows].clone().requires_grad_()
    gate = wg.clone().requires_grad_()
    l1 = w1[mine.start:mine.stop].clone().requires_grad_()
    l2 = w2[mine.start:mine.stop].clone().requires_grad_()
    idx_r, w_r = route(x, gate)
    res = expert_parallel_dispatch(x, idx_r, w_r, l1, l2, E, cap)
    (res.out * upstream[rows]).sum().backward()

    tol = dict(atol=1e-5, rtol=1e-5)
    where = f"k={k} factor={factor} kernel={kernel} rank={r}"
    torch.testing.assert_close(res.out, ref.out[rows], **tol, msg=lambda m: f"out {where}: {m}")
    torch.testing.assert_close(x.grad, ref_in[0].grad[rows], **tol, msg=lambda m: f"dx {where}: {m}")
    torch.testing.assert_close(l1.grad, ref_in[2].grad[mine.start:mine.stop], **tol,
                               msg=lambda m: f"dw1 {where}: {m}")
    torch.testing.assert_close(l2.grad, ref_in[3].grad[mine.start:mine.stop], **tol,
                               msg=lambda m: f"dw2 {where}: {m}")
    gate_grad = gate.grad.clone()
    dist.all_reduce(gate_grad)            # the replicated gate: gradients summed over ranks
    torch.testing.assert_close(gate_grad, ref_in[1].grad, **tol, msg=lambda m: f"dgate {where}: {m}")
    counts, dropped = res.tokens_per_expert.clone(), res.dropped_per_expert.clone()
    dist.all_reduce(counts)
    dist.all_reduce(dropped)
    assert counts.tolist() == ref.tokens_per_expert.tolist(), where
    assert dropped.tolist() == ref.dropped_per_expert.tolist(), where
    if factor > 0:
        assert int(dropped.sum()) > 0, f"no drops to test at {where}"
        assert torch.equal(res.pair_kept, ref.pair_kept[rows]), f"pair_kept {where}"
    else:
        assert res.pair_kept is None and ref.pair_kept is None, where


def main() -> None:
    dist.init_process_group("gloo")
    try:
        torch.manual_seed(0)
        for kernel in ("loop", "grouped"):
            for k in (1, 2):
                for factor in (0.0, 1.0):
                    check(k, factor, kernel)
        print(f"ep ok rank {dist.get_rank()}", flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
