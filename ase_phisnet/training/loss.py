"""The training loss: scaled errors of matrices, orbital energies, energy, forces and dipole.

Loss (all terms dimensionless, each matrix scaled by the standard deviation ``sigma`` of its
reference elements in the training split)::

    L = sum_M w_M [ mean((M_pred - M_ref)^2) / sigma_M^2 + mean|M_pred - M_ref| / sigma_M ]
        + w_eps [ same for the occupied (and loss.virtual_orbitals lowest virtual) orbital
                  energies of H C = S C eps ]
        + w_tg  [ same for the TraceGrad invariants |H_b|_F of every atom and pair block ]
        + w_E, w_F [ same for the total energy and the forces of the energy model; with
                     loss.huber_delta > 0 the square is a Huber function, linear far out ]
        + w_mu  [ same for the dipole moment sum_A Z_A R_A - Tr[P r] of the predicted P ]

The dipole term ties the density matrix to the reference where end-to-end energy training
would otherwise let H and core H drift into a latent pair that fits energies with the wrong
density (the dipole depends on P alone).
"""

from __future__ import annotations

import torch

from ase_phisnet.electronic.eigensolver import orthogonalized, solve_closed_shell
from ase_phisnet.electronic.energy import energy_from_outputs
from ase_phisnet.electronic.model import PhiSNetModel
from ase_phisnet.electronic.observables import charge_center_bohr, dipole_moment_e_bohr
from ase_phisnet.training.data import MatrixData


def block_norms(matrix: torch.Tensor, model: PhiSNetModel, atomic_numbers) -> tuple:
    """``|M_b|_F`` of every atom block (B, A) and directed pair block (B, P) of
    ``(B, nao, nao)``."""
    slices = model.layout.ao_slices(atomic_numbers.tolist())
    indicator = torch.zeros(matrix.shape[-1], len(slices), dtype=matrix.dtype,
                            device=matrix.device)
    for atom, ao in enumerate(slices):
        indicator[ao, atom] = 1.0
    squared = indicator.T @ matrix.pow(2) @ indicator  # (B, A, A)
    src, dst = model.network.pairs(atomic_numbers, matrix.device)
    norms = squared.clamp_min(0).sqrt()
    return torch.diagonal(norms, dim1=1, dim2=2), norms[:, src, dst]


def lowest_orbital_energies(hamiltonian, overlap, n_orbitals: int) -> torch.Tensor:
    """Lowest ``n_orbitals`` eigenvalues of ``H C = S C eps`` via Cholesky, differentiable."""
    orthogonal = orthogonalized(hamiltonian, torch.linalg.cholesky(overlap))
    return torch.linalg.eigvalsh(orthogonal)[..., :n_orbitals]


def scaled_square_error(prediction, reference, sigma, huber_delta: float = 0.0):
    """``mean(x^2)`` of the scaled error ``x = (prediction - reference) / sigma``; with
    ``huber_delta > 0`` the square is ``2 huber(x, huber_delta)`` (linear beyond delta)."""
    return _mean_square((prediction - reference) / sigma, huber_delta)


def _mean_square(scaled, huber_delta: float):
    if huber_delta > 0:
        return 2 * torch.nn.functional.huber_loss(scaled, torch.zeros_like(scaled),
                                                  delta=huber_delta)
    return scaled.pow(2).mean()


def _scaled_error(prediction, reference, sigma, huber_delta: float = 0.0):
    """``mean(x^2) + mean|x|`` of the scaled error ``x = (prediction - reference) / sigma``;
    with ``huber_delta > 0`` the square is ``2 huber(x, huber_delta)`` (linear beyond delta)."""
    scaled = (prediction - reference) / sigma
    return _mean_square(scaled, huber_delta) + scaled.abs().mean()


