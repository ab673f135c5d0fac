"""The certificates plugin's cryptographic core: offline, strict JSON-LD (`jsonld`, `loader`),
RDFC-1.0 canonicalization (`rdfc`), Ed25519 Multikey / did:key (`keys`), the Data Integrity
suites `eddsa-rdfc-2022` and `Ed25519Signature2020` (`suites`), verification of DIVOC's 2018
suites (`legacy`), and a fast path for the fixed vaccination credential shape (`shortcut`).

Importing `plugins.certificates.jsonld` (which `suites` does) makes the shipped-contexts loader
pyld's global document loader, so no JSON-LD processing in the process can fetch a context.
"""
