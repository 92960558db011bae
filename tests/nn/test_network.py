"""PhiSNet: exact equivariance of H and S in float64, symmetry, model files."""

import json

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.units import Bohr
from e3nn import o3

from ase_phisnet.core.errors import ModelFileError, UnsupportedElementError
from ase_phisnet.electronic.model import ModelConfig, PhiSNetModel, reconfigured
from ase_phisnet.electronic.model_file import load_model, save_model
from ase_phisnet.nn.layers import DepthwiseTensorProduct, equivariant_linear, mmajor_permutation

SMALL = dict(channels=(8, 4, 4, 2, 2), num_layers=2, num_radial=8, radial_hidden=16)
# Glycine-like C, N, O, H molecule in def2-SVP (geometry from ASE's g2 set where available).
CNOH = "CH3CONH2"


def make_model(elements, tracegrad=False, seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(basis="def2-svp", elements=elements, tracegrad=tracegrad, **SMALL)
    return PhiSNetModel(config).to(torch.float64)


def predict(model, atoms, positions_ang=None):
    positions = atoms.positions if positions_ang is None else positions_ang
    z = torch.tensor(atoms.numbers)
    return model(z, torch.tensor(positions / Bohr, dtype=torch.float64))


def relative_error(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().detach())


@pytest.mark.parametrize(
    "name,elements,tracegrad",
    [("H2O", ("H", "O"), False), (CNOH, ("H", "C", "N", "O"), False),
     ("H2O", ("H", "O"), True), (CNOH, ("H", "C", "N", "O"), True)],
)
def test_matrices_are_equivariant_under_rotation_translation_and_permutation(name, elements,
                                                                             tracegrad):
    model = make_model(elements, tracegrad)
    atoms = molecule(name)
    reference = predict(model, atoms)
    torch.manual_seed(1)
    rotation = o3.rand_matrix(dtype=torch.float64)
    shift = np.array([0.7, -1.3, 2.1])
    moved = predict(model, atoms, atoms.positions @ rotation.numpy().T + shift)
    d = model.layout.wigner_D(atoms.numbers, rotation)
    permutation = np.random.default_rng(2).permutation(len(atoms))
    permuted_atoms = atoms[permutation]
    permuted = predict(model, permuted_atoms)
    slices = model.layout.ao_slices(atoms.numbers)
    ao_permutation = np.concatenate([np.arange(slices[i].start, slices[i].stop)
                                     for i in permutation])
    for key in model.config.matrices:
        expected = d @ reference[key] @ d.T
        assert relative_error(moved[key], expected) < 1e-10, key
        assert relative_error(permuted[key], reference[key][ao_permutation][:, ao_permutation]) \
            < 1e-12, key
        torch.testing.assert_close(reference[key], reference[key].T, rtol=0, atol=1e-14)


def test_overlap_diagonal_blocks_are_the_exact_onsite_overlap():
    model = make_model(("H", "O"))
    atoms = molecule("H2O")
    overlap = predict(model, atoms)["overlap"]
    torch.testing.assert_close(torch.diagonal(overlap), torch.ones(24, dtype=torch.float64),
                               rtol=0, atol=1e-14)
    from pyscf import gto

    mol = gto.M(atom=[["O", (0, 0, 0)]], basis="def2-svp", spin=0, verbose=0)
    block = overlap[:14, :14].detach().numpy()
    np.testing.assert_allclose(block, mol.intor("int1e_ovlp"), atol=1e-14)


def test_nao_follows_the_basis_layout():
    model = make_model(("H", "C", "O"))
    atoms = molecule("CH3CH2OH")
    assert predict(model, atoms)["hamiltonian"].shape == (72, 72)  # PySCF's mol.nao


def test_unknown_element_is_a_clear_error():
    model = make_model(("H", "O"))
    with pytest.raises(UnsupportedElementError, match=r"knows elements \['H', 'O'\]; got \['C'\]"):
        predict(model, molecule("CH4"))


def test_model_file_round_trips_exactly(tmp_path):
    model = make_model(("H", "O"), tracegrad=True)
    path = tmp_path / "model.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.config == model.config
    atoms = molecule("H2O")
    for key, value in predict(model, atoms).items():
        # same weights in another module instance: equal up to float64 summation order
        torch.testing.assert_close(predict(loaded, atoms)[key], value, rtol=0, atol=1e-12)


def test_corrupt_foreign_and_future_model_files_are_clear_errors(tmp_path):
    model = make_model(("H", "O"))
    path = tmp_path / "model.pt"
    save_model(model, path)
    with pytest.raises(ModelFileError, match="missing config"):
        load_model(tmp_path / "nothing.pt")
    meta = json.loads((tmp_path / "model.pt.json").read_text())
    (tmp_path / "model.pt.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ModelFileError, match="format version 99"):
        load_model(path)
    (tmp_path / "model.pt.json").write_text(json.dumps({**meta, "format": "other"}))
    with pytest.raises(ModelFileError, match="not an ase-phisnet model"):
        load_model(path)
    (tmp_path / "model.pt.json").write_text(json.dumps(meta))
    path.write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="corrupt"):
        load_model(path)


def test_config_validates():
    with pytest.raises(ValueError, match="unknown element"):
        ModelConfig(elements=("H", "Xx"))
    with pytest.raises(ValueError, match="matrices"):
        ModelConfig(matrices=("overlap",))
    with pytest.raises(ValueError, match="channels needs 5 entries"):
        PhiSNetModel(ModelConfig(channels=(8, 4)))
    with pytest.raises(ValueError, match="energy_model"):
        ModelConfig(energy_model="harris")
    assert ModelConfig(matrices=("hamiltonian", "overlap"),
                       energy_model="band_structure").predicts_energy
    assert not ModelConfig(matrices=("hamiltonian", "overlap")).predicts_energy


def test_reconfigured_keeps_weights_and_refuses_new_ones():
    torch.manual_seed(0)
    model = PhiSNetModel(ModelConfig(channels=(8, 4, 4, 2, 2), num_layers=1)).double()
    with torch.no_grad():
        model.remainder.element_energy_eh.fill_(-1.0)
    band = reconfigured(model, energy_model="band_structure",
                        matrices=("hamiltonian", "overlap"))
    assert "core_hamiltonian" not in band.heads and band.config.energy_model == "band_structure"
    assert not bool(band.remainder.element_energy_eh.any())  # constants of the old energy model
    z = torch.tensor([8, 1, 1])
    xyz = torch.tensor([[0.0, 0.0, 0.2], [0.0, 1.4, -0.9], [0.0, -1.4, -0.9]], dtype=torch.float64)
    before, after = model(z, xyz), band(z, xyz)
    for name in ("hamiltonian", "overlap"):
        # same weights in another module instance: equal up to float64 summation order
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="no trained head"):
        reconfigured(band, matrices=("hamiltonian", "overlap", "core_hamiltonian"))
    with pytest.raises(ValueError, match="only"):
        reconfigured(model, num_layers=2)
    same = reconfigured(model, matrices=("hamiltonian", "overlap"))  # same energy model
    torch.testing.assert_close(same.remainder.element_energy_eh, model.remainder.element_energy_eh)
    exact = reconfigured(model, exact_overlap=True, matrices=("hamiltonian", "core_hamiltonian"))
    with pytest.raises(ValueError, match="no trained S head"):
        reconfigured(exact, exact_overlap=False)


