"""AASIST / AASIST-L: parameter counts, the authors' published weights, the waveform features, the stages.

What "equals the authors' logits[:, 1]" is checked against: ``AUTHORS_LOGITS`` below were printed by
``scripts/aasist_reference.py`` running the authors' ``Model`` class (clovaai/aasist
``models/AASIST.py``; the authors' code is not installed here, so it ran from a line-by-line copy of
that file kept outside the repository) with the published AASIST.pth / AASIST-L.pth, in eval mode on
CPU, on the closed-form waveforms of ``reference_waveforms()`` (three 1.5 s clips on the 16-bit grid).
The test loads the same weights with ``load_pretrained_aasist`` and compares both logits of every
clip, within 1e-4. The weights live outside the repository (``../shared/anchors/aasist``, or
``$REPROPIPE_AASIST_WEIGHTS``); where they are absent those two tests skip, saying so.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY_PARAMS, branch_results, copy_project
from repropipe.asvspoof.aasist import (AASIST, CONFIGS, PARAMETER_COUNTS, load_pretrained_aasist, map_authors_key,
                                       parameter_count, sinc_filterbank)
from repropipe.io import DataError, atomic_torch_save
from repropipe.models import build_model

_spec = importlib.util.spec_from_file_location("aasist_reference", ROOT / "scripts/aasist_reference.py")
_ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ref)
reference_waveforms = _ref.reference_waveforms

# scripts/aasist_reference.py with the authors' model class (see the module docstring): (spoof, bona fide) per clip
AUTHORS_LOGITS = {
    "aasist": [[10.417258262634277, -11.773259162902832], [8.061665534973145, -8.597297668457031],
               [6.70287561416626, -7.752902507781982]],
    "aasist_l": [[10.81845760345459, -9.303579330444336], [9.081133842468262, -7.868852615356445],
                 [7.212711811065674, -6.22194766998291]],
}
FILES = {"aasist": "AASIST.pth", "aasist_l": "AASIST-L.pth"}


def _weights_dir() -> Path | None:
    for d in (os.environ.get("REPROPIPE_AASIST_WEIGHTS"), ROOT.parent / "shared/anchors/aasist",
              ROOT.parent.parent / "shared/anchors/aasist"):
        if d and (Path(d) / "AASIST.pth").is_file():
            return Path(d)
    return None


WEIGHTS = _weights_dir()
needs_weights = pytest.mark.skipif(WEIGHTS is None, reason="the authors' AASIST.pth / AASIST-L.pth are not here "
                                   "(../shared/anchors/aasist or $REPROPIPE_AASIST_WEIGHTS)")


def authors_state_dict(model: AASIST) -> dict[str, torch.Tensor]:
    """This model's weights under the authors' key names (the inverse of map_authors_key)."""
    ours = model.state_dict()
    inverse = {}  # encoder blocks gain the authors' one-block Sequential (".0"); renamed top-level modules map back
    for k in ours:
        if k.startswith("encoder."):
            _, block, rest = k.split(".", 2)
            inverse[k] = f"encoder.{block}.0.{rest}"
    top = {"gat_spectral": "GAT_layer_S", "gat_temporal": "GAT_layer_T", "hsgal.0.0": "HtrgGAT_layer_ST11",
           "hsgal.0.1": "HtrgGAT_layer_ST12", "hsgal.1.0": "HtrgGAT_layer_ST21", "hsgal.1.1": "HtrgGAT_layer_ST22",
           "pool_spectral": "pool_S", "pool_temporal": "pool_T", "pool_hetero.0.0": "pool_hS1",
           "pool_hetero.0.1": "pool_hT1", "pool_hetero.1.0": "pool_hS2", "pool_hetero.1.1": "pool_hT2"}
    for k in ours:
        for mine, theirs in top.items():
            if k.startswith(mine + "."):
                inverse[k] = theirs + k[len(mine):]
    out = {inverse.get(k, k): v.clone() for k, v in ours.items()}
    assert all(map_authors_key(a) == m for m, a in inverse.items())
    return out


@pytest.mark.parametrize("name", ["aasist", "aasist_l"])
def test_registered_models_have_the_authors_parameter_counts(name):
    assert parameter_count(build_model(name)) == PARAMETER_COUNTS[name] == {"aasist": 297_866, "aasist_l": 85_306}[name]


@needs_weights
@pytest.mark.parametrize("name", ["aasist", "aasist_l"])
def test_published_weights_load_strictly_and_score_as_the_authors_model(name):
    torch.set_num_threads(1)
    model = load_pretrained_aasist(WEIGHTS / FILES[name])
    assert parameter_count(model) == PARAMETER_COUNTS[name] and not model.training
    x = torch.from_numpy(reference_waveforms())
    with torch.no_grad():
        logits = model.logits(x)
        score = model(x)
    expected = torch.tensor(AUTHORS_LOGITS[name])
    assert torch.allclose(logits, expected, atol=1e-4, rtol=0), (logits - expected).abs().max()
    assert torch.allclose(score, expected[:, 1], atol=1e-4, rtol=0)  # the bona fide score is logits[:, 1]
    # the variant is read from the shapes: AASIST-L's weights are not AASIST's
    other = "aasist" if name == "aasist_l" else "aasist_l"
    with pytest.raises(DataError, match=f"does not load strictly into {other}"):
        load_pretrained_aasist(WEIGHTS / FILES[name], variant=other)


def test_authors_format_round_trip_and_strictness(tmp_path):
    torch.manual_seed(3)
    model = AASIST(CONFIGS["aasist_l"]).eval()
    state = authors_state_dict(model)
    assert "encoder.2.0.conv_downsample.weight" in state and "HtrgGAT_layer_ST21.att_weightM" in state
    atomic_torch_save(tmp_path / "w.pth", state)
    loaded = load_pretrained_aasist(tmp_path / "w.pth")
    x = torch.from_numpy(reference_waveforms(8000))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for broken, why in (({k: v for k, v in state.items() if k != "pool_hT2.proj.bias"}, "missing pool_hT2.proj.bias"),
                        ({**state, "pos_S": torch.zeros(1, 23, 5)}, r"wrong shape pos_S \(1, 23, 5\)"),
                        ({**state, "out_layer.extra": torch.zeros(1)}, "unexpected out_layer.extra"),
                        ({**state, "extra.weight": torch.zeros(1)}, "unexpected extra.weight")):
        atomic_torch_save(tmp_path / "bad.pth", broken)
        with pytest.raises(DataError, match=f"bad.pth.*{why}"):
            load_pretrained_aasist(tmp_path / "bad.pth", variant="aasist_l")
    atomic_torch_save(tmp_path / "odd.pth", {"pos_S": torch.zeros(1, 23, 7), "master1": torch.zeros(1, 1, 7)})
    with pytest.raises(DataError, match="odd.pth"):
        load_pretrained_aasist(tmp_path / "odd.pth")


def test_residual_pre_activation_is_inert_as_in_the_authors_block():
    """The authors' block overwrites its BatchNorm+SELU pre-activation; the published weights rely on that."""
    torch.manual_seed(0)
    model = AASIST(CONFIGS["aasist_l"]).eval()
    x = torch.from_numpy(reference_waveforms(8000))
    with torch.no_grad():
        before = model(x)
        for block in model.encoder[1:]:
            block.bn1.weight.mul_(-3.0)
            block.bn1.running_mean.add_(5.0)
        assert torch.equal(model(x), before)
        model.encoder[1].bn2.weight.mul_(-3.0)  # while the block's second BatchNorm does matter
        assert not torch.allclose(model(x), before)


