"""The Mixture-of-Experts families of Hugging Face transformers that an inspection
understands, and how to read each one's router.

Every supported model names its router class in ``_can_record_outputs["router_logits"]``
(what ``output_router_logits=True`` records), so the routers are found by that, not by
module names. A forward hook on each router reads the model's own decision:

- "triple" routers (most families) return
  ``(router_logits [T, E], topk_weights [T, k], topk_indices [T, k])``: the experts the
  block then runs and the weights it combines them with.
- the Switch Transformers router returns ``(dispatch one-hot [B, S, E], max probability
  [B, S, 1], router_logits [B, S, E])``: top-1, with tokens over an expert's capacity
  dropped (an all-zero dispatch row).
- the Llama 4 router returns ``(scores [T, E], router_logits [T, E])``: the sigmoid of
  the top-k logits at the chosen experts, 0 elsewhere (its block scales each expert's
  input by them).
- the DBRX router returns only ``router_logits [T, E]``; its block picks the experts
  outside the router, so the choice is read from the inputs of the block's ``experts``
  module (``(hidden, top_k_index [T, k], top_k_weights [T, k])``) by a pre-hook.
- the JetMoE gate returns its choice grouped by expert: ``(order [T*k], token [T*k],
  gate [T*k], count per expert [E], router_logits [T, E])``, ``order`` being the sort of
  the flattened [T, k] choices by expert; it is put back in token order.
- the ZAYA1 router chooses among its experts and one more class, E - 1, that skips the
  layer; it returns ``(router_logits [T, E], weights [T, k], indices [T, k], router
  state)`` with a skip reported as expert 0 with weight 0 (the experts then add nothing).
  A choice of index 0 with weight exactly 0 is read back as the skip class (a real
  choice of expert 0 weighs its softmax probability, never 0), so the skips show as the
  last expert's load.

Some "triple" routers return more after the three (Inkling's gate adds the weights of
its shared experts: ``router_logits`` are its routed experts' only). LongCat-Flash routes
among its experts and its zero-computation experts (which return their input): both are
counted as experts, ``n_routed_experts`` of its router. Qwen3-Omni-MoE has no forward of
its own: text runs through its thinker (``text_model``), whose routers alone are read.

Where the recorded module is not the one that chooses, ``Family.router_class`` names the
router classes read instead: Ernie-4.5-VL-MoE records its whole MoE block (text and
vision experts), whose text experts' gate chooses for text; DeepSeek-V4 records only its
learned router, not the hash routers of its first MoE layers (a fixed token -> experts
table, ``tid2eid[input_ids]``), which return the same triple. Gemma 4's router returns
its softmax probabilities where the logits go: the logits are read from its ``proj``
(``Family.logits_from``).

``probs`` of every family are a distribution over the experts: the softmax of the
logits, or for sigmoid-scored routers (the router's own code applies ``sigmoid`` to its
logits: DeepSeek-V3, DeepSeek-V3.2, GLM-4-MoE, GLM-4-MoE-Lite, GLM-4.5V, GLM-MoE-DSA,
GLM-5-Next, dots.llm1, dots3.note, LFM2-MoE, Llama 4, EXAONE-MoE, AFMoE, HY-V3, HY-V4,
HY-V4-VL, Bailing-Hybrid, A.X K1/K2, Beam, Ergo, Flint, Kimi Linear, Kimi K2.5,
MiniMax-M2, MiniMax-M3-VL, Nemotron-H, MiniCPM5-MoE, MiMo-V2-Flash, Solar Open, Laguna,
Kolibri-1/1.1, Step 3.7, Muse Spark, Inkling, Inkling 2) the sigmoid affinities divided
by their sum, and for DeepSeek-V4 (``scoring_func`` "sqrtsoftplus") its
``sqrt(softplus(logit))`` scores divided by their sum, so entropy, top-1 probability
and the views' uniform line 1/E mean the same for every family. Cohere2-MoE's config
chooses softmax or sigmoid (``expert_selection_fn``), DeepSeek-V4's its scoring
(``scoring_func``): each router site carries the scoring read (``Family.scoring_attr``).
Bias terms that only steer the choice (DeepSeek-style ``e_score_correction_bias``,
AFMoE's ``expert_bias``, HY-V3's, Ernie's ``moe_statics``) and group-limited choice stay
inside the router and are not in ``probs``; the choice read is the router's own. The
weights the model really used (renormalised, scaled by ``routed_scaling_factor`` or
Gemma 4's ``per_expert_scale``) stay in ``topk_weight``.

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
    layout: str            # "triple" | "switch" | "scores" | "logits" | "sorted" | "skip": what
                           # the router module returns (module docstring)
    encoder_only: bool = False   # encoder-decoder model: only the encoder is routed
    # "logits" layout: the sibling module (same parent as the router) whose forward
    # inputs carry the block's choice
    decision: str = ""
    # only the routers whose module name matches this regex (JetMoE also routes its
    # attention heads: only its feed-forward experts are read)
    routers_named: str = ""
    package: str = ""      # transformers.models.<package> holds its code (default: model_type)
    # the transformers Auto class that loads it with its language-model head
    # (default: AutoModelForCausalLM, AutoModelForSeq2SeqLM for encoder_only)
    auto_class: str = ""
    # module-name regex of parts that text never runs (an image-text model's vision
    # tower): loaded, but not watched by the precision headroom
    text_never_runs: str = ""
    # regex over class names: the modules read as routers in place of the recorded class
    # (Ernie-4.5-VL-MoE records its whole MoE block; DeepSeek-V4 records only its learned
    # router, not the hash routers of its first MoE layers)
    router_class: str = ""
    # the router's child module whose output is its logits, for a router that returns
    # probabilities in their place (Gemma 4)
    logits_from: str = ""
    # the router attribute naming its scoring, where the config chooses it ("softmax" or
    # "sigmoid": Cohere2-MoE's expert_selection_fn); ``scoring`` is the default
    scoring_attr: str = ""
    # the router attribute that counts the classes it chooses among, where its
    # ``num_experts`` counts fewer (LongCat-Flash: the routed experts plus its
    # zero-computation ones, which return their input unchanged)
    experts_attr: str = ""
    # the sub-model that reads text, where the loaded model has no forward of its own
    # (Qwen3-Omni-MoE's thinker: the whole model only generates)
    text_model: str = ""


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
    Family("glm4_moe_lite", "GLM-4-MoE-Lite", "sigmoid", "triple"),
    Family("glm4v_moe", "GLM-4.5V", "sigmoid", "triple",
           auto_class="AutoModelForImageTextToText", text_never_runs=r"^model\.visual\."),
    Family("granitemoe", "Granite-MoE", "softmax", "triple"),
    Family("phimoe", "Phi-MoE", "softmax", "triple"),
    Family("ernie4_5_moe", "ERNIE-4.5-MoE", "softmax", "triple"),
    Family("flex_olmo", "FlexOlmo", "softmax", "triple"),
    Family("dots1", "dots.llm1", "sigmoid", "triple"),
    Family("jamba", "Jamba", "softmax", "triple"),
    Family("minimax", "MiniMax", "softmax", "triple"),
    Family("lfm2_moe", "LFM2-MoE", "sigmoid", "triple"),
    Family("dbrx", "DBRX", "softmax", "logits", decision="experts"),
    # batch A
    Family("deepseek_v32", "DeepSeek-V3.2", "sigmoid", "triple"),
    Family("glm_moe_dsa", "GLM-MoE-DSA", "sigmoid", "triple"),
    Family("exaone_moe", "EXAONE-MoE", "sigmoid", "triple"),
    Family("afmoe", "AFMoE", "sigmoid", "triple"),
    Family("hy_v3", "HY-V3", "sigmoid", "triple"),
    Family("granitemoe_swa", "Granite-MoE-SWA", "softmax", "triple"),
    Family("bailing_hybrid", "Bailing-Hybrid", "sigmoid", "triple"),
    Family("axk1", "A.X K1", "sigmoid", "triple"),
    Family("axk2", "A.X K2", "sigmoid", "triple"),
    Family("beam", "Beam", "sigmoid", "triple"),
    Family("ergo", "Ergo", "sigmoid", "triple"),
    Family("flint", "Flint", "sigmoid", "triple"),
    Family("hy_v4", "HY-V4", "sigmoid", "triple"),
    Family("gemma4", "Gemma 4", "softmax", "triple", logits_from="proj",
           auto_class="AutoModelForImageTextToText",
           text_never_runs=r"^model\.(vision_tower|embed_vision|audio_tower|embed_audio)\."),
    Family("ernie4_5_vl_moe", "ERNIE-4.5-VL-MoE", "softmax", "triple",
           router_class="Ernie4_5_VLMoeMoeTopKRouter", routers_named=r"\.text_moe\.gate$",
           auto_class="AutoModelForImageTextToText",
           text_never_runs=r"^model\.(vision_tower|resampler_model)\."),
    Family("cohere2_moe", "Cohere2-MoE", "softmax", "triple", scoring_attr="expert_selection_fn"),
    Family("deepseek_v4", "DeepSeek-V4", "sqrtsoftplus", "triple", scoring_attr="scoring_func",
           router_class=r"DeepseekV4(TopK|Hash)Router"),
    Family("glm5_next", "GLM-5-Next", "sigmoid", "triple",
           auto_class="AutoModelForImageTextToText", text_never_runs=r"^model\.visual\."),
    Family("hy_v4_vl", "HY-V4-VL", "sigmoid", "triple",
           auto_class="AutoModelForImageTextToText", text_never_runs=r"^model\.vision_tower\."),
    Family("dots3_note", "dots3.note", "sigmoid", "triple",
           auto_class="AutoModelForImageTextToText",
           text_never_runs=r"^model\.(vision_tower|audio_tower)\."),
    Family("deepseek_ocr2", "DeepSeek-OCR-2", "softmax", "triple",
           auto_class="AutoModelForImageTextToText",
           text_never_runs=r"^model\.(vision_tower|multi_modal_projector)(\.|$)"),
    Family("aria", "Aria", "softmax", "triple",
           auto_class="AutoModelForImageTextToText",
           text_never_runs=r"^model\.(vision_tower|multi_modal_projector)(\.|$)"),
    # the released image-text checkpoints: AutoModelForCausalLM reads only their text model
    Family("llama4", "Llama 4", "sigmoid", "scores"),
    Family("llama4_text", "Llama 4 text", "sigmoid", "scores", package="llama4"),
    Family("granitemoeshared", "Granite-MoE-Shared", "softmax", "triple"),
    Family("granitemoehybrid", "Granite-MoE-Hybrid", "softmax", "triple"),   # Granite 4.0
    Family("jetmoe", "JetMoE", "softmax", "sorted", routers_named=r"\.mlp\.router$"),
    Family("hunyuan_v1_moe", "HunYuan-MoE", "softmax", "triple"),
    # (the image-text checkpoint: AutoModelForCausalLM reads only its text model)
    Family("qwen3_5_moe", "Qwen3.5-MoE", "softmax", "triple"),
    Family("qwen3_5_moe_text", "Qwen3.5-MoE text", "softmax", "triple", package="qwen3_5_moe"),
    Family("qwen3_vl_moe", "Qwen3-VL-MoE", "softmax", "triple",
           auto_class="AutoModelForImageTextToText", text_never_runs=r"^model\.visual\."),
    # batch B
    Family("kimi_linear", "Kimi Linear", "sigmoid", "triple"),
    Family("minimax_m2", "MiniMax-M2", "sigmoid", "triple"),
    Family("nemotron_h", "Nemotron-H", "sigmoid", "triple"),   # Nemotron 3 (its MoE layers)
    # (zero-computation experts: routed as experts n_routed_experts.., see experts_attr)
    Family("longcat_flash", "LongCat-Flash", "softmax", "triple", experts_attr="n_routed_experts"),
    Family("minicpm5_moe", "MiniCPM5-MoE", "sigmoid", "triple"),
    Family("mimo_v2_flash", "MiMo-V2-Flash", "sigmoid", "triple"),
    Family("solar_open", "Solar Open", "sigmoid", "triple"),
    Family("laguna", "Laguna", "sigmoid", "triple"),
    Family("lara_mini", "Lara-Mini", "softmax", "triple"),
    Family("mellum", "Mellum", "softmax", "triple"),
    Family("kolibri1", "Kolibri-1", "sigmoid", "triple"),
    Family("kolibri1_1", "Kolibri-1.1", "sigmoid", "triple"),
    # (the image-text checkpoint: AutoModelForCausalLM reads only its text model)
    Family("qwen4_exp", "Qwen4-Exp", "softmax", "triple"),
    Family("qwen4_exp_text", "Qwen4-Exp text", "softmax", "triple", package="qwen4_exp"),
    Family("mistral4", "Mistral 4", "softmax", "triple", auto_class="AutoModelForImageTextToText"),
    Family("kimi_k25", "Kimi K2.5", "sigmoid", "triple", auto_class="AutoModelForImageTextToText",
           text_never_runs=r"^model\.(vision_tower|mm_projector)(\.|$)"),
    Family("minimax_m3_vl", "MiniMax-M3-VL", "sigmoid", "triple",
           auto_class="AutoModelForImageTextToText",
           text_never_runs=r"^model\.(vision_tower|multi_modal_projector)(\.|$)"),
    Family("step3p7", "Step 3.7", "sigmoid", "triple", auto_class="AutoModelForImageTextToText",
           text_never_runs=r"^model\.(vision_model|multi_modal_projector)(\.|$)"),
    Family("muse_spark", "Muse Spark", "sigmoid", "triple", auto_class="AutoModelForImageTextToText",
           text_never_runs=r"^model\.(vision|audio)_\w+(\.|$)"),
    # (scored by its config's scoring_func: sigmoid, the default and the released models')
    Family("inkling2", "Inkling 2", "sigmoid", "triple", auto_class="AutoModelForImageTextToText",
           text_never_runs=r"^model\.vision_tower\."),
    Family("unlimited_ocr", "Unlimited-OCR", "softmax", "triple",
           auto_class="AutoModelForImageTextToText",
           text_never_runs=r"^model\.(vision_tower|multi_modal_projector)(\.|$)"),
    Family("mistral_large4", "Mistral Large 4", "softmax", "triple",
           auto_class="AutoModelForImageTextToText",
           text_never_runs=r"^model\.(vision_tower|multi_modal_projector)(\.|$)"),
    # (its gate also weighs the shared experts: its routed logits are what it records)
    Family("inkling_text", "Inkling text", "sigmoid", "triple", package="inkling"),
    # (text runs through its thinker; the talker that speaks the answer is not read)
    Family("qwen3_omni_moe", "Qwen3-Omni-MoE", "softmax", "triple",
           auto_class="AutoModelForMultimodalLM", text_model="thinker",
           routers_named=r"^thinker\.",
           text_never_runs=r"^(talker|code2wav)\.|^thinker\.model\.(visual|audio_tower)\."),
    # (its router's extra class skips the layer: counted as expert num_experts)
    Family("zaya", "ZAYA1", "softmax", "skip", experts_attr="num_router_classes"),
    # a bidirectional token classifier (one label per token), not a language model
    Family("openai_privacy_filter", "OpenAI Privacy Filter", "softmax", "triple",
           auto_class="AutoModelForTokenClassification"),
)}

# MoE families of the installed transformers that an inspection refuses, and why (read in
# each one's modeling code; the model type as config.json spells it)
NOT_READ: dict[str, str] = {
    "nllb-moe": "this transformers' NLLB-MoE experts read the router's top-1 mask as expert "
                "ids (every token runs experts 0 and 1 whatever the router chose), so the "
                "routing it records is not what the model computes",
    "inkling2_loop": "its looped layers run each of their routers several times per token, "
                     "one decision per pass, and an inspection records one per router and token",
}

# Config keys that name a number of routed experts: a model type outside FAMILIES with
# one of them is an MoE family not supported yet, not a dense model.
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def expert_count(cfg: dict) -> int:
    """The largest routed-expert count a config.json names, nested sections included
    (DBRX keeps it under ``ffn_config``, Llama 4 and the vision-language MoE models
    under ``text_config``, Qwen3-Omni-MoE under ``thinker_config.text_config``); 0 for
    none."""
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
            found = importlib.util.find_spec(f"transformers.models.{f.package or f.model_type}") \
                is not None
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
    decision: Any = None   # "logits" layout: the module whose inputs carry the choice
    scoring: str = "softmax"   # how this router scores its logits (router_probs)
    logits_module: Any = None  # the child whose output is the logits (Family.logits_from)


_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|block|h|blocks)\.(\d+)(?:\.|$)")


def class_names(family: Family, config: Any, n_classes: int) -> list[str] | None:
    """Names for the classes a router chooses among where some are not experts (None
    where all are): a "skip" layout's last class skips the layer (ZAYA1: "skip"); a
    router counting more classes (``experts_attr``) than the config has experts adds
    zero-computation experts that return their input (LongCat-Flash: "id0", "id1", ...).
    The views label them so, not as e3 or e12."""
    names = [f"e{e}" for e in range(n_classes)]
    if family.layout == "skip" and n_classes >= 2:
        return names[:-1] + ["skip"]
    routed = _config_experts(config)
    if family.experts_attr and 0 < routed < n_classes:
        return names[:routed] + [f"id{j}" for j in range(n_classes - routed)]
    return None


def router_classes(model: "nn.Module", family: Family | None = None) -> tuple[type, ...]:
    """The router classes the model's own output recording names (every sub-model's
    ``_can_record_outputs["router_logits"]``), or those ``family.router_class`` names."""
    found: list[type] = []
    if family is not None and family.router_class:
        for mod in model.modules():
            cls = type(mod)
            if re.fullmatch(family.router_class, cls.__name__) and cls not in found:
                found.append(cls)
        return tuple(found)
    for mod in model.modules():
        spec = (getattr(type(mod), "_can_record_outputs", None) or {}).get("router_logits")
        cls = getattr(spec, "target_class", None) if spec is not None else None
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


def find_routers(model: "nn.Module", family: Family, config: Any) -> list[RouterSite]:
    """The routers of ``model`` in module order (for an encoder-decoder family, only the
    encoder's); their layer index is the transformer layer they sit in."""
    classes = router_classes(model, family)
    sites: list[RouterSite] = []
    if not classes:
        return sites
    modules = dict(model.named_modules())
    for name, mod in modules.items():
        if not isinstance(mod, classes):
            continue
        if family.encoder_only and not (name.startswith("encoder.") or ".encoder." in name):
            continue
        if family.routers_named and not re.search(family.routers_named, name):
            continue
        m = _LAYER_RE.search(name)
        layer = int(m.group(1)) if m else len(sites)
        parent = modules.get(name.rpartition(".")[0])
        decision = None
        if family.decision:
            decision = modules.get(f"{name.rpartition('.')[0]}.{family.decision}".lstrip("."))
            if decision is None:
                raise RuntimeError(f"{name}: no sibling '{family.decision}' module to read "
                                   "the routing choice from")
        logits_module = None
        if family.logits_from:
            logits_module = modules.get(f"{name}.{family.logits_from}")
            if logits_module is None:
                raise RuntimeError(f"{name}: no child '{family.logits_from}' to read the "
                                   "router logits from")
        # (the router's own attribute, else its config's)
        scoring = str(getattr(mod, family.scoring_attr, "") or getattr(config, family.scoring_attr, "")
                      or family.scoring) if family.scoring_attr else family.scoring
        if scoring not in SCORINGS:
            raise RuntimeError(f"{name}: scores its experts by '{scoring}', which an "
                               f"inspection does not read (it reads {', '.join(SCORINGS)})")
        sites.append(RouterSite(name, layer, mod, _site_experts(family, mod, config),
                                _site_top_k(family, mod, parent, config), decision, scoring,
                                logits_module))
    return sites


def _site_experts(family: Family, router: Any, config: Any) -> int:
    """Routed experts of one router: its own count (``family.experts_attr``, else
    ``num_experts``), else the width of the linear layer that makes its logits (DBRX's
    ``router.layer``), else the config's."""
    n = getattr(router, family.experts_attr or "num_experts", 0)
    if isinstance(n, int) and n > 0:
        return n
    from torch import nn
    linears = [m for m in router.modules() if isinstance(m, nn.Linear)]
    if len(linears) == 1:
        return int(linears[0].out_features)
    return _config_experts(config)


def _site_top_k(family: Family, router: Any, parent: Any, config: Any) -> int:
    """Experts per token of one router: its own ``top_k``, else its block's (DBRX keeps
    it on the feed-forward block), else the config's."""
    if family.layout == "switch":
        return 1
    for owner in (router, parent):
        k = getattr(owner, "top_k", 0)
        if isinstance(k, int) and k > 0:
            return k
    for key in ("num_experts_per_tok", "top_k_experts"):   # (Gemma 4: top_k_experts)
        k = getattr(config, key, 0)
        if isinstance(k, int) and k > 0:
            return k
    return 1


def _config_experts(config: Any) -> int:
    for key in EXPERT_KEYS:
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return 0


def decode(family: Family, output: Any, top_k: int = 1) \
        -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]":
    """``(logits [T, E] float32, topk_idx [T, k] int64, topk_weight [T, k] float32,
    kept [T, k] bool or None)`` from a router's forward output (for the "logits" layout:
    ``(logits, top_k_index, top_k_weights)``, the last two read from the inputs of the
    block's experts): the model's own choice. ``kept`` is False where the token was
    dropped (over an expert's capacity). ``top_k``: the router's k ("scores" layout)."""
    import torch

    if family.layout == "switch":
        dispatch, top_prob, logits = output
        E = logits.shape[-1]
        logits = logits.reshape(-1, E).float()
        # The router's own argmax, in the router's dtype; a dropped token has an all-zero
        # dispatch row, so its choice is read from the logits.
        idx = logits.argmax(dim=-1, keepdim=True)
        kept = dispatch.reshape(-1, E).sum(dim=-1, keepdim=True) > 0
        return logits, idx, top_prob.reshape(-1, 1).float(), kept
    if family.layout == "scores":
        scores, logits = output[0], output[1]
        E = logits.shape[-1]
        logits, scores = logits.reshape(-1, E), scores.reshape(-1, E)
        # the router's own call (torch.topk over the same logits, same k): the same
        # experts, also where a chosen score underflowed to 0 in half precision
        idx = torch.topk(logits, top_k, dim=1).indices
        return logits.float(), idx.long(), scores.gather(1, idx).float(), None
    if family.layout == "sorted":
        order, _token, gates, counts, logits = output[:5]
        T, E = logits.shape[0], logits.shape[-1]
        # order[j]: the flat [T*k] position of the j-th choice after sorting by expert, so
        # choice j went to expert e for the counts[e] positions of e's group
        by_expert = torch.repeat_interleave(torch.arange(E, device=order.device),
                                            torch.as_tensor(counts, device=order.device))
        idx = torch.empty_like(order).scatter_(0, order, by_expert)
        w = torch.empty(order.shape, dtype=torch.float32, device=order.device) \
            .scatter_(0, order, gates.float())
        return logits.reshape(-1, E).float(), idx.reshape(T, -1).long(), w.reshape(T, -1), None
    if family.layout == "logits":
        logits, idx, weights = output
    elif family.layout == "skip":
        logits, weights, idx = output[0], output[1], output[2]
        # the router's skip choices, masked to expert 0 at weight 0, back to their class
        idx = idx.masked_fill((idx == 0) & (weights == 0), logits.shape[-1] - 1)
    else:
        logits, weights, idx = output[0], output[1], output[2]
    E = logits.shape[-1]
    return logits.reshape(-1, E).float(), idx.reshape(-1, idx.shape[-1]).long(), \
        weights.reshape(-1, weights.shape[-1]).float(), None


SCORINGS = ("softmax", "sigmoid", "sqrtsoftplus")


def router_probs(scoring: str, logits: "torch.Tensor") -> "torch.Tensor":
    """[T, E] float32 distribution over the experts, from a router that scores its
    logits by ``scoring`` (see the module docstring)."""
    import torch

    if scoring == "sigmoid":
        s = torch.sigmoid(logits.float())
    elif scoring == "sqrtsoftplus":
        s = torch.sqrt(torch.nn.functional.softplus(logits.float()))
    else:
        return torch.softmax(logits.float(), dim=-1)
    return s / s.sum(dim=-1, keepdim=True).clamp_min(1e-30)
