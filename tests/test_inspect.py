"""Inspection of pretrained Hugging Face MoE checkpoints, with no network: tiny
random-weight models of every supported family (moe_studio/engine/inspection/tiny.py) are saved to a
temporary folder and inspected; what the run records is checked against calling each
model's own router modules directly."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import torch  # noqa: E402

from moe_studio.engine.inspection import InspectOptions, installed_families  # noqa: E402
from moe_studio.engine.inspection.families import FAMILIES  # noqa: E402
from moe_studio.engine.inspection.inspector import Inspector  # noqa: E402
from moe_studio.engine.inspection.loading import InspectError  # noqa: E402
from moe_studio.store import open_run  # noqa: E402

from moe_studio.engine.inspection import tiny as hf_tiny  # noqa: E402

PROSE = ("The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins "
         "with a single step. Time and tide wait for no one; the early bird catches the worm. ")
CODE = "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(add(i, i * 2))\n"
FAMILY_NAMES = [f for f in hf_tiny.FAMILIES if f in {x.model_type for x in installed_families()}]
# Routers that score experts by the sigmoid of their logits (read in each family's
# transformers modeling code); the rest use a softmax
SIGMOID_SCORED = {"deepseek_v3", "glm4_moe", "glm4_moe_lite", "glm4v_moe", "dots1", "lfm2_moe",
                  "llama4", "llama4_text",
                  # batch B
                  "kimi_linear", "minimax_m2", "nemotron_h", "minicpm5_moe", "mimo_v2_flash",
                  "solar_open", "laguna", "kolibri1", "kolibri1_1", "kimi_k25", "minimax_m3_vl",
                  "step3p7", "muse_spark", "inkling2", "inkling_text"}
# Router classes of the families whose gate is not a "...TopKRouter": read in each
# family's modeling code (JetMoE: only its feed-forward gate, not its attention's)
OTHER_GATES = ("DbrxRouter", "Llama4Router", "JetMoeTopKGating", "HunYuanMoEV1Gate", "ZayaRouter")

# batch A (read in each family's modeling code as above): sigmoid-scored routers, gates not
# named "...TopKRouter" (DeepSeek-V4's hash routers of its first MoE layers), and routers
# scored by sqrt(softplus(logit)) (DeepSeek-V4's scoring_func), normalised
SIGMOID_SCORED |= {"deepseek_v32", "glm_moe_dsa", "exaone_moe", "afmoe", "hy_v3", "hy_v4",
                   "bailing_hybrid", "axk1", "axk2", "beam", "ergo", "flint", "glm5_next",
                   "hy_v4_vl", "dots3_note"}
OTHER_GATES += ("AfmoeTokenChoiceRouter", "Gemma4TextRouter", "DeepseekV4HashRouter")
SQRTSOFTPLUS_SCORED = {"deepseek_v4"}
# Routers of which only some run on text: Switch's encoder, JetMoE's feed-forward (not its
# attention's), Ernie-4.5-VL's text experts (not its vision experts)
ROUTERS_NAMED = {"switch_transformers": r"^encoder\.", "jetmoe": r"\.mlp\.router$",
                 "ernie4_5_vl_moe": r"\.text_moe\.gate$", "qwen3_omni_moe": r"^thinker\."}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Every family's model saved once for the module, a two-domain corpus folder."""
    root = tmp_path_factory.mktemp("hf")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "prose.txt").write_text(PROSE * 12, encoding="utf-8")
    (corpus / "code.py").write_text(CODE * 12, encoding="utf-8")
    tok = hf_tiny.train_tokenizer([PROSE * 4, CODE * 4])
    models = {}
    for fam in FAMILY_NAMES:
        models[fam] = hf_tiny.build(fam, root / fam, tok, seed=1)
    return {"root": root, "corpus": corpus, "models": models, "tokenizer": tok}


