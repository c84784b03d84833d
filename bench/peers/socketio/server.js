// The Socket.IO reference peer: the system SocketChat replaces, written by us from its
// description so that the benchmarks can run both side by side (bench/compare).
//
// What it is, as that system was described: Express + Socket.IO v4 + @socket.io/redis-adapter
// + pg. The JWT comes from the `token` cookie at the handshake; a message is stored with
// `INSERT … ON CONFLICT DO NOTHING` before `io.to(room).emit`; presence is a Redis hash bumped
// with `HINCRBY`. Everything else is left at the libraries' defaults, as a typical team would:
// no tuning beyond what the description says.
//
// Env: PORT (default 3000), DATABASE_URL, REDIS_URL, JWT_SECRET (all required but PORT).
//
// Events (all the benchmark scenarios need):
//   join  (room, ack)            joins a Socket.IO room; ack({ok: true})
//   send  ({room, id, text}, ack) stores the message, emits `message` to the room, then
//                                 ack({ok: true, seq}) — seq is the row id (one sequence for
//                                 all rooms, so it is not consecutive per room)
//   message (server → client)    {room, seq, id, sender, name, text, sentAt}

'use strict';

const http = require('node:http');
const express = require('express');
const jwt = require('jsonwebtoken');
const { Pool } = require('pg');
const { createClient } = require('redis');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');

const PORT = Number(process.env.PORT || 3000);
const { DATABASE_URL, REDIS_URL, JWT_SECRET } = process.env;
if (!DATABASE_URL || !REDIS_URL || !JWT_SECRET) {
  console.error('DATABASE_URL, REDIS_URL and JWT_SECRET are required');
  process.exit(1);
}

const pool = new Pool({ connectionString: DATABASE_URL });

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS messages (
    id            bigserial PRIMARY KEY,
    room          text        NOT NULL,
    sender        bigint      NOT NULL,
    client_msg_id text        NOT NULL,
    text          text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (room, sender, client_msg_id)
  )`;

const INSERT = `
  INSERT INTO messages (room, sender, client_msg_id, text) VALUES ($1, $2, $3, $4)
  ON CONFLICT DO NOTHING
  RETURNING id, created_at`;

// The value of cookie `name` in a Cookie header, or undefined.
function cookieValue(header, name) {
  for (const part of (header || '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      return decodeURIComponent(part.slice(eq + 1).trim());
    }
  }
  return undefined;
}

async function main() {
  await pool.query(SCHEMA);

  const pubClient = createClient({ url: REDIS_URL });
  const subClient = pubClient.duplicate();
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const app = express();
  app.get('/healthz', (_req, res) => res.send('ok'));
  const server = http.createServer(app);
  const io = new Server(server);
  // Every emit goes through Redis pub/sub, as with several nodes (here there is one).
  io.adapter(createAdapter(pubClient, subClient));

  // Handshake: a valid HS256 token in the `token` cookie, or the connection is refused.
  io.use((socket, next) => {
    const token = cookieValue(socket.handshake.headers.cookie, 'token');
    if (!token) return next(new Error('unauthorized'));
    jwt.verify(token, JWT_SECRET, { algorithms: ['HS256'] }, (err, claims) => {
      if (err) return next(new Error('unauthorized'));
      socket.data.user = { id: Number(claims.sub), name: claims.name };
      next();
    });
  });

  io.on('connection', (socket) => {
    const user = socket.data.user;
    pubClient.hIncrBy('presence', String(user.id), 1).catch((e) => console.error('presence', e.message));
    socket.on('disconnect', () => {
      pubClient.hIncrBy('presence', String(user.id), -1).catch((e) => console.error('presence', e.message));
    });

    socket.on('join', (room, ack) => {
      if (typeof room !== 'string' || room.length === 0) return ack?.({ ok: false, error: 'bad room' });
      socket.join(room);
      ack?.({ ok: true });
    });

    socket.on('send', async (msg, ack) => {
      const { room, id, text } = msg || {};
      if (typeof room !== 'string' || typeof id !== 'string' || typeof text !== 'string') {
        return ack?.({ ok: false, error: 'bad message' });
      }
      if (!socket.rooms.has(room)) return ack?.({ ok: false, error: 'not in room' });
      try {
        const result = await pool.query(INSERT, [room, user.id, id, text]);
        if (result.rowCount === 0) {
          // A retry of a message already stored: it was delivered the first time.
          return ack?.({ ok: true, duplicate: true });
        }
        const { id: seq, created_at: createdAt } = result.rows[0];
        io.to(room).emit('message', {
          room,
          seq: Number(seq),
          id,
          sender: user.id,
          name: user.name,
          text,
          sentAt: createdAt.getTime(),
        });
        ack?.({ ok: true, seq: Number(seq) });
      } catch (e) {
        console.error('send', e.message);
        ack?.({ ok: false, error: 'store failed' });
      }
    });
  });

  server.listen(PORT, '127.0.0.1', () => console.log(`socket.io peer listening on 127.0.0.1:${PORT}`));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
