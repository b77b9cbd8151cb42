// One error class per failure, each with a stable `name`, so callers can switch on it.

export class NarinfoError extends Error {
  override name = 'NarinfoError'
}

/** A narinfo that cannot be parsed or written (base of the parse errors). */
export class NarinfoFormatError extends NarinfoError {
  override name = 'NarinfoFormatError'
}

/** CRLF line endings: Nix rejects them (`illegal character '\r'`), so do we. */
export class NarinfoCrlfError extends NarinfoFormatError {
  override name = 'NarinfoCrlfError'
}

export class NarinfoMissingFieldError extends NarinfoFormatError {
  override name = 'NarinfoMissingFieldError'
}

export class NarinfoBadFieldError extends NarinfoFormatError {
  override name = 'NarinfoBadFieldError'
}

/** StorePath (or a reference) lies outside the expected store directory. */
export class NarinfoStoreDirError extends NarinfoFormatError {
  override name = 'NarinfoStoreDirError'
}

/** The URL/Compression/FileSize/FileHash groups cannot be lined up. */
export class NarinfoUrlGroupError extends NarinfoFormatError {
  override name = 'NarinfoUrlGroupError'
}

export class SexpError extends NarinfoError {
  override name = 'SexpError'
}

export class SexpParseError extends SexpError {
  override name = 'SexpParseError'
}

/** A well-formed s-expression that does not have the expected shape. */
export class SexpShapeError extends SexpError {
  override name = 'SexpShapeError'
}

export class KeyError extends NarinfoError {
  override name = 'KeyError'
}

export class GuixKeyError extends KeyError {
  override name = 'GuixKeyError'
}

export class NixKeyError extends KeyError {
  override name = 'NixKeyError'
}

/** Refusing to overwrite an existing key file. */
export class KeyExistsError extends KeyError {
  override name = 'KeyExistsError'
}

/** A key file that is neither a Guix s-expression nor a Nix `name:base64` key. */
export class UnknownKeyFormatError extends KeyError {
  override name = 'UnknownKeyFormatError'
}

export class SignatureError extends NarinfoError {
  override name = 'SignatureError'
}

/** A `Signature:` or `Sig:` line whose syntax or payload is malformed. */
export class MalformedSignatureError extends SignatureError {
  override name = 'MalformedSignatureError'
}

/** Signing refused: a field the signature must cover is missing or misplaced. */
export class UnsignableNarinfoError extends SignatureError {
  override name = 'UnsignableNarinfoError'
}

export type VerifyReason = 'unsigned' | 'untrusted-key' | 'bad-signature' | 'hash-mismatch' | 'malformed'

/** A narinfo failed verification; `reason` is the stable code, the subclass names it too. */
export class NarinfoVerifyError extends NarinfoError {
  override name = 'NarinfoVerifyError'
  constructor (message: string, readonly reason: VerifyReason) {
    super(message)
  }
}

export class NarinfoUnsignedError extends NarinfoVerifyError {
  override name = 'NarinfoUnsignedError'
  constructor (message: string) { super(message, 'unsigned') }
}

export class NarinfoUntrustedKeyError extends NarinfoVerifyError {
  override name = 'NarinfoUntrustedKeyError'
  constructor (message: string) { super(message, 'untrusted-key') }
}

export class NarinfoBadSignatureError extends NarinfoVerifyError {
  override name = 'NarinfoBadSignatureError'
  constructor (message: string) { super(message, 'bad-signature') }
}

export class NarinfoHashMismatchError extends NarinfoVerifyError {
  override name = 'NarinfoHashMismatchError'
  constructor (message: string) { super(message, 'hash-mismatch') }
}

export class NarinfoMalformedError extends NarinfoVerifyError {
  override name = 'NarinfoMalformedError'
  constructor (message: string) { super(message, 'malformed') }
}
