// Independent check: Digital Bazaar's verifier (@digitalbazaar/vc) verifies credentials issued by
// our Python code, offline. Reads from stdin a JSON array of credentials, or an object
// {"credentials": [...], "statusLists": {url: signed status list credential}}, and prints a JSON
// array of results, one per credential: {"verified": true|false, "errors": [...]}.
// A credential with a BitstringStatusListEntry is checked against the given status list
// credential (itself verified here); without one the credential fails verification.
// Contexts come from the npm context packages, plus our vaccination context read from
// plugins/certificates/contexts/; did:key verification methods resolve offline. Any other URL is
// refused, so nothing is fetched from the network.
import {readFile} from 'node:fs/promises';
import {gunzipSync} from 'node:zlib';

import * as credentialsContext from '@digitalbazaar/credentials-context';
import * as dataIntegrityContext from '@digitalbazaar/data-integrity-context';
import * as Ed25519Multikey from '@digitalbazaar/ed25519-multikey';
import * as multikeyContext from '@digitalbazaar/multikey-context';
import * as vc from '@digitalbazaar/vc';
import {DataIntegrityProof} from '@digitalbazaar/data-integrity';
import {driver as didKeyDriver} from '@digitalbazaar/did-method-key';
import {Ed25519Signature2020} from '@digitalbazaar/ed25519-signature-2020';
import {JsonLdDocumentLoader} from 'jsonld-document-loader';
import {cryptosuite as eddsaRdfc2022CryptoSuite} from
  '@digitalbazaar/eddsa-rdfc-2022-cryptosuite';
import ed25519Signature2020Context from 'ed25519-signature-2020-context';
import securityContext from 'security-context';

const VACCINATION_CONTEXT_URL = 'https://open-registry.example/contexts/vaccination/v1';
const VACCINATION_CONTEXT_FILE = new URL(
  '../../plugins/certificates/contexts/vaccination-v1.jsonld', import.meta.url);

async function buildDocumentLoader() {
  const loader = new JsonLdDocumentLoader();
  const maps = [
    credentialsContext.contexts,
    dataIntegrityContext.contexts,
    multikeyContext.contexts,
    ed25519Signature2020Context.contexts,
    securityContext.contexts
  ];
  for(const contexts of maps) {
    for(const [url, document] of contexts) {
      loader.addStatic(url, document);
    }
  }
  loader.addStatic(VACCINATION_CONTEXT_URL,
    JSON.parse(await readFile(VACCINATION_CONTEXT_FILE, 'utf8')));

  const didKey = didKeyDriver();
  didKey.use({multibaseMultikeyHeader: 'z6Mk', fromMultibase: Ed25519Multikey.from});
  loader.setProtocolHandler({protocol: 'did', handler: {
    get: ({url}) => {
      if(!url.startsWith('did:key:')) {
        throw new Error(`only did:key resolves offline: ${url}`);
      }
      return didKey.get({url});
    }
  }});
  return loader.build();
}

function errorsOf(result) {
  const errors = [];
  const collect = e => {
    if(!e) {
      return;
    }
    if(Array.isArray(e)) {
      e.forEach(collect);
      return;
    }
    errors.push(e.message || String(e));
    if(e.errors) {
      collect(e.errors);
    }
  };
  collect(result.error);
  collect(result.statusResult && result.statusResult.error);
  for(const r of result.results || []) {
    collect(r.error);
  }
  return [...new Set(errors)];
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

const documentLoader = await buildDocumentLoader();
const suite = [
  new DataIntegrityProof({cryptosuite: eddsaRdfc2022CryptoSuite}),
  new Ed25519Signature2020()
];
const input = JSON.parse(await readStdin());
const credentials = Array.isArray(input) ? input : input.credentials;
const statusLists = Array.isArray(input) ? {} : (input.statusLists || {});

// Bitstring Status List v1.0: the list credential must verify, be of the entry's purpose, and
// the entry's bit (most significant bit first) must be clear.
async function checkStatus({credential}) {
  const entries = [].concat(credential.credentialStatus || []);
  for(const entry of entries) {
    const list = statusLists[entry.statusListCredential];
    if(!list) {
      return {verified: false, error: new Error(
        `status list ${entry.statusListCredential} not given`)};
    }
    const listResult = await vc.verifyCredential({credential: list, suite, documentLoader});
    if(!listResult.verified) {
      return {verified: false, error: new Error('the status list credential does not verify')};
    }
    const subject = list.credentialSubject;
    if(subject.statusPurpose !== entry.statusPurpose) {
      return {verified: false, error: new Error('status purpose mismatch')};
    }
    const bits = gunzipSync(Buffer.from(subject.encodedList.slice(1), 'base64url'));
    const index = parseInt(entry.statusListIndex, 10);
    if(bits[index >> 3] & (0x80 >> (index & 7))) {
      return {verified: false, error: new Error(`${entry.statusPurpose} bit is set`)};
    }
  }
  return {verified: true};
}

const results = [];
for(const credential of credentials) {
  try {
    const result = await vc.verifyCredential({credential, suite, documentLoader, checkStatus});
    results.push({verified: result.verified === true, errors: errorsOf(result)});
  } catch(e) {
    results.push({verified: false, errors: [e.message || String(e)]});
  }
}
process.stdout.write(JSON.stringify(results) + '\n');
