"""Offline training of meterwatch's autoencoders (needs the `train` extra: torch)."""
