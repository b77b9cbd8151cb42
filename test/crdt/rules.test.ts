import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as dagCbor from '@ipld/dag-cbor'
import { QueueReplica, buildIdOf, decodeOp, signOp, reasonOf, OpUnknownTypeError } from '../../src/crdt/index.js'
import { drv, makeAuthor, next, submit } from './fixtures.js'

const T0 = 1_700_000_000_000

test('claim conflict is won by the smallest (HLC, author) whatever the arrival order', async () => {
  const [s, a, b] = await Promise.all([makeAuthor(), makeAuthor(), makeAuthor()])
  const sub = next(s, [T0, 0], submit(1))
  const id = buildIdOf(sub)
  const ca = next(a, [T0 + 10, 0], { type: 'claim', payload: { build: id, attempt: 1, leaseMs: 60_000 } })
  const cb = next(b, [T0 + 10, 0], { type: 'claim', payload: { build: id, attempt: 1, leaseMs: 60_000 } })
  const winner = a.id < b.id ? a.id : b.id
  for (const order of [[sub, ca, cb], [cb, sub, ca], [ca, cb, sub]]) {
    const r = new QueueReplica(() => T0 + 20)
    for (const op of order) assert.notEqual(r.ingest(op.bytes).kind, 'rejected')
    const rec = r.state.get(id)!
    assert.equal(rec.attempts[0].claimer, winner)
    assert.equal(rec.attempts[0].contenders, 2)
    assert.equal(rec.phase, 'claimed')
  }
  // an earlier HLC beats a smaller author
  const late = a.id < b.id ? b : a
  const early = next(late, [T0 + 5, 0], { type: 'claim', payload: { build: id, attempt: 2, leaseMs: 1000 } })
  const r = new QueueReplica(() => T0 + 20)
  for (const op of [sub, ca, cb, early]) r.ingest(op.bytes)
  assert.equal(r.state.get(id)!.attempts[1].claimer, late.id)
})

test('priority is last-writer-wins by HLC, then author', async () => {
  const [s, a, b] = await Promise.all([makeAuthor(), makeAuthor(), makeAuthor()])
  const sub = next(s, [T0, 0], submit(2, { priority: 1 }))
  const id = buildIdOf(sub)
  const pa = next(a, [T0 + 50, 0], { type: 'priority', payload: { build: id, priority: 7 } })
  const pb = next(b, [T0 + 20, 0], { type: 'priority', payload: { build: id, priority: 9 } })
  for (const order of [[sub, pa, pb], [pb, pa, sub]]) {
    const r = new QueueReplica(() => T0 + 100)
    for (const op of order) r.ingest(op.bytes)
    assert.equal(r.state.get(id)!.priority, 7)
  }
})

test('cancel is grow-only; success is final and beats a cancel', async () => {
  const [s, a] = await Promise.all([makeAuthor(), makeAuthor()])
  const sub = next(s, [T0, 0], submit(3))
  const id = buildIdOf(sub)
  const r = new QueueReplica(() => T0 + 100)
  r.ingest(sub.bytes)
  r.ingest(next(s, [T0 + 1, 0], { type: 'cancel', payload: { build: id } }).bytes)
  r.ingest(next(s, [T0 + 2, 0], { type: 'priority', payload: { build: id, priority: 4 } }).bytes)
  assert.equal(r.state.get(id)!.phase, 'canceled')
  assert.deepEqual(r.state.claimable(['x86_64-linux'], T0 + 100), [])
  r.ingest(next(a, [T0 + 3, 0], { type: 'claim', payload: { build: id, attempt: 1, leaseMs: 1000 } }).bytes)
  r.ingest(next(a, [T0 + 4, 0], { type: 'result', payload: { build: id, attempt: 1, outcome: 'success', outputs: { out: { path: '/gnu/store/x-out', narHash: 'sha256:0', narSize: 1 } } } }).bytes)
  assert.equal(r.state.get(id)!.phase, 'succeeded')
  assert.equal(r.state.get(id)!.canceled, true)
  r.ingest(next(a, [T0 + 5, 0], { type: 'claim', payload: { build: id, attempt: 2, leaseMs: 1000 } }).bytes)
  r.ingest(next(a, [T0 + 6, 0], { type: 'result', payload: { build: id, attempt: 2, outcome: 'failure', log: { peerId: a.id, name: 'x' } } }).bytes)
  assert.equal(r.state.get(id)!.phase, 'succeeded')
})

