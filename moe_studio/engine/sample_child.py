"""Generate text in a short-lived process, so the app never imports torch.

    python -m moe_studio.engine.sample_child

stdin: one JSON job ``{"run", "prompt", "tokens", "member", "temperature", "top_k",
"seed", "checkpoint"}`` (all but run and prompt optional; ``member`` null or absent:
an ensemble run samples its ensemble); stdout: one JSON line,
``Generation.as_dict()`` or ``{"error": "one line"}``; exit code 0 or 1.
"""
from __future__ import annotations

import json
import sys
from typing import Any


def _member(value) -> int | None:
    """The job's member: None (absent or null) = the ensemble as its rule combines it."""
    return None if value is None else int(value)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Do one job; the answer line's content. Never raises for a bad job or run."""
    from .generate import sample_run

    try:
        g = sample_run(job["run"], str(job["prompt"]), int(job.get("tokens", 200)),
                       checkpoint=job.get("checkpoint"), member=_member(job.get("member")),
                       temperature=float(job.get("temperature", 0.8)),
                       top_k=int(job.get("top_k") or 0), seed=int(job.get("seed") or 0),
                       device=str(job.get("device") or "cpu"))
    except (ValueError, OSError, KeyError, TypeError) as exc:
        return {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    return g.as_dict()


def main() -> int:
    try:
        job = json.loads(sys.stdin.readline())
    except ValueError:
        print(json.dumps({"error": "the sampling job was not valid JSON"}), flush=True)
        return 1
    out, sys.stdout = sys.stdout, sys.stderr   # stdout carries only the answer line
    answer = run_job(job)
    out.write(json.dumps(answer) + "\n")
    out.flush()
    return 0 if "error" not in answer else 1


if __name__ == "__main__":
    raise SystemExit(main())
