// WhatsApp's passkey step, as far as Baileys 7.0.0-rc14 lets the sidecar see it: Baileys
// does not implement it (WhiskeySockets/Baileys#2684), so a pairing that WhatsApp holds
// for the account's passkey would just stall. The sidecar watches the frames it receives
// for a node whose tag names a passkey (whatsmeow's pair-passkey.go handles such nodes,
// with the WebAuthn request options in `passkey_request_options`) and reports it, so
// pairgate can tell the user and end the pairing truthfully. It cannot answer it.
const MAX_DEPTH = 6

function find (node, test, depth = 0) {
  if (!node || typeof node !== 'object' || depth > MAX_DEPTH) return null
  if (typeof node.tag === 'string' && test(node.tag)) return node
  if (!Array.isArray(node.content)) return null
  for (const child of node.content) {
    const found = find(child, test, depth + 1)
    if (found) return found
  }
  return null
}

function optionsOf (node) {
  const raw = (find(node, (tag) => tag === 'passkey_request_options') ?? node).content
  const text = typeof raw === 'string' ? raw : raw instanceof Uint8Array ? Buffer.from(raw).toString('utf8') : null
  try {
    const parsed = JSON.parse(text)
    if (parsed && typeof parsed === 'object') return parsed.publicKey ?? parsed
  } catch {}
  return { tag: node.tag, attrs: node.attrs ?? {} } // what there is to show of an unknown shape
}

// Calls `report(options)` once, for the first frame that carries a passkey request.
export function watchPasskey (ws, report) {
  let reported = false
  ws.on('frame', (frame) => {
    const node = reported ? null : find(frame, (tag) => tag.includes('passkey'))
    if (!node) return
    reported = true
    report(optionsOf(node))
  })
}
