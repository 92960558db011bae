"""High-level references (PySCF CCSD(T)): forces are -dE/dR, energy files resume and refuse
other geometries."""

import numpy as np
import pytest

from ase_phisnet.core.errors import DatasetFileError
from ase_phisnet.data.highlevel import EnergyData, coupled_cluster, generate_energies

WATER_Z = np.array([8, 1, 1])
WATER_BOHR = np.array([[0.0, 0.0, 0.22], [0.0, 1.43, -0.89], [0.0, -1.48, -0.85]])


def test_ccsd_t_forces_are_minus_the_energy_gradient():
    _, forces = coupled_cluster(WATER_Z, WATER_BOHR, "sto-3g", "ccsd(t)")
    step = 1e-3
    for atom, axis in ((0, 2), (1, 1)):
        shifted = [WATER_BOHR.copy(), WATER_BOHR.copy()]
        shifted[0][atom, axis] += step
        shifted[1][atom, axis] -= step
        plus, minus = (coupled_cluster(WATER_Z, x, "sto-3g", "ccsd(t)")[0] for x in shifted)
        assert -(plus - minus) / (2 * step) == pytest.approx(forces[atom, axis], abs=2e-6)


def test_energy_file_resumes_and_refuses_other_geometries(tmp_path):
    path = tmp_path / "cc.h5"
    geometries = np.stack([WATER_BOHR, WATER_BOHR * 1.01])
    with pytest.MonkeyPatch.context() as patch:
        calls = []

        def fake(z, x, basis, method):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt  # a run killed after its first geometry
            return -1.0, np.zeros((3, 3))

        patch.setattr("ase_phisnet.data.highlevel.coupled_cluster", fake)
        with pytest.raises(KeyboardInterrupt):
            generate_energies(path, WATER_Z, geometries, "sto-3g", progress=False)
        assert EnergyData.read(path).complete.tolist() == [True, False]
        calls.clear()
        data = generate_energies(path, WATER_Z, geometries, "sto-3g", progress=False)
        assert len(calls) == 1 and data.complete.all()
    with pytest.raises(DatasetFileError, match="other geometries"):
        generate_energies(path, WATER_Z, geometries[:1], "sto-3g", progress=False)
