"""`./run demo`: the whole of Waystation on one machine, on embedded defaults.

An in-process MQTT broker, the server with its HTTP API on 127.0.0.1, and one
edge agent on gpiozero mock pins whose camera plays real sample photos as a
paced video of people walking up to the door.
"""
