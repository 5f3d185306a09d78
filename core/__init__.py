"""Code shared by the edge agent, the enrollment tools and the server.

Each module owns one external library, and nothing else imports it:

- ``core.faces``   -- face_recognition / dlib (detection, landmarks, encodings)
- ``core.imaging`` -- OpenCV and Pillow (decoding files, colour, resizing, capture devices)
- ``core.mqtt``    -- paho-mqtt (connections, subscriptions, acknowledged publishes)
- ``core.matcher`` -- pure numpy 1:N matching, no library beyond numpy
"""
