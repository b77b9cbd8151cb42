// Property tests: the state is a function of the op SET, and merging replicas is a join.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { QueueReplica, buildIdOf, type Op, type OpDraft } from '../../src/crdt/index.js'
import { makeAuthor, next, submit, type Author } from './fixtures.js'

const T0 = 1_700_000_000_000
const authors: Author[] = await Promise.all([makeAuthor(), makeAuthor(), makeAuthor()])

const action = fc.record({
  author: fc.integer({ min: 0, max: 2 }),
  kind: fc.constantFrom('submit', 'submit', 'priority', 'cancel', 'claim', 'claim', 'renew', 'release', 'success', 'failure', 'missing'),
  build: fc.nat(),
  attempt: fc.integer({ min: 1, max: 3 }),
  priority: fc.integer({ min: -5, max: 5 }),
  dt: fc.integer({ min: 0, max: 3 })
})

/** Turn abstract actions into real signed ops (seq per author, HLC from a shared-ish clock). */
type Action = typeof action extends fc.Arbitrary<infer T> ? T : never
function materialise (actions: Action[]): Op[] {
  for (const a of authors) a.seq = 0
  const ids: string[] = []
  const ops: Op[] = []
  let ms = T0
  let n = 0
  for (const x of actions) {
    ms += x.dt
    const who = authors[x.author]
    let draft: OpDraft
    if (x.kind === 'submit' || ids.length === 0) {
      // same drv reused: several builds per drv; the abandoned-attempt limit is 1, 2 or absent (3)
      draft = submit(n++ % 4, { priority: x.priority, maxAttempts: 2, ...(x.attempt < 3 ? { maxAbandoned: x.attempt } : {}) })
    } else {
      const build = ids[x.build % ids.length]
      const attempt = x.attempt
      switch (x.kind) {
        case 'priority': draft = { type: 'priority', payload: { build, priority: x.priority } }; break
        case 'cancel': draft = { type: 'cancel', payload: { build } }; break
        case 'claim': draft = { type: 'claim', payload: { build, attempt, leaseMs: 5000 } }; break
        case 'renew': draft = { type: 'renew', payload: { build, attempt, leaseMs: 5000 } }; break
        case 'release': draft = { type: 'release', payload: { build, attempt } }; break
        case 'success': draft = { type: 'result', payload: { build, attempt, outcome: 'success', outputs: { out: { path: '/gnu/store/o', narHash: 'sha256:1', narSize: 3 } } } }; break
        case 'failure': draft = { type: 'result', payload: { build, attempt, outcome: 'failure', log: { peerId: who.id, name: 'log' } } }; break
        default: draft = { type: 'result', payload: { build, attempt, outcome: 'missing-inputs', missing: [] } }
      }
    }
    // stamps may tie across authors: the author then breaks the tie
    const op = next(who, [ms, x.dt === 0 ? 1 : 0], draft)
    if (op.type === 'submit') ids.push(buildIdOf(op))
    ops.push(op)
  }
  return ops
}

function replicaOf (ops: readonly Op[]): QueueReplica {
  const r = new QueueReplica(() => T0 + 1_000_000)
  for (const op of ops) r.ingest(op.bytes)
  return r
}

/** Merge = one replica hands the other every op it holds (applied or waiting behind a gap). */
function merge (into: QueueReplica, from: QueueReplica): QueueReplica {
  for (const op of from.heldOps()) into.ingest(op.bytes)
  return into
}

const scenario = fc.array(action, { minLength: 1, maxLength: 40 })

test('any order, with duplicates and replays, gives the same state hash', () => {
  fc.assert(fc.property(scenario, fc.infiniteStream(fc.nat()), fc.nat({ max: 10 }), (actions, rnd, dups) => {
    const ops = materialise(actions)
    const ref = replicaOf(ops).state.stateHash()
    const shuffled = [...ops]
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = rnd.next().value % (i + 1);
      [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]]
    }
    for (let d = 0; d < dups; d++) shuffled.splice(rnd.next().value % (shuffled.length + 1), 0, ops[rnd.next().value % ops.length])
    const r = replicaOf(shuffled)
    assert.equal(r.state.stateHash(), ref)
    assert.equal(r.stats().pending, 0)
    assert.equal(r.state.size, ops.filter(o => o.type === 'submit').length)
  }), { numRuns: 60 })
})

