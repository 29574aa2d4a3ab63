"""The Session sync client: sign-in, tokens, end-to-end encryption, and canvas sync.

Point it at a server with ``SESSION_SYNC_URL`` (or ``base_url=``); the hosted service is
the default. It never imports the server."""

from client_sdk.canvas import Canvas
from client_sdk.client import AsyncClient, Client, Tokens
from client_sdk.errors import DecryptError, NotSignedIn, ProblemError, SessionSyncError
from client_sdk.keychain import FileKeychain, Keychain, MemoryKeychain
from client_sdk.session import CanvasSync, Session

__all__ = [
    "AsyncClient",
    "Canvas",
    "CanvasSync",
    "Client",
    "DecryptError",
    "FileKeychain",
    "Keychain",
    "MemoryKeychain",
    "NotSignedIn",
    "ProblemError",
    "Session",
    "SessionSyncError",
    "Tokens",
]
