"""The SAT model: front end, transformer, registry of public variants, checkpoint loading."""
