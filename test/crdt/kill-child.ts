// Child process for the kill test: start a node on the given dir, submit, print the ids and
// the state hash once acknowledged, then wait to be SIGKILLed (no clean stop, no snapshot).
import '../../src/polyfill.js'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { startNode } from './net.js'
import { drv } from './fixtures.js'

const dir = process.argv[2]
const node = await startNode({ dir, key: await generateKeyPair('Ed25519'), config: { snapshotIntervalMs: 0, syncIntervalMs: 0 } })
const ids = await node.queue.submit(Array.from({ length: 50 }, (_, i) => ({ drv: drv(1000 + i), system: 'x86_64-linux', priority: i % 7 })))
await node.queue.cancel(ids[3])
await node.queue.claim(ids[4], 1, 60_000)
process.stdout.write(JSON.stringify({ ids, hash: node.queue.stateHash() }) + '\n')
setInterval(() => {}, 1000)
