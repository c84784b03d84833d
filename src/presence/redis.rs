//! Presence counted in Redis across nodes, crash-safe (G5).
//!
//! Keys (one hash tag, so a Redis Cluster keeps them on one shard and the scripts stay atomic):
//! - `{socketchat:presence}:count`: user id → connections on every node;
//! - `{socketchat:presence}:name`: user id → username, while the count is positive;
//! - `{socketchat:presence}:node:<instance>`: user id → connections on that node instance;
//! - `{socketchat:presence}:nodes`: sorted set of live instances, scored by their last
//!   heartbeat (Redis server time, ms).
//!
//! Every change is one Lua script, so counts move atomically. An instance id is random per
//! start, so a node that starts never touches counts another process holds, not even those of
//! an earlier run of itself. Each node heartbeats every `timeout / 5` and reaps instances whose
//! heartbeat is older than `timeout`: the reap script removes a dead instance's contributions
//! and its entry in one step, so when several nodes reap at once exactly one of them does it
//! (and announces who went offline).
//!
//! The node keeps its own counts in memory as well ([`LocalPresence`]). When Redis lost them
//! (restart, or this node was reaped after a stall) or a call failed, the next upkeep writes
//! them back with the `sync` script, which moves the totals by the difference only.

use super::{LocalPresence, Presence, PresenceError};
use crate::redis_client::RedisClient;
use crate::wire::{PresenceEvent, UserRef};
use async_trait::async_trait;
use redis::Script;
use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const COUNT: &str = "{socketchat:presence}:count";
const NAME: &str = "{socketchat:presence}:name";
const NODES: &str = "{socketchat:presence}:nodes";
const NODE_PREFIX: &str = "{socketchat:presence}:node:";

/// The script returns this when the calling instance is not registered (reaped, or Redis lost
/// its data): the node must write its counts back first.
const UNREGISTERED: i64 = -2;

const NOW_MS: &str =
    "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)";

/// KEYS: count, name, node, nodes. ARGV: user id, username, instance. Returns the new total.
static CONNECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if not redis.call('ZSCORE', KEYS[4], ARGV[3]) then return -2 end
         redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
         redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
         return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)",
    )
});

/// KEYS: count, name, node, nodes. ARGV: user id, instance. Returns the new total, -1 when this
/// instance did not count the user (nothing changed).
static DISCONNECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if not redis.call('ZSCORE', KEYS[4], ARGV[2]) then return -2 end
         local mine = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
         if mine <= 0 then return -1 end
         if mine == 1 then redis.call('HDEL', KEYS[3], ARGV[1]) else redis.call('HINCRBY', KEYS[3], ARGV[1], -1) end
         local total = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
         if total <= 0 then
           redis.call('HDEL', KEYS[1], ARGV[1])
           redis.call('HDEL', KEYS[2], ARGV[1])
           return 0
         end
         return total",
    )
});

/// KEYS: nodes. ARGV: instance. Refreshes the heartbeat; 0 when the instance is not registered.
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}
         if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
         redis.call('ZADD', KEYS[1], now, ARGV[1])
         return 1"
    ))
});

/// KEYS: count, name, node, nodes. ARGV: instance, register (1/0), then (user id, connections,
/// username) triples: this instance's counts replace what Redis holds for it; totals move by
/// the difference. Returns `{went online ids, went offline ids}`.
static SYNC: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}
         local old = {{}}
         local flat = redis.call('HGETALL', KEYS[3])
         for i = 1, #flat, 2 do old[flat[i]] = tonumber(flat[i + 1]) end
         local new = {{}}
         for i = 3, #ARGV, 3 do new[ARGV[i]] = {{tonumber(ARGV[i + 1]), ARGV[i + 2]}} end
         for id, _ in pairs(old) do if new[id] == nil then new[id] = {{0, false}} end end
         redis.call('DEL', KEYS[3])
         local on, off = {{}}, {{}}
         for id, v in pairs(new) do
           local delta = v[1] - (old[id] or 0)
           local before = tonumber(redis.call('HGET', KEYS[1], id) or '0')
           local after = before + delta
           if after <= 0 then
             redis.call('HDEL', KEYS[1], id)
             redis.call('HDEL', KEYS[2], id)
             if before > 0 then table.insert(off, id) end
           else
             redis.call('HSET', KEYS[1], id, after)
             if v[2] then redis.call('HSET', KEYS[2], id, v[2]) end
             if before <= 0 then table.insert(on, id) end
           end
           if v[1] > 0 then redis.call('HSET', KEYS[3], id, v[1]) end
         end
         if ARGV[2] == '1' then redis.call('ZADD', KEYS[4], now, ARGV[1]) else redis.call('ZREM', KEYS[4], ARGV[1]) end
         return {{on, off}}"
    ))
});

/// KEYS: count, name, nodes. ARGV: timeout ms, node key prefix. Removes every instance whose
/// heartbeat is older than the timeout; returns `{id, username, …}` of users who went offline.
static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}
         local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[1]))
         local off = {{}}
         for _, instance in ipairs(dead) do
           local key = ARGV[2] .. instance
           local flat = redis.call('HGETALL', key)
           for i = 1, #flat, 2 do
             local total = redis.call('HINCRBY', KEYS[1], flat[i], -tonumber(flat[i + 1]))
             if total <= 0 then
               local name = redis.call('HGET', KEYS[2], flat[i])
               redis.call('HDEL', KEYS[1], flat[i])
               redis.call('HDEL', KEYS[2], flat[i])
               table.insert(off, flat[i])
               table.insert(off, name or '')
             end
           end
           redis.call('DEL', key)
           redis.call('ZREM', KEYS[3], instance)
         end
         return off"
    ))
});

