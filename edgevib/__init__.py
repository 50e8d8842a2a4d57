"""edgevib: edge stream processing for machine-health monitoring."""

__version__ = "0.1.0"
