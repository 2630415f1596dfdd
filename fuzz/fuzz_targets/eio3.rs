//! Engine.IO v3 (socket.io-client 2.x, io-nodes with `allow_eio3`): the
//! long-polling payloads a client may POST, text or binary, and WebSocket
//! binary frames. Decoding never panics, and the packets of a text payload,
//! written back as a payload, decode to the same packets.
#![no_main]

use iocluster_protocol::eio3;
use iocluster_protocol::engine::Packet;
use libfuzzer_sys::fuzz_target;

fn write(out: &mut String, packet: &Packet<'_>) {
    match (packet.to_text(), packet) {
        (Some(text), _) => eio3::write_text(out, &text),
        (None, Packet::Binary(data)) => eio3::write_binary(out, data),
        (None, _) => unreachable!("only binary packets have no text form"),
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = eio3::binary_message(data);
    if let Ok(packets) = eio3::decode_payload(data) {
        let mut again = String::new();
        for packet in &packets {
            write(&mut again, packet);
        }
        assert_eq!(eio3::decode_text_payload(&again).as_ref(), Ok(&packets));
    }
});
