"""Command line of ``tools/devcloud`` (argparse; help texts are the manual)."""

import argparse
import contextlib
import fcntl
import os
import sys
from typing import Iterator, List, Optional

from . import commands
from .services import SERVICES
from .settings import DEFAULT_BASE, PORT_OPTIONS, Settings, from_args
from .util import DevcloudError, print_error, tail

DESCRIPTION = """\
A real local OpenStack on 127.0.0.1 for the cloudmanagers plugin's tests:
Keystone 30, Nova 34 (fake virt driver), Placement 16 and Glance 33 from PyPI
behind gunicorn, a small fake Neutron, the machine's RabbitMQ (own vhost) and
MariaDB (own databases). All state lives in one folder (--base)."""

EPILOG = f"""\
typical use:
  tools/devcloud install          # venv with pinned services (+ apt if needed)
  tools/devcloud start            # cold 30-50 s, warm (already up) < 1 s
  tools/devcloud status [--json]
  tools/devcloud restart keystone
  tools/devcloud stop | wipe [--all]

environment (flags win): DEVCLOUD_BASE (default {DEFAULT_BASE}), DEVCLOUD_NAME,
  DEVCLOUD_KEYSTONE_PORT 5000, DEVCLOUD_NOVA_PORT 8774, DEVCLOUD_PLACEMENT_PORT 8778,
  DEVCLOUD_GLANCE_PORT 9292, DEVCLOUD_NEUTRON_PORT 9696, DEVCLOUD_VNC_PORT 6080,
  DEVCLOUD_RABBIT_PORT 5672, DEVCLOUD_RABBIT_USER/PASSWORD guest/guest,
  DEVCLOUD_MYSQL_PORT 3306, DEVCLOUD_MYSQL_ROOT_USER/PASSWORD root/(empty).

start writes into the base folder: cloudmanagers.conf (plugin config, sections
[devcloud] and [devcloud_legacy]), clouds.yaml (clouds devcloud, devcloud-admin)
and devcloud.json (machine-readable facts). Logs: <base>/logs/<service>.log.
"""


def _common_options() -> argparse.ArgumentParser:
    """Options every subcommand accepts (also before the subcommand)."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("location and ports (default from DEVCLOUD_* env, see --help)")
    group.add_argument("--base", default=argparse.SUPPRESS, metavar="DIR",
                       help=f"state folder (env DEVCLOUD_BASE; default {DEFAULT_BASE})")
    group.add_argument("--name", default=argparse.SUPPRESS,
                       help="prefix of the databases, DB user, vhost and compute host "
                            "(env DEVCLOUD_NAME; default devcloud)")
    for key, (variable, default, text) in PORT_OPTIONS.items():
        group.add_argument("--" + key.replace("_", "-"), type=int, default=argparse.SUPPRESS,
                           metavar="PORT", help=f"{text} (env {variable}; default {default})")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser; its help texts are the tool's manual."""
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="tools/devcloud", description=DESCRIPTION, epilog=EPILOG, parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    subcommands.required = True
    plain = argparse.HelpFormatter

    command = subcommands.add_parser(
        "install", parents=[common], formatter_class=plain,
        help="create <base>/venv with the pinned OpenStack services",
        description="Create <base>/venv and pip-install the pinned services "
        "(tools/devcloud-requirements.txt as constraints). A no-op when the stamp "
        "(hash of the pin file) matches. Installs rabbitmq-server / mariadb-server "
        "with apt only when their binaries are missing.")
    command.add_argument("--force", action="store_true", help="re-run pip even if the stamp matches")
    command.set_defaults(func=commands.cmd_install)

    command = subcommands.add_parser(
        "start", parents=[common], formatter_class=plain,
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
    command.set_defaults(func=commands.cmd_start)

    command = subcommands.add_parser(
        "status", parents=[common], formatter_class=plain,
        help="show pid, state and memory of each service",
        description="Show each devcloud service (pid, up/down, RSS of its process "
        "group, port, log) and the shared RabbitMQ/MariaDB. Exit status 1 if "
        "anything is down.")
    command.add_argument("--json", action="store_true", help="print machine-readable JSON")
    command.set_defaults(func=commands.cmd_status)

    command = subcommands.add_parser(
        "stop", parents=[common], formatter_class=plain,
        help="stop the processes the devcloud started (data is kept)",
        description="TERM the process group of every service the devcloud started "
        "(by pid file), KILL leftovers after 10 s. A RabbitMQ or MariaDB that the "
        "devcloud did not start is never touched; one it started itself is stopped "
        "too unless --keep-infra. Data is kept: the next start takes 15-20 s.")
    command.add_argument("--keep-infra", action="store_true",
                         help="leave a RabbitMQ/MariaDB that the devcloud started running")
    command.set_defaults(func=commands.cmd_stop)

    command = subcommands.add_parser(
        "wipe", parents=[common], formatter_class=plain,
        help="stop and delete all state (keeps the venv unless --all)",
        description="stop, then DROP the devcloud databases and DB user, delete "
        "its RabbitMQ vhost, and remove configs, data, logs and output files under "
        "the base folder. The venv is kept unless --all.")
    command.add_argument("--all", action="store_true", help="also remove the venv")
    command.add_argument("--keep-infra", action="store_true",
                         help="leave a RabbitMQ/MariaDB that the devcloud started running")
    command.set_defaults(func=commands.cmd_wipe)

    names = [service.name for service in SERVICES]
    command = subcommands.add_parser(
        "restart", parents=[common], formatter_class=plain,
        help="stop and start one service, e.g. keystone",
        description="Stop one service (TERM its process group), start it again, "
        "wait until it is ready, then check that tokens, the Nova API and "
        f"nova-compute work. SERVICE is one of: {', '.join(names)}.")
    command.add_argument("service", metavar="SERVICE", choices=names,
                         help=f"one of: {', '.join(names)}")
    command.set_defaults(func=commands.cmd_restart)
    return parser


@contextlib.contextmanager
def _exclusive(settings: Settings, command: str) -> Iterator[None]:
    """One state-changing command per base folder at a time (CI and a developer
    may share the machine); status only reads, so it doesn't lock."""
    if command == "status":
        yield
        return
    os.makedirs(settings.base, exist_ok=True)
    with open(os.path.join(settings.base, ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"devcloud: another devcloud command runs on {settings.base}; waiting", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; a failure prints its error and the tail of the log that explains it."""
    args = build_parser().parse_args(argv)
    settings = from_args(args)
    try:
        with _exclusive(settings, args.command):
            return args.func(settings, args)
    except DevcloudError as error:
        print_error(str(error))
        if error.log:
            print(f"----- last lines of {error.log} -----", file=sys.stderr)
            print(tail(error.log), file=sys.stderr)
            print("-----", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except BrokenPipeError:  # e.g. `status --json | head`
        sys.stderr.close()
        return 0
