"""A vaccination as FHIR R4 resources: the minimal bundle SMART Health Cards carry, and the WHO
DDCC:VS (Digital Documentation of COVID-19 Certificates: Vaccination Status) bundle.

Input is a `HealthRecord`: what a certificate states (from its signed credential) plus the
vaccine's codes. Codes are ICD-11 (`http://id.who.int/icd/release/11/mms`), the system DDCC uses;
`codes/ICD.json` (DIVOC's reference data) names the disease a code protects against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ICD11 = "http://id.who.int/icd/release/11/mms"
CODES = Path(__file__).parent / "codes"
# the WHO DDCC implementation guide canonical, as in plugins/adapters/fhir_map.py
DDCC = "http://smart.who.int/ddcc/StructureDefinition"


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
        )


def _vaccine_code(record: HealthRecord) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": ICD11, "code": record.icd11} if record.icd11 else {}
    if not coding:  # no standard code known: the name as text (FHIR allows a text-only concept)
        return {"text": record.vaccine_name}
    return {"coding": [coding]}


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
    """A WHO DDCC:VS bundle (Patient, Immunization, the certificate as a DocumentReference)."""
    family, given = record.family_given
    patient_id, immunization_id = "patient-1", "immunization-1"
    gender = {"Male": "male", "Female": "female", "Other": "other"}.get(record.gender or "")
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient_id,
        "meta": {"profile": [f"{DDCC}/DDCCPatient"]},
        "name": [{"text": record.name, "family": family, **({"given": given} if given else {})}],
    }
    if record.birth_date:
        patient["birthDate"] = record.birth_date
    if gender:
        patient["gender"] = gender
    protocol: dict[str, Any] = {"doseNumberPositiveInt": record.dose}
    if record.total_doses:
        protocol["seriesDosesPositiveInt"] = record.total_doses
    if record.disease:
        protocol["targetDisease"] = [{"text": record.disease}]
    immunization: dict[str, Any] = {
        "resourceType": "Immunization",
        "id": immunization_id,
        "meta": {"profile": [f"{DDCC}/DDCCImmunization"]},
        "status": "completed",
        "vaccineCode": _vaccine_code(record),
        "patient": {"reference": f"Patient/{patient_id}"},
        "occurrenceDateTime": record.date,
        "protocolApplied": [protocol],
    }
    if record.manufacturer:
        immunization["manufacturer"] = {"display": record.manufacturer}
    if record.batch:
        immunization["lotNumber"] = record.batch
    if record.facility:
        immunization["location"] = {"display": record.facility}
        immunization["performer"] = [{"actor": {"display": record.facility}}]
    if record.country:
        immunization["extension"] = [
            {"url": f"{DDCC}/DDCCCountryOfVaccination", "valueCode": record.country}
        ]
    document = {
        "resourceType": "DocumentReference",
        "id": "certificate-1",
        "status": "current",
        "identifier": [{"value": record.certificate_id}],
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": record.issued_at,
        "content": [{"attachment": {"contentType": "application/vc+ld+json"}}],
    }
    if record.issuer_name:
        document["author"] = [{"display": record.issuer_name}]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "meta": {"profile": [f"{DDCC}/DDCCVSBundle"]},
        "entry": [
            {"fullUrl": f"urn:ddcc:{r['resourceType']}:{r['id']}", "resource": r}
            for r in (patient, immunization, document)
        ],
    }
