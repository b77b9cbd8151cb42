// What the queue commands print for people: the builds table, one build in detail, status lines.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { buildDetails, buildsTable, queueStatusLines } from '../../src/cli/commands/queue.js'
import type { BuildView, QueueStatus } from '../../src/crdt/index.js'
import { drvPath } from './api.js'

const peer = '12D3KooWCvx24U43tcfQardhT3JfmfwMCa5FtAB3eVq2qpEkYH2d'

function view (over: Partial<BuildView> = {}): BuildView {
  return {
    id: 'lsumgttxs25mvmxy', derivation: drvPath('hello-2.12'), system: 'x86_64-linux', state: 'queued', priority: 5, tags: { jobset: 'nightly' },
    submitter: peer, submittedAt: Date.UTC(2026, 10, 27, 18, 0, 0), maxAttempts: 3, failures: 0, canceled: false, deferUntil: null,
    attempts: [], reason: 'waiting for a x86_64-linux builder (priority 5)', ...over
  }
}

test('builds table: aligned columns, short derivation names, tags', () => {
  const t = buildsTable([view(), view({ id: 'abcdefghijklmnop', state: 'canceled', priority: -3, tags: {}, system: 'aarch64-linux' })])
  const lines = t.trimEnd().split('\n')
  assert.match(lines[0], /^ID +STATE +PRIO +SYSTEM +ATTEMPTS +DERIVATION +TAGS$/)
  assert.match(lines[1], /^lsumgttxs25mvmxy +queued +5 +x86_64-linux +0 +\S{8}…-hello-2\.12\.drv +jobset=nightly$/)
  assert.match(lines[2], /^abcdefghijklmnop +canceled +-3 +aarch64-linux +0 +\S+ +-$/)
  assert.equal(lines[1].indexOf('queued'), lines[0].indexOf('STATE'))
  assert.equal(buildsTable([]), 'no builds\n')
})

test('build details: the reason and every attempt with its result', () => {
  const d = buildDetails(view({
    state: 'failed',
    failures: 1,
    maxAttempts: 1,
    reason: 'failed 1 of 1 attempts',
    attempts: [{ number: 1, peerId: peer, state: 'failed', claimedAt: Date.UTC(2026, 10, 27, 18, 1, 0), leaseEndsAt: null, contenders: 2, result: { outcome: 'failure', opId: 'bafy', hlc: [0, 0], log: { peerId: peer, name: 'x.log' } } }]
  }))
  assert.match(d, /^state +failed$/m)
  assert.match(d, /^reason +failed 1 of 1 attempts$/m)
  assert.match(d, /^submitted +2026-11-27 18:00:00Z by 12D3/m)
  assert.match(d, new RegExp(`^ {2}#1 failed on ${peer}, claimed 2026-11-27 18:01:00Z, 2 contenders$`, 'm'))
  assert.match(d, new RegExp(`^ +log x\\.log on ${peer}`, 'm'))
  const ok = buildDetails(view({
    state: 'succeeded',
    attempts: [{ number: 1, peerId: peer, state: 'succeeded', claimedAt: 0, leaseEndsAt: null, contenders: 1, result: { outcome: 'success', opId: 'bafy', hlc: [0, 0], outputs: { out: { path: '/gnu/store/x-hello', narHash: 'sha256:abc', narSize: 120 } } } }]
  }))
  assert.match(ok, /^ +out {2}\/gnu\/store\/x-hello {2}sha256:abc \(120 bytes\)$/m)
  assert.match(buildDetails(view()), /^attempts +none$/m)
})

test('status lines: counts by state, the state hash and refused ops by reason', () => {
  const rejected = { oversized: 0, malformed: 2, 'unknown-type': 0, 'bad-signature': 5, 'author-mismatch': 0, 'future-clock': 0, equivocation: 0, 'pending-overflow': 0 }
  const q = {
    builds: 3, byState: { queued: 2, deferred: 0, claimed: 0, building: 0, succeeded: 0, failed: 0, canceled: 1 }, ops: 7, authors: 2, stateHash: 'ab'.repeat(32),
    stats: { applied: 7, duplicates: 0, pending: 0, rejected, syncs: 1, syncFailures: 0, droppedPeers: 0, compacted: 0, gossipPublished: 3 }
  } as QueueStatus
  const lines = queueStatusLines(q)
  assert.equal(lines[0], 'queue      3 build(s) (queued 2, canceled 1), 7 op(s) from 2 author(s)')
  assert.equal(lines[1], `  hash     ${'ab'.repeat(32)}`)
  assert.equal(lines[2], '  refused  malformed 2, bad-signature 5')
  assert.equal(queueStatusLines({ ...q, stats: { ...q.stats, rejected: { ...rejected, malformed: 0, 'bad-signature': 0 } } })[2], '  refused  none')
})
