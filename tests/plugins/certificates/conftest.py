"""Shared fixtures: the W3C test-vector loader, test keys, and a vaccination credential."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from open_registry.plugins.certificates import keys, suites
from open_registry.plugins.certificates.loader import (
    CREDENTIALS_V2_URL,
    VACCINATION_CONTEXT_URL,
    StaticDocumentLoader,
    default_loader,
)

FIXTURES = Path(__file__).parents[2] / "fixtures"
VECTORS = FIXTURES / "w3c-vc-di-eddsa"
DIVOC = FIXTURES / "divoc" / "certificates"


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def vector_loader() -> StaticDocumentLoader:
    """The package's loader plus the two test-only contexts the W3C vectors use."""
    return default_loader().with_documents(
        {
            "https://www.w3.org/ns/credentials/examples/v2": read_json(
                VECTORS / "contexts" / "credentials-examples-v2.jsonld"
            ),
            "https://w3id.org/citizenship/v4rc1": read_json(
                VECTORS / "contexts" / "citizenship-v4rc1.jsonld"
            ),
        }
    )


@pytest.fixture(scope="session")
def issuer_key() -> Ed25519PrivateKey:
    """A key generated for the test run (never written anywhere)."""
    return Ed25519PrivateKey.generate()


VACCINATION_CREDENTIAL: dict[str, Any] = {
    "@context": [CREDENTIALS_V2_URL, VACCINATION_CONTEXT_URL],
    "id": "urn:uuid:4f1a3c52-7d8e-4a0b-9c1d-2e3f4a5b6c7d",
    "type": ["VerifiableCredential", "ProofOfVaccinationCredential"],
    "issuer": "did:key:placeholder",
    "validFrom": "2024-03-01T10:00:00Z",
    "credentialSubject": {
        "type": "Person",
        "id": "did:example:recipient-42",
        "refId": "12346",
        "name": "Bhaya Mitra",
        "gender": "Male",
        "age": "26",
        "nationality": "Indian",
        "address": {
            "streetAddress": "",
            "streetAddress2": "",
            "district": "",
            "city": "",
            "addressRegion": "",
            "addressCountry": "IN",
            "postalCode": "",
        },
    },
    "evidence": [
        {
            "id": "https://open-registry.example/vaccinations/9001",
            "type": ["Vaccination"],
            "infoUrl": "https://open-registry.example/info",
            "feedbackUrl": "https://open-registry.example/feedback",
            "certificateId": "9001",
            "batch": "MB3428BX",
            "vaccine": "CoVax",
            "manufacturer": "COVPharma",
            "date": "2024-03-01T09:21:18.646Z",
            "effectiveStart": "2024-03-01",
            "effectiveUntil": "2025-03-01",
            "dose": 1,
            "totalDoses": 2,
            "verifier": {"name": "Sooraj Singh"},
            "facility": {
                "name": "ABC Medical Center",
                "address": {
                    "streetAddress": "123, Koramangala",
                    "streetAddress2": "",
                    "district": "Bengaluru South",
                    "city": "Bengaluru",
                    "addressRegion": "Karnataka",
                    "addressCountry": "IN",
                    "postalCode": "560034",
                },
            },
        }
    ],
    "nonTransferable": True,
}


def vaccination_credential(issuer: str, **changes: Any) -> dict[str, Any]:
    """A fresh copy of the sample vaccination credential issued by `issuer`."""
    credential = copy.deepcopy(VACCINATION_CREDENTIAL)
    credential["issuer"] = issuer
    credential.update(changes)
    return credential


@pytest.fixture
def credential(issuer_key: Ed25519PrivateKey) -> dict[str, Any]:
    return vaccination_credential(keys.did_key(issuer_key.public_key()))


@pytest.fixture
def signed(credential: dict[str, Any], issuer_key: Ed25519PrivateKey) -> dict[str, Any]:
    """`credential` signed the way the issuer signs (eddsa-rdfc-2022, did:key)."""
    return suites.sign(credential, issuer_key, keys.did_key_method(issuer_key.public_key()))
