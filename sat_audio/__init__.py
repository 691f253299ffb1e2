"""SAT Audio: home sound events from SAT streaming audio tagging."""

__version__ = "0.1.0"

SAMPLE_RATE = 16000
"""Every part of the listener works on 16 kHz mono float32 audio in [-1, 1]."""

PRECISIONS = ("float32", "int8")
"""model.precision: float32 on either backend, int8 on onnx only (model/onnx_int8.py); here, not
in sat_audio.config, so the command line can offer them without importing the config's parser."""
BACKENDS = ("torch", "onnx")
"""model.backend, and `sat-audio tag --backend`: here for the same reason as PRECISIONS."""
