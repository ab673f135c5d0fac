"""What signing raises and what verification answers (shared by the proof suites)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class SigningError(ValueError):
    """A credential that cannot be signed as asked (bad input, unsupported suite)."""


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of verifying one credential's proof. `error` says why it failed."""

    verified: bool
    proof_type: str | None = None
    verification_method: str | None = None
    controller: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "proofType": self.proof_type,
            "verificationMethod": self.verification_method,
            "controller": self.controller,
            "error": self.error,
        }


def failed(error: str, proof: Any = None) -> VerificationResult:
    """A failed result, carrying what the proof says about itself when it is an object."""
    proof = proof if isinstance(proof, dict) else {}
    method = proof.get("verificationMethod")
    proof_type = proof.get("cryptosuite") or proof.get("type")
    return VerificationResult(
        verified=False,
        proof_type=proof_type if isinstance(proof_type, str) else None,
        verification_method=method if isinstance(method, str) else None,
        error=error,
    )
