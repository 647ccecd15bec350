"""Text generation and its speed (engine/generate.py, ``moe-studio sample``, the child
process the app uses), against a decoding loop written here."""
from __future__ import annotations

import json

import pytest
import torch

from moe_studio.cli import main
from moe_studio.engine.generate import sample_run, sample_tokens
from moe_studio.engine.probe import load_model
from moe_studio.engine.sample_child import run_job
from moe_studio.engine.trainer import Trainer

from tiny import tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tr = Trainer(tiny_config(train__steps=4, train__eval_every=100), tmp_path_factory.mktemp("runs"))
    while not tr.done:
        tr.step()
    tr.close()   # finished: writes the final checkpoint
    return tr.run_dir


def test_greedy_matches_reference_loop(run_dir):
    model, cfg, _ = load_model(run_dir)
    prompt = list(b"def f(x):\n    return")   # longer than nothing, shorter than the context
    n = 30                                      # runs past the 16-token context
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            window = torch.tensor(seq[-cfg.data.context:])[None]
            seq.append(int(model(window)[0][0, -1].argmax()))
    toks, lat = sample_tokens(model, prompt, n, temperature=0.0)
    assert toks == seq[len(prompt):]
    assert len(lat) == n and all(t > 0 for t in lat)


def test_sampling_is_seeded_and_top_k_restricts(run_dir):
    model, _, _ = load_model(run_dir)
    a = sample_tokens(model, [65], 20, temperature=1.0, seed=3)[0]
    assert a == sample_tokens(model, [65], 20, temperature=1.0, seed=3)[0]
    # top_k = 1 is greedy whatever the temperature
    assert sample_tokens(model, [65], 10, temperature=5.0, top_k=1)[0] == \
        sample_tokens(model, [65], 10, temperature=0.0)[0]


def test_speed_numbers_are_consistent(run_dir):
    g = sample_run(run_dir, "Hello", 12, temperature=0.0)
    sp = g.speed()
    assert sp["tokens"] == 12 == len(g.tokens)
    assert sp["tokens_per_s"] == pytest.approx(12 / sum(g.per_token_s))
    assert min(g.per_token_s) <= sp["latency_median_s"] <= sp["latency_p90_s"] <= max(g.per_token_s)
    assert g.text == bytes(g.tokens).decode("utf-8", errors="replace")


def test_cli_prints_text_and_speed(run_dir, capsys):
    assert main(["sample", str(run_dir), "--prompt", "The ", "--tokens", "8", "--temperature", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("The ") or "The " in "\n".join(out[:-1])
    assert "tokens/s" in out[-1] and "latency per token" in out[-1]
    assert main(["sample", str(run_dir), "--tokens", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tokens" in err


def test_child_job_answers_one_json_object(run_dir, tmp_path):
    ans = run_job({"run": str(run_dir), "prompt": "ab", "tokens": 5, "temperature": 0})
    assert len(ans["tokens"]) == 5 and ans["speed"]["tokens"] == 5
    json.dumps(ans)
    bad = run_job({"run": str(tmp_path / "nope"), "prompt": "ab"})
    assert "not found" in bad["error"]
