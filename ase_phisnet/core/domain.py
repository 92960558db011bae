"""The domain of a model's training data: which molecules, and which interatomic distances.

A learned potential answers anywhere, but is right only near its data. A
:class:`TrainingDomain` records, for the geometries a model was trained on,

* the compositions (Hill formulas, ``"H2O"``, ``"C2H6O"``): another composition of known
  elements, a water dimer on a water model, methanol on an ethanol model, is a different
  molecule the model has never seen;
* each element pair's range of interatomic distances (Å), e.g. ``"H-O": (0.86, 3.1)``: a
  geometry with a pair closer or farther apart than any in the data by more than a tolerance
  asks the model to extrapolate.

:meth:`TrainingDomain.violations` names what lies outside. The calculator warns (or, strict,
refuses) with that text, and ``ase-phisnet explore`` stops a trajectory on it. Distances in Å,
the ASE unit, because every caller holds ASE positions.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from ase.data import chemical_symbols
from ase.formula import Formula


def hill_formula(atomic_numbers) -> str:
    """Hill formula of a set of atoms (``[8, 1, 1] -> "H2O"``; C first, then H, then by symbol)."""
    return _hill_formula(tuple(int(z) for z in atomic_numbers))


@functools.lru_cache(maxsize=64)
def _hill_formula(numbers: tuple[int, ...]) -> str:
    return Formula.from_list([chemical_symbols[z] for z in numbers]).format("hill")


def element_pair(z_a: int, z_b: int) -> str:
    """Name of an element pair, symbols in alphabetical order (``(8, 1) -> "H-O"``)."""
    return "-".join(sorted((chemical_symbols[int(z_a)], chemical_symbols[int(z_b)])))


def element_pair_distances_ang(atomic_numbers, positions_ang: np.ndarray) -> dict[str, np.ndarray]:
    """Every atom pair's distance (Å), grouped by element pair: ``{"H-O": (..., n_pairs)}``
    for positions of shape ``(..., N, 3)``."""
    i, j, groups = _pair_groups(tuple(int(z) for z in atomic_numbers))
    positions = np.asarray(positions_ang, dtype=float)
    distances = np.linalg.norm(positions[..., i, :] - positions[..., j, :], axis=-1)
    return {name: distances[..., mask] for name, mask in groups.items()}


@functools.lru_cache(maxsize=64)
def _pair_groups(numbers: tuple[int, ...]):
    """``(i, j, {element pair: mask over the pairs i < j})`` of a molecule: depends on the
    atomic numbers alone, so MD steps reuse it."""
    i, j = np.triu_indices(len(numbers), k=1)
    names = np.array([element_pair(numbers[a], numbers[b]) for a, b in zip(i, j)])
    return i, j, {name: names == name for name in sorted(set(names.tolist()))}


@dataclass(frozen=True)
class TrainingDomain:
    """Compositions and element-pair distance ranges (Å) of a set of training geometries."""

    compositions: tuple[str, ...]
    pair_ranges_ang: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "compositions", tuple(sorted(set(self.compositions))))
        ranges = {}
        for name, bounds in self.pair_ranges_ang.items():
            low, high = (float(b) for b in bounds)
            if not 0 <= low <= high:
                raise ValueError(f"pair range of {name} must satisfy 0 <= low <= high, got "
                                 f"{bounds}")
            ranges[name] = (low, high)
        object.__setattr__(self, "pair_ranges_ang", dict(sorted(ranges.items())))

    @classmethod
    def from_geometries(cls, atomic_numbers, positions_ang: np.ndarray) -> TrainingDomain:
        """The domain of geometries ``(n, N, 3)`` (Å) of one molecule."""
        positions = np.asarray(positions_ang, dtype=float).reshape(-1, len(atomic_numbers), 3)
        ranges = {name: (float(d.min()), float(d.max()))
                  for name, d in element_pair_distances_ang(atomic_numbers, positions).items()
                  if d.size}
        return cls((hill_formula(atomic_numbers),), ranges)

    @classmethod
    def union(cls, domains: Iterable[TrainingDomain]) -> TrainingDomain:
        """The smallest domain holding all of ``domains``."""
        compositions, ranges = [], {}
        for domain in domains:
            compositions.extend(domain.compositions)
            for name, (low, high) in domain.pair_ranges_ang.items():
                old = ranges.get(name, (low, high))
                ranges[name] = (min(old[0], low), max(old[1], high))
        return cls(tuple(compositions), ranges)

    def violations(self, atomic_numbers, positions_ang: np.ndarray,
                   tolerance_ang: float = 0.1) -> list[str]:
        """What of one geometry ``(N, 3)`` (Å) lies outside the domain, one sentence each;
        empty when it lies inside. A pair distance counts when it leaves its element pair's
        range by more than ``tolerance_ang``; an element pair absent from the data counts
        as outside."""
        problems = []
        formula = hill_formula(atomic_numbers)
        if formula not in self.compositions:
            problems.append(f"composition {formula} is not among the training data's "
                            f"({', '.join(self.compositions)})")
        for name, distances in element_pair_distances_ang(atomic_numbers, positions_ang).items():
            if name not in self.pair_ranges_ang:
                problems.append(f"element pair {name} does not occur in the training data")
                continue
            low, high = self.pair_ranges_ang[name]
            shortest, longest = float(distances.min()), float(distances.max())
            if shortest < low - tolerance_ang:
                problems.append(f"{name} distance {shortest:.3f} Å is below the training "
                                f"range {low:.3f}-{high:.3f} Å")
            if longest > high + tolerance_ang:
                problems.append(f"{name} distance {longest:.3f} Å is above the training "
                                f"range {low:.3f}-{high:.3f} Å")
        return problems

    def excursion_ang(self, atomic_numbers, positions_ang: np.ndarray) -> tuple[float, str]:
        """How far (Å) the geometry's farthest-out pair distance lies outside its element
        pair's range (0 when all are inside), and that element pair."""
        worst, worst_name = 0.0, ""
        for name, distances in element_pair_distances_ang(atomic_numbers, positions_ang).items():
            low, high = self.pair_ranges_ang.get(name, (np.inf, -np.inf))
            excess = max(low - float(distances.min()), float(distances.max()) - high)
            if excess > worst:
                worst, worst_name = excess, name
        return worst, worst_name

    def to_dict(self) -> dict:
        return {"compositions": list(self.compositions),
                "pair_ranges_ang": {k: list(v) for k, v in self.pair_ranges_ang.items()}}

    @classmethod
    def from_dict(cls, values: dict) -> TrainingDomain:
        try:
            return cls(tuple(values["compositions"]),
                       {k: tuple(v) for k, v in values["pair_ranges_ang"].items()})
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"invalid training domain ({error!r})") from None
