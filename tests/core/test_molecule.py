"""PySCF molecules from atomic numbers and Bohr positions, with clear errors."""

import numpy as np
import pytest
from ase.units import Bohr

from ase_phisnet.core.errors import OpenShellError, UnsupportedElementError
from ase_phisnet.core.molecule import build_molecule, check_closed_shell


def test_closed_shell_electron_count():
    assert check_closed_shell([8, 1, 1], 0) == 10
    assert check_closed_shell(np.array([8, 1, 1]), -2) == 12
    with pytest.raises(OpenShellError, match=r"OH with charge 0 has 9 electrons \(odd\)"):
        check_closed_shell([8, 1], 0)
    with pytest.raises(OpenShellError, match="leaves 0 electrons"):
        check_closed_shell([1, 1], 2)


def test_molecule_is_in_bohr_with_spherical_aos():
    positions_bohr = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.4]])
    mol = build_molecule([1, 1], positions_bohr, "def2-svp")
    # PySCF stores Bohr; the input copied through unit="Bohr": float64 exact
    np.testing.assert_allclose(mol.atom_coords(unit="Bohr"), positions_bohr, rtol=0, atol=1e-14)
    np.testing.assert_allclose(mol.atom_coords(unit="Angstrom"), positions_bohr * Bohr, rtol=1e-9)
    assert not mol.cart and mol.nao == 10 and mol.charge == 0 and mol.spin == 0


@pytest.mark.filterwarnings("ignore:Basis may be available")
def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"need atomic_numbers \(N,\) and positions \(N, 3\)"):
        build_molecule([1, 1], np.zeros((3, 3)), "sto-3g")
    with pytest.raises(OpenShellError):
        build_molecule([1], np.zeros((1, 3)), "sto-3g")
    with pytest.raises(UnsupportedElementError, match="Rn"):
        build_molecule([86, 86], [[0, 0, 0], [0, 0, 6.0]], "sto-3g")
