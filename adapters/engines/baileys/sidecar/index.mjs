// pairgate's Baileys sidecar: one Node process hosting every Baileys socket of one pairgate
// process. It is a separate process because Baileys' libsignal is GPL-3.0.
//
// Protocol: newline-delimited JSON. Commands on stdin, each with an `id` answered by
// {"id", "ok", "error"?} on stdout:
//   {"id": 1, "cmd": "start", "key": "k", "dir": "/0700/dir", "phone": "628..."?,
//    "proxy": "socks5://user:pass@host:1080"? (http, https or socks5; a secret: never logged)}
//   {"id": 2, "cmd": "stop", "key": "k"}      close, keep the credentials
//   {"id": 4, "cmd": "discard", "key": "k"}   close, and write the credentials no more
//      (answered once writes under way are done: pairgate then deletes the files)
//   {"id": 3, "cmd": "logout", "key": "k", "dir": "...", "proxy"?}   unlink at WhatsApp,
//      close (an offline device connects for it through its proxy, as `start` would)
// `start` and `logout` may carry "cipher": PAIRGATE_CIPHER_KEY, with which the device's
// files are sealed (sealed-auth-state.mjs); it comes over this pipe only, never argv/env.
// Events on stdout: {"event": "ready"}, then per key: "qr" {code, timeout, resumed (the
// socket started from stored credentials)}, "pair_code" {code, timeout}, "paired" (the
// credentials are written), "connected", "closed" {status, message}, "passkey_required"
// {options} (WhatsApp asks for the account's passkey: see passkey.mjs).
// Policy (what a status means, when to reconnect) lives in pairgate, not here.
//
// Credentials reach `dir` only once the device has paired, so a directory with creds.json
// means "paired". With `--replay FILE`, sockets replay recorded connection.update shapes
// from FILE ({key: [[step, ...], ...]}, one list per socket) instead of reaching WhatsApp;
// a step marked `late` still runs after its socket ended, as Baileys' work under way then
// (a message being decrypted) still saves credentials.
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { EventEmitter } from 'node:events'
import makeWASocket from '@whiskeysockets/baileys'
import pino from 'pino'
import { endWhenRefused, proxyAgent } from './proxy.mjs'
import { watchPasskey } from './passkey.mjs'
import { useSealedAuthState } from './sealed-auth-state.mjs'

process.umask(0o077) // Baileys' files: 0600, directories 0700
// One device's failed promise must not end every device's socket (Node exits on them).
process.on('unhandledRejection', (error) => logger.warn({ message: error?.message }, 'unhandled rejection'))

// WhatsApp's schedule, from pairgate (adapters/engines/whatsapp.py): Baileys rotates the
// codes on it without telling how long each one is good for.
const option = (name) => {
  const at = process.argv.indexOf(name)
  if (at < 0) throw new Error(`the sidecar needs ${name} (BaileysEngine passes it)`)
  return process.argv[at + 1]
}
const QR_SECONDS = option('--qr-timeouts').split(',').map(Number)
const PAIR_CODE_SECONDS = Number(option('--pair-code-timeout'))
const LOGOUT_CONNECT_MS = 10000

// WhatsApp ends the stream with 515 ("restart required") right after every pairing, and
// Baileys logs that at error level: it is the expected way to the restart, logged at info.
const RESTART_REQUIRED = '515'
const hooks = {
  logMethod (args, method, level) {
    const [fields, message] = args
    if (level >= 50 && message === 'stream errored out' && fields?.fullErrorNode?.attrs?.code === RESTART_REQUIRED) {
      return this.info(...args)
    }
    return method.apply(this, args)
  }
}
const logger = pino({ level: process.env.PAIRGATE_BAILEYS_LOG_LEVEL || 'warn', hooks }, pino.destination(2))
const replayAt = process.argv.indexOf('--replay')
const replays = replayAt > 0 ? JSON.parse(readFileSync(process.argv[replayAt + 1], 'utf8')) : null
// WhatsApp's endpoint, unless overridden (a proxy, or a local stand-in in tests).
const endpoint = process.env.PAIRGATE_BAILEYS_WS_URL ? { waWebSocketUrl: process.env.PAIRGATE_BAILEYS_WS_URL } : {}
const options = { logger, browser: ['pairgate', 'Chrome', '1.0.0'], markOnlineOnConnect: false, ...endpoint }
const sockets = new Map() // key -> {sock}
// key -> the auth state of its last socket, kept after the socket ends: Baileys' work under
// way then may still save credentials, which `discard` and `logout` silence.
const auths = new Map()