def _inspect(world, fam: str, steps: int | None = None, **kw):
    opts = InspectOptions(model=str(world["root"] / fam), corpus=str(world["corpus"]),
                          tokens=kw.pop("tokens", 700), seq_len=32, batch_size=4,
                          precision_every=kw.pop("precision_every", 2), **kw)
    ins = Inspector(opts, runs_dir=world["root"] / "runs")
    try:
        n = ins.total_steps if steps is None else steps
        for _ in range(n):
            ins.step()
    except BaseException:
        ins.close("failed")
        raise
    ins.close("finished" if ins.done else "stopped")
    return ins


def _text_model(model, fam: str):
    """What reads text: the model, or the sub-model its family names (Qwen3-Omni-MoE's
    thinker: the whole model only generates)."""
    sub = FAMILIES[fam].text_model if fam in FAMILIES else ""
    return getattr(model, sub) if sub else model


class GateReference:
    """Each router's input recorded by a pre-hook the test adds, then the router module
    called again on it directly: the model's own gate, outside the inspector."""

    def __init__(self, model, fam: str):
        self.fam = fam
        self.inputs: list = []
        self.logits: list = []
        self.routers = []
        self.blocks = {}   # router -> the MoE block it sits in
        mods = dict(model.named_modules())
        for name, mod in mods.items():
            cls = type(mod).__name__
            if (cls.endswith(("TopKRouter", "TopkRouter", "Top1Router")) or cls in OTHER_GATES) and \
                    re.search(ROUTERS_NAMED.get(fam, ""), name):
                self.routers.append(mod)
                self.blocks[mod] = mods[name.rpartition(".")[0]]
        self._hooks = [m.register_forward_pre_hook(self._pre, with_kwargs=True)
                       for m in self.routers]

    def _pre(self, module, args, kwargs):
        # every argument (LFM2-MoE's block passes its expert bias), the hidden states cloned
        self.inputs.append((module, (args[0].detach().clone(), *args[1:]), dict(kwargs)))

    def remove(self):
        for h in self._hooks:
            h.remove()

    def run(self, model, ids: np.ndarray):
        """Per router: (probs [T, E] as a distribution, chosen experts [T, k], kept [T])."""
        self.inputs = []
        with torch.no_grad():
            x = torch.from_numpy(ids)
            if self.fam == "switch_transformers":
                model.get_encoder()(input_ids=x)
            else:
                _text_model(model, self.fam)(input_ids=x, use_cache=False)
            out = []
            self.logits = []   # each router's logits [T, E] float64
            inputs, self.inputs = self.inputs, []
            for mod, args, kwargs in inputs:
                r = mod.forward(*args, **kwargs)   # not mod(...): the pre-hook must not see it
                if self.fam == "switch_transformers":
                    dispatch, _, logits = r
                    logits = logits.reshape(-1, logits.shape[-1]).double().numpy()
                    chosen = logits.argmax(-1)[:, None]
                    kept = dispatch.reshape(-1, logits.shape[-1]).sum(-1).numpy() > 0
                elif self.fam == "dbrx":
                    # the router gives logits; its feed-forward block's own method chooses
                    logits = r
                    chosen = self.blocks[mod].route_tokens_to_experts(r)[1].numpy()
                    logits = logits.double().numpy()
                    kept = np.ones(len(logits), bool)
                elif self.fam in ("llama4", "llama4_text"):
                    # scores: sigmoid of the chosen logits, exactly 0 for the others
                    scores, logits = r
                    nz = scores.float().numpy() != 0
                    k = self.blocks[mod].top_k
                    assert (nz.sum(-1) == k).all()
                    chosen = np.nonzero(nz)[1].reshape(-1, k)
                    logits = logits.double().numpy()
                    kept = np.ones(len(logits), bool)
                elif self.fam == "gemma4":
                    # the router returns its own softmax probabilities in the logits' place
                    probs, _, chosen = r
                    logits = np.log(probs.double().numpy())   # softmax(log p) = p
                    chosen = chosen.numpy()
                    kept = np.ones(len(logits), bool)
                elif self.fam == "jetmoe":
                    # the gate's output is grouped by expert; its first step is the top-k
                    # of its logits, taken again here
                    logits = r[4]
                    chosen = logits.topk(mod.top_k, dim=-1).indices.numpy()
                    logits = logits.double().numpy()
                    kept = np.ones(len(logits), bool)
                elif self.fam == "zaya":
                    # its choice among the experts and the skip class (the last), taken
                    # again as its code takes it: top-k of the softmax plus its biases,
                    # before it reports a skip as expert 0
                    logits = r[0]
                    biased = torch.softmax(logits, -1).float() + mod.balancing_biases
                    chosen = biased.topk(mod.top_k, dim=-1).indices.numpy()
                    assert (chosen == logits.shape[-1] - 1).any() and (chosen != logits.shape[-1] - 1).any()
                    logits = logits.double().numpy()
                    kept = np.ones(len(logits), bool)
                else:   # (Inkling's gate adds its shared experts' weights)
                    logits, _, chosen = r[:3]
                    logits = logits.double().numpy()
                    chosen = chosen.numpy()
                    kept = np.ones(len(logits), bool)
                self.logits.append(logits)
                if self.fam in SIGMOID_SCORED:
                    s = 1.0 / (1.0 + np.exp(-logits))
                    p = s / s.sum(-1, keepdims=True)
                elif self.fam in SQRTSOFTPLUS_SCORED:
                    s = np.sqrt(np.logaddexp(0.0, logits))
                    p = s / s.sum(-1, keepdims=True)
                else:
                    e = np.exp(logits - logits.max(-1, keepdims=True))
                    p = e / e.sum(-1, keepdims=True)
                out.append((p, chosen, kept))
        return out


