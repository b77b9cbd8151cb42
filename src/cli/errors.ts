/**
 * Exit codes mean something:
 *  0 ok, 1 the operation failed (e.g. a signature did not verify, a build failed),
 *  2 bad usage or bad input, 3 the node could not be reached or is unavailable.
 */
export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, UNAVAILABLE: 3 } as const

export class CliError extends Error {
  override name = 'CliError'
  constructor (message: string, readonly exitCode: number = EXIT.FAILED) {
    super(message)
  }
}
