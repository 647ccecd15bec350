"""Inspect a pretrained Hugging Face MoE checkpoint: route a corpus through it and record
an ordinary run (meta ``kind`` = "inspection") that every routing view reads.

Step s of an inspection is its s-th forward (one batch of corpus windows, domain by
domain); it records what a training step records about the routers (docs/CONTRACTS.md:
``moe/L{i}/*`` scalars, ``moe/tokens_per_expert`` / ``moe/dropped_per_expert``,
``router_probs/L{i}`` histograms, headroom records) but no loss. The ``routing/probe``
snapshot (the corpus's probe passages, one per domain) is written at step 1; the totals
(expert load per domain, co-selection of expert pairs) when the inspection closes,
finished or stopped, as tensors ``inspect/load_per_domain`` float32 [D, n_blocks, E],
``inspect/tokens_per_domain`` float32 [D] and ``inspect/coselect`` float32
[n_blocks, E, E]. ``Inspector`` has the Trainer's stepping API (``step``, ``done``,
``close``), so the CLI and the app's engine process drive it the same way.
"""
from __future__ import annotations

import math
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ...config.toml_io import dumps_tables
from ...data import CorpusError, probe_passages, read_domains
from ...paths import default_runs_dir
from ...store import RunWriter
from ..device import describe_device, resolve_device
from ..headroom import HeadroomMonitor
from ...metrics.routing import load_cv, max_over_mean
from ..progress import ProgressInfo
from ..stats import BLOCK_STATS
from .capture import (ExpertRowsWatch, RouterCapture, RoutingAccumulator, expert_rows,
                      precision_targets)
from .families import class_names, find_routers
from .loading import (InspectError, check_family, check_weights, load_model, plan_memory,
                      read_config, refuse_if_too_big, resolve_model)
from .options import KIND, InspectOptions
from .routing import forward, route_bytes
from .text import plan_batches


