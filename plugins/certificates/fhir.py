"""A vaccination as FHIR R4 resources: the minimal bundle SMART Health Cards carry, and the WHO
DDCC:VS (Digital Documentation of COVID-19 Certificates: Vaccination Status) bundle.

Input is a `HealthRecord`: what a certificate states (from its signed credential) plus the
vaccine's codes, read from fields of the vaccine record: ICD-11 (`icd11Code`, written with HL7's
URI for ICD-11 MMS, `http://id.who.int/icd/release/11/mms`), CVX (`cvx`) and SNOMED CT
(`snomed`), the code systems of the SMART Health Cards vaccination profile, and the EU DCC value
set codes (`euMa`, `euMp`, `euVp`). `codes/ICD.json` (DIVOC's reference data) names the disease
an ICD-11 code protects against. The DDCC:VS resources are built by the one DDCC:VS builder,
`plugins/adapters/fhir_map.py` (which the FHIR adapter's export uses too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from open_registry.plugins.adapters import fhir_map

ICD11 = "http://id.who.int/icd/release/11/mms"
CVX = "http://hl7.org/fhir/sid/cvx"
SNOMED = "http://snomed.info/sct"
CODES = Path(__file__).parent / "codes"


@cache
def code_list(name: str) -> Any:
    return json.loads((CODES / name).read_text(encoding="utf-8"))


def lookup(table: dict[str, str], *texts: str | None) -> str | None:
    """The value of the first key of `table` found in any of `texts` (case-insensitive)."""
    haystack = " ".join(t.lower() for t in texts if t)
    for key, value in table.items():
        if key.lower() in haystack:
            return value
    return None


@dataclass(frozen=True)
class HealthRecord:
    """What a vaccination certificate states, in the terms the health formats need."""

    certificate_id: str
    issued_at: str  # RFC 3339
    name: str
    birth_date: str | None
    gender: str | None
    vaccine_name: str
    manufacturer: str | None
    icd11: str | None
    batch: str | None
    date: str  # RFC 3339 date-time or date
    dose: int
    total_doses: int | None
    facility: str | None
    country: str | None
    issuer_name: str | None
    #: the vaccine record's own codes (never guessed from its name): CVX and SNOMED CT for
    #: SMART Health Cards, the EU DCC value set codes for an HCERT (`ma`, `mp`, `vp`)
    cvx: str | None = None
    snomed: str | None = None
    eu_ma: str | None = None
    eu_mp: str | None = None
    eu_vp: str | None = None
    #: the vaccine registry's code of the vaccine (named when an HCERT cannot be made)
    vaccine_code: str | None = None

    @property
    def family_given(self) -> tuple[str, list[str]]:
        parts = self.name.split()
        if len(parts) < 2:
            return self.name, []
        return parts[-1], parts[:-1]

    @property
    def disease(self) -> str | None:
        entry = code_list("ICD.json").get(self.icd11 or "")
        return entry.get("disease") if entry else None

    @classmethod
    def from_credential(
        cls, certificate_id: str, credential: dict[str, Any], vaccine: dict[str, Any]
    ) -> HealthRecord:
        subject = credential.get("credentialSubject", {})
        evidence = (credential.get("evidence") or [{}])[0]
        facility = evidence.get("facility", {})
        issuer = credential.get("issuer")
        icd = vaccine.get("icd11Code") or lookup(
            {v["vaccineName"]: v["icd11Code"] for v in code_list("VACCINE_ICD.json")},
            evidence.get("vaccine"),
        )
        return cls(
            certificate_id=certificate_id,
            issued_at=str(credential.get("validFrom") or credential.get("issuanceDate") or ""),
            name=str(subject.get("name", "")),
            birth_date=subject.get("birthDate"),
            gender=subject.get("gender"),
            vaccine_name=str(evidence.get("vaccine") or vaccine.get("name") or ""),
            manufacturer=evidence.get("manufacturer") or vaccine.get("manufacturer"),
            icd11=icd,
            batch=evidence.get("batch"),
            date=str(evidence.get("date", "")),
            dose=int(evidence.get("dose", 1)),
            total_doses=evidence.get("totalDoses"),
            facility=facility.get("name"),
            country=(facility.get("address") or {}).get("addressCountry"),
            issuer_name=issuer if isinstance(issuer, str) else None,
            cvx=_code(vaccine, "cvx"),
            snomed=_code(vaccine, "snomed"),
            eu_ma=_code(vaccine, "euMa"),
            eu_mp=_code(vaccine, "euMp"),
            eu_vp=_code(vaccine, "euVp"),
            vaccine_code=_code(vaccine, "code"),
        )


def _code(vaccine: dict[str, Any], field: str) -> str | None:
    value = vaccine.get(field)
    return value.strip() if isinstance(value, str) and value.strip() else None


def vaccine_codings(record: HealthRecord) -> list[dict[str, str]]:
    """The vaccine's codings, each from a field of its vaccine record: CVX, SNOMED CT, ICD-11
    (the code systems the SMART Health Cards vaccination profile names). No `display`: the
    card's data-minimization profile leaves it out."""
    return [
        {"system": system, "code": code}
        for system, code in ((CVX, record.cvx), (SNOMED, record.snomed), (ICD11, record.icd11))
        if code
    ]


