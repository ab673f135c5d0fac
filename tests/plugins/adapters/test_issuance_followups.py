"""After a certificate is issued: pushed to a document vault (`push_document`, HMAC-signed, pulled
back by its URI), an SMS through an HTTP gateway and an email through SMTP (aiosmtpd on loopback)
with the certificate's link, with retries that survive a worker restart and nothing delivered
twice; `send_notification` for an OTP code in French; enrolment messages in Hindi."""

from __future__ import annotations

import email
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from open_registry.core import Settings, create_app, open_registry
from open_registry.core.demo import load_demo_data
from open_registry.core.hookspecs import hookimpl
from open_registry.core.outbox.deliveries import counts
from open_registry.core.outbox.worker import Worker
from open_registry.plugins.adapters.http import signature_header, verify_signature
from tests.authn import admin_client
from tests.plugins.adapters.servers import Loopback, Receiver, Reply, Request
from tests.plugins.adapters.test_deliveries import Clock

VAULT_SECRET = "vault-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    """An SMTP server's handler: keeps each message (by Message-ID, as a mail store would)."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


class Vault:
    """A document vault: checks our signature, keeps pushed URIs once per idempotency key."""

    def __init__(self) -> None:
        self.receiver = Receiver()
        self.bad_signatures = 0

    def __call__(self, req: Request) -> Reply:
        if not verify_signature(VAULT_SECRET, req.body, req.headers.get("x-vault-signature", "")):
            self.bad_signatures += 1
            return Reply(401, {"error": "bad signature"})
        return self.receiver(req)


@pytest.fixture
def systems() -> Iterator[dict[str, Any]]:
    vault, gateway = Vault(), Receiver()
    with Loopback(vault) as vault_server, Loopback(gateway) as sms_server:
        yield {
            "vault": vault,
            "vault_server": vault_server,
            "sms": gateway,
            "sms_server": sms_server,
            "smtp_port": free_port(),
            "mailbox": Mailbox(),
        }


def configured(settings: Settings, s: dict[str, Any], **notifications: Any) -> Settings:
    return settings.with_(
        plugins={
            "vault": {
                "push_url": f"{s['vault_server'].url}/push",
                "secret_env": "TEST_VAULT_SECRET",
                "issuer_id": "org.examplia.registry",
                "base_url": "https://registry.examplia.example",
                "timeout": 2,
            },
            "notifications": {
                "base_url": "https://registry.examplia.example",
                # the demo data's enrolments and facilities: not what this test is about
                "events": {"recipient.created": "", "facility.created": ""},
                "email": {
                    "host": "127.0.0.1",
                    "port": s["smtp_port"],
                    "sender": "Registry <no-reply@examplia.example>",
                    "timeout": 2,
                },
                "sms": {
                    "url": f"{s['sms_server'].url}/v1/messages",
                    "params": {"sender": "VACCIN"},
                    "timeout": 2,
                },
                **notifications,
            },
        }
    )


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_VAULT_SECRET", VAULT_SECRET)


def first(client: TestClient, entity: str) -> dict[str, Any]:
    return client.get(f"/api/v1/{entity}?limit=1").json()["items"][0]


def test_an_issued_certificate_reaches_the_vault_sms_and_email_across_a_worker_restart(
    settings: Settings, systems: dict[str, Any]
):
    s = systems
    s["vault_server"].failures = [Reply(500)]  # the vault has a bad moment
    s["sms_server"].failures = [Reply(502)]  # so has the gateway; the mail server is down
    clock = Clock()
    reg = open_registry(configured(settings, s))
    load_demo_data(reg.services)
    with admin_client(create_app(registry=reg)) as client:
        Worker(reg, clock=clock).run_once(limit=10**6)
        recipient = first(client, "recipient")
        client.patch(f"/api/v1/recipient/{recipient['id']}", json={"email": "ravi@mail.example"})
        body = {
            "recipient": recipient["id"],
            "program": first(client, "program")["code"],
            "vaccine": first(client, "vaccine")["code"],
            "vaccinator": first(client, "vaccinator")["code"],
            "facility": first(client, "facility")["code"],
            "dose": 1,
            "totalDoses": 1,  # the last dose: no next dose suggested (and announced) here
            "batch": "4121Z005",
            "date": "2026-03-01T10:30:00+05:30",
        }
        assert client.post("/api/v1/vaccination", json=body).status_code == 201
        worker = Worker(reg, clock=clock)
        worker.run_once(limit=10**6)  # vaccination -> certificate -> its deliveries queued
        [cert] = client.get(f"/api/v1/certificate?recipient={recipient['id']}").json()["items"]
        assert counts(reg) == {"pending": 3}  # vault, SMS, email
        assert worker.send_due() == 3  # all three fail
        assert counts(reg) == {"pending": 3}
    reg.close()  # the worker process stops ...

    controller = Controller(s["mailbox"], hostname="127.0.0.1", port=s["smtp_port"])
    controller.start()  # ... the mail server comes back ...
    try:
        reg = open_registry(configured(settings, s))  # ... and a new worker starts
        try:
            clock.advance(10)
            again = Worker(reg, clock=clock)
            assert again.send_due() == 3
            assert counts(reg) == {"done": 3}
            clock.advance(3600)
            assert again.send_due() == 0  # nothing left, nothing sent twice
        finally:
            reg.close()
    finally:
        controller.stop()

    pushed = s["vault"].receiver.accepted
    assert len(pushed) == 1 and s["vault"].bad_signatures == 0
    [push] = pushed.values()
    doc = push.json()
    assert doc["uri"] == f"org.examplia.registry-VACER-{cert['id']}"
    assert doc["owner"] == recipient["identity"]  # decrypted for the vault, never queued
    assert doc["pullUrl"] == "https://registry.examplia.example/api/v1/vault/pull"
    assert len(s["vault_server"].requests) == 2  # the failure, then the push

    link = f"https://registry.examplia.example/api/v1/certificates/{cert['id']}?format=pdf"
    [sms] = s["sms"].accepted.values()
    assert sms.json() == {
        "sender": "VACCIN",
        "to": recipient["phone"],
        "text": f"Your vaccination certificate: {link}",
    }
    [mail] = s["mailbox"].messages
    assert mail["To"] == "ravi@mail.example" and mail["Subject"] == "Your vaccination certificate"
    text = mail.get_payload(decode=True).decode()
    assert link in text and recipient["name"] in text
    assert mail["Message-ID"].startswith("<notify.email.certificate-issued.")


