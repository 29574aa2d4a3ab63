"""The mail path over TLS: STARTTLS and implicit TLS against a real aiosmtpd on loopback."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.app import create_app
from tests.conftest import app_client
from tests.helpers import code_in, new_email
from tests.services import MailCatcher, free_port


def self_signed(tmp: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return context


@pytest.fixture
def starttls_catcher(tmp_path) -> Iterator[MailCatcher]:
    catcher = MailCatcher(port=free_port())
    context = self_signed(tmp_path)

    class RequireTLS(Controller):
        def factory(self) -> SMTP:
            return SMTP(self.handler, require_starttls=True, tls_context=context)

    controller = RequireTLS(catcher, hostname=catcher.host, port=catcher.port)
    controller.start()
    yield catcher
    controller.stop()


@pytest.mark.backend("embedded")
async def test_codes_travel_over_starttls(make_settings, starttls_catcher):
    url = f"smtp://127.0.0.1:{starttls_catcher.port}?starttls=require&verify=false"
    app = create_app(make_settings(smtp_url=url))
    async with app_client(app) as client:
        email = new_email()
        assert (await client.post("/v1/auth/email/start", json={"email": email})).status_code == 202
        assert len(code_in(await starttls_catcher.wait_for(email))) == 6


@pytest.mark.backend("embedded")
async def test_a_server_refusing_plain_text_gets_no_mail_without_tls(
    make_settings, starttls_catcher, server_logs
):
    url = f"smtp+plain://127.0.0.1:{starttls_catcher.port}"
    app = create_app(make_settings(smtp_url=url))
    async with app_client(app) as client:
        email = new_email()
        assert (await client.post("/v1/auth/email/start", json={"email": email})).status_code == 202
        for _ in range(300):
            if "mail delivery failed" in server_logs.text():
                break
            await asyncio.sleep(0.01)
    assert "mail delivery failed" in server_logs.text()
    assert starttls_catcher.to(email) == []


@pytest.mark.backend("embedded")
async def test_codes_travel_over_implicit_tls(make_settings, tmp_path):
    catcher = MailCatcher(port=free_port())
    controller = Controller(
        catcher, hostname=catcher.host, port=catcher.port, ssl_context=self_signed(tmp_path)
    )
    controller.start()
    try:
        url = f"smtps://127.0.0.1:{catcher.port}?verify=false"
        async with app_client(create_app(make_settings(smtp_url=url))) as client:
            email = new_email()
            await client.post("/v1/auth/email/start", json={"email": email})
            assert len(code_in(await catcher.wait_for(email))) == 6
    finally:
        controller.stop()
