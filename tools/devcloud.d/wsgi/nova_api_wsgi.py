"""Gunicorn entry point for the Nova compute API (config dir from OS_NOVA_CONFIG_DIR)."""

from _argv import bare_argv

with bare_argv():
    from nova.wsgi.osapi_compute import application

__all__ = ["application"]
