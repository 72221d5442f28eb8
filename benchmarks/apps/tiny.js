// The same app for Node (served by PM2 in cluster mode): "/" says hello, "/cpu" runs chained
// SHA-256 rounds, every response names the worker pid in x-worker-pid.
"use strict";
const http = require("http");
const crypto = require("crypto");

const ROUNDS = parseInt(process.env.BENCH_CPU_ROUNDS || "1300", 10);
const PID = String(process.pid);
const HELLO = Buffer.from("hello, world\n");

function burn(rounds) {
  let digest = Buffer.from("prun");
  for (let i = 0; i < rounds; i++) {
    digest = crypto.createHash("sha256").update(digest).digest();
  }
  return digest;
}

const server = http.createServer((req, res) => {
  let body = HELLO;
  if (req.url === "/cpu" || req.url.startsWith("/cpu?")) {
    const match = /n=(\d+)/.exec(req.url);
    body = Buffer.from(burn(match ? parseInt(match[1], 10) : ROUNDS).toString("hex") + "\n");
  }
  res.writeHead(200, {
    "content-type": "text/plain",
    "content-length": body.length,
    "x-worker-pid": PID,
  });
  res.end(body);
});

server.keepAliveTimeout = 5000;
server.listen(parseInt(process.env.PORT || "8000", 10), "127.0.0.1");
