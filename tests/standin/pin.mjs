// Test-only preload for the Baileys sidecar (`NODE_OPTIONS=--import <this file>`), loaded by
// tests/e2e/test_baileys_standin.py and nothing else: pairgate's code never names it.
//
// It makes exactly one change to Baileys: WA_CERT_DETAILS.PUBLIC_KEY (the root WhatsApp's
// Noise certificate chain is checked against) becomes the stand-in's root key. Guarded twice:
// it applies only when STANDIN_CERT_KEY is set AND PAIRGATE_BAILEYS_WS_URL points at a
// loopback address; with a key but any other endpoint it refuses to let the process start.
// So a production configuration (no preload; or WhatsApp's own endpoint) can never trust it.
//
// Nothing else: Baileys' QR timers (60 s, then 20 s per ref) run as they are. Tests that
// need no rotation scan the first code; the schedule and the refs running out are played
// once, on the real timers, while the other tests run (tests/standin/README.md says why).
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const BAILEYS = join(here, '..', '..', 'adapters', 'engines', 'baileys', 'sidecar',
  'node_modules', '@whiskeysockets', 'baileys', 'lib', 'index.js')
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1'])

const key = process.env.STANDIN_CERT_KEY
if (key) {
  let host = ''
  try { host = new URL(process.env.PAIRGATE_BAILEYS_WS_URL ?? '').hostname } catch {}
  if (!LOOPBACK.has(host)) {
    process.stderr.write('STANDIN_CERT_KEY is for a loopback stand-in only; refusing to start\n')
    process.exit(70)
  }
  // The same module instance the sidecar imports: one file URL, one ESM record.
  const { WA_CERT_DETAILS } = await import(pathToFileURL(BAILEYS).href)
  WA_CERT_DETAILS.PUBLIC_KEY = Buffer.from(key, 'hex')

}
