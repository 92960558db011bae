"""Smoke tests of md_examples/: every script runs with tiny settings on a shipped potential
(water's, ethanol's for NVT ethanol) and writes its JSON and PNGs with finite, sane numbers.

The scripts are loaded from their files and their ``main(argv)`` is called in this process (one
import of torch and PySCF for all); their shared helpers, md_examples/_common.py, are imported
as ``_common`` from that folder, as ``python md_examples/x.py`` does. Physics checks that hold
for any smooth potential: finite differences with a small displacement, phonopy and the analytic
Hessian give the same frequencies (all three come from one potential); after BFGS the analytic
frequencies are real.
"""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.calculator import CalculatorSetupError

EXAMPLES = Path(__file__).resolve().parent.parent / "md_examples"
if str(EXAMPLES) not in sys.path:
    sys.path.append(str(EXAMPLES))  # where the scripts find ``import _common``
WATER = ["--molecule", "H2O", "--model", "water-pbe-def2svp"]
#: Frequency agreement (cm^-1) of finite differences with the analytic Hessian, at a step of
#: FINITE_DIFFERENCE_STEP_ANG. The shipped water potential's curvature varies by ~1 % over
#: 0.004 Å (small-scale structure of its learned surface, ~µeV in energy), so steps of
#: 0.002-0.01 Å give finite-difference frequencies up to 38 cm^-1 off its analytic Hessian
#: (measured; md_examples/README.md), while 1e-4 Å agrees to < 1 cm^-1.
SAME_POTENTIAL_TOLERANCE_CM = 2.0
FINITE_DIFFERENCE_STEP_ANG = "0.0001"


