"""Molecular dynamics with a PhiSNet potential: ASE integrators, a per-step log, a summary.

``run_md`` drives ASE's velocity Verlet (NVE) or Langevin (NVT) integrator on any calculator
that implements :class:`~ase_phisnet.interface.calculator.PhiSNetCalculator`'s ``get_homo_lumo``,
writes an ASE trajectory and a whitespace-separated log, and returns an :class:`MDSummary`.

Log columns (one row per logged step, ASE units)::

    step  time_fs  epot_ev  ekin_ev  etot_ev  temperature_k  homo_lumo_gap_ev

Temperature: ``T = 2 E_kin / (f k_B)`` with ``f`` the degrees of freedom the run actually has:
``3N - 6`` (``3N - 5`` linear) in NVE, where the initial velocities carry no net momentum or
angular momentum and both are conserved, and ``3N - 3`` in NVT, where only the centre of mass
is fixed. The initial velocities are rescaled to exactly ``temperature_k`` on that count.

Energy drift (NVE): the slope of a least-squares line through the total energy against time,
per atom, in eV/atom/ps; the fluctuation is the standard deviation of the total energy about
that line, per atom.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from ase import Atoms, units
from ase.constraints import FixCom
from ase.io import Trajectory
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet

Ensemble = Literal["nve", "nvt"]
LOG_COLUMNS = ("step", "time_fs", "epot_ev", "ekin_ev", "etot_ev", "temperature_k",
               "homo_lumo_gap_ev")


@dataclass(frozen=True)
class MDSettings:
    """What to integrate and how.

    ``temperature_k``: initial Maxwell–Boltzmann temperature (centre of mass and rotation
    removed); for NVT also the thermostat's. ``friction_per_fs``: Langevin friction (NVT only);
    the thermostat's random kicks would move the centre of mass, so NVT adds ASE's ``FixCom``
    constraint to the atoms (NVE conserves momentum by itself).
    ``log_interval``: steps between log rows and trajectory frames.
    """

    ensemble: Ensemble = "nve"
    temperature_k: float = 300.0
    timestep_fs: float = 0.5
    steps: int = 1000
    friction_per_fs: float = 0.01
    log_interval: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.ensemble not in ("nve", "nvt"):
            raise ValueError(f"ensemble must be 'nve' or 'nvt', got {self.ensemble!r}")
        for name in ("timestep_fs", "friction_per_fs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.temperature_k < 0:
            raise ValueError(f"temperature_k must be >= 0, got {self.temperature_k}")
        if self.steps < 1 or self.log_interval < 1:
            raise ValueError("steps and log_interval must be >= 1")


@dataclass
class MDSummary:
    """Numbers that describe a finished run (ASE units, per-atom quantities per atom)."""

    ensemble: str
    n_atoms: int
    steps: int
    simulated_ps: float
    wall_time_s: float
    steps_per_s: float
    mean_temperature_k: float
    mean_homo_lumo_gap_ev: float
    min_homo_lumo_gap_ev: float
    energy_drift_ev_per_atom_per_ps: float
    energy_fluctuation_ev_per_atom: float

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        drift = (f"total-energy drift {self.energy_drift_ev_per_atom_per_ps:.2e} eV/atom/ps, "
                 f"fluctuation {self.energy_fluctuation_ev_per_atom:.2e} eV/atom")
        lines = [
            f"{self.ensemble.upper()}: {self.steps} steps, {self.simulated_ps:.3f} ps of "
            f"{self.n_atoms} atoms in {self.wall_time_s:.1f} s ({self.steps_per_s:.1f} steps/s)",
            f"mean temperature {self.mean_temperature_k:.1f} K; HOMO-LUMO gap mean "
            f"{self.mean_homo_lumo_gap_ev:.3f} eV, min {self.min_homo_lumo_gap_ev:.3f} eV",
        ]
        if self.ensemble == "nve":  # a thermostat exchanges energy: no conservation to report
            lines.append(drift)
        return "\n".join(lines)


def energy_drift(time_ps: np.ndarray, total_energy_ev: np.ndarray, n_atoms: int):
    """``(slope eV/atom/ps, residual std eV/atom)`` of a line fitted to ``E_tot(t)``."""
    if len(time_ps) < 2:
        return 0.0, 0.0
    slope, intercept = np.polyfit(time_ps, total_energy_ev, 1)
    residual = total_energy_ev - (slope * time_ps + intercept)
    return float(slope / n_atoms), float(residual.std() / n_atoms)


def degrees_of_freedom(atoms: Atoms, ensemble: Ensemble) -> int:
    """Kinetic degrees of freedom: ``3N - 3`` (NVT, centre of mass fixed) or ``3N - 6`` /
    ``3N - 5`` for linear molecules (NVE, no net translation or rotation)."""
    n = len(atoms)
    if ensemble == "nvt":
        return max(3 * n - 3, 1)
    if n == 1:
        return 1
    centred = atoms.positions - atoms.get_center_of_mass()
    linear = n == 2 or np.linalg.svd(centred, compute_uv=False)[1] < 1e-3
    return max(3 * n - (5 if linear else 6), 1)


def temperature_k(atoms: Atoms, ensemble: Ensemble) -> float:
    """``2 E_kin / (f k_B)`` in K with ``f`` from :func:`degrees_of_freedom`."""
    return 2 * atoms.get_kinetic_energy() / (degrees_of_freedom(atoms, ensemble) * units.kB)


def initialize_velocities(atoms: Atoms, temperature: float, seed: int,
                          ensemble: Ensemble = "nve") -> None:
    """Maxwell–Boltzmann velocities without net translation or rotation, rescaled so that
    :func:`temperature_k` is exactly ``temperature`` (K)."""
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    if len(atoms) > 1:
        ZeroRotation(atoms)
    current = temperature_k(atoms, ensemble)
    if current > 0:
        atoms.set_momenta(atoms.get_momenta() * np.sqrt(temperature / current))


def make_integrator(atoms: Atoms, settings: MDSettings):
    """ASE's velocity Verlet (NVE) or Langevin (NVT) for ``settings``."""
    timestep = settings.timestep_fs * units.fs
    if settings.ensemble == "nve":
        return VelocityVerlet(atoms, timestep=timestep)
    if not any(isinstance(c, FixCom) for c in atoms.constraints):
        atoms.set_constraint([*atoms.constraints, FixCom()])
    return Langevin(atoms, timestep=timestep, temperature_K=settings.temperature_k,
                    friction=settings.friction_per_fs / units.fs, fixcm=False,
                    rng=np.random.default_rng(settings.seed + 1))


