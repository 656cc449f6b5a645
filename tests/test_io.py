import json
import os
from pathlib import Path

import pytest

from repropipe import io
from repropipe.stages import Stage, StageContext, load_all


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.json"
    io.atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_written_files_get_normal_permissions(tmp_path):
    path = io.atomic_write_text(tmp_path / "a.txt", "x")
    assert path.stat().st_mode & 0o044 == 0o044  # group and others can read, unlike mkstemp's 0600


def test_json_has_no_nan(tmp_path):
    path = io.atomic_write_json(tmp_path / "m.json", {"a": float("nan"), "b": [1.5, float("inf")]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5, None]}


def test_fingerprint_follows_content_and_names(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.txt").write_text("one")
    first = io.fingerprint([d])
    assert io.fingerprint([d]) == first
    (d / "x.txt").write_text("two")
    second = io.fingerprint([d])
    assert second != first
    (d / "x.txt").rename(d / "y.txt")
    assert io.fingerprint([d]) != second
    assert io.fingerprint([tmp_path / "missing"]) != io.fingerprint([tmp_path / "other-missing"])


def test_metrics_hold_numbers_and_provenance_goes_beside_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in.txt").write_text("data")
    st = Stage("demo", "demo", "run", "help", ("seed", "demo.k"), ("in.txt",), ("out/metrics.json",), lambda c: None)
    ctx = StageContext(st, {"seed": 4, "demo": {"k": 2}}, Path("params.yaml"))
    result = {"f1/a": 0.5, "n": 3, "ok": True, "reference": "a", "per_run": {"a": {"f1": 0.5}}, "grid": [1, 2],
              "folds": None}
    doc = json.loads(ctx.write_metrics("out/metrics.json", result, data_source="synthetic",
                                       device="cpu").read_text())
    prov = json.loads(Path("out/provenance.json").read_text())
    # `dvc metrics show`: one column per model and metric; nested results, lists and labels beside them
    assert doc == {"f1/a": 0.5, "n": 3, "ok": True, "data_source": "synthetic"}
    assert json.loads(Path("out/details.json").read_text()) == {
        "reference": "a", "per_run": {"a": {"f1": 0.5}}, "grid": [1, 2], "folds": None, "data_source": "synthetic"}
    assert prov["seed"] == 4 and prov["data_source"] == "synthetic" and prov["device"] == "cpu"
    assert prov["world_size"] == 1 and prov["precision"] == "32"  # what DESIGN.md says every provenance records
    assert prov["params_keys"] == ["seed", "demo.k"]
    assert prov["params_hash"] == io.params_hash({"seed": 4, "demo.k": 2})
    assert prov["inputs_fingerprint"] == io.fingerprint(["in.txt", *st.code])
    assert prov["packages"]["torch"] != "not installed"
    with pytest.raises(ValueError, match="reserved"):
        ctx.write_metrics("out/metrics.json", {"provenance": 1}, data_source="x", device="cpu")
    with pytest.raises(ValueError, match="named metrics.json"):
        ctx.write_metrics("out/m2.json", {"f1": 1}, data_source="x", device="cpu")


def test_every_metrics_json_out_has_its_details_json_declared_beside_it():
    stages = load_all()
    for st in stages.values():
        for out in st.outs:
            if Path(out).name == "metrics.json":
                assert str(Path(out).with_name("details.json")) in st.outs, st.name
    assert "results/qr/details.json" in stages["qr_benchmark"].outs
    assert "results/qr/details.json" not in stages["qr_benchmark"].metrics  # a plain output, not a dvc metric


def test_data_error_names_file_and_line(tmp_path):
    err = io.DataError(tmp_path / "protocol.txt", "expected 5 columns, got 4", line=12)
    assert str(err) == f"{tmp_path / 'protocol.txt'}:12: expected 5 columns, got 4"
    assert err.line == 12 and isinstance(err, ValueError)


def _raise_data_error() -> None:
    raise io.DataError("LA.zip!LA/x.txt", "score 'x' is not a finite number", line=3)


def test_a_data_error_raised_in_a_pool_worker_reaches_the_parent_whole():
    """A worker's exception travels back pickled; a DataError that failed to rebuild there killed the pool's result
    thread and the stage waited forever (the timeout turns that hang into a failure)."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(1) as pool:
        with pytest.raises(io.DataError) as caught:
            pool.apply_async(_raise_data_error).get(timeout=60)
    assert str(caught.value) == "LA.zip!LA/x.txt:3: score 'x' is not a finite number"
    assert caught.value.line == 3 and str(caught.value.path) == "LA.zip!LA/x.txt"


def test_atomic_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "features"
    with io.atomic_dir(out) as d:
        (d / "a.pt").write_text("v1")
    assert [p.name for p in out.iterdir()] == ["a.pt"]
    with pytest.raises(RuntimeError):
        with io.atomic_dir(out) as d:
            (d / "b.pt").write_text("half")
            raise RuntimeError("killed mid-stage")
    assert [p.name for p in out.iterdir()] == ["a.pt"] and (out / "a.pt").read_text() == "v1"
    with io.atomic_dir(out) as d:
        (d / "c.pt").write_text("v2")
    assert [p.name for p in out.iterdir()] == ["c.pt"]  # no stale file from the previous run
    assert [p.name for p in tmp_path.iterdir()] == ["features"]  # no temporary or old directory left


def test_read_json_and_open_zip_name_the_file(tmp_path):
    from repropipe.io import DataError, open_zip, read_json

    bad = tmp_path / "source.json"
    bad.write_text('{\n  "a": 1,\n  oops\n}\n')
    with pytest.raises(DataError, match=r"source\.json:3: not valid JSON"):
        read_json(bad, "missing")
    with pytest.raises(DataError, match=r"nope\.json: run the download stage"):
        read_json(tmp_path / "nope.json", "run the download stage")
    fake = tmp_path / "LA.zip"
    fake.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"LA\.zip: not a readable zip archive"):
        open_zip(fake)


def test_an_unwritable_output_location_stops_the_stage_before_any_work(tmp_path, monkeypatch):
    """Root ignores permission bits, so the unwritable place here is a folder that is really a file."""
    from repropipe.stages import run_stage

    monkeypatch.chdir(tmp_path)
    import shutil as _sh

    _sh.copytree(Path(__file__).resolve().parents[1] / "workflow/schemas", tmp_path / "workflow/schemas")
    Path("params.yaml").write_text(Path(__file__).resolve().parents[1].joinpath("params.yaml").read_text())
    Path("results").write_text("a file where the results folder should be")
    ran = []
    st = Stage("demo", "demo", "run", "help", ("seed",), (), ("results/demo/metrics.json",), lambda c: ran.append(1))
    with pytest.raises(io.OutputNotWritable, match=r"results/demo/metrics.json: output location is not writable"):
        run_stage(st, "params.yaml")
    assert ran == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_named_before_any_work(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        with pytest.raises(io.OutputNotWritable, match="ro/out.json"):
            io.check_writable([tmp_path / "ro/out.json"])
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_read_utf8_is_strict_and_names_file_line_and_byte(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes("000001.jpg 0\r\n000002.jpg 0\r\n".encode() + b"0000\xe93.jpg 0\r\n")
    with pytest.raises(io.DataError, match=r"list.txt:3: not UTF-8 text: byte 0xe9 at column 5") as err:
        io.read_utf8(path, "missing")
    assert err.value.path == path and err.value.line == 3
    path.write_bytes("caf\u00e9 \ufffd\n".encode())  # valid UTF-8 (U+FFFD included) decodes as it is
    assert io.read_utf8(path, "missing") == "caf\u00e9 \ufffd\n"
    with pytest.raises(io.DataError, match=r"nope.txt: run the download stage"):
        io.read_utf8(tmp_path / "nope.txt", "run the download stage")
