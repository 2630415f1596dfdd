//! Socket.IO packets as a client may send them. `parse` and `decode` never
//! panic; a packet `decode` accepts is encoded back by `encode` into a packet
//! that decodes to the same parts.
#![no_main]

use iocluster_protocol::socketio;
use libfuzzer_sys::fuzz_target;

const MAX_ATTACHMENTS: usize = 10;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = socketio::parse(text, MAX_ATTACHMENTS);
    let Ok(packet) = socketio::decode(text, MAX_ATTACHMENTS) else {
        return;
    };
    assert!(packet.attachments <= MAX_ATTACHMENTS);
    let again = socketio::encode(
        packet.kind,
        packet.nsp,
        packet.attachments,
        packet.id,
        packet.data,
    );
    let decoded = socketio::decode(&again, MAX_ATTACHMENTS)
        .unwrap_or_else(|error| panic!("{again:?} from {text:?} does not decode: {error}"));
    assert_eq!(decoded.kind, packet.kind);
    assert_eq!(decoded.nsp, packet.nsp);
    assert_eq!(decoded.attachments, packet.attachments);
    assert_eq!(decoded.id, packet.id);
    assert_eq!(decoded.data, packet.data);
});
