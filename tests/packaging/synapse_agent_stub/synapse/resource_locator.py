"""``ResourceLocator``: load the plugins of the custom plugin folder, as the agent does.

The folder is ``[controller] custom_plugins`` and nothing else: like the real agent, the
stand-in ignores ``custom_resources`` (the key the plugin's own documentation gives), so a
configuration with only that key loads no plugin. The folder is appended to ``sys.path``,
then every entry ``pkgutil.iter_modules`` finds there (a package or a plain module), unless
ignored, is imported by its folder name straight from that folder, so a hyphenated folder
such as ``cloudmanagers-plugin`` loads too. No error is caught: a plugin that fails to import
stops the agent. The agent's built-in plugins are not scanned here.
"""

import importlib.machinery
import importlib.util
import pkgutil
import sys

from synapse import config
from synapse.register_plugin import registry
from synapse.resources.resources import ResourceException


class ResourceLocator(object):
    def __init__(self, publish_queue=None):
        path = config.controller["custom_plugins"]
        self.path = path
        sys.path.append(path)
        self.load_packages(path)
        for controller in registry.values():
            controller.publish_queue = publish_queue

    def load_packages(self, path):
        ignored = self.get_ignored()
        for _finder, name, _ispkg in pkgutil.iter_modules([path]):
            if name.lower() in ignored:
                continue
            spec = importlib.machinery.PathFinder.find_spec(name, [path])
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)

    def get_ignored(self):
        value = config.controller.get("ignored_resources", "")
        return [item.strip().lower() for item in value.split(",") if item.strip()]

    def get_instance(self, name):
        if name not in registry:
            raise ResourceException("The resource [%s] does not exist" % name)
        return registry[name]
