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

from tiny import tiny_config, trained_run


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


# ------------------------------------------------------------------ ensembles
# What the sampler draws from for an ensemble run is the run's combination rule over
# its members; the rules are written out again here from the members' raw logits.

@pytest.fixture(scope="module")
def ens_dir(tmp_path_factory):
    return trained_run(tmp_path_factory.mktemp("ens"), train__steps=4, train__eval_every=100,
                       ensemble__members=3)


def _member_logits(run_dir, seq, members):
    out = []
    with torch.no_grad():
        for m in members:
            model, cfg, _ = load_model(run_dir, member=m)
            out.append(model(seq[:, -cfg.data.context:])[0][0, -1].double())
    return torch.stack(out)   # [M, V] float64


def _with_combine(run_dir, tmp_path, rule):
    """A copy of the run whose config names another combination rule."""
    import shutil

    from moe_studio.config import load, save
    dst = tmp_path / f"run-{rule}"
    shutil.copytree(run_dir, dst)
    cfg = load(dst / "config.toml")
    cfg.ensemble.combine = rule
    save(cfg, dst / "config.toml")
    return dst


def _reference(rule, logits, alphas=None):
    """[V] log-probabilities of the ensemble, from members' logits [M, V]."""
    M = logits.shape[0]
    p = torch.softmax(logits, -1)
    lp = torch.log_softmax(logits, -1)
    if rule == "mean_prob":
        return torch.log(p.mean(0))
    if rule == "mean_logit":
        return torch.log_softmax(logits.mean(0), -1)   # the log-partitions cancel
    if rule == "sum_logit":
        return torch.log_softmax(logits.sum(0), -1)
    a = torch.ones(M, dtype=torch.float64) if alphas is None else torch.tensor(alphas, dtype=torch.float64)
    votes = torch.zeros_like(p[0])
    for m in range(M):
        votes[int(lp[m].argmax())] += a[m]
    return torch.log(0.99 * votes / a.sum() + 0.01 * p.mean(0))


@pytest.mark.parametrize("rule", ["mean_prob", "mean_logit", "sum_logit", "vote"])
def test_ensemble_samples_the_run_combination_rule(ens_dir, tmp_path, rule):
    from moe_studio.engine.generate import run_sampler
    run = _with_combine(ens_dir, tmp_path, rule)
    nxt, _ = run_sampler(run)
    assert nxt.label == f"ensemble of 3 members ({rule})"
    for prompt in (b"T", b"def f(x):\n    return x + 1"):   # shorter and longer than the context
        seq = torch.tensor(list(prompt))[None]
        logits = _member_logits(run, seq, range(3))
        ref = _reference(rule, logits).exp()
        assert torch.allclose(nxt(seq).double().exp(), ref, atol=1e-6, rtol=0)
        # the rules differ by far more than that: the comparison can tell them apart
        other = "sum_logit" if rule != "sum_logit" else "mean_prob"
        assert (_reference(other, logits).exp() - ref).abs().max() > 1e-4
    # the greedy text is the argmax of that distribution, token after token
    seq = list(b"Th")
    for _ in range(6):
        seq.append(int(_reference(rule, _member_logits(run, torch.tensor(seq)[None], range(3))).argmax()))
    g = sample_run(run, "Th", 6, temperature=0.0)
    assert g.tokens == seq[2:] and g.sampled == nxt.label


@pytest.mark.parametrize("member", [0, 2])
def test_member_option_samples_that_member(ens_dir, member):
    from moe_studio.engine.generate import run_sampler
    nxt, _ = run_sampler(ens_dir, member=member)
    assert nxt.label == f"member {member} of 3"
    seq = torch.tensor(list(b"Hello, world"))[None]
    logits = _member_logits(ens_dir, seq, range(3))
    ref = torch.softmax(logits[member], -1)
    assert torch.allclose(nxt(seq).double().exp(), ref, atol=1e-6, rtol=0)
    assert (torch.softmax(logits[1], -1) - ref).abs().max() > 1e-4   # members differ
    with pytest.raises(ValueError, match="member 3 does not exist"):
        run_sampler(ens_dir, member=3)


def test_samme_ensemble_uses_the_recorded_alphas(tmp_path):
    from moe_studio.engine.generate import run_sampler
    from moe_studio.store.reader import RunReader
    tr = Trainer(tiny_config(train__steps=4, train__eval_every=100, ensemble__members=2,
                             ensemble__method="boosting", ensemble__boost_mode="samme",
                             ensemble__combine="samme"), tmp_path)
    while not tr.done:
        tr.step()
    tr.close()
    r = RunReader(tr.run_dir)
    df = r.scalars(["boost/alpha"])
    r.close()
    alphas = [float(df[df["member"] == m]["value"].iloc[-1]) for m in range(2)]
    nxt, _ = run_sampler(tr.run_dir)
    seq = torch.tensor(list(b"The cat"))[None]
    logits = _member_logits(tr.run_dir, seq, range(2))
    ref = _reference("samme", logits, alphas).exp()
    assert torch.allclose(nxt(seq).double().exp(), ref, atol=1e-6, rtol=0)
    assert (_reference("mean_prob", logits).exp() - ref).abs().max() > 1e-4


def test_cli_and_child_name_what_was_sampled(ens_dir, capsys):
    assert main(["sample", str(ens_dir), "--tokens", "3", "--temperature", "0"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("-- ensemble of 3 members (mean_prob): 3 tokens") and "tokens/s" in last
    assert main(["sample", str(ens_dir), "--tokens", "3", "--member", "1", "--json"]) == 0
    ans = json.loads(capsys.readouterr().out)
    assert ans["sampled"] == "member 1 of 3"
    assert ans["tokens"] == sample_run(ens_dir, "The ", 3, member=1).tokens
    assert run_job({"run": str(ens_dir), "prompt": "ab", "tokens": 2})["sampled"] == \
        "ensemble of 3 members (mean_prob)"
    assert run_job({"run": str(ens_dir), "prompt": "ab", "tokens": 2, "member": 0})["sampled"] == \
        "member 0 of 3"
