"""Our certificates in the other health credential formats: SMART Health Card, EU DCC / HCERT and
the WHO DDCC:VS FHIR bundle, signed with the registry's ES256 key, and their verification
(signature against our keys, validity, and the certificate's status in this registry).

The formats are made from a certificate the caller's gate returned (the routes read it with
`registry.records(principal)`, so a caller who may not read it got 401/404 before anything
here runs). What a format needs beyond it (the vaccination, the vaccine's codes) the caller may
not be allowed to read; it is read as `system("certificates")`, explicitly, only for that
certificate. Verification looks a certificate's status up the same way: anyone may verify, and
the answer says only VALID / REVOKED / SUSPENDED. For other SMART Health Card verifiers, `jwks`
gives each key its `crlVersion` and `revocation_list` each key's Card Revocation List.

Other issuers' cards and HCERTs verify against the trust lists of `trust_dir` (`trust_lists.py`:
a JWK set per trusted `iss`, EU DCC document signers by `kid`): an unknown issuer or key is
INVALID, naming it; a card's revocation is checked against the issuer's Card Revocation List
when one is saved, and the verdict says "revocation not checked" otherwise (always for their
HCERTs)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from open_registry.core import Invalid, NotFound, Records, system
from open_registry.plugins.certificates import hcert, shc
from open_registry.plugins.certificates.es256 import hcert_kid
from open_registry.plugins.certificates.fhir import HealthRecord, ddcc_bundle
from open_registry.plugins.certificates.issuance import ACTOR, CERTIFICATE, VACCINATION
from open_registry.plugins.certificates.trust_lists import CardKey, DocumentSigner, TrustLists
from open_registry.plugins.certificates.verifier import (
    EXPIRED,
    INVALID,
    REVOKED,
    SUSPENDED,
    VALID,
    Verdict,
)


def _as_issuer(rt: Any) -> Records:
    """The records as the certificates plugin itself reads them (`system("certificates")`):
    for what a format needs beyond a certificate the caller's gate already let them read."""
    records: Records = rt.registry.records(system(ACTOR))
    return records


def health_record(rt: Any, certificate: dict[str, Any]) -> HealthRecord:
    """What the certificate states, plus its vaccine's codes (from the vaccine registry).

    `certificate` is one the caller's gate returned; its vaccination and vaccine are then read
    as the issuer (the caller, e.g. the recipient, need not be allowed to read them)."""
    records = _as_issuer(rt)
    vaccine: dict[str, Any] = {}
    try:
        vaccination = records[VACCINATION].get(certificate["vaccination"])
        code = vaccination.get("vaccine")
        if code and "vaccine" in records.services:
            vaccines = records["vaccine"]
            params = [("code", code), ("limit", "1")]
            found = vaccines.search(vaccines.service.parser.from_params(params)).items
            vaccine = found[0] if found else {}
    except NotFound:  # the vaccination record was deleted: the credential still says enough
        pass
    return HealthRecord.from_credential(certificate["id"], certificate["credential"], vaccine)


def smart_health_card(rt: Any, certificate: dict[str, Any]) -> str:
    """The card's compact JWS."""
    kid, key = rt.ec_keys.current()
    return shc.sign(shc.payload(health_record(rt, certificate), rt.config.base_url), kid, key)


def hcert_text(rt: Any, certificate: dict[str, Any]) -> str:
    """The `HC1:` text. A vaccine without its EU DCC codes, or a name ICAO 9303 cannot
    transliterate, is refused (422, each problem named) rather than signed with a guess."""
    _, key = rt.ec_keys.current()
    issuer = rt.config.issuer_name or rt.registry.settings.title
    try:
        return hcert.encode(
            health_record(rt, certificate),
            country=rt.config.country_code.upper(),
            issuer=issuer,
            kid=hcert_kid(key.public_key()),
            key=key,
        )
    except hcert.HCertRefused as exc:
        pointers = {"name": "/credentialSubject/name"}
        raise Invalid(
            "no EU DCC / HCERT can be made of this certificate: " + str(exc),
            errors=[
                {
                    "pointer": pointers.get(field, f"/vaccine/{field}"),
                    "message": reason,
                    "keyword": "format" if field == "name" else "required",
                }
                for field, reason in exc.problems
            ],
            missing=[field for field, _ in exc.problems if field != "name"],
        ) from None


def ddcc(rt: Any, certificate: dict[str, Any]) -> dict[str, Any]:
    return ddcc_bundle(health_record(rt, certificate))


# -- SMART Health Card revocation (SMART Health Cards framework, "Revocation") ------------------


def _revoked_ids(rt: Any) -> list[str]:
    """Every certificate a card must no longer stand for: revoked ones, and deleted ones (a
    revocation is final, so the list only grows)."""
    table = rt.registry.services[CERTIFICATE].table
    stmt = (
        sa.select(table.c.id)
        .where(sa.or_(table.c.status == "revoked", table.c._deleted_at.is_not(None)))
        .order_by(table.c.statusIndex, table.c.id)
    )
    with rt.registry.db.engine.connect() as conn:
        return [str(row[0]) for row in conn.execute(stmt)]


