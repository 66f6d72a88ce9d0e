//! The session against frames built by the protocol crate, as the daemon
//! builds them: no socket needed.

use vm_catalog_protocol::{
    Cursor, Epoch, FrameKind, ListEnd, ListVms, Method, Ping, Pong, VersionRange, VmPage,
    frame_with_body,
};

use super::*;

const MAX: u32 = 64 * 1024;

fn welcome(supported_max: u16) -> Welcome {
    Welcome {
        version: PROTOCOL_VERSION,
        server: "vm-catalogd/test".into(),
        epoch: Epoch(7),
        max_frame: MAX,
        features: Features::KNOWN,
        supported: VersionRange {
            min: 1,
            max: supported_max,
        },
    }
}

fn session() -> Session {
    Session::accept(&message::welcome(&welcome(PROTOCOL_VERSION)).unwrap()).unwrap()
}

/// The protocol error inside `e`, or a panic.
fn protocol(e: Error) -> ProtocolError {
    match e {
        Error::Protocol(p) => p,
        e => panic!("not a protocol error: {e:?}"),
    }
}

fn closed(inbound: Inbound<'_>) -> Closed {
    match inbound {
        Inbound::Closed(c) => c,
        Inbound::Call { .. } => panic!("not the end of the connection"),
    }
}

#[test]
fn accept_takes_the_welcome() {
    let s = session();
    assert_eq!(s.welcome(), &welcome(PROTOCOL_VERSION));
    assert_eq!(s.max_frame(), MAX);
}

