// Background announcements: a few at a time, oldest first; while the node builds they wait,
// never longer than the bound.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { BackgroundAnnouncer } from '../../src/substitutes/index.js'
import { waitFor } from '../helpers/swarm.js'

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

test('announcements run a few at a time, oldest first, each key once', async () => {
  const started: string[] = []
  const release: Array<() => void> = []
  const a = new BackgroundAnnouncer<string>({
    announce: async (x) => { started.push(x); await new Promise<void>((resolve) => release.push(resolve)) },
    concurrency: 2,
    deferMs: 60_000
  })
  for (const k of ['a', 'b', 'c', 'c', 'd']) a.push(k, k)
  assert.deepEqual(started, ['a', 'b'], 'two at once, in order')
  assert.equal(a.size, 2, 'c and d wait; the second c kept the first one\'s place')
  release.shift()?.()
  await waitFor(async () => started.length === 3, 'c starts when a slot frees', 5000, 5)
  assert.deepEqual(started, ['a', 'b', 'c'], 'c next')
  while (release.length > 0 || a.size > 0) { release.shift()?.(); await sleep(5) }
  assert.deepEqual(started, ['a', 'b', 'c', 'd'], 'every key announced once')
})

test('while the node builds, announcements wait for it, then go', async () => {
  let busy = true
  const done: string[] = []
  const a = new BackgroundAnnouncer<string>({ announce: async (x) => { done.push(x) }, concurrency: 4, deferMs: 60_000, busy: () => busy })
  a.push('x', 'x'); a.push('y', 'y')
  await sleep(200)
  assert.deepEqual(done, [], 'nothing announced while busy (the bound is a minute away)')
  assert.equal(a.size, 2, 'both wait')
  busy = false
  await waitFor(async () => done.length === 2, 'announced once the node is idle', 5000, 20)
  assert.deepEqual(done, ['x', 'y'], 'in order')
  a.clear()
})

test('a node that never stops building still announces, once the bound has passed', async () => {
  let t = 1_000_000
  const done: string[] = []
  const a = new BackgroundAnnouncer<string>({ announce: async (x) => { done.push(x) }, concurrency: 4, deferMs: 60_000, busy: () => true, now: () => t })
  a.push('old', 'old')
  t += 30_000
  a.push('new', 'new')
  t += 30_001 // 'old' has waited its minute; 'new' only half
  await waitFor(async () => done.length === 1, 'the old entry goes when its bound passes', 5000, 20)
  assert.deepEqual(done, ['old'], 'only the entry past its bound')
  assert.equal(a.size, 1, "'new' still waits")
  a.clear()
  assert.equal(a.size, 0, 'clear forgets what waits')
})
