// Build logs on disk: short ones held in memory and written compressed once, long or slow ones
// streamed to a file; readable by name while running and after.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdir, rm } from 'node:fs/promises'
import { gunzipSync } from 'node:zlib'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { LogStore, MEMORY_LOG_BYTES, BadLogNameError } from '../../src/scheduler/index.js'
import { tempDir, waitFor } from './harness.js'

/** The memory clock of these stores (MEMORY_LOG_MS, 5 s, in a node). */
const MEMORY_MS = 300

async function withStore (fn: (logs: LogStore, dir: string) => Promise<void>): Promise<void> {
  const dir = await tempDir('guix-swarm-logs-')
  const logs = new LogStore(join(dir, 'logs'), MEMORY_MS)
  await logs.init()
  try {
    await fn(logs, logs.dir)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

test('a short log is readable while its build runs, touches no file until it ends, then is one .log.gz', async () => {
  await withStore(async (logs, dir) => {
    const w = logs.open('b1', 1)
    w.write(Buffer.from('line one\n'))
    w.write(Buffer.from('line two\n'))
    assert.deepEqual(await readdir(dir), [], 'nothing on disk while the log is short and young')
    assert.equal((await logs.read('b1.1'))?.toString(), 'line one\nline two\n', 'the running build\'s log is readable')
    assert.deepEqual(await logs.attempts('b1'), [1], 'a held log counts as an attempt this node has')
    await w.close()
    assert.deepEqual(await readdir(dir), ['b1.1.log.gz'], 'one compressed file, no temp left')
    assert.equal(gunzipSync(readFileSync(join(dir, 'b1.1.log.gz'))).toString(), 'line one\nline two\n', 'the file holds the whole log')
    assert.equal((await logs.read('b1.1'))?.toString(), 'line one\nline two\n', 'readable after the end')
  })
})

test('a log past MEMORY_LOG_BYTES goes to a file at once and ends compressed', async () => {
  await withStore(async (logs, dir) => {
    const w = logs.open('b2', 3)
    const big = Buffer.alloc(MEMORY_LOG_BYTES + 1, 'x')
    w.write(Buffer.from('start\n'))
    w.write(big)
    w.write(Buffer.from('end\n'))
    // the file stream opens asynchronously
    await waitFor('the live file', async () => (await readdir(dir)).length > 0, 2000)
    assert.deepEqual(await readdir(dir), ['b2.3.log'], 'spilled to a live file')
    await w.close()
    assert.deepEqual(await readdir(dir), ['b2.3.log.gz'], 'compressed, the live file removed')
    const text = (await logs.read('b2.3'))?.toString()
    assert.equal(text, `start\n${big.toString()}end\n`, 'nothing lost or reordered in the spill')
  })
})

test('a build whose output began more than the memory clock ago has its log on disk, so a crash keeps it', async () => {
  await withStore(async (logs, dir) => {
    const w = logs.open('b3', 1)
    w.write(Buffer.from('early\n'))
    await new Promise((resolve) => setTimeout(resolve, MEMORY_MS + 200))
    w.write(Buffer.from('late\n'))
    await new Promise((resolve) => setTimeout(resolve, 50)) // let the stream write
    assert.equal(readFileSync(join(dir, 'b3.1.log'), 'utf8'), 'early\nlate\n', 'the live file holds the log so far')
    await w.close()
    assert.equal((await logs.read('b3.1'))?.toString(), 'early\nlate\n', 'compressed at the end')
  })
})

test('the clock starts at the first output: a log opened long before its build began stays in memory', async () => {
  await withStore(async (logs, dir) => {
    const w = logs.open('b4', 1) // as a batch opens the logs of its later builds
    await new Promise((resolve) => setTimeout(resolve, MEMORY_MS + 200))
    w.write(Buffer.from('building\n'))
    await new Promise((resolve) => setTimeout(resolve, 50))
    assert.deepEqual(await readdir(dir), [], 'no live file: its output is younger than the memory clock')
    await w.close()
    assert.deepEqual(await readdir(dir), ['b4.1.log.gz'], 'one compressed write at the end')
    assert.equal((await logs.read('b4.1'))?.toString(), 'building\n', 'the whole log')
  })
})

test('log names are checked; an unknown log reads as undefined', async () => {
  await withStore(async (logs) => {
    await assert.rejects(logs.read('../etc/passwd'), BadLogNameError, 'a path is not a log name')
    assert.throws(() => logs.open('a/b', 1), BadLogNameError, 'a build id with a slash is refused')
    assert.equal(await logs.read('nope.1'), undefined, 'a log this node never held')
  })
})
