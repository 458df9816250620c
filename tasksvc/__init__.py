"""tasksvc: an HTTP service that runs background jobs reliably."""

__version__ = "0.1.0"
