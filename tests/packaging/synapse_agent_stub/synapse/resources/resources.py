"""``ResourcesController``: the base class of every synapse resource controller."""

import os
import traceback
from datetime import timedelta

from synapse import config


class ResourceException(Exception):
    pass


class ResourcesController(object):
    __resource__ = ""
    action_map = {"create": "Creating", "read": "Reading", "update": "Updating", "delete": "Deleting"}

    def __init__(self, module):
        self.default_interval = config.monitor["default_interval"]
        self.alert_interval = timedelta(seconds=config.compliance["alert_interval"])
        self.module = module
        self.res_id = None
        # The agent's StatesManager refuses to start without its persistence folder.
        if not os.path.isdir(config.controller["persistence_path"]):
            raise Exception("Persistence folder does not exist.")
        self.states = []
        self.publish_queue = None
        self.response = {}
        self._lock = False

    def process(self, arg):
        action = arg.get("action")
        params = arg.get("attributes", {}) or {}
        monitor = arg.get("monitor")
        if monitor is not None:
            params["monitor"] = monitor
        self.res_id = arg.get("id")
        self.action_map[action]  # outside the try, as in the agent: unknown action -> KeyError
        try:
            result = getattr(self, action)(res_id=self.res_id, attributes=params)
            self.response = self.set_response(result)
        except ResourceException as err:
            self.response = self.set_response(error="%s" % err)
        except Exception as err:
            traceback.print_exc()
            self.response = self.set_response(error="%s" % err)
        finally:
            self._lock = False
        response, self.response = self.response, {}
        return response

    def set_response(self, resp={}, **kw):
        """The agent's OutgoingMessage, as the dict it serialises to."""
        message = {
            "uuid": config.rabbitmq["uuid"],
            "resource_id": "",
            "collection": "",
            "status": {},
            "version": config.AGENT_VERSION,
        }
        message.update(resource_id=self.res_id, collection=self.__resource__, status=resp,
                       msg_type="response", **kw)
        return message

    def check_mandatory(self, *args):
        for arg in args:
            if not arg:
                raise ResourceException("Please provide ID")

    def save_state(self, res_id, state, monitor=True):
        pass

    def is_compliant(self, expected, current):
        raise NotImplementedError

    def close(self):
        pass
