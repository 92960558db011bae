"""Shipped potentials: model files in the repository's ``potentials/`` folder.

That folder is installed as the package ``ase_phisnet.shipped`` (see ``pyproject.toml``) and
read through :mod:`importlib.resources`, so name lookup works from an installed wheel as well as
from a checkout. A potential ``NAME`` is ``NAME.pt`` (weights), ``NAME.pt.json`` (config and
training record) and ``NAME.md`` (model card).
"""

from __future__ import annotations

import json
from importlib import resources

from ase_phisnet.core.errors import ModelFileError


def _shipped():
    return resources.files("ase_phisnet.shipped")


def list_potentials() -> list[dict]:
    """Every shipped potential, sorted by name.

    Each entry: ``name``, ``xc``, ``basis``, ``elements``, ``metrics`` (the model card's
    test-split metrics, :class:`ase_phisnet.training.evaluate.Metrics` fields) and ``card`` (the
    model card's text).
    """
    found = []
    for entry in _shipped().iterdir():
        if entry.name.endswith(".pt.json"):
            name = entry.name[: -len(".pt.json")]
            meta = json.loads(entry.read_text())
            card = _shipped() / f"{name}.md"
            found.append({"name": name,
                          "xc": meta.get("training", {}).get("theory", {}).get("xc"),
                          "basis": meta["config"]["basis"],
                          "elements": meta["config"]["elements"],
                          "metrics": meta.get("metrics", {}),
                          "card": card.read_text() if card.is_file() else ""})
    return sorted(found, key=lambda item: item["name"])


METRIC_LINES = (
    ("hamiltonian_mae_ueh", "H MAE", "{:.1f} µEh"),
    ("occupied_energy_mae_ueh", "occupied ε MAE", "{:.1f} µEh"),
    ("occupied_cosine_similarity_pct", "orbital |cos|", "{:.3f} %"),
    ("dipole_mae_debye", "dipole MAE", "{:.3f} D"),
    ("energy_mae_mev", "energy MAE", "{:.2f} meV"),
    ("force_mae_mev_per_ang", "force MAE", "{:.1f} meV/Å"),
    ("force_max_error_mev_per_ang", "largest force error", "{:.0f} meV/Å"),
)


def describe_potential(entry: dict) -> str:
    """A few lines on one :func:`list_potentials` entry: theory, elements, test metrics."""
    lines = [f"{entry['name']}: {(entry['xc'] or '?').upper()}/{entry['basis']}, elements "
             f"{', '.join(entry['elements'])}"]
    metrics = entry["metrics"]
    if metrics.get("n_geometries"):
        lines.append(f"  test split: {metrics['n_geometries']} geometries")
    for key, label, form in METRIC_LINES:
        if metrics.get(key) is not None:
            lines.append(f"  {label:<20} {form.format(metrics[key])}")
    return "\n".join(lines)


def potential_path(name: str) -> str:
    """Filesystem path of the shipped potential ``name``'s weights."""
    weights = _shipped() / f"{name}.pt"
    if not weights.is_file():
        names = [p["name"] for p in list_potentials()]
        raise ModelFileError(f"no model file or shipped potential named {name!r}; shipped: "
                             f"{names or 'none yet'}")
    return str(weights)


#: The molecule each potential was trained on, by chemical formula in Hill order (what
#: ``Atoms.get_chemical_formula()`` returns); a potential counts only once it is shipped.
_POTENTIALS_BY_FORMULA = {"H2O": "water-pbe-def2svp", "C2H6O": "ethanol-pbe-def2svp"}


def default_potential(atoms_or_formula) -> str:
    """Name of the shipped potential trained on a molecule, for ``PhiSNetCalculator(model=...)``.

    ``atoms_or_formula``: an ASE ``Atoms`` or a chemical formula (``"H2O"``; any order of the
    elements, ``"CH3CH2OH"`` and ``"C2H6O"`` alike). Molecules are matched by formula alone, so
    isomers share a potential (dimethyl ether gets the ethanol one). Raises
    :class:`~ase_phisnet.core.errors.ModelFileError`, naming what is shipped, when no shipped
    potential was trained on that formula.
    """
    from ase.formula import Formula

    if isinstance(atoms_or_formula, str):
        try:
            formula = Formula(atoms_or_formula).format("hill")
        except ValueError:
            formula = atoms_or_formula
    else:
        formula = atoms_or_formula.get_chemical_formula()
    name = _POTENTIALS_BY_FORMULA.get(formula)
    shipped = [entry["name"] for entry in list_potentials()]
    if name in shipped:
        return name
    trained_on = {potential: f for f, potential in _POTENTIALS_BY_FORMULA.items()}
    listing = ", ".join(f"{n} ({trained_on.get(n, '?')})" for n in shipped) or "none yet"
    planned = f" ({name} is not shipped yet)" if name else ""
    raise ModelFileError(f"no shipped potential for {formula}{planned}; shipped: {listing}; "
                         "pass a model file or name")
