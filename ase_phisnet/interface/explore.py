"""Where a learned potential goes wrong: short MD runs, each stopped when it leaves the data.

A potential trained on thermal geometries is only as good as its data's reach. MD with it finds
the coordinates the data miss: where the learned surface is too soft or falls away, a mode
heats up and the trajectory runs off. :func:`explore` runs several short Langevin trajectories
(different seeds) and stops each at the first sign of this:

* ``outside``: an interatomic distance leaves the range its element pair has in the data, or
  an atom's k-th nearest-neighbour distance its element's range (the
  :class:`~ase_phisnet.core.domain.TrainingDomain` that the calculator checks too), by more
  than ``distance_tolerance_ang``;
* ``hot``: the instantaneous temperature exceeds ``max_temperature_factor`` times the
  thermostat's. With ``f`` degrees of freedom, ``T`` fluctuates in equilibrium by a relative
  ``sqrt(2 / f)`` (0.29 for ethanol, ``f = 24``), so twice the target is a > 3 sigma event;
* ``failed``: the calculator gives up (e.g. the predicted HOMO-LUMO gap closed).

The last frames of each stopped run, the stop frame included, lie where the data end and the
model has gone wrong: label them with the reference (``ase-phisnet generate --sampler file``)
and train on them. This is active learning by failure (DP-GEN picks frames by the disagreement
of a committee of models instead; one model and a physical stop rule need no committee).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ase import Atoms
from ase.calculators.calculator import CalculationFailed

from ase_phisnet.core.domain import TrainingDomain
from ase_phisnet.interface.md import (
    MDSettings,
    initialize_velocities,
    make_integrator,
    temperature_k,
)

STOP_REASONS = ("outside", "hot", "failed", "completed")


@dataclass(frozen=True)
class ExploreSettings:
    """How the exploring trajectories run and when they stop.

    Attributes:
        runs: Number of trajectories; run ``k`` uses seed ``seed + k`` for its velocities and
            thermostat noise.
        steps: Largest number of MD steps per trajectory.
        temperature_k: Thermostat and initial-velocity temperature (K).
        timestep_fs: MD time step (fs).
        friction_per_fs: Langevin friction (1/fs).
        check_interval: Steps between checks of the stop rules (and between kept frames).
        frames_per_run: How many checked frames to keep from a stopped run: the stop frame and
            the ones before it.
        distance_tolerance_ang: How far (Å) a distance may leave its data range.
        max_temperature_factor: Stop when ``T > max_temperature_factor * temperature_k``.
        seed: Seed of the first run.
    """

    runs: int = 8
    steps: int = 2000
    temperature_k: float = 300.0
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.01
    check_interval: int = 5
    frames_per_run: int = 10
    distance_tolerance_ang: float = 0.05
    max_temperature_factor: float = 2.0
    seed: int = 0

    def __post_init__(self):
        for name in ("runs", "steps", "check_interval", "frames_per_run"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.distance_tolerance_ang < 0:
            raise ValueError(f"distance_tolerance_ang must be >= 0, got "
                             f"{self.distance_tolerance_ang}")
        if self.max_temperature_factor <= 1:
            raise ValueError(f"max_temperature_factor must be > 1, got "
                             f"{self.max_temperature_factor}")
        MDSettings(ensemble="nvt", temperature_k=self.temperature_k, timestep_fs=self.timestep_fs,
                   friction_per_fs=self.friction_per_fs)  # same checks as MD itself


@dataclass
class ExploreRun:
    """One trajectory: where and why it stopped (``stop_reason``, one of :data:`STOP_REASONS`;
    ``detail`` in words), and the frames kept from it (none when it completed)."""

    seed: int
    steps_run: int
    stop_reason: str
    detail: str
    max_temperature_k: float
    frames: list[Atoms] = field(default_factory=list)


def explore(atoms: Atoms, calculator, domain: TrainingDomain, settings: ExploreSettings,
            progress: bool = True) -> list[ExploreRun]:
    """Run ``settings.runs`` Langevin trajectories of ``atoms`` on ``calculator`` from the same
    start, each until a stop rule fires (module docstring) or ``settings.steps`` have run.

    ``domain``: the data's distance ranges (e.g. the model's recorded domain,
    or ``TrainingDomain.from_geometries`` of data files). The start geometry must lie inside
    it. Returns one :class:`ExploreRun` per trajectory;
    completed runs keep no frames.
    """
    from tqdm.auto import tqdm

    start_excursion, _ = domain.excursion_ang(atoms.numbers, atoms.positions)
    if start_excursion > settings.distance_tolerance_ang:
        raise ValueError(f"the start geometry is already {start_excursion:.3f} Å outside the "
                         "data's distance ranges; start from a geometry the data cover")
    results = []
    bar = tqdm(total=settings.runs, unit="run", desc="explore", disable=not progress)
    for k in range(settings.runs):
        results.append(_explore_one(atoms, calculator, domain, settings, settings.seed + k))
        bar.update(1)
        bar.set_postfix_str(f"last: {results[-1].stop_reason} at {results[-1].steps_run}")
    bar.close()
    return results


def _explore_one(start: Atoms, calculator, domain: TrainingDomain, settings: ExploreSettings,
                 seed: int) -> ExploreRun:
    atoms = start.copy()
    atoms.calc = calculator
    md = MDSettings(ensemble="nvt", temperature_k=settings.temperature_k,
                    timestep_fs=settings.timestep_fs, friction_per_fs=settings.friction_per_fs,
                    steps=settings.steps, seed=seed)
    initialize_velocities(atoms, md.temperature_k, seed, md.ensemble)
    dynamics = make_integrator(atoms, md)
    recent: list[Atoms] = []
    max_temperature = 0.0
    reason, detail = "completed", ""
    while dynamics.nsteps < settings.steps:
        try:
            dynamics.run(settings.check_interval)
        except CalculationFailed as error:
            reason, detail = "failed", str(error)
            break
        recent = (recent + [_bare_copy(atoms)])[-settings.frames_per_run:]
        temperature = temperature_k(atoms, md.ensemble)
        max_temperature = max(max_temperature, temperature)
        outside = domain.violations(atoms.numbers, atoms.positions,
                                    settings.distance_tolerance_ang)
        if outside:
            reason, detail = "outside", "; ".join(outside)
            break
        if temperature > settings.max_temperature_factor * settings.temperature_k:
            reason, detail = "hot", f"T = {temperature:.0f} K"
            break
    return ExploreRun(seed=seed, steps_run=int(dynamics.nsteps), stop_reason=reason,
                      detail=detail, max_temperature_k=max_temperature,
                      frames=[] if reason == "completed" else recent)


def _bare_copy(atoms: Atoms) -> Atoms:
    return Atoms(numbers=atoms.numbers, positions=atoms.positions.copy())
