"""The standalone AMQP agent: it takes synapse requests off RabbitMQ and answers them.

The legacy synapse agent is Python 2 only; this package speaks its wire protocol (queue named
after the agent uuid, replies routed by ``reply_exchange``/``reply_to``) with the
``cloudmanagers`` controller as its only collection, so existing clients keep working.
"""