def compute_loss(model, batch: MatrixData, weights, scales: dict[str, float]):
    """Total loss and its terms for one batch (see module docstring)."""
    want_traces = unwrap(model).tracegrad is not None and weights.tracegrad > 0
    want_forces = weights.forces > 0
    positions = batch.positions_bohr
    if want_forces:
        positions = positions.detach().requires_grad_(True)
    # Forces are the only derivative in the positions taken here: the loss's backward needs
    # second derivatives in the parameters, never in the positions.
    out = model(batch.atomic_numbers, positions, return_invariants=want_traces,
                twice_differentiable=False,
                exact=None if want_forces else batch.exact_matrices)
    terms = {}
    for name, reference in batch.matrices.items():
        terms[name] = _scaled_error(out[name], reference, scales[name])
    if weights.orbital_energies > 0:
        reference = batch.occupied_energies_eh
        if batch.virtual_energies_eh is not None:
            reference = torch.cat([reference, batch.virtual_energies_eh], dim=-1)
        overlap = out.get("overlap", batch.matrices.get("overlap"))
        eps = lowest_orbital_energies(out["hamiltonian"], overlap, reference.shape[-1])
        terms["orbital_energies"] = _scaled_error(eps, reference, scales["orbital_energies"])
    solution = None
    if weights.energy > 0 or want_forces:
        n_occ = batch.occupied_energies_eh.shape[-1]
        # A training step differentiates the forces once more (in the parameters): second
        # order; evaluation and energy-only steps need the faster first-order eigensolver.
        force_step = want_forces and model.training
        prediction = energy_from_outputs(out, batch.atomic_numbers, positions, n_occ,
                                         derivative_order=2 if force_step else 1,
                                         energy_model=unwrap(model).config.energy_model)
        energy, solution = prediction.energy_eh, prediction.solution
        terms["energy"] = _scaled_error(energy, batch.energy_eh, scales["energy"],
                                        weights.huber_delta)
        if want_forces:
            (gradient,) = torch.autograd.grad(energy.sum(), positions, create_graph=force_step)
            terms["forces"] = _scaled_error(-gradient, batch.forces_eh_per_bohr,
                                            scales["forces"], weights.huber_delta)
    if weights.dipole > 0:
        if batch.position_integrals is None:
            raise ValueError("a dipole loss needs the data loaded with_position_integrals")
        if solution is None:
            overlap = out.get("overlap", batch.matrices.get("overlap"))
            solution = solve_closed_shell(out["hamiltonian"], overlap,
                                          batch.occupied_energies_eh.shape[-1],
                                          derivative_order=1)
        # About the centre of nuclear charge R_c (position_integrals); the reference is about
        # 0, and mu(R_c) = mu(0) - Q R_c for net charge Q.
        center = charge_center_bohr(batch.atomic_numbers, positions.detach())
        dipole = dipole_moment_e_bohr(solution.density_matrix, batch.position_integrals,
                                      batch.atomic_numbers, positions, origin_bohr=center)
        net_charge = int(batch.atomic_numbers.sum()) - 2 * batch.occupied_energies_eh.shape[-1]
        terms["dipole"] = _scaled_error(dipole, batch.dipole_e_bohr - net_charge * center,
                                        scales["dipole"])
    if want_traces:
        atom_ref, pair_ref = block_norms(batch.matrices["hamiltonian"], unwrap(model),
                                         batch.atomic_numbers)
        terms["tracegrad"] = (_scaled_error(out["trace_atom"], atom_ref, scales["trace"])
                              + _scaled_error(out["trace_pair"], pair_ref, scales["trace"]))
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def loss_scales(model: PhiSNetModel, train: MatrixData) -> dict[str, float]:
    """Standard deviations of the training references that make each loss term dimensionless."""
    scales = {name: float(matrices.std()) for name, matrices in train.matrices.items()}
    scales["orbital_energies"] = float(train.occupied_energies_eh.std())
    scales["energy"] = max(float(train.energy_eh.std()), 1e-4)
    scales["forces"] = float(train.forces_eh_per_bohr.std())
    scales["dipole"] = max(float(train.dipole_e_bohr.std()), 1e-3)
    atom_norms, pair_norms = block_norms(train.matrices["hamiltonian"], model,
                                         train.atomic_numbers)
    scales["trace"] = float(torch.cat([atom_norms.ravel(), pair_norms.ravel()]).std())
    return scales


def evaluate_loss(model, data: MatrixData, weights, scales, batch_size: int) -> float:
    """Mean loss over ``data`` (gradients only where force terms need them)."""
    model.eval()
    total, count = 0.0, 0
    with torch.set_grad_enabled(weights.forces > 0):
        for first in range(0, len(data), batch_size):
            index = torch.arange(first, min(first + batch_size, len(data)),
                                 device=data.positions_bohr.device)
            loss, _ = compute_loss(model, data.subset(index), weights, scales)
            total += float(loss.detach()) * len(index)
            count += len(index)
    return total / count
