"""gan_evaluate's numbers: sampling (plain, I-SIR with the raw and the calibrated critic), FID/KID against the
cached real statistics with intervals and tests, and the metrics.json they make. No plotting, no tables:
gan/figures.py and gan/section.py draw and describe the :class:`Results` that :func:`evaluate` returns."""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from repropipe.gan import fidelity
from repropipe.gan.config import EvaluateConfig, IsirConfig, ModelConfig
from repropipe.gan.isir import Calibration, TemperatureChoice, calibrate, isir_sample, select_temperature
from repropipe.gan.train import to_float, to_uint8

log = logging.getLogger("repropipe.gan")

CURVES = ("loss_D", "loss_G", "loss_GP", "wasserstein")
REFERENCE = "trained"  # plain N(0, I) sampling of the trained generator: I-SIR and the untrained G are tested against it
Z95 = 1.959963984540054


@torch.no_grad()
def generate(G: torch.nn.Module, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """uint8 images [n, 3, 64, 64] for latents ``z`` [n, n_z], in batches."""
    G.eval()
    return torch.cat([to_uint8(G(chunk)).cpu() for chunk in z.split(batch_size)])


def plain_latents(n: int, nz: int, seed: int, device: torch.device) -> torch.Tensor:
    return torch.randn(n, nz, generator=torch.Generator().manual_seed(seed)).to(device)


@torch.no_grad()
def image_scores(D: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Critic scores D(x) [n] of uint8 images [n, 3, 64, 64]."""
    D.eval()
    return torch.cat([D(to_float(chunk.to(device))).reshape(-1).cpu() for chunk in images.split(batch_size)])


@torch.no_grad()
def generated_pool(G: torch.nn.Module, D: torch.nn.Module, z: torch.Tensor,
                   batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Critic scores D(G(z)) [n] on G's float output (as i-SIR scores its proposals) and the uint8 images [n, 3, 64,
    64] of the same forward pass (what the FID extractor sees)."""
    G.eval(), D.eval()
    scores, images = [], []
    for chunk in z.split(batch_size):
        x = G(chunk)
        scores.append(D(x).reshape(-1).cpu())
        images.append(to_uint8(x).cpu())
    return torch.cat(scores), torch.cat(images)


def calibrate_critic(G: torch.nn.Module, D: torch.nn.Module, real: torch.Tensor, *, nz: int, seed: int,
                     device: torch.device, num_generated: int = 0,
                     batch_size: int = 512) -> tuple[Calibration, torch.Tensor, torch.Tensor]:
    """a, b of log r = a D + b from held-out real images and ``num_generated`` generated ones (0: as many as real).

    The generated side is drawn from i-SIR's own proposal, z ~ N(0, I), with latents of their own
    (seed + 11) apart from the plain sample and the i-SIR chains. Returns the calibration and the
    generated pool's scores and images (reused to choose the temperature).
    """
    z = plain_latents(num_generated or len(real), nz, seed + 11, device)
    scores, images = generated_pool(G, D, z, batch_size)
    return calibrate(image_scores(D, real, device), scores), scores, images


def choose_temperature(cal: Calibration, pool_scores: torch.Tensor, pool_images: torch.Tensor, held_out: torch.Tensor,
                       temperatures: tuple[float, ...] | list[float], cache_dir: str | os.PathLike[str],
                       cuda: bool) -> TemperatureChoice:
    """The temperature t of the weight exp(t (a D + b)) whose reweighted generated pool has the lowest FID
    against the held-out real images.

    The held-out images are the calibration split, never the configured FID reference, so the choice
    does not look at the numbers it is reported by. FID of the reweighted pool is computed with the pool's
    weights scaled to sum to its size (:class:`repropipe.gan.fidelity.FIDBootstrap`'s weighted mean and
    covariance): the FID of the distribution p(z) r(G(z))^t that I-SIR targets, as far as the pool resolves it.
    """
    fake, _ = fidelity.features(pool_images, cache_dir, cuda)
    real, _ = fidelity.features(held_out, cache_dir, cuda)
    fid = fidelity.FIDBootstrap(fake, real)
    return select_temperature(cal.a * pool_scores, list(temperatures),
                              lambda w: torch.as_tensor(fid(w.numpy() * w.shape[1])))


def evaluate_generator(G: torch.nn.Module, D: torch.nn.Module, *, nz: int, num_samples: int, isir: IsirConfig,
                       cache_dir: str | os.PathLike[str], kid_subset_size: int, seed: int, device: torch.device,
                       calibration: Calibration | None = None, temperature: float = 1.0) -> dict[str, Any]:
    """FID/KID of plain N(0, I) sampling and of I-SIR sampling, same generator and sample count.

    I-SIR runs with the raw critic (weights exp(D)) and, given ``calibration``, again with the
    calibrated one at ``temperature`` (exp(t (a D + b))); both chains draw the same proposals (one seed).
    """
    cuda = device.type == "cuda"
    D.eval()
    plain = generate(G, plain_latents(num_samples, nz, seed, device))
    out: dict[str, Any] = {"plain": fidelity.fid_kid(plain, cache_dir, kid_subset_size, cuda), "images": {"plain": plain[:64]},
                           # feature vectors for the FID bootstrap (fake, real)
                           "features": {"plain": fidelity.features(plain, cache_dir, cuda)}}
    variants: dict[str, Calibration | None] = {}
    if isir.iterations > 0:  # 0: plain sampling only (the untrained baseline)
        variants["isir_uncalibrated"] = None
        if calibration is not None:
            variants["isir"] = calibration
    for key, cal in variants.items():
        z, trace = isir_sample(isir.iterations, num_samples, isir.particles, nz, D, G,
                               batch_size=isir.batch_size, generator=torch.Generator().manual_seed(seed + 7),
                               device=device, calibration=cal, temperature=temperature if cal is not None else 1.0)
        sampled = generate(G, z)
        out[key] = fidelity.fid_kid(sampled, cache_dir, kid_subset_size, cuda)
        out[f"{key}_changed_fraction"] = trace.changed
        out[f"{key}_ess"] = trace.ess
        out["images"][key] = sampled[:64]
        out["features"][key] = fidelity.features(sampled, cache_dir, cuda)
    return out


def read_dvclive_curves(run_dir: str | os.PathLike[str], names: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """Per-step curves dvclive wrote during training (``live/plots/metrics/train/step/<name>.tsv``)."""
    out: dict[str, list[tuple[int, float]]] = {}
    base = Path(run_dir) / "live" / "plots" / "metrics" / "train" / "step"
    for name in names:
        path = base / f"{name}.tsv"
        if not path.exists():
            continue
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        out[name] = [(int(r["step"]), float(r[name])) for r in rows]
    return out


N_BOOT_FID = 200  # each replicate is one weighted covariance and one symmetric eigensolve of the feature dimension


def fid_uncertainty(systems: dict[str, tuple[float, Any, Any]], reference: str, seed: int) -> dict[str, Any]:
    """95 % intervals of FID for each system and tests against ``reference``.

    ``systems``: name -> (torch-fidelity's FID, fake features, real features). Generated samples are
    resampled (``N_BOOT_FID`` replicates; the real statistics stay fixed); FID's bootstrap distribution
    sits above the estimate (repeated samples shrink the covariance), so the interval is the basic
    bootstrap interval. Different systems draw different samples, so the difference is tested with
    independent replicates (:func:`repropipe.stats.independent_test`)."""
    from repropipe import stats

    boots, out = {}, {}
    for name, (fid, fake, real) in systems.items():
        boots[name] = stats.Resampler(len(fake), seed=seed, name=f"gan/fid/{name}", n_boot=N_BOOT_FID).run(
            fidelity.FIDBootstrap(fake, real))
        lo, hi = stats.basic_interval(fid, boots[name])
        out[name] = {"value": fid, "ci_low": lo, "ci_high": hi, "n_boot": N_BOOT_FID,
                     "ci": "basic bootstrap over generated samples, real statistics fixed"}
    for name in systems:
        if name != reference and reference in systems:
            diff = systems[name][0] - systems[reference][0]
            out[name]["vs_reference"] = {**stats.independent_test(diff, boots[name] - boots[reference]),
                                         "test": "independent bootstrap over generated samples (basic interval)"}
    return out


@dataclass(frozen=True)
class Results:
    """Everything gan_evaluate measured, for metrics.json, the figures and the report section."""

    trained: dict[str, Any]  # evaluate_generator of the trained G (plain, I-SIR raw and calibrated)
    untrained: dict[str, Any]  # evaluate_generator of the untrained G (plain only)
    calibration: Calibration
    temperature: TemperatureChoice  # t of exp(t (a D + b)), chosen on the held-out split
    fid: dict[str, Any]  # fid_uncertainty: interval per system, test against REFERENCE
    curves: dict[str, list[tuple[int, float]]]  # dvclive's per-step training curves
    meta: dict[str, Any]  # the real statistics' meta.json
    model: ModelConfig
    cfg: EvaluateConfig

    @property
    def source(self) -> str:
        return self.meta.get("data_source", "unknown")

    @property
    def comparable(self) -> bool:
        return bool(self.meta["comparable_to_published"])

    @property
    def extractor(self) -> str:
        return self.meta["feature_extractor"]

    @property
    def caveat(self) -> str:
        """Why the numbers are not published FID/KID ('' when they are)."""
        return ("" if self.comparable else
                f"Features from the fallback extractor '{self.extractor}' (fixed random conv net; no Inception weights "
                "offline): numbers rank generators but are NOT comparable to published FID/KID.")

    @property
    def steps(self) -> int:
        return max((s for c in self.curves.values() for s, _ in c), default=0)

    @property
    def kid(self) -> dict[str, dict[str, Any]]:
        """FID/KID of each system by name (the names of metrics.json)."""
        t = self.trained
        return {"untrained": self.untrained["plain"], "trained": t["plain"], "trained_isir": t["isir"],
                "trained_isir_uncalibrated": t["isir_uncalibrated"]}

    def kid_interval(self, name: str) -> tuple[float, float]:
        """KID: the normal interval of torch-fidelity's subset estimates (mean +- 1.96 subset std)."""
        k = self.kid[name]
        return k["kid_mean"] - Z95 * k["kid_std"], k["kid_mean"] + Z95 * k["kid_std"]


def evaluate(run_dir: Path, real_stats: str | os.PathLike[str], features: str | os.PathLike[str], model: ModelConfig,
             cfg: EvaluateConfig, seed: int, device: torch.device) -> Results:
    """Calibrate the critic on held-out images, then score the trained generator (plain and I-SIR) and an
    untrained one of the same architecture against the cached real statistics."""
    from repropipe.gan import features as feats
    from repropipe.gan.train import build_models, load_trained
    from repropipe.training import seed_everything

    meta = fidelity.read_meta(real_stats)
    ckpt = run_dir / "checkpoints" / "last.pt"
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: no trained checkpoint; run gan_train first")
    common = dict(nz=model.nz, num_samples=cfg.num_samples, isir=cfg.isir, cache_dir=real_stats,
                  kid_subset_size=cfg.kid_subset_size, seed=seed, device=device)

    G, D = load_trained(ckpt, model, device)
    cp = cfg.calibration
    held_out = feats.load_split(features, cp.split, cp.num_images)  # never seen by G or D in training
    cal, pool_scores, pool_images = calibrate_critic(G, D, held_out, nz=model.nz, seed=seed, device=device,
                                                     num_generated=cp.num_generated, batch_size=cfg.isir.batch_size)
    choice = choose_temperature(cal, pool_scores, pool_images, held_out, cp.temperatures, real_stats,
                                device.type == "cuda")
    log.info("stage=gan_evaluate event=calibrated a=%.6g b=%.6g auc=%.4f n_real=%d n_fake=%d split=%s temperature=%g "
             "heldout_fid=%s", cal.a, cal.b, cal.auc, cal.n_real, cal.n_fake, cp.split, choice.temperature,
             ",".join(f"{v:.4g}" for v in choice.criterion))
    trained = evaluate_generator(G, D, **common, calibration=cal, temperature=choice.temperature)
    seed_everything(seed)
    G0, _ = build_models(model)  # same architecture, never trained, scored by the same extractor
    untrained = evaluate_generator(G0.to(device), D, **{**common, "isir": dataclasses.replace(cfg.isir, iterations=0)})

    systems = {"untrained": (untrained["plain"]["fid"], *untrained["features"]["plain"]),
               "trained": (trained["plain"]["fid"], *trained["features"]["plain"])}
    for key in ("isir", "isir_uncalibrated"):
        if trained["features"].get(key) is not None:
            systems[f"trained_{key}"] = (trained[key]["fid"], *trained["features"][key])
    res = Results(trained=trained, untrained=untrained, calibration=cal, temperature=choice, fid=fid_uncertainty(systems, REFERENCE, seed),
                  curves=read_dvclive_curves(run_dir, CURVES), meta=meta, model=model, cfg=cfg)
    log.info("stage=gan_evaluate fid_trained=%.4g fid_isir=%.4g fid_isir_uncalibrated=%.4g fid_untrained=%.4g "
             "extractor=%s", res.kid["trained"]["fid"], res.kid["trained_isir"]["fid"],
             res.kid["trained_isir_uncalibrated"]["fid"], res.kid["untrained"]["fid"], res.extractor)
    return res


#: I-SIR's per-iteration measurements: mean effective sample size of the candidates' weights, fraction of chains moved
ISIR_TRACES = ("isir_ess", "isir_uncalibrated_ess", "isir_changed_fraction", "isir_uncalibrated_changed_fraction")


def metrics(res: Results) -> dict[str, Any]:
    """FID/KID of every system with intervals and tests, the calibration and I-SIR's moves (metrics.json; the
    labels and the nested intervals go to details.json, where ``write_metrics`` puts every non-number)."""
    plain, isir, raw = res.trained["plain"], res.trained["isir"], res.trained["isir_uncalibrated"]
    untrained, cal = res.untrained["plain"], res.calibration
    unc_keys: dict[str, float] = {}
    for name, u in res.fid.items():
        unc_keys[f"fid_ci_low/{name}"], unc_keys[f"fid_ci_high/{name}"] = u["ci_low"], u["ci_high"]
        unc_keys[f"kid_ci_low/{name}"], unc_keys[f"kid_ci_high/{name}"] = res.kid_interval(name)
        if "vs_reference" in u:
            unc_keys[f"fid_diff_vs_ref/{name}"] = u["vs_reference"]["diff"]
            unc_keys[f"fid_p_vs_ref/{name}"] = u["vs_reference"]["p_value"]
    return {
        "fid/trained": plain["fid"], "kid/trained": plain["kid_mean"], "kid_std/trained": plain["kid_std"],
        "fid/trained_isir": isir["fid"], "kid/trained_isir": isir["kid_mean"], "kid_std/trained_isir": isir["kid_std"],
        "fid/trained_isir_uncalibrated": raw["fid"], "kid/trained_isir_uncalibrated": raw["kid_mean"],
        "kid_std/trained_isir_uncalibrated": raw["kid_std"],
        "fid/untrained": untrained["fid"], "kid/untrained": untrained["kid_mean"],
        "kid_std/untrained": untrained["kid_std"],
        **unc_keys, "reference": REFERENCE, "uncertainty": {"fid": res.fid, "fid_n_boot": res.fid[REFERENCE]["n_boot"],
                                                            "kid": "mean +- 1.96 x torch-fidelity's subset std"},
        "fid_change_from_isir": isir["fid"] - plain["fid"],
        "fid_change_from_isir_uncalibrated": raw["fid"] - plain["fid"],
        "isir_calibration/a": cal.a, "isir_calibration/b": cal.b, "isir_calibration/auc": cal.auc,
        "isir_calibration/n_real": cal.n_real, "isir_calibration/n_fake": cal.n_fake,
        "isir_calibration/temperature": res.temperature.temperature,
        **_per_temperature(res.temperature),
        # the last iteration's as one number each (metrics.json); every iteration's as a list (details.json)
        **{f"{key}/last_iteration": res.trained[key][-1] for key in ISIR_TRACES},
        **{key: res.trained[key] for key in ISIR_TRACES},
        "num_samples": res.cfg.num_samples, "num_real": res.meta["num_real"], "real_split": res.meta["real_split"],
        "kid_subset_size": plain["kid_subset_size"], "train_steps": res.steps,
        "feature_extractor": res.extractor, "comparable_to_published": res.comparable,
    }


def _per_temperature(choice: TemperatureChoice) -> dict[str, float]:
    """The temperature search as one key per temperature and measure (``.../t=0.75``): metrics.json holds no lists."""
    return {f"isir_calibration/{name}/t={t:g}": v for name, values in
            (("heldout_fid", choice.criterion), ("pool_ess_fraction", choice.ess_fraction))
            for t, v in zip(choice.temperatures, values)}
