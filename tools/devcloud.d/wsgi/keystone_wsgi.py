"""Gunicorn entry point for Keystone (config dir from OS_KEYSTONE_CONFIG_DIR)."""

from _argv import bare_argv

with bare_argv():
    from keystone.server import wsgi as _keystone_wsgi
    application = _keystone_wsgi.initialize_public_application()