test('failures open the next attempt until the limit; missing inputs do not count; only the winner reports', async () => {
  const [s, a, b] = await Promise.all([makeAuthor(), makeAuthor(), makeAuthor()])
  const sub = next(s, [T0, 0], submit(4, { maxAttempts: 2 }))
  const id = buildIdOf(sub)
  let t = T0
  const r = new QueueReplica(() => T0 + 1000)
  r.ingest(sub.bytes)
  const claim = (n: number) => r.ingest(next(a, [++t, 0], { type: 'claim', payload: { build: id, attempt: n, leaseMs: 60_000 } }).bytes)
  const fail = (who: typeof a, n: number) => r.ingest(next(who, [++t, 0], { type: 'result', payload: { build: id, attempt: n, outcome: 'failure', log: { peerId: who.id, name: 'l' } } }).bytes)
  claim(1)
  assert.deepEqual(r.state.claimable(['x86_64-linux'], T0 + 1000), [])
  fail(b, 1) // not the claimer: ignored
  assert.equal(r.state.get(id)!.phase, 'claimed')
  fail(a, 1)
  assert.equal(r.state.get(id)!.failures, 1)
  assert.equal(r.state.claimable(['x86_64-linux'], T0 + 1000)[0].attempt, 2)
  claim(2)
  r.ingest(next(a, [++t, 0], { type: 'result', payload: { build: id, attempt: 2, outcome: 'missing-inputs', missing: ['/gnu/store/y'] } }).bytes)
  assert.equal(r.state.get(id)!.failures, 1)
  assert.equal(r.state.get(id)!.phase, 'queued')
  claim(3); fail(a, 3)
  assert.equal(r.state.get(id)!.phase, 'failed')
  assert.deepEqual(r.state.claimable(['x86_64-linux'], T0 + 1000), [])
})

test('lapsed leases: an open attempt superseded by a later claim is abandoned, counted apart from failures, and fails the build at the limit', async () => {
  const [s, a, b] = await Promise.all([makeAuthor(), makeAuthor(), makeAuthor()])
  const sub = next(s, [T0, 0], submit(6)) // no maxAbandoned: the default limit (3) applies
  assert.equal((sub.payload as { maxAbandoned?: number }).maxAbandoned, undefined)
  const id = buildIdOf(sub)
  let t = T0
  const r = new QueueReplica(() => T0 + 1000)
  r.ingest(sub.bytes)
  const claim = (who: typeof a, n: number): void => { assert.equal(r.ingest(next(who, [++t, 0], { type: 'claim', payload: { build: id, attempt: n, leaseMs: 1 } }).bytes).kind, 'applied') }
  claim(a, 1)
  assert.equal(r.state.get(id)!.abandoned, 0, 'an open attempt is not abandoned before a later claim exists')
  assert.match(reasonOf(r.state.get(id)!, T0 + 5000), /lapsed .* whose claim abandons attempt 1 \(1 of 3 allowed\)/)
  claim(b, 2)
  let rec = r.state.get(id)!
  assert.deepEqual(rec.attempts.map(x => x.abandoned), [true, false])
  assert.equal(rec.abandoned, 1)
  assert.equal(rec.failures, 0, 'a dead builder is not a build failure')
  // a late result on attempt 2 makes it a failure, not an abandonment, even though attempt 3 was claimed first
  claim(a, 3)
  r.ingest(next(b, [++t, 0], { type: 'result', payload: { build: id, attempt: 2, outcome: 'failure', log: { peerId: b.id, name: 'l' } } }).bytes)
  rec = r.state.get(id)!
  assert.deepEqual([rec.abandoned, rec.failures], [1, 1])
  // released attempts are not abandoned either
  r.ingest(next(a, [++t, 0], { type: 'release', payload: { build: id, attempt: 3 } }).bytes)
  claim(b, 4)
  assert.deepEqual(r.state.get(id)!.attempts.map(x => x.abandoned), [true, false, false, false])
  claim(a, 5)
  claim(b, 6)
  rec = r.state.get(id)!
  assert.equal(rec.abandoned, 3)
  assert.equal(rec.phase, 'failed')
  assert.match(reasonOf(rec, T0 + 1000), /leases kept lapsing, 3 attempts abandoned by their builders \(limit 3\)/)
  assert.deepEqual(r.state.claimable(['x86_64-linux'], T0 + 10_000_000), [], 'a failed build is never claimable')
  assert.deepEqual(r.state.byState('failed', T0 + 1000).map(x => x.id), [id])
  assert.equal(rec.finishedAt, t, 'finished when the claim that abandoned the third attempt was stamped')
})

