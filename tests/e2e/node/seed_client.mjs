// The seed's Scan-QR page, as a Node socket.io-client 4.x program, against a live pairgate
// started with --simulate.
//
//   node seed_client.mjs <serverUrl> <key> [--polling]
//
// Connects (websocket only by default; with --polling, socket.io-client's default transports:
// HTTP long-polling first, then the upgrade to websocket), emits the seed's exact
// `session.create`, records every event with its payload, decodes the first `session.qr`
// image itself (pngjs + jsQR), "scans" it through the simulator's HTTP endpoint and waits for
// `session.ready`. Then it prints one JSON line:
//
//   {"events": [[name, payload], ...], "ack": <ack of session.create>, "code": <QR text>,
//    "scan": <the scan endpoint's JSON answer>, "transports": ["polling", "websocket"]}
//
// and exits 0. Any error, refusal or a wait longer than 10 s: a message on stderr, exit 1.

import jsQR from "jsqr";
import { PNG } from "pngjs";
import { io } from "socket.io-client";

const STEP_TIMEOUT_MS = 10_000;
const PNG_DATA_URI = "data:image/png;base64,";

function usage() {
  process.stderr.write("usage: node seed_client.mjs <serverUrl> <key> [--polling]\n");
  process.exit(2);
}

const args = process.argv.slice(2);
const polling = args.includes("--polling");
const [serverUrl, key, ...rest] = args.filter((arg) => arg !== "--polling");
if (!serverUrl || !key || rest.length > 0) usage();

const events = [];
const transports = [];
let socket;
let failed = false;

function fail(message) {
  if (failed) return;
  failed = true;
  const recorded = JSON.stringify(events).slice(0, 2000);
  process.stderr.write(`seed_client: ${message}\nevents so far: ${recorded}\n`);
  socket?.disconnect();
  process.exit(1);
}

// Waiters are re-checked on every recorded event; each has its own 10 s deadline.
const waiters = new Set();

function settleWaiters() {
  for (const waiter of waiters) waiter();
}

function waitFor(what, predicate) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      waiters.delete(check);
      reject(new Error(`timed out after ${STEP_TIMEOUT_MS / 1000} s waiting for ${what}`));
    }, STEP_TIMEOUT_MS);
    function check() {
      const found = predicate();
      if (found !== undefined) {
        clearTimeout(timer);
        waiters.delete(check);
        resolve(found);
      }
    }
    waiters.add(check);
    check();
  });
}

function waitForEvent(name) {
  return waitFor(`"${name}"`, () => events.find(([event]) => event === name)?.[1]);
}

function decodeQr(dataUri) {
  if (typeof dataUri !== "string" || !dataUri.startsWith(PNG_DATA_URI)) {
    throw new Error(`session.qr is not a PNG data URI: ${String(dataUri).slice(0, 60)}`);
  }
  const png = PNG.sync.read(Buffer.from(dataUri.slice(PNG_DATA_URI.length), "base64"));
  const pixels = new Uint8ClampedArray(png.data.buffer, png.data.byteOffset, png.data.length);
  const decoded = jsQR(pixels, png.width, png.height);
  if (!decoded) throw new Error(`no QR code found in the ${png.width}x${png.height} PNG`);
  return decoded.data;
}

async function scan(code) {
  const url = `${serverUrl}/api/simulator/devices/${encodeURIComponent(key)}/scan`;
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ code }),
    signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
  });
  const body = await response.text();
  if (!response.ok) throw new Error(`scan answered ${response.status}: ${body}`);
  return JSON.parse(body);
}

async function main() {
  socket = io(serverUrl, {
    ...(polling ? {} : { transports: ["websocket"] }),
    reconnection: false,
    timeout: STEP_TIMEOUT_MS,
  });
  socket.onAny((name, ...payload) => {
    const data = payload.length === 1 ? payload[0] : payload;
    events.push([name, data]);
    if (name === "session.error") fail(`server sent session.error ${JSON.stringify(data)}`);
    settleWaiters();
  });
  socket.io.on("open", () => {
    const engine = socket.io.engine;
    transports.push(engine.transport.name);
    engine.on("upgrade", (transport) => {
      transports.push(transport.name);
      settleWaiters();
    });
  });

  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (error) => reject(new Error(`connect_error: ${error.message}`)));
  });
  socket.on("disconnect", (reason) => fail(`disconnected by the server: ${reason}`));

  const request = { key, name: "My Device", engine: "baileys" };
  let ack;
  try {
    ack = await socket.timeout(STEP_TIMEOUT_MS).emitWithAck("session.create", request);
  } catch (error) {
    throw new Error(`no acknowledgement for session.create: ${error.message}`);
  }
  if (ack?.ok !== true) throw new Error(`session.create refused: ${JSON.stringify(ack)}`);

  const qr = await waitForEvent("session.qr");
  const code = decodeQr(qr?.qr);
  const scanned = await scan(code);
  await waitForEvent("session.ready");
  if (polling) {
    // The upgrade is asynchronous; by now it has normally happened long ago.
    await waitFor("the upgrade to websocket", () =>
      transports.includes("websocket") ? true : undefined,
    );
  }

  socket.off("disconnect");
  socket.disconnect();
  const line = JSON.stringify({ events, ack, code, scan: scanned, transports });
  process.stdout.write(`${line}\n`, () => process.exit(0));
}

main().catch((error) => fail(error?.message ?? String(error)));
