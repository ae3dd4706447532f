"""Support code for ``tools/devcloud``: a real local OpenStack on 127.0.0.1.

Everything in this package uses the Python standard library only, so the tool
runs with the system ``python3`` before any OpenStack package is installed.
Code that needs OpenStack libraries lives in ``../cloud`` and ``../wsgi`` and
runs with the devcloud's own virtualenv.
"""
