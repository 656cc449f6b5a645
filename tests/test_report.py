import os
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
