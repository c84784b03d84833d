//! Presence counted in Redis across nodes, crash-safe (G5).
//!
//! Keys (one hash tag, so a Redis Cluster keeps them on one shard and the scripts stay atomic);
//! a *field* is `<scope>:<user id>`, the scope being `*` (online) or a room id:
//! - `{socketchat:presence}:count`: field → connections on every node;
//! - `{socketchat:presence}:node:<instance>`: field → connections on that node instance;
//! - `{socketchat:presence}:list:<scope>`: sorted set of the scope's users, all scored 0 so
//!   they sort by member, `<username>\0<id>`: a page is one `ZRANGEBYLEX`;
//! - `{socketchat:presence}:name`: user id → username, while the user is online;
//! - `{socketchat:presence}:nodes`: sorted set of live instances, scored by their last
//!   heartbeat (Redis server time, ms);
//! - `{socketchat:presence}:seen`: sorted set of user id → when their last connection closed.
//!
//! Every change is one Lua script, so counts, lists and last-seen times move together. An
//! instance id is random per start, so a node that starts never touches counts another process
//! holds, not even those of an earlier run of itself. Each node heartbeats every `timeout / 5`
//! and reaps instances whose heartbeat is older than `timeout`: the reap script removes a dead
//! instance's contributions and its entry in one step, so when several nodes reap at once
//! exactly one of them does it (and announces the transitions).
//!
//! The node keeps its own counts in memory as well ([`Counts`]). When Redis lost them (restart,
//! or this node was reaped after a stall) or a call failed, the next upkeep writes them back
//! with the `sync` script, which moves the totals by the difference only.

use super::{Counts, Page, Presence, PresenceError, Scope, Status, Transition};
use crate::redis_client::RedisClient;
use crate::wire::UserRef;
use async_trait::async_trait;
use redis::Script;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const COUNT: &str = "{socketchat:presence}:count";
const NAME: &str = "{socketchat:presence}:name";
const NODES: &str = "{socketchat:presence}:nodes";
const SEEN: &str = "{socketchat:presence}:seen";
const NODE_PREFIX: &str = "{socketchat:presence}:node:";
const LIST_PREFIX: &str = "{socketchat:presence}:list:";

const NOW_MS: &str =
    "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)";

/// Lua helpers shared by the scripts: a field's scope and user id, a list member.
const HELPERS: &str = r"
local function split(field) local c = string.find(field, ':', 1, true) return string.sub(field, 1, c - 1), string.sub(field, c + 1) end
local function member(name, id) return name .. '\0' .. id end";

/// KEYS: count, name, node, nodes, seen. ARGV: instance, `1` (in) or `-1` (out), user id,
/// username, list prefix, scopes…. Returns the scopes that transitioned, or nil when the
/// instance is not registered (nothing changed; the node must write its counts back first).
static CHANGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NOW_MS} {HELPERS}
         if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then return false end
         local id, name, prefix = ARGV[3], ARGV[4], ARGV[5]
         local went = {{}}
         for i = 6, #ARGV do
           local scope = ARGV[i]
           local field = scope .. ':' .. id
           if ARGV[2] == '1' then
             redis.call('HINCRBY', KEYS[3], field, 1)
             if redis.call('HINCRBY', KEYS[1], field, 1) == 1 then
               redis.call('ZADD', prefix .. scope, 0, member(name, id))
               table.insert(went, scope)
             end
             if scope == '*' then redis.call('HSET', KEYS[2], id, name) end
           else
             local mine = tonumber(redis.call('HGET', KEYS[3], field) or '0')
             if mine > 0 then
               if mine == 1 then redis.call('HDEL', KEYS[3], field) else redis.call('HINCRBY', KEYS[3], field, -1) end
               if redis.call('HINCRBY', KEYS[1], field, -1) <= 0 then
                 redis.call('HDEL', KEYS[1], field)
                 redis.call('ZREM', prefix .. scope, member(name, id))
                 table.insert(went, scope)
                 if scope == '*' then
                   redis.call('HDEL', KEYS[2], id)
                   redis.call('ZADD', KEYS[5], 'GT', now, id)
                 end
               end
             end
           end
         end
         return went"
    ))
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

