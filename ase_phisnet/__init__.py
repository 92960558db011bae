"""ase_phisnet: PhiSNet Hamiltonians inside ASE.

Nothing heavy happens at import: ``PhiSNetCalculator`` and ``list_potentials`` are imported on
first use.
"""

from __future__ import annotations

from ase_phisnet.core.version import __version__

__all__ = ["PhiSNetCalculator", "list_potentials", "__version__"]


def __getattr__(name):
    if name == "PhiSNetCalculator":
        from ase_phisnet.interface.calculator import PhiSNetCalculator

        return PhiSNetCalculator
    if name == "list_potentials":
        from ase_phisnet.interface.potentials import list_potentials

        return list_potentials
    raise AttributeError(f"module 'ase_phisnet' has no attribute {name!r}")