test('merging replicas is commutative, associative and idempotent', () => {
  fc.assert(fc.property(scenario, fc.array(fc.integer({ min: 0, max: 7 }), { minLength: 40, maxLength: 40 }), (actions, membership) => {
    const ops = materialise(actions)
    // each op lands in some of three replicas (bitmask); gaps stay pending until a merge fills them
    const part = (bit: number): Op[] => ops.filter((_, i) => (membership[i % membership.length] & bit) !== 0)
    const [a, b, c] = [part(1), part(2), part(4)]
    const mk = (xs: Op[]): QueueReplica => replicaOf(xs)
    const ab = merge(mk(a), mk(b)).state.stateHash()
    const ba = merge(mk(b), mk(a)).state.stateHash()
    assert.equal(ab, ba)
    const abC = merge(merge(mk(a), mk(b)), mk(c)).state.stateHash()
    const aBC = merge(mk(a), merge(mk(b), mk(c))).state.stateHash()
    assert.equal(abC, aBC)
    assert.equal(merge(mk(a), mk(a)).state.stateHash(), mk(a).state.stateHash())
    // and the merge equals one replica fed the union of the three op sets
    assert.equal(abC, replicaOf([...a, ...b, ...c]).state.stateHash())
  }), { numRuns: 40 })
})

test('abandoned attempts are exactly the open ones followed by a claimed attempt, whatever the order', () => {
  fc.assert(fc.property(scenario, fc.infiniteStream(fc.nat()), (actions, rnd) => {
    const ops = materialise(actions)
    const shuffled = [...ops].sort(() => (rnd.next().value % 3) - 1)
    const r = replicaOf(shuffled)
    // the model, straight from the ops: per build and attempt the winning claim (smallest
    // HLC, then author, then seq), and whether its author released it or reported a result
    const key = (o: Op): [number, number, string, number] => [o.hlc[0], o.hlc[1], o.author, o.seq]
    const before = (x: Op, y: Op): boolean => { const a = key(x); const b = key(y); for (let i = 0; i < 4; i++) if (a[i] !== b[i]) return a[i] < b[i]; return false }
    const winners = new Map<string, Map<number, Op>>()
    for (const o of ops) {
      if (o.type !== 'claim') continue
      const m = winners.get(o.payload.build) ?? new Map<number, Op>()
      const w = m.get(o.payload.attempt)
      if (w === undefined || before(o, w)) m.set(o.payload.attempt, o)
      winners.set(o.payload.build, m)
    }
    for (const sub of ops.filter(o => o.type === 'submit')) {
      const id = buildIdOf(sub)
      const rec = r.state.get(id)!
      const m = winners.get(id) ?? new Map<number, Op>()
      const numbers = [...m.keys()].sort((x, y) => x - y)
      const closed = (n: number): boolean => ops.some(o => (o.type === 'result' || o.type === 'release') && o.payload.build === id && o.payload.attempt === n && o.author === m.get(n)!.author)
      const expected = numbers.filter((n, i) => i + 1 < numbers.length && !closed(n))
      assert.deepEqual(rec.attempts.filter(a => a.abandoned === true).map(a => a.number), expected)
      assert.equal(rec.abandoned, expected.length)
      const limit = (sub.payload as { maxAbandoned?: number }).maxAbandoned ?? 3
      assert.equal(rec.maxAbandoned, limit)
      if (rec.phase !== 'succeeded' && rec.phase !== 'canceled') assert.equal(rec.phase === 'failed', rec.failures >= rec.maxAttempts || expected.length >= limit)
    }
  }), { numRuns: 60 })
})
