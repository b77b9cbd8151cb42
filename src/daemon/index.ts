// Public API of src/daemon: the local Nix/Guix store and builder client.
export { detectBuilder, parseNixSystems } from './detect.js'
export type { BuilderPref, BuilderKind, DetectedBuilder, DetectOptions } from './detect.js'
export * from './errors.js'
export { NodeProcessRunner, defaultRunner, runToEnd } from './runner.js'
export type { ProcessRunner, RunningProcess, StartOptions, Exit, Completed } from './runner.js'
export { parseDerivation, printDerivation, derivationOutputPaths } from './derivation.js'
export type { Derivation, DerivationOutput } from './derivation.js'
