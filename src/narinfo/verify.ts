// One verification entry point for both signature kinds: a narinfo is believed when any of its
// signatures verifies under a trusted key; otherwise the result says why not.
import { logger } from '@libp2p/logger'
import {
  MalformedSignatureError, NarinfoBadSignatureError, NarinfoFormatError, NarinfoHashMismatchError, NarinfoMalformedError,
  NarinfoUnsignedError, NarinfoUntrustedKeyError, type NarinfoVerifyError, type VerifyReason
} from './errors.js'
import { checkGuixSignature, GUIX_SIGNED_FIELDS, guixSignedBody, parseGuixSignature } from './guix-signature.js'
import type { GuixPublicKey, NixPublicKey, PublicKey } from './keys.js'
import { GUIX_STORE_DIR, NIX_STORE_DIR, parseNarinfoWithLayout, sniffStoreDir, type Narinfo } from './narinfo.js'
import { nixFingerprint, nixSignatureVerifies, parseNixSig } from './nix-signature.js'

const log = logger('guix-swarm:narinfo:verify')

export interface VerifyFailure { kind: 'guix' | 'nix' | 'narinfo', reason: VerifyReason, message: string }

export type VerifyResult =
  | { ok: true, kind: 'guix', key: GuixPublicKey, /** `q #HEX#` */ keyId: string, host: string, narinfo: Narinfo }
  | { ok: true, kind: 'nix', key: NixPublicKey, /** the key name */ keyId: string, narinfo: Narinfo }
  | { ok: false, reason: VerifyReason, message: string, failures: VerifyFailure[], narinfo?: Narinfo }

export interface VerifyOptions {
  /**
   * Store directory StorePath must be in. By default the narinfo's own, when it is /gnu/store or
   * /nix/store (the signature covers StorePath either way).
   */
  storeDir?: string
}

// when nothing verifies, report the most telling failure first
const RANK: VerifyReason[] = ['bad-signature', 'hash-mismatch', 'malformed', 'untrusted-key', 'unsigned']

export function guixKeyId (k: GuixPublicKey): string {
  return `q #${Buffer.from(k.q).toString('hex').toUpperCase()}#`
}

export function verifyNarinfo (text: string | Uint8Array, trusted: readonly PublicKey[], opts: VerifyOptions = {}): VerifyResult {
  const bytes = Buffer.from(text)
  const sniffed = sniffStoreDir(bytes)
  const storeDir = opts.storeDir ?? (sniffed === NIX_STORE_DIR ? NIX_STORE_DIR : GUIX_STORE_DIR)
  let parsed
  try {
    parsed = parseNarinfoWithLayout(bytes, { storeDir })
  } catch (err) {
    if (err instanceof NarinfoFormatError) {
      const failure: VerifyFailure = { kind: 'narinfo', reason: 'malformed', message: `${err.name}: ${err.message}` }
      return { ok: false, reason: 'malformed', message: failure.message, failures: [failure] }
    }
    throw err
  }
  const { narinfo, layout } = parsed
  const failures: VerifyFailure[] = []
  const guixKeys = trusted.filter((k): k is GuixPublicKey => k.kind === 'guix')
  const nixKeys = trusted.filter((k): k is NixPublicKey => k.kind === 'nix')

  if (narinfo.signature !== undefined) {
    const body = guixSignedBody(bytes)
    const missing = GUIX_SIGNED_FIELDS.filter((f) => (layout.firstOffset.get(f) ?? Infinity) >= body.length)
    if (missing.length > 0) {
      failures.push({ kind: 'guix', reason: 'unsigned', message: `Guix signature does not cover ${missing.join(', ')}` })
    } else {
      try {
        const parts = parseGuixSignature(narinfo.signature)
        const check = checkGuixSignature(parts, body, guixKeys)
        if (check.ok) {
          log('guix signature from %s verified for %s', parts.host, narinfo.storePath)
          return { ok: true, kind: 'guix', key: check.key, keyId: guixKeyId(check.key), host: parts.host, narinfo }
        }
        failures.push({ kind: 'guix', reason: check.reason, message: check.message })
      } catch (err) {
        if (!(err instanceof MalformedSignatureError)) throw err
        failures.push({ kind: 'guix', reason: 'malformed', message: err.message })
      }
    }
  }

  if (narinfo.sigs.length > 0) {
    const fingerprint = nixFingerprint(narinfo)
    for (const value of narinfo.sigs) {
      let parts
      try {
        parts = parseNixSig(value)
      } catch (err) {
        if (!(err instanceof MalformedSignatureError)) throw err
        failures.push({ kind: 'nix', reason: 'malformed', message: err.message })
        continue
      }
      const candidates = nixKeys.filter((k) => k.name === parts.keyName)
      if (candidates.length === 0) {
        failures.push({ kind: 'nix', reason: 'untrusted-key', message: `Sig from untrusted key ${parts.keyName}` })
        continue
      }
      const key = candidates.find((k) => nixSignatureVerifies(fingerprint, parts.sig, k))
      if (key !== undefined) {
        log('nix signature from %s verified for %s', key.name, narinfo.storePath)
        return { ok: true, kind: 'nix', key, keyId: key.name, narinfo }
      }
      failures.push({ kind: 'nix', reason: 'bad-signature', message: `Sig from ${parts.keyName} does not verify` })
    }
  }

  if (failures.length === 0) {
    const failure: VerifyFailure = { kind: 'narinfo', reason: 'unsigned', message: 'narinfo has no Signature or Sig line' }
    return { ok: false, reason: 'unsigned', message: failure.message, failures: [failure], narinfo }
  }
  const worst = [...failures].sort((a, b) => RANK.indexOf(a.reason) - RANK.indexOf(b.reason))[0]
  return { ok: false, reason: worst.reason, message: worst.message, failures, narinfo }
}

const ERRORS: Record<VerifyReason, new (message: string) => NarinfoVerifyError> = {
  unsigned: NarinfoUnsignedError,
  'untrusted-key': NarinfoUntrustedKeyError,
  'bad-signature': NarinfoBadSignatureError,
  'hash-mismatch': NarinfoHashMismatchError,
  malformed: NarinfoMalformedError
}

/** verifyNarinfo, throwing the NarinfoVerifyError subclass for the reason when nothing verifies. */
export function assertNarinfoVerified (text: string | Uint8Array, trusted: readonly PublicKey[], opts: VerifyOptions = {}): Extract<VerifyResult, { ok: true }> {
  const result = verifyNarinfo(text, trusted, opts)
  if (!result.ok) throw new ERRORS[result.reason](result.message)
  return result
}
