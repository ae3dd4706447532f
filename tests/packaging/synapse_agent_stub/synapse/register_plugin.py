"""``register(mapping, cls)``: the registry of controllers, keyed by collection name.

As in the legacy agent: the first registration of a collection wins, and the controller is
instantiated at import time with the OS module that the INI ``mapping`` selects for this
host's distribution (``None`` for the literal value ``None``).
"""

import configparser
import importlib.machinery
import importlib.util
import os
import sys

from synapse import config

registry = {}


def register(mapping, cls):
    name = cls.__resource__
    if name not in registry:
        path = os.path.dirname(sys.modules[cls.__module__].__file__)
        registry[name] = cls(get_module(mapping, path))


def get_module(mapping, dirpath):
    parser = configparser.RawConfigParser()
    parser.read_string(mapping)
    dist = config.controller["distribution_name"]
    ver = config.controller["distribution_version"]
    for section, option in ((dist, ver), (dist, "default"), ("default", "default")):
        if parser.has_option(section, option):
            mod_name = parser.get(section, option)
            if mod_name == "None":
                return None
            spec = importlib.machinery.PathFinder.find_spec(mod_name, [dirpath])
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
            return module
    return None
