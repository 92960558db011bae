"""Dataset generation end to end: file content, resume after a kill, executors, errors."""

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest

from ase_phisnet.core.errors import DatasetFileError, OpenShellError, UnknownMoleculeError
from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.data.generate import computation_order, generate_dataset
from ase_phisnet.data.reference import Theory, compute_reference
from ase_phisnet.data.sampling import SamplerConfig

TINY_THEORY = Theory(xc="hf", basis="sto-3g")
TINY_SAMPLER = SamplerConfig(kind="langevin", temperatures_k=(300.0, 500.0), seed=1,
                             equilibration_steps=20, stride=5)


def _assert_records_match_fresh_pyscf(dataset, theory):
    for position in range(len(dataset)):
        stored = dataset[position]
        fresh = compute_reference(stored.atomic_numbers, stored.positions_bohr, theory)
        assert stored.energy_eh == pytest.approx(fresh.energy_eh, abs=1e-9)
        np.testing.assert_allclose(stored.hamiltonian_eh, fresh.hamiltonian_eh, atol=1e-7)
        np.testing.assert_allclose(stored.overlap, fresh.overlap, atol=1e-12)
        np.testing.assert_allclose(stored.forces_eh_per_bohr, fresh.forces_eh_per_bohr, atol=1e-6)


def test_generation_writes_metadata_and_records_that_match_pyscf(tmp_path):
    out = tmp_path / "water.h5"
    summary = generate_dataset("H2O", 3, TINY_THEORY, TINY_SAMPLER, out, progress=False)
    assert (summary.n_records, summary.n_failed, summary.n_computed_this_run) == (3, 0, 3)
    dataset = HamiltonianDataset(out)
    assert len(dataset) == 3
    meta = dataset.metadata
    assert meta.molecule == "H2O" and meta.theory == TINY_THEORY and meta.n_planned == 3
    assert meta.sampler["kind"] == "langevin" and meta.sampler["seed"] == 1
    assert meta.sampler["calculator"] in ("gfn2", "pyscf")  # 'auto' is stored resolved
    import pyscf

    assert meta.pyscf_version == pyscf.__version__
    with h5py.File(out) as handle:
        # the plan as written (copies of the inputs): exact
        np.testing.assert_array_equal(handle["plan/temperature_k"][()], [300, 300, 500])
        planned = handle["plan/positions_bohr"][()]
    for position in range(3):
        np.testing.assert_array_equal(dataset[position].positions_bohr, planned[position])
    _assert_records_match_fresh_pyscf(dataset, TINY_THEORY)
    dataset.close()
    # Running the same command again computes nothing.
    again = generate_dataset("H2O", 3, TINY_THEORY, TINY_SAMPLER, out, progress=False)
    assert again.n_computed_this_run == 0 and again.n_records == 3


def test_killed_generation_resumes_without_losing_or_duplicating(tmp_path):
    out = tmp_path / "water.h5"
    n = 5
    command = [
        sys.executable, "-m", "ase_phisnet.cli", "--verbose", "generate", "--molecule", "H2O",
        "--n", str(n), "--xc", "hf", "--basis", "def2-svp", "--temperature", "400",
        "--equilibration-steps", "20", "--stride", "5", "--seed", "2", "--out", str(out),
        "--no-progress",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    written = 0
    for line in process.stderr:
        written += "written" in line
        if written == 2:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=120)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    survived = len(HamiltonianDataset(out))
    assert 2 <= survived < n

    theory = Theory(xc="hf", basis="def2-svp")
    sampler = SamplerConfig(temperatures_k=(400.0,), seed=2, equilibration_steps=20, stride=5)
    summary = generate_dataset("H2O", n, theory, sampler, out, progress=False)
    assert summary.n_records == n
    assert summary.n_computed_this_run == n - survived
    dataset = HamiltonianDataset(out)
    np.testing.assert_array_equal(dataset.indices, np.arange(n))  # each plan row exactly once
    with h5py.File(out) as handle:
        assert sorted(handle["records"]) == [f"{i:06d}" for i in range(n)]
    _assert_records_match_fresh_pyscf(dataset, theory)


