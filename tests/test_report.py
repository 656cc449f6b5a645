import os
import re
import shutil
from pathlib import Path

import pytest

from repropipe.io import atomic_write_json
from repropipe.report import Figure, Section, Table, build_report


def make_branch(root: Path, name: str = "demo", synthetic: bool = True) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from repropipe.plotting import save_figure

    d = root / "results" / name
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1, 0, 2])
    save_figure(fig, d / "figures/curve.png")
    plt.close(fig)
    atomic_write_json(d / "metrics.json", {"eer": 0.125})
    atomic_write_json(d / "provenance.json", {"seed": 3, "data_source": "synthetic"})
    Section(branch=name, title=f"Branch {name}", summary="A <b>summary</b> that must be escaped.",
            data_source="synthetic (planted signal)", synthetic=synthetic,
            tables=[Table("Scores", ["model", "EER", "n"], [["lcnn", 0.125, 12345], ["resnet", float("nan"), 7]],
                          anchor="Published anchor: 1.92 %")],
            figures=[Figure("figures/curve.png", "A curve")]).write(d / "section.json")
    return d


def test_report_is_self_contained_and_marks_synthetic_numbers(tmp_path):
    d = make_branch(tmp_path)
    out = build_report([d], tmp_path / "report.html", "Test report")
    html = out.read_text()
    assert "data:image/png;base64," in html and 'src="figures/' not in html
    assert "SYNTHETIC DATA" in html
    assert "&lt;b&gt;summary&lt;/b&gt;" in html
    assert "<td>0.125</td>" in html and "<td>12,345</td>" in html and "<td>n/a</td>" in html
    assert "Published anchor: 1.92 %" in html
    assert "Provenance" in html and "&quot;synthetic&quot;" in html


def test_real_data_section_has_no_banner(tmp_path):
    d = make_branch(tmp_path, synthetic=False)
    assert "SYNTHETIC DATA" not in build_report([d], tmp_path / "r.html", "t").read_text()


def test_missing_figure_names_the_file_and_keeps_old_report(tmp_path):
    d = make_branch(tmp_path)
    out = build_report([d], tmp_path / "report.html", "first")
    (d / "figures/curve.png").unlink()
    with pytest.raises(FileNotFoundError, match="curve.png"):
        build_report([d], out, "second")
    assert "<title>first</title>" in out.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_malformed_section_names_the_file(tmp_path):
    d = make_branch(tmp_path)
    (d / "section.json").write_text('{"branch": "demo"}')
    with pytest.raises(ValueError, match="section.json"):
        build_report([d], tmp_path / "r.html", "t")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
def test_report_renders_in_headless_chromium(tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; CI must install it (scripts/system-deps.sh)")
        pytest.skip("chromium not installed (scripts/system-deps.sh installs it)")
    from playwright.sync_api import sync_playwright

    out = build_report([make_branch(tmp_path, "alpha"), make_branch(tmp_path, "beta", synthetic=False)],
                       tmp_path / "report.html", "Browser report")
    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
                   else route.abort())  # offline: any outside request would fail the page
        page.goto(out.as_uri())
        page.wait_for_load_state("load")
        assert page.title() == "Browser report"
        assert page.locator("section").count() == 2
        assert page.locator("table caption", has_text="Scores").count() == 2
        assert page.locator("text=SYNTHETIC DATA").count() == 1
        images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(images) == 2 and all(c and w > 100 and h > 50 for c, w, h in images)
        cell = page.locator("td", has_text="12,345").first
        assert cell.is_visible()
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000


# ---- stage costs ------------------------------------------------------------------------------------------------

def _cost(root: Path, stage: str, wall: float, units: dict[str, int]) -> Path:
    from repropipe.costs import Cost, path_of

    return Cost(stage=stage, wall_s=wall, cpu_s=wall * 1.5, max_rss_mb=321.5, threads=2,
                threads_source="REPROPIPE_THREADS", units=units).write(root / path_of(stage))


def test_report_renders_stage_costs_and_a_labelled_projection(tmp_path):
    import re

    from repropipe.report import full_datasets as full
    from repropipe.report.costs import tables

    files = [_cost(tmp_path, "asvspoof_features", 12.0, {"utterances": 1200}),
             _cost(tmp_path, "asvspoof_train", 30.0, {"steps": 300, "examples": 4800}),
             _cost(tmp_path, "gan_features", 2.0, {"images": 400}),
             _cost(tmp_path, "speaker_train", 5.0, {"steps": 10, "examples": 320}),
             _cost(tmp_path, "qr_benchmark", 4.0, {})]
    out = build_report([make_branch(tmp_path)], tmp_path / "report.html", "T", tables(files))
    html = out.read_text()
    assert "What each stage cost" in html and "Projection to the full datasets" in html and "PROJECTION" in html
    costs_html = html.split('<section id="costs">', 1)[1]
    for col in ("wall s", "CPU s", "max RSS MB", "threads", "units", "seconds per unit"):
        assert f"<th>{col}</th>" in costs_html
    assert "<td>1,200 utterances</td><td>0.01 s/utterances</td>" in costs_html
    # data stage: 0.01 s per utterance x 121,461 utterances = 1214.61 s = 0.3374 h
    row = re.search(r"<tr><td>asvspoof_features</td>.*?</tr>", costs_html.split("Projection", 1)[1]).group(0)
    assert "<td>121,461</td>" in row and "<td>0.3374</td>" in row and "ASVspoof 2019 LA" in row
    assert "<td>202,599</td><td>0.2814</td>" in costs_html  # CelebA: 0.005 s x 202,599 / 3600
    # train stage: per step and per example x the paper recipe
    steps, examples = full.ASVSPOOF_PAPER.steps(), full.ASVSPOOF_PAPER.examples()
    assert f"<td>{steps:,}</td><td>{30 / 300 * steps / 3600:.4g}</td>" in costs_html
    assert f"<td>{examples:,}</td><td>{30 / 4800 * examples / 3600:.4g}</td>" in costs_html
    assert "speaker_train" in costs_html and "not projected: no published recipe" in costs_html
    assert "qr_benchmark" in costs_html and "none recorded" in costs_html


