// CoalescingSender over a fake stream that records each send (each would be one yamux frame):
// small writes leave together, in order, never above the limit unless one write alone is.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { Stream } from '@libp2p/interface'
import { CoalescingSender } from '../../src/transfer/index.js'

/** Records sends; `full` makes send() report a full buffer until drain() is called. */
class FakeStream extends EventTarget {
  status = 'open'
  writableNeedsDrain = false
  readonly sent: Buffer[] = []
  full = false

  send (data: Uint8Array): boolean {
    this.sent.push(Buffer.from(data))
    if (this.full) this.writableNeedsDrain = true
    return !this.full
  }

  drain (): void {
    this.writableNeedsDrain = false
    this.dispatchEvent(new Event('drain'))
  }
}

const bytes = (n: number, fill: number): Buffer => Buffer.alloc(n, fill)

test('small writes leave as one send, in order, at flush', async () => {
  const s = new FakeStream()
  const out = new CoalescingSender(s as unknown as Stream, 1024)
  const parts = [bytes(10, 1), bytes(300, 2), bytes(0, 3), bytes(5, 4)]
  for (const p of parts) await out.write(p)
  assert.equal(s.sent.length, 0, 'nothing is sent before the limit or a flush')
  await out.flush()
  assert.equal(s.sent.length, 1, 'one send for all the small writes')
  assert.deepEqual(s.sent[0], Buffer.concat(parts), 'the bytes in write order')
  await out.flush()
  assert.equal(s.sent.length, 1, 'an empty flush sends nothing')
})

test('a send never goes over the limit, and a large write follows what was gathered', async () => {
  const s = new FakeStream()
  const out = new CoalescingSender(s as unknown as Stream, 1000)
  const parts = [bytes(600, 1), bytes(600, 2), bytes(2500, 3), bytes(100, 4)]
  for (const p of parts) await out.write(p)
  await out.flush()
  assert.deepEqual(s.sent.map((b) => b.length), [600, 600, 2500, 100], 'gathered parts flushed before they would pass the limit; the large one alone')
  assert.deepEqual(Buffer.concat(s.sent), Buffer.concat(parts), 'the stream carries the writes in order')
})

test('flush waits for drain when the stream is full', async () => {
  const s = new FakeStream()
  s.full = true
  const out = new CoalescingSender(s as unknown as Stream, 1000)
  await out.write(bytes(10, 1))
  let flushed = false
  const done = out.flush().then(() => { flushed = true })
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(s.sent.length, 1, 'the gathered bytes were handed to the stream')
  assert.equal(flushed, false, 'flush has not returned while the stream needs a drain')
  s.drain()
  await done
  assert.equal(flushed, true, 'flush returns after drain')
})