def test_band_structure_energy_is_tr_ph_plus_the_correction_without_e_nuc():
    """The two energy models share the matrices and the correction; they differ by exactly
    ``E_nuc + 1/2 Tr[P (H_core - H)]``."""
    from ase_phisnet.electronic.energy import nuclear_repulsion_eh
    from ase_phisnet.electronic.model import predict_energy

    torch.manual_seed(1)
    model = PhiSNetModel(ModelConfig(channels=(8, 4, 4, 2, 2), num_layers=1,
                                exact_overlap=True,
                                matrices=("hamiltonian", "core_hamiltonian"))).double()
    band = reconfigured(model, energy_model="band_structure")
    z = torch.tensor([8, 1, 1])
    xyz = torch.tensor([[0.0, 0.0, 0.2], [0.0, 1.4, -0.9], [0.0, -1.4, -0.9]], dtype=torch.float64)
    with torch.no_grad():
        out = model(z, xyz)
        # A plausible water Fock matrix is not needed: any symmetric H with a gap will do.
        phisnet, banded = predict_energy(model, z, xyz), predict_energy(band, z, xyz)
    density = banded.solution.density_matrix
    expected = (density * out["hamiltonian"]).sum() + out["remainder_energy_eh"]
    torch.testing.assert_close(banded.energy_eh, expected)
    difference = (nuclear_repulsion_eh(z, xyz)
                  + 0.5 * (density * (out["core_hamiltonian"] - out["hamiltonian"])).sum())
    torch.testing.assert_close(phisnet.energy_eh - banded.energy_eh, difference)


