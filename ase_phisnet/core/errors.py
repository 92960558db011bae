"""Exceptions of ase_phisnet; each message names the problem and what is supported."""

from __future__ import annotations


class PhiSNetError(Exception):
    """Base class of all ase_phisnet errors."""


class UnsupportedElementError(PhiSNetError, ValueError):
    """An element is not covered by a basis set or not known to a model."""


class OpenShellError(PhiSNetError, ValueError):
    """A restricted closed-shell calculation was asked for an odd number of electrons."""


class ElectronCountError(PhiSNetError, ValueError):
    """A closed shell the basis cannot hold: no occupied orbital, or no empty one."""


class SCFNotConvergedError(PhiSNetError, RuntimeError):
    """A reference SCF did not converge; its result must never be stored as data."""


class UnknownMoleculeError(PhiSNetError, ValueError):
    """A molecule name is neither an ASE collection name nor a readable structure file."""


class DatasetFileError(PhiSNetError, OSError):
    """A dataset file is unreadable, foreign, of another format version, or does not match."""


class ModelFileError(PhiSNetError, OSError):
    """A model file is missing, corrupt, foreign, or of another format version."""
