"""Fixtures shared by the edge tests: the sample photos they show the camera, and the server's QR signer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.imaging import load_image
from server.credentials import Signer, signer_for

EX = "face_recognition_examples"


@pytest.fixture(scope="module")
def photos(faces: Path) -> dict[str, np.ndarray]:
    """Photos of face_recognition's examples by short name (obama enrolled from one, shown as another)."""
    names = {
        "obama": "obama/obama.jpg",
        "obama2": "obama/obama2.jpg",
        "obama_small": "obama/obama_small.jpg",
        "biden": "biden/biden.jpg",
        "two_people": "_multi_person/two_people.jpg",
    }
    return {k: load_image(faces / EX / v) for k, v in names.items()}


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    """The server's QR credential signer, with its key in this test's own folder."""
    return signer_for(tmp_path / "server")
