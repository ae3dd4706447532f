"""The plugin's configuration: one INI section per cloud manager.

The file is parsed once and parsed again only when it changes on disk (its inode, size or
mtime), so a busy agent does not re-read it per message as the 2013 plugin did, yet an
operator's edit takes effect without a restart. Each section is validated on its own: a typo
in one cloud manager's section gives that section a clear error (naming file, section and
key) while the others keep working.
"""

import configparser
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass, field, replace
from typing import Dict, List, Mapping, Optional, Tuple, Union

from .errors import ConfigError, MissingLibrary, NotFound
from .transport_url import TransportUrl
from .transport_url import parse as parse_transport_url
from .values import parse_bool

LOG = logging.getLogger(__name__)

ENV_VAR = "CLOUDMANAGERS_CONF"
DEFAULT_PATHS = ("/etc/synapse/cloudmanagers.conf", "/etc/synapse-agent/plugins/cloudmanagers.conf")
NOT_A_CLOUD_MANAGER = "general"
INTERFACES = ("public", "internal", "admin")
CLOUDS_YAML_PATHS = (
    "clouds.yaml",
    os.path.expanduser("~/.config/openstack/clouds.yaml"),
    "/etc/openstack/clouds.yaml",
)
KNOWN_KEYS = frozenset(
    {
        "cm_type", "url", "keystone_base_url", "auth_url", "nova_base_url", "tenant_name",
        "project_name", "username", "password", "user_domain_name", "project_domain_name",
        "region_name", "interface", "cacert", "insecure", "timeout", "cloud", "clouds_yaml",
        "networks", "compute_api_version", "protect_running", "password_file",
        "application_credential_id", "application_credential_name", "application_credential_secret",
        "application_credential_secret_file", "notifications_url", "notifications_exchange", "remediate",
        "notifications_cacert",
    }
)


@dataclass(frozen=True)
class CloudManagerConfig:
    """One validated cloud manager section. Secrets never appear in repr().

    With an application credential (``application_credential_secret`` and its id, or its name
    and ``username``), that is what authenticates; ``password`` is then optional, kept only for
    ``cloudmanagers credentials rotate``.
    """

    name: str
    source: str
    cm_type: str
    url: str
    auth_url: str
    username: str
    password: str = field(repr=False)
    project_name: str
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    region_name: Optional[str] = None
    interface: str = "public"
    cacert: Optional[str] = None
    insecure: bool = False
    timeout: float = 30.0
    compute_url: Optional[str] = None
    networks: str = "auto"
    compute_api_version: str = "2.52"
    protect_running: bool = False
    password_file: Optional[str] = field(default=None, repr=False)
    application_credential_id: Optional[str] = None
    application_credential_name: Optional[str] = None
    application_credential_secret: Optional[str] = field(default=None, repr=False)
    application_credential_secret_file: Optional[str] = None
    notifications_url: Optional[TransportUrl] = None  # the cloud's bus, for Nova's notifications (and its CA)
    notifications_exchange: str = "nova"
    remediate: bool = False  # re-apply a monitored VM's desired state when it drifts

    @property
    def uses_application_credential(self) -> bool:
        return bool(self.application_credential_secret)

    @property
    def project_label(self) -> str:
        """The project as an operator reads it: an application credential carries its own."""
        if self.uses_application_credential:
            credential = self.application_credential_id or self.application_credential_name
            return f"{self.project_name or '?'} (application credential {credential})"
        return self.project_name

    def where(self, key: str) -> str:
        """'<file>: section [<name>]: key '<key>'', the prefix of every error about a key."""
        return f"{self.source}: section [{self.name}]: key '{key}'"


def resolve_path(explicit: Optional[str] = None) -> str:
    """Explicit path, else $CLOUDMANAGERS_CONF, else the first default that exists."""
    if explicit:
        return explicit
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    for candidate in DEFAULT_PATHS:
        if os.path.exists(candidate):
            return candidate
    return DEFAULT_PATHS[0]


def identity_v3_url(url: str) -> str:
    """Keystone v2.0 is gone upstream: a legacy ``.../v2.0`` (or unversioned) URL means v3."""
    url = url.rstrip("/")
    if url.endswith("/v3"):
        return url
    return re.sub(r"/v2\.0$", "", url) + "/v3"


