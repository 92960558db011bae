"""Exploring MD runs that stop where a potential leaves its data (ase_phisnet.interface.explore)."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes

from ase_phisnet.core.domain import TrainingDomain
from ase_phisnet.interface.explore import ExploreSettings, explore


class _Harmonic(Calculator):
    """E = k/2 sum |r_a - r_a^0|^2 (eV, Å): k > 0 holds the atoms near the start, k < 0 pushes
    them away, k = 0 lets them fly. ``fail_after`` calls raise CalculationFailed."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, reference_ang, k_ev_per_ang2, fail_after=None):
        super().__init__()
        self.reference = np.array(reference_ang)
        self.k = k_ev_per_ang2
        self.fail_after = fail_after
        self.calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise CalculationFailed("no HOMO-LUMO gap")
        displacement = self.atoms.positions - self.reference
        self.results = {"energy": 0.5 * self.k * float((displacement**2).sum()),
                        "forces": -self.k * displacement}


def _water_envelope(spread_ang):
    water = molecule("H2O")
    rng = np.random.default_rng(0)
    geometries = water.positions + rng.normal(scale=spread_ang, size=(200, 3, 3))
    return water, TrainingDomain.from_geometries(water.numbers, geometries)


def test_free_flight_leaves_the_data_and_keeps_the_frames_before():
    """No forces: the atoms fly apart at 300 K, every run stops 'outside' and keeps the last
    frames up to the one that left, which alone lies beyond the tolerance."""
    water, envelope = _water_envelope(0.05)
    settings = ExploreSettings(runs=3, steps=5000, check_interval=2, frames_per_run=4,
                               distance_tolerance_ang=0.05, seed=7)
    runs = explore(water, _Harmonic(water.positions, 0.0), envelope, settings, progress=False)
    assert [run.seed for run in runs] == [7, 8, 9]
    for run in runs:
        assert run.stop_reason == "outside" and run.steps_run < 5000
        assert run.steps_run % 2 == 0 and len(run.frames) == min(4, run.steps_run // 2)
        excursions = [envelope.excursion_ang(f.numbers, f.positions)[0] for f in run.frames]
        assert excursions[-1] > 0.05 and max(excursions[:-1]) <= 0.05
    again = explore(water, _Harmonic(water.positions, 0.0), envelope, settings, progress=False)
    # reproducible by seed: the same run twice, compared to float64 rounding (1e-12 Å) so that
    # a change of summation order (threads) cannot fail it; a different seed moves atoms ~0.1 Å
    np.testing.assert_allclose(runs[1].frames[-1].positions, again[1].frames[-1].positions,
                               rtol=0, atol=1e-12)


def test_a_potential_that_holds_the_atoms_completes_with_no_frames():
    water, envelope = _water_envelope(0.1)
    settings = ExploreSettings(runs=2, steps=200, distance_tolerance_ang=0.05)
    runs = explore(water, _Harmonic(water.positions, 50.0), envelope, settings, progress=False)
    assert all(run.stop_reason == "completed" and run.steps_run == 200 and not run.frames
               for run in runs)


def test_a_potential_that_falls_away_heats_the_run():
    """An inverted well releases energy: the temperature passes twice the thermostat's while
    the (wide) distance tolerance is not yet reached."""
    water, envelope = _water_envelope(0.02)
    settings = ExploreSettings(runs=1, steps=5000, distance_tolerance_ang=10.0)
    (run,) = explore(water, _Harmonic(water.positions, -20.0), envelope, settings,
                     progress=False)
    assert run.stop_reason == "hot" and run.max_temperature_k > 600 and run.frames


def test_a_failing_calculator_stops_the_run_and_keeps_what_came_before():
    water, envelope = _water_envelope(0.1)
    settings = ExploreSettings(runs=1, steps=500, check_interval=5, frames_per_run=3)
    (run,) = explore(water, _Harmonic(water.positions, 50.0, fail_after=40), envelope,
                     settings, progress=False)
    assert run.stop_reason == "failed" and "gap" in run.detail and len(run.frames) == 3


def test_a_start_outside_the_data_is_refused():
    water, envelope = _water_envelope(0.01)
    far = Atoms("OH2", positions=water.positions * 1.5)
    with pytest.raises(ValueError, match="start geometry"):
        explore(far, _Harmonic(far.positions, 0.0), envelope, ExploreSettings(runs=1))


@pytest.mark.parametrize("kwargs,message", [
    ({"runs": 0}, "runs"), ({"frames_per_run": 0}, "frames_per_run"),
    ({"distance_tolerance_ang": -1.0}, "distance_tolerance_ang"),
    ({"max_temperature_factor": 1.0}, "max_temperature_factor"),
    ({"timestep_fs": 0.0}, "timestep_fs"),
])
def test_explore_settings_validate(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExploreSettings(**kwargs)
