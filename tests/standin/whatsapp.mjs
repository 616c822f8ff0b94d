// A local stand-in for WhatsApp's multi-device web endpoint (test code): the server side of
// the Noise XX handshake with its own certificate chain, binary nodes in Baileys' own codec
// and protobufs, and a "phone" that scans QR codes. Baileys connects to it unmodified, except
// for the root key it checks the chain against (see pin.mjs).
//
// Control: JSON lines. Prints {"event": "listening", url, certKey} first, then events
// ("refs" {refs}, "signed" {jid}, "login" {jid}, "companion_hello" {jid}, "closed" {jid, ref:
// the first ref it offered, if any});
// commands on stdin, answered by {id, ok, ...}:
//   {"cmd": "scan", "qr": text, "phone": "628..."}   the phone scans a QR text
//   {"cmd": "enter_code", "code": "ABCD-EFGH"}       the phone's user types a pairing code
//   {"cmd": "logout"|"conflict"|"drop", "jid": ...}  pushed to that device's live socket
//   {"cmd": "refs", "count": n}                      refs for the next pair-device only
import { createHmac, randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath, pathToFileURL } from 'node:url'

const SIDECAR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'adapters', 'engines',
  'baileys', 'sidecar')
const require = createRequire(join(SIDECAR, 'package.json'))
const { WebSocketServer } = require('ws')
const B = await import(pathToFileURL(join(SIDECAR, 'node_modules', '@whiskeysockets', 'baileys',
  'lib', 'index.js')).href)
const { proto, Curve, hkdf, sha256, aesEncryptGCM, aesDecryptGCM, aesEncryptCTR, aesDecryptCTR, derivePairingCodeKey, encodeBinaryNode, decodeBinaryNode } = B

// Baileys' own Curve.verify ignores libsignal's boolean (always "valid" unless it throws):
// the stand-in checks signatures with the boolean itself.
const curve = require('libsignal/src/curve.js')
const verify = (key, message, signature) => curve.verifySignature(B.generateSignalPubKey(key), message, signature) === true

const NOISE_MODE = 'Noise_XX_25519_AESGCM_SHA256\0\0\0\0'
const HEADER = Buffer.from([87, 65, 6, 3])
const SERVER = 's.whatsapp.net'

// The stand-in's certificate chain: root (pinned by the test) → intermediate → leaf (static).
const root = Curve.generateKeyPair()
const intermediate = Curve.generateKeyPair()
const serverStatic = Curve.generateKeyPair()
const certificate = (signer, fields) => {
  const details = proto.CertChain.NoiseCertificate.Details.encode(fields).finish()
  return { details, signature: Buffer.from(Curve.sign(signer.private, details)) }
}
const CHAIN = proto.CertChain.encode({
  intermediate: certificate(root, { serial: 1, issuerSerial: 0, key: intermediate.public }),
  leaf: certificate(intermediate, { serial: 2, issuerSerial: 1, key: serverStatic.public })
}).finish()
{
  const { intermediate: i, leaf: l } = proto.CertChain.decode(CHAIN)
  if (!verify(root.public, i.details, i.signature) || !verify(intermediate.public, l.details, l.signature)) {
    throw new Error('the stand-in certificate chain does not verify')
  }
}

const REFS = 6 // WhatsApp's: six codes per pairing
const nextRefs = [] // counts for the next pairings, one each (the `refs` command)
const devices = new Map() // jid -> {noise, identity}: linked devices WhatsApp knows
const live = new Set() // connections
const pairings = new Map() // ref -> connection waiting to be scanned

const send = (message) => process.stdout.write(JSON.stringify(message) + '\n')
let tags = 0
const tag = () => `standin-${++tags}`

