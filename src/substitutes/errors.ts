// One class per failure, each with a stable `name`; HTTP-facing ones carry their status.
import { HttpError } from '../http/index.js'

/** Base class of every error raised by src/substitutes. */
export class SubstitutesError extends Error {
  override name = 'SubstitutesError'
}

/** No peer in the DHT has the path, or none offered a narinfo signed by a trusted key. */
export class SubstituteNotFoundError extends SubstitutesError {
  override name = 'SubstituteNotFoundError'
}

/** Too many swarm lookups are running and waiting: a client request is answered "not available" at once. */
export class SubstituteLookupBusyError extends SubstitutesError {
  override name = 'SubstituteLookupBusyError'
}

/** A trusted narinfo was found but no provider delivered NAR bytes that verify. */
export class SubstituteFetchError extends SubstitutesError {
  override name = 'SubstituteFetchError'
}

/** A NAR served while it arrived did not match its trusted narinfo: its readers were cut off, nothing was kept. */
export class SubstituteStreamVerifyError extends SubstitutesError {
  override name = 'SubstituteStreamVerifyError'
}

/** A `--trusted-key` file cannot be read or holds no key. */
export class TrustedKeyFileError extends SubstitutesError {
  override name = 'TrustedKeyFileError'
}

/** The node has no local Nix/Guix daemon to publish from (builder none and no known store). */
export class NoStoreDaemonError extends HttpError {
  override name = 'NoStoreDaemonError'
  constructor (message: string) { super(message, 409) }
}

/** A request body field of /api/publish, /api/mirror or /api/gc is missing or malformed. */
export class SubstitutesRequestError extends HttpError {
  override name = 'SubstitutesRequestError'
  constructor (message: string) { super(message, 400) }
}

/** A closure-bundle request or response broke the wire format (bad frame, sizes, limits). */
export class BundleProtocolError extends SubstitutesError {
  override name = 'BundleProtocolError'
}

/** A closure bundle carried a narinfo that is not trusted, or a file that does not match it: nothing of it was kept. */
export class BundleVerifyError extends SubstitutesError {
  override name = 'BundleVerifyError'
}