def test_sinc_filters_pass_their_mel_band_and_stop_the_rest():
    """Each filter's magnitude response, from an FFT: peaked on its own mel band, Hamming-low far from it."""
    bank = sinc_filterbank(70, 128).double()
    assert bank.shape == (70, 129) and torch.equal(bank, bank.flip(-1))  # odd length, linear phase
    freqs = np.fft.rfftfreq(16384, 1 / 16000)
    response = np.abs(np.fft.rfft(bank.numpy(), n=16384))
    mel = 2595 * np.log10(1 + np.array([0.0, 8000.0]) / 700)
    edges = 700 * (10 ** (np.linspace(mel[0], mel[1], 71) / 2595) - 1)  # 0 Hz to Nyquist, equal mel steps
    assert 20 < edges[1] < 30 and edges[-1] == pytest.approx(8000)
    halfwidth = 2 * 16000 / 129  # the Hamming main lobe: ~250 Hz either side
    for i in range(70):
        lo, hi = edges[i], edges[i + 1]
        peak = freqs[np.argmax(response[i])]
        assert lo - halfwidth < peak < hi + halfwidth, (i, peak, lo, hi)
        far = (freqs < lo - 2.5 * halfwidth) | (freqs > hi + 2.5 * halfwidth)
        assert response[i][far].max() < 0.02 * response[i].max() + 1e-4, i
    top = freqs > 7900  # the widest band (7.69-8 kHz) passes with unit gain once past the window's transition
    assert np.all(np.abs(response[69][top] - 1) < 0.05)


