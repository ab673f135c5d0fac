/*
 * The verification page's core: reading QR payloads and verifying certificates in the browser,
 * without a network, against the keys and status bits the page saved (`/verify/trust.json`).
 *
 * - W3C credentials (our QR payloads: DIVOC's ZIP holding certificate.json, or raw deflate):
 *   eddsa-rdfc-2022 / Ed25519Signature2020 proofs with WebCrypto Ed25519. The canonical N-Quads
 *   are written the way the registry's `shortcut.py` writes them: for our fixed credential
 *   shape under the shipped contexts the RDF quads are known from the JSON, then RDFC-1.0
 *   (`rdfc.py`, ported below) labels the blank nodes. A credential of another shape cannot be
 *   checked here (UNKNOWN: "connect to verify it"), never guessed.
 * - SMART Health Cards (`shc:/`, JWS ES256) and EU DCC / HCERT (`HC1:`, COSE_Sign1 ES256) with
 *   WebCrypto ECDSA P-256 against the registry's ES256 keys, and other issuers' against the
 *   trust lists in the bundle (`cardIssuers`: keys by `iss` and `kid` with their saved Card
 *   Revocation Lists; `dccSigners`: EU DCC document signers by `kid`, with the country,
 *   validity and kinds their certificates allow).
 * - Status: Bitstring Status Lists (revocation, suspension) for W3C credentials; the revoked and
 *   suspended certificate ids for cards and HCERTs (they carry no status entry).
 *
 * Nothing here touches the page (see verify.js); everything is exported on `VerifyCore`.
 */
