"""Benchmarks, load generators and synthetic media: ``jointreview bench ...``, the Python
participant the tests and bots use, media whose frames can be checked. Nothing in the
product (``signaling``, ``media_server``, ``recording``, ``web_client``) imports it."""