const warn = (key, what) => (error) => logger.warn({ key, message: error?.message }, what)
const send = (message) => process.stdout.write(JSON.stringify(message) + '\n')

async function authState (dir, cipher) {
  // Before pairing, Baileys writes routing info and keys: keep those in memory, so that
  // only a paired device has files, and write them all once it has paired.
  const { state, saveCreds, idle } = await useSealedAuthState(dir, cipher)
  const paired = existsSync(join(dir, 'creds.json'))
  const pending = {}
  let deferring = !paired
  let forgotten = false // logged out: pairgate deletes the files, nothing may write them again
  const keys = {
    get: async (type, ids) => {
      const found = await state.keys.get(type, ids)
      for (const id of ids) if (pending[type]?.[id] !== undefined) found[id] = pending[type][id]
      return found
    },
    set: async (data) => {
      if (forgotten) return
      if (!deferring) return state.keys.set(data)
      for (const [type, values] of Object.entries(data)) Object.assign((pending[type] ??= {}), values)
    }
  }
  const save = async () => { if (!deferring && !forgotten) await saveCreds() }
  const commit = async () => {
    if (forgotten) return
    deferring = false
    await state.keys.set(pending)
    if (!forgotten) await saveCreds()
  }
  // After a logout: no more writes, and those under way are done (a file written after
  // pairgate deleted the directory would bring a logged-out device's keys back).
  const forget = async () => { forgotten = true; await idle() }
  return { auth: { creds: state.creds, keys }, paired, save, commit, forget }
}

function replaySocket (steps, creds) {
  // Stands in for makeWASocket: replays recorded connection.update shapes.
  const ev = new EventEmitter()
  const ws = new EventEmitter() // the frames a step names (`frame`), as Baileys' socket emits them
  ev.on('creds.update', (update) => Object.assign(creds, update)) // as Baileys does, first
  let ended = false
  const end = (error) => {
    if (ended) return
    ended = true
    ev.emit('connection.update', { connection: 'close', lastDisconnect: { error, date: new Date() } })
  }
  ;(async () => {
    for (const step of steps) {
      await new Promise((resolve) => setTimeout(resolve, step.after ?? 0))
      if (ended && step.late && step.creds) ev.emit('creds.update', step.creds)
      if (ended) continue
      const update = { ...step.update }
      const error = update.lastDisconnect?.error
      if (error) {
        const boom = new Error(error.message)
        boom.isBoom = true
        boom.output = { statusCode: error.statusCode, payload: { ...error } }
        ended = update.connection === 'close'
        update.lastDisconnect = { error: boom, date: new Date() }
      }
      if (step.creds) ev.emit('creds.update', step.creds)
      if (step.frame) ws.emit('frame', step.frame)
      ev.emit('connection.update', update)
    }
  })()
  return {
    ev,
    ws,
    end,
    logout: async () => end(Object.assign(new Error('Intentional Logout'), { output: { statusCode: 401 } })),
    requestPairingCode: async () => 'ABCD1234'
  }
}

async function start ({ key, dir, phone, proxy, cipher }) {
  stop({ key })
  const state = await authState(dir, cipher)
  auths.set(key, state)
  const script = replays?.[key]?.shift()
  const sock = replays
    ? replaySocket(script ?? [], state.auth.creds)
    : makeWASocket({ ...options, ...proxyAgent(proxy), auth: state.auth })
  if (proxy && !replays) endWhenRefused(sock)
  watchPasskey(sock.ws, (options) => { if (sockets.get(key) === handle) send({ event: 'passkey_required', key, options }) })
  const handle = { sock, state }
  sockets.set(key, handle)
  const live = () => sockets.get(key) === handle
  let codes = 0
  sock.ev.on('creds.update', () => { state.save().catch(warn(key, 'saving credentials failed')) })
  // One update at a time: `closed` (515) must not overtake `paired` and its file writes.
  let updates = Promise.resolve()
  sock.ev.on('connection.update', (update) => { updates = updates.then(() => onUpdate(update)).catch(warn(key, 'connection update failed')) })
  const onUpdate = async (update) => {
    if (!live()) return
    if (update.qr) {
      const timeout = QR_SECONDS[Math.min(codes++, QR_SECONDS.length - 1)]
      send({ event: 'qr', key, code: update.qr, timeout, resumed: state.paired })
      if (codes === 1 && phone && !state.paired) requestCode(key, handle, phone)
    }
    if (update.isNewLogin) {
      await state.commit()
      if (live()) send({ event: 'paired', key })
    }
    if (update.connection === 'open') send({ event: 'connected', key })
    if (update.connection === 'close') {
      sockets.delete(key)
      const error = update.lastDisconnect?.error
      send({ event: 'closed', key, status: error?.output?.statusCode ?? null, message: String(error?.message ?? '') })
    }
  }
  return { paired: state.paired }
}

