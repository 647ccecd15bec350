"""What an inspection loads and refuses before it routes anything, and the precision
headroom it records, checked against independent references: a model id found in a
Hugging Face cache laid out by the test (with every network connection blocked), MoE
families this transformers has but an inspection does not read, remote code left off,
the memory refusal's numbers, and each linear layer's activations (and each of DBRX's
row-block experts', with their weights) cast to fp16, bf16 and fp8 by torch itself."""
from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import torch  # noqa: E402

from moe_studio.engine.inspection import InspectOptions  # noqa: E402
from moe_studio.engine.inspection import tiny as hf_tiny  # noqa: E402
from moe_studio.engine.inspection.inspector import Inspector  # noqa: E402
from moe_studio.engine.inspection.loading import InspectError  # noqa: E402
from moe_studio.store import open_run  # noqa: E402

TEXT = "Experts split the tokens between them. def f(x):\n    return x + 1\n" * 20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny Mixtral checkpoint and a one-file corpus."""
    root = tmp_path_factory.mktemp("hf-load")
    (root / "corpus.txt").write_text(TEXT, encoding="utf-8")
    tok = hf_tiny.train_tokenizer([TEXT])
    model = hf_tiny.build("mixtral", root / "mixtral", tok, seed=2)
    return {"root": root, "folder": root / "mixtral", "corpus": root / "corpus.txt",
            "model": model, "tokenizer": tok}


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a network connection is recorded and fails."""
    tried: list = []

    def refuse(*args, **_kw):
        tried.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: refuse(addr))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, addr: refuse(addr))
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return tried


