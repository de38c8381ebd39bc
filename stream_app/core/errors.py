"""The exceptions meterwatch raises on purpose. Anything else is a bug."""


class MeterwatchError(Exception):
    """Base class: a problem meterwatch can explain in one line."""


class InputError(MeterwatchError):
    """User data is unusable (bad CSV, bad column, series too short...). CLI exit code 2."""

    def __init__(self, message: str, *, row: int | None = None):
        self.row = row
        super().__init__(f"row {row}: {message}" if row is not None else message)


class ConfigError(MeterwatchError):
    """A setting, profile or option is invalid. Raised at start-up, never mid-stream."""


class BundleError(MeterwatchError):
    """A model bundle is missing, tampered with or incompatible."""


class NotFittedError(MeterwatchError):
    """A model was used before it was fitted: fit it first."""
