"""EEG branch: EDF+ round trip, bad input, preprocessing, splits, NT-Xent, augmentations, low-label subsets."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import branch_results
from repropipe.eeg import data, features
from repropipe.eeg.config import FeatureConfig, SplitConfig
from repropipe.io import DataError

FP = FeatureConfig(l_freq=7.0, h_freq=30.0, tmin=-1.0, tmax=4.0, chunk=160, overlap=80)


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    data.synthesize(root, [1, 2, 3], [4], seed=0, duration_s=40, effect=0.7)
    return root


def test_synthetic_edf_round_trips_with_physionet_layout_and_annotations(raw_root):
    path = raw_root / "S001" / "S001R04.edf"
    assert path.exists()
    _, events = data.synth_run(0, 1, 4, 40, 0.7)
    raw = data.read_run(path)
    assert raw.ch_names == list(data.PHYSIONET_CHANNELS) and raw.info["sfreq"] == 160.0
    assert raw.n_times == 40 * 160
    got = [(round(float(o), 2), round(float(d), 2), str(s)) for o, d, s in
           zip(raw.annotations.onset, raw.annotations.duration, raw.annotations.description)]
    assert got == [(round(o, 2), round(d, 2), s) for o, d, s in events]
    assert {s for *_, s in got} == {"T0", "T1", "T2"}
    assert all(abs(d - 4.1) < 1e-6 for _, d, s in events if s != "T0")


def test_edf_without_annotations_is_named(tmp_path):
    d, _ = data.synth_run(0, 1, 4, 30, 0.5)
    path = data.write_edf(tmp_path / "S001R04.edf", d, [])
    with pytest.raises(DataError, match=r"S001R04\.edf: no T1/T2 annotations"):
        data.read_run(path)


def test_wrong_sampling_rate_and_channel_count_are_named(tmp_path):
    d, ev = data.synth_run(0, 1, 4, 30, 0.5)
    p128 = data.write_edf(tmp_path / "a.edf", d[:, : 30 * 128], ev, sfreq=128.0)
    with pytest.raises(DataError, match=r"a\.edf: sampling rate 128 Hz, expected 160 Hz"):
        data.read_run(p128)
    p10 = data.write_edf(tmp_path / "b.edf", d[:10], ev, ch_names=data.PHYSIONET_CHANNELS[:10])
    with pytest.raises(DataError, match=r"b\.edf: 10 channels, expected 64"):
        data.read_run(p10)


def test_truncated_edf_is_named(tmp_path, raw_root):
    src = (raw_root / "S002" / "S002R04.edf").read_bytes()
    bad = tmp_path / "S002R04.edf"
    bad.write_bytes(src[: len(src) // 2])
    with pytest.raises(DataError, match=r"S002R04\.edf: truncated EDF"):
        data.read_run(bad)


def test_bad_recording_is_skipped_and_counted_when_params_say_so(tmp_path, raw_root):
    import shutil

    root = tmp_path / "raw"
    shutil.copytree(raw_root, root)
    bad = root / "S003" / "S003R04.edf"
    bad.write_bytes(bad.read_bytes()[:5000])
    with pytest.raises(DataError, match="S003R04.edf"):
        features.build(root, [1, 2, 3], [4], FP, SplitConfig(0, 1), 0, "error")
    x, index, _, skipped = features.build(root, [1, 2, 3], [4], FP, SplitConfig(0, 1), 0, "skip")
    assert len(skipped) == 1 and skipped[0]["file"].endswith("S003R04.edf")
    assert set(index.subject) == {1, 2}


def test_preprocessing_shapes_labels_and_normalisation(raw_root):
    x, index, ch, skipped = features.build(raw_root, [1, 2, 3], [4], FP, SplitConfig(1, 1), 0, "error")
    assert not skipped and ch[:3] == ["FC5", "FC3", "FC1"] and "Cz" in ch and len(ch) == 64
    assert x.dtype == np.float16 and x.shape[1:] == (64, 160)
    # epochs -1..4 s = 801 samples -> 9 chunks of 160 with overlap 80
    assert (index.groupby(["subject", "run", "trial"]).size() == 9).all()
    assert set(index.label) == {0, 1} and list(index.columns[:4]) == ["subject", "run", "trial", "label"]
    _, events = data.synth_run(0, 1, 4, 40, 0.7)
    expect = [0 if s == "T1" else 1 for o, _, s in events if s != "T0" and o + 4.0 <= 40 - 1 / 160]
    got = index[(index.subject == 1) & (index.chunk == 0)].label.tolist()
    assert got == expect
    # per-run channel normalisation keeps values O(1)
    assert 0.3 < float(np.abs(x.astype(np.float32)).mean()) < 2.0
    xw, iw, _, _ = features.build(raw_root, [1, 2], [4], dataclasses.replace(FP, chunk=0), SplitConfig(0, 1),
                                  0, "error")
    assert xw.shape[1:] == (64, 801) and (iw.chunk == 0).all()


def test_whole_epochs_and_chunk_starts():
    assert features.chunk_starts(801, 160, 80) == [80 * i for i in range(9)]
    assert features.chunk_starts(801, 0, 0) == [0]
    with pytest.raises(ValueError, match="overlap"):
        features.chunk_starts(801, 160, 160)


def test_planted_signal_is_lateralised(raw_root):
    """Left imagery (0) weakens the rhythm over C4 relative to C3, right imagery (1) the reverse."""
    x, index, ch, _ = features.build(raw_root, [1, 2, 3], [4], FP, SplitConfig(1, 1), 0, "error")
    post = (index.chunk >= 3).to_numpy()
    p = np.log(x.astype(np.float32).var(axis=2))
    lat = p[:, ch.index("C4")] - p[:, ch.index("C3")]
    assert lat[post & (index.label == 1).to_numpy()].mean() > lat[post & (index.label == 0).to_numpy()].mean() + 0.2


def test_split_is_by_subject_and_no_trial_crosses():
    sp = features.split_subjects(list(range(1, 11)), seed=0, n_val=2, n_test=2)
    assert sorted(sp) == list(range(1, 11))
    assert [list(sp.values()).count(k) for k in ("train", "val", "test")] == [6, 2, 2]
    assert sp == features.split_subjects(list(range(10, 0, -1)), seed=0, n_val=2, n_test=2)
    with pytest.raises(ValueError, match="training subject"):
        features.split_subjects([1, 2], seed=0, n_val=1, n_test=1)


def test_features_index_keeps_trials_within_one_split(raw_root):
    _, index, _, _ = features.build(raw_root, [1, 2, 3], [4], FP, SplitConfig(1, 1), 0, "error")
    assert (index.groupby("subject").split.nunique() == 1).all()
    assert (index.groupby(["subject", "run", "trial"]).split.nunique() == 1).all()
    assert set(index.split) == {"train", "val", "test"}


def test_nt_xent_matches_a_hand_computed_case():
    from repropipe.eeg.models import nt_xent

    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    tau = 0.5
    # anchors: a=z1[0], b=z1[1], c=z2[0], d=z2[1]; cosines a.c=1, a.b=0, a.d=0; b.d=-1, b.a=0, b.c=0; c.d=0
    e = math.exp
    la = -math.log(e(1 / tau) / (e(0) + e(1 / tau) + e(0)))
    lb = -math.log(e(-1 / tau) / (e(0) + e(0) + e(-1 / tau)))
    lc = -math.log(e(1 / tau) / (e(1 / tau) + e(0) + e(0)))
    ld = -math.log(e(-1 / tau) / (e(0) + e(-1 / tau) + e(0)))
    assert float(nt_xent(z1, z2, tau)) == pytest.approx((la + lb + lc + ld) / 4, rel=1e-6)
    # scale-invariant (cosine similarity)
    assert float(nt_xent(3 * z1, z2, tau)) == pytest.approx(float(nt_xent(z1, z2, tau)), rel=1e-6)


def test_augmentations_keep_shape_and_are_seeded():
    from repropipe.eeg.augment import AUGMENTATIONS, random_view

    x = torch.randn(4, 160)
    for aug in AUGMENTATIONS:
        y = aug(x, torch.Generator().manual_seed(0))
        assert y.shape == x.shape and torch.isfinite(y).all() and not torch.equal(y, x)
    a = random_view(x, torch.Generator().manual_seed(1))
    b = random_view(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_supervised_batch_augmentation_keeps_the_c3_c4_power_ratio():
    from repropipe.eeg.augment import augment_batch

    x = torch.randn(8, 4, 160)
    x[:, 1] *= 3.0  # "C4" three times the amplitude of "C3"
    y = augment_batch(x, torch.Generator().manual_seed(0), noise=0.0)
    assert y.shape == x.shape and not torch.equal(y, x)
    ratio = y[:, 1].pow(2).mean(1) / y[:, 0].pow(2).mean(1)
    assert torch.allclose(ratio, x[:, 1].pow(2).mean(1) / x[:, 0].pow(2).mean(1), rtol=1e-4)
    assert torch.equal(augment_batch(x, torch.Generator().manual_seed(3)), augment_batch(x, torch.Generator().manual_seed(3)))


def test_channel_recombination_appends_neighbour_differences():
    from repropipe.eeg.models import ChannelRecombination, default_channels, neighbour_pairs

    ch = default_channels()
    pairs = neighbour_pairs(ch)
    names = {(ch[i], ch[j]) for i, j in pairs}
    assert ("C3", "C5") in names or ("C1", "C3") in names or ("C3", "CP3") in names or ("C3", "FC3") in names
    x = torch.randn(2, 64, 10)
    y = ChannelRecombination(pairs)(x)
    i, j = pairs[0]
    assert y.shape == (2, 64 + len(pairs), 10) and torch.allclose(y[:, 64], x[:, i] - x[:, j])


def test_linformer_runs_at_lengths_other_than_its_base():
    from repropipe.models import build_model

    m = build_model("eeg_linformer", proj_len=8).eval()
    for t in (64, 160, 640):
        assert m(torch.randn(2, 64, t)).shape == (2, 2)


def test_eegnet_is_torcheegs_eegnet_8_2_with_its_parameter_count_at_demo_sizes():
    """64 electrodes x 160 samples (one 1-s chunk at 160 Hz), EEGNet-8,2 with kernels 64 and 16:
    temporal conv 8*64 = 512, BN 16, depthwise spatial 16*64 = 1024, BN 32, separable depthwise
    16*16 = 256 + pointwise 16*16 = 256, BN 32, linear 16 maps * 5 samples (160 -> 161 -> /4 = 40 ->
    41 -> /8 = 5) * 2 classes = 160, no bias: 2,288."""
    from torcheeg.models import EEGNet

    from repropipe.models import build_model

    model = build_model("eegnet", num_electrodes=64, chunk_size=160, F1=8, D=2, F2=16, kernel_1=64, kernel_2=16)
    assert isinstance(model.net, EEGNet)
    assert sum(p.numel() for p in model.parameters()) == 2288
    x = torch.randn(3, 64, 160)
    model.eval()
    assert torch.equal(model(x), model.net(x[:, None]))  # only the image-channel axis is added
    # the classifier grows with the window: 640 samples keep 16 * 20 features
    assert sum(p.numel() for p in build_model("eegnet", chunk_size=640).parameters()) == 2288 - 160 + 16 * 20 * 2


def test_label_subset_takes_whole_training_trials():
    from repropipe.eeg.train import label_subset

    rows = [{"subject": s, "run": 4, "trial": t, "label": t % 2, "chunk": c, "split": "test" if s == 3 else "train"}
            for s in (1, 2, 3) for t in range(10) for c in range(3)]
    index = pd.DataFrame(rows)
    m = label_subset(index, 0.2, seed=0)
    chosen = index[m]
    assert (chosen.split == "train").all() and chosen.groupby(["subject", "trial"]).size().eq(3).all()
    assert chosen.groupby(["subject", "trial"]).ngroups == 4 and set(chosen.label) == {0, 1}
    assert (m == label_subset(index, 0.2, seed=0)).all()


# ------------------------------------------------------------------------------- real-data integrity
def table_for(root):
    """A checksum table in MNE's format for synthetic files (which are not PhysioNet's bytes)."""
    from repropipe.io import sha256_file

    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.glob("S*/S*R*.edf"))}


def write_table(path, table):
    path.write_text("".join(f"{k:<30s} {v}\n" for k, v in table.items()))  # the layout of mne/data/eegbci_checksums.txt
    return path


def test_synthetic_run_matches_physionets_s001r04_as_mne_reads_it(tmp_path):
    """What MNE prints for PhysioNet's S001R04.edf (C. Brunner, "Loading EEG data in Python", which reads
    https://physionet.org/files/eegmmidb/1.0.0/S001/S001R04.edf):

        <RawEDF | S001R04.edf, 64 x 20000 (125.0 s), ~9.8 MB, data loaded>
         ch_names: Fc5., Fc3., Fc1., Fcz., Fc2., Fc4., Fc6., C5.., C3.., C1.., ...
         highpass: 0.0 Hz
         lowpass: 80.0 Hz
         meas_date: 2009-08-12 16:15:00 UTC
         sfreq: 160.0 Hz
        <Annotations | 30 segments: T0 (15), T1 (8), T2 (7)>

    PhysioNet: "T0 corresponds to rest", T1 to the left fist, T2 to the right fist (runs 4, 8, 12: imagined).
    """
    import mne

    [path] = data.synthesize(tmp_path, [1], [4], seed=0, duration_s=125, effect=0.7)
    assert path.relative_to(tmp_path).as_posix() == "S001/S001R04.edf"
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    assert repr(raw).startswith("<RawEDF | S001R04.edf, 64 x 20000 (125.0 s)")
    assert ", ".join(raw.ch_names[:10]) == "Fc5., Fc3., Fc1., Fcz., Fc2., Fc4., Fc6., C5.., C3.., C1.."
    assert raw.info["highpass"] == 0.0 and raw.info["lowpass"] == 80.0 and raw.info["sfreq"] == 160.0
    assert str(raw.info["meas_date"]) == "2009-08-12 16:15:00+00:00"
    assert repr(raw.annotations) == "<Annotations | 30 segments: T0 (15), T1 (8), T2 (7)>"
    head = path.read_bytes()[:256]
    assert head[:8] == b"0       " and head[192:197] == b"EDF+C"  # EDF+ (continuous), as PhysioNet's release


def test_mne_checksum_table_lists_every_imagery_run():
    """The production table: MNE's mne/data/eegbci_checksums.txt, every subject's runs 4/8/12."""
    table = data.checksum_table()
    assert all(f"S{s:03d}/S{s:03d}R{r:02d}.edf" in table for s in range(1, 110) for r in (4, 8, 12))
    assert table["S001/S001R04.edf"] == "3d161f88e1c00632585287d2ce584c2bc0f08862438eb255ea8723e00fac693d"


def test_a_malformed_checksum_table_is_named_with_its_line(tmp_path):
    bad = tmp_path / "sums.txt"
    bad.write_text("S001/S001R04.edf 3d161f88e1c00632585287d2ce584c2bc0f08862438eb255ea8723e00fac693d\nS001/S001R08.edf xyz\n")
    with pytest.raises(DataError, match=r"sums\.txt:2: expected '<file> <sha256 hex>'"):
        data.checksum_table(bad)


def test_a_crlf_damaged_copy_is_rejected_with_the_text_mode_hint(tmp_path, raw_root):
    """A text-mode copy turns every LF byte of the samples into CR LF: longer than the header promises,
    and not PhysioNet's bytes. Both checks say so, naming the file."""
    good = raw_root / "S001" / "S001R04.edf"
    table = table_for(raw_root)
    damaged = tmp_path / "S001" / "S001R04.edf"
    damaged.parent.mkdir()
    damaged.write_bytes(good.read_bytes().replace(b"\n", b"\r\n"))
    n_lf = good.read_bytes().count(b"\n")
    assert n_lf > 0 and damaged.stat().st_size == good.stat().st_size + n_lf
    with pytest.raises(DataError) as exc:
        data.download_real(tmp_path / "out", [1], [4], str(tmp_path), checksums=table)
    msg = str(exc.value)
    assert msg.startswith(f"{damaged}: SHA-256 ") and "these bytes are not PhysioNet's" in msg
    assert f"{n_lf} bytes longer than its EDF header promises" in msg and "text-mode (LF->CRLF) copy does this" in msg
    assert not (tmp_path / "out" / "S001" / "S001R04.edf").exists()
    # the reader's size check alone rejects it too (a file the table does not list)
    with pytest.raises(DataError, match=rf"S001R04\.edf: EDF longer than its header promises: .* {n_lf} more .*"
                                        r"text-mode \(LF->CRLF\) copy does this"):
        data.read_run(damaged)


