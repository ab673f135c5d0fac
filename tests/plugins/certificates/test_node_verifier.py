"""Independent check: Digital Bazaar's JavaScript verifier (tests/node/verify.mjs) verifies the
credentials our code issues, offline.

Skips locally when `tests/node/node_modules` is missing (`cd tests/node && npm ci`); with the
environment variable CI set, a missing Node or node_modules fails instead, so the check cannot
silently vanish from CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from open_registry.plugins.certificates import keys, suites
from open_registry.plugins.certificates.loader import CONTEXT_DIR, SHIPPED_CONTEXTS
from tests.plugins.certificates.conftest import read_json, vaccination_credential

NODE_DIR = Path(__file__).parents[2] / "node"
NODE_MODULES = NODE_DIR / "node_modules"


def _require_node() -> str:
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed"
    elif not NODE_MODULES.is_dir():
        problem = f"{NODE_MODULES} is missing (run: cd tests/node && npm ci)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"the Node verifier is required in CI: {problem}")
        pytest.skip(problem)
    assert node is not None
    return node


def run_node_verifier(
    credentials: list[dict[str, Any]], status_lists: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Digital Bazaar's verdicts; `status_lists` maps a status list URL to its credential."""
    node = _require_node()
    done = subprocess.run(
        [node, "verify.mjs"],
        cwd=NODE_DIR,
        input=json.dumps({"credentials": credentials, "statusLists": status_lists or {}}),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) == len(credentials)
    return results


def _issue(key: Ed25519PrivateKey, suite: str, **subject: Any) -> dict[str, Any]:
    credential = vaccination_credential(keys.did_key(key.public_key()))
    credential["credentialSubject"].update(subject)
    return suites.sign(credential, key, keys.did_key_method(key.public_key()), suite=suite)


def test_node_verifier_accepts_our_credentials_and_rejects_tampered_ones() -> None:
    _require_node()
    key = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    good = [
        _issue(key, suites.EDDSA_RDFC_2022),
        _issue(key, suites.ED25519_SIGNATURE_2020),
        _issue(other, suites.EDDSA_RDFC_2022, name="Zoë Ñandú 李小龙 ﷺ 🌃 \u2028"),
        # control characters: RDFC-1.0 escaping must match rdf-canonize's byte for byte
        _issue(other, suites.ED25519_SIGNATURE_2020, name='a\bb\fc\x01d\x1fe\x7ff"g\\h\ti\nj'),
        _issue(key, suites.EDDSA_RDFC_2022, refId="\x00\x0b\x0e\r\x80\x9f\ufeff"),
    ]
    # indistinguishable blank nodes (two identical evidence objects without ids): the
    # Hash N-Degree Quads part of RDFC-1.0 must agree with rdf-canonize's
    twins = vaccination_credential(keys.did_key(key.public_key()))
    evidence = twins["evidence"][0]
    del evidence["id"]
    twins["evidence"] = [evidence, json.loads(json.dumps(evidence))]
    good.append(suites.sign(twins, key, keys.did_key_method(key.public_key())))
    for credential in good:
        assert suites.verify(credential).verified  # ours agrees first

    tampered_name = json.loads(json.dumps(good[0]))
    tampered_name["credentialSubject"]["name"] = "Someone Else"
    tampered_dose = json.loads(json.dumps(good[1]))
    tampered_dose["evidence"][0]["dose"] = 3
    wrong_issuer = json.loads(json.dumps(good[2]))
    wrong_issuer["issuer"] = keys.did_key(key.public_key())  # signed by `other`
    bad = [tampered_name, tampered_dose, wrong_issuer]

    results = run_node_verifier(good + bad)
    for credential, result in zip(good, results[: len(good)], strict=True):
        assert result["verified"], (result["errors"], credential["credentialSubject"])
    for result in results[len(good) :]:
        assert not result["verified"]
        assert result["errors"]


def test_shipped_contexts_are_the_npm_packages_contexts() -> None:
    """Our context files and the ones the Node verifier loads are the same documents."""
    _require_node()
    npm_files = {
        "credentials-v1.jsonld": "@digitalbazaar/credentials-context/contexts/v1.jsonld",
        "credentials-v2.jsonld": "@digitalbazaar/credentials-context/contexts/v2.jsonld",
        "data-integrity-v2.jsonld": (
            "@digitalbazaar/data-integrity-context/contexts/data-integrity-v2.jsonld"
        ),
        "multikey-v1.jsonld": "@digitalbazaar/multikey-context/contexts/multikey-v1.jsonld",
        "ed25519-signature-2020-v1.jsonld": (
            "ed25519-signature-2020-context/contexts/ed25519-signature-2020-v1.jsonld"
        ),
        "security-v1.jsonld": "security-context/contexts/security-v1.jsonld",
        "security-v2.jsonld": "security-context/contexts/security-v2.jsonld",
    }
    for ours, theirs in npm_files.items():
        assert ours in SHIPPED_CONTEXTS.values()
        assert read_json(CONTEXT_DIR / ours) == read_json(NODE_MODULES / theirs), ours
