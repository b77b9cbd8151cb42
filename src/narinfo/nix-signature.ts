// Nix narinfo signatures (FORMATS.md §3.3): `Sig: <keyname>:<base64 Ed25519 signature>` over
// the fingerprint `1;<StorePath>;<NarHash as sha256:nix-base32>;<NarSize>;<sorted full refs>`.
import { createPublicKey, sign, verify, type KeyObject } from 'node:crypto'
import { MalformedSignatureError } from './errors.js'
import type { NixKeyPair, NixPublicKey } from './keys.js'
import { byteOrder, normalizeNarHash, parseNarinfo, referencePaths, sniffStoreDir, type Narinfo } from './narinfo.js'

export function nixFingerprint (n: Narinfo): string {
  const refs = referencePaths(n).sort(byteOrder).join(',')
  return `1;${n.storePath};${normalizeNarHash(n.narHash)};${n.narSize};${refs}`
}

/** The value of a `Sig:` line: `<keyname>:<base64>`. */
export function nixSignatureValue (n: Narinfo, pair: NixKeyPair): string {
  const sig = sign(null, Buffer.from(nixFingerprint(n), 'utf8'), pair.privateKey)
  return `${pair.name}:${sig.toString('base64')}`
}

export interface NixSigParts { keyName: string, sig: Uint8Array }

export function parseNixSig (value: string): NixSigParts {
  const colon = value.indexOf(':')
  if (colon <= 0) throw new MalformedSignatureError(`Sig ${JSON.stringify(value.slice(0, 40))} is not KEYNAME:BASE64`)
  const b64 = value.slice(colon + 1)
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw new MalformedSignatureError(`Sig from ${value.slice(0, colon)}: signature is not base64`)
  const sig = Buffer.from(b64, 'base64')
  if (sig.length !== 64) throw new MalformedSignatureError(`Sig from ${value.slice(0, colon)}: expected 64 bytes, got ${sig.length}`)
  return { keyName: value.slice(0, colon), sig: Uint8Array.from(sig) }
}

const keyObjects = new WeakMap<NixPublicKey, KeyObject>()

function keyObject (k: NixPublicKey): KeyObject {
  let o = keyObjects.get(k)
  if (o === undefined) {
    o = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(k.key).toString('base64url') }, format: 'jwk' })
    keyObjects.set(k, o)
  }
  return o
}

/** Ed25519 check of one signature against one key (names are compared by the caller). */
export function nixSignatureVerifies (fingerprint: string, sig: Uint8Array, key: NixPublicKey): boolean {
  try {
    return verify(null, Buffer.from(fingerprint, 'utf8'), keyObject(key), sig)
  } catch {
    return false
  }
}

/**
 * Add a `Sig:` line to narinfo text, keeping the rest byte for byte: a signature from a key of
 * the same name is replaced; otherwise the line goes after the last `Sig:`, or before `CA:`, or
 * at the end, which is where `nix copy` puts it.
 */
export function signNixNarinfo (text: string, pair: NixKeyPair): string {
  const narinfo = parseNarinfo(text, { storeDir: sniffStoreDir(text) })
  const line = `Sig: ${nixSignatureValue(narinfo, pair)}`
  const lines = text.split('\n')
  if (lines[lines.length - 1] === '') lines.pop()
  const kept = lines.filter((l) => !l.startsWith(`Sig: ${pair.name}:`))
  let at = kept.length
  let lastSig = -1
  kept.forEach((l, i) => { if (l.startsWith('Sig:')) lastSig = i })
  if (lastSig !== -1) at = lastSig + 1
  else {
    const ca = kept.findIndex((l) => l.startsWith('CA:'))
    if (ca !== -1) at = ca
  }
  kept.splice(at, 0, line)
  return kept.join('\n') + '\n'
}