def test_cosine_schedule_is_the_authors_and_step_is_niis():
    from repropipe.asvspoof.config import TrainConfig
    from repropipe.asvspoof.train import make_scheduler

    base = TrainConfig.of(TINY_PARAMS)
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    cfg = dataclasses.replace(base, lr=1e-4, epochs=4, lr_schedule="cosine", lr_min=5e-6)
    sched, every = make_scheduler(opt, cfg, steps_per_epoch=5)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lrs.append(opt.param_groups[0]["lr"])
    # clovaai/aasist utils.cosine_annealing(step, total, 1, lr_min / base_lr) * base_lr
    expected = [1e-4 * (0.05 + 0.95 * 0.5 * (1 + np.cos(s / 20 * np.pi))) for s in range(21)]
    assert every == "step" and np.allclose(lrs, expected, rtol=1e-9) and lrs[-1] == pytest.approx(5e-6)
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    sched, every = make_scheduler(opt, dataclasses.replace(base, lr=3e-4, epochs=30, lr_schedule="step"), 5)
    for _ in range(20):
        opt.step()
        sched.step()
    assert every == "epoch" and opt.param_groups[0]["lr"] == pytest.approx(3e-4 * 0.25)  # halved every 10 epochs


def test_wave_features_are_the_pcm_samples_byte_for_byte(tmp_path):
    from repropipe.asvspoof import data
    from repropipe.asvspoof.features import FeatureConfig, extract_split, fix_length, load_features
    from repropipe.asvspoof.config import SplitCounts, SyntheticConfig
    from repropipe.asvspoof.synth import write_synthetic

    raw = tmp_path / "raw"
    write_synthetic(raw, SyntheticConfig(utterances=SplitCounts(4, 4, 6), speakers=SplitCounts(1, 1, 2),
                                         bonafide_fraction=0.3, seconds=(0.3, 0.6)), seed=1, progress=False)
    src = data.open_source(raw)
    df = data.read_protocol(src, "eval")
    cfg = FeatureConfig(seconds=0.5)
    a = extract_split(src, df, "eval", tmp_path / "a", cfg, ("lfcc", "wave"), shard_size=4, batch_size=3, progress=False)
    extract_split(src, df, "eval", tmp_path / "b", cfg, ("wave",), shard_size=4, batch_size=5, progress=False)
    for shard in ("eval-000.pt", "eval-001.pt"):  # the same bytes whatever the batching or the other kinds
        assert (tmp_path / "a/wave" / shard).read_bytes() == (tmp_path / "b/wave" / shard).read_bytes()
    a.to_parquet(tmp_path / "a/index.parquet")
    x, index = load_features(tmp_path / "a", "eval", "wave")
    assert x.dtype == torch.int16 and x.shape == (len(df), 8000)
    for i in range(len(df)):
        pcm, sr = data.read_audio(src, df.path[i])
        crop = fix_length(pcm, 8000)  # first 0.5 s, repeated when the clip is shorter (0.3 s ones are)
        assert np.array_equal(x[i].numpy().astype(np.float32) / 32768, crop)  # soundfile's float is int16 / 32768
    assert load_features(tmp_path / "a", "eval", "lfcc")[0].shape == (len(df), 60, 51)


