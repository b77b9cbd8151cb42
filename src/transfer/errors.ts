// One class per failure so the node (and its HTTP front) can branch on a stable `name`.

/** Base class of every error raised by src/transfer. */
export class TransferError extends Error {
  override name = 'TransferError'
}

// ---- content ids ----

export class InvalidNarHashError extends TransferError {
  override name = 'InvalidNarHashError'
  constructor (length: number) {
    super(`a NAR hash for narCid must be a 32-byte sha256 digest, got ${length} bytes`)
  }
}

export class InvalidHashPartError extends TransferError {
  override name = 'InvalidHashPartError'
  constructor (readonly hashPart: string) {
    super(`"${hashPart}" is not a store path hash part (32 nix-base32 characters)`)
  }
}

// ---- wire protocol ----

/** The peer broke the framing or sent something that is not a valid message. */
export class ProtocolError extends TransferError {
  override name = 'ProtocolError'
}

export class MalformedFrameError extends ProtocolError {
  override name = 'MalformedFrameError'
}

export class OversizedFrameError extends ProtocolError {
  override name = 'OversizedFrameError'
  constructor (readonly size: number, readonly limit: number, where: string) {
    super(`${where}: frame of ${size} bytes exceeds the ${limit}-byte limit`)
  }
}

/** The stream ended before the announced bytes arrived (a cut transfer). */
export class TruncatedStreamError extends ProtocolError {
  override name = 'TruncatedStreamError'
  constructor (readonly expected: number, readonly received: number, where: string) {
    super(`${where}: stream ended after ${received} of ${expected} bytes`)
  }
}

/** The remote answered with an error status (bad request, internal failure). */
export class RemoteError extends TransferError {
  override name = 'RemoteError'
  constructor (readonly code: string, message: string) {
    super(message)
  }
}

/** The remote does not have what was asked for. */
export class NotFoundError extends TransferError {
  override name = 'NotFoundError'
}

// ---- fetching ----

export class NoProvidersError extends TransferError {
  override name = 'NoProvidersError'
  constructor (readonly key: string) {
    super(`no usable providers for ${key} (none given, or all already marked bad for it)`)
  }
}

export class AllProvidersFailedError extends TransferError {
  override name = 'AllProvidersFailedError'
  constructor (readonly key: string, readonly failures: ReadonlyArray<{ peer: string, error: Error }>) {
    super(`every provider failed for ${key}: ${failures.map((f) => `${f.peer}: ${f.error.name}: ${f.error.message}`).join('; ')}`)
  }
}

export class SizeMismatchError extends TransferError {
  override name = 'SizeMismatchError'
  constructor (readonly key: string, readonly expected: number, readonly actual: number, where: string) {
    super(`${where}: ${key} should be ${expected} bytes, got ${actual}`)
  }
}

/** Raised after verify() rejected the bytes from every provider that was tried. */
export class VerificationFailedError extends TransferError {
  override name = 'VerificationFailedError'
  constructor (readonly key: string, readonly badPeers: string[], cause?: Error) {
    super(`${key}: downloaded bytes failed verification${badPeers.length > 0 ? ` (bad providers: ${badPeers.join(', ')})` : ''}${cause != null ? `: ${cause.message}` : ''}`, { cause })
  }
}

export class StreamClosedError extends TransferError {
  override name = 'StreamClosedError'
}
