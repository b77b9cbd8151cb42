export * from './errors.js'
export { Hlc, compareStamp, type Stamp } from './hlc.js'
export {
  signOp, decodeOp, verifyOp, signedInputOf, linksTo, shedBytes, bytesHeld, buildIdOf, isDerivationPath, assertDerivationPath, OP_TYPES, OP_VERSION, DEFAULT_MAX_OP_BYTES, DEFAULT_MAX_ABANDONED, MAX_SUBMIT_INPUTS,
  type Op, type OpDraft, type OpType, type OpOfType, type PayloadByType, type SubmitPayload, type PriorityPayload,
  type CancelPayload, type ClaimPayload, type RenewPayload, type ReleasePayload, type ResultPayload, type NarOutput, type LogRef
} from './op.js'
export {
  QueueState, computeRecord, nextAttempt, stateAt, reasonOf, isFinished, BUILD_STATES,
  type BuildRecord, type BuildState, type Phase, type Attempt, type AttemptResult, type Claimable, type SeenOp, type ChangeListener
} from './state.js'
export { QueueReplica, DEFAULT_REPLICA_CONFIG, type ReplicaConfig, type ReplicaStats, type VersionVector, type IngestResult, type IngestOptions } from './replica.js'
export { encodeGossip, decodeGossip, DEFAULT_GOSSIP_LIMITS, type GossipLimits } from './gossip.js'
export { QueueStore, type QueueDb, type Snapshot } from './store.js'
export { runSync, readFrames, encodeFrame, DEFAULT_SYNC_LIMITS, type SyncFrame, type SyncLimits, type SyncPeerSide, type SyncSummary } from './sync.js'
export {
  QueueService, DEFAULT_QUEUE_CONFIG,
  type QueueConfig, type QueueComponents, type QueueLibp2p, type SubmitRequest, type ResultRequest, type BuildChange,
  type BuildView, type AttemptView, type QueueStatus
} from './service.js'
