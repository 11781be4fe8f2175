"""The package version: a leaf module, imported by the package face and the contract."""

__version__ = "0.1.0"