@pytest.mark.e2e
def test_aasist_l_trains_and_published_weights_score_in_the_stages(tmp_path, monkeypatch):
    """features (lfcc + wave) -> train aasist_l (cosine schedule) -> evaluate, with published weights scored untrained."""
    from repropipe.asvspoof.features import load_features
    from repropipe.asvspoof.evaluate import PRETRAINED_SUFFIX
    from repropipe.stages import STAGES, load_all, run_stage

    torch.set_num_threads(1)
    if WEIGHTS is not None:
        weights = WEIGHTS / "AASIST-L.pth"
    else:  # the same file format, from a seeded model: the stage path is exercised all the same
        torch.manual_seed(0)
        weights = tmp_path / "AASIST-L.pth"
        atomic_torch_save(weights, authors_state_dict(AASIST(CONFIGS["aasist_l"])))
    params = copy.deepcopy(TINY_PARAMS)
    a = params["asvspoof"]
    a["features"]["kinds"] = ["lfcc", "wave"]
    a["train"].update(models=["aasist_l"], seeds=[0], epochs=1, shuffled_label_control=False,
                      per_model={"aasist_l": {"lr": 0.0001, "batch_size": 8, "weight_decay": 0.0001,
                                              "lr_schedule": "cosine", "lr_min": 0.000005}})
    a["evaluate"] = {"pretrained": {"aasist": None, "aasist_l": str(weights)}}
    project = copy_project(tmp_path / "proj", params)
    load_all()
    monkeypatch.chdir(project)
    for step in ("download", "features", "train", "evaluate"):
        run_stage(STAGES[f"asvspoof_{step}"], project / "params.yaml")

    summary = json.loads((project / "results/asvspoof/models/aasist_l/seed0/summary.json").read_text())
    assert summary["params"] == 85_306 and summary["feature"] == "wave" and summary["lr_schedule"] == "cosine"
    assert summary["batch_size"] == 8 and np.isfinite(summary["history"][0]["loss"])
    metrics = branch_results(project, "asvspoof")
    published = "aasist_l" + PRETRAINED_SUFFIX
    assert set(metrics["models"]) == {"aasist_l", published}
    run = next(r for r in metrics["runs"] if r["model"] == published)
    assert run["seed"] == "published" and run["selected_epoch"] is None and run["weights"]["path"] == str(weights)
    # the eval score file holds the published model's bona fide score of each stored crop
    lines = (project / f"results/asvspoof/scores/{published}.eval.txt").read_text().splitlines()
    assert len(lines) == a["synthetic"]["utterances"]["eval"]
    x, index = load_features(project / "data/features/asvspoof", "eval", "wave")
    with torch.no_grad():
        expected = load_pretrained_aasist(weights)(x[:4].float() / 32768).double().numpy()
    got = np.array([float(line.split()[3]) for line in lines[:4]])
    assert [line.split()[0] for line in lines] == list(index.utt_id)
    assert np.allclose(got, expected, atol=2e-6)
    section = json.loads((project / "results/asvspoof/section.json").read_text())
    assert "authors' published weights, not trained here" in json.dumps(section)
