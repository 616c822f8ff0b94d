// A device's proxy as Baileys takes it: an agent for its websocket to WhatsApp. The URL
// (checked by pairgate) may carry credentials: it is never logged.
import { SocksProxyAgent } from 'socks-proxy-agent'
import { HttpsProxyAgent } from 'https-proxy-agent'

export function proxyAgent (url) {
  if (!url) return {}
  // socks5h: the proxy resolves WhatsApp's host name, as whatsmeow's SOCKS5 dialer has it
  // do, so the name is looked up where the proxy is and never leaks from here.
  if (/^socks5:/i.test(url)) return { agent: new SocksProxyAgent(url.replace(/^socks5:/i, 'socks5h:')) }
  return { agent: new HttpsProxyAgent(url) }
}

// A proxy that refuses the tunnel answers with an HTTP status: `ws` hands that response to
// its listeners and Baileys has none that ends the socket, so it would wait for ever.
export function endWhenRefused (sock) {
  sock.ws.on('unexpected-response', (request, response) => {
    sock.end(new Error(`the proxy answered ${response.statusCode} ${response.statusMessage ?? ''}`.trim()))
  })
}
