"""Gunicorn entry point for Placement (config dir from OS_PLACEMENT_CONFIG_DIR)."""

from _argv import bare_argv

with bare_argv():
    from placement.wsgi.api import application

__all__ = ["application"]