// -- Noise XX, responder side: the mirror of Baileys' noise-handler ------------------------
function responder (clientEphemeral) {
  let hash = Buffer.from(NOISE_MODE)
  let salt = hash
  let key = hash
  let counter = 0
  const iv = (n) => { const v = Buffer.alloc(12); v.writeUInt32BE(n, 8); return v }
  const authenticate = (data) => { hash = Buffer.from(sha256(Buffer.concat([hash, data]))) }
  const mix = (data) => {
    const out = Buffer.from(hkdf(Buffer.from(data), 64, { salt, info: '' }))
    salt = out.subarray(0, 32)
    key = out.subarray(32)
    counter = 0
  }
  const encrypt = (plain) => { const c = aesEncryptGCM(plain, key, iv(counter++), hash); authenticate(c); return c }
  const decrypt = (cipher) => { const p = aesDecryptGCM(cipher, key, iv(counter++), hash); authenticate(cipher); return p }
  authenticate(HEADER)
  authenticate(clientEphemeral)
  const ephemeral = Curve.generateKeyPair()
  authenticate(ephemeral.public)
  mix(Curve.sharedKey(ephemeral.private, clientEphemeral))
  const staticEnc = encrypt(serverStatic.public)
  mix(Curve.sharedKey(serverStatic.private, clientEphemeral))
  const payload = encrypt(CHAIN)
  return {
    hello: proto.HandshakeMessage.encode({ serverHello: { ephemeral: ephemeral.public, static: staticEnc, payload } }).finish(),
    finish: ({ static: clientStaticEnc, payload: payloadEnc }) => {
      const clientStatic = decrypt(clientStaticEnc)
      mix(Curve.sharedKey(ephemeral.private, clientStatic))
      const clientPayload = proto.ClientPayload.decode(decrypt(payloadEnc))
      const out = Buffer.from(hkdf(Buffer.alloc(0), 64, { salt, info: '' }))
      const [write, read] = [out.subarray(0, 32), out.subarray(32)] // the client's view
      let sent = 0
      let received = 0
      return {
        clientStatic: Buffer.from(clientStatic),
        clientPayload,
        seal: (plain) => aesEncryptGCM(plain, read, iv(sent++), Buffer.alloc(0)),
        open: (cipher) => aesDecryptGCM(cipher, write, iv(received++), Buffer.alloc(0))
      }
    }
  }
}

// -- one connection ------------------------------------------------------------------------
function connection (ws) {
  const conn = { ws, jid: null, transport: null, handshake: null, pending: new Map() }
  live.add(conn)
  let buffer = Buffer.alloc(0)
  let introduced = false
  const frame = (data) => {
    const out = Buffer.alloc(3 + data.length)
    out.writeUIntBE(data.length, 0, 3)
    data.copy(out, 3)
    ws.send(out)
  }
  conn.node = (node) => { if (ws.readyState === 1) frame(conn.transport.seal(encodeBinaryNode(node))) }
  conn.query = (node) => new Promise((resolve) => {
    node.attrs.id = tag()
    conn.pending.set(node.attrs.id, resolve)
    conn.node(node)
  })
  ws.on('message', async (data) => {
    buffer = Buffer.concat([buffer, data])
    if (!introduced) {
      if (buffer.length < 4) return
      if (!buffer.subarray(0, 4).equals(HEADER)) return ws.terminate()
      buffer = buffer.subarray(4)
      introduced = true
    }
    while (buffer.length >= 3 && buffer.length >= 3 + buffer.readUIntBE(0, 3)) {
      const size = buffer.readUIntBE(0, 3)
      const body = Buffer.from(buffer.subarray(3, 3 + size))
      buffer = buffer.subarray(3 + size)
      try {
        await receive(conn, body, frame)
      } catch (error) {
        process.stderr.write(`stand-in: ${error.stack}\n`)
        ws.terminate()
      }
    }
  })
  ws.on('close', () => {
    live.delete(conn)
    for (const [ref, waiting] of pairings) if (waiting === conn) pairings.delete(ref)
    send({ event: 'closed', jid: conn.jid, ref: conn.refs?.[0] ?? null })
  })
}

async function receive (conn, body, frame) {
  if (!conn.handshake) {
    const { clientHello } = proto.HandshakeMessage.decode(body)
    conn.handshake = responder(clientHello.ephemeral)
    return frame(Buffer.from(conn.handshake.hello))
  }
  if (!conn.transport) {
    const { clientFinish } = proto.HandshakeMessage.decode(body)
    conn.transport = conn.handshake.finish(clientFinish)
    return start(conn)
  }
  const node = await decodeBinaryNode(conn.transport.open(body))
  const waiting = conn.pending.get(node.attrs.id)
  if (waiting && node.tag === 'iq') {
    conn.pending.delete(node.attrs.id)
    return waiting(node)
  }
  if (node.tag === 'iq') return answer(conn, node)
}

function start (conn) {
  const { clientPayload, clientStatic } = conn.transport
  if (clientPayload.devicePairingData) {
    // A new companion: offer it refs to show as QR codes (Baileys rotates them itself).
    conn.identity = Buffer.from(clientPayload.devicePairingData.eIdent)
    const refs = Array.from({ length: nextRefs.shift() ?? REFS }, () => `2@${randomBytes(18).toString('base64')}`)
    conn.refs = refs
    for (const ref of refs) pairings.set(ref, conn)
    send({ event: 'refs', refs })
    conn.node({
      tag: 'iq',
      attrs: { from: SERVER, type: 'set', id: tag(), xmlns: 'md' },
      content: [{ tag: 'pair-device', attrs: {}, content: refs.map((ref) => ({ tag: 'ref', attrs: {}, content: Buffer.from(ref) })) }]
    })
    return
  }
  const jid = `${clientPayload.username}:${clientPayload.device}@${SERVER}`
  const device = devices.get(jid)
  if (!device || !device.noise.equals(clientStatic)) {
    send({ event: 'refused', jid })
    conn.node({ tag: 'failure', attrs: { reason: '401', location: 'standin' } })
    return
  }
  for (const other of live) if (other !== conn && other.jid === jid) other.ws.terminate()
  conn.jid = jid
  send({ event: 'login', jid })
  conn.node({ tag: 'success', attrs: { t: String(Math.floor(Date.now() / 1000)), lid: device.lid, props: '1', location: 'standin' } })
}

