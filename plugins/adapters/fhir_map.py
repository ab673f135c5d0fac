"""A vaccination as FHIR R4 resources following the WHO DDCC:VS data set (Digital Documentation
of COVID-19 Certificates: Vaccination Status), and FHIR resources back into our records.

Pure functions: records (dicts, as the registry returns them) in, FHIR JSON (dicts) out; no I/O.
The one DDCC:VS builder: the certificates plugin's `/ddcc` bundle (`plugins/certificates/fhir.py`)
is this module's `patient` and `immunization`, fed from what the signed credential states (no
record ids: `key`) and put in a collection with the certificate as a DocumentReference.

DDCC:VS element            -> where it goes
  name, birth date, sex, id -> Patient.name, birthDate, gender, identifier
  vaccine or prophylaxis    -> Immunization.vaccineCode (ICD-11 MMS, the vaccine's `icd11Code`)
  vaccine brand             -> extension DDCCEventBrand (the vaccine's code and name)
  manufacturer              -> Immunization.manufacturer.display
  dose number, total doses  -> protocolApplied.doseNumberPositiveInt / seriesDosesPositiveInt
  disease targeted          -> protocolApplied.targetDisease (ICD-11, default RA01 COVID-19)
  date of vaccination       -> occurrenceDateTime
  administering centre      -> performer (Organization) and location.display
  health worker identifier  -> performer (Practitioner with its identifier)
  batch / lot number        -> lotNumber
  country of vaccination    -> extension DDCCCountryOfEvent (ISO 3166-1 alpha-3)
  valid from / until        -> extension DDCCVaccineValidFrom, expirationDate
  certificate (HCID, issuer)-> Bundle.identifier, Composition (document Bundle)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

DDCC = "http://smart.who.int/ddcc"
PROFILE = DDCC + "/StructureDefinition/"
ICD11 = "http://id.who.int/icd11/mms"
LOINC = "http://loinc.org"
#: the identifier system of our own record ids (override per country with `id_system`)
ID_SYSTEM = "urn:open-registry"
#: ICD-11 MMS: RA01 is COVID-19; the disease a programme targets is configurable
DEFAULT_DISEASE = "RA01"
_GENDER = {"Male": "male", "Female": "female", "Other": "other"}
_NS = uuid.UUID("6f1c3a52-43e5-4c6e-9a55-3d1f0c6a9e10")


def resource_id(kind: str, record_id: str) -> str:
    """A stable FHIR id for one of our records (the same export twice gives the same ids)."""
    return str(uuid.uuid5(_NS, f"{kind}/{record_id}"))


def _ref(kind: str, rid: str) -> dict[str, str]:
    return {"reference": f"urn:uuid:{rid}"}


def _identifier(system: str, value: Any) -> dict[str, str]:
    return {"system": system, "value": str(value)}


def _address(address: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not address:
        return None
    lines = [address[k] for k in ("addressLine1", "addressLine2") if address.get(k)]
    out: dict[str, Any] = {"line": lines} if lines else {}
    for ours, theirs in (
        ("district", "district"),
        ("state", "state"),
        ("pincode", "postalCode"),
        ("country", "country"),
    ):
        if address.get(ours):
            out[theirs] = address[ours]
    return out or None


def _clean(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if v not in (None, [], {}, "")}


def _key(record: Mapping[str, Any], key: str | None) -> str:
    """What a resource's id derives from: the record's id, else `key` (input that is not a
    registry record, such as a certificate's credential, names one for all its resources)."""
    rid = record.get("id") or key
    if not rid:
        raise ValueError("a record without an id needs a key")
    return str(rid)


def patient(
    recipient: Mapping[str, Any], *, id_system: str = ID_SYSTEM, key: str | None = None
) -> dict[str, Any]:
    """DDCCPatient: name, birth date, sex and identifier of the vaccinated person."""
    birth = recipient.get("dob") or (str(recipient["yob"]) if recipient.get("yob") else None)
    identifiers = [
        _identifier(f"{id_system}/{kind}", recipient[field])
        for kind, field in (("recipient", "id"), ("identity", "identity"))
        if recipient.get(field)
    ]
    return _clean(
        {
            "resourceType": "Patient",
            "id": resource_id("Patient", _key(recipient, key)),
            "meta": {"profile": [PROFILE + "DDCCPatient"]},
            "identifier": identifiers,
            "name": [{"use": "official", "text": recipient.get("name")}],
            "gender": _GENDER.get(recipient.get("gender") or "", "unknown"),
            "birthDate": birth,
            "address": [a] if (a := _address(recipient.get("address"))) else None,
        }
    )


def organization(facility: Mapping[str, Any], *, id_system: str = ID_SYSTEM) -> dict[str, Any]:
    """DDCCOrganization: the administering centre."""
    return _clean(
        {
            "resourceType": "Organization",
            "id": resource_id("Organization", facility.get("id") or facility["code"]),
            "meta": {"profile": [PROFILE + "DDCCOrganization"]},
            "identifier": [_identifier(f"{id_system}/facility", facility["code"])],
            "name": facility.get("name"),
            "address": [a] if (a := _address(facility.get("address"))) else None,
        }
    )


def practitioner(vaccinator: Mapping[str, Any], *, id_system: str = ID_SYSTEM) -> dict[str, Any]:
    """The health worker, by identifier (DDCC:VS asks for the identifier, not the name)."""
    return _clean(
        {
            "resourceType": "Practitioner",
            "id": resource_id("Practitioner", vaccinator.get("id") or vaccinator["code"]),
            "identifier": [_identifier(f"{id_system}/vaccinator", vaccinator["code"])],
            "name": [{"text": vaccinator["name"]}] if vaccinator.get("name") else None,
        }
    )


def _country(facility: Mapping[str, Any], country: str | None) -> str | None:
    if country:
        return country
    value = (facility.get("address") or {}).get("country") or ""
    return value if len(value) == 3 and value.isalpha() and value.isupper() else None


def _extensions(
    vaccination: Mapping[str, Any],
    vaccine: Mapping[str, Any],
    country: str | None,
    brand_system: str,
) -> list[dict[str, Any]]:
    """DDCCEventBrand (when the vaccine has a code), DDCCCountryOfEvent, DDCCVaccineValidFrom."""
    extensions: list[dict[str, Any]] = []
    code = vaccine.get("code") or vaccination.get("vaccine")
    if code:
        brand = {"system": brand_system, "code": code}
        if vaccine.get("name"):
            brand["display"] = vaccine["name"]
        extensions.append({"url": PROFILE + "DDCCEventBrand", "valueCoding": brand})
    if country:
        extensions.append({"url": PROFILE + "DDCCCountryOfEvent", "valueCode": country})
    if vaccination.get("effectiveStart"):
        valid_from = vaccination["effectiveStart"]
        extensions.append({"url": PROFILE + "DDCCVaccineValidFrom", "valueDateTime": valid_from})
    return extensions


def _vaccine_code(
    vaccination: Mapping[str, Any], vaccine: Mapping[str, Any], icd11_system: str
) -> dict[str, Any]:
    """The ICD-11 code of the vaccine or prophylaxis, else its name as text."""
    code = vaccine.get("icd11Code")
    if code:
        return {"coding": [{"system": icd11_system, "code": code}]}
    return {"text": vaccine.get("name") or str(vaccination.get("vaccine") or "")}


def _organization_id(facility: Mapping[str, Any]) -> str | None:
    """The administering centre's Organization id, or None for a centre known by name only."""
    rid = facility.get("id") or facility.get("code")
    return resource_id("Organization", rid) if rid else None


def _performers(
    facility: Mapping[str, Any], vaccinator: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """The centre (its Organization, or its name) and the health worker (a Practitioner)."""
    performers: list[dict[str, Any]] = []
    org_id = _organization_id(facility)
    if org_id:
        performers.append({"actor": _ref("Organization", org_id)})
    elif facility.get("name"):
        performers.append({"actor": {"display": facility["name"]}})
    if vaccinator:
        pid = resource_id("Practitioner", vaccinator.get("id") or vaccinator["code"])
        performers.append({"actor": _ref("Practitioner", pid)})
    return performers


def _protocol(
    vaccination: Mapping[str, Any],
    facility: Mapping[str, Any],
    disease: str | None,
    disease_name: str | None,
    icd11_system: str,
) -> dict[str, Any]:
    """protocolApplied: dose, series, the disease targeted (ICD-11 code and/or name) and the
    centre as authority."""
    org_id = _organization_id(facility)
    target = _clean(
        {
            "coding": [{"system": icd11_system, "code": disease}] if disease else None,
            "text": disease_name,
        }
    )
    return _clean(
        {
            "authority": _ref("Organization", org_id) if org_id else None,
            "targetDisease": [target] if target else None,
            "doseNumberPositiveInt": vaccination.get("dose"),
            "seriesDosesPositiveInt": vaccination.get("totalDoses"),
        }
    )


def immunization(
    vaccination: Mapping[str, Any],
    *,
    recipient: Mapping[str, Any],
    facility: Mapping[str, Any],
    vaccine: Mapping[str, Any] | None = None,
    vaccinator: Mapping[str, Any] | None = None,
    country: str | None = None,
    disease: str | None = DEFAULT_DISEASE,
    disease_name: str | None = None,
    brand_system: str | None = None,
    id_system: str = ID_SYSTEM,
    icd11_system: str = ICD11,
    key: str | None = None,
) -> dict[str, Any]:
    """DDCCImmunization: one dose, with the DDCC brand and country-of-event extensions.

    A facility known by name only (no id or code) is named as performer and location, with no
    Organization. `disease` is the targeted disease's ICD-11 code, `disease_name` its name (either
    may be None). `key`: what the ids derive from when the vaccination and recipient have no id.
    """
    vaccine = vaccine or {"code": vaccination.get("vaccine")}
    where = _country(facility, country)
    place = facility.get("name") or facility.get("code")
    identifiers = (
        [_identifier(f"{id_system}/vaccination", vaccination["id"])]
        if vaccination.get("id")
        else None
    )
    return _clean(
        {
            "resourceType": "Immunization",
            "id": resource_id("Immunization", _key(vaccination, key)),
            "meta": {"profile": [PROFILE + "DDCCImmunization"]},
            "extension": _extensions(
                vaccination, vaccine, where, brand_system or f"{id_system}/vaccine"
            ),
            "identifier": identifiers,
            "status": "completed",
            "vaccineCode": _vaccine_code(vaccination, vaccine, icd11_system),
            "patient": _ref("Patient", resource_id("Patient", _key(recipient, key))),
            "occurrenceDateTime": vaccination.get("date"),
            "location": {"display": place} if place else None,
            "manufacturer": (
                {"display": vaccine["manufacturer"]} if vaccine.get("manufacturer") else None
            ),
            "lotNumber": vaccination.get("batch"),
            "expirationDate": vaccination.get("effectiveUntil"),
            "performer": _performers(facility, vaccinator),
            "protocolApplied": [
                _protocol(vaccination, facility, disease, disease_name, icd11_system)
            ],
        }
    )


def ddcc_bundle(
    vaccination: Mapping[str, Any],
    *,
    recipient: Mapping[str, Any],
    facility: Mapping[str, Any],
    vaccine: Mapping[str, Any] | None = None,
    vaccinator: Mapping[str, Any] | None = None,
    certificate: Mapping[str, Any] | None = None,
    timestamp: str | None = None,
    country: str | None = None,
    disease: str = DEFAULT_DISEASE,
    brand_system: str | None = None,
    id_system: str = ID_SYSTEM,
) -> dict[str, Any]:
    """A DDCC document Bundle: Composition, Patient, Organization, (Practitioner), Immunization.

    `certificate` (optional) is our certificate record: its id becomes the health certificate
    identifier (HCID) and its `issuedAt` the document's date. `timestamp` defaults to it, or to
    the vaccination's date, so the same inputs always give the same Bundle.
    """
    pat = patient(recipient, id_system=id_system)
    org = organization(facility, id_system=id_system)
    imm = immunization(
        vaccination,
        recipient=recipient,
        facility=facility,
        vaccine=vaccine,
        vaccinator=vaccinator,
        country=country,
        disease=disease,
        brand_system=brand_system,
        id_system=id_system,
    )
    resources = [pat, org]
    if vaccinator:
        resources.append(practitioner(vaccinator, id_system=id_system))
    resources.append(imm)
    hcid = str((certificate or {}).get("id") or vaccination["id"])
    when = timestamp or (certificate or {}).get("issuedAt") or vaccination.get("date")
    composition = _clean(
        {
            "resourceType": "Composition",
            "id": resource_id("Composition", hcid),
            "meta": {"profile": [PROFILE + "DDCCVSComposition"]},
            "identifier": _identifier(f"{id_system}/certificate", hcid),
            "status": "final",
            "type": {"coding": [{"system": LOINC, "code": "82593-5"}]},
            "category": [{"coding": [{"system": LOINC, "code": "11369-6"}]}],
            "subject": _ref("Patient", pat["id"]),
            "date": when,
            "author": [_ref("Organization", org["id"])],
            "title": "International Certificate of Vaccination or Prophylaxis",
            "attester": [{"mode": "official", "party": _ref("Organization", org["id"])}],
            "section": [
                {
                    "code": {"coding": [{"system": LOINC, "code": "11369-6"}]},
                    "focus": _ref("Immunization", imm["id"]),
                    "entry": [_ref("Immunization", imm["id"])],
                }
            ],
        }
    )
    entries = [composition, *resources]
    return _clean(
        {
            "resourceType": "Bundle",
            "id": resource_id("Bundle", hcid),
            "meta": {"profile": [PROFILE + "DDCCDocument"]},
            "identifier": _identifier(f"{id_system}/certificate", hcid),
            "type": "document",
            "timestamp": when,
            "link": [{"relation": "publication", "url": f"urn:HCID:{hcid}"}],
            "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in entries],
        }
    )


def transaction_bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A transaction Bundle that creates `resources` at most once on a FHIR server (PUT by our
    stable ids: sending it again changes nothing)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{r['id']}",
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }


# -- FHIR resources into our records (facilities and vaccinators) -------------------------------


def identifier_value(resource: Mapping[str, Any], system: str | None = None) -> str | None:
    """The value of the resource's identifier of `system` (the first one if no system given)."""
    for ident in resource.get("identifier") or []:
        if ident.get("value") and (system is None or ident.get("system") == system):
            return str(ident["value"])
    return None


def _telecom(resource: Mapping[str, Any], system: str) -> str | None:
    for t in resource.get("telecom") or []:
        if t.get("system") == system and t.get("value"):
            return str(t["value"])
    return None


def _our_address(address: Mapping[str, Any] | None) -> dict[str, Any]:
    if not address:
        return {}
    lines = address.get("line") or []
    out: dict[str, Any] = {}
    if lines:
        out["addressLine1"] = lines[0]
    if len(lines) > 1:
        out["addressLine2"] = ", ".join(lines[1:])
    district = address.get("district") or address.get("city")
    for key, value in (
        ("district", district),
        ("state", address.get("state")),
        ("pincode", address.get("postalCode")),
        ("country", address.get("country")),
    ):
        if value:
            out[key] = value
    return out


def facility_from(
    resource: Mapping[str, Any],
    *,
    identifier_system: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An Organization or a Location as a facility record (code from its identifier, else id)."""
    addresses = resource.get("address")
    address = (addresses[0] if addresses else None) if isinstance(addresses, list) else addresses
    record: dict[str, Any] = dict(defaults or {})
    record["code"] = identifier_value(resource, identifier_system) or resource.get("id")
    if resource.get("name"):
        record["name"] = resource["name"]
    merged_address = {**(record.get("address") or {}), **_our_address(address)}
    if merged_address:
        record["address"] = merged_address
    active = resource.get("active")
    status = resource.get("status")  # Location: active | suspended | inactive
    if active is False or status in ("inactive", "suspended"):
        record["status"] = "Inactive"
    elif "status" not in record:
        record["status"] = "Active"
    if resource.get("resourceType") == "Location" and resource.get("mode") == "kind":
        record.setdefault("type", "Mobile")
    position = resource.get("position") or {}
    if "latitude" in position and "longitude" in position:
        record["geoLocation"] = {"lat": position["latitude"], "lon": position["longitude"]}
    phone, email = _telecom(resource, "phone"), _telecom(resource, "email")
    if phone:
        record["contact"] = phone
    if email:
        record["email"] = email
    return record


def vaccinator_from(
    resource: Mapping[str, Any],
    *,
    facility_codes: list[str],
    identifier_system: str | None = None,
    national_id_system: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Practitioner as a vaccinator record (`facility_codes` from its PractitionerRoles)."""
    record: dict[str, Any] = dict(defaults or {})
    record["code"] = identifier_value(resource, identifier_system) or resource.get("id")
    names = resource.get("name") or []
    if names:
        n = names[0]
        text = n.get("text") or " ".join([*(n.get("given") or []), n.get("family") or ""]).strip()
        if text:
            record["name"] = text
    if national_id_system:
        nid = identifier_value(resource, national_id_system)
        if nid:
            record["nationalIdentifier"] = nid
    phone, email = _telecom(resource, "phone"), _telecom(resource, "email")
    if phone:
        record["mobileNumber"] = phone
    if email:
        record["email"] = email
    record["facilityIds"] = sorted(set(facility_codes))
    record["status"] = "Inactive" if resource.get("active") is False else "Active"
    return record
