"""The domain of a model's training data: which molecules, and which interatomic distances.

A learned potential answers anywhere, but is right only near its data. A
:class:`TrainingDomain` records, for the geometries a model was trained on,

* the compositions (Hill formulas, ``"H2O"``, ``"C2H6O"``): another composition of known
  elements, a water dimer on a water model, methanol on an ethanol model, is a different
  molecule the model has never seen;
* each element pair's range of interatomic distances (Å), e.g. ``"H-O": (0.86, 3.1)``: a
  geometry with a pair closer or farther apart than any in the data by more than a tolerance
  asks the model to extrapolate;
* each element's range of nearest-neighbour distances (Å): for every atom of element X the
  distance to its k-th nearest atom, k = 1 .. :data:`NEIGHBOURS`, e.g. ``"H:1": (0.92, 1.25)``
  (an H's bond). An element pair's range mixes bonded and non-bonded pairs (ethanol's C-H
  spans 0.9-3.7 Å), so it lets a C-H bond stretch to 3 Å unnoticed; the k-th neighbour's
  range does not, and it sees contacts such as an H pressed against another H. Both are
  invariant to the order of the atoms.

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


#: Nearest neighbours per atom whose distance ranges a domain records (a carbon's four bonds).
NEIGHBOURS = 4
_ORDINALS = ("nearest", "2nd-nearest", "3rd-nearest", "4th-nearest")


def neighbour_key(z: int, k: int) -> str:
    """Name of the k-th nearest-neighbour distance of an element's atoms (``(1, 1) -> "H:1"``)."""
    return f"{chemical_symbols[int(z)]}:{k}"


