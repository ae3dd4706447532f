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

from . import settings as S
from .util import DevcloudError, phase, run, say, which

APT_PACKAGES = {  # binary that proves the package is there -> Debian package
    "rabbitmq-server": "rabbitmq-server",
    "rabbitmqctl": "rabbitmq-server",
    "mariadbd": "mariadb-server",
    "mariadb": "mariadb-client",
}


def _stamp_value():
    h = hashlib.sha256()
    with open(S.PIN_FILE, "rb") as f:
        h.update(f.read())
    h.update(" ".join(S.VENV_PACKAGES).encode())
    return h.hexdigest()


def _base_python():
    """The interpreter to build the venv from: the base one even when this
    tool itself runs inside some other virtualenv (e.g. the plugin's)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _stamp_path(st):
    return os.path.join(st.venv, ".devcloud-stamp")


def venv_ready(st):
    try:
        with open(_stamp_path(st)) as f:
            ok = f.read().strip() == _stamp_value()
    except OSError:
        return False
    return ok and os.access(st.venv_bin("python"), os.X_OK)


def install_venv(st, force=False):
    if venv_ready(st) and not force:
        say("venv %s is up to date (pin hash matches)" % st.venv)
        return
    log = os.path.join(st.logs, "install.log")
    os.makedirs(st.logs, exist_ok=True)
    with phase("venv: pip install of the pinned OpenStack services (log: %s)" % log):
        py = st.venv_bin("python")
        if os.path.isdir(st.venv) and subprocess.run(
                [py, "-c", "import sys"], capture_output=True).returncode != 0:
            shutil.rmtree(st.venv)  # broken venv (e.g. system Python changed)
        if not os.path.isdir(st.venv):
            try:
                run([_base_python(), "-m", "venv", st.venv], log=log)
            except DevcloudError:
                # Debian ships ensurepip separately
                apt_install(["python3-venv"])
                shutil.rmtree(st.venv, ignore_errors=True)
                run([_base_python(), "-m", "venv", st.venv], log=log)
        try:
            os.remove(_stamp_path(st))
        except FileNotFoundError:
            pass
        run([py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
             "-c", S.PIN_FILE] + S.VENV_PACKAGES, log=log, timeout=1800)
        with open(_stamp_path(st), "w") as f:
            f.write(_stamp_value() + "\n")


_apt_updated = False


def apt_install(packages):
    global _apt_updated
    if os.geteuid() != 0:
        raise DevcloudError("need root to apt-get install %s" % " ".join(packages))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with phase("apt-get install %s" % " ".join(packages)):
        if not _apt_updated:
            run(["apt-get", "update", "-q"], env=env, timeout=900)
            _apt_updated = True
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + packages,
            env=env, timeout=1800)


def ensure_apt_packages(binaries):
    """apt-get install the packages behind any of ``binaries`` that are missing."""
    missing = sorted({APT_PACKAGES[b] for b in binaries if not which(b)})
    if missing:
        apt_install(missing)


def install(st, force=False):
    ensure_apt_packages(APT_PACKAGES)
    install_venv(st, force=force)
