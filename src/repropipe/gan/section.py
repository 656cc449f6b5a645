"""The gan branch's report section: FID/KID table beside its published anchors, the critic calibration,
I-SIR's moves, and verdict sentences, all read from :class:`repropipe.gan.evaluate.Results`."""

from __future__ import annotations

from repropipe import stats
from repropipe.gan.evaluate import REFERENCE, Results
from repropipe.report.section import AnchorRow, Figure, Section, Table, anchor_table

N_BOOT_FID_TEXT = ("basic bootstrap interval over the generated samples (200 replicates; the real-image statistics "
                   "stay fixed), and differences tested with independent replicates of the two sample sets")
ANCHOR = ("Anchors: torch-mimicry SNGAN on CelebA 64x64, FID 5.71 at 100k steps (Inception-v3, 50k samples); "
          "i-SIR on a CIFAR-10 DCGAN improved FID from 28.4 to 22.7 (Ex2MCMC, Samsonov et al. 2022).")
# the numbers of ANCHOR, by the system here set beside them: (published FID, the data, who, which statistic)
PUBLISHED = {
    "trained": (5.71, "real CelebA 64x64", "torch-mimicry's SNGAN (a different GAN: spectral norm, not WGAN-GP)",
                "at 100k steps, 50k samples, Inception-v3"),
    "trained_isir": ("22.7 (28.4 with plain sampling)", "real CIFAR-10, a DCGAN", "Ex2MCMC, Samsonov et al. 2022",
                     "i-SIR against plain sampling of the same DCGAN"),
}
SYSTEMS = (("untrained", "z ~ N(0, I)"), ("trained", "z ~ N(0, I)"),
           ("trained_isir_uncalibrated", "I-SIR, raw critic: weights exp(D)"),
           ("trained_isir", "I-SIR, calibrated critic: weights exp(t (a D + b)), t chosen on held-out images"))
FIGURES = (Figure("figures/samples_plain.png", "Trained generator, plain latent sampling."),
           Figure("figures/samples_isir.png", "Trained generator, latents from I-SIR: left with the calibrated "
                  "critic, right with the raw critic exp(D) (the same proposals)."),
           Figure("figures/samples_untrained.png", "Untrained generator (the FID baseline)."),
           Figure("figures/train_curves.png", "Critic/generator losses, Wasserstein estimate and gradient "
                  "penalty per step."),
           Figure("figures/isir_changed.png", "Fraction of chains whose particle changed per I-SIR iteration."))


def build(res: Results) -> Section:
    """The section gan_evaluate writes to results/gan/section.json."""
    m = res.model
    return Section(
        branch="gan", title="WGAN-GP 64x64 with I-SIR latent sampling (CelebA)",
        summary=(f"ResNet WGAN-GP (torch-mimicry wgan_gp_64 design, ngf={m.ngf}, ndf={m.ndf}, nz={m.nz}) trained "
                 f"{res.steps} generator steps; FID/KID via torch-fidelity with '{res.extractor}'. I-SIR draws "
                 "latents from p(z) r(G(z)) without retraining, r the density ratio of real to generated images. A "
                 "WGAN critic is not log r, so it is calibrated first: a and b are fitted so that exp(a D + b) "
                 "estimates r (logistic regression of held-out real against generated critic scores), and the "
                 "weight is tempered to exp(t (a D + b)) with t chosen where a reweighted pool of generated images "
                 "comes closest (FID) to the held-out images, not to the FID reference; the raw exp(D) is shown "
                 "beside it."),
        data_source=res.source, synthetic=res.source == "synthetic",
        tables=[fid_table(res), calibration_table(res), temperature_table(res), isir_table(res), anchors_table(res)],
        figures=list(FIGURES), notes=notes(res),
    )


def fid_table(res: Results) -> Table:
    """FID and KID of every system with intervals, and FID's difference to plain sampling with its test."""
    fid_note = "" if res.comparable else " (fallback extractor, not comparable to published)"

    def fid_cell(name: str) -> str:
        u = res.fid.get(name)
        return stats.fmt_ci(u["value"], u["ci_low"], u["ci_high"], digits=4) if u else f"{res.kid[name]['fid']:.4f}"

    def kid_cell(name: str) -> str:
        return stats.fmt_ci(res.kid[name]["kid_mean"], *res.kid_interval(name), 5)

    def versus(name: str) -> str:
        if name == REFERENCE:
            return "reference"
        return stats.fmt_test(res.fid.get(name, {}).get("vs_reference"), digits=4)

    trained = f"trained ({res.steps} steps)"
    return Table(
        title=(f"FID / KID on {res.cfg.num_samples} samples vs {res.meta['num_real']} real {res.meta['real_split']} "
               f"images{fid_note}"),
        columns=["generator", "sampling", "FID [95 % CI]", "KID mean [± 1.96 subset std]", "KID (std)",
                 "FID minus plain sampling [95 % CI], test"],
        rows=[[name if name == "untrained" else trained, sampling, fid_cell(name), kid_cell(name),
               res.kid[name]["kid_std"], versus(name)] for name, sampling in SYSTEMS],
        anchor=ANCHOR,
    )


