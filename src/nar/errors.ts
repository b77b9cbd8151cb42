// One class per failure so callers (and the CLI) can branch on a stable `name`.

/** Base class of every error raised by src/nar. */
export class NarError extends Error {
  override name = 'NarError'
}

// ---- nix-base32 ----

export class NixBase32Error extends NarError {
  override name = 'NixBase32Error'
}
export class NixBase32AlphabetError extends NixBase32Error {
  override name = 'NixBase32AlphabetError'
}
export class NixBase32LengthError extends NixBase32Error {
  override name = 'NixBase32LengthError'
}
export class NixBase32OverflowError extends NixBase32Error {
  override name = 'NixBase32OverflowError'
}

// ---- writing a NAR from the filesystem ----

export class NarUnsupportedFileTypeError extends NarError {
  override name = 'NarUnsupportedFileTypeError'
  constructor (readonly path: string, readonly kind: string) {
    super(`cannot archive ${path}: it is a ${kind}; only regular files, directories and symlinks fit in a NAR`)
  }
}
/** A file changed size while it was being archived; the NAR would be inconsistent. */
export class NarSourceChangedError extends NarError {
  override name = 'NarSourceChangedError'
  constructor (readonly path: string, detail: string) {
    super(`${path} changed while being archived: ${detail}`)
  }
}

// ---- reading / parsing a NAR: each carries the byte offset of the offending token ----

export class NarFormatError extends NarError {
  override name = 'NarFormatError'
  constructor (readonly offset: number, what: string) {
    super(`${what} (at byte offset ${offset})`)
  }
}
export class NarBadMagicError extends NarFormatError {
  override name = 'NarBadMagicError'
}
export class NarBadPaddingError extends NarFormatError {
  override name = 'NarBadPaddingError'
}
export class NarExecutableMarkerError extends NarFormatError {
  override name = 'NarExecutableMarkerError'
}
export class NarBadNameError extends NarFormatError {
  override name = 'NarBadNameError'
}
export class NarUnsortedEntriesError extends NarFormatError {
  override name = 'NarUnsortedEntriesError'
}
export class NarDuplicateEntryError extends NarFormatError {
  override name = 'NarDuplicateEntryError'
}
export class NarTrailingDataError extends NarFormatError {
  override name = 'NarTrailingDataError'
}
export class NarTruncatedError extends NarFormatError {
  override name = 'NarTruncatedError'
}
export class NarStringTooLongError extends NarFormatError {
  override name = 'NarStringTooLongError'
}
export class NarUnexpectedTokenError extends NarFormatError {
  override name = 'NarUnexpectedTokenError'
}
export class NarTooDeepError extends NarFormatError {
  override name = 'NarTooDeepError'
}

// ---- unpacking ----

export class NarDestExistsError extends NarError {
  override name = 'NarDestExistsError'
  constructor (readonly dest: string) {
    super(`refusing to unpack into ${dest}: it already exists`)
  }
}

// ---- compression ----

export class UnknownCompressionError extends NarError {
  override name = 'UnknownCompressionError'
  constructor (readonly value: string) {
    super(`unknown compression '${value}' (expected one of none, gzip, zstd, lzip, xz)`)
  }
}
export class CompressionToolMissingError extends NarError {
  override name = 'CompressionToolMissingError'
  constructor (readonly tool: string, cause: string) {
    super(`compression tool '${tool}' could not be started (${cause}); install it (Debian: zstd, lzip, xz-utils)`)
  }
}
export class CompressionToolFailedError extends NarError {
  override name = 'CompressionToolFailedError'
  constructor (readonly tool: string, readonly exitCode: number | null, readonly signal: string | null, readonly stderr: string) {
    super(`'${tool}' failed (${exitCode !== null ? `exit code ${exitCode}` : `signal ${String(signal)}`})${stderr !== '' ? `: ${stderr.trim()}` : ''}`)
  }
}
export class DecompressionError extends NarError {
  override name = 'DecompressionError'
}
