"""The Waystation edge agent: camera frames in, door relay and entry log out.

Modules, in the order of the data flow (each owns one concern)::

    camera    frame sources (USB index, stream URL, video file, image folder, injected frames)
    pipeline  detect on a shrunk frame, keep the largest big-enough face, encode it, match it
    policy    PURE decision policy (injected clock): k agreeing frames, margin, visits, cooldown
    door      relay, buzzer, LEDs (the only gpiozero importer)
    store     edge.db: enrollment cache and durable entry outbox (the only engine builder)
    sync      enrollment sync and station status over MQTT
    outbox    drains the outbox to the broker, at least once
    agent     wires them together; __main__ is the command line
"""

__version__ = "0.1.0"