def run_example(name: str, out: Path, *options: str) -> dict:
    spec = importlib.util.spec_from_file_location(f"md_examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main([*options, "--out", str(out)])
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    return results


def assert_pngs(out: Path, *names: str) -> None:
    for name in names:
        assert (out / name).stat().st_size > 5000, name


def all_finite(values) -> bool:
    return bool(np.all(np.isfinite(np.asarray(values, dtype=float))))


def test_nve_water(tmp_path):
    results = run_example("nve_water", tmp_path, *WATER, "--steps", "40", "--log-interval", "1",
                          "--no-progress")
    assert_pngs(tmp_path, "energy_conservation.png", "md_overview.png")
    assert (tmp_path / "nve.traj").exists() and np.loadtxt(tmp_path / "nve.log").shape == (41, 7)
    assert results["steps"] == 40 and results["simulated_ps"] == pytest.approx(0.02)
    # Kinetic energy ~ 0.01-0.04 eV/atom; Verlet's total energy is conserved far better: a line
    # fitted to 20 fs of Verlet's ~5e-5 eV/atom oscillation has a slope of ~1e-3 eV/atom/ps
    # (measured 1.5e-3; 10 ps runs drift ~1e-7).
    assert abs(results["energy_drift_ev_per_atom_per_ps"]) < 5e-3
    assert 0 <= results["energy_fluctuation_ev_per_atom"] < 1e-3


def test_nvt_ethanol_with_its_shipped_potential(tmp_path):
    results = run_example("nvt_ethanol", tmp_path, "--steps", "20", "--log-interval", "2",
                          "--no-progress")
    assert results["model"] == "ethanol-pbe-def2svp"
    assert_pngs(tmp_path, "nvt_observables.png")
    assert results["ensemble"] == "nvt" and 0 < results["temperature_k"]["mean"] < 2000
    assert results["homo_lumo_gap_ev"]["mean"] > 0
    (oxygen_charge,) = results["oxygen_mulliken_charge_e"].values()
    assert math.isfinite(oxygen_charge["mean"]) and -2 < oxygen_charge["mean"] < 0
    # 10 fs from the equilibrium geometry at 300 K stay well inside the data's ranges
    domain = results["training_domain"]
    assert domain["frames"] == 11 and domain["largest_excursion_ang"] < 0.1


def test_a_missing_potential_is_a_clear_error(tmp_path):
    with pytest.raises(CalculatorSetupError, match="shipped"):
        run_example("nvt_ethanol", tmp_path, "--model", "no-such-potential", "--steps", "1")
    # From the command line: one line naming the problem, no traceback.
    command = [sys.executable, str(EXAMPLES / "nvt_ethanol.py"), "--model", "no-such-potential",
               "--out", str(tmp_path)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert finished.returncode != 0
    assert "error: cannot load model 'no-such-potential'" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_no_shipped_potential_for_the_molecule_is_a_clear_error(tmp_path):
    """Without --model the default comes from ase_phisnet.interface.potentials.default_potential; run from
    another folder, so the script finds _common.py beside itself."""
    command = [sys.executable, str(EXAMPLES / "optimize.py"), "--molecule", "CH4", "--no-pyscf",
               "--out", str(tmp_path)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False,
                              cwd=tmp_path)
    assert finished.returncode != 0
    assert "error: no shipped potential for CH4" in finished.stderr
    assert "water-pbe-def2svp" in finished.stderr and "Traceback" not in finished.stderr


def test_optimize_without_pyscf(tmp_path):
    results = run_example("optimize", tmp_path, *WATER, "--distortion-ang", "0.05", "--no-pyscf")
    assert_pngs(tmp_path, "bfgs_convergence.png")
    run = results["optimizations"]["PhiSNet"]
    assert run["converged"] and run["fmax_ev_per_ang"][-1] < 0.01
    bonds = [row["PhiSNet"] for row in results["geometry"] if row["kind"] == "bond"]
    angles = [row["PhiSNet"] for row in results["geometry"] if row["kind"] == "angle"]
    assert len(bonds) == 2 and len(angles) == 1  # O-H twice, H-O-H
    assert all(0.8 < b < 1.2 for b in bonds) and 80 < angles[0] < 130


def test_vibrations_ase_finite_differences_match_the_analytic_hessian(tmp_path):
    results = run_example("vibrations_ase", tmp_path, *WATER, "--delta-ang",
                          FINITE_DIFFERENCE_STEP_ANG, "--no-pyscf")
    assert_pngs(tmp_path, "frequencies.png")
    analytic = np.array(results["frequencies_cm"]["analytic Hessian"])
    finite = np.array(results["frequencies_cm"]["finite differences"])
    assert analytic.shape == (3,) and np.all(analytic > 0)  # a minimum
    np.testing.assert_allclose(finite, analytic, atol=SAME_POTENTIAL_TOLERANCE_CM)
    (free_energy,) = results["gibbs_free_energy_ev"].values()
    (correction,) = results["gibbs_minus_potential_energy_ev"].values()
    assert math.isfinite(free_energy) and -1 < correction < 1  # ZPE + H_thermal - TS, eV


@pytest.mark.slow
def test_vibrations_ase_against_pyscf(tmp_path):
    """The one PySCF comparison (~30 s): PBE/def2-SVP water optimized and its analytic
    frequencies, next to the potential's."""
    results = run_example("vibrations_ase", tmp_path, *WATER, "--fmax", "0.005")
    pyscf = np.array(results["frequencies_cm"]["PySCF PBE/def2-svp"])
    # PBE/def2-SVP water: bend ~1610, stretches ~3690 and ~3790 cm^-1.
    np.testing.assert_allclose(pyscf, [1608, 3690, 3790], atol=25)
    assert results["optimizations"]["PySCF"]["converged"]
    assert all_finite(list(results["mean_abs_difference_cm"].values()))
    # the water target: harmonic frequencies within 10 cm^-1 of PySCF's (measured 0.5)
    assert results["mean_abs_difference_cm"]["analytic Hessian vs PySCF PBE/def2-svp"] < 10
    assert set(results["gibbs_free_energy_ev"]) == {"PhiSNet", "PySCF"}

    # A second run reuses the PySCF reference kept beside the results, unless told otherwise.
    kept = json.loads((tmp_path / "pyscf_reference.json").read_text())
    kept["frequencies_cm"] = [1.0, 2.0, 3.0]  # marked, to see whether it is read back
    (tmp_path / "pyscf_reference.json").write_text(json.dumps(kept))
    again = run_example("vibrations_ase", tmp_path, *WATER, "--fmax", "0.005")
    assert again["frequencies_cm"]["PySCF PBE/def2-svp"] == [1.0, 2.0, 3.0]


def test_vibrations_phonopy_matches_ase_and_the_analytic_hessian(tmp_path):
    results = run_example("vibrations_phonopy", tmp_path, *WATER, "--delta-ang",
                          FINITE_DIFFERENCE_STEP_ANG)
    assert_pngs(tmp_path, "frequencies.png")
    frequencies = {k: np.array(v) for k, v in results["frequencies_cm"].items()}
    assert np.all(frequencies["analytic Hessian"] > 0)
    for name in ("ASE finite differences", "phonopy"):
        np.testing.assert_allclose(frequencies[name], frequencies["analytic Hessian"],
                                   atol=SAME_POTENTIAL_TOLERANCE_CM, err_msg=name)
    assert results["phonopy_displaced_cells"] <= 18  # symmetry: fewer than ASE's 18


def test_ir_spectrum(tmp_path):
    results = run_example("ir_spectrum", tmp_path, *WATER, "--width-cm", "30")
    assert_pngs(tmp_path, "ir_spectrum.png")
    intensities = np.array(results["intensities_km_per_mol"])
    assert intensities.shape == (3,) and all_finite(intensities) and np.all(intensities >= 0)
    assert intensities.sum() > 0 and results["imaginary_modes"] == 0
    np.testing.assert_allclose(intensities,
                               42.255 * np.array(results["intensities_debye2_per_ang2_amu"]))
    assert results["static_dipole_debye"] > 0
