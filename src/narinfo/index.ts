/**
 * src/narinfo: narinfo files in the Guix and Nix dialects, the node's signing keys, Guix
 * signatures (ECDSA on the Ed25519 group, libgcrypt-compatible) and Nix `Sig:` lines.
 *
 * Model:     parseNarinfo(text, {storeDir}) -> Narinfo; formatGuixNarinfo / formatNixNarinfo /
 *            formatNarinfo(n, dialect); nixFingerprint(n); normalizeNarHash; narHashBytes.
 * Keys:      ensureKeys(dir, {name}) -> NodeKeys (creates the four files on first use);
 *            generateKeys(dir, {name, force}); parse/format/read for each kind.
 * Signing:   signNarinfo(text, keyPair, {host}) picks the kind from the key;
 *            writeSignedNarinfo(narinfo, dialect, nodeKeys).
 * Verifying: verifyNarinfo(text, trustedKeys) -> VerifyResult (ok + key, or a reason code);
 *            assertNarinfoVerified throws the NarinfoVerifyError subclass for the reason.
 */
export {
  ensureKeys,
  generateKeys,
  generateGuixKeyPair,
  generateNixKeyPair,
  guixKeyPairFromScalar,
  nixKeyPairFromSeed,
  parseGuixPublicKey,
  parseGuixSecretKey,
  parseNixPublicKey,
  parseNixSecretKey,
  parsePublicKey,
  parsePublicKeys,
  parseGuixAcl,
  readPublicKeysFile,
  parseSecretKey,
  readPublicKeyFile,
  readSecretKeyFile,
  formatGuixPublicKey,
  formatGuixSecretKey,
  formatNixPublicKey,
  formatNixSecretKey,
  guixPublicKeySexp,
  defaultNixKeyName,
  KEY_FILES
} from './keys.js'
export type {
  NodeKeys,
  GuixKeyPair,
  GuixPublicKey,
  NixKeyPair,
  NixPublicKey,
  KeyPair,
  PublicKey,
  GenerateKeysOptions
} from './keys.js'
export {
  GUIX_STORE_DIR,
  NIX_STORE_DIR,
  parseNarinfo,
  parseNarinfoWithLayout,
  formatGuixNarinfo,
  formatNixNarinfo,
  formatNarinfo,
  isStoreBaseName,
  narHashBytes,
  normalizeNarHash,
  referencePaths,
  sniffStoreDir
} from './narinfo.js'
export type { Narinfo, NarinfoUrl, Dialect, ParseOptions, ParsedNarinfo, NarinfoLayout } from './narinfo.js'
export {
  guixSignedBody,
  guixSignatureValue,
  guixSignatureSexp,
  parseGuixSignature,
  checkGuixSignature,
  signGuixNarinfo,
  GUIX_SIGNED_FIELDS
} from './guix-signature.js'
export type { GuixSignatureParts, GuixSignOptions, GuixCheck } from './guix-signature.js'
export { nixFingerprint, nixSignatureValue, parseNixSig, nixSignatureVerifies, signNixNarinfo } from './nix-signature.js'
export { signNarinfo, writeSignedNarinfo } from './sign.js'
export { verifyNarinfo, assertNarinfoVerified, guixKeyId } from './verify.js'
export type { VerifyResult, VerifyFailure, VerifyOptions } from './verify.js'
export { ecdsaSign, ecdsaVerify, rfc6979Nonce, hashToInteger } from './guix-ecdsa.js'
export type { EcdsaSignature } from './guix-ecdsa.js'
export { parseSexp, toAdvanced, toCanonical, sexpEquals, atom } from './sexp.js'
export type { Sexp } from './sexp.js'
export * from './errors.js'
