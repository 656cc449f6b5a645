import subprocess
import sys

import pytest
import yaml

from repropipe.params import ParamsError, load_params, select

from conftest import ROOT


def write(tmp_path, text):
    (tmp_path / "workflow" / "schemas").mkdir(parents=True)
    (tmp_path / "workflow/schemas/params.schema.yaml").write_text((ROOT / "workflow/schemas/params.schema.yaml").read_text())
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_repository_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params["qr"]["methods"][0] == "torch.linalg.qr"


def test_unknown_key_names_key_file_and_line(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("\nqr:\n", "\nqr:\n  repeat_count: 4\n")
    p = write(tmp_path, text)
    line = text.splitlines().index("  repeat_count: 4") + 1
    with pytest.raises(ParamsError) as err:
        load_params(p)
    assert f"params.yaml:{line}: key 'qr.repeat_count': unknown key" in str(err.value)


def test_wrong_type_names_key(tmp_path):
    p = write(tmp_path, (ROOT / "params.yaml").read_text().replace("seed: 0", "seed: zero"))
    with pytest.raises(ParamsError, match=r"params.yaml:\d+: key 'seed': 'zero' is not of type 'integer'"):
        load_params(p)


def test_broken_yaml_names_line(tmp_path):
    p = write(tmp_path, "seed: 0\nqr: [unclosed\n")
    with pytest.raises(ParamsError, match=r"params.yaml:\d+: not valid YAML"):
        load_params(p)


def test_select_returns_only_declared_keys():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(select(params, ["seed", "report.title"])) == {"seed", "report.title"}
    with pytest.raises(ParamsError, match="qr.nope"):
        select(params, ["qr.nope"])


def test_cli_reports_invalid_params_and_writes_nothing(tmp_path):
    p = write(tmp_path, (ROOT / "params.yaml").read_text().replace("device: auto", "device: tpu"))
    out = subprocess.run([sys.executable, "-m", "repropipe", "qr", "benchmark", "--params", str(p)],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2
    assert "key 'device'" in out.stderr and "'tpu' is not one of" in out.stderr
    assert not (tmp_path / "results").exists()


def test_every_command_has_help():
    for args in (["--help"], ["qr", "--help"], ["qr", "benchmark", "--help"], ["report", "build", "--help"],
                 ["pipeline", "stages", "--help"]):
        out = subprocess.run([sys.executable, "-m", "repropipe", *args], capture_output=True, text=True)
        assert out.returncode == 0 and "usage:" in out.stdout, args
