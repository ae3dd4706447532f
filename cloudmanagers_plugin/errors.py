"""The project's error classes.

Every failure the requester should hear about is a ``CloudManagerError``: its text goes
verbatim into the ``error`` field of the reply, so it must say what to fix and must never
carry a password or a token. The subclasses let callers (and tests) tell the kinds apart.
"""

EXIT_CONFIG = 2  # the exit status of every ``cloudmanagers`` command for a configuration to fix


class CloudManagerError(Exception):
    """Base class: a failure whose message is safe to send back to the requester."""


class BadRequest(CloudManagerError):
    """The message itself is wrong: missing, empty or wrongly typed attribute, unknown action."""


class ConfigError(CloudManagerError):
    """The configuration file, or one of its sections, is missing or invalid."""


class NotFound(CloudManagerError):
    """A cloud manager, VM, flavor or image that was named does not exist."""


class Conflict(CloudManagerError):
    """The request cannot be done in the current state (wrong VM state, duplicate name...)."""


class AuthError(CloudManagerError):
    """Keystone refused the credentials, or OpenStack refused the operation (401/403)."""


class BackendError(CloudManagerError):
    """OpenStack is unreachable, timed out or answered with a server error (5xx)."""


class ServerFault(CloudManagerError):
    """The VM went to ERROR; the message carries Nova's fault."""


class WaitTimeout(CloudManagerError):
    """The VM did not reach the awaited state within the requested ``wait``."""


class MissingLibrary(ConfigError):
    """A Python library that a driver needs is not installed where the plugin runs."""


class RateLimited(BackendError):
    """OpenStack answered 429 (or 503) with ``Retry-After``: it asks the client to come back later."""

    def __init__(self, message: str, status: int, retry_after: float):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
