// One error class per failure of the scheduler.

export class SchedulerError extends Error {
  override name = 'SchedulerError'
}

/** A configuration value that cannot work (no slots, lease too short for the renew period…). */
export class SchedulerConfigError extends SchedulerError {
  override name = 'SchedulerConfigError'
}

/** The `.drv` (or its closure) is not in the local store and the input fetcher could not get it. */
export class DerivationUnavailableError extends SchedulerError {
  override name = 'DerivationUnavailableError'
  constructor (readonly drv: string, detail?: string) {
    super(`derivation ${drv} is not valid in the local store${detail !== undefined ? `: ${detail}` : ''}`)
  }
}

/** Publishing an output (NAR, compression, signed narinfo) failed after a successful build. */
export class PublishFailedError extends SchedulerError {
  override name = 'PublishFailedError'
  constructor (readonly storePath: string, cause: unknown) {
    super(`could not publish ${storePath}: ${cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause)}`, { cause })
  }
}

/** A log name that is not one this scheduler writes (guards the logs dir against path tricks). */
export class BadLogNameError extends SchedulerError {
  override name = 'BadLogNameError'
  constructor (readonly logName: string) {
    super(`not a build log name: ${JSON.stringify(logName)}`)
  }
}

/** A hook program that exited non-zero, was killed at its time limit, or could not start. */
export class HookFailedError extends SchedulerError {
  override name = 'HookFailedError'
  constructor (readonly event: string, readonly program: string, detail: string) {
    super(`hook ${event}=${program} failed: ${detail}`)
  }
}
