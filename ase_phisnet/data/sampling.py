"""Thermal geometries of a molecule for reference data.

Two samplers driven by a cheap calculator (GFN2-xTB through tblite when it is installed,
otherwise a cheap PySCF level), and one that reads geometries:

* ``langevin``: ASE Langevin MD at temperature ``T``; after equilibration one snapshot every
  ``stride`` steps.
* ``normal-modes``: relax to a minimum, build the harmonic Hessian, and draw independent
  displacements along the normal modes from the harmonic Boltzmann distribution,
  ``q_k ~ N(0, k_B T / lambda_k)`` in mass-weighted coordinates (``lambda_k`` the eigenvalues of
  the mass-weighted Hessian), or its quantum version with ``k_B T`` replaced by
  ``(hbar omega_k / 2) coth(hbar omega_k / 2 k_B T)`` (zero-point spread included).
* ``file``: the frames of a structure file that ASE reads (e.g. those
  ``ase-phisnet explore`` found where a model fails), ``n`` of them evenly spaced.

Either can then stretch or compress one bond per geometry (``bond_stretch``), open or close one
bond angle per geometry (``angle_scale``) and displace every atom by Gaussian noise
(``rattle_ang``): thermal sampling of a stiff bond or angle at any sensible
temperature stays close to equilibrium, but a learned potential is asked about longer and shorter
bonds and wider and narrower angles as soon as its own errors heat a mode in MD. Data that reach
there teach it the walls (the same reason DFTB fits its repulsive energy along bond scans, and
rattled structures enter many machine-learned potentials' training sets).

Positions returned here are in Å (ASE's unit); callers convert to Bohr.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Literal

import numpy as np
from ase import Atoms, units

from ase_phisnet.core.errors import UnknownMoleculeError

SamplerKind = Literal["langevin", "normal-modes", "file"]
CheapCalculatorKind = Literal["auto", "gfn2", "pyscf"]
SAMPLER_KINDS = ("langevin", "normal-modes", "file")
CHEAP_CALCULATOR_KINDS = ("auto", "gfn2", "pyscf")


@dataclass(frozen=True)
class SamplerConfig:
    """How geometries are drawn.

    Attributes:
        kind: ``"langevin"``, ``"normal-modes"`` or ``"file"``.
        temperatures_k: One or more temperatures in K; the geometries are split evenly.
        seed: Seed of every random number used (velocities, Langevin noise, mode amplitudes).
        calculator: Cheap calculator: ``"gfn2"`` (tblite), ``"pyscf"`` (HF/STO-3G) or ``"auto"``.
        timestep_fs: Langevin time step in fs.
        friction_per_fs: Langevin friction in 1/fs.
        equilibration_steps: Langevin steps discarded before the first snapshot.
        stride: Langevin steps between snapshots.
        quantum: Normal-mode sampling with zero-point spread (quantum harmonic oscillator).
        bond_stretch: ``(low, high)``: in every geometry, one bond of the molecule (drawn
            uniformly from its covalent bonds) is scaled to ``U(low, high)`` times its sampled
            length by moving the fragment on one side of it (:func:`stretch_one_bond`); ``None``
            leaves the geometries thermal.
        angle_scale: ``(low, high)``: in every geometry, one angle between two covalent bonds
            of an atom (drawn uniformly among those not in a ring) is scaled to ``U(low, high)``
            times its sampled value (at most 179°) by rotating the fragment on one side of it
            (:func:`scale_angle`); ``None`` leaves the angles thermal. Applied after
            ``bond_stretch``.
        rattle_ang: Standard deviation (Å) of independent Gaussian displacements of every
            Cartesian coordinate, added last; ``0`` adds none.
        geometries_path: Structure file read by the ``"file"`` sampler (all its frames; the
            atoms in the molecule's order).
    """

    kind: SamplerKind = "langevin"
    temperatures_k: tuple[float, ...] = (300.0,)
    seed: int = 0
    calculator: CheapCalculatorKind = "auto"
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.01
    equilibration_steps: int = 400
    stride: int = 20
    quantum: bool = False
    bond_stretch: tuple[float, float] | None = None
    angle_scale: tuple[float, float] | None = None
    rattle_ang: float = 0.0
    geometries_path: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "temperatures_k", tuple(float(t) for t in self.temperatures_k))
        for name in ("bond_stretch", "angle_scale"):  # factor ranges (low, high)
            value = getattr(self, name)
            if value is None:
                continue
            value = tuple(float(f) for f in value)
            object.__setattr__(self, name, value)
            if len(value) != 2 or not 0 < value[0] <= value[1]:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got "
                                 f"{value}")
        if self.rattle_ang < 0:
            raise ValueError(f"rattle_ang must be >= 0, got {self.rattle_ang}")
        if self.kind not in SAMPLER_KINDS:
            raise ValueError(f"unknown sampler {self.kind!r}; choose one of {SAMPLER_KINDS}")
        if (self.kind == "file") != (self.geometries_path is not None):
            raise ValueError("the 'file' sampler, and only it, needs geometries_path")
        if self.calculator not in CHEAP_CALCULATOR_KINDS:
            raise ValueError(
                f"unknown sampling calculator {self.calculator!r}; "
                f"choose one of {CHEAP_CALCULATOR_KINDS}"
            )
        if not self.temperatures_k or min(self.temperatures_k) <= 0:
            raise ValueError(f"temperatures must be positive, got {self.temperatures_k}")
        if self.timestep_fs <= 0 or self.friction_per_fs < 0:
            raise ValueError("timestep_fs must be > 0 and friction_per_fs >= 0")
        if self.stride < 1 or self.equilibration_steps < 0:
            raise ValueError("stride must be >= 1 and equilibration_steps >= 0")


def resolve_molecule(name_or_path: str) -> Atoms:
    """An ``Atoms`` from an ASE collection name (``"H2O"``, ``"CH3CH2OH"``) or a structure file."""
    from ase.build import molecule
    from ase.collections import g2

    if os.path.exists(name_or_path):
        atoms = _read_structure_file(name_or_path, index=-1)
        atoms.pbc = False
        atoms.cell = None
        return atoms
    try:
        return molecule(name_or_path)
    except KeyError:
        close = [name for name in g2.names if name.lower() == name_or_path.lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownMoleculeError(
            f"{name_or_path!r} is neither a file nor a molecule of ASE's g2 collection{hint}; "
            "examples: H2O, NH3, CH4, CH3CH2OH, C6H6"
        ) from None


def _read_structure_file(path, index):
    """``ase.io.read(path, index)``; an unreadable file is an :class:`UnknownMoleculeError`."""
    from ase.io import read

    try:
        return read(path, index=index)
    except Exception as error:
        raise UnknownMoleculeError(f"cannot read structure file {path!r}: {error}") from None


def tblite_available() -> bool:
    try:
        import tblite.ase  # noqa: F401
    except ImportError:
        return False
    return True


def make_cheap_calculator(kind: CheapCalculatorKind = "auto"):
    """GFN2-xTB via tblite (``"gfn2"``, or ``"auto"`` when installed), else PySCF HF/STO-3G."""
    if kind == "gfn2" or (kind == "auto" and tblite_available()):
        if not tblite_available():
            raise ImportError("the gfn2 sampling calculator needs tblite: pip install tblite")
        from tblite.ase import TBLite

        return TBLite(method="GFN2-xTB", verbosity=0)
    from ase_phisnet.data.pyscf_calculator import PySCFCalculator
    from ase_phisnet.data.reference import Theory

    return PySCFCalculator(Theory(xc="hf", basis="sto-3g", conv_tol=1e-8))


def sample_geometries(atoms: Atoms, n: int, config: SamplerConfig, progress=True) -> np.ndarray:
    """``n`` geometries of ``atoms`` as an array (n, N, 3) in Å, split evenly over temperatures.

    The result depends only on ``atoms``, ``n`` and ``config`` (reproducible by seed).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    counts = _counts_per_temperature(n, config)
    if config.kind == "file":
        return _distort(atoms, read_geometries(atoms, n, config.geometries_path), config,
                        len(counts))
    calculator = make_cheap_calculator(config.calculator)
    chunks = []
    for index, (temperature, count) in enumerate(zip(config.temperatures_k, counts)):
        if count == 0:
            continue
        seed = np.random.SeedSequence([config.seed, index])
        rng = np.random.default_rng(seed)
        if config.kind == "langevin":
            chunks.append(
                sample_langevin(atoms, calculator, int(count), temperature, rng, config, progress)
            )
        else:
            chunks.append(
                sample_normal_modes(atoms, calculator, int(count), temperature, rng, config)
            )
    return _distort(atoms, np.concatenate(chunks), config, len(counts))


def _distort(atoms, geometries, config: SamplerConfig, stream: int) -> np.ndarray:
    """Apply ``bond_stretch``, ``angle_scale`` and ``rattle_ang`` (random streams numbered
    from ``stream``)."""
    if config.bond_stretch is not None:
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, stream]))
        geometries = np.stack([stretch_one_bond(atoms, g, config.bond_stretch, rng)
                               for g in geometries])
    if config.angle_scale is not None:
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, stream + 2]))
        geometries = np.stack([scale_one_angle(atoms, g, config.angle_scale, rng)
                               for g in geometries])
    if config.rattle_ang > 0:
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, stream + 1]))
        geometries = geometries + rng.normal(scale=config.rattle_ang, size=geometries.shape)
    return geometries


