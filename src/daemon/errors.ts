// One error class per failure of the local store daemon client and builders.

export class DaemonError extends Error {
  override name = 'DaemonError'
}

/** A forced builder kind (`--builder nix`) whose tools or daemon are not usable here. */
export class BuilderUnavailableError extends DaemonError {
  override name = 'BuilderUnavailableError'
}

/** A store command exited non-zero where success was expected. */
export class StoreCommandError extends DaemonError {
  override name = 'StoreCommandError'
  constructor (message: string, readonly command: string, readonly exitCode: number | null, readonly stderr: string) {
    super(message)
  }
}

/** A command could not be started at all (ENOENT, EACCES…). */
export class SpawnFailedError extends DaemonError {
  override name = 'SpawnFailedError'
}

/** A `.drv` file that is not a well-formed ATerm derivation. */
export class DerivationParseError extends DaemonError {
  override name = 'DerivationParseError'
  constructor (message: string, readonly offset: number) {
    super(`${message} at offset ${offset}`)
  }
}

/** A string that is not an absolute path in the store directory. */
export class NotAStorePathError extends DaemonError {
  override name = 'NotAStorePathError'
}

/** The store path is not valid (not present) in this store. */
export class PathNotValidError extends DaemonError {
  override name = 'PathNotValidError'
}

/** importPath: a reference of the path to import is not valid yet (import in closure order). */
export class MissingReferencesError extends DaemonError {
  override name = 'MissingReferencesError'
  constructor (message: string, readonly missing: string[]) {
    super(message)
  }
}

/** importPath: the NAR bytes do not hash to the announced narHash, or have another size. */
export class NarHashMismatchError extends DaemonError {
  override name = 'NarHashMismatchError'
}

/** Output of a store command that does not have the expected shape. */
export class UnexpectedOutputError extends DaemonError {
  override name = 'UnexpectedOutputError'
}

/** A hash string in none of the notations Nix uses. */
export class BadHashError extends DaemonError {
  override name = 'BadHashError'
}

/** The backend cannot bring paths in from a NAR (guix-daemon wants signed archives). */
export class ImportUnsupportedError extends DaemonError {
  override name = 'ImportUnsupportedError'
}

/** The import process went away while we were still writing (its exit status says why). */
export class ImportStreamClosedError extends DaemonError {
  override name = 'ImportStreamClosedError'
}

/** The store connection (`nix-store --serve`) did not greet as expected or sent something malformed. */
export class ServeProtocolError extends DaemonError {
  override name = 'ServeProtocolError'
}

/** The store connection's process exited during a request (its stderr says why). */
export class ServeClosedError extends DaemonError {
  override name = 'ServeClosedError'
  constructor (message: string, readonly stderr: string) {
    super(message)
  }
}
