"""Driver registry: ``cm_type`` in a config section picks a driver class here."""

from typing import Dict, Type

from ..errors import ConfigError
from .base import CloudDriver

_REGISTRY: Dict[str, Type[CloudDriver]] = {}


def register_driver(cm_type: str, cls: Type[CloudDriver]) -> None:
    """Make ``cm_type = <cm_type>`` sections use ``cls``."""
    _REGISTRY[cm_type.lower()] = cls


def driver_class(cm_type: str, where: str = "cm_type") -> Type[CloudDriver]:
    """The class registered for ``cm_type``; ConfigError naming the known types otherwise."""
    try:
        return _REGISTRY[cm_type.lower()]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"{where}: unknown cloud manager type '{cm_type}' (supported: {known})") from None


def _register_builtin() -> None:
    from .openstack import OpenStackDriver

    register_driver("openstack", OpenStackDriver)


_register_builtin()
