"""Find, check and load a pretrained checkpoint for an inspection, offline.

``MODEL`` is a local folder in Hugging Face format, or a model id that is already in the
local Hugging Face cache: nothing is ever downloaded (``HF_HUB_OFFLINE`` is set before
transformers is first imported here, and every call passes ``local_files_only``).
Weights load from safetensors only (a folder with only pickle weights is refused: a
pickle can run code when loaded); the model's own Python code (``trust_remote_code``)
runs only when the caller allows it. The memory a model needs is estimated from its
config before any weight is read (parameters counted on the meta device, so exactly),
and a model that cannot fit is refused with the numbers.

Every refusal is an :class:`InspectError` with a one-line message.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...config.inputs import kind_of
from .families import (FAMILIES, NOT_READ, Family, expert_count, installed_families,
                       records_router_logits)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Share of the free memory an inspection may plan to use: the allocator, the tokenizer
# and Python need the rest.
MEMORY_HEADROOM = 0.9
DTYPES = ("auto", "bf16", "fp16", "fp32")
_DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


class InspectError(ValueError):
    """A checkpoint that cannot be inspected; the message says why and what to do."""


def _offline_transformers():
    """transformers, imported with the Hub switched offline (a no-op if already imported:
    every call below also passes local_files_only)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import transformers
    except ImportError:
        raise InspectError("inspecting a pretrained model needs the optional Hugging Face "
                           "packages: pip install 'moe-studio[hf]'") from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def resolve_model(spec: str | Path) -> Path:
    """The local folder of ``spec``: the folder itself, or the snapshot of a model id in
    the local Hugging Face cache. InspectError when it is neither."""
    s = str(spec).strip()
    if not s:
        raise InspectError("no model given: name a local Hugging Face folder or a cached model id")
    p = Path(s).expanduser()
    if p.is_dir():
        return p.resolve()
    if p.exists():
        raise InspectError(f"{p} is {kind_of(p.stat().st_mode)}: give the model's folder (with "
                           "config.json and *.safetensors)")
    looks_like_id = s.count("/") <= 1 and not s.startswith((".", "/", "~"))
    if not looks_like_id:
        raise InspectError(f"model folder {p} does not exist")
    _offline_transformers()
    from huggingface_hub import constants, snapshot_download
    try:
        return Path(snapshot_download(s, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, or not a valid id: one message for both
        raise InspectError(
            f"'{s}' is neither a folder nor a model in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}); MoE Studio never downloads: fetch it first "
            f"(hf download {s}) or give a local folder") from None


def read_config(folder: Path) -> dict:
    f = folder / "config.json"
    if not f.is_file():
        raise InspectError(f"{folder} has no config.json: not a Hugging Face model folder")
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InspectError(f"{f}: not a readable JSON config ({e})") from None


def check_weights(folder: Path) -> list[Path]:
    """The folder's safetensors files; InspectError when it has none (naming the pickle
    files it has instead, if any)."""
    st = sorted(folder.glob("*.safetensors"))
    if st:
        return st
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise InspectError(f"{folder.name} has only pickle weights ({', '.join(pickles[:3])}): "
                           "refused, a pickle can run code when loaded; convert the "
                           "checkpoint to safetensors first")
    raise InspectError(f"{folder.name} has no weights (*.safetensors)")


def check_family(cfg: dict, folder: Path, trust_remote_code: bool) -> Family:
    mt = str(cfg.get("model_type") or "")
    if cfg.get("auto_map") and not trust_remote_code and mt not in FAMILIES:
        raise InspectError(f"{folder.name} needs its own Python code (auto_map in config.json): "
                           "pass --trust-remote-code if you trust its authors")
    fam = FAMILIES.get(mt)
    if mt in NOT_READ:
        raise InspectError(f"{folder.name}: MoE family '{mt}' is not supported: {NOT_READ[mt]}")
    if fam is None:
        _offline_transformers()   # before its modeling code is imported below
        if expert_count(cfg) > 1 or records_router_logits(mt):
            names = ", ".join(f.title for f in installed_families())
            raise InspectError(f"{folder.name}: MoE family '{mt}' is not supported "
                               f"(supported: {names})")
        raise InspectError(f"{folder.name} ({mt or 'unknown model type'}) has no MoE layers: "
                           "a dense model routes nothing")
    if fam not in installed_families():
        raise InspectError(f"the installed transformers has no '{mt}' models: upgrade it "
                           "(pip install -U transformers)")
    return fam


@dataclass
class MemoryPlan:
    """What loading and running the model would take, in bytes."""
    params: int               # parameter count (meta-device count)
    dtype: str                # "bf16" | "fp16" | "fp32"
    weights: int              # params * bytes per element
    activations: int          # one batch's activations and recorded router outputs
    device: str
    available: int            # free memory on the device (bytes)
    host_available: int       # free host memory (the weights pass through it without accelerate)
    staged_on_host: bool      # weights are read into host memory before moving to the device
    notes: list[str] = field(default_factory=list)

    @property
    def needed(self) -> int:
        return self.weights + self.activations

    @property
    def fits(self) -> bool:
        ok = self.needed <= MEMORY_HEADROOM * self.available
        if self.staged_on_host:
            ok = ok and self.weights <= MEMORY_HEADROOM * self.host_available
        return ok

    def describe(self) -> str:
        n = self.params
        count = f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n:,}"
        return (f"{count} parameters in {self.dtype}: weights {_gib(self.weights)}"
                f" + activations {_gib(self.activations)} = {_gib(self.needed)} on {self.device} "
                f"({_gib(self.available)} free)")


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 27 else f"{n / 2 ** 20:.1f} MiB"


def host_available() -> int:
    """Free host memory in bytes (MemAvailable; total physical memory where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def resolve_dtype(dtype: str, device_type: str) -> tuple[str, str]:
    """``(dtype, note)``: "auto" is bf16 on a GPU and fp32 on the CPU, where bf16 matmuls
    are slow or emulated on most processors."""
    if dtype not in DTYPES:
        raise InspectError(f"dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    if dtype != "auto":
        return dtype, ""
    if device_type == "cpu":
        return "fp32", ("computed in float32 on the CPU (bf16 matmuls are slow there); "
                        "--dtype bf16 halves the memory")
    return "bf16", ""


def model_class(transformers, family: Family):
    if family.auto_class:
        return getattr(transformers, family.auto_class)
    return transformers.AutoModelForSeq2SeqLM if family.encoder_only \
        else transformers.AutoModelForCausalLM


def count_params(folder: Path, family: Family, trust_remote_code: bool) -> int:
    """Exact parameter count of the model the config builds, without allocating it."""
    import torch

    tf = _offline_transformers()
    cfg = tf.AutoConfig.from_pretrained(folder, local_files_only=True,
                                        trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = model_class(tf, family).from_config(cfg, trust_remote_code=trust_remote_code)
    seen, n = set(), 0
    for p in model.parameters():   # tied weights counted once
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def plan_memory(folder: Path, cfg: dict, family: Family, *, dtype: str, device: str,
                tokens_per_batch: int, trust_remote_code: bool = False) -> MemoryPlan:
    """Estimate what an inspection of the model at ``folder`` needs on ``device``."""
    import torch

    dev = torch.device(device)
    dt, note = resolve_dtype(dtype, dev.type)
    n = count_params(folder, family, trust_remote_code)
    weights = n * _DTYPE_BYTES[dt]
    experts = max(expert_count(cfg), 1)
    # an image-text model's language sizes sit under text_config, DBRX's FFN's under
    # ffn_config
    cfg = {**_section(cfg, "ffn_config"), **cfg, **_section(cfg, "text_config")}
    hidden = int(_first(cfg, "hidden_size", "d_model"))
    inter = int(_first(cfg, "intermediate_size", "d_ff", "ffn_hidden_size") or 4 * hidden)
    heads = int(_first(cfg, "num_attention_heads", "num_heads", "n_heads") or 1)
    layers = int(_first(cfg, "num_hidden_layers", "num_layers", "n_layers") or 1)
    vocab = int(cfg.get("vocab_size") or 0)
    el = _DTYPE_BYTES[dt]
    T = int(tokens_per_batch)
    seq = min(T, int(_first(cfg, "max_position_embeddings", "max_seq_len") or T))
    # Live at once in one layer: the residual stream and its copies, the FFN's hidden
    # layer, attention scores of every head; plus the float32 router outputs kept for
    # every layer until the step's statistics are taken, and the last position's logits.
    acts = T * (8 * hidden + 3 * inter) * el + heads * T * seq * 4 \
        + layers * T * experts * 4 * 3 + T * vocab * 4 // max(1, seq)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        staged = not importlib_find("accelerate")
    else:
        free, staged = host_available(), False
    notes = [note] if note else []
    if staged:
        notes.append("weights pass through host memory (install accelerate to load them "
                     "straight onto the GPU)")
    return MemoryPlan(params=n, dtype=dt, weights=weights, activations=int(acts), device=str(dev),
                      available=int(free), host_available=host_available(), staged_on_host=staged,
                      notes=notes)


def _section(cfg: dict, key: str) -> dict:
    v = cfg.get(key)
    return v if isinstance(v, dict) else {}


def _first(cfg: dict, *keys: str) -> int:
    """The first of ``keys`` that ``cfg`` sets to a positive number; 0 for none."""
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return int(v)
    return 0


def importlib_find(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def refuse_if_too_big(plan: MemoryPlan, folder: Path) -> None:
    if plan.fits:
        return
    if plan.staged_on_host and plan.weights > MEMORY_HEADROOM * plan.host_available:
        raise InspectError(f"{folder.name} does not fit: its {plan.dtype} weights "
                           f"({_gib(plan.weights)}) pass through host memory, which has "
                           f"{_gib(plan.host_available)} free (install accelerate, or free memory)")
    hint = " (try --dtype bf16)" if plan.dtype == "fp32" else \
        (" (a GPU with more memory, or fewer --batch-size / --seq-len)" if plan.weights
         < MEMORY_HEADROOM * plan.available else "")
    raise InspectError(f"{folder.name} does not fit: {plan.describe()}{hint}")


def load_model(folder: Path, family: Family, *, dtype: str, device: str,
               trust_remote_code: bool = False) -> tuple[Any, Any]:
    """``(model in eval mode on device, tokenizer)``, from safetensors only."""
    import torch

    tf = _offline_transformers()
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    dev = torch.device(device)
    kw: dict[str, Any] = dict(dtype=torch_dtype, use_safetensors=True, local_files_only=True,
                              trust_remote_code=trust_remote_code)
    if dev.type == "cuda" and importlib_find("accelerate"):
        kw["device_map"] = {"": dev}
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(folder, local_files_only=True,
                                                     trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - missing or foreign tokenizer files
        raise InspectError(f"{folder.name}: no usable tokenizer ({_one_line(e)})") from None
    try:
        model = model_class(tf, family).from_pretrained(folder, **kw)
    except Exception as e:  # noqa: BLE001 - a damaged shard, a config the weights do not fit
        raise InspectError(f"{folder.name}: the weights did not load ({_one_line(e)})") from None
    if "device_map" not in kw:
        model.to(dev)
    model.eval()
    return model, tokenizer


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:300] + "…") if len(text) > 300 else (text or type(e).__name__)


def estimate(options) -> dict:
    """What the app shows before an inspection starts: ``{"ok": True, "family", "text",
    "fits", "needed", "available", "notes"}`` from the config alone (no weight is read),
    or ``{"ok": False, "error": one line}``."""
    from ...data import CorpusError
    from ..device import resolve_device

    try:
        folder = resolve_model(options.model)
        cfg = read_config(folder)
        fam = check_family(cfg, folder, options.trust_remote_code)
        check_weights(folder)
        try:
            dev = resolve_device(options.device)
        except (ValueError, RuntimeError) as e:
            raise InspectError(str(e).replace("train.device", "--device")) from None
        plan = plan_memory(folder, cfg, fam, dtype=options.dtype, device=str(dev),
                           tokens_per_batch=options.seq_len * options.batch_size,
                           trust_remote_code=options.trust_remote_code)
    except (InspectError, CorpusError) as e:
        return {"ok": False, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - a config transformers cannot build
        return {"ok": False, "error": f"{Path(str(options.model)).name}: {_one_line(e)}"}
    reason = ""
    if not plan.fits:
        try:
            refuse_if_too_big(plan, folder)
        except InspectError as e:
            reason = str(e)
    return {"ok": True, "family": fam.title, "text": plan.describe(), "fits": plan.fits,
            "needed": plan.needed, "available": plan.available, "notes": plan.notes,
            "reason": reason}