def test_a_run_stopped_part_way_holds_a_uniform_sample_of_the_plan():
    """The plan stores its temperatures in blocks (500 at 300 K, then 500 at 500 K); the rows
    are computed in a fixed shuffled order, so the first 100 records hold both temperatures."""
    order = computation_order(list(range(1000)), 1000)
    assert sorted(order) == list(range(1000))
    first_hundred_at_500k = sum(index >= 500 for index in order[:100])
    assert 35 <= first_hundred_at_500k <= 65  # binomial(100, 1/2): 3 sigma
    assert computation_order(list(range(1000)), 1000) == order  # the same on every resume
    pending = order[400:]  # a resumed run continues where the stopped one was
    assert computation_order(sorted(pending), 1000) == pending
    # independent of the plan-wide splits: the first 100 rows are not all training rows of
    # any split seed (about 20 of them fall in its validation and test parts)
    for seed in range(5):
        not_training = set(np.random.default_rng(seed).permutation(1000)[800:].tolist())
        assert 5 <= len(not_training & set(order[:100])) <= 35


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The TINY dataset computed in this process (workers=1): what every executor must give."""
    out = tmp_path_factory.mktemp("in_process") / "water.h5"
    generate_dataset("H2O", 3, TINY_THEORY, TINY_SAMPLER, out, progress=False)
    return HamiltonianDataset(out)


def _assert_same_records(dataset, reference):
    """Same plan, same records: the geometries are sampled in the calling process (seeded MD;
    threads may reorder its sums, 1e-12 Å); each SCF converges to conv_tol = 1e-10 Eh from
    its own start, so matrices agree to ~1e-8 Eh and forces to ~1e-6 Eh/Bohr."""
    assert len(dataset) == len(reference) and not dataset.failed
    for position in range(len(reference)):
        got, expected = dataset[position], reference[position]
        np.testing.assert_allclose(got.positions_bohr, expected.positions_bohr, rtol=0,
                                   atol=1e-10)
        assert got.energy_eh == pytest.approx(expected.energy_eh, abs=1e-9)
        np.testing.assert_allclose(got.hamiltonian_eh, expected.hamiltonian_eh, atol=1e-8)
        np.testing.assert_allclose(got.forces_eh_per_bohr, expected.forces_eh_per_bohr,
                                   atol=1e-6)


def test_any_executor_gives_the_in_process_records(tmp_path, in_process):
    with ThreadPoolExecutor(2) as executor:
        generate_dataset("H2O", 3, TINY_THEORY, TINY_SAMPLER, tmp_path / "threads.h5",
                         executor=executor, progress=False)
    _assert_same_records(HamiltonianDataset(tmp_path / "threads.h5"), in_process)


def test_local_processes_give_the_in_process_records(tmp_path, in_process):
    generate_dataset("H2O", 3, TINY_THEORY, TINY_SAMPLER, tmp_path / "procs.h5", workers=2,
                     progress=False)
    _assert_same_records(HamiltonianDataset(tmp_path / "procs.h5"), in_process)


def test_a_dask_cluster_gives_the_in_process_records(tmp_path, in_process):
    """generate_dataset on a Dask client's executor (an in-process cluster: one worker
    thread). The [dask] extra is in the test extra, so CI runs this; the skip is for users
    without it."""
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "dask.h5"
    with (distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=1,
                                   dashboard_address=None) as cluster,
          distributed.Client(cluster) as client,
          distributed.get_task_stream(client) as tasks):
        summary = generate_dataset("H2O", 3, TINY_THEORY, TINY_SAMPLER, out,
                                   executor=client.get_executor(), progress=False)
    assert summary.n_computed_this_run == 3 and summary.n_records == 3
    assert len(tasks.data) == 3  # every SCF ran as a task on the cluster
    _assert_same_records(HamiltonianDataset(out), in_process)


def test_failed_scf_is_recorded_and_never_stored(tmp_path):
    out = tmp_path / "water.h5"
    theory = Theory(xc="pbe", basis="def2-svp", grid_level=1, max_cycle=2)
    summary = generate_dataset("H2O", 2, theory, TINY_SAMPLER, out, progress=False)
    assert summary.n_records == 0 and summary.n_failed == 2
    dataset = HamiltonianDataset(out)
    assert len(dataset) == 0
    assert all("did not converge" in reason for reason in dataset.failed.values())


def test_resuming_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "water.h5"
    generate_dataset("H2O", 2, TINY_THEORY, TINY_SAMPLER, out, progress=False)
    with pytest.raises(DatasetFileError, match="different dataset"):
        generate_dataset("H2O", 2, Theory(xc="pbe", basis="sto-3g"), TINY_SAMPLER, out,
                         progress=False)


def test_bad_inputs_fail_before_any_work(tmp_path):
    with pytest.raises(UnknownMoleculeError):
        generate_dataset("Unobtainium", 2, TINY_THEORY, TINY_SAMPLER, tmp_path / "a.h5")
    with pytest.raises(OpenShellError, match="odd"):
        generate_dataset("H2O", 2, Theory(xc="hf", basis="sto-3g", charge=1), TINY_SAMPLER,
                         tmp_path / "b.h5")
    assert not os.path.exists(tmp_path / "a.h5") and not os.path.exists(tmp_path / "b.h5")


def test_unreadable_and_foreign_files_are_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DatasetFileError, match="not a readable HDF5 file"):
        HamiltonianDataset(garbage)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as handle:
        handle["x"] = np.zeros(3)
    with pytest.raises(DatasetFileError, match="not an ase-phisnet dataset"):
        HamiltonianDataset(foreign)
    with pytest.raises(DatasetFileError, match="not an ase-phisnet dataset"):
        generate_dataset("H2O", 2, TINY_THEORY, TINY_SAMPLER, foreign, progress=False)
    future = tmp_path / "future.h5"
    with h5py.File(future, "w") as handle:
        handle.attrs["format"] = "ase-phisnet-dataset"
        handle.attrs["format_version"] = 99
    with pytest.raises(DatasetFileError, match="format version 99"):
        HamiltonianDataset(future)
    with pytest.raises(DatasetFileError, match="no such dataset"):
        HamiltonianDataset(tmp_path / "missing.h5")
