// Signing entry points that pick the signature kind from the key or the dialect.
import { signGuixNarinfo, type GuixSignOptions } from './guix-signature.js'
import type { KeyPair, NodeKeys } from './keys.js'
import { formatGuixNarinfo, formatNixNarinfo, type Dialect, type Narinfo } from './narinfo.js'
import { nixSignatureValue, signNixNarinfo } from './nix-signature.js'

/**
 * Sign narinfo text with either kind of key: a Guix key replaces any `Signature:` and appends a
 * new one last; a Nix key adds (or replaces its own) `Sig:` line.
 */
export function signNarinfo (text: string, key: KeyPair, opts: GuixSignOptions = {}): string {
  return key.kind === 'guix' ? signGuixNarinfo(text, key, opts) : signNixNarinfo(text, key)
}

/**
 * Write a narinfo in a dialect and sign it with the node's matching key: `guix publish` layout
 * with a `Signature:` line, or `nix copy` layout with a `Sig:` line added to the existing ones.
 */
export function writeSignedNarinfo (narinfo: Narinfo, dialect: Dialect, keys: NodeKeys, opts: GuixSignOptions = {}): string {
  if (dialect === 'guix') {
    const { signature: _old, ...unsigned } = narinfo
    return signGuixNarinfo(formatGuixNarinfo(unsigned), keys.guix, opts)
  }
  const sig = nixSignatureValue(narinfo, keys.nix)
  const others = narinfo.sigs.filter((s) => !s.startsWith(`${keys.nix.name}:`))
  return formatNixNarinfo({ ...narinfo, sigs: [...others, sig] })
}