def _fake_cache(cache: Path, repo_id: str, files_from: Path) -> Path:
    """A Hugging Face hub cache holding ``repo_id`` at one revision, as ``hf download``
    leaves it: ``models--org--name/refs/main`` names the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / ("0" * 40)
    shutil.copytree(files_from, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    return snap


def test_a_cached_model_id_is_inspected_without_the_network(tiny, tmp_path, monkeypatch,
                                                            no_network):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snap = _fake_cache(tmp_path / "hub", "tiny-org/tiny-mixtral", tiny["folder"])
    ins = Inspector(InspectOptions(model="tiny-org/tiny-mixtral", corpus=str(tiny["corpus"]),
                                   tokens=100, seq_len=32, batch_size=2, precision_every=0),
                    runs_dir=tmp_path / "runs")
    ins.step()
    ins.close("stopped")
    with open_run(ins.run_dir) as r:
        assert Path(r.meta["model_path"]) == snap.resolve()
        assert r.meta["model_type"] == "mixtral"
    assert no_network == []


def test_an_uncached_model_id_says_nothing_is_downloaded(tmp_path, monkeypatch, no_network):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(InspectError) as e:
        Inspector(InspectOptions(model="nobody/no-such-moe"), runs_dir=tmp_path / "runs")
    msg = str(e.value)
    assert "is neither a folder nor a model in the local Hugging Face cache" in msg
    assert str(tmp_path / "hub") in msg and "never downloads" in msg
    assert "hf download nobody/no-such-moe" in msg and "\n" not in msg
    assert no_network == [] and not (tmp_path / "runs").exists()


def _refusal(tmp_path, model_type: str, cfg: dict) -> str:
    """The InspectError message for a folder whose config.json is only ``cfg``."""
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, **cfg}))
    with pytest.raises(InspectError) as e:
        Inspector(InspectOptions(model=str(folder)), runs_dir=tmp_path / "runs")
    return str(e.value)


@pytest.mark.parametrize("model_type, cfg", [
    # block diffusion: its routers run in an encoder and a canvas decoder, not one forward
    ("diffusion_gemma", {"text_config": {"num_experts": 128}}),     # nested
    ("omni_moe", {"thinker_config": {"text_config": {"num_experts": 128}}}),  # twice, as
    # Qwen3-Omni-MoE's (read now, so a made-up name keeps this layout tested)
    # product-key experts (16,384, 64 a token): its logits score sqrt(E) keys per half
    ("doge", {}),                 # no expert count at all: the modeling code says MoE
    ("doge", {"num_experts": 16384}),
])
def test_moe_families_not_read_yet_are_not_called_dense(tmp_path, model_type, cfg):
    msg = _refusal(tmp_path, model_type, cfg)
    assert f"MoE family '{model_type}' is not supported (supported: Mixtral, " in msg, msg
    assert "dense" not in msg


@pytest.mark.parametrize("model_type", [
    "gemma4_unified",    # its docs name output_router_logits, but it has no routed experts
    "granite_docling",   # its router_logits are a density router's for image tiles, not experts
])
def test_models_whose_router_logits_are_not_experts_are_called_dense(tmp_path, model_type):
    assert _refusal(tmp_path, model_type, {}) == (f"{model_type} ({model_type}) has no MoE "
                                                  "layers: a dense model routes nothing")


def test_a_scoring_an_inspection_does_not_read_is_refused_in_one_line(tiny, tmp_path):
    """DeepSeek-V4's config names its router's scoring function: one an inspection has
    no distribution for is refused by name, before any run folder is made."""
    pytest.importorskip("transformers.models.deepseek_v4")
    hf_tiny.build("deepseek_v4", tmp_path / "dsv4", tiny["tokenizer"], scoring_func="tanh")
    with pytest.raises(InspectError) as e:
        Inspector(InspectOptions(model=str(tmp_path / "dsv4"), corpus=str(tiny["corpus"])),
                  runs_dir=tmp_path / "runs")
    assert str(e.value) == ("dsv4: model.layers.0.mlp.gate: scores its experts by 'tanh', "
                            "which an inspection does not read (it reads softmax, sigmoid, "
                            "sqrtsoftplus)")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("model_type, cfg, reason", [
    ("nllb-moe", {"num_experts": 128}, "read the router's top-1 mask as expert ids"),
    ("inkling2_loop", {"text_config": {"n_routed_experts": 128}},
     "run each of their routers several times per token"),
])
def test_moe_families_read_wrongly_are_refused_with_the_reason(tmp_path, model_type, cfg, reason):
    """MoE families the installed transformers has but an inspection cannot read right
    (families.NOT_READ, each read in its modeling code) say why, in one line."""
    msg = _refusal(tmp_path, model_type, cfg)
    assert f"MoE family '{model_type}' is not supported: " in msg and reason in msg, msg
    assert "\n" not in msg and not (tmp_path / "runs").exists()


def test_nllb_moe_experts_still_ignore_the_router():
    """Why NLLB-MoE is refused, checked on the installed transformers: its experts run
    by the 0/1 values of the router's top-1 mask (expert 0 for each 0, expert 1 for each
    1), not by the experts the router chose. When this fails, the bug is fixed and
    NLLB-MoE can be read."""
    import torch
    import transformers

    cfg = transformers.NllbMoeConfig(
        vocab_size=300, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=32, num_experts=4,
        expert_capacity=64, encoder_sparse_step=1, decoder_sparse_step=1, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.AutoModelForSeq2SeqLM.from_config(cfg).eval()
    ffn = model.get_encoder().layers[0].ffn
    ran: dict[int, int] = {}
    seen = {}
    ffn.router.register_forward_hook(lambda m, a, o: seen.update(out=o))
    for e in range(4):
        ffn.experts[f"expert_{e}"].register_forward_hook(
            lambda m, a, o, e=e: ran.__setitem__(e, ran.get(e, 0) + a[0].shape[0]))
    with torch.no_grad():
        model.get_encoder()(input_ids=torch.randint(3, 290, (2, 16)))
    top1_mask, combine, _ = seen["out"]
    chosen = (combine > 0).sum(0)           # tokens per expert the router sent (top-2)
    T, E = top1_mask.shape
    assert chosen.sum() > T and (chosen[2:] > 0).any()   # the router uses experts 2 and 3
    # ... but each token runs expert 0 once per 0 in its mask row and expert 1 once
    assert ran == {0: T * (E - 1), 1: T}


def test_remote_code_runs_only_with_the_flag(tiny, tmp_path):
    """A supported family whose config also names its own code loads the transformers
    classes (the checkpoint's Python file never runs); an unknown family that needs its
    code is refused until the flag is given."""
    marker = tmp_path / "remote-code-ran"
    folder = tmp_path / "with-code"
    shutil.copytree(tiny["folder"], folder)
    (folder / "modeling_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(cfg))
    ins = Inspector(InspectOptions(model=str(folder), corpus=str(tiny["corpus"]), tokens=80,
                                   seq_len=32, batch_size=1, precision_every=0),
                    runs_dir=tmp_path / "runs")
    ins.step()
    ins.close("stopped")
    assert type(ins.model).__module__.startswith("transformers.models.mixtral")
    assert not marker.exists()

    cfg["model_type"] = "evil_moe"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InspectError, match="needs its own Python code .*pass --trust-remote-code"):
        Inspector(InspectOptions(model=str(folder)), runs_dir=tmp_path / "runs2")
    assert not marker.exists() and not (tmp_path / "runs2").exists()


def test_a_model_that_cannot_fit_is_refused_with_its_numbers(tiny, tmp_path, monkeypatch,
                                                             capsys):
    from moe_studio.cli import main
    from moe_studio.engine.inspection import loading

    free = 300 * 2 ** 10
    monkeypatch.setattr(loading, "host_available", lambda: free)
    params = sum(p.numel() for p in {id(p): p for p in tiny["model"].parameters()}.values())
    with pytest.raises(InspectError) as e:
        Inspector(InspectOptions(model=str(tiny["folder"]), corpus=str(tiny["corpus"])),
                  runs_dir=tmp_path / "runs")
    msg = str(e.value)
    assert msg.startswith("mixtral does not fit: ") and "\n" not in msg
    assert f"{params:,} parameters in fp32: weights {params * 4 / 2 ** 20:.1f} MiB" in msg
    assert "on cpu (0.3 MiB free) (try --dtype bf16)" in msg
    assert not (tmp_path / "runs").exists()

    # the estimate the app shows before Start says the same, and reads no weights
    assert main(["inspect", str(tiny["folder"]), "--estimate"]) == 0
    est = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert est["ok"] and not est["fits"] and est["reason"] == msg
    assert est["available"] == free and est["needed"] > free


def _outputs_of(model, ids: np.ndarray, mods: dict, key=lambda name, _mod, _args: name) -> dict:
    """The outputs of the modules ``mods`` (name -> module) over one forward as an
    inspection runs it (one position of LM logits), recorded by hooks the test adds, each
    under ``key(name, module, args)`` (one key per call)."""
    out: dict = {}

    def hook(name, mod, args, y):
        k = key(name, mod, args)
        assert k not in out
        out[k] = y.detach().clone()
    hooks = [m.register_forward_hook(lambda m_, a, y, n=n: hook(n, m_, a, y)) for n, m in mods.items()]
    try:
        with torch.no_grad():
            model(input_ids=torch.from_numpy(ids), use_cache=False, logits_to_keep=1)
    finally:
        for h in hooks:
            h.remove()
    return out


def _linear_outputs(model, ids: np.ndarray) -> dict[str, torch.Tensor]:
    """Every nn.Linear's output over one forward."""
    return _outputs_of(model, ids, {n: m for n, m in model.named_modules()
                                    if isinstance(m, torch.nn.Linear)})


def test_headroom_of_every_linear_matches_torchs_own_casts(tiny, tmp_path):
    """One layer's output pushed past fp16's range: the share of each linear layer's
    activations that would overflow, turn subnormal or flush to zero in fp16, bf16 and
    fp8 e5m2 is what casting them with torch gives (fp8 e4m3fn, which saturates instead
    of overflowing, by its documented 464 rounding edge)."""
    model = hf_tiny.build("mixtral", tmp_path / "hot", tiny["tokenizer"], seed=4)
    with torch.no_grad():
        model.model.layers[0].self_attn.o_proj.weight.mul_(6e6)
    model.save_pretrained(tmp_path / "hot")
    ins = Inspector(InspectOptions(model=str(tmp_path / "hot"), corpus=str(tiny["corpus"]),
                                   tokens=200, seq_len=32, batch_size=4, precision_every=1),
                    runs_dir=tmp_path / "runs")
    ins.step()
    ins.close("stopped")
    ys = _linear_outputs(model, ins.batches[0].ids)
    casts = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp8_e5m2": torch.float8_e5m2}
    tiny_normal = {"fp16": 2.0 ** -14, "bf16": 2.0 ** -126, "fp8_e5m2": 2.0 ** -14}
    with open_run(ins.run_dir) as r:
        mods, kinds, fmts = (r.meta["precision_modules"], r.meta["precision_kinds"],
                             r.meta["precision_formats"])
        _, absmax = r.tensor("precision/absmax", 1)
        _, frac = r.tensor("precision/fractions", 1)
    act = kinds.index("act")
    hot = "model.layers.0.self_attn.o_proj"
    assert (ys[hot].abs() > 65504).any() and not (ys[hot].abs() > 65504).all()
    for name, y in ys.items():
        i = mods.index(name)
        assert y.numel() <= 1 << 16        # under the sample size: the shares are exact
        assert absmax[i, act] == pytest.approx(float(y.abs().max()), rel=1e-6), name
        nz = y != 0
        for fmt, dt in casts.items():
            c = y.to(dt).float()
            want = [torch.isinf(c).float().mean(),
                    (torch.isfinite(c) & (c != 0) & (c.abs() < tiny_normal[fmt])).float().mean(),
                    (nz & (c == 0)).float().mean()]
            np.testing.assert_allclose(frac[i, act, fmts.index(fmt)], [float(w) for w in want],
                                       atol=1e-7, err_msg=f"{name} {fmt}")
        e4m3 = frac[i, act, fmts.index("fp8_e4m3")]
        assert e4m3[0] == pytest.approx(float((y.abs() > 464).float().mean()), abs=1e-7)
    fp16_overflow = frac[mods.index(hot), act, fmts.index("fp16"), 0]
    assert 0 < fp16_overflow < 1 and frac[mods.index(hot), act, fmts.index("bf16"), 0] == 0


def _cast_shares(y: torch.Tensor, fmt: str) -> list[float]:
    """Share of ``y`` that overflows, turns subnormal, flushes to zero when torch casts it
    to ``fmt`` (fp16, bf16, fp8_e5m2)."""
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp8_e5m2": torch.float8_e5m2}[fmt]
    tiny_normal = {"fp16": 2.0 ** -14, "bf16": 2.0 ** -126, "fp8_e5m2": 2.0 ** -14}[fmt]
    c = y.to(dt).float()
    return [float(torch.isinf(c).float().mean()),
            float((torch.isfinite(c) & (c != 0) & (c.abs() < tiny_normal)).float().mean()),
            float(((y != 0) & (c == 0)).float().mean())]


def test_headroom_of_dbrx_experts_per_expert_matches_torchs_own_casts(tiny, tmp_path):
    """DBRX keeps its experts' weights as 2-d [E*h, d] parameters (w1, v1, w2), not
    linear layers: each expert is watched on its own (``ffn.experts.mlp.{e}``), its output
    being what the expert module returned when called with that expert's rows (told
    apart here by comparing the rows' values), its weight its rows of w1, v1 and w2. One
    expert is pushed past fp16's range; every share matches torch's own casts."""
    E = hf_tiny.EXPERTS
    folder = tmp_path / "dbrx-hot"
    model = hf_tiny.build("dbrx", folder, tiny["tokenizer"], seed=6)
    mlps = {n: m for n, m in model.named_modules() if type(m).__name__ == "DbrxExpertGLU"}
    assert len(mlps) == 2

    def which_expert(name, mod, args) -> tuple[str, int]:
        rows = mod.w1.view(E, -1, mod.w1.shape[-1])
        [e] = [e for e in range(E) if torch.equal(args[1], rows[e])]
        return name, e

    def expert_outputs(ids) -> dict[tuple[str, int], torch.Tensor]:
        """(module name, expert) -> the expert module's output."""
        return _outputs_of(model, ids, mlps, which_expert)

    probe = np.asarray([tiny["tokenizer"](TEXT[:400])["input_ids"][:64]], dtype=np.int64)
    first = next(iter(mlps))
    y1 = expert_outputs(probe)[(first, 1)]
    with torch.no_grad():   # about half of expert 1's outputs past 65504
        mlp = mlps[first]
        h = mlp.w2.shape[0] // E
        mlp.w2[h:2 * h] *= 65504.0 / float(y1.abs().median())
    model.save_pretrained(folder)
    ins = Inspector(InspectOptions(model=str(folder), corpus=str(tiny["corpus"]), tokens=200,
                                   seq_len=32, batch_size=4, precision_every=1),
                    runs_dir=tmp_path / "runs")
    ins.step()
    ins.close("stopped")
    ys = expert_outputs(ins.batches[0].ids)
    with open_run(ins.run_dir) as r:
        mods, kinds, fmts = (r.meta["precision_modules"], r.meta["precision_kinds"],
                             r.meta["precision_formats"])
        _, absmax = r.tensor("precision/absmax", 1)
        _, frac = r.tensor("precision/fractions", 1)
    act, wk = kinds.index("act"), kinds.index("weight")
    assert 0 < _cast_shares(ys[(first, 1)], "fp16")[0] < 1
    for name, mlp in mlps.items():
        for e in range(E):
            i = mods.index(f"{name}.{e}")
            rows = torch.cat([p.view(E, -1, p.shape[-1])[e].reshape(-1)
                              for p in (mlp.w1, mlp.v1, mlp.w2)]).detach()
            assert absmax[i, wk] == pytest.approx(float(rows.abs().max()), rel=1e-6)
            y = ys.get((name, e))
            if y is None:    # not chosen by any token of the batch
                assert np.isnan(absmax[i, act])
                continue
            assert absmax[i, act] == pytest.approx(float(y.abs().max()), rel=1e-6)
            for fmt in ("fp16", "bf16", "fp8_e5m2"):
                np.testing.assert_allclose(frac[i, act, fmts.index(fmt)], _cast_shares(y, fmt),
                                           atol=1e-7, err_msg=f"{name}.{e} {fmt}")
                np.testing.assert_allclose(frac[i, wk, fmts.index(fmt)], _cast_shares(rows, fmt),
                                           atol=1e-7, err_msg=f"{name}.{e} weight {fmt}")


@pytest.mark.slow
def test_ctrl_c_stops_the_cli_after_a_batch_and_keeps_the_records(tiny, tmp_path):
    """``moe-studio inspect`` in a terminal: the first Ctrl+C (SIGINT) ends the
    inspection after the current batch, as stopped, with every recorded batch and the
    whole-corpus totals of those batches; exit code 0, the run folder on stdout."""
    import os
    import signal
    import subprocess
    import sys

    corpus = tmp_path / "long.txt"
    corpus.write_text(TEXT * 60, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "moe_studio", "inspect", str(tiny["folder"]),
                             "--corpus", str(corpus), "--tokens", "20000", "--seq-len", "16",
                             "--batch-size", "1", "--precision-every", "0",
                             "--out", str(tmp_path / "runs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        for line in proc.stderr:            # not a terminal: one progress line now and then
            lines.append(line)
            if line.startswith("step "):
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(lines) + err
    assert proc.returncode == 0, err
    assert "stopping after this batch, keeping what was recorded" in err
    run = Path(out.strip().splitlines()[-1])
    with open_run(run) as r:
        assert r.status == "stopped"
        steps = list(r.tensor_steps("moe/tokens_per_expert"))
        total = r.meta["total_steps"]
        assert steps == list(range(1, len(steps) + 1)) and 1 <= len(steps) < total
        _, tpd = r.tensor("inspect/tokens_per_domain")
        assert tpd.sum() == r.meta["tokens_routed"] <= 16 * len(steps)
    assert f"stopped: {len(steps)} batches, {int(tpd.sum()):,} tokens" in err


@pytest.mark.parametrize("accelerate", [True, False])
def test_weights_load_from_safetensors_straight_onto_the_gpu_with_accelerate(tiny, monkeypatch,
                                                                             accelerate):
    """What ``from_pretrained`` is asked for a GPU (no GPU needed: the call is caught):
    safetensors only, no download, no remote code, bf16; with accelerate the weights go
    straight to the device (device_map), without it the model moves there after loading."""
    import transformers

    from moe_studio.engine.inspection import loading
    from moe_studio.engine.inspection.families import FAMILIES

    seen: dict = {}

    class Loaded:
        def to(self, dev):
            seen["to"] = dev
            return self

        def eval(self):
            return self

    def from_pretrained(folder, **kw):
        seen.update(kw, folder=folder)
        return Loaded()

    real_find = loading.importlib_find
    monkeypatch.setattr(loading, "importlib_find",
                        lambda name: accelerate if name == "accelerate" else real_find(name))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        staticmethod(from_pretrained))
    _model, tok = loading.load_model(tiny["folder"], FAMILIES["mixtral"], dtype="bf16",
                                     device="cuda:0")
    assert tok("def f")["input_ids"] == tiny["tokenizer"]("def f")["input_ids"]
    assert seen["folder"] == tiny["folder"] and seen["dtype"] is torch.bfloat16
    assert seen["use_safetensors"] is True and seen["local_files_only"] is True
    assert seen["trust_remote_code"] is False
    if accelerate:
        assert seen["device_map"] == {"": torch.device("cuda:0")} and "to" not in seen
    else:
        assert "device_map" not in seen and seen["to"] == torch.device("cuda:0")


def test_auto_dtype_is_bf16_on_a_gpu_and_fp32_on_the_cpu():
    from moe_studio.engine.inspection.loading import resolve_dtype

    assert resolve_dtype("auto", "cuda") == ("bf16", "")
    assert resolve_dtype("auto", "mps") == ("bf16", "")
    dt, note = resolve_dtype("auto", "cpu")
    assert dt == "fp32" and "--dtype bf16 halves the memory" in note
    assert resolve_dtype("fp16", "cpu") == ("fp16", "")
    with pytest.raises(InspectError, match="dtype must be one of auto, bf16, fp16, fp32, got 'fp8'"):
        resolve_dtype("fp8", "cuda")


def test_without_the_hf_extra_the_message_says_what_to_install(tiny, tmp_path, monkeypatch):
    """transformers is an optional extra: with it missing, an inspection of a valid
    folder is refused with the pip command, before any run folder is made."""
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)   # import transformers fails
    with pytest.raises(InspectError) as e:
        Inspector(InspectOptions(model=str(tiny["folder"]), corpus=str(tiny["corpus"])),
                  runs_dir=tmp_path / "runs")
    assert str(e.value) == ("inspecting a pretrained model needs the optional Hugging Face "
                            "packages: pip install 'moe-studio[hf]'")
    assert not (tmp_path / "runs").exists()