def _called_as_modules(model, fam: str, names: list[str], ids: np.ndarray) -> set[str]:
    """Which of the modules ``names`` a forward over ``ids`` calls (forward hooks)."""
    called: set[str] = set()
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(lambda *_a, n=n: called.add(n)) for n in names]
    try:
        with torch.no_grad():
            x = torch.from_numpy(ids)
            if fam == "switch_transformers":
                model.get_encoder()(input_ids=x)
            else:
                _text_model(model, fam)(input_ids=x, use_cache=False, logits_to_keep=1)
    finally:
        for h in hooks:
            h.remove()
    return called


@pytest.mark.parametrize("fam", FAMILY_NAMES)
def test_inspection_matches_the_models_own_gates(world, fam):
    import transformers

    ins = _inspect(world, fam)
    model = world["models"][fam]
    ref = GateReference(model, fam)
    E = hf_tiny.EXPERTS
    try:
        with open_run(ins.run_dir) as r:
            assert r.meta["kind"] == "inspection"
            assert r.status == "finished"
            blocks = r.meta["moe_blocks"]
            assert len(blocks) == len(ref.routers) > 0
            assert r.config["moe"]["n_experts"] == E
            assert r.config["model"]["moe_layers"] == ",".join(map(str, blocks))
            assert r.config["precision"]["mode"] == "fp32"   # auto on the CPU
            steps, tpe = r.tensor_series("moe/tokens_per_expert")
            assert list(steps) == list(range(1, ins.total_steps + 1))
            dom_ref = np.zeros((len(ins.domain_names), len(blocks), E))
            cos_ref = np.zeros((len(blocks), E, E))
            scal = r.scalars()
            for s, batch in enumerate(ins.batches, start=1):
                got = ref.run(model, batch.ids)
                for j, (p, chosen, kept) in enumerate(got):
                    counts = np.bincount(chosen.ravel(), minlength=E)
                    np.testing.assert_array_equal(tpe[s - 1][j], counts)
                    _, d = r.tensor("moe/dropped_per_expert", s)
                    np.testing.assert_array_equal(d[j], np.bincount(chosen[~kept].ravel(), minlength=E))
                    ent = -(p * np.log(np.where(p > 0, p, 1))).sum(-1).mean()
                    sel = scal[(scal["name"] == f"moe/L{blocks[j]}/entropy") & (scal["step"] == s)]
                    assert float(sel["value"].iloc[0]) == pytest.approx(ent, rel=1e-4, abs=1e-6)
                    sel = scal[(scal["name"] == f"moe/L{blocks[j]}/top1_prob") & (scal["step"] == s)]
                    assert float(sel["value"].iloc[0]) == pytest.approx(p.max(-1).mean(), rel=1e-4)
                    _, edges, counts_h = r.histogram_series(f"router_probs/L{blocks[j]}")
                    assert counts_h[s - 1].sum() == p.size
                    want_h, _ = np.histogram(p, bins=np.asarray(edges, dtype=np.float64))
                    # float32 vs float64 probabilities may straddle a bin edge
                    assert np.abs(counts_h[s - 1] - want_h).sum() <= 2, (counts_h[s - 1], want_h)
                    for t, row in enumerate(chosen):
                        dom_ref[batch.domains[t], j, row] += 1
                        for a in row:
                            for b in row:
                                cos_ref[j, a, b] += 1
            _, dom = r.tensor("inspect/load_per_domain")
            np.testing.assert_array_equal(dom, dom_ref)
            _, cos = r.tensor("inspect/coselect")
            np.testing.assert_array_equal(cos, cos_ref)
            _, tpd = r.tensor("inspect/tokens_per_domain")
            assert tpd.sum() == sum(b.ids.size for b in ins.batches)

            # the probe: each byte carries its model token's routing
            snap = r.snapshot("routing/probe")
            a = snap.arrays
            n = a["tokens"].size
            assert a["probs"].shape == (len(blocks), n, E)
            assert a["topk_idx"].shape[:2] == (len(blocks), n)
            assert snap.meta["domain_names"] == ins.domain_names
            text0 = bytes(a["tokens"][a["domains"] == 0]).decode("utf-8")
            # the tokenizer as the model folder gives it back (Qwen3.5's own class rebuilds
            # the trained one with its own pre-tokenizer)
            tok = transformers.AutoTokenizer.from_pretrained(world["root"] / fam)
            ids = np.asarray([tok(text0)["input_ids"]], dtype=np.int64)
            p0 = ref.run(model, ids)
            starts = np.flatnonzero(a["token_start"][a["domains"] == 0])
            owner = a["model_token"][a["domains"] == 0]
            for j, (p, chosen, _kept) in enumerate(p0):
                probs_bytes = a["probs"][j][a["domains"] == 0].astype(np.float64)
                np.testing.assert_allclose(probs_bytes[starts], p[owner[starts]], atol=2e-3)
                top = a["topk_idx"][j][a["domains"] == 0][starts]
                assert [set(x) for x in top] == [set(x) for x in chosen[owner[starts]]]

            # precision headroom of every linear layer's activations
            mods = r.meta["precision_modules"]
            assert r.meta["precision_kinds"] == ["act", "weight"]
            idle_for_text = FAMILIES[fam].text_never_runs   # an image-text model's vision tower
            linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                       and (fam != "switch_transformers" or n.startswith("encoder."))
                       and not (idle_for_text and re.search(idle_for_text, n))]
            assert set(linears) <= set(mods)
            st, amax = r.tensor_series("precision/absmax")
            assert list(st) == [s for s in range(1, ins.total_steps + 1) if s == 1 or s % 2 == 0]
            act, weight = amax[0][:, 0], amax[0][:, 1]
            called = _called_as_modules(model, fam, linears, ins.batches[0].ids)
            # only layers whose weight the model uses directly are never called (Jamba's
            # dt_proj, LongCat-Flash's router classifier)
            assert {n for n in linears if n not in called} <= \
                {n for n in linears if n.endswith(("dt_proj", "router.classifier"))}
            ran = [mods.index(n) for n in called]
            assert np.isfinite(act[ran]).all() and (act[ran] > 0).all()
            idle = [mods.index(n) for n in linears if n not in called]
            assert np.isnan(act[idle]).all()
            for n in linears:   # every weight is measured, called or not
                w = dict(model.named_modules())[n].weight
                assert weight[mods.index(n)] == pytest.approx(float(w.detach().abs().max()), rel=1e-6)
    finally:
        ref.remove()


