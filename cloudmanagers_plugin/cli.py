"""The ``cloudmanagers`` command: ``check-config`` here, ``agent`` (agent/service.py), ``call`` (call.py)
and ``watch`` (watch.py).

Exit codes shared by every subcommand: 2 means the configuration (or the command line) is
wrong and must be fixed first; ``check-config`` exits 1 when the file is right but a cloud
says no (credentials refused, endpoint down).
"""

import argparse
import json
import logging
import re
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from . import call, credentials, logsetup, watch
from .agent import command as agent_command, settings
from .config import DEFAULT_PATHS, ENV_VAR, CloudManagerConfig
from .errors import EXIT_CONFIG, CloudManagerError, ConfigError
from .render import table
from .version import __version__

if TYPE_CHECKING:
    from .controller import CloudmanagersController

EXIT_CLOUD = 1
COLUMNS = ("section", "type", "keystone", "project", "result")


def check_config(args: argparse.Namespace) -> int:
    """Validate every section, authenticate it and reach its compute API; one row per section."""
    from .controller import CloudmanagersController  # here, so that `call` starts without it

    controller = CloudmanagersController(config_path=args.config)
    try:
        sections = controller.config.all()
        warnings = controller.config.warnings()
    except CloudManagerError as exc:
        return _report_fatal(args, controller.config.path, str(exc))
    if not sections:
        return _report_fatal(args, controller.config.path, f"{controller.config.path}: no cloud manager section")
    rows = [_file_row(text) for text in warnings.get("", [])]
    rows += [_section_row(controller, name, section, warnings.get(name, [])) for name, section in sections.items()]
    results = {row["result"] for row in rows}
    if "INVALID" in results or (args.strict and "WARN" in results):
        code = EXIT_CONFIG
    else:
        code = EXIT_CLOUD if "FAILED" in results else 0
    if args.json:
        print(json.dumps({"file": controller.config.path, "sections": rows, "exit": code}, indent=2))
    else:
        print(f"{controller.config.path}: {len(sections)} cloud manager(s)")
        header = tuple(column.upper() for column in COLUMNS)
        print(table([header] + [_cells(row) for row in rows]))
    return code


def _report_fatal(args: argparse.Namespace, path: str, error: str) -> int:
    if args.json:
        print(json.dumps({"file": path, "error": error, "exit": EXIT_CONFIG}, indent=2))
    else:
        print(f"error: {error}", file=sys.stderr)
    return EXIT_CONFIG


def _cells(row: Dict[str, str]) -> Tuple[str, ...]:
    result = row["result"] + (f": {row['message']}" if row["message"] else "")
    return tuple(row[column] for column in COLUMNS[:-1]) + (result,)


def _file_row(warning: str) -> Dict[str, str]:
    return {"section": "(file)", "type": "-", "keystone": "-", "project": "-", "result": "WARN", "message": warning}


def _section_row(
    controller: "CloudmanagersController", name: str, section: Any, warnings: List[str]
) -> Dict[str, str]:
    if isinstance(section, CloudManagerError):
        return {"section": name, "type": "-", "keystone": "-", "project": "-", "result": "INVALID",
                "message": str(section)}
    result, message = _live_check(controller, section)
    if result == "OK" and warnings:
        result, message = "WARN", "; ".join(warnings)
    return {"section": name, "type": section.cm_type, "keystone": section.auth_url,
            "project": section.project_label, "result": result, "message": message}


def _live_check(controller: "CloudmanagersController", section: CloudManagerConfig) -> Tuple[str, str]:
    """Authenticate, then one GET of the compute API, whose maximum microversion must cover ours."""
    try:
        driver = controller.driver(section.name)
        driver.authenticate()
        maximum = driver.compute_max_version()
    except ConfigError as exc:
        return "INVALID", str(exc)
    except CloudManagerError as exc:
        return "FAILED", str(exc)
    if _version_tuple(section.compute_api_version) > _version_tuple(maximum):
        return "INVALID", (f"{section.where('compute_api_version')} is {section.compute_api_version}, "
                           f"above this cloud's maximum {maximum}")
    return "OK", ""


def _version_tuple(text: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def build_parser() -> argparse.ArgumentParser:
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                           help="more logging (-vv for debug)")
    parser = argparse.ArgumentParser(
        prog="cloudmanagers",
        description="Manage private OpenStack clouds through synapse AMQP messages.",
        epilog=f"The cloud managers file: --config, else ${ENV_VAR}, else {' or '.join(DEFAULT_PATHS)}.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check-config", parents=[verbosity],
        help="validate the cloud managers file, authenticate each section and reach its compute API",
        description="Validate every section of the cloud managers file, get a Keystone token for each and "
                    "read its compute API's version (one GET). Exit 0 all OK (WARN rows allowed), 1 a cloud "
                    "refused or could not be reached, 2 the file or a section is invalid (with --strict: "
                    "also on warnings).",
    )
    check.add_argument("--config", metavar="PATH", help="cloud managers file")
    check.add_argument("--json", action="store_true", help="print the rows as JSON")
    check.add_argument("--strict", action="store_true",
                       help="warnings (unknown keys, a file readable by others) fail the check too (exit 2)")
    check.set_defaults(func=check_config)
    broker = settings.command_line_options(verbosity)
    agent_command.register(commands, broker)
    call.register(commands, broker)
    watch.register(commands, broker)
    credentials.register(commands, verbosity)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logsetup.configure(level)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
