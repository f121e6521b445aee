"""The package version (one definition: facesphere.__version__ and facesphere --version read it)."""

__version__ = "0.1.0"