@pytest.mark.parametrize("fam", FAMILY_NAMES)
def test_the_recorded_choice_is_what_the_experts_run(world, fam):
    """What an inspection records as each token's experts is what the block's experts
    module is then given (its ``(hidden, top_k_index, top_k_weights)`` inputs, read by a
    pre-hook): the same expert, or a class the experts do not hold (LongCat-Flash's
    zero-computation experts, ZAYA1's skip) given weight 0."""
    from moe_studio.engine.inspection.capture import RouterCapture
    from moe_studio.engine.inspection.families import find_routers
    from moe_studio.engine.inspection.routing import forward

    model, family = world["models"][fam], FAMILIES[fam]
    sites = find_routers(model, family, model.config.get_text_config())
    mods = dict(model.named_modules())
    given: dict[int, tuple] = {}
    hooks = []
    for j, site in enumerate(sites):
        experts = mods.get(f"{site.name.rpartition('.')[0]}.experts")
        if experts is not None:
            hooks.append(experts.register_forward_pre_hook(
                lambda m, a, j=j: given.__setitem__(j, a)
                if len(a) == 3 and a[1].shape == a[2].shape else None))
    capture = RouterCapture(sites, family)
    try:
        with torch.no_grad():
            forward(model, family, torch.from_numpy(np.asarray([world["tokenizer"](PROSE)["input_ids"]])))
        routed = capture.take()
    finally:
        capture.remove()
        for h in hooks:
            h.remove()
    if not given:
        # (Llama 4's and JetMoE's experts take the hidden states alone, Switch's a one-hot
        # dispatch; their tests read what ran another way)
        pytest.skip(f"{fam}: its experts are not given (hidden, top_k_index, top_k_weights)")
    assert len(given) == len(sites)
    for j, r in enumerate(routed):
        _, idx, w = given[j]
        idx, w = idx.reshape(r.topk_idx.shape), w.reshape(r.topk_idx.shape)
        same = idx == r.topk_idx
        held = mods[f"{sites[j].name.rpartition('.')[0]}.experts"].num_experts
        assert (same | ((r.topk_idx >= held) & (w == 0))).all(), fam
        assert (r.topk_idx < held).any()


