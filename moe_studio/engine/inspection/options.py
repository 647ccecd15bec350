"""What an inspection is asked to do: plain data, no torch, so the app can build it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

KIND = "inspection"   # run meta "kind" of an inspection


@dataclass
class InspectOptions:
    """One inspection of a pretrained checkpoint.

    ``model``: a local Hugging Face folder or a model id in the local cache. ``corpus``:
    "embedded", a text file or a folder (one domain per file or subfolder).
    ``tokens``: model tokens to route (shared fairly between the domains). ``seq_len``
    tokens per window, ``batch_size`` windows per forward (= one recorded step).
    ``dtype``: "auto" (bf16 on a GPU, fp32 on the CPU), "bf16", "fp16" or "fp32".
    ``precision_every``: headroom statistics on step 1 and every this many steps
    (0: off).
    """
    model: str
    corpus: str = "embedded"
    tokens: int = 20_000
    seq_len: int = 256
    batch_size: int = 8
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    precision_every: int = 10
    name: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InspectOptions":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def problems(self) -> list[str]:
        """One line per invalid field (empty: valid)."""
        out = []
        if not str(self.model).strip():
            out.append("model: name a Hugging Face folder or a cached model id")
        if self.tokens < 2:
            out.append(f"tokens ({self.tokens}) must be at least 2")
        if self.seq_len < 2:
            out.append(f"seq_len ({self.seq_len}) must be at least 2")
        if self.batch_size < 1:
            out.append(f"batch_size ({self.batch_size}) must be at least 1")
        if self.precision_every < 0:
            out.append(f"precision_every ({self.precision_every}) must be >= 0")
        return out