function answer (conn, iq) {
  // Everything a logged-in Baileys asks: an empty result, with the few answers it needs.
  const child = Array.isArray(iq.content) ? iq.content[0] : undefined
  const content = []
  if (iq.attrs.xmlns === 'encrypt' && child?.tag === 'count') content.push({ tag: 'count', attrs: { value: '812' } })
  if (iq.attrs.xmlns === 'encrypt' && child?.tag === 'digest') content.push({ tag: 'digest', attrs: {} })
  if (child?.tag === 'remove-companion-device') {
    devices.delete(child.attrs.jid)
    send({ event: 'removed', jid: child.attrs.jid })
  }
  if (child?.tag === 'link_code_companion_reg') {
    const part = (name) => Buffer.from(child.content.find((n) => n.tag === name)?.content ?? [])
    send({ event: 'companion_hello', jid: child.attrs.jid, stage: child.attrs.stage })
    if (child.attrs.stage === 'companion_hello') {
      const ref = randomBytes(16).toString('hex')
      conn.linkCode = { jid: child.attrs.jid, ref, wrapped: part('link_code_pairing_wrapped_companion_ephemeral_pub') }
      content.push({ tag: 'link_code_companion_reg', attrs: {}, content: [{ tag: 'link_code_pairing_ref', attrs: {}, content: Buffer.from(ref) }] })
    } else if (child.attrs.stage === 'companion_finish') {
      conn.linkCode?.finish?.(part('link_code_pairing_wrapped_key_bundle'), part('companion_identity_public'))
    }
  }
  conn.node({ tag: 'iq', attrs: { from: SERVER, type: 'result', id: iq.attrs.id }, content: content.length ? content : undefined })
}

// -- the phone -----------------------------------------------------------------------------
const account = Curve.generateKeyPair() // the phone's account (identity) key
let deviceIds = 0

