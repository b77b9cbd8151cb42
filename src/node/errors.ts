/** Failures of the node process; each has a stable name the CLI and tests can rely on. */
export class NodeError extends Error {
  override name = 'NodeError'
}

/** A flag, environment variable or config-file value is invalid. */
export class NodeConfigError extends NodeError {
  override name = 'NodeConfigError'
}

/** Another live node already holds this data dir. */
export class DataDirInUseError extends NodeError {
  override name = 'DataDirInUseError'
}

/** The stored libp2p identity cannot be read. */
export class PeerKeyError extends NodeError {
  override name = 'PeerKeyError'
}

/** A libp2p listen address could not be bound. */
export class ListenError extends NodeError {
  override name = 'ListenError'
}