@pytest.mark.parametrize("text, expected", [
    ('{"stage": "gan_train", "wall_s": "slow"}', "missing"),
    ('{"stage": "gan_train", "wall_s": -1, "cpu_s": 1, "max_rss_mb": 1, "threads": 1, "threads_source": "x"}',
     "wall_s: expected a finite number >= 0"),
    ('{"stage": "gan_train", "wall_s": 1, "cpu_s": 1, "max_rss_mb": 1, "threads": 1, "threads_source": "x", '
     '"units": {"steps": 2.5}}', "units: expected"),
    ('{"stage": ', "not valid JSON"),
])
def test_a_malformed_cost_file_stops_the_report_naming_it(tmp_path, text, expected):
    from repropipe.io import DataError
    from repropipe.report.costs import tables

    good = _cost(tmp_path, "gan_features", 2.0, {"images": 400})
    bad = tmp_path / "results/costs/gan_train.json"
    bad.write_text(text)
    with pytest.raises(DataError, match=f"{re.escape(str(bad))}.*{expected}"):
        tables([good, bad])
    with pytest.raises(DataError, match="gan_evaluate.json.*run the stage 'gan_evaluate'"):
        tables([tmp_path / "results/costs/gan_evaluate.json"])


def test_the_report_reads_the_cost_file_of_every_other_stage():
    from repropipe.costs import path_of
    from repropipe.report.stage import COST_FILES
    from repropipe.stages import load_all

    stages = load_all()
    assert sorted(COST_FILES) == sorted(path_of(n) for n in stages if n != "report")
    assert set(COST_FILES) <= set(stages["report"].deps)


def test_full_dataset_counts_match_the_branch_code_and_the_paper_recipe():
    import math

    import yaml

    from repropipe.asvspoof.data import OFFICIAL_COUNTS
    from repropipe.report import full_datasets as full

    assert full.ASVSPOOF_SPLITS == OFFICIAL_COUNTS and full.ASVSPOOF_LA.count == 121_461
    root = Path(__file__).resolve().parents[1]
    base = yaml.safe_load((root / "params.yaml").read_text())["asvspoof"]["train"]
    paper = yaml.safe_load((root / "conf/asvspoof/paper.yaml").read_text())["asvspoof"]["train"]
    t = {**base, **paper}
    runs = []
    for model in t["models"]:
        m = {**t, **t.get("per_model", {}).get(model, {})}
        runs += [(int(m["epochs"]), int(m["batch_size"]))] * len(t["seeds"])
    if t["shuffled_label_control"]:
        runs.append((int(t["epochs"]), int(t["batch_size"])))
    assert full.ASVSPOOF_PAPER.steps() == sum(e * math.ceil(OFFICIAL_COUNTS["train"] / b) for e, b in runs)
    assert full.ASVSPOOF_PAPER.examples() == sum(e * OFFICIAL_COUNTS["train"] for e, _ in runs)


def _anchor(**kw):
    from repropipe.report.section import AnchorRow

    base = dict(system="sys_a", metric="eval EER (%)", measured=3.5, measured_ci=(2.25, 4.75), published=1.92,
                published_on="real LA eval", source="NII", statistic="best of six runs; range 1.92-3.10 %")
    return AnchorRow(**{**base, **kw})


def test_anchor_table_marks_published_numbers_and_systems_not_run(tmp_path):
    from repropipe.report.section import ANCHOR_TITLE, anchor_table

    t = anchor_table([_anchor(), _anchor(system="sys_b", measured=None, measured_ci=None, published="about 0.6-0.7"),
                      _anchor(system="sys_c", published=None, measured_as="mean of 3 seeds")],
                     synthetic=True, data="synthetic stand-in")
    assert t.title.startswith(ANCHOR_TITLE) and "not comparable" in t.title and "SYNTHETIC" in t.title
    (a, b, c) = t.rows
    assert a[2] == "3.50 [2.25, 4.75]" and a[3] == "published: 1.92"
    assert a[4:] == ["real LA eval", "best of six runs; range 1.92-3.10 %", "NII"]
    assert b[2] == "not run" and b[3] == "published: about 0.6-0.7"
    assert c[2] == "3.50 [2.25, 4.75] (mean of 3 seeds)" and c[3] == "none quoted here"
    real = anchor_table([_anchor()], synthetic=False, data="ASVspoof 2019 LA", caveats=["fallback extractor"])
    assert "SYNTHETIC" not in real.title and "not comparable" not in real.title and "fallback extractor" in real.title
    # through section.json into the HTML
    d = make_branch(tmp_path)
    sec = Section.read(d / "section.json")
    sec.tables.append(t)
    sec.write(d / "section.json")
    html = build_report([d], tmp_path / "r.html", "t").read_text()
    assert "<td>published: 1.92</td>" in html and "<td>not run</td>" in html and ANCHOR_TITLE in html
