//! The examples docs/PROTOCOL.md shows, byte for byte.

use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn example_event() -> Event {
    Event {
        kind: EventKind::Message,
        node: "io1".into(),
        sid: "io1.Xy".into(),
        nsp: "/".into(),
        seq: 1,
        data: Some("[\"hi\",1]".into()),
        bin: vec![],
        ack: Some(7),
        reason: None,
        rooms: vec!["lobby".into()],
        sdata: None,
        handshake: Arc::new(Handshake {
            headers: vec![("host".into(), "h".into())],
            query: vec![("EIO".into(), "4".into())],
            address: "127.0.0.1:5".into(),
            time: 1,
            url: "/".into(),
            secure: false,
            auth: None,
        }),
        recovered: false,
        seen: Vec::new(),
    }
}

#[test]
fn match_the_document() {
    let event = example_event();
    let emit = Command::Emit(Emit {
        nsp: "/".into(),
        rooms: vec!["lobby".into()],
        data: "[\"tick\",1]".into(),
        ..Emit::default()
    });
    let done = Command::Done(Done {
        nsp: "/".into(),
        sid: "io1.Xy".into(),
        seq: 1,
        reject: None,
        app: None,
    });
    assert_eq!(
        hex(&event.encode()),
        "93 01 a5 65 76 65 6e 74 8c a4 6b 69 6e 64 a7 6d 65 73 73 61 67 65 a4 6e 6f 64 65 a3 69 6f 31 a3 73 69 64 a6 69 6f 31 2e 58 79 a3 6e 73 70 a1 2f a3 73 65 71 01 a4 64 61 74 61 a8 5b 22 68 69 22 2c 31 5d a3 62 69 6e 90 a3 61 63 6b 07 a6 72 65 61 73 6f 6e c0 a5 72 6f 6f 6d 73 91 a5 6c 6f 62 62 79 a5 73 64 61 74 61 c0 a9 68 61 6e 64 73 68 61 6b 65 87 a7 68 65 61 64 65 72 73 91 92 a4 68 6f 73 74 a1 68 a5 71 75 65 72 79 91 92 a3 45 49 4f a1 34 a7 61 64 64 72 65 73 73 ab 31 32 37 2e 30 2e 30 2e 31 3a 35 a4 74 69 6d 65 01 a3 75 72 6c a1 2f a6 73 65 63 75 72 65 c2 a4 61 75 74 68 c0"
    );
    assert_eq!(
        hex(&emit.encode()),
        "93 01 a4 65 6d 69 74 89 a3 6e 73 70 a1 2f a5 72 6f 6f 6d 73 91 a5 6c 6f 62 62 79 a4 73 69 64 73 90 ac 65 78 63 65 70 74 5f 72 6f 6f 6d 73 90 ab 65 78 63 65 70 74 5f 73 69 64 73 90 a4 64 61 74 61 aa 5b 22 74 69 63 6b 22 2c 31 5d a3 62 69 6e 90 a3 61 63 6b c0 a2 69 64 c0"
    );
    assert_eq!(
        hex(&done.encode()),
        "93 01 a4 64 6f 6e 65 84 a3 6e 73 70 a1 2f a3 73 69 64 a6 69 6f 31 2e 58 79 a3 73 65 71 01 a6 72 65 6a 65 63 74 c0"
    );
}
