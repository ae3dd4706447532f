"""The one place the project keeps its version (setup.py, the RPM spec and replies read it)."""

__version__ = "1.0.0"
