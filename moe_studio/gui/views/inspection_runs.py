"""What the views that need training say about an inspection run (a pretrained
checkpoint routed over a corpus: ``moe-studio inspect``, File > Inspect a checkpoint)."""
from __future__ import annotations

KIND = "inspection"   # run meta "kind" (moe_studio.engine.inspection.KIND; no torch import here)

NO_TRAINING = ("An inspection of a pretrained checkpoint has no training curves: it routes "
               "a corpus through fixed weights. See Gates, Experts, Routing and Precision.")
NO_ENSEMBLE_HTML = ("<h3>An inspection has no ensemble</h3><p>This run routes a corpus through "
                    "one pretrained checkpoint: there are no members, no training and no "
                    "validation curves. Its routing is in <b>Gates</b>, <b>Experts</b> and "
                    "<b>Routing</b>, its activations' headroom in <b>Precision</b>; check two "
                    "inspections in the runs list to compare them.</p>")


def is_inspection(reader) -> bool:
    """The run (a ``RunReader``) is an inspection, not a training run."""
    try:
        return reader.meta.get("kind") == KIND
    except Exception:  # noqa: BLE001 - a run that cannot say is treated as training
        return False
