"""Gunicorn entry point for the Glance API (config dir from OS_GLANCE_CONFIG_DIR)."""

from _argv import bare_argv

with bare_argv():
    from glance.wsgi.api import application

__all__ = ["application"]