def read_geometries(atoms: Atoms, n: int, path) -> np.ndarray:
    """``n`` evenly spaced frames (first and last included) of the structure file ``path`` as
    an array (n, N, 3) in Å; every frame must hold ``atoms``' elements in the same order."""
    frames = _read_structure_file(path, index=":")
    if n > len(frames):
        raise ValueError(f"{path} holds {len(frames)} frames; cannot take n = {n}")
    for k, frame in enumerate(frames):
        if not np.array_equal(frame.numbers, atoms.numbers):
            raise ValueError(f"frame {k} of {path} is {frame.get_chemical_formula()} in a "
                             f"different atom order from {atoms.get_chemical_formula()}")
    chosen = np.round(np.linspace(0, len(frames) - 1, n)).astype(int)
    return np.stack([frames[k].positions for k in chosen])


def covalent_bonds(atoms: Atoms, factor: float = 1.2) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, closer than ``factor`` times their covalent radii sum."""
    from ase.data import covalent_radii

    radii = covalent_radii[atoms.numbers]
    distances = atoms.get_all_distances()
    return [(i, j) for i in range(len(atoms)) for j in range(i + 1, len(atoms))
            if distances[i, j] < factor * (radii[i] + radii[j])]


def stretch_one_bond(atoms: Atoms, positions: np.ndarray, factor_range, rng) -> np.ndarray:
    """``positions`` (N, 3) Å with one covalent bond of ``atoms`` (drawn by ``rng``) scaled by
    a factor drawn uniformly from ``factor_range``, as :func:`scale_bond` does it."""
    bonds = covalent_bonds(atoms)
    if not bonds:
        raise ValueError("bond_stretch needs a molecule with at least one covalent bond")
    bond = bonds[rng.integers(len(bonds))]
    return scale_bond(atoms, positions, bond, rng.uniform(*factor_range))


def scale_bond(atoms: Atoms, positions: np.ndarray, bond: tuple[int, int],
               factor: float) -> np.ndarray:
    """``positions`` (N, 3) Å with the bond ``(i, j)`` of ``atoms`` scaled by ``factor``.

    The fragment on ``j``'s side (the part of the bond graph that holds ``j`` once the bond is
    cut) moves rigidly along the bond, so no other bond changes length; for a bond in a ring,
    ``i`` and ``j`` move apart symmetrically instead.
    """
    i, j = bond
    shift = (factor - 1.0) * (positions[j] - positions[i])
    moved = positions.copy()
    side = _fragment(len(atoms), [b for b in covalent_bonds(atoms) if b != (i, j)], j)
    if i in side:  # a ring: both ends move
        moved[i] -= 0.5 * shift
        moved[j] += 0.5 * shift
    else:
        moved[sorted(side)] += shift
    return moved


def bond_angles(atoms: Atoms) -> list[tuple[int, int, int]]:
    """Angles ``(i, j, k)``, ``i < k``, between the covalent bonds ``j–i`` and ``j–k`` of the
    central atom ``j`` that are not in a ring (cutting ``j–k`` separates ``k`` from ``j``)."""
    bonds = covalent_bonds(atoms)
    angles = []
    for j in range(len(atoms)):
        partners = sorted({a if b == j else b for a, b in bonds if j in (a, b)})
        for index, i in enumerate(partners):
            for k in partners[index + 1:]:
                cut = [b for b in bonds if b != (min(j, k), max(j, k))]
                if j not in _fragment(len(atoms), cut, k):
                    angles.append((i, j, k))
    return angles


def scale_one_angle(atoms: Atoms, positions: np.ndarray, factor_range, rng) -> np.ndarray:
    """``positions`` (N, 3) Å with one bond angle of ``atoms`` (drawn by ``rng`` from
    :func:`bond_angles`) scaled by a factor drawn uniformly from ``factor_range``."""
    angles = bond_angles(atoms)
    if not angles:
        raise ValueError("angle_scale needs a molecule with two covalent bonds on one atom "
                         "outside a ring")
    angle = angles[rng.integers(len(angles))]
    return scale_angle(atoms, positions, angle, rng.uniform(*factor_range))


def scale_angle(atoms: Atoms, positions: np.ndarray, angle: tuple[int, int, int],
                factor: float) -> np.ndarray:
    """``positions`` (N, 3) Å with the angle ``i–j–k`` of ``atoms`` scaled by ``factor``
    (capped at 179°).

    The fragment on ``k``'s side of the bond ``j–k`` rotates rigidly about the axis through
    ``j`` normal to the plane of the angle (Rodrigues' formula), so no bond length changes
    (other angles at ``j`` that involve ``k`` change with it); the angle must not be in a ring.
    """
    i, j, k = angle
    a, b = positions[i] - positions[j], positions[k] - positions[j]
    theta = np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0))
    axis = np.cross(a, b)
    if np.linalg.norm(axis) < 1e-10:  # linear: any direction normal to the bond
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 * np.linalg.norm(a)
                        else [0.0, 1.0, 0.0])
    axis = axis / np.linalg.norm(axis)
    delta = min(factor * theta, np.deg2rad(179.0)) - theta
    cos, sin = np.cos(delta), np.sin(delta)
    bonds = [b for b in covalent_bonds(atoms) if b != (min(j, k), max(j, k))]
    side = sorted(_fragment(len(atoms), bonds, k))
    if j in side:
        raise ValueError(f"the angle {angle} is in a ring; it cannot be scaled alone")
    moved = positions.copy()
    r = positions[side] - positions[j]
    moved[side] = (positions[j] + r * cos + np.cross(axis, r) * sin
                   + np.outer(r @ axis, axis) * (1.0 - cos))
    return moved


def _fragment(n_atoms: int, bonds, start: int) -> set[int]:
    """Atoms connected to ``start`` through ``bonds``."""
    neighbours = {k: set() for k in range(n_atoms)}
    for a, b in bonds:
        neighbours[a].add(b)
        neighbours[b].add(a)
    seen, stack = {start}, [start]
    while stack:
        for other in neighbours[stack.pop()] - seen:
            seen.add(other)
            stack.append(other)
    return seen


def sample_temperatures(n: int, config: SamplerConfig) -> np.ndarray:
    """The temperature (K) each geometry of :func:`sample_geometries` was drawn at, shape (n,)."""
    return np.repeat(np.asarray(config.temperatures_k), _counts_per_temperature(n, config))


def _counts_per_temperature(n: int, config: SamplerConfig) -> np.ndarray:
    counts = np.full(len(config.temperatures_k), n // len(config.temperatures_k))
    counts[: n % len(config.temperatures_k)] += 1
    return counts


def sample_langevin(atoms, calculator, n, temperature_k, rng, config, progress=True):
    """Snapshots (n, N, 3) Å of Langevin MD at ``temperature_k`` with ``calculator``."""
    from ase.constraints import FixCom
    from ase.md import velocitydistribution
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation
    from tqdm.auto import tqdm

    atoms = atoms.copy()
    atoms.calc = calculator
    atoms.set_constraint(FixCom())  # Langevin noise would otherwise make the molecule drift
    thermalize = getattr(velocitydistribution, "thermalize_momenta", None) or getattr(
        velocitydistribution, "MaxwellBoltzmannDistribution"
    )  # ASE >= 3.29 renamed it
    thermalize(atoms, temperature_K=temperature_k, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dynamics = Langevin(
        atoms,
        timestep=config.timestep_fs * units.fs,
        temperature_K=temperature_k,
        friction=config.friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )
    total = config.equilibration_steps + n * config.stride
    snapshots = []
    with tqdm(total=total, desc=f"Langevin {temperature_k:g} K", disable=not progress,
              leave=False) as bar:
        dynamics.run(config.equilibration_steps)
        bar.update(config.equilibration_steps)
        for _ in range(n):
            dynamics.run(config.stride)
            bar.update(config.stride)
            snapshots.append(atoms.get_positions())
    atoms.set_constraint()
    return np.asarray(snapshots)


def harmonic_modes(atoms, calculator, fmax_ev_per_ang=1e-3):
    """Relaxed positions (N, 3) Å and mass-weighted normal modes of ``atoms``.

    Returns ``(positions, eigenvalues, modes)``: eigenvalues of the mass-weighted Hessian in
    eV/(Å² amu) and modes as columns (3N, k), translations and rotations removed.
    """
    from ase.optimize import BFGS
    from ase.vibrations import Vibrations

    atoms = atoms.copy()
    atoms.calc = calculator
    BFGS(atoms, logfile=None).run(fmax=fmax_ev_per_ang, steps=500)
    with tempfile.TemporaryDirectory() as workdir:
        vibrations = Vibrations(atoms, name=os.path.join(workdir, "vib"), delta=0.005)
        vibrations.run()
        hessian = vibrations.get_vibrations().get_hessian_2d()  # eV/Å²
    inv_sqrt_mass = np.repeat(atoms.get_masses() ** -0.5, 3)
    mass_weighted = inv_sqrt_mass[:, None] * hessian * inv_sqrt_mass[None, :]
    eigenvalues, vectors = np.linalg.eigh(0.5 * (mass_weighted + mass_weighted.T))
    n_rigid = 5 if _is_linear(atoms.positions) else 6
    if len(atoms) == 1:
        raise ValueError("normal-mode sampling needs at least two atoms")
    order = np.argsort(np.abs(eigenvalues))
    keep = np.sort(order[n_rigid:])
    eigenvalues, vectors = eigenvalues[keep], vectors[:, keep]
    if eigenvalues.min() <= 0:
        raise RuntimeError(
            "the relaxed structure has an imaginary mode; it is not a minimum of the cheap "
            "calculator, so normal-mode sampling is undefined there"
        )
    return atoms.get_positions(), eigenvalues, vectors


def sample_normal_modes(atoms, calculator, n, temperature_k, rng, config):
    """``n`` harmonic Boltzmann displacements (n, N, 3) Å around the cheap minimum."""
    positions, eigenvalues, modes = harmonic_modes(atoms, calculator)
    kt_ev = units.kB * temperature_k
    if config.quantum:
        hbar_omega_ev = units._hbar * units.J * units.s * np.sqrt(eigenvalues)
        energy_scale = 0.5 * hbar_omega_ev / np.tanh(0.5 * hbar_omega_ev / kt_ev)
    else:
        energy_scale = np.full_like(eigenvalues, kt_ev)
    amplitudes = rng.normal(size=(n, len(eigenvalues))) * np.sqrt(energy_scale / eigenvalues)
    inv_sqrt_mass = np.repeat(atoms.get_masses() ** -0.5, 3)
    displacements = (amplitudes @ modes.T) * inv_sqrt_mass  # (n, 3N) Å
    return positions[None] + displacements.reshape(n, len(atoms), 3)


def _is_linear(positions: np.ndarray, tolerance=1e-3) -> bool:
    centered = positions - positions.mean(axis=0)
    singular = np.linalg.svd(centered, compute_uv=False)
    return len(positions) == 2 or singular[1] < tolerance * max(singular[0], 1e-12)