def test_a_batch_of_geometries_equals_one_by_one():
    model = make_model(("H", "O"), tracegrad=True)
    atoms = molecule("H2O")
    rng = np.random.default_rng(0)
    positions = atoms.positions[None] + 0.05 * rng.normal(size=(3, 3, 3))
    z = torch.tensor(atoms.numbers)
    batch = model(z, torch.tensor(positions / Bohr), return_invariants=True)
    for b in range(3):
        single = model(z, torch.tensor(positions[b] / Bohr), return_invariants=True)
        for key, value in single.items():
            torch.testing.assert_close(batch[key][b], value, rtol=1e-12, atol=1e-12)


def test_tracegrad_inference_without_autograd_equals_training_mode():
    """TraceGrad needs gradients inside the forward pass; under no_grad it must agree."""
    model = make_model(("H", "O"), tracegrad=True)
    atoms = molecule("H2O")
    with_graph = predict(model, atoms)
    with torch.no_grad():
        without = predict(model, atoms)
    for key, value in with_graph.items():
        assert not without[key].requires_grad
        torch.testing.assert_close(without[key], value.detach(), rtol=0, atol=1e-13)


def test_mmajor_linear_is_e3nn_linear_with_the_same_weights():
    """The network evaluates e3nn's o3.Linear from its own weights on m-major features."""
    irreps_in = o3.Irreps("5x0e + 3x1o + 2x2e + 4x1e")
    irreps_out = o3.Irreps("2x0e + 4x1o + 3x2e + 1x3o")
    torch.manual_seed(0)
    linear = o3.Linear(irreps_in, irreps_out).to(torch.float64)
    x = torch.randn(2, 7, irreps_in.dim, dtype=torch.float64)
    expected = linear(x)[..., mmajor_permutation(irreps_out)]
    got = equivariant_linear(linear, x[..., mmajor_permutation(irreps_in)])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-13)
    # several linears side by side: per type (2l+1, linear, channel)
    other = o3.Linear(irreps_in, irreps_out).to(torch.float64)
    both = equivariant_linear([linear, other], x[..., mmajor_permutation(irreps_in)])
    start = 0
    for mul, ir in irreps_out:
        chunk = both[..., start : start + 2 * mul * ir.dim].reshape(2, 7, ir.dim, 2, mul)
        for k, lin in enumerate((linear, other)):
            ref = lin(x)[..., irreps_out.slices()[list(irreps_out).index((mul, ir))]]
            torch.testing.assert_close(chunk[..., k, :], ref.reshape(2, 7, mul, ir.dim)
                                       .transpose(-1, -2), rtol=0, atol=1e-13)
        start += 2 * mul * ir.dim


def test_depthwise_tensor_product_is_its_defining_sum():
    """z_{e,(l1 l2 L), u, M} = w sqrt(2L+1) sum C^{l1 l2 L}_{m1 m2 M} x_{e u m1} Y_{e m2}."""
    irreps_in, irreps_sh = o3.Irreps("3x0e + 2x1o + 2x2e"), o3.Irreps.spherical_harmonics(2)
    product = DepthwiseTensorProduct(irreps_in, irreps_sh, allowed_ls=(0, 1, 2))
    rng = torch.Generator().manual_seed(0)
    n_edges = 4
    x = torch.randn(n_edges, irreps_in.dim, generator=rng, dtype=torch.float64)  # e3nn layout
    sh = torch.randn(n_edges, irreps_sh.dim, generator=rng, dtype=torch.float64)
    w = torch.randn(n_edges, product.weight_numel, generator=rng, dtype=torch.float64)
    outputs = {}  # type -> list of (E, 2L+1) channels in (block, path, u) order
    w_offset = 0
    for (mul, ir_in), x_slice in zip(irreps_in, irreps_in.slices()):
        block = x[:, x_slice].reshape(n_edges, mul, ir_in.dim)
        paths = [(ir_sh, sh_slice, ir_out) for (_, ir_sh), sh_slice in
                 zip(irreps_sh, irreps_sh.slices()) for ir_out in ir_in * ir_sh
                 if ir_out.l <= 2]
        for p, (ir_sh, sh_slice, ir_out) in enumerate(paths):
            cg = o3.wigner_3j(ir_in.l, ir_sh.l, ir_out.l, dtype=torch.float64)
            z = torch.einsum("ijk,eui,ej->euk", cg, block, sh[:, sh_slice]) * ir_out.dim ** 0.5
            z = z * w[:, w_offset + p * mul : w_offset + (p + 1) * mul, None]
            outputs.setdefault(ir_out, []).extend(z.unbind(1))
        w_offset += len(paths) * mul
    expected = torch.cat([torch.stack(outputs[ir], dim=-1).reshape(n_edges, -1)
                          for _, ir in product.irreps_out], dim=-1)  # m-major
    weights = w.index_select(-1, product._constants.get("w_index", w))
    got = product(x[:, mmajor_permutation(irreps_in)], product.couple(sh), weights)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-13)