def compute_v21_url(url: str) -> str:
    """A legacy Nova ``.../v2/[tenant]`` URL means the same host's microversioned ``/v2.1``."""
    url = url.rstrip("/")
    base = re.sub(r"/v2(\.\d+)?(/[^/]*)?$", "", url)
    return base + "/v2.1"


def _origin(url: str) -> str:
    match = re.match(r"^([a-z][a-z0-9+.-]*://[^/]+)", url, re.I)
    return match.group(1) if match else url


class ConfigFile:
    """The cloud managers file, cached until it changes. Thread-safe."""

    def __init__(self, path: Optional[str] = None):
        self._explicit = path
        self._lock = threading.Lock()
        self._stamp: Optional[Tuple] = None
        self._path = ""
        self._sections: Dict[str, Union[CloudManagerConfig, ConfigError]] = {}
        self._warnings: Dict[str, List[str]] = {}
        self._error: Optional[ConfigError] = None

    @property
    def path(self) -> str:
        return self._path or resolve_path(self._explicit)

    def section_ids(self) -> List[str]:
        """The cloud manager ids, in file order (invalid sections included)."""
        self._refresh()
        return list(self._sections)

    def get(self, section: str) -> CloudManagerConfig:
        """The validated section, or the section's ConfigError, or NotFound."""
        self._refresh()
        entry = self._sections.get(section)
        if entry is None:
            known = ", ".join(self._sections) or "none"
            raise NotFound(f"unknown cloud manager '{section}' (configured in {self.path}: {known})")
        if isinstance(entry, ConfigError):
            raise entry
        return entry

    def all(self) -> Mapping[str, Union[CloudManagerConfig, ConfigError]]:
        """Every section, valid or not (for check-config)."""
        self._refresh()
        return dict(self._sections)

    def warnings(self) -> Dict[str, List[str]]:
        """What is suspicious but not fatal, by section ("" for the file itself), for check-config."""
        self._refresh()
        return {key: list(found) for key, found in self._warnings.items()}

    def _refresh(self) -> None:
        path = resolve_path(self._explicit)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise ConfigError(
                f"{path}: cannot read the cloud managers file ({exc.strerror}); "
                f"pass --config, set {ENV_VAR}, or create {DEFAULT_PATHS[0]}"
            ) from None
        stamp = (path, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if stamp != self._stamp:
                self._load(path, st)
                self._stamp = stamp
                self._path = path
            if self._error:
                raise self._error

    def _load(self, path: str, st: os.stat_result) -> None:
        self._sections, self._warnings = {}, {}
        if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
            self._warn("", f"{path} is readable by other users and holds passwords: chmod 640 it")
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle)
        except OSError as exc:
            self._error = ConfigError(
                f"{path}: cannot read the cloud managers file: {exc.strerror or exc} "
                f"(uid {os.geteuid()} needs read access: give that user's group read access, mode 0640)"
            )
            return
        except (UnicodeDecodeError, configparser.Error) as exc:
            self._error = ConfigError(f"{path}: not a valid INI file: {_first_line(exc)}")
            return
        self._error = None
        for name in parser.sections():
            if name.lower() == NOT_A_CLOUD_MANAGER:
                continue
            for key in _unknown_keys(parser[name]):
                self._warn(name, f"{path}: section [{name}]: key '{key}' is unknown and ignored")
            try:
                self._sections[name] = _section(path, name, parser[name])
            except ConfigError as exc:
                self._sections[name] = exc
        LOG.info("loaded %d cloud manager(s) from %s", len(self._sections), path)

    def _warn(self, section: str, text: str) -> None:
        LOG.warning("%s", text)
        self._warnings.setdefault(section, []).append(text)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _unknown_keys(raw: configparser.SectionProxy) -> List[str]:
    return [key for key in raw if key not in KNOWN_KEYS and key not in raw.parser.defaults()]


