"""``install``: the devcloud's own virtualenv and, if missing, the Debian
packages for RabbitMQ and MariaDB.

The venv is separate from the plugin's environment (OpenStack services pin
many libraries). A stamp file holds a hash of the pin file and the package
list: when it matches and the venv's python runs, install is a no-op taking
milliseconds, which keeps ``start`` cheap to call from CI every time.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from typing import Iterable, List

from .settings import PIN_FILE, VENV_PACKAGES, Settings
from .util import DevcloudError, phase, run, say, which

APT_PACKAGES = {  # binary that proves the package is there -> Debian package
    "rabbitmq-server": "rabbitmq-server",
    "rabbitmqctl": "rabbitmq-server",
    "mariadbd": "mariadb-server",
    "mariadb": "mariadb-client",
}


def _stamp_value() -> str:
    digest = hashlib.sha256()
    with open(PIN_FILE, "rb") as handle:
        digest.update(handle.read())
    digest.update(" ".join(VENV_PACKAGES).encode())
    return digest.hexdigest()


def _base_python() -> str:
    """The interpreter to build the venv from: the base one even when this
    tool itself runs inside some other virtualenv (e.g. the plugin's)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _stamp_path(settings: Settings) -> str:
    return os.path.join(settings.venv, ".devcloud-stamp")


def venv_ready(settings: Settings) -> bool:
    """True when the venv holds what the pin file asks for and its python runs."""
    try:
        with open(_stamp_path(settings)) as handle:
            matches = handle.read().strip() == _stamp_value()
    except OSError:
        return False
    return matches and os.access(settings.venv_bin("python"), os.X_OK)


def install_venv(settings: Settings, force: bool = False) -> None:
    """Create the venv and pip-install the pinned services, unless its stamp says it is done."""
    if venv_ready(settings) and not force:
        say(f"venv {settings.venv} is up to date (pin hash matches)")
        return
    log = os.path.join(settings.logs, "install.log")
    os.makedirs(settings.logs, exist_ok=True)
    with phase(f"venv: pip install of the pinned OpenStack services (log: {log})"):
        python = settings.venv_bin("python")
        if os.path.isdir(settings.venv) and subprocess.run(
                [python, "-c", "import sys"], capture_output=True).returncode != 0:
            shutil.rmtree(settings.venv)  # broken venv (e.g. system Python changed)
        if not os.path.isdir(settings.venv):
            try:
                run([_base_python(), "-m", "venv", settings.venv], log=log)
            except DevcloudError:
                # Debian ships ensurepip separately
                apt_install(["python3-venv"])
                shutil.rmtree(settings.venv, ignore_errors=True)
                run([_base_python(), "-m", "venv", settings.venv], log=log)
        try:
            os.remove(_stamp_path(settings))
        except FileNotFoundError:
            pass
        run([python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
             "-c", PIN_FILE] + VENV_PACKAGES, log=log, timeout=1800)
        with open(_stamp_path(settings), "w") as handle:
            handle.write(_stamp_value() + "\n")


_apt_updated = False  # one `apt-get update` per command is enough


def apt_install(packages: List[str]) -> None:
    """apt-get install (as root), updating the package lists once first."""
    global _apt_updated
    if os.geteuid() != 0:
        raise DevcloudError(f"need root to apt-get install {' '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with phase(f"apt-get install {' '.join(packages)}"):
        if not _apt_updated:
            run(["apt-get", "update", "-q"], env=env, timeout=900)
            _apt_updated = True
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + packages,
            env=env, timeout=1800)


def ensure_apt_packages(binaries: Iterable[str]) -> None:
    """apt-get install the packages behind any of ``binaries`` that are missing."""
    missing = sorted({APT_PACKAGES[binary] for binary in binaries if not which(binary)})
    if missing:
        apt_install(missing)


def install(settings: Settings, force: bool = False) -> None:
    """The ``install`` command: Debian packages that are missing, then the venv."""
    ensure_apt_packages(APT_PACKAGES)
    install_venv(settings, force=force)