def _vaccine_code(record: HealthRecord) -> dict[str, Any]:
    codings = vaccine_codings(record)
    if not codings:  # no standard code known: the name as text (FHIR allows a text-only concept)
        return {"text": record.vaccine_name}
    return {"coding": codings}


def minimal_bundle(record: HealthRecord) -> dict[str, Any]:
    """The SMART Health Card bundle: Patient + Immunization, `resource:N` references, no ids,
    no narrative (the card must fit a QR code)."""
    family, given = record.family_given
    patient: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": family}]}
    if given:
        patient["name"][0]["given"] = given
    if record.birth_date:
        patient["birthDate"] = record.birth_date
    immunization: dict[str, Any] = {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": _vaccine_code(record),
        "patient": {"reference": "resource:0"},
        "occurrenceDateTime": record.date,
    }
    if record.batch:
        immunization["lotNumber"] = record.batch
    if record.facility:
        immunization["performer"] = [{"actor": {"display": record.facility}}]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "resource:0", "resource": patient},
            {"fullUrl": "resource:1", "resource": immunization},
        ],
    }


def ddcc_bundle(record: HealthRecord) -> dict[str, Any]:
    """A WHO DDCC:VS bundle (Patient, Immunization, the certificate as a DocumentReference).

    Patient and Immunization are `fhir_map`'s, from what the credential states: their ids derive
    from the certificate id (the credential names no record ids), the centre is named (no
    Organization), the disease targeted is named (`codes/ICD.json` gives no code).
    """
    key = f"certificate/{record.certificate_id}"
    recipient = {"name": record.name, "dob": record.birth_date, "gender": record.gender}
    patient = fhir_map.patient(recipient, key=key)
    immunization = fhir_map.immunization(
        {
            "dose": record.dose,
            "totalDoses": record.total_doses,
            "batch": record.batch,
            "date": record.date,
        },
        recipient=recipient,
        facility={"name": record.facility} if record.facility else {},
        vaccine={
            "name": record.vaccine_name,
            "manufacturer": record.manufacturer,
            "icd11Code": record.icd11,
        },
        country=record.country,
        disease=None,
        disease_name=record.disease,
        icd11_system=ICD11,
        key=key,
    )
    document: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": fhir_map.resource_id("DocumentReference", key),
        "status": "current",
        "identifier": [{"value": record.certificate_id}],
        "subject": {"reference": f"urn:uuid:{patient['id']}"},
        "date": record.issued_at,
        "content": [{"attachment": {"contentType": "application/vc+ld+json"}}],
    }
    if record.issuer_name:
        document["author"] = [{"display": record.issuer_name}]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "meta": {"profile": [fhir_map.PROFILE + "DDCCVSBundle"]},
        "entry": [
            {"fullUrl": f"urn:uuid:{r['id']}", "resource": r}
            for r in (patient, immunization, document)
        ],
    }