def neighbour_distances_ang(atomic_numbers, positions_ang: np.ndarray
                            ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each atom's distances (Å) to its ``k`` nearest atoms of any element, ``k = 1 ..
    min(NEIGHBOURS, N - 1)``, grouped by element and ``k``: ``{"H:1": (distances (..., n_H),
    atoms (n_H,), neighbours (..., n_H))}`` for positions ``(..., N, 3)``, with the index of
    each atom and of that neighbour."""
    numbers = np.asarray(atomic_numbers, dtype=int)
    positions = np.asarray(positions_ang, dtype=float)
    distances = np.linalg.norm(positions[..., :, None, :] - positions[..., None, :, :], axis=-1)
    distances[..., np.arange(len(numbers)), np.arange(len(numbers))] = np.inf
    order = np.argsort(distances, axis=-1)[..., :min(NEIGHBOURS, len(numbers) - 1)]
    nearest = np.take_along_axis(distances, order, axis=-1)  # (..., N, K)
    groups = {}
    for z in sorted(set(numbers.tolist())):
        atoms = np.flatnonzero(numbers == z)
        for k in range(nearest.shape[-1]):
            groups[neighbour_key(z, k + 1)] = (nearest[..., atoms, k], atoms,
                                               order[..., atoms, k])
    return groups


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


def _checked_ranges(ranges: dict, what: str) -> dict[str, tuple[float, float]]:
    checked = {}
    for name, bounds in ranges.items():
        low, high = (float(b) for b in bounds)
        if not 0 <= low <= high:
            raise ValueError(f"{what} range of {name} must satisfy 0 <= low <= high, got "
                             f"{bounds}")
        checked[name] = (low, high)
    return dict(sorted(checked.items()))


def _merged(ranges: dict, name: str, low: float, high: float) -> None:
    old = ranges.get(name, (low, high))
    ranges[name] = (min(old[0], low), max(old[1], high))


@dataclass(frozen=True)
class TrainingDomain:
    """Compositions, element-pair distance ranges and nearest-neighbour distance ranges (Å)
    of a set of training geometries (module docstring). ``neighbour_ranges_ang`` is ``None``
    for a domain recorded before they were (no neighbour check)."""

    compositions: tuple[str, ...]
    pair_ranges_ang: dict[str, tuple[float, float]] = field(default_factory=dict)
    neighbour_ranges_ang: dict[str, tuple[float, float]] | None = None

    def __post_init__(self):
        object.__setattr__(self, "compositions", tuple(sorted(set(self.compositions))))
        object.__setattr__(self, "pair_ranges_ang", _checked_ranges(self.pair_ranges_ang,
                                                                    "pair"))
        if self.neighbour_ranges_ang is not None:
            object.__setattr__(self, "neighbour_ranges_ang", _checked_ranges(
                self.neighbour_ranges_ang, "neighbour"))

    @classmethod
    def from_geometries(cls, atomic_numbers, positions_ang: np.ndarray) -> TrainingDomain:
        """The domain of geometries ``(n, N, 3)`` (Å) of one molecule."""
        positions = np.asarray(positions_ang, dtype=float).reshape(-1, len(atomic_numbers), 3)
        ranges = {name: (float(d.min()), float(d.max()))
                  for name, d in element_pair_distances_ang(atomic_numbers, positions).items()
                  if d.size}
        neighbours = {name: (float(d.min()), float(d.max())) for name, (d, _, _)
                      in neighbour_distances_ang(atomic_numbers, positions).items() if d.size}
        return cls((hill_formula(atomic_numbers),), ranges, neighbours)

    @classmethod
    def union(cls, domains: Iterable[TrainingDomain]) -> TrainingDomain:
        """The smallest domain holding all of ``domains`` (with neighbour ranges only if each
        of them has them: a domain without them bounds no neighbour distance)."""
        compositions, ranges, neighbours = [], {}, {}
        for domain in domains:
            compositions.extend(domain.compositions)
            for name, (low, high) in domain.pair_ranges_ang.items():
                _merged(ranges, name, low, high)
            if domain.neighbour_ranges_ang is None or neighbours is None:
                neighbours = None
                continue
            for name, (low, high) in domain.neighbour_ranges_ang.items():
                _merged(neighbours, name, low, high)
        return cls(tuple(compositions), ranges, neighbours)

    def violations(self, atomic_numbers, positions_ang: np.ndarray,
                   tolerance_ang: float = 0.1) -> list[str]:
        """What of one geometry ``(N, 3)`` (Å) lies outside the domain, one sentence each;
        empty when it lies inside. A pair distance counts when it leaves its element pair's
        range by more than ``tolerance_ang``, and so does an atom's k-th nearest-neighbour
        distance leaving its element's range (one sentence per element and k, naming the atom
        farthest out); an element pair absent from the data counts as outside."""
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
        return problems + self._neighbour_violations(atomic_numbers, positions_ang,
                                                     tolerance_ang)

    def _neighbour_violations(self, atomic_numbers, positions_ang, tolerance_ang) -> list[str]:
        """One sentence per element and k whose k-th neighbour distance leaves its range,
        naming the atom farthest out."""
        problems = []
        symbols = [chemical_symbols[int(z)] for z in atomic_numbers]
        for name, excess, distances, atoms, neighbours in self._neighbour_excesses(
                atomic_numbers, positions_ang):
            low, high = self.neighbour_ranges_ang[name]
            worst = int(np.argmax(excess))
            if excess[worst] <= tolerance_ang:
                continue
            atom, neighbour = int(atoms[worst]), int(neighbours[worst])
            side = "below" if distances[worst] < low else "above"
            ordinal = _ORDINALS[int(name.split(":")[1]) - 1]
            problems.append(
                f"atom {atom} ({symbols[atom]}): distance {float(distances[worst]):.3f} Å to its "
                f"{ordinal} atom ({neighbour}, {symbols[neighbour]}) is {side} the training range "
                f"{low:.3f}-{high:.3f} Å of {symbols[atom]} atoms' {ordinal} atoms")
        return problems

    def _neighbour_excesses(self, atomic_numbers, positions_ang):
        """``(name, excess, distances, atoms, neighbours)`` for every k-th neighbour range of
        the domain the geometry has (``excess``: Å beyond the range, negative inside); nothing
        for a domain without neighbour ranges. An element the data lack is the pair check's."""
        if self.neighbour_ranges_ang is None:
            return
        groups = neighbour_distances_ang(atomic_numbers, positions_ang)
        for name, (distances, atoms, neighbours) in groups.items():
            if name in self.neighbour_ranges_ang:
                low, high = self.neighbour_ranges_ang[name]
                excess = np.maximum(low - distances, distances - high)
                yield name, excess, distances, atoms, neighbours

    def excursion_ang(self, atomic_numbers, positions_ang: np.ndarray) -> tuple[float, str]:
        """How far (Å) the geometry's farthest-out distance lies outside its range (0 when
        all are inside), and that range's name (an element pair ``"H-O"`` or a neighbour
        ``"H:1"``)."""
        worst, worst_name = 0.0, ""
        for name, distances in element_pair_distances_ang(atomic_numbers, positions_ang).items():
            low, high = self.pair_ranges_ang.get(name, (np.inf, -np.inf))
            excess = max(low - float(distances.min()), float(distances.max()) - high)
            if excess > worst:
                worst, worst_name = excess, name
        for name, excess, *_ in self._neighbour_excesses(atomic_numbers, positions_ang):
            if float(excess.max()) > worst:
                worst, worst_name = float(excess.max()), name
        return worst, worst_name

    def to_dict(self) -> dict:
        values = {"compositions": list(self.compositions),
                  "pair_ranges_ang": {k: list(v) for k, v in self.pair_ranges_ang.items()}}
        if self.neighbour_ranges_ang is not None:
            values["neighbour_ranges_ang"] = {k: list(v)
                                              for k, v in self.neighbour_ranges_ang.items()}
        return values

    @classmethod
    def from_dict(cls, values: dict) -> TrainingDomain:
        try:
            neighbours = values.get("neighbour_ranges_ang")
            return cls(tuple(values["compositions"]),
                       {k: tuple(v) for k, v in values["pair_ranges_ang"].items()},
                       None if neighbours is None
                       else {k: tuple(v) for k, v in neighbours.items()})
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"invalid training domain ({error!r})") from None
