"""The Session sync server: an end-to-end encrypted sync log and team rooms."""

__version__ = "0.1.0"
#: The version of the open spec (docs/spec/) this server implements; see its versioning policy.
SPEC_VERSION = "0.4"
