"""Command line of ``tools/devcloud`` (argparse; help texts are the manual)."""

import argparse
import contextlib
import fcntl
import os
import sys

from . import commands
from . import settings as S
from .services import SERVICES
from .util import DevcloudError, err, tail

DESCRIPTION = """\
A real local OpenStack on 127.0.0.1 for the cloudmanagers plugin's tests:
Keystone 30, Nova 34 (fake virt driver), Placement 16 and Glance 33 from PyPI
behind gunicorn, a small fake Neutron, the machine's RabbitMQ (own vhost) and
MariaDB (own databases). All state lives in one folder (--base)."""

EPILOG = """\
typical use:
  tools/devcloud install          # venv with pinned services (+ apt if needed)
  tools/devcloud start            # cold 30-50 s, warm (already up) < 1 s
  tools/devcloud status [--json]
  tools/devcloud restart keystone
  tools/devcloud stop | wipe [--all]

environment (flags win): DEVCLOUD_BASE (default %(base)s), DEVCLOUD_NAME,
  DEVCLOUD_KEYSTONE_PORT 5000, DEVCLOUD_NOVA_PORT 8774, DEVCLOUD_PLACEMENT_PORT 8778,
  DEVCLOUD_GLANCE_PORT 9292, DEVCLOUD_NEUTRON_PORT 9696, DEVCLOUD_VNC_PORT 6080,
  DEVCLOUD_RABBIT_PORT 5672, DEVCLOUD_RABBIT_USER/PASSWORD guest/guest,
  DEVCLOUD_MYSQL_PORT 3306, DEVCLOUD_MYSQL_ROOT_USER/PASSWORD root/(empty).

start writes into the base folder: cloudmanagers.conf (plugin config, sections
[devcloud] and [devcloud_legacy]), clouds.yaml (clouds devcloud, devcloud-admin)
and devcloud.json (machine-readable facts). Logs: <base>/logs/<service>.log.
""" % {"base": S.DEFAULT_BASE.replace("%", "%%")}


def _common_options():
    """Options every subcommand accepts (also before the subcommand)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("location and ports (default from DEVCLOUD_* env, see --help)")
    g.add_argument("--base", default=argparse.SUPPRESS, metavar="DIR",
                   help="state folder (env DEVCLOUD_BASE; default %s)" % S.DEFAULT_BASE)
    g.add_argument("--name", default=argparse.SUPPRESS,
                   help="prefix of the databases, DB user, vhost and compute host "
                        "(env DEVCLOUD_NAME; default devcloud)")
    for key, (var, default, text) in S.PORT_OPTIONS.items():
        g.add_argument("--" + key.replace("_", "-"), type=int, default=argparse.SUPPRESS,
                       metavar="PORT", help="%s (env %s; default %d)" % (text, var, default))
    return p


def build_parser():
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="tools/devcloud", description=DESCRIPTION, epilog=EPILOG, parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    fmt = argparse.HelpFormatter

    p = sub.add_parser("install", parents=[common], formatter_class=fmt,
                       help="create <base>/venv with the pinned OpenStack services",
                       description="Create <base>/venv and pip-install the pinned services "
                       "(tools/devcloud-requirements.txt as constraints). A no-op when the stamp "
                       "(hash of the pin file) matches. Installs rabbitmq-server / mariadb-server "
                       "with apt only when their binaries are missing.")
    p.add_argument("--force", action="store_true", help="re-run pip even if the stamp matches")
    p.set_defaults(func=commands.cmd_install)

    p = sub.add_parser("start", parents=[common], formatter_class=fmt,
                       help="start (and on first use initialise) the devcloud; idempotent",
                       description="Start the devcloud and return once a server really boots. "
                       "Installs the venv first if needed. Reuses a running RabbitMQ and MariaDB "
                       "(starting or installing them only when absent). First start or after wipe: "
                       "drop+create the devcloud databases and vhost, DB syncs, Keystone bootstrap, "
                       "Nova cells. Then launches the daemons that are not running, seeds users, "
                       "flavors (ids 1,2,3) and the image cirros-fake, waits for nova-compute, boots "
                       "and deletes a smoke server as demo, and writes cloudmanagers.conf, "
                       "clouds.yaml and devcloud.json. If everything already runs and is healthy it "
                       "returns in seconds.")
    p.set_defaults(func=commands.cmd_start)

    p = sub.add_parser("status", parents=[common], formatter_class=fmt,
                       help="show pid, state and memory of each service",
                       description="Show each devcloud service (pid, up/down, RSS of its process "
                       "group, port, log) and the shared RabbitMQ/MariaDB. Exit status 1 if "
                       "anything is down.")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=commands.cmd_status)

    p = sub.add_parser("stop", parents=[common], formatter_class=fmt,
                       help="stop the processes the devcloud started (data is kept)",
                       description="TERM the process group of every service the devcloud started "
                       "(by pid file), KILL leftovers after 10 s. A RabbitMQ or MariaDB that the "
                       "devcloud did not start is never touched; one it started itself is stopped "
                       "too unless --keep-infra. Data is kept: the next start takes 15-20 s.")
    p.add_argument("--keep-infra", action="store_true",
                   help="leave a RabbitMQ/MariaDB that the devcloud started running")
    p.set_defaults(func=commands.cmd_stop)

    p = sub.add_parser("wipe", parents=[common], formatter_class=fmt,
                       help="stop and delete all state (keeps the venv unless --all)",
                       description="stop, then DROP the devcloud databases and DB user, delete "
                       "its RabbitMQ vhost, and remove configs, data, logs and output files under "
                       "the base folder. The venv is kept unless --all.")
    p.add_argument("--all", action="store_true", help="also remove the venv")
    p.add_argument("--keep-infra", action="store_true",
                   help="leave a RabbitMQ/MariaDB that the devcloud started running")
    p.set_defaults(func=commands.cmd_wipe)

    names = [s.name for s in SERVICES]
    p = sub.add_parser("restart", parents=[common], formatter_class=fmt,
                       help="stop and start one service, e.g. keystone",
                       description="Stop one service (TERM its process group), start it again, "
                       "wait until it is ready, then check that tokens, the Nova API and "
                       "nova-compute work. SERVICE is one of: %s." % ", ".join(names))
    p.add_argument("service", metavar="SERVICE", choices=names,
                   help="one of: %s" % ", ".join(names))
    p.set_defaults(func=commands.cmd_restart)
    return parser


@contextlib.contextmanager
def _exclusive(st, command):
    """One state-changing command per base folder at a time (CI and a developer
    may share the machine); status only reads, so it doesn't lock."""
    if command == "status":
        yield
        return
    os.makedirs(st.base, exist_ok=True)
    with open(os.path.join(st.base, ".lock"), "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("devcloud: another devcloud command runs on %s; waiting" % st.base, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def main(argv=None):
    args = build_parser().parse_args(argv)
    st = S.from_args(args)
    try:
        with _exclusive(st, args.command):
            return args.func(st, args)
    except DevcloudError as e:
        err(str(e))
        if e.log:
            print("----- last lines of %s -----" % e.log, file=sys.stderr)
            print(tail(e.log), file=sys.stderr)
            print("-----", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except BrokenPipeError:  # e.g. `status --json | head`
        sys.stderr.close()
        return 0