test('lapsed leases: the submit carries its own limit, and it is part of the state', async () => {
  const [s, a] = await Promise.all([makeAuthor(), makeAuthor()])
  const strict = next(s, [T0, 0], submit(7, { maxAbandoned: 1 }))
  const lax = next(s, [T0 + 1, 0], submit(8))
  const r = new QueueReplica(() => T0 + 1000)
  r.ingest(strict.bytes); r.ingest(lax.bytes)
  let t = T0 + 1
  for (const sub of [strict, lax]) {
    for (const n of [1, 2]) r.ingest(next(a, [++t, 0], { type: 'claim', payload: { build: buildIdOf(sub), attempt: n, leaseMs: 1 } }).bytes)
  }
  const [x, y] = [r.state.get(buildIdOf(strict))!, r.state.get(buildIdOf(lax))!]
  assert.deepEqual([x.maxAbandoned, x.abandoned, x.phase], [1, 1, 'failed'])
  assert.deepEqual([y.maxAbandoned, y.abandoned, y.phase], [3, 1, 'claimed'])
  assert.notEqual(x.digest, y.digest)
})

test('leases are judged on the local clock from when the op was seen; renew extends; release frees', async () => {
  const [s, a] = await Promise.all([makeAuthor(), makeAuthor()])
  const sub = next(s, [T0, 0], submit(5))
  const id = buildIdOf(sub)
  let now = T0
  const r = new QueueReplica(() => now)
  r.ingest(sub.bytes)
  // stamped long ago, seen now: the lease runs from now
  now = T0 + 3_600_000
  r.ingest(next(a, [T0 + 1, 0], { type: 'claim', payload: { build: id, attempt: 1, leaseMs: 10_000 } }).bytes)
  assert.equal(r.state.claimable(['x86_64-linux'], now + 9_999).length, 0)
  assert.equal(r.state.claimable(['x86_64-linux'], now + 10_000)[0].attempt, 2)
  now += 8_000
  r.ingest(next(a, [T0 + 2, 0], { type: 'renew', payload: { build: id, attempt: 1, leaseMs: 10_000 } }).bytes)
  assert.equal(r.state.get(id)!.phase, 'building')
  assert.equal(r.state.claimable(['x86_64-linux'], now + 9_999).length, 0)
  assert.equal(r.state.byState('queued', now + 10_000).length, 1)
  r.ingest(next(a, [T0 + 3, 0], { type: 'release', payload: { build: id, attempt: 1 } }).bytes)
  assert.equal(r.state.claimable(['x86_64-linux'], now)[0].attempt, 2)
})

