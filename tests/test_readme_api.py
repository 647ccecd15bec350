"""The README's pandas path (``open_run(...).scalars()`` and friends) runs as written,
and gives what the store holds."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _readme_block(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    (block,) = [b for b in blocks if marker in b]
    return textwrap.dedent(block)


def test_the_readme_pandas_example_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    ns: dict = {}
    exec(compile(_readme_block("from moe_studio.store import open_run"), "README.md", "exec"), ns)
    loss, steps, counts = ns["loss"], ns["steps"], ns["counts"]
    # against the store read another way: the latest train/loss row and the tensor count
    import sqlite3
    con = sqlite3.connect(f"file:{ROOT / 'sample_runs/moe-top2/run.sqlite'}?immutable=1", uri=True)
    try:
        (n_tensors,) = con.execute("SELECT count(*) FROM tensors t JOIN names n ON n.id = t.name_id "
                                   "WHERE n.name = 'moe/tokens_per_expert' AND t.member = 0").fetchone()
        last = con.execute("SELECT l.step, l.value FROM latest l JOIN names n ON n.id = l.name_id "
                           "WHERE n.name = 'train/loss' AND l.member = 0").fetchone()
    finally:
        con.close()
    assert list(loss.columns) == [0] and loss.index.is_monotonic_increasing
    assert loss.index[-1] == last[0] and np.isclose(loss[0].iloc[-1], last[1])
    assert steps.shape == (n_tensors,) and counts.shape[0] == n_tensors and counts.ndim == 3
