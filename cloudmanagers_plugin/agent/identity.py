"""The agent's uuid, kept across restarts.

The uuid names the agent's queue. The legacy agent drew a new one at every start when none was
configured, so each restart consumed from a fresh queue and requests sent to the old one were
lost; here a generated uuid is written to a state file once and read back afterwards.
"""

import os
import tempfile
import uuid as uuidlib

from ..errors import ConfigError


def _checked(value: str, origin: str) -> str:
    """The uuid names a durable queue: a typo would leave a stray queue behind, so refuse it."""
    try:
        canonical = str(uuidlib.UUID(value)) == value.lower()
    except ValueError:
        canonical = False
    if not canonical:
        raise ConfigError(
            f"{origin} '{value}' is not a uuid (like {uuidlib.uuid4()}); it names the agent's queue"
        )
    return value


def resolve_uuid(configured: str, state_file: str, origin: str = "[rabbitmq] uuid") -> str:
    """Return ``configured`` if set, else the uuid stored in ``state_file``, else a new stored one.

    ``origin`` says where ``configured`` came from (``--uuid`` or the file), for the error.
    """
    if configured:
        return _checked(configured, origin)
    try:
        with open(state_file, encoding="utf-8") as handle:
            stored = handle.read().strip()
    except FileNotFoundError:
        stored = ""
    except OSError as err:
        raise ConfigError(f"cannot read the agent uuid file {state_file}: {err.strerror}") from None
    return _checked(stored, f"the uuid in {state_file}") if stored else _create(state_file)


def _create(state_file: str) -> str:
    """Write a new uuid atomically, so a crash mid-write never leaves a half uuid behind."""
    new = str(uuidlib.uuid4())
    directory = os.path.dirname(os.path.abspath(state_file))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".uuid-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(new + "\n")
        os.replace(tmp, state_file)
    except OSError as err:
        raise ConfigError(
            f"no uuid configured and cannot store a generated one in {state_file}: {err.strerror} "
            "(set [rabbitmq] uuid, pass --uuid, or point [agent] uuid_file to a writable path)"
        ) from None
    return new
