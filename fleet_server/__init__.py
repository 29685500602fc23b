"""The Nigehbaan fleet server: REST API, console, MQTT ingest, alerts, OTA.

Never imports `edge_agent` or `hardware`: it knows nodes only through the wire
contract in `proto`.
"""