test('claimable is in priority order, then oldest submit, filtered by system and defer-until', async () => {
  const s = await makeAuthor()
  const r = new QueueReplica(() => T0 + 100)
  const ids = [
    buildIdOf(next(s, [T0 + 1, 0], submit(10, { priority: 1 }))),
    buildIdOf(next(s, [T0 + 2, 0], submit(11, { priority: 5 }))),
    buildIdOf(next(s, [T0 + 3, 0], submit(12, { priority: 5 }))),
    buildIdOf(next(s, [T0 + 4, 0], submit(13, { priority: 9, system: 'aarch64-linux' }))),
    buildIdOf(next(s, [T0 + 5, 0], submit(14, { priority: 99, deferUntil: T0 + 200 })))
  ]
  s.seq = 0
  for (let i = 0; i < 5; i++) r.ingest(next(s, [T0 + 1 + i, 0], submit(10 + i, [{ priority: 1 }, { priority: 5 }, { priority: 5 }, { priority: 9, system: 'aarch64-linux' }, { priority: 99, deferUntil: T0 + 200 }][i])).bytes)
  assert.deepEqual(r.state.claimable(['x86_64-linux'], T0 + 100).map(c => c.id), [ids[1], ids[2], ids[0]])
  assert.deepEqual(r.state.claimable(['x86_64-linux', 'aarch64-linux'], T0 + 100, 2).map(c => c.id), [ids[3], ids[1]])
  assert.equal(r.state.byState('deferred', T0 + 100).length, 1)
  assert.equal(r.state.claimable(['x86_64-linux'], T0 + 200)[0].id, ids[4])
  assert.equal(r.state.byDerivation(r.state.get(ids[2])!.derivation)[0].id, ids[2])
})

test('hostile ops are rejected and counted by reason, never applied', async () => {
  const [s, m] = await Promise.all([makeAuthor(), makeAuthor()])
  const now = T0
  const r = new QueueReplica(() => now)
  const good = next(s, [T0, 0], submit(20))
  // bad signature: flip a bit of the sig
  const raw = dagCbor.decode<Record<string, unknown>>(good.bytes)
  const sig = Uint8Array.from(raw.sig as Uint8Array); sig[0] ^= 1
  assert.equal(r.ingest(dagCbor.encode({ ...raw, sig })).kind, 'rejected')
  // wrong author: signed by m but claims to be s
  const forged = signOp(m.key, s.id, 1, [T0, 0], submit(21))
  assert.equal(r.ingest(forged.bytes).kind, 'rejected')
  // author that is not an Ed25519 peer id
  assert.equal(r.ingest(dagCbor.encode({ ...raw, a: 'not-a-peer' })).kind, 'rejected')
  // unknown type: refused by the decoder before any signature work
  assert.throws(() => decodeOp(dagCbor.encode({ ...raw, t: 'explode' })), OpUnknownTypeError)
  assert.equal(r.ingest(dagCbor.encode({ ...raw, t: 'explode' })).kind, 'rejected')
  // oversized
  assert.equal(r.ingest(new Uint8Array(20_000)).kind, 'rejected')
  // garbage
  assert.equal(r.ingest(new Uint8Array([0xff, 0x00, 0x13])).kind, 'rejected')
  // far-future clock
  const future = next(m, [T0 + 61_000, 0], submit(22))
  assert.equal(r.ingest(future.bytes).kind, 'rejected')
  const st = r.stats().rejected
  assert.deepEqual([st['bad-signature'], st['author-mismatch'], st['unknown-type'], st.oversized, st.malformed, st['future-clock']], [2, 1, 1, 1, 1, 1])
  assert.equal(r.state.size, 0)
  // gap: held, then applied when filled; equivocation: rejected
  const s2 = next(s, [T0 + 1, 0], submit(23))
  assert.equal(r.ingest(s2.bytes).kind, 'pending')
  assert.equal(r.state.size, 0)
  const res = r.ingest(good.bytes)
  assert.equal(res.kind, 'applied')
  assert.equal(res.kind === 'applied' && res.applied.length, 2)
  assert.equal(r.ingest(good.bytes).kind, 'duplicate')
  const equiv = signOp(s.key, s.id, 1, [T0 + 9, 0], submit(24))
  assert.equal(r.ingest(equiv.bytes).kind, 'rejected')
  assert.equal(r.stats().rejected.equivocation, 1)
  assert.equal(r.state.size, 2)
  assert.deepEqual(r.versionVector(), { [s.id]: 2 })
})

