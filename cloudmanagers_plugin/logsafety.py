"""What the libraries may log: their level, and no secret from a request or response body.

At DEBUG, novaclient and keystoneauth log every HTTP body, including a create's base64
``user_data`` and the ``adminPass`` Nova answers with. So the libraries stay at INFO unless
``[log] libraries`` asks for more, and even then a filter on the log handlers replaces those
values before any line is written.
"""

import logging
import re
from typing import Iterable

LIBRARY_LOGGERS = ("keystoneauth", "keystoneclient", "novaclient", "urllib3", "requests", "stevedore")

# "user_data": "...", 'adminPass': '...', user_data=... (JSON, Python reprs, curl -d bodies)
_SECRET = re.compile(
    r"""(?P<key>["']?(?:user_data|user-data|userdata|adminPass|admin_pass)["']?\s*[:=]\s*)"""
    r"""(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^\s,}&]+)"""
)
REDACTED = '"***"'


def redact(text: str) -> str:
    """``text`` with the value of every user_data / adminPass key replaced."""
    return _SECRET.sub(lambda found: found.group("key") + REDACTED, text)


class RedactSecrets(logging.Filter):
    """A handler filter: records naming a secret key are rewritten, the rest pass untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def limit_library_logging(project_level: int, library_level: int, handlers: Iterable[logging.Handler]) -> None:
    """Libraries log at ``library_level`` or above (never below the project's level); the
    given handlers redact secrets from every record they write."""
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(project_level, library_level))
    for handler in handlers:
        if not any(isinstance(existing, RedactSecrets) for existing in handler.filters):
            handler.addFilter(RedactSecrets())
