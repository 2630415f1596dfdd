//! Engine.IO v3 (socket.io-client 2.x, io-nodes with `allow_eio3`): the
//! long-polling payloads a client may POST, text or binary, and WebSocket
//! binary frames. Decoding never panics, and the packets of a text payload,
//! written back as a payload, decode to the same packets.
#![no_main]

use iocluster_protocol::eio3;
use iocluster_protocol::engine::Packet;
use libfuzzer_sys::fuzz_target;

fn write(out: &mut String, packet: &Packet<'_>) {
    let text = match packet {
        Packet::Open(data) => format!("0{data}"),
        Packet::Close => "1".to_owned(),
        Packet::Ping(data) => format!("2{data}"),
        Packet::Pong(data) => format!("3{data}"),
        Packet::Message(data) => format!("4{data}"),
        Packet::Upgrade => "5".to_owned(),
        Packet::Noop => "6".to_owned(),
        Packet::Binary(data) => return eio3::write_binary(out, data),
    };
    eio3::write_text(out, &text);
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