def _section(path: str, name: str, raw: configparser.SectionProxy) -> CloudManagerConfig:
    """Validate one section (merged over its clouds.yaml entry when ``cloud`` is set)."""

    def where(key: str) -> str:
        return f"{path}: section [{name}]: key '{key}'"

    values: Dict[str, str] = {}
    if raw.get("cloud"):
        values.update(_from_clouds_yaml(raw["cloud"], raw.get("clouds_yaml"), where("cloud")))
    values.update({key: value.strip() for key, value in raw.items()})

    def required(*keys: str) -> str:
        for key in keys:
            if values.get(key):
                return values[key]
        raise ConfigError(f"{where(keys[0])} is missing or empty")

    cm_type = required("cm_type").lower()
    auth_url = required("keystone_base_url", "auth_url")
    if not re.match(r"^https?://", auth_url):
        raise ConfigError(f"{where('keystone_base_url')} must be an http(s) URL, got '{auth_url}'")
    interface = values.get("interface", "public").lower().replace("url", "")
    if interface not in INTERFACES:
        raise ConfigError(f"{where('interface')} must be one of {', '.join(INTERFACES)}, got '{interface}'")
    cacert = values.get("cacert") or None
    _require_file(cacert, f"{where('cacert')}: file")
    compute_url = values.get("nova_base_url") or None
    app_id = values.get("application_credential_id") or None
    app_name = values.get("application_credential_name") or None
    # a secret file without an id or name is where `cloudmanagers credentials create` will write
    app_secret = (_secret(values, "application_credential_secret", where) if app_id or app_name
                  else values.get("application_credential_secret") or None)
    password = _secret(values, "password", where)
    if app_secret or app_id or app_name:
        if not app_secret:
            raise ConfigError(f"{where('application_credential_secret')} is missing: an application credential needs "
                              "its secret (or application_credential_secret_file)")
        if not app_id and not (app_name and values.get("username")):
            raise ConfigError(f"{where('application_credential_id')} is missing: give it, or "
                              "application_credential_name with username")
        username = values.get("username") or ""
        project_name = values.get("project_name") or values.get("tenant_name") or ""
    else:
        username = required("username")
        if not password:
            raise ConfigError(f"{where('password')} is missing or empty (or set password_file, or an "
                              "application credential)")
        project_name = required("project_name", "tenant_name")
    return CloudManagerConfig(
        name=name,
        source=path,
        cm_type=cm_type,
        url=values.get("url") or _origin(auth_url),
        auth_url=identity_v3_url(auth_url),
        username=username,
        password=password or "",
        project_name=project_name,
        user_domain_name=values.get("user_domain_name") or "Default",
        project_domain_name=values.get("project_domain_name") or "Default",
        region_name=values.get("region_name") or None,
        interface=interface,
        cacert=cacert,
        insecure=_boolean(values.get("insecure", "false"), where("insecure")),
        timeout=_positive(values.get("timeout", "30"), where("timeout")),
        compute_url=compute_v21_url(compute_url) if compute_url else None,
        networks=values.get("networks") or "auto",
        compute_api_version=_microversion(values.get("compute_api_version") or "2.52", where("compute_api_version")),
        protect_running=_boolean(values.get("protect_running", "false"), where("protect_running")),
        password_file=values.get("password_file") or None,
        application_credential_id=app_id,
        application_credential_name=app_name,
        application_credential_secret=app_secret,
        application_credential_secret_file=values.get("application_credential_secret_file") or None,
        notifications_url=_bus(values, cacert, where),
        notifications_exchange=values.get("notifications_exchange") or "nova",
        remediate=_boolean(values.get("remediate", "false"), where("remediate")),
    )


def _bus(values: Dict[str, str], cacert: Optional[str], where) -> Optional[TransportUrl]:
    """The section's bus, if it names one, with the CA bundle its TLS verifies the brokers against:
    ``notifications_cacert`` (or oslo's ``?ssl_ca_file=`` in the URL), else the section's ``cacert``
    (a private cloud's one CA usually signs both its APIs and its bus), else the system's CAs."""
    if not values.get("notifications_url"):
        return None
    url = parse_transport_url(values["notifications_url"], where("notifications_url"))
    option = values.get("notifications_cacert") or None
    if option and url.ca_file:
        raise ConfigError(f"{where('notifications_cacert')}: set it or ssl_ca_file in notifications_url, not both")
    _require_file(url.ca_file, f"{where('notifications_url')}: ssl_ca_file")
    _require_file(option, f"{where('notifications_cacert')}: file")
    return replace(url, ca_file=option or url.ca_file or cacert)


