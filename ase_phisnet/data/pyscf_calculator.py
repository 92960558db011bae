"""A thin ASE calculator over :func:`ase_phisnet.data.reference.compute_reference`.

Used as the cheap PySCF level of the geometry samplers when tblite is not installed, and wherever
a PySCF reference is wanted through ASE's interface (eV, Å, eV/Å at this boundary).
"""

from __future__ import annotations

from ase.calculators.calculator import CalculationFailed, Calculator, all_changes
from ase.units import Bohr, Hartree

from ase_phisnet.core.errors import SCFNotConvergedError
from ase_phisnet.data.reference import Theory, compute_reference


class PySCFCalculator(Calculator):
    """Restricted closed-shell PySCF energies and analytic forces for ASE.

    Args:
        theory: Level of theory (functional or ``"hf"``, basis, charge, SCF settings).
    """

    implemented_properties = ("energy", "free_energy", "forces", "dipole")

    def __init__(self, theory: Theory | None = None, **kwargs):
        super().__init__(**kwargs)
        self.theory = theory if theory is not None else Theory()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        try:
            record = compute_reference(
                self.atoms.numbers, self.atoms.positions / Bohr, self.theory
            )
        except SCFNotConvergedError as error:
            raise CalculationFailed(str(error)) from error
        energy_ev = record.energy_eh * Hartree
        self.results = {
            "energy": energy_ev,
            "free_energy": energy_ev,
            "forces": record.forces_eh_per_bohr * (Hartree / Bohr),
            "dipole": record.dipole_e_bohr * Bohr,
        }