def test_stop_keeps_what_was_recorded(world):
    ins = _inspect(world, FAMILY_NAMES[0], steps=2, tokens=2000)
    assert 2 < ins.total_steps
    with open_run(ins.run_dir) as r:
        assert r.status == "stopped"
        assert list(r.tensor_steps("moe/tokens_per_expert")) == [1, 2]
        _, tpd = r.tensor("inspect/tokens_per_domain")
        assert tpd.sum() == sum(b.ids.size for b in ins.batches[:2])
        assert r.snapshot("routing/probe") is not None


def test_pickle_only_folder_is_refused(world, tmp_path):
    src = world["root"] / FAMILY_NAMES[0]
    dst = tmp_path / "pickled"
    dst.mkdir()
    (dst / "config.json").write_bytes((src / "config.json").read_bytes())
    torch.save(world["models"][FAMILY_NAMES[0]].state_dict(), dst / "pytorch_model.bin")
    with pytest.raises(InspectError, match=r"only pickle weights \(pytorch_model.bin\): refused"):
        Inspector(InspectOptions(model=str(dst)), runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_dense_folder_is_refused(world, tmp_path):
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=hf_tiny.VOCAB, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "dense")
    with pytest.raises(InspectError, match=r"dense\): has no MoE layers|has no MoE layers"):
        Inspector(InspectOptions(model=str(tmp_path / "dense")), runs_dir=tmp_path / "runs")