#[test]
fn accept_reports_no_common_version_as_incompatible() {
    let range = VersionRange { min: 5, max: 9 };
    let body = ErrorBody {
        supported: Some(range),
        ..ErrorBody::new(ErrorCode::UnsupportedVersion, "no common version")
    };
    let frame = message::error(0, 0, &body, HANDSHAKE_MAX_FRAME).unwrap();
    match Session::accept(&frame) {
        Err(Error::Incompatible { server, client }) => {
            assert_eq!(server, Versions(Some(range)));
            assert_eq!(client, Versions(Some(SUPPORTED_VERSIONS)));
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn accept_reports_a_goodbye_and_a_refusal() {
    let bye = message::goodbye(
        &Goodbye {
            reason: "shutting down".into(),
        },
        MAX,
    )
    .unwrap();
    assert!(matches!(Session::accept(&bye), Err(Error::Goodbye(r)) if r == "shutting down"));
    let body = ErrorBody::new(ErrorCode::PermissionDenied, "no");
    let frame = message::error(0, 0, &body, HANDSHAKE_MAX_FRAME).unwrap();
    assert!(matches!(Session::accept(&frame), Err(Error::Daemon(b)) if b == body));
}

#[test]
fn accept_rejects_another_frame_than_welcome() {
    let frame = message::reply::<Ping>(1, &Pong { payload: vec![] }, MAX).unwrap();
    let e = protocol(Session::accept(&frame).unwrap_err());
    assert_eq!(
        e,
        ProtocolError::UnexpectedFrame {
            kind: FrameKind::Reply,
            context: FrameContext::Handshake
        }
    );
    assert_eq!(e.to_string(), "unexpected Reply frame in answer to Hello");
}

#[test]
fn accept_rejects_a_welcome_that_does_not_decode() {
    let frame = frame_with_body(FrameKind::Welcome, 0, 0, &[0xff; 3], MAX).unwrap();
    let e = protocol(Session::accept(&frame).unwrap_err());
    assert!(
        matches!(
            e,
            ProtocolError::BadBody {
                kind: FrameKind::Welcome,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn a_frame_of_a_call_goes_to_that_call() {
    let s = session();
    let frame = message::item::<ListVms>(9, &VmPage { vms: vec![] }, MAX).unwrap();
    match s.classify(&frame) {
        Inbound::Call {
            call_id,
            kind,
            body,
        } => {
            assert_eq!((call_id, kind), (9, CallFrame::StreamItem));
            assert!(!kind.is_terminal());
            assert!(matches!(s.step::<ListVms>(kind, body), Step::Item(Ok(p)) if p.vms.is_empty()));
        }
        Inbound::Closed(c) => panic!("{c:?}"),
    }
}

#[test]
fn a_goodbye_ends_the_connection_with_its_reason() {
    let s = session();
    let frame = message::goodbye(
        &Goodbye {
            reason: "shutting down".into(),
        },
        MAX,
    )
    .unwrap();
    assert!(matches!(closed(s.classify(&frame)), Closed::Goodbye(r) if r == "shutting down"));
    // A goodbye whose reason cannot be read is still a goodbye.
    let frame = frame_with_body(FrameKind::Goodbye, 0, 0, &[0xff], MAX).unwrap();
    assert!(matches!(closed(s.classify(&frame)), Closed::Goodbye(r) if r == "goodbye"));
}

#[test]
fn an_error_of_call_0_ends_the_connection() {
    let s = session();
    let body = ErrorBody::new(ErrorCode::ShuttingDown, "bye");
    let frame = message::error(0, 0, &body, MAX).unwrap();
    assert!(matches!(closed(s.classify(&frame)), Closed::Refused(b) if b == body));
    assert!(closed(s.classify(&frame)).to_error().is_unavailable());
}

#[test]
fn a_request_from_the_daemon_ends_the_connection() {
    let s = session();
    let frame = message::request(3, &Ping { payload: vec![] }, MAX).unwrap();
    let Closed::Protocol(e) = closed(s.classify(&frame)) else {
        panic!("not a protocol error");
    };
    assert_eq!(
        e,
        ProtocolError::UnexpectedFrame {
            kind: FrameKind::Request,
            context: FrameContext::Connection
        }
    );
}

#[test]
fn a_garbled_frame_ends_the_connection() {
    let s = session();
    let mut frame = message::reply::<Ping>(1, &Pong { payload: vec![] }, MAX).unwrap();
    frame[0] = b'X';
    assert!(matches!(
        closed(s.classify(&frame)),
        Closed::Protocol(ProtocolError::BadFrame(_))
    ));
}

#[test]
fn a_unary_call_takes_its_reply_or_its_error() {
    let s = session();
    let pong = Pong {
        payload: vec![1, 2, 3],
    };
    let body = codec::encode(&pong).unwrap();
    assert_eq!(s.reply::<Ping>(CallFrame::Reply, &body).unwrap(), pong);
    let err = ErrorBody::new(ErrorCode::NotFound, "no such VM");
    let body = codec::encode(&err).unwrap();
    assert!(matches!(s.reply::<Ping>(CallFrame::Error, &body), Err(Error::Daemon(b)) if b == err));
}

#[test]
fn a_stream_frame_for_a_unary_call_is_a_protocol_error() {
    let s = session();
    let e = protocol(s.reply::<Ping>(CallFrame::StreamEnd, &[]).unwrap_err());
    assert_eq!(e.to_string(), "unexpected StreamEnd frame for a unary call");
}

#[test]
fn a_reply_in_a_stream_fails_the_stream() {
    let s = session();
    let Step::Failed(e) = s.step::<ListVms>(CallFrame::Reply, &[]) else {
        panic!("the stream goes on");
    };
    assert_eq!(
        protocol(e).to_string(),
        "unexpected Reply frame in a stream"
    );
}

#[test]
fn a_bad_item_does_not_end_the_stream_but_a_bad_end_does() {
    let s = session();
    assert!(matches!(
        s.step::<ListVms>(CallFrame::StreamItem, &[0xff; 4]),
        Step::Item(Err(Error::Protocol(ProtocolError::BadBody {
            kind: FrameKind::StreamItem,
            ..
        })))
    ));
    assert!(matches!(
        s.step::<ListVms>(CallFrame::StreamEnd, &[0xff; 4]),
        Step::Failed(Error::Protocol(ProtocolError::BadBody {
            kind: FrameKind::StreamEnd,
            ..
        }))
    ));
    let end = ListEnd {
        cursor: Cursor {
            epoch: Epoch(7),
            generation: 3,
        },
        total: 0,
    };
    let body = codec::encode(&end).unwrap();
    assert!(matches!(s.step::<ListVms>(CallFrame::StreamEnd, &body), Step::End(e) if e == end));
}

/// Bodies are read in the mode the versions call for: between equal
/// versions a trailing byte is an error, from a newer daemon it is a field
/// this client does not know yet.
#[test]
fn a_newer_daemon_may_append_fields() {
    let mut body = codec::encode(&Pong { payload: vec![7] }).unwrap();
    body.push(0);
    let equal = session();
    assert!(matches!(
        equal.reply::<Ping>(CallFrame::Reply, &body),
        Err(Error::Protocol(ProtocolError::BadBody { .. }))
    ));
    let newer =
        Session::accept(&message::welcome(&welcome(PROTOCOL_VERSION + 1)).unwrap()).unwrap();
    assert_eq!(
        newer
            .reply::<Ping>(CallFrame::Reply, &body)
            .unwrap()
            .payload,
        [7]
    );
}

#[test]
fn requests_carry_their_call_id_and_method() {
    let s = session();
    let frame = s.cancel(4, 2).unwrap();
    let f = decode_frame(&frame, MAX).unwrap();
    assert_eq!(f.header.kind, FrameKind::Request);
    assert_eq!(f.header.call_id, 4);
    assert_eq!(f.header.method, Method::Cancel.id());
    let c: Cancel = codec::decode(f.body, Compat::Exact).unwrap();
    assert_eq!(c.call_id, 2);
}