test('a submit may list its input derivations: the record holds them until the build is finished; a malformed list is refused', async () => {
  const [s, a] = await Promise.all([makeAuthor(), makeAuthor()])
  const sub = next(s, [T0, 0], submit(9, { inputs: [drv(10), drv(11)] }))
  const plain = next(s, [T0 + 1, 0], submit(12))
  const r = new QueueReplica(() => T0 + 1000)
  assert.equal(r.ingest(sub.bytes).kind, 'applied')
  assert.equal(r.ingest(plain.bytes).kind, 'applied')
  const id = buildIdOf(sub)
  assert.deepEqual(r.state.get(id)!.inputs, [drv(10), drv(11)])
  assert.equal(r.state.get(buildIdOf(plain))!.inputs, undefined, 'a submit without the field: the builder reads the .drv')
  r.ingest(next(a, [T0 + 2, 0], { type: 'claim', payload: { build: id, attempt: 1, leaseMs: 60_000 } }).bytes)
  assert.deepEqual(r.state.get(id)!.inputs, [drv(10), drv(11)], 'still there while claimed')
  const out = drv(9).replace(/\.drv$/, '')
  r.ingest(next(a, [T0 + 3, 0], { type: 'result', payload: { build: id, attempt: 1, outcome: 'success', outputs: { out: { path: out, narHash: 'sha256:' + '0'.repeat(52), narSize: 1 } } } }).bytes)
  assert.equal(r.state.get(id)!.phase, 'succeeded')
  assert.equal(r.state.get(id)!.inputs, undefined, 'a finished build does not hold them')

  const bad = [['not a drv'], [drv(1).replace('.drv', '')], [42], Array.from({ length: 129 }, (_, i) => drv(100 + i)), 'x']
  for (const inputs of bad) {
    const tip = s.tip
    const op = next(s, [T0 + 10, 0], { type: 'submit', payload: { ...submit(20).payload, inputs } } as unknown as Parameters<typeof next>[2])
    assert.equal(r.ingest(op.bytes).kind, 'rejected', JSON.stringify(inputs).slice(0, 60))
    // the refused op never became part of the author's chain
    s.seq--
    s.tip = tip
  }
})

test('stateHash, kept between changes, follows every op and compaction as a fresh replica computes it', async () => {
  const [s, a] = await Promise.all([makeAuthor(), makeAuthor()])
  const sub = next(s, [T0, 0], submit(3))
  const id = buildIdOf(sub)
  const claim = next(a, [T0 + 10, 0], { type: 'claim', payload: { build: id, attempt: 1, leaseMs: 60_000 } })
  const renew = next(a, [T0 + 20, 0], { type: 'renew', payload: { build: id, attempt: 1, leaseMs: 60_000 } })
  const result = next(a, [T0 + 30, 0], { type: 'result', payload: { build: id, attempt: 1, outcome: 'success', outputs: { out: { path: '/gnu/store/o', narHash: 'sha256:1', narSize: 3 } } } })
  const ops = [sub, claim, renew, result]
  const r = new QueueReplica(() => T0 + 40)
  const seen = new Set<string>()
  for (const [i, op] of ops.entries()) {
    r.ingest(op.bytes)
    const fresh = new QueueReplica(() => T0 + 40)
    for (const o of ops.slice(0, i + 1)) fresh.ingest(o.bytes)
    assert.equal(r.state.stateHash(), fresh.state.stateHash(), `after op ${i + 1} the kept hash is the fresh one`)
    assert.equal(r.state.stateHash(), r.state.stateHash(), 'asked twice, the same')
    seen.add(r.state.stateHash())
  }
  assert.equal(seen.size, ops.length, 'each op changed the hash')
  const before = r.state.stateHash()
  assert.ok(r.state.compactBuild(id).length > 0, 'the renew is compacted away')
  assert.equal(r.state.stateHash(), before, 'compaction leaves the hash as it was')
})
