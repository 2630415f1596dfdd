//! Who is in each chat room: the chat's own state, kept in Redis so that any
//! app-node can answer for any room.
//!
//! The cluster keeps a socket's rooms in its snapshot, but no app-node can ask
//! "who else is in this room?" of it cheaply, so the chat records members
//! itself: one hash per room, `P:chat:members:<room>`, field = socket id,
//! value = nickname. `join` adds the socket, `leave` and `disconnect` remove
//! it (an io-node that dies has its sockets' `disconnect` events written by
//! the cluster, so its members go too). Both are idempotent, so an event
//! handled twice after an app-node crash changes nothing.
//!
//! After each change the room hears a `members` event with the nicknames
//! present. Two app-nodes changing one room at once may publish their lists in
//! the other order, so every change also takes a number from the hash's own
//! counter (field [`VERSION_FIELD`]); clients keep the list with the highest
//! `version` and drop older ones. The hash expires [`TTL_SECONDS`] after its
//! last change, which bounds what a room left behind by a wiped cluster can
//! hold (a room whose members sit quiet that long forgets them: fine for a
//! demo). Lists name at most [`MAX_LISTED`] sockets (`complete` says whether
//! that was all of them); `total` counts them all.

use iocluster_ops::Redis;
use serde::Serialize;

/// Field of a room's hash holding its version counter (never a socket id:
/// those are `<io-node id>.<random>`).
pub const VERSION_FIELD: &str = "#version";

/// Seconds a room's hash lives after its last change.
pub const TTL_SECONDS: u64 = 7 * 24 * 3600;

/// Most sockets whose nicknames one `members` event carries.
pub const MAX_LISTED: usize = 200;

/// Adds (`ARGV[1]` = `add`) or removes a socket, bumps the version and
/// returns `{version, total, {nickname...}}` (at most `ARGV[4]` nicknames).
const SCRIPT: &str = r#"
local key, version_field = KEYS[1], ARGV[5]
if ARGV[1] == 'add' then
  redis.call('HSET', key, ARGV[2], ARGV[3])
else
  redis.call('HDEL', key, ARGV[2])
end
local version = redis.call('HINCRBY', key, version_field, 1)
redis.call('EXPIRE', key, ARGV[6])
local total = redis.call('HLEN', key) - 1
local limit = tonumber(ARGV[4])
local names = {}
local cursor = '0'
repeat
  local page = redis.call('HSCAN', key, cursor, 'COUNT', 100)
  cursor = page[1]
  local entries = page[2]
  for i = 1, #entries, 2 do
    if entries[i] ~= version_field and #names < limit then
      names[#names + 1] = entries[i + 1]
    end
  end
until cursor == '0' or #names >= limit
return {version, total, names}
"#;

/// The `members` event a room hears after a change.
#[derive(Debug, Serialize, PartialEq)]
pub struct Members {
    pub room: String,
    /// Distinct nicknames, sorted (one person in two tabs is listed once).
    pub members: Vec<String>,
    /// Sockets in the room, listed or not.
    pub total: u64,
    /// Whether `members` names every socket's nickname (false past
    /// [`MAX_LISTED`] sockets).
    pub complete: bool,
    /// Grows with every change of this room; clients keep the highest.
    pub version: u64,
}

impl Members {
    /// The list from the script's reply: nicknames sorted, each once.
    fn new(room: &str, version: u64, total: u64, mut members: Vec<String>) -> Members {
        let complete = members.len() as u64 >= total;
        members.sort();
        members.dedup();
        Members {
            room: room.to_owned(),
            members,
            total,
            complete,
            version,
        }
    }
}

/// The member lists of every room, under one key prefix.
#[derive(Clone)]
pub struct Rooms {
    redis: Redis,
    prefix: String,
    script: redis::Script,
}

impl Rooms {
    pub fn new(redis: Redis, prefix: &str) -> Rooms {
        Rooms {
            redis,
            prefix: prefix.to_owned(),
            script: redis::Script::new(SCRIPT),
        }
    }

    /// The hash of `room`'s members.
    pub fn key(&self, room: &str) -> String {
        format!("{}:chat:members:{room}", self.prefix)
    }

    /// Records socket `sid` as `nickname` in `room`; the room's list after.
    pub async fn add(&self, room: &str, sid: &str, nickname: &str) -> redis::RedisResult<Members> {
        self.change(room, "add", sid, nickname).await
    }

    /// Removes socket `sid` from `room`; the room's list after.
    pub async fn remove(&self, room: &str, sid: &str) -> redis::RedisResult<Members> {
        self.change(room, "remove", sid, "").await
    }

    async fn change(
        &self,
        room: &str,
        op: &str,
        sid: &str,
        nickname: &str,
    ) -> redis::RedisResult<Members> {
        let (version, total, nicknames): (u64, u64, Vec<String>) = self
            .script
            .key(self.key(room))
            .arg(op)
            .arg(sid)
            .arg(nickname)
            .arg(MAX_LISTED)
            .arg(VERSION_FIELD)
            .arg(TTL_SECONDS)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(Members::new(room, version, total, nicknames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicknames_are_sorted_and_listed_once() {
        let nicknames = ["cid", "ann", "cid"].map(String::from).to_vec();
        assert_eq!(
            Members::new("rust", 7, 3, nicknames),
            Members {
                room: "rust".into(),
                members: vec!["ann".into(), "cid".into()],
                total: 3,
                complete: true,
                version: 7,
            }
        );
    }

    #[test]
    fn a_list_cut_short_says_so() {
        let members = Members::new("rust", 1, 500, vec!["ann".into(); MAX_LISTED]);
        assert_eq!(members.members, vec!["ann".to_owned()]);
        assert!(!members.complete);
    }
}
