"""The Mixture-of-Experts families of Hugging Face transformers that an inspection
understands, and how to read each one's router.

Every supported model names its router class in ``_can_record_outputs["router_logits"]``
(what ``output_router_logits=True`` records), so the routers are found by that, not by
module names. A forward hook on each router reads the model's own decision:

- "triple" routers (every family below but Switch) return
  ``(router_logits [T, E], topk_weights [T, k], topk_indices [T, k])``: the experts the
  block then runs and the weights it combines them with.
- the Switch Transformers router returns ``(dispatch one-hot [B, S, E], max probability
  [B, S, 1], router_logits [B, S, E])``: top-1, with tokens over an expert's capacity
  dropped (an all-zero dispatch row).

``probs`` of every family are a distribution over the experts: the softmax of the
logits, or for sigmoid-scored routers (DeepSeek-V3, GLM-4-MoE, dots.llm1, LFM2-MoE: the
router's own code applies ``sigmoid`` to its logits) the sigmoid affinities divided by
their sum, so entropy, top-1 probability and the views' uniform line 1/E mean the same
for every family. The weights the model really used stay in ``topk_weight``.

No torch import at module level: the GUI reads the family names.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class Family:
    model_type: str        # config.json "model_type"
    title: str
    scoring: str           # "softmax" | "sigmoid": how the router turns logits into scores
    layout: str            # "triple" | "switch": what the router module returns
    encoder_only: bool = False   # encoder-decoder model: only the encoder is routed


FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("mixtral", "Mixtral", "softmax", "triple"),
    Family("qwen2_moe", "Qwen2-MoE", "softmax", "triple"),
    Family("qwen3_moe", "Qwen3-MoE", "softmax", "triple"),
    Family("olmoe", "OLMoE", "softmax", "triple"),
    Family("deepseek_v2", "DeepSeek-V2", "softmax", "triple"),
    Family("deepseek_v3", "DeepSeek-V3", "sigmoid", "triple"),
    Family("switch_transformers", "Switch Transformers", "softmax", "switch", encoder_only=True),
    Family("gpt_oss", "gpt-oss", "softmax", "triple"),
    Family("qwen3_next", "Qwen3-Next", "softmax", "triple"),
    Family("glm4_moe", "GLM-4-MoE", "sigmoid", "triple"),
    Family("granitemoe", "Granite-MoE", "softmax", "triple"),
    Family("phimoe", "Phi-MoE", "softmax", "triple"),
    Family("ernie4_5_moe", "ERNIE-4.5-MoE", "softmax", "triple"),
    Family("flex_olmo", "FlexOlmo", "softmax", "triple"),
    Family("dots1", "dots.llm1", "sigmoid", "triple"),
    Family("jamba", "Jamba", "softmax", "triple"),
    Family("minimax", "MiniMax", "softmax", "triple"),
    Family("lfm2_moe", "LFM2-MoE", "sigmoid", "triple"),
)}

# Config keys that name a number of routed experts: a model type outside FAMILIES with
# one of them is an MoE family not supported yet, not a dense model.
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def expert_count(cfg: dict) -> int:
    """The largest routed-expert count a config.json names, nested sections included
    (DBRX keeps it under ``ffn_config``, Llama 4 and the vision-language MoE models
    under ``text_config``); 0 for none."""
    best = 0
    for key, v in cfg.items():
        if isinstance(v, dict):
            best = max(best, expert_count(v))
        elif key in EXPERT_KEYS and isinstance(v, int) and not isinstance(v, bool):
            best = max(best, v)
    return best


def records_router_logits(model_type: str) -> bool:
    """The installed transformers' modeling code for ``model_type`` records router
    logits (``_can_record_outputs["router_logits"]``): an MoE family, whether or not
    an inspection understands its routers. Imports that code (and torch)."""
    if not re.fullmatch(r"[a-z0-9_]+", model_type or ""):
        return False
    try:
        mod = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    except Exception:  # noqa: BLE001 - no such model type, or its code needs a missing package
        return False
    return any(isinstance(obj, type) and "router_logits" in (getattr(obj, "_can_record_outputs", None) or {})
               for obj in vars(mod).values())


def installed_families() -> list[Family]:
    """The supported families whose modeling code the installed transformers has."""
    out = []
    for f in FAMILIES.values():
        try:
            found = importlib.util.find_spec(f"transformers.models.{f.model_type}") is not None
        except (ImportError, ValueError):
            found = False
        if found:
            out.append(f)
    return out


@dataclass
class RouterSite:
    """One router of the model: where it is and what it routes."""
    name: str              # module name, e.g. "model.layers.3.mlp.gate"
    layer: int             # index of the transformer layer it belongs to
    module: Any            # the router nn.Module
    n_experts: int
    top_k: int


_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|block|h|blocks)\.(\d+)(?:\.|$)")


def router_classes(model: "nn.Module") -> tuple[type, ...]:
    """The router classes the model's own output recording names (every sub-model's
    ``_can_record_outputs["router_logits"]``)."""
    found: list[type] = []
    for mod in model.modules():
        spec = (getattr(type(mod), "_can_record_outputs", None) or {}).get("router_logits")
        cls = getattr(spec, "target_class", None) if spec is not None else None
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


def find_routers(model: "nn.Module", family: Family, config: Any) -> list[RouterSite]:
    """The routers of ``model`` in module order (for an encoder-decoder family, only the
    encoder's); their layer index is the transformer layer they sit in."""
    classes = router_classes(model)
    sites: list[RouterSite] = []
    if not classes:
        return sites
    for name, mod in model.named_modules():
        if not isinstance(mod, classes):
            continue
        if family.encoder_only and not (name.startswith("encoder.") or ".encoder." in name):
            continue
        m = _LAYER_RE.search(name)
        layer = int(m.group(1)) if m else len(sites)
        n_experts = int(getattr(mod, "num_experts", 0) or _config_experts(config))
        top_k = 1 if family.layout == "switch" else int(getattr(mod, "top_k", 0)
                                                         or getattr(config, "num_experts_per_tok", 1))
        sites.append(RouterSite(name, layer, mod, n_experts, top_k))
    return sites


def _config_experts(config: Any) -> int:
    for key in EXPERT_KEYS:
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return 0


def decode(family: Family, output: Any) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]":
    """``(logits [T, E] float32, topk_idx [T, k] int64, topk_weight [T, k] float32,
    kept [T, k] bool or None)`` from a router's forward output: the model's own choice.
    ``kept`` is False where the token was dropped (over an expert's capacity)."""
    if family.layout == "switch":
        dispatch, top_prob, logits = output
        E = logits.shape[-1]
        logits = logits.reshape(-1, E).float()
        # The router's own argmax, in the router's dtype; a dropped token has an all-zero
        # dispatch row, so its choice is read from the logits.
        idx = logits.argmax(dim=-1, keepdim=True)
        kept = dispatch.reshape(-1, E).sum(dim=-1, keepdim=True) > 0
        return logits, idx, top_prob.reshape(-1, 1).float(), kept
    logits, weights, idx = output[0], output[1], output[2]
    E = logits.shape[-1]
    return logits.reshape(-1, E).float(), idx.reshape(-1, idx.shape[-1]).long(), \
        weights.reshape(-1, weights.shape[-1]).float(), None


def router_probs(family: Family, logits: "torch.Tensor") -> "torch.Tensor":
    """[T, E] float32 distribution over the experts (see the module docstring)."""
    import torch

    if family.scoring == "sigmoid":
        s = torch.sigmoid(logits.float())
        return s / s.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    return torch.softmax(logits.float(), dim=-1)
