// Coalescer: keys asked for at about the same moment are answered by one lookup.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Coalescer } from '../../src/daemon/coalesce.js'

test('concurrent gets share one lookup; a key left out is undefined; a failed lookup fails every caller of it', async () => {
  const lookups: string[][] = []
  let fail = false
  const c = new Coalescer<number>(async (keys) => {
    lookups.push([...keys])
    if (fail) throw new Error('store went away')
    return new Map(keys.filter((k) => k !== 'gone').map((k) => [k, k.length]))
  })
  const [a, b, d] = await Promise.all([c.get(['x', 'yy']), c.get(['yy', 'zzz']), c.get(['gone'])])
  assert.deepEqual(lookups, [['x', 'yy', 'zzz', 'gone']])
  assert.deepEqual([...a], [['x', 1], ['yy', 2]])
  assert.deepEqual([...b], [['yy', 2], ['zzz', 3]])
  assert.deepEqual([...d], [['gone', undefined]])
  fail = true
  const both = await Promise.allSettled([c.get(['p']), c.get(['q'])])
  assert.deepEqual(both.map((r) => r.status), ['rejected', 'rejected'])
  assert.equal(lookups.length, 2)
  // later gets are a new lookup
  fail = false
  assert.equal((await c.get(['p'])).get('p'), 1)
  assert.equal(lookups.length, 3)
})

test('more keys than a lookup takes are split into several lookups', async () => {
  const sizes: number[] = []
  const c = new Coalescer<boolean>(async (keys) => { sizes.push(keys.length); return new Map(keys.map((k) => [k, true])) }, 1, 10)
  const keys = Array.from({ length: 25 }, (_, i) => `k${i}`)
  const got = await c.get(keys)
  assert.equal(got.size, 25)
  assert.ok([...got.values()].every((v) => v === true), 'every key answered')
  assert.deepEqual(sizes.reduce((a, b) => a + b, 0), 25)
  assert.ok(sizes.every((n) => n <= 10), JSON.stringify(sizes))
})
