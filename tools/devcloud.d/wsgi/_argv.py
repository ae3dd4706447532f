"""Shared by the WSGI entry modules: hide gunicorn's command line while an
OpenStack app is built.

Keystone, Nova and Glance run oslo.config over ``sys.argv`` while they load;
under gunicorn that holds gunicorn's own flags and they die with
"unrecognized arguments". Cutting argv to its first item during the import
avoids that; the config comes from the ``OS_*_CONFIG_DIR`` variables set by
the launcher.
"""

import contextlib
import sys
from typing import Iterator


@contextlib.contextmanager
def bare_argv() -> Iterator[None]:
    """``sys.argv`` cut to the program name for the duration of the block."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved
