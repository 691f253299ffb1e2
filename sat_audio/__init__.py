"""SAT Audio: home sound events from SAT streaming audio tagging."""

__version__ = "0.1.0"

SAMPLE_RATE = 16000
"""Every part of the listener works on 16 kHz mono float32 audio in [-1, 1]."""