def test_the_vault_pulls_a_certificate_by_its_signed_uri(
    settings: Settings, systems: dict[str, Any]
):
    reg = open_registry(configured(settings, systems))
    load_demo_data(reg.services)
    with admin_client(create_app(registry=reg)) as client:
        worker = Worker(reg)
        worker.run_once(limit=10**6)
        recipient = first(client, "recipient")
        body = {
            "recipient": recipient["id"],
            "program": first(client, "program")["code"],
            "vaccine": first(client, "vaccine")["code"],
            "facility": first(client, "facility")["code"],
            "dose": 1,
            "totalDoses": 1,
            "batch": "B1",
            "date": "2026-03-01T10:30:00Z",
        }
        client.post("/api/v1/vaccination", json=body)
        worker.run_once(limit=10**6)
        worker.send_due()
        [push] = systems["vault"].receiver.accepted.values()
        request = json.dumps({"uri": push.json()["uri"]}).encode()
        pulled = client.post(
            "/api/v1/vault/pull",
            content=request,
            headers={"X-Vault-Signature": signature_header(VAULT_SECRET, request)},
        )
        assert pulled.status_code == 200, pulled.text
        credential = pulled.json()["document"]
        assert credential["credentialSubject"]["name"] == recipient["name"]
        assert client.post("/api/v1/verify", json=credential).json()["status"] == "VALID"
        forged = client.post(
            "/api/v1/vault/pull",
            content=request,
            headers={"X-Vault-Signature": signature_header("guessed", request)},
        )
        assert forged.status_code == 401
        assert forged.headers["content-type"] == "application/problem+json"
        other = json.dumps({"uri": "org.examplia.registry-VACER-nope"}).encode()
        missing = client.post(
            "/api/v1/vault/pull",
            content=other,
            headers={"X-Vault-Signature": signature_header(VAULT_SECRET, other)},
        )
        assert missing.status_code == 404
    reg.close()


class OwnVault:
    """A country's own vault plugin: receives the same documents through `push_document`."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []

    @hookimpl
    def push_document(self, document: dict[str, Any], registry: Any) -> None:
        self.documents.append(document)


def test_push_document_reaches_a_plugin_vault_without_the_built_in_one(settings: Settings):
    own = OwnVault()
    reg = open_registry(settings, plugins=[own])
    load_demo_data(reg.services)
    try:
        with admin_client(create_app(registry=reg)) as client:
            worker = Worker(reg)
            worker.run_once(limit=10**6)
            recipient = first(client, "recipient")
            body = {
                "recipient": recipient["id"],
                "program": first(client, "program")["code"],
                "vaccine": first(client, "vaccine")["code"],
                "facility": first(client, "facility")["code"],
                "dose": 1,
                "totalDoses": 1,
                "batch": "B1",
                "date": "2026-03-01T10:30:00Z",
            }
            client.post("/api/v1/vaccination", json=body)
            worker.run_once(limit=10**6)
            assert worker.send_due() == 1
        [doc] = own.documents
        assert doc["type"] == "certificate" and doc["owner"] == recipient["identity"]
        assert doc["idempotency_key"].startswith("documents:certificate:")
        assert doc["record"]["credential"]["type"][0] == "VerifiableCredential"
    finally:
        reg.close()


def test_send_notification_sends_an_otp_in_french_and_ignores_unknown_channels(
    settings: Settings, systems: dict[str, Any]
):
    reg = open_registry(configured(settings, systems))
    try:
        hook = reg.pm.hook.send_notification
        msg_id = hook(
            channel="sms",
            to="+33 6 00 00 00 00",
            template="otp",
            context={"code": "482913", "locale": "fr", "idempotency_key": "otp:1"},
            registry=reg,
        )
        assert msg_id == "msg-1"
        [req] = systems["sms"].accepted.values()
        assert req.json()["text"] == "Votre code de connexion est 482913. Ne le partagez pas."
        assert req.headers["idempotency-key"] == "otp:1"
        none = hook(channel="pigeon", to="x", template="otp", context={}, registry=reg)
        assert none is None
    finally:
        reg.close()


def test_enrolment_messages_go_out_in_hindi(settings: Settings, systems: dict[str, Any]):
    reg = open_registry(configured(settings, systems, locale="hi", events={"facility.created": ""}))
    try:
        reg.services["recipient"].create(
            {
                "identity": "did:example:national-id:77",
                "name": "मेघा",
                "dob": "1990-01-01",
                "gender": "Female",
                "phone": "+91 90000 00077",
                "enrollmentCode": "EN77",
            },
            actor="t",
        )
        worker = Worker(reg)
        worker.run_once()
        worker.send_due()
        [sms] = systems["sms"].accepted.values()
        assert sms.json()["text"] == "मेघा, आपका नामांकन हो गया है। कोड: EN77"
        assert counts(reg) == {"done": 2}  # the email: no address, nobody to tell
    finally:
        reg.close()