def run_md(atoms: Atoms, settings: MDSettings, trajectory_path=None, log_path=None,
           progress: bool = True, initialize: bool = True) -> tuple[MDSummary, np.ndarray]:
    """Integrate ``atoms`` (with its calculator attached) as ``settings`` say.

    Returns the summary and the log as an array with columns :data:`LOG_COLUMNS`; writes the
    trajectory (every ``log_interval`` steps, ASE ``.traj``) and the log when paths are given.
    ``initialize=False`` keeps the atoms' velocities.
    """
    if atoms.calc is None:
        raise ValueError("attach a calculator to the atoms first")
    if initialize:
        initialize_velocities(atoms, settings.temperature_k, settings.seed, settings.ensemble)
    dynamics = make_integrator(atoms, settings)
    rows = []
    n_atoms = len(atoms)
    kinetic_to_kelvin = 2 / (degrees_of_freedom(atoms, settings.ensemble) * units.kB)

    def record():
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        homo, lumo = atoms.calc.get_homo_lumo()
        rows.append((dynamics.nsteps, dynamics.nsteps * settings.timestep_fs, epot, ekin,
                     epot + ekin, ekin * kinetic_to_kelvin, lumo - homo))

    dynamics.attach(record, interval=settings.log_interval)
    writer = None
    if trajectory_path is not None:
        writer = Trajectory(str(trajectory_path), "w", atoms)
        dynamics.attach(writer.write, interval=settings.log_interval)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.steps, unit="step", desc=f"MD {settings.ensemble.upper()}")
        dynamics.attach(lambda: bar.update(min(1, settings.steps - bar.n)), interval=1)
    start = time.perf_counter()
    try:
        dynamics.run(settings.steps)
    finally:
        if writer is not None:
            writer.close()
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - start
    log = np.array(rows)
    if log_path is not None:
        np.savetxt(log_path, log, fmt=["%d", "%.2f", "%.8f", "%.8f", "%.8f", "%.2f", "%.5f"],
                   header=" ".join(LOG_COLUMNS))
    drift, fluctuation = energy_drift(log[:, 1] / 1000.0, log[:, 4], n_atoms)
    summary = MDSummary(
        ensemble=settings.ensemble, n_atoms=n_atoms, steps=settings.steps,
        simulated_ps=settings.steps * settings.timestep_fs / 1000.0, wall_time_s=wall,
        steps_per_s=settings.steps / wall, mean_temperature_k=float(log[:, 5].mean()),
        mean_homo_lumo_gap_ev=float(log[:, 6].mean()),
        min_homo_lumo_gap_ev=float(log[:, 6].min()),
        energy_drift_ev_per_atom_per_ps=drift, energy_fluctuation_ev_per_atom=fluctuation,
    )
    return summary, log


def plot_log(log: np.ndarray, path, title: str = "") -> None:
    """Total/potential energy, temperature and HOMO–LUMO gap against time, as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    time_ps = log[:, 1] / 1000.0
    figure = Figure(figsize=(7, 7))
    axes = figure.subplots(3, 1, sharex=True)
    axes[0].plot(time_ps, log[:, 4] - log[0, 4], label="total")
    axes[0].plot(time_ps, log[:, 2] - log[0, 4], label="potential", alpha=0.6)
    axes[0].set_ylabel("E - E_tot(0) (eV)")
    axes[0].legend()
    axes[1].plot(time_ps, log[:, 5])
    axes[1].set_ylabel("T (K)")
    axes[2].plot(time_ps, log[:, 6])
    axes[2].set_ylabel("HOMO-LUMO gap (eV)")
    axes[2].set_xlabel("time (ps)")
    if title:
        axes[0].set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
