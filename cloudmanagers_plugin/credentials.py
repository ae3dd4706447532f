"""``cloudmanagers credentials create|rotate SECTION``: a section's Keystone application credential.

Why: a section then holds a secret that opens one project only, can expire, and can be
replaced without touching the user's password. The steps keep a running agent serving:
1. authenticate as the section's user with the password (a restricted application credential
   may not create another one);
2. create a restricted application credential for the section's project;
3. write it: the secret file first (``application_credential_secret_file``) if the section has
   one, then the cloud managers file (id, and the secret when it has no file), each atomically
   with its owner and mode, other sections and comments untouched. An agent re-reads the file on
   its next request and builds a new session from it;
4. verify: authenticate with what the file now says, exactly as the agent will (on failure the
   files are put back and the new credential deleted);
5. ``rotate`` only: wait ``--grace`` seconds, so that requests which started with the old
   credential finish, then delete the old one.
"""

import argparse
import datetime
import getpass
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from .conffile import replace_atomically, set_keys
from .config import CloudManagerConfig, ConfigFile
from .errors import CloudManagerError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_GRACE = 10.0


class CredentialError(Exception):
    """A step failed; the message says which and what to do."""


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """The ``credentials`` subcommand; ``common`` holds the options every subcommand takes (-v)."""
    parser = commands.add_parser(
        "credentials", parents=[common], help="create or rotate a section's Keystone application credential",
        description="Create (or replace) the Keystone application credential a section authenticates with, "
                    "and write it into the cloud managers file without stopping a running agent.",
    )
    actions = parser.add_subparsers(dest="credentials_action", metavar="ACTION")
    for name, text in (("create", "give a section that authenticates with a password an application credential"),
                       ("rotate", "replace a section's application credential by a new one, then delete the old one")):
        action = actions.add_parser(name, parents=[common], help=text, description=text + ".")
        action.add_argument("section", metavar="SECTION", help="the cloud manager id (section name)")
        action.add_argument("--config", metavar="PATH", help="cloud managers file")
        action.add_argument("--expires", metavar="DAYS", type=float,
                            help="the new credential expires after DAYS days (default: never)")
        action.add_argument("--password-file", metavar="PATH",
                            help="the user's password, when the section has neither password nor password_file "
                                 "(else $OS_PASSWORD, else asked on the terminal)")
        if name == "rotate":
            action.add_argument("--grace", metavar="SECONDS", type=float, default=DEFAULT_GRACE,
                                help=f"wait before deleting the old credential, so that requests already running "
                                     f"with it finish (default {DEFAULT_GRACE:g})")
        action.set_defaults(func=run)
    parser.set_defaults(func=lambda args: parser.print_help() or EXIT_USAGE)


