"""Signing and verification throughput of the certificates core, one core: full pyld
canonicalization against the shortcut for the fixed vaccination credential shape.

Measured in the same run, on the same credentials (random names and values, did:key issuer):

- full:     `suites.sign(...)` / `suites.verify(...)` — pyld expansion + RDFC-1.0, per credential;
- shortcut: the same calls with `canonicalizer=shortcut.canonicalize` (N-Quads written from the
            JSON for our shape, then the same RDFC-1.0);
- also the canonicalization of one document alone, and raw Ed25519 sign/verify for scale.

Rates are per CPU-second of the (single-threaded, pinned) process, so other load on the machine
does not count. Before timing, every sampled credential is signed both ways with the same
`created` and the outputs compared byte for byte (mismatches are printed; there should be none).
With `--node-check N`, N of the shortcut-signed credentials go to Digital Bazaar's verifier
(tests/node/verify.mjs; needs `cd tests/node && npm ci`). Prints figures and ratios; never asserts
timings.

    .venv/bin/python benchmarks/issuance_core.py --quick
    .venv/bin/python benchmarks/issuance_core.py --node-check 20
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import string
import uuid
from collections.abc import Callable
from typing import Any

import harness
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyld.__about__ import __version__ as pyld_version

from open_registry.plugins.certificates import jsonld, keys, shortcut, suites
from open_registry.plugins.certificates.loader import CREDENTIALS_V2_URL, VACCINATION_CONTEXT_URL

NAMES = ["Bhaya Mitra", "Zoë Ñandú", "李小龙", "Ngozi Okonkwo-Adebayo", "Łukasz Żółć", "أحمد"]


def credential(rng: random.Random, issuer: str) -> dict[str, Any]:
    """A vaccination credential of the fixed shape with random content."""

    def word(n: int = 8) -> str:
        return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))

    address = {
        "streetAddress": f"{rng.randint(1, 999)}, {word()} Road",
        "streetAddress2": "",
        "district": word(),
        "city": rng.choice(["Bengaluru", "Pune", "Colombo", "Kigali"]),
        "addressRegion": word(),
        "addressCountry": rng.choice(["IN", "LK", "RW", "PH"]),
        "postalCode": str(rng.randint(100000, 999999)),
    }
    return {
        "@context": [CREDENTIALS_V2_URL, VACCINATION_CONTEXT_URL],
        "id": f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}",
        "type": ["VerifiableCredential", "ProofOfVaccinationCredential"],
        "issuer": issuer,
        "validFrom": "2024-03-01T10:00:00Z",
        "credentialSubject": {
            "type": "Person",
            "id": f"did:example:{word(12)}",
            "refId": word(6),
            "name": f"{rng.choice(NAMES)} {word(4)}",
            "gender": rng.choice(["Male", "Female", "Other"]),
            "age": str(rng.randint(1, 99)),
            "nationality": rng.choice(["Indian", "Sri Lankan", "Rwandan"]),
            "address": address,
        },
        "evidence": [
            {
                "id": f"https://open-registry.example/vaccinations/{rng.randint(1, 10**9)}",
                "type": ["Vaccination"],
                "infoUrl": "https://open-registry.example/info",
                "feedbackUrl": "https://open-registry.example/feedback",
                "certificateId": str(rng.randint(10**9, 10**10)),
                "batch": word(8).upper(),
                "vaccine": rng.choice(["CoVax", "Polio IPV", "MMR"]),
                "manufacturer": rng.choice(["COVPharma", "Serum", "BioTech"]),
                "date": "2024-03-01T09:21:18.646Z",
                "effectiveStart": "2024-03-01",
                "effectiveUntil": "2025-03-01",
                "dose": rng.randint(1, 3),
                "totalDoses": 3,
                "verifier": {"name": f"Dr {rng.choice(NAMES)}"},
                "facility": {"name": f"{word()} Medical Center", "address": dict(address)},
            }
        ],
        "nonTransferable": True,
    }


def rate(fn: Callable[[Any], Any], items: list[Any], rounds: int) -> tuple[float, float]:
    """(best, median) items per CPU-second of this process over `rounds` passes. CPU time, not
    wall time: on a shared machine other processes on the same core do not count against us."""
    rates = [1 / s for s in harness.seconds_per_item(fn, items, rounds)]
    return max(rates), statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small samples (a smoke run)")
    parser.add_argument("--node-check", type=int, default=0, metavar="N")
    harness.add_pin_option(parser)
    args = parser.parse_args()
    cpus = harness.pin_to_one_cpu(args)
    n_full, n_fast, rounds = (30, 300, 2) if args.quick else (300, 3000, 3)

    rng = random.Random(2024)
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    issuer, method = keys.did_key(public), keys.did_key_method(public)
    docs = [credential(rng, issuer) for _ in range(n_fast)]
    created = "2024-03-01T10:00:01Z"

    def sign_full(doc: dict[str, Any]) -> dict[str, Any]:
        return suites.sign(doc, key, method, created=created)

    def sign_fast(doc: dict[str, Any]) -> dict[str, Any]:
        return suites.sign(doc, key, method, created=created, canonicalizer=shortcut.canonicalize)

    # correctness first: identical bytes on the sample, and no fallback
    mismatches = sum(json.dumps(sign_full(d)) != json.dumps(sign_fast(d)) for d in docs[:n_full])
    fallbacks = sum(not shortcut.covers(d) for d in docs)
    signed = [sign_fast(d) for d in docs]
    bad = sum(not suites.verify(s, canonicalizer=shortcut.canonicalize).verified for s in signed)

    print(f"pyld {pyld_version}; {cpus}")
    print(
        f"byte-identical signed credentials, full vs shortcut: {n_full - mismatches}/{n_full}"
        f" (mismatches: {mismatches}); fallbacks: {fallbacks}/{len(docs)};"
        f" not verifying: {bad}/{len(signed)}"
    )
    size = len(json.dumps(signed[0], separators=(",", ":"), ensure_ascii=False).encode())
    print(f"a signed credential: {size} bytes of compact JSON")

    figures = {
        "canonicalize document, full": rate(jsonld.canonicalize, docs[:n_full], rounds),
        "canonicalize document, shortcut": rate(shortcut.canonicalize, docs, rounds),
        "sign, full pyld": rate(sign_full, docs[:n_full], rounds),
        "sign, shortcut": rate(sign_fast, docs, rounds),
        "verify, full pyld": rate(suites.verify, signed[:n_full], rounds),
        "verify, shortcut": rate(
            lambda s: suites.verify(s, canonicalizer=shortcut.canonicalize), signed, rounds
        ),
        "Ed25519 sign alone (cryptography)": rate(key.sign, [b"x" * 64] * n_fast, rounds),
        "Ed25519 verify alone (cryptography)": rate(
            lambda sig: public.verify(sig, b"x" * 64), [key.sign(b"x" * 64)] * n_fast, rounds
        ),
    }
    width = max(map(len, figures))
    print(f"\n{'one core, per CPU-second':<{width}}  {'best':>9}  {'median':>9}")
    for name, (best, median) in figures.items():
        print(f"{name:<{width}}  {best:>9,.0f}  {median:>9,.0f}")
    for what in ("canonicalize document", "sign", "verify"):
        full = figures[f"{what}, full" + (" pyld" if what != "canonicalize document" else "")]
        fast = figures[f"{what}, shortcut"]
        print(f"ratio shortcut/full, {what}: {fast[1] / full[1]:.1f}x (median)")
    if args.node_check:
        print(
            f"\nNode check of {args.node_check} shortcut-signed credentials: "
            f"{harness.node_verify(signed[: args.node_check], 'verified by @digitalbazaar/vc')}"
        )


if __name__ == "__main__":
    main()
