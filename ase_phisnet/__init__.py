"""ase_phisnet: PhiSNet Hamiltonians inside ASE.

Nothing heavy happens at import; submodules are imported where they are used.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
