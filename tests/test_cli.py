"""The ase-phisnet command line."""

import shutil
import subprocess

import pytest
from ase import Atoms
from ase.io import read
from ase.units import Bohr

from ase_phisnet.cli import main
from ase_phisnet.data.dataset import HamiltonianDataset


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


def test_generate_command_on_a_dask_scheduler(tmp_path, capsys, monkeypatch):
    """``--dask-scheduler ADDRESS`` runs the PySCF jobs on that scheduler's workers (an
    in-process cluster here) and disconnects its client when done. The [dask] extra is in the
    test extra, so CI runs this; the skip is for users without it."""
    distributed = pytest.importorskip("distributed")
    opened = []

    class RecordingClient(distributed.Client):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(distributed, "Client", RecordingClient)  # the command imports it late
    out = tmp_path / "water.h5"
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        try:
            code = main(["generate", "--molecule", "H2O", "--n", "2", "--xc", "hf", "--basis",
                         "sto-3g", "--temperature", "500", "--out", str(out),
                         "--equilibration-steps", "10", "--stride", "2", "--no-progress",
                         "--dask-scheduler", cluster.scheduler_address])
            left_open = [client for client in opened if client.status != "closed"]
        finally:
            for client in opened:  # a leaked client would reconnect forever after the cluster
                client.close()
    assert code == 0 and len(opened) == 1
    assert "2/2 records" in capsys.readouterr().out
    assert len(HamiltonianDataset(out)) == 2
    assert not left_open, "the generate command left its Dask client connected"


def test_console_script_is_installed():
    executable = shutil.which("ase-phisnet")
    assert executable, "the ase-phisnet console script is not on PATH"
    result = subprocess.run([executable, "generate", "--help"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0 and "--workers" in result.stdout


def test_explore_command_writes_the_frames_of_stopped_runs(water_file, tmp_path, capsys):
    """The shipped water potential explored against ten 500 K STO-3G geometries with no
    tolerance: a run leaves their narrow distance ranges within a few steps, and the frames
    before it are written as a structure file that the 'file' sampler reads back."""
    out = tmp_path / "frames.xyz"
    start = tmp_path / "start.xyz"
    dataset = HamiltonianDataset(water_file)
    Atoms("OH2", positions=dataset.positions_bohr()[0] * Bohr).write(start)
    code = main(["explore", "--molecule", str(start), "--model", "water-pbe-def2svp",
                 "--data", str(water_file), "--runs", "2", "--steps", "200", "--tolerance", "0",
                 "--frames-per-run", "2", "--check-interval", "1", "--out", str(out),
                 "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and printed.count(" outside ") == 2  # one table row per stopped run
    frames = read(out, index=":")
    assert 2 <= len(frames) <= 4 and all(f.get_chemical_formula() == "H2O" for f in frames)
