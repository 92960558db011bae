"""The package version, recorded in every data file and model file the package writes."""

__version__ = "0.1.0"
