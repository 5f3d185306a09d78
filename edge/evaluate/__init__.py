"""The door's accuracy on a 1:N protocol:
``./run evaluate PROTOCOL.csv [--json FILE] [--plot FILE] [--grid FILE] [--config FILE]``.

The protocol is a CSV with the columns ``role,identity,file`` (any order, more
columns ignored); roles ``enroll``, ``probe_genuine``, ``probe_impostor``;
files relative to the CSV's folder; any number of rows per role.

Everything runs through the door's own code with the station's defaults
(``EdgeSettings``; ``--config`` evaluates a station's YAML file instead):

- **Enrollment** is real enrollment's: ``core.templates.enroll_photo``, one
  template per photo. A worker with several enroll rows gets one template per
  photo, as the server stores several photos (the nearest one counts), and, as
  the server does, a worker with any unusable photo is not enrolled at all
  (``failed_to_enroll`` counts such workers).
- **A probe** is a still photo shown to the door: placed on a 640x480 camera
  frame as a person standing at the door fills it (``core.imaging.camera_frame``)
  and fed ``policy.frames_required`` times, at the camera's frame rate,
  through ``edge.pipeline.run_frame`` (detection, tracking, encoding, 1:N match)
  and ``edge.gate.DoorGate`` (the decision policy) on an injected clock.
  Liveness is off: a still photo must fail it, and it is measured separately
  (docs/liveness.md). Each probe is a fresh visit at a freshly started door.

Counting (issue 3): FAR = impostor probes granted as anyone; FRR = genuine
probes not granted as themselves (no face, rejected, misidentified, or their
worker failed to enroll); ``misidentified`` = genuine probes granted as someone
else (a count); ``failed_to_enroll`` = workers (a count). FAR and FRR are
fractions, null when there are no probes of that kind.

The DET plot sweeps the threshold (the other knobs fixed) by replaying the
recorded frames through ``DecisionPolicy``, next to the library's rule: the
probe's nearest enrolled face within the threshold (0.6 marked), enrolled as
face_recognition's examples do (the photo's own encoding, largest face).

Modules: ``protocol`` (the CSV, checked before any model loads), ``trial``
(enrollment and the probes at the door), ``metrics`` (sweeps, grid, report),
``cli`` (the command line).
"""

from edge.evaluate.cli import EXIT_PROTOCOL, main
from edge.evaluate.protocol import Protocol, ProtocolError, read_protocol
from edge.evaluate.trial import Evaluation, evaluate

__all__ = ["EXIT_PROTOCOL", "Evaluation", "Protocol", "ProtocolError", "evaluate", "main", "read_protocol"]
