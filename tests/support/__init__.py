"""Helpers shared by the test folders, importable as ``tests.support.<module>`` from any of them.

pytest puts the repository root on ``sys.path`` (``pythonpath = .`` in pytest.ini), so every
folder collects alone or with any other; a subprocess gets the same with ``PYTHONPATH=ROOT``.
"""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
