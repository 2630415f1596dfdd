//! `rooms`: many small rooms, every client publishing to its own room at a
//! low rate (the chat shape); with `--local-rooms` every room's clients are
//! on one server.

use serde_json::{Value, json};

use super::broadcast::broadcast_run;
use super::{Targets, connect_many};
use crate::stats::{Latency, Timeline};

/// The rooms of the `rooms` scenario: client `i` is on server `i % servers`
/// and the `k`-th client of a server is in that server's room
/// `k / size`. With one server group, rooms are runs of consecutive clients,
/// spread over every server the clients are.
#[derive(Clone, Copy)]
struct RoomPlan {
    clients: usize,
    size: usize,
    servers: usize,
}

impl RoomPlan {
    fn room_of(&self, i: usize) -> String {
        let (server, k) = (i % self.servers, i / self.servers);
        format!("room-{server}-{}", k / self.size)
    }

    /// How many clients are in client `i`'s room.
    fn members(&self, i: usize) -> u64 {
        let (server, k) = (i % self.servers, i / self.servers);
        let on_server = (self.clients + self.servers - 1 - server) / self.servers;
        let first = (k / self.size) * self.size;
        (on_server.min(first + self.size) - first) as u64
    }
}
/// Runs the `rooms` scenario.
pub async fn run(
    targets: Targets,
    concurrency: usize,
    clients: usize,
    room_size: usize,
    rate: f64,
    seconds: u64,
    local_rooms: bool,
) -> anyhow::Result<(Value, Timeline, Latency)> {
    let rooms = RoomPlan {
        clients,
        size: room_size.max(1),
        servers: if local_rooms { targets.urls.len() } else { 1 },
    };
    let room_of = move |i: usize| rooms.room_of(i);
    let all = connect_many(&targets, clients, concurrency, Some(&room_of)).await?;
    let sockets = all.iter().map(|(_, s)| s.clone()).collect();
    let publishers = all
        .iter()
        .enumerate()
        .map(|(i, (_, s))| (s.clone(), room_of(i)))
        .collect();
    let size_of = move |i: usize| rooms.members(i);
    let (mut result, timeline, latency) =
        broadcast_run(sockets, publishers, rate, seconds, 16, &size_of, true).await?;
    result["scenario"] = json!("rooms");
    result["clients"] = json!(clients);
    result["room_size"] = json!(room_size);
    result["local_rooms"] = json!(local_rooms);
    result["rate_per_client"] = json!(rate);
    drop(all);
    Ok((result, timeline, latency))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::RoomPlan;

    /// Every client's room size is the number of clients given that room,
    /// and local rooms never span two servers.
    #[test]
    fn room_plans_count_their_members() {
        for (clients, size, servers) in [(25, 10, 1), (25, 10, 2), (31, 4, 3), (7, 10, 4)] {
            let plan = RoomPlan {
                clients,
                size,
                servers,
            };
            let mut members: HashMap<String, (u64, Vec<usize>)> = HashMap::new();
            for i in 0..clients {
                let entry = members.entry(plan.room_of(i)).or_default();
                entry.0 += 1;
                entry.1.push(i % servers);
            }
            for i in 0..clients {
                let (count, on) = &members[&plan.room_of(i)];
                assert_eq!(
                    plan.members(i),
                    *count,
                    "{clients} {size} {servers} client {i}"
                );
                assert!(on.iter().all(|s| *s == on[0]));
                assert!(*count as usize <= size);
            }
        }
    }
}
