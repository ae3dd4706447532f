"""Test-only stand-in for the legacy synapse agent's package (see ../README.md)."""