def anchors_table(res: Results) -> Table:
    """This run's WGAN-GP FID (plain and I-SIR) beside the anchors' published FIDs."""
    sampling = dict(SYSTEMS)
    rows = []
    for name, (published, on, source, statistic) in PUBLISHED.items():
        u = res.fid.get(name)
        rows.append(AnchorRow(
            system=f"WGAN-GP (ngf={res.model.ngf}, ndf={res.model.ndf}), trained here; {sampling[name]}",
            metric="FID", measured=u["value"] if u else res.kid[name]["fid"],
            measured_ci=(u["ci_low"], u["ci_high"]) if u else None, published=published, published_on=on,
            source=source, statistic=statistic, digits=4,
            measured_as=f"{res.steps} steps, {res.cfg.num_samples} samples"))
    caveats = ([f"FID here uses the offline fallback extractor '{res.extractor}', not Inception-v3: not comparable "
                "to published FID"] if not res.comparable else [])
    return anchor_table(rows, synthetic=res.source == "synthetic",
                        data=f"{res.source} data ({res.meta['num_real']} real {res.meta['real_split']} images)",
                        caveats=caveats)


def calibration_table(res: Results) -> Table:
    cal = res.calibration
    return Table(
        title=f"Critic calibration: log(p_data / p_G) = a D + b, logistic regression on {cal.n_real} held-out real "
              f"({res.cfg.calibration.split} split) and {cal.n_fake} generated images",
        columns=["a", "b", "AUC of D (held-out real vs generated)", "temperature t (chosen on held-out FID)"],
        rows=[[cal.a, cal.b, cal.auc, res.temperature.temperature]],
    )


def temperature_table(res: Results) -> Table:
    """The held-out criterion the temperature was chosen by, with how many pool images the weights still use."""
    t = res.temperature
    return Table(
        title=(f"Temperature of the I-SIR weight exp(t (a D + b)): FID of the {res.calibration.n_fake} generated "
               f"calibration images reweighted by r^t against the {res.calibration.n_real} held-out "
               f"{res.cfg.calibration.split} images (t = 0: plain sampling; t = 1: the calibrated density ratio)"),
        columns=["t", "held-out FID of the reweighted pool", "effective sample size / pool size", "chosen"],
        rows=[[temp, v, e, "yes" if temp == t.temperature else ""]
              for temp, v, e in zip(t.temperatures, t.criterion, t.ess_fraction)],
    )


def isir_table(res: Results) -> Table:
    t = res.trained
    rows = zip(t["isir_changed_fraction"], t["isir_uncalibrated_changed_fraction"], t["isir_ess"], t["isir_uncalibrated_ess"])
    return Table(title=(f"I-SIR per iteration: fraction of chains whose particle changed, and the mean effective sample "
                        f"size of the weights of the {res.cfg.isir.particles + 1} candidates (current + proposals)"),
                 columns=["iteration", "changed, calibrated (chosen t)", "changed, raw critic", "ESS, calibrated",
                          "ESS, raw critic"],
                 rows=[[i + 1, *r] for i, r in enumerate(rows)])


def notes(res: Results) -> list[str]:
    """The extractor caveat, I-SIR's effect on FID (whatever its sign) and its test, and how intervals are made."""
    plain = res.trained["plain"]
    out = [res.caveat] if res.caveat else []
    t = res.temperature
    best_fid = t.criterion[t.temperatures.index(t.temperature)]
    out.append(f"The held-out criterion chose t = {t.temperature:g} (reweighted-pool FID {best_fid:.4g} against the "
               f"{res.cfg.calibration.split} images"
               + (f"; {t.criterion[t.temperatures.index(0.0)]:.4g} at t = 0" if 0.0 in t.temperatures and t.temperature != 0 else "") + ")"
               + (": no tempering of the calibrated weights brought the generated images closer to held-out real "
                  "ones, so I-SIR's target is plain sampling and it cannot lower FID here; any difference to plain "
                  "sampling below is sampling noise." if t.temperature == 0 else "."))
    plain_t = t.temperature == 0
    for label, key in (("the calibrated critic", "isir"), ("the raw critic", "isir_uncalibrated")):
        delta = res.trained[key]["fid"] - plain["fid"]
        if key == "isir" and plain_t:
            out.append(f"I-SIR with the calibrated critic ran at t = 0, i.e. plain sampling with other latents: its FID "
                       f"differs from plain sampling's by {delta:+.4g} "
                       f"({stats.fmt_test(res.fid.get('trained_isir', {}).get('vs_reference'), 4)}), which measures "
                       "sampling noise between two draws of z ~ N(0, I), not an effect of the critic: I-SIR did not "
                       "lower FID on this run.")
            continue
        out.append(f"I-SIR with {label} {'lowered' if delta < 0 else 'raised'} FID by {abs(delta):.4g} against "
                   "plain sampling on this run (same generator, same sample count); reported whatever its sign.")
    t_isir = res.fid.get("trained_isir", {}).get("vs_reference")
    if t_isir is not None and not plain_t:
        lowers = t_isir["significant"] and t_isir["diff"] < 0
        out.append("I-SIR sampling with the calibrated critic "
                   + ("significantly lowers" if lowers else
                      "significantly raises" if t_isir["significant"] else "does not significantly change")
                   + f" FID against plain sampling (the reference) on this run ({stats.fmt_test(t_isir, 4)})"
                   + ("." if lowers else ": I-SIR does not beat plain sampling here."))
    out.append(f"Intervals: FID, {N_BOOT_FID_TEXT}; KID, mean ± 1.96 times torch-fidelity's standard deviation "
               "over its random subsets (the spread of one subset's estimate, so wider than an interval of the mean).")
    return out