def test_production_table_rejects_bytes_that_are_not_physionets(tmp_path, raw_root):
    """Without a substituted table the real one is used: a synthetic S001R04 is not PhysioNet's."""
    with pytest.raises(DataError, match=r"S001R04\.edf: SHA-256 [0-9a-f]{64} is not PhysioNet's 3d161f88"):
        data.download_real(tmp_path / "out", [1], [4], str(raw_root))


@pytest.mark.parametrize("layout", ["MNE-eegbci-data/files/eegmmidb/1.0.0", "eegmmidb/1.0.0", "files", ""])
def test_local_dir_accepts_mne_cache_physionet_zip_and_flat_layouts(tmp_path, raw_root, layout):
    """eeg.local_dir may be MNE's cache root (~/mne_data), its eegmmidb/1.0.0 folder, the unpacked
    PhysioNet zip (files/S001/...) or a folder holding S001/ (the last three all point at S001's parent)."""
    import shutil

    user = tmp_path / "user"
    shutil.copytree(raw_root, user / layout)
    files = data.download_real(tmp_path / "out", [1, 2], [4], str(user), checksums=table_for(raw_root))
    assert [f.relative_to(tmp_path / "out").as_posix() for f in files] == ["S001/S001R04.edf", "S002/S002R04.edf"]
    assert files[0].read_bytes() == (raw_root / "S001" / "S001R04.edf").read_bytes()


