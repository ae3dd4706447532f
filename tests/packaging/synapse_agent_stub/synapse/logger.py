"""The agent's ``@logger`` class decorator."""

import logging


def logger(cls):
    cls.logger = logging.getLogger("synapse.%s" % cls.__name__)
    return cls
