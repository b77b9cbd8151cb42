import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCli } from '../helpers/cli.js'
import { VECTORS } from '../helpers/paths.js'

const V = (p: string): string => join(VECTORS, p)

async function withTmp (fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'gs-narinfo-cli-'))
  try { await fn(dir) } finally { await rm(dir, { recursive: true, force: true }) }
}

test('key generate writes the four files, refuses to overwrite, and --force replaces them', async () => {
  await withTmp(async (tmp) => {
    const dir = join(tmp, 'keys')
    const r = await runCli(['key', 'generate', '--dir', dir, '--name', 'cli-test-1'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /cli-test-1:[A-Za-z0-9+/]{43}=/)
    for (const f of ['signing-key.pub', 'signing-key.sec', 'nix-key.pub', 'nix-key.sec']) await stat(join(dir, f))
    assert.equal((await stat(join(dir, 'signing-key.sec'))).mode & 0o777, 0o600)
    const before = await readFile(join(dir, 'nix-key.sec'), 'utf8')
    const again = await runCli(['key', 'generate', '--dir', dir])
    assert.equal(again.code, 1)
    assert.match(again.stderr, /already exists/)
    assert.equal(await readFile(join(dir, 'nix-key.sec'), 'utf8'), before)
    const forced = await runCli(['key', 'generate', '--dir', dir, '--name', 'cli-test-1', '--force'])
    assert.equal(forced.code, 0, forced.stderr)
    assert.notEqual(await readFile(join(dir, 'nix-key.sec'), 'utf8'), before)
  })
})

test('narinfo verify: exit 0 naming the key, 1 with the reason, 2 on malformed input', async () => {
  const self = V('guix/self-signed-example.narinfo')
  const ok = await runCli(['narinfo', 'verify', self, '--key', V('keys/fmt-test-1.pub'), V('guix/test-key.pub')])
  assert.equal(ok.code, 0, ok.stderr)
  assert.match(ok.stdout, /verified by Guix key q #02A87AE7/)
  const nix = await runCli(['narinfo', 'verify', V('nix-cache/nix-copy-signed/7b4kwf9lbwrirjyfxy3n9h6sqfnlp8mc.narinfo'), '--key', V('keys/fmt-test-1.pub')])
  assert.equal(nix.code, 0, nix.stderr)
  assert.match(nix.stdout, /verified by Nix key fmt-test-1/)
  const wrong = await runCli(['narinfo', 'verify', V('nix-cache/nix-copy-signed/7b4kwf9lbwrirjyfxy3n9h6sqfnlp8mc.narinfo'), '--key', V('keys/wrong-key-1.pub')])
  assert.equal(wrong.code, 1)
  assert.match(wrong.stderr, /untrusted-key/)
  const unsigned = await runCli(['narinfo', 'verify', V('nix-cache/nix-copy-none/7b4kwf9lbwrirjyfxy3n9h6sqfnlp8mc.narinfo'), '--key', V('keys/fmt-test-1.pub')])
  assert.equal(unsigned.code, 1)
  assert.match(unsigned.stderr, /unsigned/)
  const crlf = await runCli(['narinfo', 'verify', V('narinfo-variants/var-crlf/jbdqi2fvjlgf33p2pslhd2a15byd760f.narinfo'), '--key', V('keys/fmt-test-1.pub')])
  assert.equal(crlf.code, 2)
  assert.match(crlf.stderr, /NarinfoCrlfError/)
  const missing = await runCli(['narinfo', 'verify', V('guix/does-not-exist.narinfo'), '--key', V('guix/test-key.pub')])
  assert.equal(missing.code, 2)
  const badKey = await runCli(['narinfo', 'verify', self, '--key', self])
  assert.equal(badKey.code, 2)
})

test('narinfo sign: Nix key reproduces nix copy, Guix key replaces the Signature; stdin and -o work', async () => {
  await withTmp(async (dir) => {
    const nix = await runCli(['narinfo', 'sign', V('nix-cache/nix-copy-none/jbdqi2fvjlgf33p2pslhd2a15byd760f.narinfo'), '--key', V('keys/fmt-test-1.sec')])
    assert.equal(nix.code, 0, nix.stderr)
    assert.equal(nix.stdout, await readFile(V('nix-cache/nix-copy-signed/jbdqi2fvjlgf33p2pslhd2a15byd760f.narinfo'), 'utf8'))

    const gen = await runCli(['key', 'generate', '--dir', join(dir, 'k')])
    assert.equal(gen.code, 0, gen.stderr)
    const out = join(dir, 'signed.narinfo')
    const text = await readFile(V('guix/bayfront-hello-2.12.2.narinfo'), 'utf8')
    const g = await runCli(['narinfo', 'sign', '-', '--key', join(dir, 'k', 'signing-key.sec'), '--host', 'cli-host', '-o', out], { input: text })
    assert.equal(g.code, 0, g.stderr)
    const signed = await readFile(out, 'utf8')
    assert.equal(signed.match(/^Signature: /gm)?.length, 1)
    assert.match(signed, /Signature: 1;cli-host;[A-Za-z0-9+/=]+\n$/)
    const v = await runCli(['narinfo', 'verify', out, '--key', join(dir, 'k', 'signing-key.pub')])
    assert.equal(v.code, 0, v.stderr)
    const old = await runCli(['narinfo', 'verify', out, '--key', join(dir, 'k', 'nix-key.pub')])
    assert.equal(old.code, 1)
    await writeFile(join(dir, 'broken'), 'StorePath: nowhere\n')
    const bad = await runCli(['narinfo', 'sign', join(dir, 'broken'), '--key', V('keys/fmt-test-1.sec')])
    assert.equal(bad.code, 2)
  })
})