def test_all_dense_deepseek_is_refused(world, tmp_path):
    import transformers

    kw = dict(hf_tiny.FAMILIES["deepseek_v3"][1], first_k_dense_replace=2)
    transformers.AutoModelForCausalLM.from_config(transformers.DeepseekV3Config(**kw)) \
        .save_pretrained(tmp_path / "dsv3")
    world["tokenizer"].save_pretrained(tmp_path / "dsv3")
    with pytest.raises(InspectError, match="has no MoE layers"):
        Inspector(InspectOptions(model=str(tmp_path / "dsv3"), corpus=str(world["corpus"])),
                  runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_model_that_cannot_fit_is_refused(world, tmp_path, monkeypatch):
    from moe_studio.engine.inspection import loading

    monkeypatch.setattr(loading, "host_available", lambda: 1 << 16)
    with pytest.raises(InspectError, match=r"does not fit: .* parameters in fp32.*64.0 KiB free|does not fit"):
        Inspector(InspectOptions(model=str(world["root"] / FAMILY_NAMES[0]),
                                 corpus=str(world["corpus"])), runs_dir=tmp_path / "runs")


def test_uncached_model_id_is_refused_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(InspectError, match="never downloads"):
        Inspector(InspectOptions(model="nobody/no-such-moe"), runs_dir=tmp_path / "runs")


def test_memory_plan_counts_parameters_exactly(world):
    from moe_studio.engine.inspection.loading import plan_memory, read_config

    fam = FAMILY_NAMES[0]
    folder = world["root"] / fam
    plan = plan_memory(folder, read_config(folder), FAMILIES[fam], dtype="bf16", device="cpu",
                       tokens_per_batch=128)
    model = world["models"][fam]
    assert plan.params == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert plan.weights == 2 * plan.params


@pytest.mark.parametrize("fam", FAMILY_NAMES)
def test_cli_inspect_every_family(world, tmp_path, capsys, fam):
    """``moe-studio inspect MODEL --corpus --tokens --out``: the run folder on stdout,
    progress and the totals on stderr, every batch recorded."""
    from moe_studio.cli import main

    rc = main(["inspect", str(world["root"] / fam), "--corpus", str(world["corpus"]),
               "--tokens", "300", "--seq-len", "32", "--precision-every", "0",
               "--out", str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    run = Path(out.strip().splitlines()[-1])
    assert run.parent == tmp_path / "runs"
    with open_run(run) as r:
        assert r.meta["kind"] == "inspection" and r.meta["model_type"] == fam
        assert r.status == "finished" and r.meta["tokens_routed"] <= 300
        steps = r.tensor_steps("moe/tokens_per_expert")
        assert list(steps) == list(range(1, r.meta["total_steps"] + 1))
        title = r.meta["model_family"]
    assert f"{title} · {len(r.meta['moe_blocks'])} MoE layers × {hf_tiny.EXPERTS} experts" in err
    assert f"finished: {len(steps)} batches, {r.meta['tokens_routed']:,} tokens" in err


def test_cli_inspect_refusal(world, tmp_path, capsys):
    from moe_studio.cli import main

    bad = tmp_path / "pickled"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "mixtral"}))
    (bad / "model.pt").write_bytes(b"\x80")
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "refused, a pickle can run code" in err and len(err.strip().splitlines()) == 2