def _require_file(path: Optional[str], what: str) -> None:
    """A CA bundle the section names must be there: a missing one is a config error, never a
    silent fall back to other CAs."""
    if path and not os.path.isfile(path):
        raise ConfigError(f"{what} {path} does not exist")


def _secret(values: Dict[str, str], key: str, where) -> Optional[str]:
    """A secret set in the section, or read from the file ``<key>_file`` names (its first line).

    The file is read whenever the cloud managers file is (re)loaded, not watched on its own: a
    rotation writes it first and the cloud managers file (the new id) second, so a reader never
    pairs a new secret with an old id.
    """
    path = values.get(f"{key}_file")
    if path and values.get(key):
        raise ConfigError(f"{where(key)}: set {key} or {key}_file, not both")
    if not path:
        return values.get(key) or None
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as handle:
            secret = handle.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where(key + '_file')}: cannot read {path} ({getattr(exc, 'strerror', None) or exc})") from None
    if not secret:
        raise ConfigError(f"{where(key + '_file')}: {path} is empty")
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        LOG.warning("%s is readable by other users and holds a secret: chmod 600 it", path)
    return secret


def _boolean(value: str, where: str) -> bool:
    try:
        return parse_bool(value)
    except ValueError as err:
        raise ConfigError(f"{where} {err}") from None


def _microversion(value: str, where: str) -> str:
    """Nova 2.47 or later: servers then embed their flavor, so a VM read is one request."""
    match = re.match(r"^2\.(\d+)$", value)
    if not match or int(match.group(1)) < 47:
        raise ConfigError(f"{where} must be a Nova microversion of 2.47 or later, got '{value}'")
    return value


def _positive(value: str, where: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number <= 0:
        raise ConfigError(f"{where} must be a positive number of seconds, got '{value}'")
    return number


def _from_clouds_yaml(cloud: str, explicit: Optional[str], where: str) -> Dict[str, str]:
    """Flatten one clouds.yaml entry (and its secure.yaml twin) into section keys."""
    candidates = [explicit] if explicit else [os.environ.get("OS_CLIENT_CONFIG_FILE"), *CLOUDS_YAML_PATHS]
    for path in filter(None, candidates):
        if os.path.isfile(path):
            break
    else:
        raise ConfigError(f"{where}: no clouds.yaml found (looked in {', '.join(filter(None, candidates))})")
    entry = _yaml_cloud(path, cloud, where)
    secure = os.path.join(os.path.dirname(path), "secure.yaml")
    if os.path.isfile(secure):
        _merge(entry, _yaml_cloud(secure, cloud, where, required=False))
    auth = entry.get("auth") or {}
    flat = {
        "auth_url": auth.get("auth_url"),
        "username": auth.get("username"),
        "password": auth.get("password"),
        "project_name": auth.get("project_name") or auth.get("tenant_name"),
        "application_credential_id": auth.get("application_credential_id"),
        "application_credential_name": auth.get("application_credential_name"),
        "application_credential_secret": auth.get("application_credential_secret"),
        "user_domain_name": auth.get("user_domain_name") or auth.get("domain_name"),
        "project_domain_name": auth.get("project_domain_name") or auth.get("domain_name"),
        "region_name": entry.get("region_name"),
        "interface": entry.get("interface"),
        "cacert": entry.get("cacert"),
        "timeout": entry.get("api_timeout"),
    }
    if entry.get("verify") is False:
        flat["insecure"] = "true"
    return {key: str(value) for key, value in flat.items() if value not in (None, "")}


def _yaml_cloud(path: str, cloud: str, where: str, required: bool = True) -> dict:
    try:
        import yaml  # only clouds.yaml needs it: the plugin itself must import without PyYAML
    except ImportError:
        raise MissingLibrary(
            f"{where}: reading {path} needs the Python library PyYAML, which is not installed for the "
            "Python that runs the plugin; install it (RPM: yum install python3-pyyaml; pip: pip install PyYAML)"
        ) from None
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{where}: cannot read {path}: {_first_line(exc)}") from None
    entry = (document.get("clouds") or {}).get(cloud)
    if entry is None and required:
        raise ConfigError(f"{where}: cloud '{cloud}' is not in {path}")
    return entry or {}


def _merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
