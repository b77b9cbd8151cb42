// One error class per way an op or a sync frame can be refused; `reason` is the stable key
// under which the refusal is counted in stats() (and shown by `status`).
export type RejectReason =
  | 'oversized'
  | 'malformed'
  | 'unknown-type'
  | 'bad-signature'
  | 'author-mismatch'
  | 'future-clock'
  | 'equivocation'
  | 'pending-overflow'

export class QueueError extends Error {
  override name = 'QueueError'
}

export class OpRejectedError extends QueueError {
  override name = 'OpRejectedError'
  readonly reason: RejectReason
  constructor (reason: RejectReason, message: string) {
    super(message)
    this.reason = reason
  }
}

export class OpOversizedError extends OpRejectedError {
  override name = 'OpOversizedError'
  constructor (size: number, max: number) { super('oversized', `op of ${size} bytes exceeds the ${max}-byte limit`) }
}

export class OpMalformedError extends OpRejectedError {
  override name = 'OpMalformedError'
  constructor (what: string) { super('malformed', `malformed op: ${what}`) }
}

export class OpUnknownTypeError extends OpRejectedError {
  override name = 'OpUnknownTypeError'
  constructor (type: string) { super('unknown-type', `unknown op type ${JSON.stringify(type).slice(0, 40)}`) }
}

export class OpBadSignatureError extends OpRejectedError {
  override name = 'OpBadSignatureError'
  constructor (author: string, seq: number) { super('bad-signature', `bad signature on op ${author}#${seq}`) }
}

export class OpAuthorMismatchError extends OpRejectedError {
  override name = 'OpAuthorMismatchError'
  constructor (author: string) { super('author-mismatch', `author ${author.slice(0, 60)} is not an Ed25519 peer id that can sign`) }
}

/**
 * In a sync run of one author's consecutive ops, an op does not name its predecessor's hash:
 * the run's single signature does not cover it, so the whole run is refused (counted as a
 * bad signature, since no valid signature vouches for those bytes).
 */
export class OpBrokenChainError extends OpRejectedError {
  override name = 'OpBrokenChainError'
  constructor (author: string, seq: number) { super('bad-signature', `op ${author}#${seq} does not link to its predecessor in the run`) }
}

export class OpFutureClockError extends OpRejectedError {
  override name = 'OpFutureClockError'
  constructor (author: string, seq: number, aheadMs: number, maxSkewMs: number) {
    super('future-clock', `op ${author}#${seq} is stamped ${aheadMs} ms ahead of the local clock (limit ${maxSkewMs} ms)`)
  }
}

export class OpEquivocationError extends OpRejectedError {
  override name = 'OpEquivocationError'
  constructor (author: string, seq: number) { super('equivocation', `author ${author} signed two different ops with seq ${seq}`) }
}

export class OpPendingOverflowError extends OpRejectedError {
  override name = 'OpPendingOverflowError'
  constructor (author: string, seq: number) { super('pending-overflow', `op ${author}#${seq} waits for a gap but the pending buffer is full`) }
}

/** A sync peer broke the protocol (bad frame, oversized frame, unexpected message). */
export class SyncProtocolError extends QueueError {
  override name = 'SyncProtocolError'
}

/** A local request the queue cannot honour (unknown build, bad derivation path). */
export class QueueRequestError extends QueueError {
  override name = 'QueueRequestError'
}

export class UnknownBuildError extends QueueRequestError {
  override name = 'UnknownBuildError'
  constructor (id: string) { super(`no build with id ${id}`) }
}

export class BadDerivationPathError extends QueueRequestError {
  override name = 'BadDerivationPathError'
  constructor (path: string) { super(`not a store path of a .drv: ${JSON.stringify(path)}`) }
}

/** An op's bytes were dropped from memory once durable (shedBytes): read them from the store. */
export class OpBytesShedError extends QueueError {
  override name = 'OpBytesShedError'
  constructor (author: string, seq: number) { super(`the bytes of op ${author}#${seq} are on disk only`) }
}
