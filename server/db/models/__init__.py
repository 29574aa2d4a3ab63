"""Every table, one module per family; importing this package registers them all."""

from server.db.base import Base
from server.db.models.auth import Device, EmailCode, RefreshToken, User
from server.db.models.sync import DocSnapshot, Document, DocUpdate, SettingRegister

__all__ = [
    "Base",
    "Device",
    "DocSnapshot",
    "DocUpdate",
    "Document",
    "EmailCode",
    "RefreshToken",
    "SettingRegister",
    "User",
]
