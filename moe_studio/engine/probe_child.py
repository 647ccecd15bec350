"""Route custom text in a short-lived process, so the app never imports torch.

    python -m moe_studio.engine.probe_child

stdin: one JSON job ``{"run": run folder, "text": str, "checkpoint": weights file or
null (the latest), "member": int, "out": path of the .npz to write}``; an inspection
run routes through the pretrained checkpoint its meta names (``checkpoint`` unused). The routed
arrays (:func:`moe_studio.engine.probe.probe_snapshot`) go to ``out`` as a plain
``.npz`` (no pickles); stdout gets one JSON line, ``{"meta": {...}}`` or ``{"error":
"one line"}``, and the exit code is 0 or 1.
"""
from __future__ import annotations

import json
import sys
from typing import Any


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Do one job; the answer line's content. Never raises for a bad job or run."""
    import numpy as np

    from .probe import is_pretrained_run, probe_snapshot

    try:
        if is_pretrained_run(job["run"]):  # an inspection: its Hugging Face checkpoint
            from .inspection.routing import probe_snapshot as pretrained_snapshot
            arrays, meta = pretrained_snapshot(job["run"], job["text"])
        else:
            arrays, meta = probe_snapshot(job["run"], job["text"],
                                          checkpoint=job.get("checkpoint"),
                                          member=int(job.get("member") or 0))
        np.savez(job["out"], **arrays)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        return {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    return {"meta": meta}


def main() -> int:
    try:
        job = json.loads(sys.stdin.readline())
    except ValueError:
        print(json.dumps({"error": "the routing job was not valid JSON"}), flush=True)
        return 1
    # Keep stdout for the answer line: whatever a library prints goes to stderr.
    out, sys.stdout = sys.stdout, sys.stderr
    answer = run_job(job)
    out.write(json.dumps(answer) + "\n")
    out.flush()
    return 0 if "meta" in answer else 1


if __name__ == "__main__":
    raise SystemExit(main())
