"""The ase-phisnet command line."""

import shutil
import subprocess

import pytest

from ase_phisnet.cli import main
from ase_phisnet.dataset import HamiltonianDataset


def test_generate_command_with_the_documented_flags(tmp_path, capsys):
    out = tmp_path / "water.h5"
    code = main([
        "generate", "--molecule", "H2O", "--n", "2", "--xc", "hf", "--basis", "sto-3g",
        "--temperature", "500", "--out", str(out), "--equilibration-steps", "10", "--stride", "2",
        "--no-progress",
    ])
    assert code == 0
    assert "2/2 records" in capsys.readouterr().out
    dataset = HamiltonianDataset(out)
    assert dataset.metadata.theory.xc == "hf" and dataset.metadata.sampler["temperatures_k"] == [500]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--molecule", "Unobtainium"], "neither a file nor a molecule"),
        (["--molecule", "H2O", "--charge", "1"], "odd"),
        (["--molecule", "H2O", "--xc", "nonsense"], "unknown exchange-correlation"),
        (["--molecule", "H2O", "--workers", "0"], "--workers"),
    ],
)
def test_generate_reports_bad_input_without_a_traceback(tmp_path, capsys, extra, message):
    code = main(["generate", "--n", "2", "--basis", "sto-3g", "--out", str(tmp_path / "x.h5"),
                 "--no-progress", *extra])
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_console_script_is_installed():
    executable = shutil.which("ase-phisnet")
    assert executable, "the ase-phisnet console script is not on PATH"
    result = subprocess.run([executable, "generate", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--workers" in result.stdout
