// The Socket.IO relay baseline for bench.fanout: what a Node developer would write instead of
// rowcast. One pg connection LISTENs on a channel; each notification's payload (a row as JSON) is
// io.emit'ted to every connected client. At-most-once, no filters, no resume, no auth.
//
//   node relay.js --database-url URL --port 8091 [--channel bench_rows]
// GET /healthz answers 200 once the LISTEN is in place (the benchmark waits for it).

"use strict";

const http = require("http");
const { Client } = require("pg");
const { Server } = require("socket.io");

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const url = option("database-url", process.env.DATABASE_URL);
const port = Number(option("port", "8091"));
const channel = option("channel", "bench_rows");
let listening = false;

const server = http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(listening ? 200 : 503, { "content-type": "application/json" });
    res.end(JSON.stringify({ listening }));
    return;
  }
  res.writeHead(404);
  res.end();
});
const io = new Server(server, { transports: ["websocket", "polling"], serveClient: false });

async function main() {
  const pg = new Client({ connectionString: url });
  await pg.connect();
  pg.on("notification", (msg) => io.emit("change", JSON.parse(msg.payload)));
  pg.on("error", (err) => {
    console.error(`pg: ${err.message}`);
    process.exit(1);
  });
  await pg.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
  listening = true;
  server.listen(port, "127.0.0.1");
  const stop = () => {
    io.close();
    pg.end().finally(() => process.exit(0));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
