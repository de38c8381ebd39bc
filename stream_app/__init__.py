"""meterwatch: real-time anomaly detection for industrial electricity meters."""

__version__ = "0.1.0"
