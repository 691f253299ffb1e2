"""The one exception type the command line turns into a one-line error and exit code 2."""


class SatAudioError(Exception):
    """A problem the user can fix: bad input, a missing file, a bad configuration."""
