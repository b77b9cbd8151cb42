// Public API of src/narinfo: narinfo model (Guix and Nix dialects), keys, signatures.
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
  parseSecretKey,
  readPublicKeyFile,
  readSecretKeyFile,
  formatGuixPublicKey,
  formatGuixSecretKey,
  formatNixPublicKey,
  formatNixSecretKey,
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
export * from './errors.js'
