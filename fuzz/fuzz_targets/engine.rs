//! Engine.IO: WebSocket text frames and long-polling payloads, as a client
//! may send them. Decoding never panics, and what decodes encodes back to
//! the same packet.
#![no_main]

use iocluster_protocol::engine::{self, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(packet) = engine::decode_text(text) {
        // Close, Upgrade and Noop ignore trailing bytes; the others keep them.
        let again = packet.to_text().expect("text frames never decode to binary");
        assert_eq!(engine::decode_text(&again).as_ref(), Ok(&packet));
    }
    for record in engine::split_payload(text) {
        match engine::decode_polling_record(record) {
            Ok(Packet::Binary(bytes)) => {
                let mut again = String::new();
                engine::write_polling_binary(&mut again, &bytes);
                assert_eq!(
                    engine::decode_polling_record(&again),
                    Ok(Packet::Binary(bytes.clone()))
                );
            }
            Ok(packet) => {
                let again = packet.to_text().expect("not binary");
                assert_eq!(engine::decode_polling_record(&again), Ok(packet));
            }
            Err(_) => {}
        }
    }
});
