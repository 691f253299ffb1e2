"""Package data: the model registry and the AudioSet label list (see README.md)."""