def test_bench_inspect_quick_reports_both_rates(capsys):
    import statistics

    from moe_studio.cli import main

    assert main(["bench", "inspect", "--quick", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["benchmark"] == "inspect" and r["rounds"] == len(r["overhead_rounds"]) >= 1
    assert r["overhead"] == pytest.approx(statistics.median(r["overhead_rounds"]), abs=1e-4)
    assert r["plain_tokens_per_s"] > 0 and r["inspect_tokens_per_s"] > 0
    assert r["met"] == (r["overhead"] <= r["budget"])


def _first_batch_of_a_variant(world, tmp_path, fam: str, seed: int, **config):
    """A tiny ``fam`` model with these config values, inspected for one batch, and the
    model's own gate on that batch: ``(inspector, GateReference, its per-router output)``."""
    folder = tmp_path / fam
    model = hf_tiny.build(fam, folder, world["tokenizer"], seed=seed, **config)
    ins = Inspector(InspectOptions(model=str(folder), corpus=str(world["corpus"]), tokens=200,
                                   seq_len=32, batch_size=2, precision_every=0),
                    runs_dir=tmp_path / "runs")
    ins.step()
    ins.close("stopped")
    ref = GateReference(model, fam)
    try:
        got = ref.run(model, ins.batches[0].ids)
    finally:
        ref.remove()
    return ins, ref, got


@pytest.mark.skipif("switch_transformers" not in FAMILY_NAMES, reason="no Switch in transformers")
def test_switch_capacity_drops_match_the_router(world, tmp_path):
    ins, ref, got = _first_batch_of_a_variant(world, tmp_path, "switch_transformers", seed=3,
                                              expert_capacity=2)
    with open_run(ins.run_dir) as r:
        _, dropped = r.tensor("moe/dropped_per_expert", 1)
        scal = r.scalars()
        for j, (_p, chosen, kept) in enumerate(got):
            assert (~kept).sum() > 0   # capacity 2 of 32 tokens: most are dropped
            np.testing.assert_array_equal(dropped[j], np.bincount(chosen[~kept].ravel(),
                                                                  minlength=hf_tiny.EXPERTS))
            frac = scal[scal["name"] == f"moe/L{r.meta['moe_blocks'][j]}/dropped_frac"]
            assert float(frac["value"].iloc[0]) == pytest.approx((~kept).mean())


@pytest.mark.skipif("cohere2_moe" not in FAMILY_NAMES, reason="no Cohere2-MoE in transformers")
def test_scoring_the_config_chooses_is_the_one_read(world, tmp_path):
    """Cohere2-MoE's config picks softmax or sigmoid scoring (expert_selection_fn): a
    checkpoint saved with sigmoid is read as sigmoid (its normalised sigmoid affinities),
    not as the family's softmax default."""
    ins, ref, _ = _first_batch_of_a_variant(world, tmp_path, "cohere2_moe", seed=5,
                                            expert_selection_fn="sigmoid")
    logits = ref.logits
    assert len(logits) == 2
    with open_run(ins.run_dir) as r:
        assert r.meta["router_scoring"] == "sigmoid" and r.config["moe"]["router"] == "sigmoid"
        scal = r.scalars()
        for j, lg in enumerate(logits):
            s = 1.0 / (1.0 + np.exp(-lg))
            p = s / s.sum(-1, keepdims=True)
            top1 = scal[scal["name"] == f"moe/L{r.meta['moe_blocks'][j]}/top1_prob"]
            assert float(top1["value"].iloc[0]) == pytest.approx(p.max(-1).mean(), rel=1e-4)
            e = np.exp(lg - lg.max(-1, keepdims=True))
            soft = e / e.sum(-1, keepdims=True)
            assert abs(soft.max(-1).mean() - p.max(-1).mean()) > 1e-3   # the two differ here


@pytest.mark.parametrize("fam", ["mixtral", "switch_transformers"])
def test_custom_text_routes_through_the_inspected_checkpoint(world, fam, tmp_path):
    """The Routing view's Route for an inspection run: the engine's routing child loads
    the checkpoint the run's meta names and routes through its own tokenizer; each
    byte's probabilities and experts are those the model's own gate gives its token."""
    import json
    import subprocess
    from moe_studio.engine.probe import is_pretrained_run, weight_sources
    from moe_studio.gui.run.worker import child_command
    if fam not in FAMILY_NAMES:
        pytest.skip(f"{fam} is not in the installed transformers")
    ins = _inspect(world, fam, steps=1)
    assert is_pretrained_run(ins.run_dir)
    [src] = weight_sources(ins.run_dir)
    assert src.kind == "pretrained" and src.path == world["root"] / fam
    text = "for i in range(3):\n    print(i)  # prose and code, ünïcode too"
    out = tmp_path / "routed.npz"
    cmd, env = child_command("moe_studio.engine.probe_child")
    proc = subprocess.run(cmd, input=json.dumps({"run": str(ins.run_dir), "text": text,
                                                  "checkpoint": None, "member": 0,
                                                  "out": str(out)}) + "\n",
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    meta = json.loads(proc.stdout.strip().splitlines()[-1])["meta"]
    with np.load(out, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    assert bytes(a["tokens"]).decode("utf-8") == text
    assert meta["domain_names"] == ins.domain_names + ["custom"]
    assert (a["domains"] == len(ins.domain_names)).all()
    assert meta["n_experts"] == hf_tiny.EXPERTS and meta["moe_blocks"] == ins.blocks

    model = world["models"][fam]
    ref = GateReference(model, fam)
    try:
        ids = np.asarray([world["tokenizer"](text)["input_ids"]], dtype=np.int64)
        gates = ref.run(model, ids)
    finally:
        ref.remove()
    owner = a["model_token"]
    assert owner.max() + 1 == ids.shape[1]          # every model token owns some bytes
    for j, (p, chosen, _kept) in enumerate(gates):
        np.testing.assert_allclose(a["probs"][j].astype(np.float64), p[owner], atol=2e-3)
        assert [set(x) for x in a["topk_idx"][j]] == [set(x) for x in chosen[owner]]


def test_custom_text_refused_in_one_line_when_the_model_folder_is_gone(world, tmp_path):
    import shutil
    from moe_studio.engine.inspection.routing import probe_snapshot
    from moe_studio.engine.probe import weight_sources
    moved = tmp_path / "mixtral"
    shutil.copytree(world["root"] / "mixtral", moved)
    opts = InspectOptions(model=str(moved), corpus=str(world["corpus"]), tokens=100,
                          seq_len=32, batch_size=2, precision_every=0)
    ins = Inspector(opts, runs_dir=tmp_path / "runs")
    ins.step()
    ins.close("stopped")
    shutil.rmtree(moved)
    assert weight_sources(ins.run_dir) == []        # nothing to offer in the Route box
    with pytest.raises(ValueError, match="no longer exists") as e:
        probe_snapshot(ins.run_dir, "hello")
    assert "\n" not in str(e.value)


def _readme_section() -> str:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = text.index("## Inspect a pretrained MoE checkpoint")
    return text[start:text.index("\n## ", start + 1)]


def test_readme_inspect_commands_are_the_clis_and_say_what_needs_a_gpu():
    """The README's commands parse with the CLI as written, it names every family an
    inspection reads, and it says plainly what needs a GPU or a large download."""
    import shlex

    from moe_studio.cli import build_parser

    section = _readme_section()
    commands = [line.split("#")[0].strip() for line in section.splitlines()
                if line.startswith(".venv/bin/moe-studio inspect")]
    assert len(commands) >= 3
    parser = build_parser()
    for cmd in commands:
        args = parser.parse_args(shlex.split(cmd)[1:])
        assert args.command == "inspect" and args.model, cmd
    flags = " ".join(commands)
    for flag in ("--corpus", "--tokens", "--estimate", "--dtype", "--device"):
        assert flag in flags
    families = next(line for line in section.splitlines() if line.startswith("- Families:"))
    families += section[section.index(families) + len(families):].split("\n-")[0]
    for fam in FAMILIES.values():
        assert fam.title in " ".join(families.split()), fam.title
    assert f"{len(FAMILIES)} model types" in " ".join(families.split())
    flat = " ".join(section.split())
    assert "**Nothing is ever downloaded**" in flat and "**A GPU is needed in practice**" in flat
    assert "large downloads" in flat and "neither a network nor a GPU" in flat
    bench = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert "moe-studio bench {engine," in bench and ",inspect," in bench