async function requestCode (key, handle, phone) {
  try {
    const code = await handle.sock.requestPairingCode(phone)
    if (sockets.get(key) === handle) {
      send({ event: 'pair_code', key, code: `${code.slice(0, 4)}-${code.slice(4)}`, timeout: PAIR_CODE_SECONDS })
    }
  } catch (error) {
    logger.warn({ key, message: error?.message }, 'pairing code request failed')
  }
}

function stop ({ key }) {
  const handle = sockets.get(key)
  sockets.delete(key) // silences the socket: nothing more is reported for it
  if (handle) handle.sock.end(undefined)
}

async function discard ({ key }) {
  stop({ key })
  await forgetAuth(key)
  return {}
}

async function forgetAuth (key) {
  const state = auths.get(key)
  auths.delete(key)
  await state?.forget()
}

async function logout (command) {
  try {
    return await unlink(command)
  } finally {
    await forgetAuth(command.key)
  }
}

async function unlink ({ key, dir, cipher, proxy }) {
  let handle = sockets.get(key)
  sockets.delete(key)
  if (!handle && dir && existsSync(join(dir, 'creds.json')) && !replays) {
    // Offline: connect with the credentials just long enough to unlink them.
    const state = await authState(dir, cipher)
    handle = { sock: makeWASocket({ ...options, ...proxyAgent(proxy), auth: state.auth }), state }
    if (proxy) endWhenRefused(handle.sock)
    handle.sock.ev.on('creds.update', () => { state.save().catch(warn(key, 'saving credentials failed')) })
    const opened = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), LOGOUT_CONNECT_MS)
      handle.sock.ev.on('connection.update', ({ connection }) => {
        if (connection === 'open' || connection === 'close') {
          clearTimeout(timer)
          resolve(connection === 'open')
        }
      })
    })
    if (!opened) {
      handle.sock.end(undefined)
      await handle.state.forget()
      return { unlinked: false }
    }
  }
  if (!handle) return { unlinked: false }
  try {
    await handle.sock.logout()
    return { unlinked: true }
  } catch (error) {
    handle.sock.end(undefined)
    return { unlinked: false, error: String(error?.message ?? error) }
  } finally {
    await handle.state?.forget()
  }
}

const commands = { start, stop, discard, logout }

async function run (command) {
  try {
    const result = await commands[command.cmd](command)
    send({ id: command.id, ok: true, ...result })
  } catch (error) {
    send({ id: command.id, ok: false, error: String(error?.message ?? error) })
  }
}

const queues = new Map() // key -> the promise of its last command: one command at a time per key

createInterface({ input: process.stdin }).on('line', (line) => {
  let command
  try {
    command = JSON.parse(line)
    if (typeof command?.cmd !== 'string') throw new Error('no command')
  } catch (error) {
    return send({ id: command?.id ?? null, ok: false, error: `not a command: ${error.message}` })
  }
  const queued = (queues.get(command.key) ?? Promise.resolve()).then(() => run(command))
  queues.set(command.key, queued)
  queued.then(() => { if (queues.get(command.key) === queued) queues.delete(command.key) })
}).on('close', () => {
  // pairgate has gone (or closed us): close every socket, keep the credentials.
  for (const key of [...sockets.keys()]) stop({ key })
  process.exit(0)
})

send({ event: 'ready', pid: process.pid })
