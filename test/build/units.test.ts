// The small pieces around building on the node: hook specs, scheduler settings, --follow's lines.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { BuildView } from '../../src/crdt/index.js'
import { validateSettings, NodeConfigError, settingsFromEnv } from '../../src/node/index.js'
import { parseHookSpecs } from '../../src/node/scheduler.js'
import { progressLines } from '../../src/cli/commands/queue.js'

test('--hook EVENT=PROGRAM: known events and absolute programs only', () => {
  assert.deepEqual(validateSettings({ hooks: ['build-success=/usr/bin/notify', 'build-failure=/bin/true'] }, 'flags').hooks,
    ['build-success=/usr/bin/notify', 'build-failure=/bin/true'])
  assert.throws(() => validateSettings({ hooks: ['build-done=/bin/true'] }, 'flags'), NodeConfigError)
  assert.throws(() => validateSettings({ hooks: ['build-success=notify'] }, 'flags'), NodeConfigError, 'a relative program would depend on the working dir')
  assert.throws(() => validateSettings({ hooks: ['build-success'] }, 'flags'), NodeConfigError)
  assert.deepEqual(parseHookSpecs(['build-success=/a=b', 'build-canceled=/c']), { 'build-success': '/a=b', 'build-canceled': '/c' })
  assert.deepEqual(settingsFromEnv({ GUIX_SWARM_HOOKS: 'build-submitted=/x, build-failure=/y' }).hooks, ['build-submitted=/x', 'build-failure=/y'])
})

test('--lease and --tag settings', () => {
  assert.equal(validateSettings({ lease: 3 }, 'flags').lease, 3)
  assert.throws(() => validateSettings({ lease: 0 }, 'flags'), NodeConfigError)
  assert.throws(() => validateSettings({ lease: 1.5 }, 'flags'), NodeConfigError)
  assert.deepEqual(settingsFromEnv({ GUIX_SWARM_TAGS: 'big-memory,gpu=nvidia', GUIX_SWARM_LEASE: '30' }), { tags: ['big-memory', 'gpu=nvidia'], lease: 30 })
})

function build (state: BuildView['state'], attempts: BuildView['attempts']): BuildView {
  return {
    id: 'aaaaaaaaaaaaaaaa', derivation: '/nix/store/00000000000000000000000000000000-x.drv', system: 'x86_64-linux', state,
    priority: 0, tags: {}, submitter: 'p0', submittedAt: 0, maxAttempts: 3, failures: 0, canceled: false, deferUntil: null, attempts, reason: `because ${state}`
  }
}

test('--follow prints the state, then only what changed: attempts, claimers, log hints', () => {
  const queued = build('queued', [])
  assert.equal(progressLines(queued, undefined).length, 1)
  assert.match(progressLines(queued, undefined)[0], /aaaaaaaaaaaaaaaa queued: because queued$/)
  assert.deepEqual(progressLines(queued, queued), [], 'nothing changed, nothing printed')
  const claimed = build('claimed', [{ number: 1, peerId: 'p1', state: 'claimed', claimedAt: 1, leaseEndsAt: 2, contenders: 1, result: null }])
  const lines = progressLines(claimed, queued)
  assert.equal(lines.length, 2)
  assert.match(lines[1], /attempt 1 claimed on p1$/)
  const failedAttempt = { number: 1, peerId: 'p1', state: 'failed' as const, claimedAt: 1, leaseEndsAt: null, contenders: 1, result: { outcome: 'failure' as const, opId: 'o', hlc: [1, 0] as [number, number], log: { peerId: 'p1', name: 'aaaaaaaaaaaaaaaa.1' } } }
  const retrying = build('queued', [failedAttempt])
  const l2 = progressLines(retrying, claimed)
  assert.ok(l2.some((l) => /attempt 1 failed on p1 \(log aaaaaaaaaaaaaaaa\.1: guix-swarm log aaaaaaaaaaaaaaaa --attempt 1\)/.test(l)), `a line reports attempt 1's failure on p1 with the command to read its log: ${l2.join(' | ')}`)
})