def run(args: argparse.Namespace) -> int:
    rotate = args.credentials_action == "rotate"
    try:
        files = ConfigFile(args.config)
        section = files.get(args.section)
        _check_usage(section, rotate, args)
        password = _password(section, args.password_file)
    except (CloudManagerError, CredentialError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        keystone, user_id = _keystone(section, password)
        created = _create(keystone, user_id, section, args.expires)
        try:
            undo = _write(files.path, section, created)
        except OSError as exc:
            raise CredentialError(f"cannot write {exc.filename}: {exc.strerror}; the new credential {created.id} "
                                  f"{_discard(keystone, user_id, created.id)}") from None
        try:
            _verify(files.path, section.name)
        except CredentialError as failure:
            undo()
            raise CredentialError(f"{failure}; the new credential {created.id} {_discard(keystone, user_id, created.id)}")
        print(f"{section.name}: application credential {created.name} ({created.id}) written to {files.path}"
              + (f", secret in {section.application_credential_secret_file}"
                 if section.application_credential_secret_file else "")
              + (f"; expires {created.expires_at}" if created.expires_at else ""))
        if rotate:
            time.sleep(max(0.0, args.grace))
            # Keystone may have closed the idle kept-alive connection meanwhile: start a fresh one
            keystone.session.session.close()
            old = _delete_old(keystone, user_id, section)
            print(f"{section.name}: old application credential {old} deleted")
    except CredentialError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _check_usage(section: CloudManagerConfig, rotate: bool, args: argparse.Namespace) -> None:
    if rotate and not section.uses_application_credential:
        raise CredentialError(f"section [{section.name}] has no application credential to rotate; "
                              f"use: cloudmanagers credentials create {section.name}")
    if not rotate and section.uses_application_credential:
        raise CredentialError(f"section [{section.name}] already has an application credential; "
                              f"use: cloudmanagers credentials rotate {section.name}")
    if not (section.username and section.project_name):
        raise CredentialError(f"section [{section.name}] needs username and project_name: the credential is made "
                              "by that user, for that project")
    if args.expires is not None and args.expires <= 0:
        raise CredentialError("--expires must be a positive number of days")


def _password(section: CloudManagerConfig, password_file: Optional[str]) -> str:
    """The user's password: the section's, else --password-file, else $OS_PASSWORD, else asked."""
    if section.password:
        return section.password
    if password_file:
        with open(password_file, encoding="utf-8") as handle:
            return handle.readline().strip()
    if os.environ.get("OS_PASSWORD"):
        return os.environ["OS_PASSWORD"]
    if sys.stdin.isatty():
        return getpass.getpass(f"password of {section.username} (section [{section.name}]): ")
    raise CredentialError(f"the password of {section.username} is needed (a restricted application credential may "
                          "not create another one): give --password-file, or set OS_PASSWORD")


def _keystone(section: CloudManagerConfig, password: str) -> Tuple[Any, str]:
    """A keystoneclient as the section's user, scoped to its project, and the user's id."""
    try:
        from keystoneauth1 import exceptions as ks_exc
        from keystoneauth1 import session as ks_session
        from keystoneauth1.identity import v3
        from keystoneclient.v3 import client as ks_client
    except ImportError as exc:
        raise CredentialError(f"the Python library '{exc.name}' is needed: pip install python-keystoneclient "
                              "(RPM: python3-keystoneclient)") from None
    auth = v3.Password(auth_url=section.auth_url, username=section.username, password=password,
                       project_name=section.project_name, user_domain_name=section.user_domain_name,
                       project_domain_name=section.project_domain_name)
    verify = False if section.insecure else (section.cacert or True)
    session = ks_session.Session(auth=auth, verify=verify, timeout=section.timeout)
    try:
        user_id = session.get_user_id()
    except ks_exc.Unauthorized:
        raise CredentialError(f"Keystone at {section.auth_url} refused the password of {section.username} "
                              f"for project {section.project_name}") from None
    except ks_exc.ClientException as exc:
        raise CredentialError(f"cannot authenticate at {section.auth_url}: {type(exc).__name__}") from None
    return ks_client.Client(session=session, endpoint_override=section.auth_url, interface=section.interface), user_id


def _create(keystone: Any, user_id: str, section: CloudManagerConfig, expires_days: Optional[float]) -> Any:
    now = datetime.datetime.now(datetime.timezone.utc)
    expires_at = now + datetime.timedelta(days=expires_days) if expires_days else None
    try:
        return keystone.application_credentials.create(
            name=f"cloudmanagers-{section.name}-{now.strftime('%Y%m%dT%H%M%S%f')}",
            user=user_id,
            description=f"cloudmanagers section [{section.name}] ({section.source})",
            expires_at=expires_at,
            unrestricted=False,
        )
    except Exception as exc:  # keystoneclient raises its own and keystoneauth's errors
        raise CredentialError(f"Keystone did not create the application credential: {exc}") from None


def _write(path: str, section: CloudManagerConfig, created: Any):
    """Write the new credential (secret file first); return a function that puts the old files back."""
    with open(path, encoding="utf-8") as handle:
        old_text = handle.read()
    updates: Dict[str, Optional[str]] = {"application_credential_id": created.id,
                                         "application_credential_name": None}
    restore: List[Tuple[str, str]] = [(path, old_text)]
    secret_file = section.application_credential_secret_file
    if secret_file:
        if os.path.exists(secret_file):
            with open(secret_file, encoding="utf-8") as handle:
                restore.insert(0, (secret_file, handle.read()))
        replace_atomically(secret_file, created.secret + "\n")
        updates["application_credential_secret"] = None
    else:
        updates["application_credential_secret"] = created.secret
    replace_atomically(path, set_keys(old_text, section.name, updates))

    def undo() -> None:
        for file_path, text in reversed(restore):
            replace_atomically(file_path, text)

    return undo


def _verify(path: str, name: str) -> None:
    """Authenticate with what the file says now, through the same driver an agent uses."""
    try:
        section = ConfigFile(path).get(name)
        if not section.uses_application_credential:
            raise CredentialError(f"{path}: section [{name}] does not read back as an application credential")
        from .drivers import driver_class  # here, so that the other commands start without the drivers

        driver_class(section.cm_type, section.where("cm_type"))(section).authenticate()
    except CloudManagerError as exc:
        raise CredentialError(f"the new credential does not work, the file was put back: {exc}") from None


def _discard(keystone: Any, user_id: str, credential_id: str) -> str:
    try:
        keystone.application_credentials.delete(credential_id, user=user_id)
    except Exception as exc:  # keystoneclient raises its own and keystoneauth's errors
        return f"could not be deleted ({exc}): delete it by hand"
    return "was deleted"


def _delete_old(keystone: Any, user_id: str, section: CloudManagerConfig) -> str:
    old_id = section.application_credential_id
    try:
        if not old_id:
            found = keystone.application_credentials.list(user=user_id, name=section.application_credential_name)
            if not found:
                return f"{section.application_credential_name} (already gone)"
            old_id = found[0].id
        keystone.application_credentials.delete(old_id, user=user_id)
    except Exception as exc:  # the new one is in place: say what is left to clean up
        raise CredentialError(f"the new credential is in use, but deleting the old one ({old_id or section.application_credential_name}) "
                              f"failed: {exc}; delete it with: openstack application credential delete {old_id}") from None
    return old_id
