"""How DICOM files are packed (DicomOptions), and the names its choices take."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DicomOptions", "FRAMES", "DICOM_PAYLOADS", "WINDOW_FUNCTIONS"]

FRAMES = ("first", "all")
DICOM_PAYLOADS = ("pixels", "codestream")
WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


@dataclass(frozen=True)
class DicomOptions:
    """How DICOM files are packed. Checked at construction.

    Attributes:
        frames: "first" (one record per file, its first frame) or "all" (one record per frame).
        window: None (keep modality values; record the file's window as metadata), "file"
            (apply the file's own VOI LUT or first window, else the image's min..max), or a
            ``(center, width)`` pair applied to every file. Windowed records are uint8.
        payload: "pixels" (the policy's result, stored losslessly: 16-bit PNG or .npy) or
            "codestream" (JPEG 2000 files: the frame's encapsulated codestream, unchanged, in a
            JP2 box with the policy beside it, for GPU decoding; other files as "pixels").

    >>> DicomOptions(window=(40, 400)).window
    (40.0, 400.0)
    """

    frames: str = "first"
    window: str | tuple[float, float] | None = None
    payload: str = "pixels"

    def __post_init__(self) -> None:
        if self.frames not in FRAMES:
            raise ValueError(f"dicom frames must be one of {FRAMES}, got {self.frames!r}")
        if self.payload not in DICOM_PAYLOADS:
            raise ValueError(f"dicom payload must be one of {DICOM_PAYLOADS}, got {self.payload!r}")
        window = self.window
        if window is None or window == "file":
            return
        if isinstance(window, str) or len(window) != 2:
            raise ValueError(f"dicom window must be None, 'file' or (center, width), got {window!r}")
        center, width = float(window[0]), float(window[1])
        if not (math.isfinite(center) and math.isfinite(width)) or width < 1:
            raise ValueError(f"dicom window width must be a finite number >= 1, got {window!r}")
        object.__setattr__(self, "window", (center, width))
