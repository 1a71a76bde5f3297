// The test upstream: answers every request with what it received as JSON (method, path, query,
// HTTP version, every header with its original case), and echoes WebSocket messages back.
// GET /__slow?ms=N waits N ms first (for upstream-timeout tests).
// Env: ECHO_PORT (0 = any free port), ECHO_HOST (127.0.0.1), ECHO_NAME (tells backends apart).
// When it listens it prints one JSON line to stdout: {"port": N}.
import http from 'node:http';

import { WebSocketServer } from 'ws';

const NAME = process.env.ECHO_NAME ?? 'echo';

const server = http.createServer(async (req, res) => {
  let bodyBytes = 0;
  for await (const chunk of req) bodyBytes += chunk.length;
  const url = new URL(req.url, 'http://placeholder');
  if (url.pathname === '/__slow') {
    await new Promise((r) => setTimeout(r, Number(url.searchParams.get('ms') ?? '1000')));
  }
  const headers = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
  const body = JSON.stringify({
    backend: NAME,
    method: req.method,
    url: req.url,
    path: req.url.split('?')[0],
    query: url.search ? url.search.slice(1) : null,
    httpVersion: req.httpVersion,
    headers,
    bodyBytes,
    remoteAddress: req.socket.remoteAddress,
  });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});

const wss = new WebSocketServer({ server });
wss.on('connection', (ws, req) => {
  ws.send(JSON.stringify({ backend: NAME, path: req.url, hello: true }));
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});

server.listen(Number(process.env.ECHO_PORT ?? '0'), process.env.ECHO_HOST ?? '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