def test_local_dir_without_the_layout_says_where_it_looked(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: eeg.local_dir holds no PhysioNet layout: looked for S001/S001R04\.edf"):
        data.download_real(tmp_path / "out", [1], [4], str(tmp_path / "empty"), checksums={})


def test_real_source_from_a_local_folder_copies_the_physionet_layout(tmp_path, raw_root):
    """source: real with eeg.local_dir never touches the network; a missing run is named."""
    table = table_for(raw_root)
    files = data.download_real(tmp_path / "out", [1, 2], [4], str(raw_root), checksums=table)
    assert [f.relative_to(tmp_path / "out").as_posix() for f in files] == ["S001/S001R04.edf", "S002/S002R04.edf"]
    assert files[0].read_bytes() == (raw_root / "S001" / "S001R04.edf").read_bytes()
    with pytest.raises(DataError, match=r"S001R08\.edf: eeg.local_dir has no file for subject 1 run 8"):
        data.download_real(tmp_path / "out2", [1], [8], str(raw_root), checksums=table)


# ------------------------------------------------------------------------------ evaluation protocols
def test_within_subject_folds_are_stratified_per_subject_and_keep_trials_whole(tmp_path):
    root = tmp_path / "raw"
    data.synthesize(root, [1], [4, 8], seed=0, duration_s=60, effect=0.7)
    x, index, _, _ = features.build(root, [1], [4, 8], FP, SplitConfig(0, 1), 0, "error",
                                    evaluation="within_subject", folds=3)
    assert set(index.split) == {"cv"} and set(index.fold) == {0, 1, 2}
    assert (index.groupby(["subject", "run", "trial"]).fold.nunique() == 1).all()
    trials = index.groupby(["subject", "run", "trial"]).agg(label=("label", "first"), fold=("fold", "first"))
    for _, g in trials.groupby("fold"):
        assert set(g.label) == {0, 1}  # stratified: both classes in every fold
    sp = features.fold_split(index, 1, 3)
    assert set(sp[index.fold == 1]) == {"test"} and set(sp[index.fold == 2]) == {"val"} and set(sp[index.fold == 0]) == {"train"}
    assert set(features.fold_split(index.assign(fold=index.fold % 2), 0, 2)) == {"test", "train"}  # k=2: no val fold
    with pytest.raises(DataError, match=r"S001: eeg.evaluation within_subject with 9 folds needs at least 9 trials"):
        features.build(root, [1], [4, 8], FP, SplitConfig(0, 1), 0, "error",
                       evaluation="within_subject", folds=9)


def test_chunk_scores_use_post_cue_windows_and_report_pre_cue_apart():
    from repropipe.eeg.evaluate import evaluate_run

    rows = [{"subject": s, "run": 4, "trial": t, "label": t % 2, "chunk": c, "start_s": -1.0 + 0.5 * c,
             "end_s": 0.5 * c} for s in (1, 2) for t in range(6) for c in range(4)]
    test = pd.DataFrame(rows)
    # right after the cue, wrong before it and across it
    correct = (test.start_s >= 0).to_numpy()
    pred = np.where(correct, test.label, 1 - test.label)
    lp = torch.log(torch.tensor(np.stack([pred == 0, pred == 1], 1) * 0.98 + 0.01, dtype=torch.float32))
    r = evaluate_run(lp, test, seed=0)
    assert r["chunk"]["accuracy"] == 1.0 and r["n_chunks"] == 24  # chunks 2, 3 of 12 trials
    assert r["pre_cue"]["accuracy"] == 0.0 and r["n_pre_cue_chunks"] == 12  # chunk 0 ends at the cue, chunk 1 crosses it
    assert r["all_chunks"]["accuracy"] == 0.5
    assert r["trial"]["accuracy"] == 1.0 and r["n_trials"] == 12 and r["trial"]["ci_low"] == 1.0
    assert r["per_subject_trial_accuracy"] == {"1": 1.0, "2": 1.0}


def test_bootstrap_interval_resamples_subjects():
    from repropipe import stats

    correct = np.array([1] * 10 + [0] * 10, float)

    def ci(groups):
        rs = stats.Resampler(20, seed=0, name="eeg/trial", clusters=groups)
        return stats.interval(rs.run(lambda w: stats.accuracy(correct, w)))

    lo, hi = ci(np.array([1] * 10 + [2] * 10))
    assert lo == 0.0 and hi == 1.0  # two subjects, one perfect and one wrong: anything between
    lo1, hi1 = ci(np.ones(20))  # one subject: over trials
    assert 0.2 < lo1 < 0.5 < hi1 < 0.8


def test_csp_lda_baseline_finds_the_planted_lateralisation(raw_root):
    """CSP + LDA trained on two subjects' post-cue chunks beats chance on the third; with shuffled
    training labels it does not."""
    from repropipe.eeg.evaluate import csp_lda_log_proba

    x, index, _, _ = features.build(raw_root, [1, 2, 3], [4], FP, SplitConfig(0, 1), 0, "error")
    x = torch.from_numpy(x)
    post = (index.start_s >= 0).to_numpy()
    tr, te = post & (index.subject != 3).to_numpy(), post & (index.subject == 3).to_numpy()
    y = index.label.to_numpy()
    lp = csp_lda_log_proba(x[torch.from_numpy(np.flatnonzero(tr))], y[tr], x[torch.from_numpy(np.flatnonzero(te))])
    assert lp.shape == (te.sum(), 2) and torch.allclose(lp.exp().sum(1), torch.ones(te.sum()), atol=1e-5)
    acc = float((lp.argmax(1).numpy() == y[te]).mean())
    shuffled = np.random.default_rng(0).permutation(y[tr])
    lps = csp_lda_log_proba(x[torch.from_numpy(np.flatnonzero(tr))], shuffled, x[torch.from_numpy(np.flatnonzero(te))])
    acc_shuffled = float((lps.argmax(1).numpy() == y[te]).mean())
    assert acc >= 0.7 and acc_shuffled < acc - 0.15, (acc, acc_shuffled)


# ------------------------------------------------------------------------------- real-mode rehearsal
@pytest.mark.e2e
def test_real_mode_rehearsal_within_subject_from_an_mne_cache(tmp_path, monkeypatch):
    """source: real from a local MNE cache (no network): download -> features -> train -> evaluate,
    within_subject on one subject. The only substitute is the checksum table (synthetic EDFs are not
    PhysioNet's bytes): a file in MNE's format made from these files, read by the production parser;
    the production table is shown to refuse the same files in the test above."""
    import copy
    import json

    import yaml

    from conftest import TINY_PARAMS, copy_project
    from repropipe.stages import STAGES, load_all, run_stage

    cache = tmp_path / "mne_data"  # what eegbci.load_data(path=cache) leaves behind
    inner = cache / data.MNE_LAYOUT
    data.synthesize(inner, [1], [4, 8], seed=5, duration_s=60, effect=0.7)
    monkeypatch.setattr(data, "CHECKSUM_FILE", write_table(tmp_path / "eegbci_checksums.txt", table_for(inner)))
    params = copy.deepcopy(TINY_PARAMS)
    params["eeg"].update(source="real", subjects=[1], runs=[4, 8], local_dir=str(cache), evaluation="within_subject",
                         within_subject_folds=3)
    params["eeg"]["train"]["runs"] = ["transformer", "linformer", "simclr_low", "eegnet"]
    params["eeg"]["train"]["eegnet"]["epochs"] = 2  # its own count; the others train train.epochs = 1
    project = copy_project(tmp_path / "proj", params)
    load_all()
    monkeypatch.chdir(project)
    for step in ("download", "features", "train", "evaluate"):
        run_stage(STAGES[f"eeg_{step}"], project / "params.yaml")
    manifest = json.loads((project / "data/raw/eeg/manifest.json").read_text())
    assert manifest["source"] == "real" and [f["path"] for f in manifest["files"]] == ["S001/S001R04.edf",
                                                                                       "S001/S001R08.edf"]
    assert (project / "data/raw/eeg/S001/S001R04.edf").read_bytes() == (inner / "S001/S001R04.edf").read_bytes()
    m = branch_results(project, "eeg")
    prov = json.loads((project / "results/eeg/provenance.json").read_text())
    assert prov["data_source"] == m["data_source"] == "real (PhysioNet EEG MMI)"
    assert m["evaluation"] == "within_subject" and m["within_subject_folds"] == 3
    assert set(m["runs"]) == {"transformer", "linformer", "simclr_low", "eegnet"}
    for f in range(3):
        assert (project / f"results/eeg/models/transformer/fold{f}/model.pt").exists()
    eegnet = torch.load(project / "results/eeg/models/eegnet/fold0/model.pt", weights_only=True)
    assert eegnet["model"] == "eegnet" and eegnet["kwargs"]["num_electrodes"] == 64
    assert eegnet["kwargs"]["chunk_size"] == 160 and "epochs" not in eegnet["kwargs"]
    assert len(eegnet["history"]) == eegnet["epochs"] == 2 and m["runs"]["transformer"]["epochs"] == 1
    assert m["runs"]["eegnet"]["n_trials"] == meta_trials(project) and 0.0 <= m["eegnet/trial_accuracy"] <= 1.0
    meta = json.loads((project / "data/features/eeg/meta.json").read_text())
    csp = m["baselines"]["csp_lda"]
    assert csp["n_trials"] == meta["n_trials"]  # every trial of the one subject scored once, by a model that never saw it
    assert m["runs"]["transformer"]["n_trials"] == meta["n_trials"]
    assert set(csp["per_subject_trial_accuracy"]) == {"1"}
    for key in ("csp_lda/accuracy", "csp_lda/trial_accuracy", "csp_lda/pre_cue_accuracy",
                "csp_lda/subject_mean_trial_accuracy", "transformer/trial_accuracy_ci_low"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["csp_lda/trial_accuracy"] >= 0.75  # the planted effect, within subject
    section = json.loads((project / "results/eeg/section.json").read_text())
    text = json.dumps(section)
    assert "within-subject 3-fold" in text and "csp_lda" in text
    # intervals on every headline score, and each run tested against the baseline (issue 17)
    for run in ("transformer", "csp_lda"):
        for key in ("accuracy", "macro_f1", "trial_accuracy", "trial_macro_f1"):
            assert 0.0 <= m[f"{run}/{key}_ci_low"] <= m[f"{run}/{key}_ci_high"] <= 1.0, (run, key)
    assert 0.0 <= m["transformer/trial_accuracy_p_vs_csp_lda"] <= 1.0
    assert 0.0 <= m["transformer/trial_accuracy_mcnemar_p_vs_csp_lda"] <= 1.0
    assert "csp_lda/trial_accuracy_p_vs_csp_lda" not in m and m["reference"] == "csp_lda"
    assert "paired bootstrap over subjects" in text and "McNemar p=" in text
    assert yaml.safe_load((project / "params.yaml").read_text())["eeg"]["source"] == "real"


def meta_trials(project) -> int:
    import json

    return int(json.loads((project / "data/features/eeg/meta.json").read_text())["n_trials"])


def test_damaged_feature_and_model_files_are_named(tmp_path):
    from repropipe.eeg.evaluate import load_run
    from repropipe.eeg.train import load_features

    (tmp_path / "chunks.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match=r"chunks\.pt: not an eeg_features chunk file"):
        load_features(tmp_path)
    torch.save({"x": torch.zeros(2, 64, 160), "ch_names": ["a"]}, tmp_path / "chunks.pt")
    with pytest.raises(DataError, match=r"index\.parquet: missing"):
        load_features(tmp_path)
    (tmp_path / "index.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(DataError, match=r"index\.parquet: not a readable parquet index"):
        load_features(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match=r"model\.pt: not a readable"):
        load_run(tmp_path / "model.pt", torch.device("cpu"))


def test_a_manifest_that_is_not_utf8_or_not_a_manifest_is_named(tmp_path, monkeypatch):
    from repropipe import io
    from repropipe.io import DataError as DE

    bad = tmp_path / "manifest.json"
    bad.write_bytes(b'{"source": "real\xff"}')
    with pytest.raises(DE, match=r"manifest\.json:1: not UTF-8 text"):
        io.read_json(bad, "missing")
    with pytest.raises(ValueError, match="not a PhysioNet run name"):
        data.subject_run("S001/notes.edf")
    bad.write_text('{"source": "real", "files": [{"path": "S001/notes.edf"}]}')
    with pytest.raises(DE, match=r"manifest\.json: not an eeg_download manifest \(ValueError"):
        data.read_manifest(tmp_path)
    assert data.subject_run("S012/S012R08.edf") == (12, 8)


def test_stage_configs_mirror_the_schema_and_the_keys_their_stages_declare():
    """DownloadConfig / FeaturesStageConfig gather eeg keys no registered section covers: they must hold
    exactly what their stage declares, typed as the schema says, and parse the shipped params."""
    import yaml

    from conftest import ROOT
    from repropipe import config
    from repropipe.eeg.config import DownloadConfig, FeaturesStageConfig
    from repropipe.params import load_params
    from repropipe.stages import STAGES, load_all

    load_all()
    node = yaml.safe_load((ROOT / "workflow/schemas/params.schema.yaml").read_text())["properties"]["eeg"]
    shipped = load_params(ROOT / "params.yaml")
    for cls, name in ((DownloadConfig, "eeg_download"), (FeaturesStageConfig, "eeg_features")):
        keys = [f.name for f in dataclasses.fields(cls)]
        assert sorted(f"eeg.{k}" for k in keys) == sorted(k for k in STAGES[name].params if k.startswith("eeg."))
        part = {"type": "object", "required": [k for k in node["required"] if k in keys],
                "properties": {k: node["properties"][k] for k in keys}}
        assert config.schema_mismatches(cls, part, "eeg") == []
        cfg = cls.of({"eeg": {k: shipped["eeg"][k] for k in keys}})
        assert [getattr(cfg, k) for k in keys if not dataclasses.is_dataclass(getattr(cfg, k))] == \
            [shipped["eeg"][k] for k in keys if not isinstance(shipped["eeg"][k], dict)]
    with pytest.raises(config.ConfigError, match="eeg: key 'split' is missing"):
        FeaturesStageConfig.of({"eeg": {k: shipped["eeg"][k] for k in ("on_bad", "evaluation", "within_subject_folds",
                                                                        "features")}})


def test_schema_checks_the_protocol_and_allows_one_subject_only_within_subject(tmp_path):
    import copy

    import yaml

    from conftest import ROOT, TINY_PARAMS
    from repropipe.params import ParamsError, load_params

    (tmp_path / "workflow" / "schemas").mkdir(parents=True)
    (tmp_path / "workflow/schemas/params.schema.yaml").write_text(
        (ROOT / "workflow/schemas/params.schema.yaml").read_text())

    def check(**eeg):
        p = copy.deepcopy(TINY_PARAMS)
        p["eeg"].update(eeg)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        return load_params(tmp_path / "params.yaml")

    assert check(subjects=[7], evaluation="within_subject")["eeg"]["subjects"] == [7]
    with pytest.raises(ParamsError, match=r"eeg\.subjects"):
        check(subjects=[7], evaluation="cross_subject")
    with pytest.raises(ParamsError, match=r"eeg\.evaluation'.*'leave_one_out' is not one of"):
        check(evaluation="leave_one_out")
    with pytest.raises(ParamsError, match=r"eeg\.within_subject_folds"):
        check(within_subject_folds=1)


def _fake_run(acc: float) -> dict:
    def level(a: float) -> dict:
        return {"accuracy": a, "ci_low": a - 0.0625, "ci_high": a + 0.0625, "macro_f1": a,
                "macro_f1_ci_low": a - 0.1, "macro_f1_ci_high": a + 0.1}

    return {"n_train_chunks": 100, "chunk": level(acc - 0.125), "trial": level(acc),
            "pre_cue": {"accuracy": 0.5}, "per_subject_accuracy": {"4": acc}, "per_subject_trial_accuracy": {"4": acc},
            "subject_mean_trial_accuracy": acc, "best_epoch": 1, "best_val_f1": acc}


@pytest.mark.parametrize("within", [False, True])
def test_section_has_the_anchor_table_measured_beside_published(within):
    """From small fake results: eegnet's trial and chunk accuracy beside the published EEGNet accuracy, or
    'not run' when the run list has no eegnet."""
    from repropipe.eeg.evaluate import ANCHOR_ACCURACY
    from repropipe.eeg.section import _section
    from repropipe.report.section import ANCHOR_TITLE

    results = {"transformer": _fake_run(0.5625), "csp_lda": _fake_run(0.625)}
    if not within:
        results["eegnet"] = _fake_run(0.75)
    sec = _section(results, {}, {"subjects_by_split": {"test": [4]}, "n_skipped": 0}, "synthetic", True, [],
                   protocol="within_subject" if within else "cross_subject", folds=2)
    assert "82.43" in sec.tables[0].anchor  # the existing tables stay first
    t = sec.tables[-1]
    assert t.title.startswith(ANCHOR_TITLE) and "not comparable" in t.title
    assert ("within-subject" in t.title and "anchor is cross-subject" in t.title) is within
    trial, chunk = t.rows
    assert trial[1] == "trial accuracy" and chunk[1] == "chunk accuracy (post-cue)"
    assert trial[3] == chunk[3] == f"published: {ANCHOR_ACCURACY:g}" and "cross-subject" in trial[4]
    if within:
        assert trial[2] == chunk[2] == "not run"
    else:
        assert trial[2] == "0.7500 [0.6875, 0.8125]" and chunk[2] == "0.6250 [0.5625, 0.6875]"
