// Against the real nix-store (Debian nix-bin 2.8): --dump must equal our pack, and our unpack
// must lay files out like --restore (same NAR back, same permission bits).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, lstatSync, mkdirSync, openSync, closeSync, readdirSync, symlinkSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { hashPathSync, packNarSync, unpackNar } from '../../src/nar/index.js'
import { nixSkip } from '../helpers/nix.js'
import { tempDir } from './support.js'

const NIX_ENV = { ...process.env, NIX_REMOTE: '' }

function nixDump (path: string | Buffer): Buffer {
  return execFileSync('nix-store', ['--dump', path.toString()], { env: NIX_ENV, maxBuffer: 1 << 30 })
}

function nixRestore (nar: Buffer, dest: string): void {
  const r = spawnSync('nix-store', ['--restore', dest], { input: nar, env: NIX_ENV })
  assert.equal(r.status, 0, r.stderr.toString())
}

/** Builds the awkward trees the brief lists; returns name → path. */
function makeTrees (root: string): Map<string, string | Buffer> {
  const trees = new Map<string, string | Buffer>()

  const uni = join(root, 'unicode')
  mkdirSync(uni)
  for (const n of ['ünïcödé-名前.txt', 'Ωmega', 'e\u0301-decomposed', 'é-composed', '🦀', 'ascii', 'Zed']) writeFileSync(join(uni, n), n)
  trees.set('unicode names', uni)

  const raw = Buffer.from(join(root, 'bytes'))
  mkdirSync(raw)
  for (const n of [[0xff, 0xfe], [0x80], [0xc3, 0x28], [0x61, 0xe9, 0x62], [0x7f], [0x01, 0x02]]) {
    writeFileSync(Buffer.concat([raw, Buffer.from('/'), Buffer.from(n)]), Buffer.from(n))
  }
  mkdirSync(Buffer.concat([raw, Buffer.from('/dir\xfe', 'latin1')]))
  symlinkSync(Buffer.from([0xff, 0x2f, 0x80]), Buffer.concat([raw, Buffer.from('/link\xff', 'latin1')]))
  trees.set('non-UTF-8 byte names', raw)

  const deep = join(root, 'deep')
  let p = deep
  for (let i = 0; i < 120; i++) { p = join(p, `d${i % 10}`); mkdirSync(p, { recursive: true }) }
  writeFileSync(join(p, 'bottom'), 'deep')
  symlinkSync('../../..', join(p, 'up'))
  trees.set('deep nesting (120 levels)', deep)

  const wide = join(root, 'wide')
  mkdirSync(wide)
  for (let i = 0; i < 3000; i++) writeFileSync(join(wide, `f${(i * 7919) % 3001}-${i}`), i % 3 === 0 ? '' : `${i}`)
  trees.set('3000 entries', wide)

  const empties = join(root, 'empties')
  mkdirSync(join(empties, 'emptydir'), { recursive: true })
  writeFileSync(join(empties, 'empty'), '')
  writeFileSync(join(empties, 'empty-exec'), '')
  chmodSync(join(empties, 'empty-exec'), 0o700)
  writeFileSync(join(empties, 'other-x'), 'x')
  chmodSync(join(empties, 'other-x'), 0o601)
  trees.set('empty files and modes', empties)

  const big = join(root, 'big')
  const fd = openSync(big, 'w')
  const block = Buffer.alloc(1 << 20)
  for (let i = 0; i < 40; i++) {
    for (let j = 0; j < block.length; j += 4) block.writeUInt32LE((i * 2654435761 + j) >>> 0, j)
    writeSync(fd, block)
  }
  writeSync(fd, Buffer.from('tail of odd length'))
  closeSync(fd)
  trees.set('large file (40 MiB + 18 bytes)', big)

  // chunks start at 8 KiB and double up to 1 MiB: contents and framing across each step
  const steps = join(root, 'steps')
  mkdirSync(steps)
  const sizes = [0, 1, 7, 8_150, 8_184, 8_185, 8_192, 16_377, 100_000, 524_288, 524_289, 1_048_569, 1_048_576, 1_048_577, 2_500_003]
  for (const [i, size] of sizes.entries()) {
    const bytes = Buffer.alloc(size)
    for (let j = 0; j < size; j++) bytes[j] = (j * 31 + i) & 0xff
    writeFileSync(join(steps, `f${String(i).padStart(2, '0')}-${size}`), bytes)
  }
  writeFileSync(join(steps, `${'n'.repeat(200)}`), 'a long name')
  trees.set('file sizes around chunk steps', steps)

  symlinkSync('/nix/store/does-not-exist', join(root, 'symroot'))
  trees.set('symlink root', join(root, 'symroot'))
  return trees
}

function modes (root: string | Buffer): string[] {
  const out: string[] = []
  const walk = (p: Buffer, rel: string): void => {
    const st = lstatSync(p)
    out.push(`${rel} ${(st.mode & 0o170777).toString(8)}`)
    if (st.isDirectory()) {
      for (const n of readdirSync(p, { encoding: 'buffer' }).sort(Buffer.compare)) walk(Buffer.concat([p, Buffer.from('/'), n]), `${rel}/${n.toString('hex')}`)
    }
  }
  walk(Buffer.from(root), '')
  return out
}

test('our pack equals nix-store --dump on generated trees; our unpack matches --restore', { skip: nixSkip() }, async () => {
  const { dir, cleanup } = tempDir()
  try {
    const src = join(dir, 'src')
    mkdirSync(src)
    const trees = makeTrees(src)
    for (const [label, path] of trees) {
      const theirs = nixDump(path)
      const ours = Buffer.concat([...packNarSync(path)])
      assert.equal(ours.length, theirs.length, label)
      assert.ok(ours.equals(theirs), `${label}: NAR differs from nix-store --dump`)
      const d = hashPathSync(path)
      assert.equal(Buffer.from(d.sha256).toString('hex'), createHash('sha256').update(theirs).digest('hex'), label)

      const slug = label.replace(/[^a-z0-9]/gi, '_')
      const oursOut = join(dir, `ours-${slug}`)
      const nixOut = join(dir, `nix-${slug}`)
      await unpackNar([theirs], oursOut)
      nixRestore(theirs, nixOut)
      assert.ok(nixDump(oursOut).equals(theirs), `${label}: our unpack does not dump back to the same NAR`)
      assert.deepEqual(modes(oursOut), modes(nixOut), `${label}: permission bits differ from nix-store --restore`)
    }
  } finally {
    cleanup()
  }
})

test('a NAR from nix-store --dump of the shared small tree round-trips through our unpack and pack', { skip: nixSkip() }, async () => {
  const { dir, cleanup } = tempDir()
  try {
    const src = join(dir, 'tree')
    mkdirSync(join(src, 'a/b'), { recursive: true })
    writeFileSync(join(src, 'a/b/c'), 'c')
    const nar = nixDump(src)
    await unpackNar([nar], join(dir, 'once'))
    const again = Buffer.concat([...packNarSync(join(dir, 'once'))])
    assert.ok(again.equals(nar), 'unpacking and re-packing the nix-store --dump NAR gives it back byte for byte')
  } finally {
    cleanup()
  }
})