/// The cluster's [`Presence`].
pub struct RedisPresence {
    conn: RedisClient,
    instance: String,
    node_key: String,
    timeout: Duration,
    mine: LocalPresence,
    /// A write failed or Redis lost this node's counts: the next upkeep writes them back.
    dirty: AtomicBool,
}

fn err(e: redis::RedisError) -> PresenceError {
    PresenceError(e.to_string())
}

impl RedisPresence {
    /// Presence for one node instance; nodes silent for `timeout` are reaped.
    pub fn new(conn: RedisClient, node_id: &str, timeout: Duration) -> Self {
        let instance = format!("{node_id}-{}", hex::encode(rand::random::<[u8; 6]>()));
        let node_key = format!("{NODE_PREFIX}{instance}");
        Self { conn, instance, node_key, timeout, mine: LocalPresence::default(), dirty: AtomicBool::new(true) }
    }

    /// Writes this node's counts to Redis (registering it, or removing it when `register` is
    /// false); returns the transitions.
    async fn sync(&self, register: bool) -> Result<Vec<PresenceEvent>, PresenceError> {
        let counts = self.mine.counts();
        let mut invocation = SYNC.key(COUNT);
        invocation.key(NAME).key(&self.node_key).key(NODES).arg(&self.instance).arg(if register { 1 } else { 0 });
        let mut names = HashMap::new();
        for (user, n) in &counts {
            if register {
                invocation.arg(user.id).arg(*n).arg(&user.username);
            }
            names.insert(user.id.to_string(), user.clone());
        }
        let (on, off): (Vec<String>, Vec<String>) =
            invocation.invoke_async(&mut self.conn.clone()).await.map_err(err)?;
        self.dirty.store(false, Ordering::Relaxed);
        let mut events = Vec::new();
        for (ids, online) in [(on, true), (off, false)] {
            for id in ids {
                let user = names
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| UserRef { id: id.parse().unwrap_or(0), username: String::new() });
                events.push(PresenceEvent { user, online });
            }
        }
        Ok(events)
    }

    /// The new total a change script returned, or `None` when this node was not registered
    /// (its counts must be written back first). A failed call marks the counts for the next
    /// upkeep.
    fn registered(&self, result: redis::RedisResult<i64>) -> Result<Option<i64>, PresenceError> {
        match result {
            Ok(UNREGISTERED) => Ok(None),
            Ok(total) => Ok(Some(total)),
            Err(e) => {
                self.dirty.store(true, Ordering::Relaxed);
                Err(err(e))
            }
        }
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn connect(&self, user: &UserRef) -> Result<Vec<PresenceEvent>, PresenceError> {
        self.mine.add(user);
        let result = CONNECT
            .key(COUNT)
            .key(NAME)
            .key(&self.node_key)
            .key(NODES)
            .arg(user.id)
            .arg(&user.username)
            .arg(&self.instance)
            .invoke_async(&mut self.conn.clone())
            .await;
        match self.registered(result)? {
            Some(total) => {
                Ok(if total == 1 { vec![PresenceEvent { user: user.clone(), online: true }] } else { vec![] })
            }
            None => self.sync(true).await,
        }
    }

    async fn disconnect(&self, user: &UserRef) -> Result<Vec<PresenceEvent>, PresenceError> {
        self.mine.remove(user);
        let result = DISCONNECT
            .key(COUNT)
            .key(NAME)
            .key(&self.node_key)
            .key(NODES)
            .arg(user.id)
            .arg(&self.instance)
            .invoke_async(&mut self.conn.clone())
            .await;
        match self.registered(result)? {
            Some(0) => Ok(vec![PresenceEvent { user: user.clone(), online: false }]),
            Some(_) => Ok(vec![]),
            None => self.sync(true).await,
        }
    }

    async fn online(&self) -> Result<Vec<UserRef>, PresenceError> {
        let names: HashMap<String, String> =
            redis::cmd("HGETALL").arg(NAME).query_async(&mut self.conn.clone()).await.map_err(err)?;
        let mut users: Vec<UserRef> =
            names.into_iter().filter_map(|(id, username)| Some(UserRef { id: id.parse().ok()?, username })).collect();
        users.sort_by(|a, b| a.username.cmp(&b.username).then(a.id.cmp(&b.id)));
        Ok(users)
    }

    fn upkeep_every(&self) -> Option<Duration> {
        Some(self.timeout / 5)
    }

    /// Heartbeat (writing the counts back when needed), then reap dead instances.
    async fn upkeep(&self) -> Result<Vec<PresenceEvent>, PresenceError> {
        let mut events = Vec::new();
        let alive: i64 =
            HEARTBEAT.key(NODES).arg(&self.instance).invoke_async(&mut self.conn.clone()).await.map_err(|e| {
                self.dirty.store(true, Ordering::Relaxed);
                err(e)
            })?;
        if alive == 0 || self.dirty.load(Ordering::Relaxed) {
            if alive == 0 {
                tracing::warn!(instance = %self.instance, "presence: this node was not registered; writing its counts back");
            }
            events.extend(self.sync(true).await?);
        }
        let reaped: Vec<String> = REAP
            .key(COUNT)
            .key(NAME)
            .key(NODES)
            .arg(self.timeout.as_millis() as u64)
            .arg(NODE_PREFIX)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(err)?;
        for pair in reaped.chunks(2) {
            if let [id, username] = pair
                && let Ok(id) = id.parse()
            {
                events.push(PresenceEvent { user: UserRef { id, username: username.clone() }, online: false });
            }
        }
        if !reaped.is_empty() {
            tracing::info!(users_offline = reaped.len() / 2, "presence: reaped a dead node");
        }
        Ok(events)
    }

    async fn leave(&self) -> Result<Vec<PresenceEvent>, PresenceError> {
        self.sync(false).await
    }
}
