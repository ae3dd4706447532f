"""Driver registry: ``cm_type`` in a config section picks a driver class here.

A built-in driver is named by its module, not imported, until a section needs it: the
OpenStack libraries are then imported for the first time. So the plugin always imports and
registers with a synapse agent, and the ``cloudmanagers`` command starts, on a host that lacks
them; a request that needs a missing library gets an error reply saying what to install.
"""

import importlib
from typing import Dict, Tuple, Type, Union

from ..errors import ConfigError, MissingLibrary
from .base import CloudDriver

# Python module -> (pip distribution, RPM package) of each library a built-in driver imports.
LIBRARIES: Dict[str, Tuple[str, str]] = {
    "keystoneauth1": ("keystoneauth1", "python3-keystoneauth1"),
    "novaclient": ("python-novaclient", "python3-novaclient"),
    "keystoneclient": ("python-keystoneclient", "python3-keystoneclient"),
}

# cm_type -> a driver class, or "<module of this package>:<class>" imported on first use.
_REGISTRY: Dict[str, Union[str, Type[CloudDriver]]] = {"openstack": ".openstack:OpenStackDriver"}


def register_driver(cm_type: str, cls: Type[CloudDriver]) -> None:
    """Make ``cm_type = <cm_type>`` sections use ``cls``."""
    _REGISTRY[cm_type.lower()] = cls


def driver_class(cm_type: str, where: str = "cm_type") -> Type[CloudDriver]:
    """The class registered for ``cm_type``.

    ConfigError naming the known types for an unknown one; MissingLibrary naming the library
    and how to install it when the driver's module cannot import one.
    """
    try:
        entry = _REGISTRY[cm_type.lower()]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"{where}: unknown cloud manager type '{cm_type}' (supported: {known})") from None
    if not isinstance(entry, str):
        return entry
    module_name, _, class_name = entry.partition(":")
    try:
        module = importlib.import_module(module_name, __name__)
    except ImportError as exc:
        raise _missing(cm_type, exc) from None
    return getattr(module, class_name)


def _missing(cm_type: str, exc: ImportError) -> MissingLibrary:
    """The error reply for a driver whose library is absent: which one, and how to install it."""
    module = (exc.name or "").split(".")[0]
    pip_name, rpm_name = LIBRARIES.get(module, (module, f"python3-{module}"))
    return MissingLibrary(
        f"the {cm_type} driver cannot run on this host: the Python library '{module or exc}' is not "
        f"installed for the Python that runs the plugin; install it (RPM: yum install {rpm_name}; "
        f"pip: pip install {pip_name})"
    )
