"""mlplane: an open control plane for machine-learning compute."""

__version__ = "0.1.0"
