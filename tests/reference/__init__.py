"""Slow, obviously correct implementations that the fast ones are tested against."""
