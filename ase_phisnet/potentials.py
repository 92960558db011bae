"""Shipped potentials: model files in the repository's ``potentials/`` folder.

That folder is installed as the package ``ase_phisnet.shipped`` (see ``pyproject.toml``) and
read through :mod:`importlib.resources`, so name lookup works from an installed wheel as well as
from a checkout. A potential ``NAME`` is ``NAME.pt`` (weights), ``NAME.pt.json`` (config and
training record) and ``NAME.md`` (model card).
"""

from __future__ import annotations

import json
from importlib import resources

from ase_phisnet.errors import ModelFileError


def _shipped():
    return resources.files("ase_phisnet.shipped")


def list_potentials() -> list[dict]:
    """Every shipped potential: ``{"name", "basis", "elements", "metrics"}``, sorted by name."""
    found = []
    for entry in _shipped().iterdir():
        if entry.name.endswith(".pt.json"):
            meta = json.loads(entry.read_text())
            found.append({"name": entry.name[: -len(".pt.json")],
                          "basis": meta["config"]["basis"],
                          "elements": meta["config"]["elements"],
                          "metrics": meta.get("metrics", {})})
    return sorted(found, key=lambda item: item["name"])


def potential_path(name: str) -> str:
    """Filesystem path of the shipped potential ``name``'s weights."""
    weights = _shipped() / f"{name}.pt"
    if not weights.is_file():
        names = [p["name"] for p in list_potentials()]
        raise ModelFileError(f"no model file or shipped potential named {name!r}; shipped: "
                             f"{names or 'none yet'}")
    return str(weights)