(function (root) {
  "use strict";

  const MAX_INFLATED = 64 * 1024; // as qr.py / shc.py / hcert.py
  const MAX_STATUS_LIST = 1 << 20; // as status.py
  const ZIP_ENTRY = "certificate.json";

  class CoreError extends Error {}

  // -- bytes and text ------------------------------------------------------------------------

  const utf8 = new TextEncoder();
  const utf8Strict = new TextDecoder("utf-8", { fatal: true });

  function b64decode(text) {
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function b64encode(bytes) {
    let bin = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(bin);
  }

  function b64urlDecode(text) {
    if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new CoreError("not base64url");
    const std = text.replace(/-/g, "+").replace(/_/g, "/");
    return b64decode(std + "=".repeat((4 - (std.length % 4)) % 4));
  }

  function b64urlEncode(bytes) {
    return b64encode(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

  function b58decode(text) {
    let n = 0n;
    for (const c of text) {
      const i = B58.indexOf(c);
      if (i < 0) throw new CoreError("not base58btc: " + JSON.stringify(c));
      n = n * 58n + BigInt(i);
    }
    const body = [];
    while (n > 0n) {
      body.push(Number(n & 0xffn));
      n >>= 8n;
    }
    let zeros = 0;
    while (zeros < text.length && text[zeros] === "1") zeros++;
    return Uint8Array.from([...new Array(zeros).fill(0), ...body.reverse()]);
  }

  function multibaseDecode(value) {
    if (typeof value !== "string" || !value.startsWith("z")) {
      throw new CoreError("a multibase value must be base58btc ('z')");
    }
    return b58decode(value.slice(1));
  }

  function ed25519FromMultikey(value) {
    const raw = multibaseDecode(value);
    if (raw.length !== 34 || raw[0] !== 0xed || raw[1] !== 0x01) {
      throw new CoreError("not an Ed25519 Multikey public key (0xed01 + 32 bytes)");
    }
    return raw.slice(2);
  }

  function concat(parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  /** `bytes` through a DecompressionStream of `format`, refused past `limit` bytes. */
  async function inflate(bytes, format, limit) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream(format));
    const reader = stream.getReader();
    const chunks = [];
    let size = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.length;
        if (size > limit) {
          reader.cancel().catch(() => {});
          throw new CoreError("the data inflates to more than " + limit + " bytes");
        }
        chunks.push(value);
      }
    } catch (exc) {
      if (exc instanceof CoreError) throw exc;
      throw new CoreError("the data is not " + format + " compressed data (" + exc.message + ")");
    }
    return concat(chunks);
  }

  // -- our W3C QR payloads (qr.py decode_payload) ---------------------------------------------

  function u16(b, at) {
    return b[at] | (b[at + 1] << 8);
  }

  function u32(b, at) {
    return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16)) + b[at + 3] * 0x1000000;
  }

  /** The compressed bytes of `certificate.json` in a ZIP archive, found through its central
   * directory (the sizes in a local header may be zero when a data descriptor follows). */
  function zipEntry(b) {
    let end = -1;
    for (let i = b.length - 22; i >= Math.max(0, b.length - 22 - 0xffff); i--) {
      if (u32(b, i) === 0x06054b50) {
        end = i;
        break;
      }
    }
    if (end < 0) throw new CoreError("the QR payload is not a readable ZIP archive");
    const count = u16(b, end + 10);
    let at = u32(b, end + 16);
    const names = [];
    for (let n = 0; n < count; n++) {
      if (at + 46 > b.length || u32(b, at) !== 0x02014b50) {
        throw new CoreError("the QR payload's ZIP directory is damaged");
      }
      const flags = u16(b, at + 8);
      const method = u16(b, at + 10);
      const compressed = u32(b, at + 20);
      const size = u32(b, at + 24);
      const nameLength = u16(b, at + 28);
      const skip = u16(b, at + 30) + u16(b, at + 32);
      const local = u32(b, at + 42);
      const name = new TextDecoder().decode(b.subarray(at + 46, at + 46 + nameLength));
      names.push(name);
      if (name === ZIP_ENTRY) {
        if (flags & 1) throw new CoreError("the QR payload's ZIP is encrypted");
        if (size > MAX_INFLATED) {
          throw new CoreError("the QR payload's " + ZIP_ENTRY + " is more than " + MAX_INFLATED + " bytes");
        }
        if (u32(b, local) !== 0x04034b50) throw new CoreError("the QR payload's ZIP is damaged");
        const start = local + 30 + u16(b, local + 26) + u16(b, local + 28);
        const data = b.subarray(start, start + compressed);
        if (data.length !== compressed) throw new CoreError("the QR payload's ZIP is truncated");
        return { method, data };
      }
      at += 46 + nameLength + skip;
    }
    throw new CoreError(
      "the QR payload's ZIP holds no " + ZIP_ENTRY + " (it holds " + (names.slice(0, 5).join(", ") || "nothing") + ")"
    );
  }

  async function unzip(bytes) {
    const { method, data } = zipEntry(bytes);
    if (method === 0) return data;
    if (method !== 8) throw new CoreError("the QR payload's ZIP uses compression method " + method);
    return inflate(data, "deflate-raw", MAX_INFLATED);
  }

  /** DIVOC's Node QR library wrote the ZIP bytes as UTF-8 text (each byte one character). */
  function undoTextMangling(bytes) {
    let text;
    try {
      text = utf8Strict.decode(bytes);
    } catch (exc) {
      return null;
    }
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c > 0xff) return null;
      out[i] = c;
    }
    return out;
  }

  function startsWith(bytes, prefix) {
    return prefix.every((v, i) => bytes[i] === v);
  }

  /** The credential in one of our QR payloads (ZIP or raw deflate). */
  async function decodePayload(bytes) {
    let text;
    if (startsWith(bytes, [0x50, 0x4b, 0x03, 0x04])) {
      try {
        text = await unzip(bytes);
      } catch (exc) {
        const original = undoTextMangling(bytes);
        if (original === null || original.length === bytes.length) throw exc;
        text = await unzip(original);
      }
    } else {
      text = await inflate(bytes, "deflate-raw", MAX_INFLATED);
    }
    let credential;
    try {
      credential = JSON.parse(utf8Strict.decode(text));
    } catch (exc) {
      throw new CoreError("the QR payload does not hold JSON: " + exc.message);
    }
    if (!credential || typeof credential !== "object" || Array.isArray(credential)) {
      throw new CoreError("the QR payload's JSON is not an object (a credential)");
    }
    return credential;
  }

  // -- canonical N-Quads of our credential shape (shortcut.py) -------------------------------

  const XSD = "http://www.w3.org/2001/XMLSchema#";
  const RDF_TYPE = "<http://www.w3.org/1999/02/22-rdf-syntax-ns#type>";
  const CRED = "https://www.w3.org/2018/credentials#";
  const SCHEMA = "https://schema.org/";
  const VAC = "https://open-registry.example/vaccination#";
  const STATUS = "https://www.w3.org/ns/credentials/status#";
  const SEC = "https://w3id.org/security#";
  const CREDENTIALS_V2 = "https://www.w3.org/ns/credentials/v2";
  const VACCINATION_V1 = "https://open-registry.example/contexts/vaccination/v1";
  const ED25519_2020 = "https://w3id.org/security/suites/ed25519-2020/v1";
  const CONTEXTS = [
    [CREDENTIALS_V2, VACCINATION_V1],
    [CREDENTIALS_V2, VACCINATION_V1, ED25519_2020],
  ];

  class Uncovered extends Error {}

  function escapeLiteral(value) {
    return value.replace(/[\x00-\x1f\x7f"\\]/g, (c) => {
      switch (c) {
        case "\b": return "\\b";
        case "\t": return "\\t";
        case "\n": return "\\n";
        case "\f": return "\\f";
        case "\r": return "\\r";
        case '"': return '\\"';
        case "\\": return "\\\\";
        default: return "\\u" + c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0");
      }
    });
  }

  function escapeIri(value) {
    return value.replace(/[\x00-\x20<>"{}|^`\\]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0"));
  }

  function isAbsoluteIri(value) {
    return /^[A-Za-z][A-Za-z0-9+.\-]*:/.test(value) && !/[\x00-\x20<>"{}|^`\\\x7f]|\s/.test(value);
  }

  const lit = (iri, datatype) => ({ kind: "literal", predicate: "<" + escapeIri(iri) + ">", datatype: datatype || null });
  const iriField = (iri) => ({ kind: "iri", predicate: "<" + escapeIri(iri) + ">" });
  const nodeField = (iri, shape, many) => ({ kind: "node", predicate: "<" + escapeIri(iri) + ">", shape, many: !!many });
  const lits = (prefix, names, datatype) =>
    Object.fromEntries(Object.entries(names).map(([key, local]) => [key, lit(prefix + local, datatype)]));
  const same = (...names) => Object.fromEntries(names.map((n) => [n, n]));

  const ADDRESS = {
    types: { PostalAddress: SCHEMA + "PostalAddress" },
    required: [],
    hasId: false,
    fields: {
      ...lits(SCHEMA, { streetAddress: "streetAddress", city: "addressLocality" }),
      ...lits(SCHEMA, { addressRegion: "addressRegion", addressCountry: "addressCountry" }),
      ...lits(SCHEMA, { postalCode: "postalCode" }),
      ...lits(VAC, { streetAddress2: "streetAddress2", district: "district" }),
    },
  };
  const PERSON = {
    types: { Person: SCHEMA + "Person" },
    required: ["Person"],
    hasId: true,
    fields: {
      ...lits(VAC, { refId: "refId", age: "age" }),
      ...lits(SCHEMA, { name: "name", gender: "gender", nationality: "nationality" }),
      birthDate: lit(SCHEMA + "birthDate", XSD + "date"),
      address: nodeField(SCHEMA + "address", ADDRESS),
    },
  };
  const VERIFIER = { types: {}, required: [], hasId: true, fields: lits(SCHEMA, { name: "name" }) };
  const FACILITY = {
    types: {},
    required: [],
    hasId: true,
    fields: { name: lit(SCHEMA + "name"), address: nodeField(SCHEMA + "address", ADDRESS) },
  };
  const VACCINATION = {
    types: { Vaccination: VAC + "Vaccination" },
    required: ["Vaccination"],
    hasId: true,
    fields: {
      ...lits(VAC, same("certificateId", "infoUrl", "feedbackUrl", "batch")),
      ...lits(VAC, same("vaccine", "manufacturer", "dose", "totalDoses")),
      date: lit(VAC + "date", XSD + "dateTime"),
      effectiveStart: lit(VAC + "effectiveStart", XSD + "date"),
      effectiveUntil: lit(VAC + "effectiveUntil", XSD + "date"),
      verifier: nodeField(VAC + "verifier", VERIFIER),
      facility: nodeField(VAC + "facility", FACILITY),
    },
  };
  const STATUS_ENTRY = {
    types: { BitstringStatusListEntry: STATUS + "BitstringStatusListEntry" },
    required: ["BitstringStatusListEntry"],
    hasId: true,
    fields: {
      ...lits(STATUS, { statusPurpose: "statusPurpose", statusListIndex: "statusListIndex" }),
      statusListCredential: iriField(STATUS + "statusListCredential"),
    },
  };
  const CREDENTIAL = {
    types: {
      VerifiableCredential: CRED + "VerifiableCredential",
      ProofOfVaccinationCredential: VAC + "ProofOfVaccinationCredential",
    },
    required: ["VerifiableCredential", "ProofOfVaccinationCredential"],
    hasId: true,
    fields: {
      issuer: iriField(CRED + "issuer"),
      validFrom: lit(CRED + "validFrom", XSD + "dateTime"),
      validUntil: lit(CRED + "validUntil", XSD + "dateTime"),
      name: lit(SCHEMA + "name"),
      description: lit(SCHEMA + "description"),
      nonTransferable: lit(VAC + "nonTransferable"),
      credentialSubject: nodeField(CRED + "credentialSubject", PERSON),
      evidence: nodeField(CRED + "evidence", VACCINATION, true),
      credentialStatus: nodeField(CRED + "credentialStatus", STATUS_ENTRY, true),
    },
  };

  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

  function literalTerm(value, spec) {
    const suffix = spec.datatype ? "^^<" + spec.datatype + ">" : "";
    if (typeof value === "string") return ["t", '"' + escapeLiteral(value) + '"' + suffix];
    if (spec.datatype) throw new Uncovered();
    if (typeof value === "boolean") return ["t", '"' + value + '"^^<' + XSD + "boolean>"];
    // JSON numbers: whole numbers only (JavaScript cannot tell 1 from 1.0, which would be a
    // double: such a credential is left to the registry)
    if (typeof value === "number" && Number.isSafeInteger(value)) {
      return ["t", '"' + value + '"^^<' + XSD + "integer>"];
    }
    throw new Uncovered();
  }

  function iriTerm(value) {
    if (typeof value !== "string" || !isAbsoluteIri(value)) throw new Uncovered();
    return ["t", "<" + escapeIri(value) + ">"];
  }

  class Writer {
    constructor() {
      this.quads = [];
      this.count = 0;
    }

    node(obj, shape) {
      if (!isObject(obj)) throw new Uncovered();
      let subject;
      if ("id" in obj) {
        if (!shape.hasId) throw new Uncovered();
        subject = iriTerm(obj.id);
      } else {
        subject = ["b", "_:s" + this.count++];
      }
      let types = "type" in obj ? obj.type : [];
      types = typeof types === "string" ? [types] : types;
      if (!Array.isArray(types) || !types.every((t) => typeof t === "string" && Object.hasOwn(shape.types, t))) {
        throw new Uncovered();
      }
      if (!shape.required.every((t) => types.includes(t))) throw new Uncovered();
      for (const t of new Set(types)) this.quads.push([subject, RDF_TYPE, ["t", "<" + shape.types[t] + ">"], null]);
      for (const [key, value] of Object.entries(obj)) {
        if (key === "id" || key === "type") continue;
        if (!Object.hasOwn(shape.fields, key)) throw new Uncovered();
        const spec = shape.fields[key];
        if (spec.kind === "literal") {
          this.quads.push([subject, spec.predicate, literalTerm(value, spec), null]);
        } else if (spec.kind === "iri") {
          this.quads.push([subject, spec.predicate, iriTerm(value), null]);
        } else {
          const items = spec.many && Array.isArray(value) && value.length ? value : [value];
          for (const item of items) this.quads.push([subject, spec.predicate, this.node(item, spec.shape), null]);
        }
      }
      return subject;
    }
  }

  function sameContext(context) {
    return Array.isArray(context) && CONTEXTS.some((c) => c.length === context.length && c.every((v, i) => v === context[i]));
  }

  function dedupe(quads) {
    const seen = new Set();
    return quads.filter((q) => {
      const key = JSON.stringify(q);
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
  }

  /** The RDF quads of a vaccination credential of our shape, or null if not covered. */
  function credentialQuads(document) {
    if (!sameContext(document["@context"])) return null;
    const writer = new Writer();
    const body = Object.fromEntries(Object.entries(document).filter(([k]) => k !== "@context"));
    try {
      writer.node(body, CREDENTIAL);
    } catch (exc) {
      if (exc instanceof Uncovered) return null;
      throw exc;
    }
    return dedupe(writer.quads);
  }

  const PURPOSES = {
    assertionMethod: "assertionMethod",
    authentication: "authenticationMethod",
    capabilityInvocation: "capabilityInvocationMethod",
    capabilityDelegation: "capabilityDelegationMethod",
    keyAgreement: "keyAgreementMethod",
  };

  /** The quads of the proof options (with the credential's @context), or null if not covered. */
  function proofOptionsQuads(document) {
    const context = document["@context"];
    if (!sameContext(context)) return null;
    const kind = document.type;
    let keys;
    if (kind === "DataIntegrityProof" && document.cryptosuite === "eddsa-rdfc-2022") {
      keys = ["@context", "type", "cryptosuite", "created", "verificationMethod", "proofPurpose"];
    } else if (kind === "Ed25519Signature2020" && context.includes(ED25519_2020)) {
      keys = ["@context", "type", "created", "verificationMethod", "proofPurpose"];
    } else {
      return null;
    }
    const purpose = typeof document.proofPurpose === "string" && Object.hasOwn(PURPOSES, document.proofPurpose)
      ? "<" + SEC + PURPOSES[document.proofPurpose] + ">" : null;
    const names = Object.keys(document);
    if (names.length !== keys.length || !keys.every((k) => names.includes(k))) return null;
    if (purpose === null || typeof document.created !== "string") return null;
    let method;
    try {
      method = iriTerm(document.verificationMethod);
    } catch (exc) {
      return null;
    }
    const node = ["b", "_:p"];
    const quads = [
      [node, RDF_TYPE, ["t", "<" + SEC + kind + ">"], null],
      [node, "<http://purl.org/dc/terms/created>", ["t", '"' + escapeLiteral(document.created) + '"^^<' + XSD + "dateTime>"], null],
      [node, "<" + SEC + "verificationMethod>", method, null],
      [node, "<" + SEC + "proofPurpose>", ["t", purpose], null],
    ];
    if (kind === "DataIntegrityProof") {
      quads.push([node, "<" + SEC + "cryptosuite>", ["t", '"eddsa-rdfc-2022"^^<' + SEC + "cryptosuiteString>"], null]);
    }
    return quads;
  }

  // -- RDFC-1.0 (rdfc.py) --------------------------------------------------------------------

  /** Unicode code point order (RDFC-1.0), where JavaScript compares UTF-16 code units. */
  function codePointOrder(a, b) {
    const n = Math.min(a.length, b.length);
    for (let i = 0; i < n; i++) {
      let x = a.charCodeAt(i);
      let y = b.charCodeAt(i);
      if (x === y) continue;
      // surrogates (code points above U+FFFF) sort after U+E000-U+FFFF
      if (x >= 0xd800) x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      if (y >= 0xd800) y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
      return x - y;
    }
    return a.length - b.length;
  }

  function utf16Order(a, b) {
    return a < b ? -1 : a > b ? 1 : 0;
  }

  /** Whether code point and UTF-16 order could sort `text`'s lines differently. */
  function orderSensitive(text) {
    return /[\uD800-\uDFFF]/.test(text) && /[\uE000-\uFFFF]/.test(text);
  }

  async function sha256(text) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", utf8.encode(text)));
  }

  async function sha256Hex(text) {
    return Array.from(await sha256(text), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function serialize(quad, label) {
    const [s, p, o, g] = quad;
    const subject = s[0] === "b" ? label(s[1]) : s[1];
    const object = o[0] === "b" ? label(o[1]) : o[1];
    if (g === null) return subject + " " + p + " " + object + " .\n";
    const graph = g[0] === "b" ? label(g[1]) : g[1];
    return subject + " " + p + " " + object + " " + graph + " .\n";
  }

  class IdIssuer {
    constructor(prefix) {
      this.prefix = prefix;
      this.counter = 0;
      this.issued = new Map();
      this.order = [];
    }

    issue(existing) {
      const found = this.issued.get(existing);
      if (found !== undefined) return found;
      const made = this.prefix + this.counter++;
      this.issued.set(existing, made);
      this.order.push(existing);
      return made;
    }

    copy() {
      const other = new IdIssuer(this.prefix);
      other.counter = this.counter;
      other.issued = new Map(this.issued);
      other.order = [...this.order];
      return other;
    }
  }

  /** Every ordering of `items` from the sorted one, in Steinhaus-Johnson-Trotter order. */
  function* permutations(items) {
    const elements = [...items].sort(utf16Order);
    const left = new Map(elements.map((e) => [e, true]));
    const last = elements.length - 1;
    for (;;) {
      yield [...elements];
      let mobile = null;
      let pos = 0;
      for (let i = 0; i < elements.length; i++) {
        const e = elements[i];
        const lookingLeft = left.get(e);
        if ((mobile === null || e > mobile) &&
            ((lookingLeft && i > 0 && e > elements[i - 1]) || (!lookingLeft && i < last && e > elements[i + 1]))) {
          mobile = e;
          pos = i;
        }
      }
      if (mobile === null) return;
      const swap = left.get(mobile) ? pos - 1 : pos + 1;
      elements[pos] = elements[swap];
      elements[swap] = mobile;
      for (const e of elements) if (e > mobile) left.set(e, !left.get(e));
    }
  }

  class Canonicalizer {
    constructor(quads, order, maxPermutations) {
      this.order = order;
      this.canonical = new IdIssuer("_:c14n");
      this.bnodeQuads = new Map();
      this.firstDegree = new Map();
      this.remainingDeep = 0;
      this.remainingPermutations = maxPermutations;
      this.fixed = [];
      this.labelled = [];
      for (const quad of quads) {
        const [s, , o, g] = quad;
        if (s[0] !== "b" && o[0] !== "b" && (g === null || g[0] !== "b")) {
          this.fixed.push(serialize(quad, null));
          continue;
        }
        this.labelled.push(quad);
        for (const c of [s, o, g]) {
          if (c !== null && c[0] === "b") {
            if (!this.bnodeQuads.has(c[1])) this.bnodeQuads.set(c[1], []);
            const entries = this.bnodeQuads.get(c[1]);
            if (!entries.length || entries[entries.length - 1] !== quad) entries.push(quad);
          }
        }
      }
    }

    async run() {
      if (this.bnodeQuads.size === 1) {
        this.canonical.issue(this.bnodeQuads.keys().next().value);
        return this.serializeAll();
      }
      const byHash = new Map();
      for (const bnode of this.bnodeQuads.keys()) {
        const h = await this.hashFirstDegree(bnode);
        if (!byHash.has(h)) byHash.set(h, []);
        byHash.get(h).push(bnode);
      }
      const nonUnique = [];
      for (const h of [...byHash.keys()].sort(utf16Order)) {
        const bnodes = byHash.get(h);
        if (bnodes.length > 1) nonUnique.push(bnodes);
        else this.canonical.issue(bnodes[0]);
      }
      this.remainingDeep = nonUnique.reduce((n, b) => n + b.length, 0);
      this.maxDeep = this.remainingDeep;
      for (const bnodes of nonUnique) {
        const results = [];
        for (const bnode of bnodes) {
          if (this.canonical.issued.has(bnode)) continue;
          const issuer = new IdIssuer("_:b");
          issuer.issue(bnode);
          results.push(await this.hashNDegree(bnode, issuer));
        }
        results.sort((a, b) => utf16Order(a[0], b[0]));
        for (const [, issuer] of results) for (const existing of issuer.order) this.canonical.issue(existing);
      }
      return this.serializeAll();
    }

    serializeAll() {
      const label = (v) => this.canonical.issued.get(v);
      const lines = [...this.fixed, ...this.labelled.map((q) => serialize(q, label))];
      lines.sort(this.order);
      const text = lines.join("");
      if (typeof text.isWellFormed === "function" && !text.isWellFormed()) {
        throw new CoreError("text is not valid Unicode (lone surrogate)");
      }
      return text;
    }

    async hashFirstDegree(bnode) {
      const found = this.firstDegree.get(bnode);
      if (found !== undefined) return found;
      const label = (v) => (v === bnode ? "_:a" : "_:z");
      const lines = this.bnodeQuads.get(bnode).map((q) => serialize(q, label)).sort(this.order);
      const result = await sha256Hex(lines.join(""));
      this.firstDegree.set(bnode, result);
      return result;
    }

    async hashRelated(related, quad, issuer, position) {
      let identifier;
      if (this.canonical.issued.has(related)) identifier = this.canonical.issued.get(related);
      else if (issuer.issued.has(related)) identifier = issuer.issued.get(related);
      else identifier = await this.hashFirstDegree(related);
      return sha256Hex(position + (position !== "g" ? quad[1] : "") + identifier);
    }

    async hashNDegree(bnode, issuer) {
      if (this.remainingDeep <= 0) {
        throw new CoreError("blank-node graph too complex to canonicalize (work limit)");
      }
      this.remainingDeep -= 1;
      const byHash = new Map();
      for (const quad of this.bnodeQuads.get(bnode)) {
        for (const [position, c] of [["s", quad[0]], ["o", quad[2]], ["g", quad[3]]]) {
          if (c !== null && c[0] === "b" && c[1] !== bnode) {
            const h = await this.hashRelated(c[1], quad, issuer, position);
            if (!byHash.has(h)) byHash.set(h, []);
            byHash.get(h).push(c[1]);
          }
        }
      }
      const data = [];
      for (const relatedHash of [...byHash.keys()].sort(utf16Order)) {
        data.push(relatedHash);
        let chosenPath = "";
        let chosenIssuer = null;
        for (const permutation of permutations(byHash.get(relatedHash))) {
          if (--this.remainingPermutations < 0) {
            throw new CoreError("blank-node graph too complex to canonicalize (work limit)");
          }
          let issuerCopy = issuer.copy();
          let path = "";
          const recursion = [];
          let skip = false;
          for (const related of permutation) {
            if (this.canonical.issued.has(related)) {
              path += this.canonical.issued.get(related);
            } else {
              if (!issuerCopy.issued.has(related)) recursion.push(related);
              path += issuerCopy.issue(related);
            }
            if (chosenPath && path > chosenPath) {
              skip = true;
              break;
            }
          }
          if (skip) continue;
          for (const related of recursion) {
            const [resultHash, resultIssuer] = await this.hashNDegree(related, issuerCopy);
            path += issuerCopy.issue(related);
            path += "<" + resultHash + ">";
            issuerCopy = resultIssuer;
            if (chosenPath && path > chosenPath) {
              skip = true;
              break;
            }
          }
          if (skip) continue;
          if (!chosenPath || path < chosenPath) {
            chosenPath = path;
            chosenIssuer = issuerCopy;
          }
        }
        data.push(chosenPath);
        issuer = chosenIssuer;
      }
      return [await sha256Hex(data.join("")), issuer];
    }
  }

  /** Canonical N-Quads (RDFC-1.0) of `quads`; `order` sorts lines (code point by default). */
  function canonicalizeQuads(quads, order) {
    return new Canonicalizer(quads, order || codePointOrder, 100000).run();
  }

  /** Canonical N-Quads of a document of our shapes (credential or proof options), or null. */
  async function canonicalize(document, order) {
    const quads = proofOptionsQuads(document) || credentialQuads(document);
    return quads === null ? null : canonicalizeQuads(quads, order);
  }

  // -- verdicts ------------------------------------------------------------------------------

  /** A verdict: `status`, a translatable `reason` ({key, params}) or a plain `detail`. */
  function verdict(status, key, params, extra) {
    return { status, reason: { key, params: params || {} }, warnings: [], ...(extra || {}) };
  }

  function parseTime(value) {
    if (typeof value !== "string") return null;
    let text = value.trim();
    if (/T\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(text)) text += "Z"; // no zone: UTC, as verifier.py
    const ms = Date.parse(text);
    return Number.isNaN(ms) ? null : ms;
  }

  function subjectProblem(credential) {
    const subject = credential.credentialSubject;
    if (subject === undefined || subject === null) return "credentialSubject is required";
    const subjects = Array.isArray(subject) ? subject : [subject];
    if (!subjects.length) return "credentialSubject must hold at least one subject";
    if (!subjects.every(isObject)) return "credentialSubject must be an object or a list of objects";
    if (subjects.some((s) => !Object.keys(s).length)) return "credentialSubject must make a claim";
    return null;
  }

  function issuerOf(credential) {
    const issuer = isObject(credential.issuer) ? credential.issuer.id : credential.issuer;
    return typeof issuer === "string" ? issuer : null;
  }

  /** [{raw Ed25519 key, controller}] of a verification method: the saved keys, or did:key. */
  function resolveMethod(method, trust) {
    const saved = (trust.methods || {})[method];
    if (saved) return [{ key: ed25519FromMultikey(saved.publicKeyMultibase), controller: saved.controller || null }];
    const hash = method.indexOf("#");
    const did = hash < 0 ? method : method.slice(0, hash);
    const fragment = hash < 0 ? "" : method.slice(hash + 1);
    if (!did.startsWith("did:key:z6Mk")) throw new CoreError("unknown verification method " + method);
    const mb = did.slice("did:key:".length);
    if (fragment && fragment !== mb) throw new CoreError("did:key fragment does not match its key");
    return [{ key: ed25519FromMultikey(mb), controller: did }];
  }

  async function ed25519Valid(raw, signature, data) {
    const key = await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
    return crypto.subtle.verify({ name: "Ed25519" }, key, signature, data);
  }

  /** Whether the proof verifies: true, false, or a string saying why it cannot be checked. */
  async function checkProof(credential, trust) {
    const proof = credential.proof;
    if (Array.isArray(proof)) return "proof sets are checked by the registry only";
    if (!isObject(proof)) return false;
    const suite = proof.type === "DataIntegrityProof" ? proof.cryptosuite : null;
    if (proof.type !== "Ed25519Signature2020" && suite !== "eddsa-rdfc-2022") {
      return "proofs of type " + proof.type + " are checked by the registry only";
    }
    if (proof.proofPurpose !== "assertionMethod") return false;
    if (typeof proof.verificationMethod !== "string" || typeof proof.proofValue !== "string") return false;
    const unsecured = Object.fromEntries(Object.entries(credential).filter(([k]) => k !== "proof"));
    const options = Object.fromEntries(Object.entries(proof).filter(([k]) => k !== "proofValue"));
    if ("@context" in options) {
      const own = Array.isArray(options["@context"]) ? options["@context"] : [options["@context"]];
      const docs = Array.isArray(unsecured["@context"]) ? unsecured["@context"] : [unsecured["@context"]];
      if (!own.every((c, i) => JSON.stringify(c) === JSON.stringify(docs[i]))) return false;
      delete options["@context"];
    }
    let signature;
    let keys;
    try {
      signature = multibaseDecode(proof.proofValue);
      keys = resolveMethod(proof.verificationMethod, trust);
    } catch (exc) {
      return false;
    }
    const issuer = issuerOf(unsecured);
    keys = keys.filter((k) => k.controller === null || k.controller === issuer);
    if (!keys.length) return false;
    const config = { ...options, "@context": unsecured["@context"] };
    for (const order of [codePointOrder, utf16Order]) {
      const texts = [await canonicalize(config, order), await canonicalize(unsecured, order)];
      if (texts[0] === null || texts[1] === null) {
        return "this credential's form is checked by the registry only";
      }
      const data = concat([await sha256(texts[0]), await sha256(texts[1])]);
      for (const k of keys) if (await ed25519Valid(k.key, signature, data)) return true;
      // a signer sorting by UTF-16 code units (rdf-canonize) signed the other order
      if (!orderSensitive(texts[0]) && !orderSensitive(texts[1])) break;
    }
    return false;
  }

  async function statusBits(encoded) {
    if (typeof encoded !== "string" || !encoded.startsWith("u")) {
      throw new CoreError("encodedList must be multibase base64url");
    }
    const bits = await inflate(b64urlDecode(encoded.slice(1)), "gzip", MAX_STATUS_LIST);
    if (!bits.length) throw new CoreError("encodedList is an empty list");
    return bits;
  }

  function statusEntries(credential) {
    const status = credential.credentialStatus;
    if (status === undefined || status === null) return [];
    const items = Array.isArray(status) ? status : [status];
    return items.map((item) => {
      if (!isObject(item) || item.type !== "BitstringStatusListEntry") {
        throw new CoreError("credentialStatus holds an entry that is not a status list entry");
      }
      const raw = item.statusListIndex;
      const index = typeof raw === "number" ? raw : /^\s*\d+\s*$/.test(String(raw)) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(index)) throw new CoreError("a status entry has no whole-number statusListIndex");
      if (typeof item.statusListCredential !== "string") throw new CoreError("a status entry has no statusListCredential URL");
      return { ...item, statusListIndex: index };
    });
  }

  /** The verdict on a W3C credential, from the saved trust bundle only. */
  async function verifyCredential(credential, trust, now) {
    now = now === undefined ? Date.now() : now;
    const problem = subjectProblem(credential);
    if (problem) return verdict("INVALID", "unreadable", { detail: problem });
    const issuer = issuerOf(credential);
    if (!issuer || !(trust.issuers || []).includes(issuer)) return verdict("INVALID", "not_trusted", {}, { issuer });
    let proof;
    try {
      proof = await checkProof(credential, trust);
    } catch (exc) {
      proof = false;
    }
    if (typeof proof === "string") return verdict("UNKNOWN", "unsupported", { detail: proof }, { issuer });
    if (!proof) return verdict("INVALID", "signature", {}, { issuer });
    const start = parseTime(credential.validFrom || credential.issuanceDate);
    const end = parseTime(credential.validUntil || credential.expirationDate);
    if (start !== null && start > now) return verdict("INVALID", "not_yet", { date: new Date(start).toISOString() }, { issuer });
    if (end !== null && end < now) return verdict("EXPIRED", "expired", { date: new Date(end).toISOString() }, { issuer });
    const result = verdict("VALID", "valid", {}, { issuer });
    try {
      for (const entry of statusEntries(credential)) {
        const purpose = entry.statusPurpose;
        if (purpose !== "revocation" && purpose !== "suspension") {
          result.warnings.push("status purpose " + purpose + " not checked");
          continue;
        }
        const encoded = (trust.statusLists || {})[entry.statusListCredential];
        if (encoded === undefined) {
          result.warnings.push({ key: "status_unchecked" });
          continue;
        }
        const bits = await statusBits(encoded);
        const index = entry.statusListIndex;
        if (index < 0 || index >= bits.length * 8) throw new CoreError("statusListIndex is outside the list");
        if (bits[index >> 3] & (0x80 >> (index & 7))) {
          if (purpose === "revocation") return verdict("REVOKED", "revoked", {}, { issuer, warnings: result.warnings });
          result.status = "SUSPENDED";
          result.reason = { key: "suspended", params: {} };
        }
      }
    } catch (exc) {
      return verdict("INVALID", "unreadable", { detail: "credentialStatus: " + exc.message }, { issuer });
    }
    return result;
  }

  // -- SMART Health Cards and HCERTs ---------------------------------------------------------

  function shcJws(text) {
    text = text.trim();
    if (!text.startsWith("shc:/")) return text;
    const digits = text.slice(5);
    if (digits.includes("/")) throw new CoreError("chunked SMART Health Cards are not supported");
    if (!/^(\d\d)+$/.test(digits)) throw new CoreError("after 'shc:/' a card is pairs of digits");
    let out = "";
    for (let i = 0; i < digits.length; i += 2) out += String.fromCharCode(Number(digits.slice(i, i + 2)) + 45);
    return out;
  }

  /** {header, payload, parts} of a card (not verified). */
  async function readCard(text) {
    const jws = shcJws(text);
    const parts = jws.split(".");
    if (parts.length !== 3) throw new CoreError("a card is a compact JWS: header.payload.signature");
    const header = JSON.parse(new TextDecoder().decode(b64urlDecode(parts[0])));
    if (!isObject(header) || header.alg !== "ES256") throw new CoreError("the card's JWS header must say alg ES256");
    if (header.zip !== "DEF") throw new CoreError("the card's payload must be deflated (zip: DEF)");
    const raw = await inflate(b64urlDecode(parts[1]), "deflate-raw", MAX_INFLATED);
    const payload = JSON.parse(utf8Strict.decode(raw));
    if (!isObject(payload) || typeof payload.iss !== "string") throw new CoreError("the card's payload has no issuer (iss)");
    return { header, payload, parts };
  }

  async function es256Valid(jwk, signature, data) {
    if (signature.length !== 64) return false;
    const key = await crypto.subtle.importKey(
      "jwk", { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y, ext: true },
      { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]
    );
    return crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, signature, data);
  }

  function cardStatus(rid, issuer, trust, result) {
    if (typeof rid !== "string") {
      result.warnings.push("no certificate id: status not checked");
      return result;
    }
    if ((trust.revokedIds || []).includes(rid)) return verdict("REVOKED", "revoked", {}, { issuer });
    if ((trust.suspendedIds || []).includes(rid)) return verdict("SUSPENDED", "suspended", {}, { issuer });
    return result;
  }

  /** The verdict on another issuer's card from the revocation list saved for its key. */
  function otherCardStatus(rid, nbf, crl, issuer) {
    if (!crl || typeof rid !== "string") return verdict("VALID", "valid_unchecked", {}, { issuer });
    for (const entry of crl.rids || []) {
      const [id, stamp] = String(entry).split(".");
      if (id !== rid) continue;
      // `rid.<timestamp>`: only cards issued (nbf) before the timestamp are revoked
      if (stamp === undefined || typeof nbf !== "number" || nbf < Number(stamp)) {
        return verdict("REVOKED", "revoked", {}, { issuer });
      }
    }
    return verdict("VALID", "valid", {}, { issuer });
  }

  /** The key of a card: the registry's own (`es256`), or a trusted issuer's (`cardIssuers`). */
  function cardKey(issuer, kid, trust) {
    if (issuer === trust.cardIssuer) return (trust.es256 || []).find((k) => k.kid === kid) || null;
    const other = (trust.cardIssuers || {})[String(issuer).replace(/\/+$/, "")];
    return other ? (other.keys || []).find((k) => k.kid === kid) || null : null;
  }

  async function verifyCard(text, trust, now) {
    now = now === undefined ? Date.now() : now;
    let card;
    try {
      card = await readCard(text);
    } catch (exc) {
      return verdict("INVALID", "unreadable", { detail: exc.message });
    }
    const issuer = card.payload.iss;
    const own = issuer === trust.cardIssuer;
    const jwk = cardKey(issuer, card.header.kid, trust);
    if (!jwk) return verdict("INVALID", "not_trusted", {}, { issuer });
    const signed = utf8.encode(card.parts[0] + "." + card.parts[1]);
    let ok = false;
    try {
      ok = await es256Valid(jwk, b64urlDecode(card.parts[2]), signed);
    } catch (exc) {
      ok = false;
    }
    if (!ok) return verdict("INVALID", "signature", {}, { issuer });
    const nbf = card.payload.nbf;
    if (typeof nbf === "number" && nbf * 1000 > now + 300000) {
      return verdict("INVALID", "not_yet", { date: new Date(nbf * 1000).toISOString() }, { issuer });
    }
    const exp = card.payload.exp;
    if (typeof exp === "number" && exp * 1000 < now) {
      return verdict("EXPIRED", "expired", { date: new Date(exp * 1000).toISOString() }, { issuer });
    }
    const rid = ((card.payload.vc || {}).rid);
    if (!own) return otherCardStatus(rid, nbf, jwk.crl, issuer);
    return cardStatus(rid, issuer, trust, verdict("VALID", "valid", {}, { issuer }));
  }

  const B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

  function b45decode(text) {
    const values = Array.from(text, (c) => {
      const i = B45.indexOf(c);
      if (i < 0) throw new CoreError("not base45: " + JSON.stringify(c));
      return i;
    });
    const out = [];
    for (let i = 0; i < values.length; i += 3) {
      const chunk = values.slice(i, i + 3);
      if (chunk.length === 3) {
        const n = chunk[0] + chunk[1] * 45 + chunk[2] * 2025;
        if (n > 0xffff) throw new CoreError("not base45: a triplet is over 65535");
        out.push(n >> 8, n & 0xff);
      } else if (chunk.length === 2) {
        const n = chunk[0] + chunk[1] * 45;
        if (n > 0xff) throw new CoreError("not base45: a final pair is over 255");
        out.push(n);
      } else {
        throw new CoreError("not base45: a lone character at the end");
      }
    }
    return Uint8Array.from(out);
  }

  class Tagged {
    constructor(tag, value) {
      this.tag = tag;
      this.value = value;
    }
  }

  /** A CBOR item (RFC 8949, definite lengths); maps become Map objects. */
  function cborDecode(bytes) {
    let at = 0;
    const take = (n) => {
      if (at + n > bytes.length) throw new CoreError("CBOR data is truncated");
      const out = bytes.subarray(at, at + n);
      at += n;
      return out;
    };
    const uint = (info) => {
      if (info < 24) return info;
      const size = { 24: 1, 25: 2, 26: 4, 27: 8 }[info];
      if (!size) throw new CoreError("CBOR indefinite lengths are not supported");
      let n = 0n;
      for (const b of take(size)) n = (n << 8n) | BigInt(b);
      return Number(n);
    };
    const item = (depth) => {
      if (depth > 32) throw new CoreError("CBOR data nests too deeply");
      const first = take(1)[0];
      const major = first >> 5;
      const info = first & 31;
      if (major === 7) {
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22 || info === 23) return null;
        const view = (n) => new DataView(take(n).slice().buffer);
        if (info === 25) {
          const h = view(2).getUint16(0);
          const exp = (h >> 10) & 31;
          const frac = h & 1023;
          const sign = h & 0x8000 ? -1 : 1;
          if (exp === 0) return sign * frac * 2 ** -24;
          if (exp === 31) return frac ? NaN : sign * Infinity;
          return sign * (1 + frac / 1024) * 2 ** (exp - 15);
        }
        if (info === 26) return view(4).getFloat32(0);
        if (info === 27) return view(8).getFloat64(0);
        throw new CoreError("unsupported CBOR simple value " + info);
      }
      const n = uint(info);
      switch (major) {
        case 0: return n;
        case 1: return -1 - n;
        case 2: return take(n).slice();
        case 3: return utf8Strict.decode(take(n));
        case 4: {
          const out = [];
          for (let i = 0; i < n; i++) out.push(item(depth + 1));
          return out;
        }
        case 5: {
          const out = new Map();
          for (let i = 0; i < n; i++) {
            const key = item(depth + 1);
            out.set(key, item(depth + 1));
          }
          return out;
        }
        default: return new Tagged(n, item(depth + 1));
      }
    };
    const value = item(0);
    if (at !== bytes.length) throw new CoreError("CBOR data has bytes after its item");
    return value;
  }

  function cborHead(major, n) {
    if (n < 24) return [(major << 5) | n];
    if (n < 0x100) return [(major << 5) | 24, n];
    if (n < 0x10000) return [(major << 5) | 25, n >> 8, n & 0xff];
    return [(major << 5) | 26, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
  }

  /** The COSE Sig_structure ["Signature1", protected, h'', payload] as CBOR. */
  function sigStructure(protectedBytes, payload) {
    const context = utf8.encode("Signature1");
    return concat([
      Uint8Array.from([0x84]),
      Uint8Array.from(cborHead(3, context.length)), context,
      Uint8Array.from(cborHead(2, protectedBytes.length)), protectedBytes,
      Uint8Array.from([0x40]),
      Uint8Array.from(cborHead(2, payload.length)), payload,
    ]);
  }

  /** CBOR maps (with text keys) as plain objects, for the EU DCC JSON. */
  function plain(value) {
    if (value instanceof Map) return Object.fromEntries([...value].map(([k, v]) => [String(k), plain(v)]));
    if (Array.isArray(value)) return value.map(plain);
    return value;
  }

  /** {kid, claims (Map), dcc, protected, payload, signature} of an HCERT (not verified). */
  async function readHcert(text) {
    text = text.trim();
    if (!text.startsWith("HC1:")) throw new CoreError("an HCERT starts with 'HC1:'");
    const cose = await inflate(b45decode(text.slice(4)), "deflate", MAX_INFLATED);
    let message = cborDecode(cose);
    if (message instanceof Tagged) {
      if (message.tag !== 18) throw new CoreError("not a COSE_Sign1 (tag " + message.tag + ")");
      message = message.value;
    }
    if (!Array.isArray(message) || message.length !== 4) throw new CoreError("the HCERT is not a COSE_Sign1 message");
    const [protectedBytes, unprotected, payload, signature] = message;
    if (!(protectedBytes instanceof Uint8Array) || !(payload instanceof Uint8Array) || !(signature instanceof Uint8Array)) {
      throw new CoreError("the HCERT is not a COSE_Sign1 message");
    }
    const header = protectedBytes.length ? cborDecode(protectedBytes) : new Map();
    if (!(header instanceof Map) || header.get(1) !== -7) throw new CoreError("the HCERT must be signed with ES256 (alg -7)");
    const kid = header.get(4) || (unprotected instanceof Map ? unprotected.get(4) : undefined);
    if (!(kid instanceof Uint8Array)) throw new CoreError("the HCERT names no key (kid)");
    const claims = cborDecode(payload);
    if (!(claims instanceof Map)) throw new CoreError("the HCERT's claims are not a map");
    const hcert = claims.get(-260);
    const dcc = hcert instanceof Map ? plain(hcert.get(1) || new Map()) : {};
    return { kid, claims, dcc, protectedBytes, payload, signature };
  }

  function ridOfUvci(ci) {
    const tail = String(ci || "").split(":").pop();
    if (!/^[0-9A-Fa-f]{32}$/.test(tail)) return null;
    const bytes = Uint8Array.from(tail.match(/../g), (h) => parseInt(h, 16));
    return b64urlEncode(bytes);
  }

  /** Why a trusted document signer may not have signed this HCERT (as trust_lists.py), or null. */
  function signerProblem(signer, cert) {
    const name = "the document signer " + Array.from(b64urlDecode(signer.kid), (b) => b.toString(16).padStart(2, "0")).join("");
    const issuer = cert.claims.get(1);
    if (signer.country && typeof issuer === "string" && issuer.toUpperCase() !== signer.country.toUpperCase()) {
      return name + " signs for " + signer.country + ", but the HCERT's issuer (claim 1) is " + issuer;
    }
    const iat = cert.claims.get(6);
    if (typeof iat === "number") {
      if (signer.notBefore && iat * 1000 < Date.parse(signer.notBefore)) return name + " was not valid yet when the HCERT was issued";
      if (signer.notAfter && iat * 1000 > Date.parse(signer.notAfter)) return name + " had expired when the HCERT was issued";
    }
    if (Array.isArray(signer.kinds)) {
      for (const [kind, label] of [["v", "vaccination"], ["t", "test"], ["r", "recovery"]]) {
        const entries = cert.dcc[kind];
        if (Array.isArray(entries) && entries.length && !signer.kinds.includes(kind)) {
          return name + " may not sign " + label + " certificates (its extended key usage)";
        }
      }
    }
    return null;
  }

  async function es256Checks(jwk, cert) {
    try {
      return await es256Valid(jwk, cert.signature, sigStructure(cert.protectedBytes, cert.payload));
    } catch (exc) {
      return false;
    }
  }

  async function verifyHcert(text, trust, now) {
    now = now === undefined ? Date.now() : now;
    let cert;
    try {
      cert = await readHcert(text);
    } catch (exc) {
      return verdict("INVALID", "unreadable", { detail: exc.message });
    }
    const issuer = String(cert.claims.get(1));
    const kid = b64urlEncode(cert.kid);
    const jwk = (trust.es256 || []).find((k) => k.hcertKid === kid);
    // another issuer's document signers under this kid (several may share one: each is tried)
    const signers = jwk ? [] : (trust.dccSigners || []).filter((s) => s.kid === kid);
    if (!jwk && !signers.length) return verdict("INVALID", "not_trusted", {}, { issuer });
    let signer = null;
    if (jwk) {
      if (!(await es256Checks(jwk, cert))) return verdict("INVALID", "signature", {}, { issuer });
    } else {
      for (const candidate of signers) {
        if (await es256Checks(candidate, cert)) {
          signer = candidate;
          break;
        }
      }
      if (!signer) return verdict("INVALID", "signature", {}, { issuer });
      const problem = signerProblem(signer, cert);
      if (problem) return { ...verdict("INVALID", "not_trusted", {}, { issuer }), detail: problem };
    }
    const exp = cert.claims.get(4);
    if (typeof exp === "number" && exp * 1000 < now) {
      return verdict("EXPIRED", "expired", { date: new Date(exp * 1000).toISOString() }, { issuer });
    }
    if (signer) return verdict("VALID", "valid_unchecked", {}, { issuer }); // no HCERT revocation lists of others
    const entry = (cert.dcc.v || [{}])[0] || {};
    return cardStatus(ridOfUvci(entry.ci), issuer, trust, verdict("VALID", "valid", {}, { issuer }));
  }

  // -- what a certificate states, for the page -----------------------------------------------

  function first(value) {
    return Array.isArray(value) ? value[0] : value;
  }

  function text(value) {
    return value === undefined || value === null ? "" : String(value);
  }

  function credentialFacts(credential, trust) {
    const subject = first(credential.credentialSubject) || {};
    const evidence = first(credential.evidence) || {};
    const issuer = issuerOf(credential);
    const own = trust && (trust.ownIssuers || []).includes(issuer);
    const facility = isObject(evidence.facility) ? text(evidence.facility.name) : "";
    return {
      format: "W3C Verifiable Credential",
      name: text(subject.name),
      dose: text(evidence.dose),
      totalDoses: text(evidence.totalDoses),
      vaccine: [text(evidence.vaccine), text(evidence.manufacturer)].filter(Boolean).join(", "),
      date: text(evidence.date),
      issuer: [own ? trust.issuerName : text(issuer), facility].filter(Boolean).join(" — "),
    };
  }

  function cardFacts(card, trust) {
    const entries = (((card.payload.vc || {}).credentialSubject || {}).fhirBundle || {}).entry || [];
    const resources = entries.map((e) => (e && e.resource) || {});
    const patient = resources.find((r) => r.resourceType === "Patient") || {};
    const shot = resources.find((r) => r.resourceType === "Immunization") || {};
    const name = first(patient.name) || {};
    const coding = first((shot.vaccineCode || {}).coding) || {};
    const protocol = first(shot.protocolApplied) || {};
    const performer = (first(shot.performer) || {}).actor || {};
    const own = trust && card.payload.iss === trust.cardIssuer;
    return {
      format: "SMART Health Card",
      name: [...(name.given || []), text(name.family)].filter(Boolean).join(" ") || text(name.text),
      dose: text(protocol.doseNumberPositiveInt || protocol.doseNumberString),
      totalDoses: text(protocol.seriesDosesPositiveInt || protocol.seriesDosesString),
      vaccine: text(coding.display || (shot.vaccineCode || {}).text || coding.code),
      date: text(shot.occurrenceDateTime),
      issuer: [own ? trust.issuerName : card.payload.iss, text(performer.display)].filter(Boolean).join(" — "),
    };
  }

  function hcertFacts(cert) {
    const names = cert.dcc.nam || {};
    const entry = (cert.dcc.v || [{}])[0] || {};
    return {
      format: "EU DCC / HCERT",
      name: [text(names.gn), text(names.fn)].filter(Boolean).join(" "),
      dose: text(entry.dn),
      totalDoses: text(entry.sd),
      vaccine: text(entry.mp),
      date: text(entry.dt),
      issuer: text(entry.is || cert.claims.get(1)),
    };
  }

  /** What kind of QR content this is: "shc" / "hcert" / "json" text, or "w3c" bytes. */
  function kindOf(payload) {
    if (typeof payload.text === "string") {
      const t = payload.text.trim();
      if (t.startsWith("HC1:")) return "hcert";
      if (t.startsWith("shc:/") || /^[\w-]+\.[\w-]+\.[\w-]+$/.test(t)) return "shc";
      if (t.startsWith("{")) return "json";
      return "unknown";
    }
    return "w3c";
  }

  /** The facts a payload states (read, not verified), plus what the offline check needs. */
  async function read(payload, trust) {
    const kind = kindOf(payload);
    if (kind === "w3c") {
      const credential = await decodePayload(payload.bytes);
      return { kind, credential, facts: credentialFacts(credential, trust) };
    }
    if (kind === "json") {
      let credential;
      try {
        credential = JSON.parse(payload.text);
      } catch (exc) {
        throw new CoreError("the text is not JSON: " + exc.message);
      }
      if (!isObject(credential)) throw new CoreError("a credential is a JSON object");
      credential = credential.verifiableCredential || credential.credential || credential;
      return { kind, credential, facts: credentialFacts(credential, trust) };
    }
    if (kind === "shc") return { kind, facts: cardFacts(await readCard(payload.text), trust) };
    if (kind === "hcert") return { kind, facts: hcertFacts(await readHcert(payload.text)) };
    throw new CoreError("not a certificate QR code (a W3C credential, shc:/ or HC1:)");
  }

  /** The offline verdict on what `read` found. */
  async function verifyOffline(found, payload, trust, now) {
    if (found.kind === "shc") return verifyCard(payload.text, trust, now);
    if (found.kind === "hcert") return verifyHcert(payload.text, trust, now);
    return verifyCredential(found.credential, trust, now);
  }

  /** The body `POST /api/v1/verify` takes for a payload. */
  function serverBody(found, payload) {
    if (found.kind === "shc" || found.kind === "hcert") return { text: payload.text.trim() };
    if (found.kind === "json") return { credential: found.credential };
    return { qr: b64encode(payload.bytes) };
  }

  root.VerifyCore = {
    CoreError,
    b64decode,
    b64encode,
    decodePayload,
    canonicalize,
    canonicalizeQuads,
    credentialQuads,
    proofOptionsQuads,
    codePointOrder,
    verifyCredential,
    verifyCard,
    verifyHcert,
    read,
    verifyOffline,
    serverBody,
    kindOf,
  };
})(typeof self !== "undefined" ? self : globalThis);