class Inspector:
    """One inspection. Heavy: the constructor loads the model (call it off the GUI
    thread). Raises InspectError (or CorpusError) with a one-line message for anything
    that cannot be inspected, before any run folder is made."""

    def __init__(self, options: InspectOptions, runs_dir: str | Path | None = None):
        bad = options.problems()
        if bad:
            raise InspectError("; ".join(bad))
        self.options = o = options
        self.folder = folder = resolve_model(o.model)
        hf_cfg = read_config(folder)
        self.family = fam = check_family(hf_cfg, folder, o.trust_remote_code)
        check_weights(folder)
        try:
            self.device = dev = resolve_device(o.device)
        except (ValueError, RuntimeError) as e:
            raise InspectError(str(e).replace("train.device", "--device")) from None
        corpus_name, domains = read_domains(o.corpus)
        self.domain_names = [n for n, _, _ in domains]
        self.plan = plan = plan_memory(folder, hf_cfg, fam, dtype=o.dtype, device=str(dev),
                                       tokens_per_batch=o.seq_len * o.batch_size,
                                       trust_remote_code=o.trust_remote_code)
        refuse_if_too_big(plan, folder)
        self.model, self.tokenizer = load_model(folder, fam, dtype=plan.dtype, device=str(dev),
                                                trust_remote_code=o.trust_remote_code)
        # (an image-text model's language sizes are on its text config)
        text_cfg = self.model.config.get_text_config()
        try:
            self.sites = find_routers(self.model, fam, text_cfg)
        except RuntimeError as e:   # (a router this family's reading does not fit)
            raise InspectError(f"{folder.name}: {e}") from None
        if not self.sites:
            raise InspectError(f"{folder.name} has no MoE layers: its config builds only dense "
                               "feed-forward layers, so nothing is routed")
        Es = {s.n_experts for s in self.sites}
        ks = {s.top_k for s in self.sites}
        if len(Es) != 1 or len(ks) != 1:
            raise InspectError(f"{folder.name}: layers with different expert counts {sorted(Es)} "
                               f"or top-k {sorted(ks)} are not supported")
        self.n_experts, self.top_k = Es.pop(), ks.pop()
        self.blocks = [s.layer for s in self.sites]
        max_pos = int(getattr(text_cfg, "max_position_embeddings", 0) or 0)
        seq_len = min(o.seq_len, max_pos) if max_pos > 1 else o.seq_len
        self.batches, self.tokens_per_domain_planned = plan_batches(
            self.tokenizer, domains, o.tokens, seq_len, o.batch_size)
        if not self.batches:
            raise CorpusError(f"corpus '{o.corpus}' gives no tokens to route")
        self._probe = probe_passages(domains)

        self.total_steps = len(self.batches)
        self.step_count = 0
        self.tokens_done = 0
        self._closed = False
        self._t_start = time.time()
        self._t_run = 0.0
        self._rate_ema: float | None = None

        # (the scoring its routers use: a family's default, or the one its config chooses)
        scoring = self.sites[0].scoring
        moe = {"n_experts": self.n_experts, "top_k": self.top_k, "router": scoring}
        config = {
            "name": o.name or f"inspect-{folder.name}",
            "inspect": {k: v for k, v in o.to_dict().items() if k != "name"},
            "model": {"family": fam.model_type, "path": str(folder),
                      "n_layers": int(getattr(text_cfg, "num_hidden_layers", 0)
                                      or getattr(text_cfg, "num_layers", 0)),
                      "hidden_size": int(getattr(text_cfg, "hidden_size", 0)
                                         or getattr(text_cfg, "d_model", 0)),
                      "vocab_size": int(getattr(text_cfg, "vocab_size", 0)),
                      # the layer set as a training config writes it (the runs list reads it)
                      "moe_layers": ",".join(str(b) for b in self.blocks)},
            "precision": {"mode": plan.dtype},
            "moe": moe,
            "data": {"corpus": o.corpus, "context": seq_len, "batch_size": o.batch_size},
            "ensemble": {"members": 1},
        }
        config["inspect"]["dtype"] = plan.dtype
        meta = {
            "kind": KIND, "torch": torch.__version__, "python": platform.python_version(),
            "transformers": _version("transformers"), "device": describe_device(dev),
            "params_total": plan.params, "model_path": str(folder), "model_family": fam.title,
            "model_type": fam.model_type, "dtype": plan.dtype, "dtype_note": "; ".join(plan.notes),
            "memory_estimate": plan.describe(), "members": 1, "total_steps": self.total_steps,
            "domain_names": self.domain_names, "corpus": corpus_name,
            "moe_blocks": self.blocks, "moe_block_names": [s.name for s in self.sites],
            "router_scoring": scoring, "encoder_only": fam.encoder_only,
            # (classes a router chooses that are not experts: ZAYA1's skip, ...)
            **({"expert_names": names} if (names := class_names(fam, text_cfg, self.n_experts))
               else {}),
            "tokens_planned": int(sum(self.tokens_per_domain_planned)),
            "tokens_per_domain_planned": [int(x) for x in self.tokens_per_domain_planned],
            "argv": sys.argv[:8],
        }
        self.writer = RunWriter.create(runs_dir if runs_dir is not None else default_runs_dir(),
                                       name=config["name"], config=config,
                                       config_toml=dumps_tables(config), meta=meta)
        self.run_dir = Path(self.writer.run_dir)
        self.run_id = self.writer.run_id
        self.capture = RouterCapture(self.sites, fam)
        self.acc = RoutingAccumulator(len(self.sites), self.n_experts, len(self.domain_names), dev)
        self.monitor: HeadroomMonitor | None = None
        self._rows_watch: ExpertRowsWatch | None = None
        if o.precision_every > 0:
            targets = precision_targets(self.model, self.sites)
            if fam.encoder_only:   # only the encoder runs
                targets = [t for t in targets if t.name.startswith(("encoder.", "shared"))]
            if fam.text_never_runs:
                targets = [t for t in targets if not re.search(fam.text_never_runs, t.name)]
            self.monitor = HeadroomMonitor(self.model, every=o.precision_every,
                                           kinds=("act", "weight"), targets=targets,
                                           static_weights=True)
            # (DBRX's experts: each call of their module is one expert's)
            self._rows_watch = ExpertRowsWatch(expert_rows(self.model, self.sites), self.monitor)

    # ------------------------------------------------------------------ stepping
    @property
    def done(self) -> bool:
        return self.step_count >= self.total_steps

    def forward(self, ids: torch.Tensor) -> None:
        """The model's own forward over ``ids`` [B, S] (see ``routing.forward``)."""
        forward(self.model, self.family, ids)

    @torch.no_grad()
    def step(self) -> ProgressInfo:
        """Route the next batch and record it."""
        if self._closed:
            raise RuntimeError("inspection is closed")
        if self.done:
            raise RuntimeError(f"inspection is complete ({self.total_steps} steps)")
        t0 = time.perf_counter()
        s = self.step_count + 1
        if s == 1:
            self._write_probe()
        batch = self.batches[self.step_count]
        ids = torch.from_numpy(batch.ids).to(self.device)
        mon = self.monitor
        if mon is not None:
            mon.begin_step(s)
        self.forward(ids)
        if mon is not None:
            mon.after_update(s)
        st = self.acc.add(self.capture.take(), torch.from_numpy(batch.domains).to(self.device))
        if mon is not None:
            mon.write(self.writer, member=0, upto=s)
        n_tok = int(batch.ids.size)
        self.tokens_done += n_tok
        self._write_step(s, st)
        self.step_count = s
        dt = time.perf_counter() - t0
        self._t_run += dt
        rate = n_tok / max(dt, 1e-9)
        self._rate_ema = rate if self._rate_ema is None else 0.8 * self._rate_ema + 0.2 * rate
        self.writer.add_scalars(s, {"tokens": float(self.tokens_done), "tokens_per_s": rate,
                                    "elapsed_s": time.time() - self._t_start}, member=-1)
        left = sum(b.ids.size for b in self.batches[s:])
        return ProgressInfo(step=s, total_steps=self.total_steps, loss=math.nan, lr=0.0,
                           tokens_per_s=self._rate_ema, eta_s=left / max(self._rate_ema, 1e-9))

    def _write_step(self, s: int, st) -> None:
        cv, mom = load_cv(st.tokens_per_expert), max_over_mean(st.tokens_per_expert)
        routed = st.tokens_per_expert.sum(axis=-1)
        values: dict[str, float] = {}
        edges = np.linspace(0.0, 1.0, st.hist.shape[1] + 1)
        for j, blk in enumerate(self.blocks):
            for name, v in zip(BLOCK_STATS, st.block_stats[j]):
                values[f"moe/L{blk}/{name}"] = float(v)
            values[f"moe/L{blk}/dropped_frac"] = float(st.dropped_per_expert[j].sum() / max(routed[j], 1.0))
            values[f"moe/L{blk}/load_cv"] = float(cv[j])
            values[f"moe/L{blk}/load_max_over_mean"] = float(mom[j])
            self.writer.add_histogram(s, f"router_probs/L{blk}", edges, st.hist[j], member=0)
        self.writer.add_scalars(s, values, member=0)
        self.writer.add_tensor(s, "moe/tokens_per_expert", st.tokens_per_expert, member=0)
        self.writer.add_tensor(s, "moe/dropped_per_expert", st.dropped_per_expert, member=0)

    # ------------------------------------------------------------------ probe
    def route_text(self, text: str, domain: int = 0) -> dict[str, np.ndarray]:
        """The arrays of a ``routing/probe`` snapshot for ``text`` (see
        ``routing.route_bytes``). Records nothing."""
        return route_bytes(self.model, self.tokenizer, self.family, self.capture, self.top_k,
                           self.device, text, domain)

    def _write_probe(self) -> None:
        parts = [self.route_text(p.decode("utf-8", errors="replace"), d)
                 for d, p in enumerate(self._probe) if p.strip()]
        exact = all(bool(a.pop("_exact")[0]) for a in parts)
        if not parts:
            return
        offset, owners = 0, []
        for a in parts:   # model_token counts through the whole probe
            owners.append(a["model_token"] + offset)
            offset += int(a["model_token"].max()) + 1
        arrays = {k: np.concatenate([a[k] for a in parts], axis=1 if parts[0][k].ndim == 3 else 0)
                  for k in ("tokens", "domains", "topk_idx", "topk_weight", "probs", "token_start")}
        arrays["model_token"] = np.concatenate(owners).astype(np.int32)
        meta = {"domain_names": list(self.domain_names), "moe_blocks": list(self.blocks),
                "top_k": self.top_k, "n_experts": self.n_experts, "step": 1,
                "source": f"{self.family.title} {self.folder.name}",
                "tokenization": "model tokens; each byte shows the routing of the token it belongs to"
                                + ("" if exact else " (no offsets: tokens spread evenly over the bytes)"),
                "model_tokens": offset}
        self.writer.add_snapshot(1, "routing/probe", arrays, meta, member=0)

    # ------------------------------------------------------------------ end
    def write_totals(self) -> None:
        """The whole-corpus tensors (see the module docstring), at the last step."""
        s = self.step_count
        self.writer.add_tensor(s, "inspect/load_per_domain",
                               self.acc.load_per_domain.float().cpu().numpy(), member=0)
        self.writer.add_tensor(s, "inspect/tokens_per_domain",
                               self.acc.tokens_per_domain.float().cpu().numpy(), member=0)
        self.writer.add_tensor(s, "inspect/coselect", self.acc.coselect.float().cpu().numpy(),
                               member=0)
        self.writer.set_meta(tokens_routed=int(self.tokens_done),
                             inspect_seconds=round(self._t_run, 3))

    def close(self, status: str = "finished", error: str | None = None) -> None:
        """Write the totals (finished or stopped: what was recorded is kept), remove the
        hooks and end the run. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.step_count > 0:
                self.write_totals()
        except Exception as e:  # noqa: BLE001  never lose the status because a final write failed
            status, error = "failed", (error or "") + f"\nwhile closing: {e!r}"
        finally:
            self.capture.remove()
            if self.monitor is not None:
                self.monitor.remove()
            if self._rows_watch is not None:
                self._rows_watch.remove()
            self.writer.close(status, error=error)


def _version(name: str) -> str:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001
        return "?"
