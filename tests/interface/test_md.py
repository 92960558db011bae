"""MD: NVE with the shipped (energy- and force-trained) water potential conserves energy; the
``ase-phisnet md`` command writes its trajectory, log, plot and summary."""

import json

import numpy as np
import pytest
from ase.build import molecule
from ase.io import read

from ase_phisnet import PhiSNetCalculator
from ase_phisnet.cli import main
from ase_phisnet.interface.md import MDSettings, energy_drift, run_md


def test_nve_with_the_trained_water_potential_conserves_energy():
    atoms = molecule("H2O")
    atoms.calc = PhiSNetCalculator("water-pbe-def2svp")
    settings = MDSettings(ensemble="nve", temperature_k=300, timestep_fs=0.5, steps=200, seed=1)
    summary, log = run_md(atoms, settings, progress=False)
    print(summary.text())
    # Kinetic energy ~ 3/2 kT per atom ~ 0.04 eV/atom; drift and noise are orders smaller.
    assert abs(summary.energy_drift_ev_per_atom_per_ps) < 1e-3
    assert summary.energy_fluctuation_ev_per_atom < 1e-3
    assert np.ptp(log[:, 3]) > 0.01  # it really moved: kinetic energy exchanged
    assert atoms.get_all_distances().max() < 2.0  # still a water molecule (Å)


def test_energy_drift_fits_a_line():
    time_ps = np.linspace(0, 2, 50)
    slope, noise = energy_drift(time_ps, 3.0 + 0.3 * time_ps, n_atoms=3)
    assert slope == pytest.approx(0.1) and noise == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("ensemble", ["nve", "nvt"])
def test_md_command(tmp_path, capsys, ensemble):
    prefix = tmp_path / "run"
    assert main(["md", "--ensemble", ensemble, "--steps", "6", "--out", str(prefix),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{ensemble.upper()}: 6 steps" in out and ("drift" in out) == (ensemble == "nve")
    frames = read(f"{prefix}.traj", ":")
    assert len(frames) == 7 and frames[-1].get_chemical_formula() == "H2O"
    log = np.loadtxt(f"{prefix}.log")
    assert log.shape == (7, 7) and np.all(log[:, 6] > 0)  # a HOMO-LUMO gap every step
    assert json.loads((tmp_path / "run.json").read_text())["steps"] == 6
    assert (tmp_path / "run.png").stat().st_size > 1000


def test_md_settings_are_validated():
    with pytest.raises(ValueError, match="ensemble"):
        MDSettings(ensemble="npt")
    with pytest.raises(ValueError, match="timestep_fs"):
        MDSettings(timestep_fs=0)


@pytest.mark.parametrize("ensemble,dof", [("nve", 3), ("nvt", 6)])
def test_initial_temperature_counts_the_real_degrees_of_freedom(ensemble, dof):
    from ase.units import kB

    from ase_phisnet.interface.md import degrees_of_freedom, initialize_velocities

    atoms = molecule("H2O")
    assert degrees_of_freedom(atoms, ensemble) == dof
    assert degrees_of_freedom(molecule("CO2"), "nve") == 4
    initialize_velocities(atoms, 300.0, seed=0, ensemble=ensemble)
    assert 2 * atoms.get_kinetic_energy() / (dof * kB) == pytest.approx(300.0)
    assert np.allclose(atoms.get_momenta().sum(0), 0, atol=1e-12)
