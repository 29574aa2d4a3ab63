"""Every table, one module per family; importing this package registers them all."""

from server.db.base import Base
from server.db.models.auth import Device, EmailCode, RefreshToken, User

__all__ = ["Base", "Device", "EmailCode", "RefreshToken", "User"]
