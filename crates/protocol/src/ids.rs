//! Session and socket ids: `<node id>.<random>`.
//!
//! Engine.IO session ids and Socket.IO socket ids both start with the id of the
//! io-node that holds the client, so a command for one client goes straight to
//! that node's channel without a lookup. The random part is the caller's business
//! (the io-node draws it from a CSPRNG); this module only checks and splits ids.

/// The longest node id accepted.
pub const MAX_NODE_ID_LEN: usize = 32;

/// Whether `id` can name an io-node or app-node: 1 to 32 of `[A-Za-z0-9_-]`.
pub fn is_valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Joins a node id and a random part into a session or socket id.
pub fn make(node: &str, random: &str) -> String {
    let mut id = String::with_capacity(node.len() + 1 + random.len());
    id.push_str(node);
    id.push('.');
    id.push_str(random);
    id
}

/// The io-node that holds the client named by `sid`, if `sid` is well formed.
pub fn node_of(sid: &str) -> Option<&str> {
    let (node, random) = sid.split_once('.')?;
    (is_valid_node_id(node) && !random.is_empty()).then_some(node)
}

/// Rooms whose names start with this are the cluster's own: the io-node puts
/// every socket admitted as a user in `$user:<user id>`.
pub const RESERVED_ROOM_PREFIX: char = '$';

/// The room holding every socket of a user, in each namespace.
pub fn user_room(user: &str) -> String {
    format!("$user:{user}")
}

/// The user whose room `room` is, if it is a user's room.
pub fn user_of_room(room: &str) -> Option<&str> {
    room.strip_prefix("$user:")
}

/// The user a socket belongs to, from its rooms.
pub fn user_of<'a>(rooms: impl IntoIterator<Item = &'a String>) -> Option<&'a str> {
    rooms.into_iter().find_map(|room| user_of_room(room))
}

/// Whether `id` can name a user: 1 to 128 characters, no control characters.
pub fn is_valid_user_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && !id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_node() {
        let sid = make("io-1", "AbC_d-9");
        assert_eq!(sid, "io-1.AbC_d-9");
        assert_eq!(node_of(&sid), Some("io-1"));
        assert_eq!(node_of("nodot"), None);
        assert_eq!(node_of(".x"), None);
        assert_eq!(node_of("a."), None);
        assert_eq!(node_of("a b.x"), None);
        assert!(!is_valid_node_id(&"x".repeat(33)));
    }
}