async function scan ({ qr, phone }) {
  const [ref, noise, identity, adv] = qr.replace(/^.*#/, '').split(',')
  const conn = pairings.get(ref)
  if (!conn) throw new Error('unknown or expired ref')
  const identityKey = Buffer.from(identity, 'base64')
  if (!identityKey.equals(conn.identity) || !Buffer.from(noise, 'base64').equals(conn.transport.clientStatic)) {
    throw new Error('the QR keys are not those of the connection that got the ref')
  }
  return pairSuccess(conn, phone, Buffer.from(adv, 'base64'))
}

async function enterCode ({ code }) {
  // The user types the code on the phone: it unwraps the companion's ephemeral key with it,
  // sends its own (wrapped with the same code), and takes the key bundle Baileys returns.
  const conn = [...live].reverse().find((c) => c.linkCode) // the latest to ask
  if (!conn) throw new Error('no companion asked for a pairing code')
  const { jid, ref, wrapped } = conn.linkCode
  conn.linkCode = { jid, ref, wrapped: null } // one code entry per request
  const plain = code.replace('-', '')
  const companionEphemeral = aesDecryptCTR(wrapped.subarray(48, 80), await derivePairingCodeKey(plain, wrapped.subarray(0, 32)), wrapped.subarray(32, 48))
  const primary = Curve.generateKeyPair()
  const salt = randomBytes(32)
  const iv = randomBytes(16)
  const primaryWrapped = Buffer.concat([salt, iv, aesEncryptCTR(primary.public, await derivePairingCodeKey(plain, salt), iv)])
  const finished = new Promise((resolve) => { conn.linkCode.finish = (bundle, companionIdentity) => resolve({ bundle, companionIdentity }) })
  conn.node({
    tag: 'notification',
    attrs: { from: SERVER, type: 'link_code_companion_reg', id: tag(), t: String(Math.floor(Date.now() / 1000)) },
    content: [{
      tag: 'link_code_companion_reg',
      attrs: {},
      content: [
        { tag: 'link_code_pairing_ref', attrs: {}, content: Buffer.from(ref) },
        { tag: 'primary_identity_pub', attrs: {}, content: account.public },
        { tag: 'link_code_pairing_wrapped_primary_ephemeral_pub', attrs: {}, content: primaryWrapped }
      ]
    }]
  })
  const { bundle, companionIdentity } = await finished
  const companionShared = Curve.sharedKey(primary.private, companionEphemeral)
  const key = hkdf(companionShared, 32, { salt: bundle.subarray(0, 32), info: 'link_code_pairing_key_bundle_encryption_key' })
  let opened
  try {
    opened = aesDecryptGCM(bundle.subarray(44), Buffer.from(key), bundle.subarray(32, 44), Buffer.alloc(0))
  } catch {
    throw new Error('the key bundle does not open: the code was wrong')
  }
  if (!opened.subarray(0, 32).equals(companionIdentity) || !opened.subarray(0, 32).equals(conn.identity)) {
    throw new Error('the key bundle names another companion')
  }
  const identityShared = Curve.sharedKey(account.private, companionIdentity)
  const adv = hkdf(Buffer.concat([companionShared, identityShared, opened.subarray(64, 96)]), 32, { info: 'adv_secret' })
  return pairSuccess(conn, jid.split('@')[0], Buffer.from(adv))
}

async function pairSuccess (conn, phone, advSecret) {
  const identityKey = conn.identity
  const device = ++deviceIds
  const jid = `${phone}:${device}@${SERVER}`
  const lid = `${100000 + device}:${device}@lid`
  const details = Buffer.from(proto.ADVDeviceIdentity.encode({ rawId: device, timestamp: Math.floor(Date.now() / 1000), keyIndex: device }).finish())
  const accountSignature = Curve.sign(account.private, Buffer.concat([Buffer.from([6, 0]), details, identityKey]))
  const signed = proto.ADVSignedDeviceIdentity.encode({ details, accountSignatureKey: account.public, accountSignature }).finish()
  const hmac = createHmac('sha256', advSecret).update(signed).digest()
  const reply = await conn.query({
    tag: 'iq',
    attrs: { from: SERVER, type: 'result', t: String(Math.floor(Date.now() / 1000)) },
    content: [{
      tag: 'pair-success',
      attrs: {},
      content: [
        { tag: 'device-identity', attrs: {}, content: proto.ADVSignedDeviceIdentityHMAC.encode({ details: signed, hmac }).finish() },
        { tag: 'platform', attrs: { name: 'smba' } },
        { tag: 'device', attrs: { jid, lid } }
      ]
    }]
  })
  // Baileys signs the identity back: check the device signature as WhatsApp would.
  const sign = reply.content?.find((n) => n.tag === 'pair-device-sign')?.content?.[0]?.content
  const back = proto.ADVSignedDeviceIdentity.decode(sign)
  const message = Buffer.concat([Buffer.from([6, 1]), Buffer.from(back.details), identityKey, account.public])
  if (!verify(identityKey, message, back.deviceSignature)) throw new Error('bad device signature')
  for (const [r, waiting] of pairings) if (waiting === conn) pairings.delete(r)
  devices.set(jid, { noise: conn.transport.clientStatic, identity: identityKey, lid })
  send({ event: 'signed', jid })
  conn.node({ tag: 'stream:error', attrs: { code: '515' } }) // restart, and log in
  return { jid }
}

function pushed (jid, node, forget) {
  const conns = [...live].filter((c) => c.jid === jid)
  if (forget) devices.delete(jid)
  for (const conn of conns) {
    if (node) conn.node(node)
    else conn.ws.terminate()
  }
  return { sockets: conns.length }
}

const commands = {
  scan,
  enter_code: enterCode,
  logout: ({ jid }) => pushed(jid, { tag: 'stream:error', attrs: { code: '401' }, content: [{ tag: 'conflict', attrs: { type: 'device_removed' } }] }, true),
  conflict: ({ jid }) => pushed(jid, { tag: 'stream:error', attrs: {}, content: [{ tag: 'conflict', attrs: { type: 'replaced' } }] }),
  drop: ({ jid }) => pushed(jid, null),
  refs: ({ count }) => { nextRefs.push(count); return {} }
}

createInterface({ input: process.stdin }).on('line', async (line) => {
  const command = JSON.parse(line)
  try {
    send({ id: command.id, ok: true, ...(await commands[command.cmd](command)) })
  } catch (error) {
    send({ id: command.id, ok: false, error: String(error?.message ?? error) })
  }
}).on('close', () => process.exit(0))

const server = new WebSocketServer({ host: '127.0.0.1', port: 0, path: '/ws/chat' })
server.on('connection', connection)
server.on('listening', () => send({
  event: 'listening',
  url: `ws://127.0.0.1:${server.address().port}/ws/chat`,
  certKey: Buffer.from(root.public).toString('hex')
}))
