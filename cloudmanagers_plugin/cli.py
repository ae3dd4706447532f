"""The ``cloudmanagers`` command: ``check-config`` here, ``agent`` and ``call`` from the agent package."""

import argparse
import logging
import sys
from typing import List, Optional

from .agent import commands as agent_commands
from .agent.render import table
from .config import DEFAULT_PATHS, ENV_VAR, CloudManagerConfig
from .controller import CloudmanagersController
from .errors import CloudManagerError
from .version import __version__


def check_config(args: argparse.Namespace) -> int:
    """Validate every section and authenticate it; print one table row per cloud manager."""
    controller = CloudmanagersController(config_path=args.config)
    try:
        sections = controller.config.all()
    except CloudManagerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = [("SECTION", "TYPE", "KEYSTONE", "PROJECT", "RESULT")]
    failed = 0
    for name, section in sections.items():
        if isinstance(section, CloudManagerError):
            rows.append((name, "-", "-", "-", f"INVALID: {section}"))
            failed += 1
            continue
        result = _authenticate(controller, section)
        failed += result != "OK"
        rows.append((name, section.cm_type, section.auth_url, section.project_name, result))
    print(f"{controller.config.path}: {len(sections)} cloud manager(s)")
    print(table(rows))
    if not sections:
        print("error: no cloud manager section in the file", file=sys.stderr)
        return 1
    return 1 if failed else 0


def _authenticate(controller: CloudmanagersController, section: CloudManagerConfig) -> str:
    try:
        controller.driver(section.name).authenticate()
    except CloudManagerError as exc:
        return f"FAILED: {exc}"
    return "OK"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudmanagers",
        description="Manage private OpenStack clouds through synapse AMQP messages.",
        epilog=f"The cloud managers file: --config, else ${ENV_VAR}, else {' or '.join(DEFAULT_PATHS)}.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check-config", help="validate the cloud managers file and authenticate each section",
        description="Validate every section of the cloud managers file and get a Keystone token for each; "
                    "exit 1 if any section is invalid or cannot authenticate.",
    )
    check.add_argument("--config", metavar="PATH", help="cloud managers file")
    check.set_defaults(func=check_config)
    agent_commands.register(commands)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