/// KEYS: count, name, node, nodes, seen. ARGV: instance, register (1/0), list prefix, then
/// (field, connections, username) triples: this instance's counts replace what Redis holds for
/// it; totals move by the difference. Returns `{went in, went out}`, each a flat list of
/// field, username pairs.
static SYNC: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NOW_MS} {HELPERS}
         local prefix = ARGV[3]
         local old = {{}}
         local flat = redis.call('HGETALL', KEYS[3])
         for i = 1, #flat, 2 do old[flat[i]] = tonumber(flat[i + 1]) end
         local new = {{}}
         for i = 4, #ARGV, 3 do new[ARGV[i]] = {{tonumber(ARGV[i + 1]), ARGV[i + 2]}} end
         for field, _ in pairs(old) do
           if new[field] == nil then
             local _, id = split(field)
             new[field] = {{0, redis.call('HGET', KEYS[2], id) or ''}}
           end
         end
         redis.call('DEL', KEYS[3])
         local on, off = {{}}, {{}}
         for field, v in pairs(new) do
           local scope, id = split(field)
           local before = tonumber(redis.call('HGET', KEYS[1], field) or '0')
           local after = before + v[1] - (old[field] or 0)
           if after <= 0 then
             redis.call('HDEL', KEYS[1], field)
             if before > 0 then
               redis.call('ZREM', prefix .. scope, member(v[2], id))
               if scope == '*' then
                 redis.call('HDEL', KEYS[2], id)
                 redis.call('ZADD', KEYS[5], 'GT', now, id)
               end
               table.insert(off, field) table.insert(off, v[2])
             end
           else
             redis.call('HSET', KEYS[1], field, after)
             if scope == '*' then redis.call('HSET', KEYS[2], id, v[2]) end
             if before <= 0 then
               redis.call('ZADD', prefix .. scope, 0, member(v[2], id))
               table.insert(on, field) table.insert(on, v[2])
             end
           end
           if v[1] > 0 then redis.call('HSET', KEYS[3], field, v[1]) end
         end
         if ARGV[2] == '1' then redis.call('ZADD', KEYS[4], now, ARGV[1]) else redis.call('ZREM', KEYS[4], ARGV[1]) end
         return {{on, off}}"
    ))
});

/// KEYS: count, name, nodes, seen. ARGV: timeout ms, node key prefix, list prefix. Removes
/// every instance whose heartbeat is older than the timeout; its users who went out of a scope
/// are returned as a flat list of field, username pairs. Users who went offline are last seen
/// at the dead instance's last heartbeat.
static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NOW_MS} {HELPERS}
         local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[1]), 'WITHSCORES')
         local off = {{}}
         for d = 1, #dead, 2 do
           local instance, beat = dead[d], dead[d + 1]
           local key = ARGV[2] .. instance
           local flat = redis.call('HGETALL', key)
           local names = {{}}
           for i = 1, #flat, 2 do
             local _, id = split(flat[i])
             if names[id] == nil then names[id] = redis.call('HGET', KEYS[2], id) or '' end
           end
           for i = 1, #flat, 2 do
             local field = flat[i]
             local scope, id = split(field)
             if redis.call('HINCRBY', KEYS[1], field, -tonumber(flat[i + 1])) <= 0 then
               redis.call('HDEL', KEYS[1], field)
               redis.call('ZREM', ARGV[3] .. scope, member(names[id], id))
               if scope == '*' then
                 redis.call('HDEL', KEYS[2], id)
                 redis.call('ZADD', KEYS[4], 'GT', beat, id)
               end
               table.insert(off, field) table.insert(off, names[id])
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
    mine: Counts,
    /// A write failed or Redis lost this node's counts: the next upkeep writes them back.
    dirty: AtomicBool,
}

fn err(e: redis::RedisError) -> PresenceError {
    PresenceError(e.to_string())
}

/// Transitions from a flat list of field, username pairs.
fn transitions(flat: &[String], online: bool) -> Vec<Transition> {
    flat.chunks(2)
        .filter_map(|pair| {
            let [field, username] = pair else { return None };
            let (scope, id) = field.split_once(':')?;
            Some(Transition {
                scope: Scope::parse(scope)?,
                user: UserRef { id: id.parse().ok()?, username: username.clone() },
                online,
            })
        })
        .collect()
}

/// A list member's user: `<username>\0<id>`.
fn list_member(member: &str) -> Option<UserRef> {
    let (username, id) = member.split_once('\0')?;
    Some(UserRef { id: id.parse().ok()?, username: username.to_owned() })
}

impl RedisPresence {
    /// Presence for one node instance; nodes silent for `timeout` are reaped.
    pub fn new(conn: RedisClient, node_id: &str, timeout: Duration) -> Self {
        let instance = format!("{node_id}-{}", hex::encode(rand::random::<[u8; 6]>()));
        let node_key = format!("{NODE_PREFIX}{instance}");
        Self { conn, instance, node_key, timeout, mine: Counts::default(), dirty: AtomicBool::new(true) }
    }

    /// Writes this node's counts to Redis (registering it, or removing it when `register` is
    /// false); returns the transitions.
    async fn sync(&self, register: bool) -> Result<Vec<Transition>, PresenceError> {
        let mut invocation = SYNC.key(COUNT);
        invocation.key(NAME).key(&self.node_key).key(NODES).key(SEEN);
        invocation.arg(&self.instance).arg(if register { 1 } else { 0 }).arg(LIST_PREFIX);
        if register {
            for (scope, user, n) in self.mine.all() {
                invocation.arg(format!("{}:{}", scope.key(), user.id)).arg(n).arg(&user.username);
            }
        }
        let (on, off): (Vec<String>, Vec<String>) =
            invocation.invoke_async(&mut self.conn.clone()).await.map_err(err)?;
        self.dirty.store(false, Ordering::Relaxed);
        let mut went = transitions(&on, true);
        went.extend(transitions(&off, false));
        Ok(went)
    }

