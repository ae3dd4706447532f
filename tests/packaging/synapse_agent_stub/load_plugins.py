"""Start the stand-in synapse agent's plugin loading and answer requests.

    python load_plugins.py SYNAPSE_AGENT_CONF COLLECTION REQUESTS_JSON

Prints one JSON object: the registered collections (with each controller's class, its base
classes and its OS module), and the agent's reply to each request, in order. When COLLECTION
is not registered, each reply is the agent's controller-level error (``{"error": ...}``).
"""

import json
import sys

from synapse import config


def main(conf_path, collection, requests):
    config.load(conf_path)
    from synapse.register_plugin import registry
    from synapse.resource_locator import ResourceLocator
    from synapse.resources.resources import ResourceException, ResourcesController

    locator = ResourceLocator(publish_queue="publish-queue")
    try:
        controller = locator.get_instance(collection)
    except ResourceException as exc:
        return {"custom_plugins": locator.path, "registered": sorted(registry),
                "replies": [{"error": str(exc)} for _ in requests]}
    replies = [controller.process(dict(request)) for request in requests]
    return {
        "custom_plugins": locator.path,
        "registered": sorted(registry),
        "controller_class": type(controller).__module__ + "." + type(controller).__name__,
        "is_resources_controller": isinstance(controller, ResourcesController),
        "module": repr(controller.module),
        "publish_queue": controller.publish_queue,
        "plugin_file": sys.modules[type(controller).__module__].__file__,
        "replies": replies,
    }


if __name__ == "__main__":
    result = main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
    print(json.dumps(result))
