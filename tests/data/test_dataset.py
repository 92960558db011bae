"""The lazy dataset reader: splits, pickling for DataLoader workers, half-written records."""

import pickle

import h5py
import numpy as np
import pytest

from ase_phisnet.data.dataset import DatasetWriter, HamiltonianDataset


def test_splits_are_disjoint_complete_and_reproducible(water_file):
    dataset = HamiltonianDataset(water_file)
    split = dataset.split(seed=5, n_train=6, n_validation=2)
    together = np.concatenate([split.train, split.validation, split.test])
    assert sorted(together) == list(range(10))
    assert len(split.test) == 2
    same = HamiltonianDataset(water_file).split(seed=5, n_train=6, n_validation=2)
    np.testing.assert_array_equal(split.train, same.train)
    other = dataset.split(seed=6, n_train=6, n_validation=2)
    assert not np.array_equal(split.train, other.train)
    with pytest.raises(ValueError, match="cannot split 10 records"):
        dataset.split(seed=0, n_train=9, n_validation=2)


def test_positions_of_all_records_match_the_records(water_file):
    dataset = HamiltonianDataset(water_file)
    positions = dataset.positions_bohr()
    assert positions.shape == (10, 3, 3)
    np.testing.assert_array_equal(positions[7], dataset[7].positions_bohr)  # one array, read twice


def test_items_are_lazy_and_survive_pickling(water_file):
    dataset = HamiltonianDataset(water_file)
    assert dataset._handle is None  # nothing read before the first item
    first = dataset[0]
    assert first.hamiltonian_eh.shape == (7, 7)
    clone = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(clone[-1].overlap, dataset[-1].overlap)  # the stored array
    with pytest.raises(IndexError):
        dataset[10]
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2,
                                         collate_fn=lambda record: record.energy_eh)
    energies = list(loader)
    assert energies == [dataset[i].energy_eh for i in range(10)]


def test_half_written_record_is_dropped_on_resume(tmp_path, water_file):
    copy = tmp_path / "copy.h5"
    copy.write_bytes(water_file.read_bytes())
    with h5py.File(copy, "r+") as handle:  # what a kill in the middle of a write leaves
        del handle["records/000003"]
        handle["records"].create_group("_partial")["hamiltonian_eh"] = np.zeros((7, 7))
    assert len(HamiltonianDataset(copy)) == 9
    with DatasetWriter.resume(copy) as writer:
        assert writer.pending_indices() == [3]
    with h5py.File(copy) as handle:
        assert "_partial" not in handle["records"]