    /// Counts `user` in or out of `scopes` in Redis after the node's own share changed.
    async fn change(&self, user: &UserRef, scopes: &[Scope], online: bool) -> Result<Vec<Transition>, PresenceError> {
        self.mine.change(user, scopes, online);
        let mut invocation = CHANGE.key(COUNT);
        invocation.key(NAME).key(&self.node_key).key(NODES).key(SEEN);
        invocation.arg(&self.instance).arg(if online { 1 } else { -1 }).arg(user.id).arg(&user.username);
        invocation.arg(LIST_PREFIX);
        for scope in scopes {
            invocation.arg(scope.key());
        }
        let result: redis::RedisResult<Option<Vec<String>>> = invocation.invoke_async(&mut self.conn.clone()).await;
        match result {
            Ok(Some(scopes)) => Ok(scopes
                .iter()
                .filter_map(|key| Scope::parse(key))
                .map(|scope| Transition { scope, user: user.clone(), online })
                .collect()),
            Ok(None) => self.sync(true).await,
            Err(e) => {
                self.dirty.store(true, Ordering::Relaxed);
                Err(err(e))
            }
        }
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn enter(&self, user: &UserRef, scopes: &[Scope]) -> Result<Vec<Transition>, PresenceError> {
        self.change(user, scopes, true).await
    }

    async fn exit(&self, user: &UserRef, scopes: &[Scope]) -> Result<Vec<Transition>, PresenceError> {
        self.change(user, scopes, false).await
    }

    async fn page(&self, scope: Scope, after: Option<&str>, limit: usize) -> Result<Page, PresenceError> {
        let key = format!("{LIST_PREFIX}{}", scope.key());
        // Members are `<username>\0<id>`: everything of `after` sorts below `<after>\x01`.
        let start = after.map_or_else(|| "-".to_owned(), |name| format!("({name}\x01"));
        let (online, members): (u64, Vec<String>) = redis::pipe()
            .cmd("ZCARD")
            .arg(&key)
            .cmd("ZRANGEBYLEX")
            .arg(&key)
            .arg(start)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(err)?;
        let mut users: Vec<UserRef> = members.iter().filter_map(|m| list_member(m)).collect();
        let more = users.len() > limit;
        users.truncate(limit);
        Ok(Page { online, users: users.into(), more })
    }

    async fn status(&self, ids: &[u64]) -> Result<Vec<Status>, PresenceError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let fields: Vec<String> = ids.iter().map(|id| format!("*:{id}")).collect();
        let (counts, seen): (Vec<Option<u64>>, Vec<Option<f64>>) = redis::pipe()
            .cmd("HMGET")
            .arg(COUNT)
            .arg(&fields)
            .cmd("ZMSCORE")
            .arg(SEEN)
            .arg(ids)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(err)?;
        Ok(ids
            .iter()
            .zip(counts.iter().zip(&seen))
            .map(|(&id, (count, seen))| {
                let online = count.is_some_and(|n| n > 0);
                Status { id, online, last_seen_ms: if online { None } else { seen.map(|ms| ms as u64) } }
            })
            .collect())
    }

    fn upkeep_every(&self) -> Duration {
        self.timeout / 5
    }

    /// Heartbeat (writing the counts back when needed), then reap dead instances.
    async fn upkeep(&self) -> Result<Vec<Transition>, PresenceError> {
        let mut went = Vec::new();
        let alive: i64 =
            HEARTBEAT.key(NODES).arg(&self.instance).invoke_async(&mut self.conn.clone()).await.map_err(|e| {
                self.dirty.store(true, Ordering::Relaxed);
                err(e)
            })?;
        if alive == 0 || self.dirty.load(Ordering::Relaxed) {
            if alive == 0 {
                tracing::warn!(instance = %self.instance, "presence: this node was not registered; writing its counts back");
            }
            went.extend(self.sync(true).await?);
        }
        let reaped: Vec<String> = REAP
            .key(COUNT)
            .key(NAME)
            .key(NODES)
            .key(SEEN)
            .arg(self.timeout.as_millis() as u64)
            .arg(NODE_PREFIX)
            .arg(LIST_PREFIX)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(err)?;
        let reaped = transitions(&reaped, false);
        if !reaped.is_empty() {
            let users = reaped.iter().filter(|t| t.scope == Scope::Online).count();
            tracing::info!(users_offline = users, "presence: reaped a dead node");
        }
        went.extend(reaped);
        Ok(went)
    }

    async fn leave(&self) -> Result<Vec<Transition>, PresenceError> {
        self.sync(false).await
    }
}
