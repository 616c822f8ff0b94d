// Baileys' auth state in the device's vault directory, sealed as pairgate's vault seals
// its files: AES-GCM with PAIRGATE_CIPHER_KEY (nonce 12 bytes, tag 16, then the
// ciphertext: eventsourcing's AESCipher layout, so pairgate can read and re-encrypt them).
// Each file is written whole to a 0600 temporary file, synced, then renamed over the old
// one: no plaintext file at any moment when keyed, no torn file after a crash. Without a
// key the files are plain JSON (0600), as Baileys' own useMultiFileAuthState writes them,
// and plain files a keyless run left are still read (and sealed at their next write).
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { BufferJSON, initAuthCreds, proto } from '@whiskeysockets/baileys'

const NONCE = 12
const TAG = 16

export function sealer (cipherKey) {
  if (!cipherKey) return { seal: (data) => data, open: (data) => data }
  const key = Buffer.from(cipherKey, 'base64')
  if (![16, 24, 32].includes(key.length)) throw new Error('the cipher key must be 16, 24 or 32 bytes in base64')
  const algorithm = `aes-${key.length * 8}-gcm`
  return {
    seal (data) {
      const nonce = randomBytes(NONCE)
      const cipher = createCipheriv(algorithm, key, nonce)
      const sealed = Buffer.concat([cipher.update(data), cipher.final()])
      return Buffer.concat([nonce, cipher.getAuthTag(), sealed])
    },
    open (data) {
      try {
        const decipher = createDecipheriv(algorithm, key, data.subarray(0, NONCE))
        decipher.setAuthTag(data.subarray(NONCE, NONCE + TAG))
        return Buffer.concat([decipher.update(data.subarray(NONCE + TAG)), decipher.final()])
      } catch (error) {
        if (data[0] === 0x7b) return data // `{`: plain JSON a keyless run wrote
        throw new Error('stored credentials cannot be decrypted: is PAIRGATE_CIPHER_KEY the key they were written with?')
      }
    }
  }
}

export async function useSealedAuthState (dir, cipherKey) {
  const { seal, open: unseal } = sealer(cipherKey)
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const turns = new Map() // file -> its last operation: one at a time per file
  const inTurn = (file, work) => {
    const done = (turns.get(file) ?? Promise.resolve()).then(work, work)
    turns.set(file, done.catch(() => {}))
    return done
  }
  const name = (file) => file.replace(/\//g, '__').replace(/:/g, '-') // as Baileys names them
  const path = (file) => join(dir, name(file))

  const write = (file, value) => inTurn(file, async () => {
    const partial = join(dir, `.${name(file)}.partial`)
    const handle = await open(partial, 'w', 0o600)
    try {
      await handle.writeFile(seal(Buffer.from(JSON.stringify(value, BufferJSON.replacer))))
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(partial, path(file))
  })
  const read = (file) => inTurn(file, async () => {
    let data
    try {
      data = await readFile(path(file))
    } catch (error) {
      if (error.code === 'ENOENT') return null
      throw error
    }
    return JSON.parse(unseal(data).toString('utf8'), BufferJSON.reviver)
  })
  const remove = (file) => inTurn(file, () => unlink(path(file)).catch((error) => {
    if (error.code !== 'ENOENT') throw error
  }))

  const creds = (await read('creds.json')) || initAuthCreds()
  const keys = {
    get: async (type, ids) => {
      const found = {}
      await Promise.all(ids.map(async (id) => {
        let value = await read(`${type}-${id}.json`)
        if (type === 'app-state-sync-key' && value) value = proto.Message.AppStateSyncKeyData.fromObject(value)
        found[id] = value
      }))
      return found
    },
    set: async (data) => {
      const tasks = []
      for (const [type, values] of Object.entries(data)) {
        for (const [id, value] of Object.entries(values)) {
          const file = `${type}-${id}.json`
          tasks.push(value ? write(file, value) : remove(file))
        }
      }
      await Promise.all(tasks)
    }
  }
  // `idle`: every write and removal begun so far has finished.
  const idle = () => Promise.all([...turns.values()])
  return { state: { creds, keys }, saveCreds: () => write('creds.json', creds), idle }
}