def crl_version(rt: Any) -> int:
    """The revocation list's counter (`ctr`, the JWKs' `crlVersion`): 1 for an empty list, one
    more for each certificate revoked since."""
    table = rt.registry.services[CERTIFICATE].table
    stmt = sa.select(sa.func.count()).where(
        sa.or_(table.c.status == "revoked", table.c._deleted_at.is_not(None))
    )
    with rt.registry.db.engine.connect() as conn:
        return 1 + int(conn.execute(stmt).scalar() or 0)


def jwks(rt: Any) -> dict[str, Any]:
    """Our ES256 public keys, each with `crlVersion`: verifiers then fetch its revocation list
    at `<iss>/.well-known/crl/<kid>.json`."""
    version = crl_version(rt)
    return {"keys": [{**k, "crlVersion": version} for k in rt.ec_keys.jwks()["keys"]]}


def revocation_list(rt: Any, kid: str) -> dict[str, Any]:
    """The Card Revocation List of key `kid`: the `rid` (`vc.rid`, the certificate's UUID as
    base64url) of every revoked certificate. Cards are signed on demand with the current key,
    so any key may have signed a card of any certificate: each key's list names them all."""
    if kid not in rt.ec_keys.public_keys():
        raise NotFound(f"no ES256 key {kid[:60]!r} in this registry's JWK set")
    revoked = _revoked_ids(rt)
    rids = [rid for rid in map(_rid, revoked) if rid is not None]
    return {"kid": kid, "method": "rid", "ctr": len(revoked) + 1, "rids": rids}


def _rid(certificate_id: str) -> str | None:
    try:
        return shc.rid_of(certificate_id)
    except ValueError:  # not a UUID: this registry never made a card of it
        return None


def _status(rt: Any, certificate_id: str | None, verdict: Verdict) -> Verdict:
    """The verdict after looking the certificate up in this registry."""
    if certificate_id is None:
        verdict.warnings.append("no certificate id: status not checked")
        return verdict
    try:
        record = _as_issuer(rt)[CERTIFICATE].get(certificate_id)
    except NotFound:
        verdict.status, verdict.reason = INVALID, "this registry issued no such certificate"
        return verdict
    verdict.credential_id = certificate_id
    state = record["status"]
    if state == "revoked":
        verdict.status, verdict.reason = REVOKED, "the certificate is revoked"
        verdict.checks["revocation"] = False
    elif state == "suspended" and (
        not record.get("suspendedUntil") or record["suspendedUntil"] > datetime.now(UTC).isoformat()
    ):
        verdict.status, verdict.reason = SUSPENDED, "the certificate is suspended"
        verdict.checks["suspension"] = False
    else:
        verdict.checks["revocation"] = verdict.checks["suspension"] = True
    return verdict


def verify_text(rt: Any, text: str) -> Verdict:
    """Verify a SMART Health Card (`shc:/...` or its JWS) or an HCERT (`HC1:...`): ours, or
    another issuer's trusted through the trust lists of `trust_dir` (`trust_lists.py`)."""
    text = text.strip()
    if text.startswith(hcert.PREFIX):
        return _verify_hcert(rt, text)
    try:
        jws = shc.from_qr_text(text) if text.startswith(shc.PREFIX) else text
    except shc.SHCError as exc:
        return Verdict(INVALID, str(exc))
    if jws.count(".") != 2:
        return Verdict(INVALID, "not a SMART Health Card (shc:/ or JWS) nor an HCERT (HC1:)")
    return _verify_shc(rt, jws)


def _trust_lists(rt: Any) -> TrustLists:
    lists: TrustLists = rt.trust.lists
    return lists


def _verify_shc(rt: Any, jws: str) -> Verdict:
    own = rt.config.base_url.rstrip("/")
    lists = _trust_lists(rt)
    used: list[CardKey] = []
    refused: list[str] = []

    def keys_for(iss: str, kid: str) -> ec.EllipticCurvePublicKey | None:
        if iss.rstrip("/") == own:
            return rt.ec_keys.public_keys().get(kid)
        found = lists.card_key(iss, kid)
        if found is None:
            refused.append(lists.untrusted_card(iss, kid))
            return None
        used.append(found)
        return found.key

    try:
        card = shc.verify(jws, keys_for)
    except shc.SHCError as exc:
        issuer_problem = "not trusted" in str(exc)
        reason = refused[0] if refused and issuer_problem else str(exc)
        return Verdict(INVALID, reason, checks={"issuer": not issuer_problem})
    verdict = Verdict(
        VALID, "", issuer=card.payload["iss"], checks={"issuer": True, "signature": True}
    )
    nbf, exp = card.payload.get("nbf"), card.payload.get("exp")
    if isinstance(nbf, int | float) and nbf > time.time() + 300:
        verdict.status, verdict.reason = INVALID, "the card is not valid yet (nbf)"
        return verdict
    if isinstance(exp, int | float) and exp < time.time():
        verdict.status, verdict.reason = EXPIRED, "the card has expired (exp)"
        return verdict
    verdict.checks["dates"] = True
    rid = card.payload.get("vc", {}).get("rid")
    if used:  # another issuer's card
        return _card_revocation(used[0], rid if isinstance(rid, str) else None, nbf, verdict)
    verdict = _status(rt, shc.certificate_of(rid) if isinstance(rid, str) else None, verdict)
    if verdict.status == VALID:
        verdict.reason = "a SMART Health Card of this registry: signature, issuer and status good"
    return verdict


