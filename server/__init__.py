"""The Session sync server: an end-to-end encrypted sync log and team rooms."""

__version__ = "0.1.0"
