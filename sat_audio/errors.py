"""The one exception type the command line turns into a one-line error and exit code 2."""

ERROR_PREFIX = "sat-audio: error: "
"""How that line starts on stderr; add-on mode reads it from the commands it runs."""


class SatAudioError(Exception):
    """A problem the user can fix: bad input, a missing file, a bad configuration."""