def _card_revocation(key: CardKey, rid: str | None, nbf: Any, verdict: Verdict) -> Verdict:
    """Another issuer's card against the Card Revocation List saved for its key, if any."""
    good = f"a SMART Health Card of {key.iss}: signature, issuer and dates good"
    crl = key.crl
    if crl is None or rid is None:
        why = (
            "the card has no revocation id (vc.rid)"
            if rid is None
            else f"no revocation list of key {key.kid} is saved in trust_dir shc/crl/"
            if key.crl_version is not None
            else "the issuer publishes no revocation list for this key"
        )
        verdict.warnings.append(f"revocation not checked: {why}")
        verdict.reason = f"{good}; revocation not checked ({why})"
        return verdict
    if crl.revoked(rid, nbf):
        verdict.checks["revocation"] = False
        verdict.status = REVOKED
        verdict.reason = f"the card is revoked (listed in {crl.source})"
        return verdict
    verdict.checks["revocation"] = True
    verdict.reason = f"{good}; not in its revocation list ({crl.source}, ctr {crl.ctr})"
    if key.crl_version is not None and crl.ctr < key.crl_version:
        verdict.warnings.append(
            f"the saved revocation list (ctr {crl.ctr}) is older than the issuer's key says "
            f"(crlVersion {key.crl_version}): save it again"
        )
    return verdict


def _verify_hcert(rt: Any, text: str) -> Verdict:
    own = {hcert_kid(k): k for k in rt.ec_keys.public_keys().values()}
    try:
        unverified = hcert.read(text)
    except hcert.HCertError as exc:
        return Verdict(INVALID, str(exc), checks={"issuer": True})
    kid = unverified.kid
    if kid not in own:
        signers = _trust_lists(rt).signers_for(kid)
        if signers:  # another issuer's document signer
            return _verify_other_hcert(unverified, signers)
        message = f"the signing key {kid.hex()} is not trusted"
        return Verdict(INVALID, message, checks={"issuer": False})
    try:
        cert = unverified.verified_by(own[kid])
    except hcert.HCertError as exc:
        return Verdict(INVALID, str(exc), checks={"issuer": True})
    verdict = Verdict(
        VALID, "", issuer=str(cert.claims.get(1)), checks={"issuer": True, "signature": True}
    )
    exp = cert.claims.get(4)
    if isinstance(exp, int) and exp < time.time():
        verdict.status, verdict.reason = EXPIRED, "the HCERT has expired (exp)"
        return verdict
    verdict.checks["dates"] = True
    entries = cert.dcc.get("v") or [{}]
    verdict = _status(rt, hcert.certificate_of(str(entries[0].get("ci", ""))), verdict)
    if verdict.status == VALID:
        verdict.reason = "an EU DCC / HCERT of this registry: signature, issuer and status good"
    return verdict


def _verify_other_hcert(unverified: hcert.Unverified, signers: list[DocumentSigner]) -> Verdict:
    """An HCERT signed by a trusted document signer of another issuer (several may share its
    kid: each is tried)."""
    cert: hcert.HCert | None = None
    signer = signers[0]
    for signer in signers:
        try:
            cert = unverified.verified_by(signer.key)
        except hcert.HCertError as exc:
            if str(exc) != "invalid signature":
                return Verdict(INVALID, str(exc), checks={"issuer": True})
            continue
        break
    if cert is None:
        return Verdict(INVALID, "invalid signature", checks={"issuer": True, "signature": False})
    verdict = Verdict(
        VALID, "", issuer=str(cert.claims.get(1)), checks={"issuer": True, "signature": True}
    )
    problem = signer.problem(cert.claims, cert.dcc)
    if problem is not None:
        verdict.checks["issuer"] = False
        verdict.status, verdict.reason = INVALID, problem
        return verdict
    exp = cert.claims.get(4)
    if isinstance(exp, int | float) and exp < time.time():
        verdict.status, verdict.reason = EXPIRED, "the HCERT has expired (exp)"
        return verdict
    verdict.checks["dates"] = True
    why = "other issuers' HCERT revocation lists are not read"
    verdict.warnings.append(f"revocation not checked: {why}")
    verdict.reason = (
        f"an EU DCC / HCERT of {verdict.issuer}, document signer {signer.kid.hex()} "
        f"({signer.source}): signature, issuer and dates good; revocation not checked ({why})"
    )
    return verdict
