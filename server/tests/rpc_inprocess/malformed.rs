//! Every malformed input of `docs/protocol.md` §9 ("Malformed input"), sent
//! for real: the answer and whether the connection stays open must be what
//! the table says, row by row (a row without a scenario here, or a
//! scenario without a row, fails).

use std::time::Duration;

use tokio_seqpacket::UnixSeqpacket;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::*;
use vm_catalogd::rpc::Limits;

use crate::server::{Server, hello_as, raw};

/// What a peer sees after its bad input: the first error or goodbye (other
/// calls' frames aside), and whether the connection then still answers.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    answer: Answer,
    closed: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Answer {
    None,
    Goodbye,
    /// An `Error`: its code, and whether it is the connection's (call id 0).
    Error(&'static str, bool),
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    id: String,
    expected: Seen,
}

fn documented() -> Vec<Row> {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .unwrap();
    let table = spec
        .split("### Malformed input")
        .nth(1)
        .expect("docs/protocol.md has a Malformed input section");
    table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let id = cells[0].split('`').nth(1).unwrap().to_string();
            let answer = match cells[2] {
                a if a.starts_with("none") => Answer::None,
                "`Goodbye`" => Answer::Goodbye,
                a => {
                    let name = a.split('`').nth(1).unwrap();
                    let code = ErrorCode::ALL
                        .iter()
                        .find(|c| c.name() == name)
                        .unwrap_or_else(|| panic!("{id}: unknown code {name}"));
                    Answer::Error(code.name(), !a.contains("that call"))
                }
            };
            let closed = match cells[3] {
                "closed" => true,
                "open" => false,
                c => panic!("{id}: {c:?} is neither closed nor open"),
            };
            Row {
                id,
                expected: Seen { answer, closed },
            }
        })
        .collect()
}

/// The servers the scenarios need: defaults; short timeouts; room for one
/// connection only (held).
///
/// Every test here runs on tokio's paused clock: the timeouts are tokio's,
/// and time moves only when every task waits, so a handshake or a call
/// never takes long enough for the short timeouts to cut it off, however
/// loaded the machine is, and a scenario that waits for a timeout sees it
/// at once.
struct Servers {
    main: Server,
    quick: Server,
    tiny: Server,
    _held: UnixSeqpacket,
}

impl Servers {
    async fn start() -> Servers {
        let main = Server::start(Limits::default(), None).await;
        main.publish(crate::server::many(3));
        let quick = Server::start(
            Limits {
                handshake_timeout: Duration::from_millis(300),
                idle_timeout: Duration::from_millis(300),
                send_timeout: Duration::from_millis(300),
                ..Limits::default()
            },
            None,
        )
        .await;
        let tiny = Server::start(
            Limits {
                max_connections: 1,
                reserved_connections: 0,
                ..Limits::default()
            },
            None,
        )
        .await;
        let (held, _) = raw(&tiny.path).await;
        Servers {
            main,
            quick,
            tiny,
            _held: held,
        }
    }
}

fn hello() -> Hello {
    Hello {
        client: "malformed".into(),
        versions: SUPPORTED_VERSIONS,
        max_frame: DEFAULT_MAX_FRAME,
        features: Features::default(),
    }
}

fn hello_frame(call_id: u32, body: &[u8]) -> Vec<u8> {
    frame_with_body(FrameKind::Hello, 0, call_id, body, HANDSHAKE_MAX_FRAME).unwrap()
}

fn ping() -> Ping {
    Ping { payload: vec![] }
}

fn request<C: Call>(call_id: u32, params: &C) -> Vec<u8> {
    message::request(call_id, params, MIN_MAX_FRAME).unwrap()
}

/// Connects to `path` and sends `datagrams` (no handshake).
async fn send_first(path: &std::path::Path, datagrams: &[Vec<u8>]) -> UnixSeqpacket {
    let s = UnixSeqpacket::connect(path).await.unwrap();
    for d in datagrams {
        s.send(d).await.unwrap();
    }
    s
}

/// Completes the handshake with `path` and sends `datagrams`.
async fn send_after(path: &std::path::Path, datagrams: &[Vec<u8>]) -> UnixSeqpacket {
    let (s, _) = raw(path).await;
    for d in datagrams {
        s.send(d).await.unwrap();
    }
    s
}

/// Sets up row `id` and sends its bad input; `None` when it cannot run here.
async fn scenario(id: &str, srv: &Servers) -> Option<UnixSeqpacket> {
    let main = &srv.main.path;
    let body = codec::encode(&hello()).unwrap();
    Some(match id {
        "empty" => send_after(main, &[vec![]]).await,
        "hello-too-large" => send_first(main, &[vec![0; 5000]]).await,
        "garbage-first" => send_first(main, &[vec![0xff; 40]]).await,
        "not-hello" => send_first(main, &[request(1, &ping())]).await,
        "hello-call-id" => send_first(main, &[hello_frame(7, &body)]).await,
        "hello-trailing" => {
            let mut b = body.clone();
            b.push(0);
            send_first(main, &[hello_frame(0, &b)]).await
        }
        // max_frame 65536 is 80 80 04, then features 00: cut after 80 80.
        "hello-cut" => send_first(main, &[hello_frame(0, &body[..body.len() - 2])]).await,
        "hello-name" => {
            let long = Hello {
                client: "x".repeat(MAX_CLIENT_NAME + 1),
                ..hello()
            };
            send_first(main, &[message::hello(&long).unwrap()]).await
        }
        "no-version" => {
            let future = Hello {
                versions: VersionRange { min: 7, max: 9 },
                ..hello()
            };
            send_first(main, &[message::hello(&future).unwrap()]).await
        }
        "silent" => send_first(&srv.quick.path, &[]).await,
        "over-limits" => send_first(&srv.tiny.path, &[message::hello(&hello()).unwrap()]).await,
        "too-large" => send_after(main, &[vec![0; MIN_MAX_FRAME as usize + 1]]).await,
        "garbage" => send_after(main, &[b"this is not a frame".to_vec()]).await,
        "wrong-kind" => send_after(main, &[message::hello(&hello()).unwrap()]).await,
        "call-id-zero" => send_after(main, &[request(0, &ping())]).await,
        "call-id-in-flight" => {
            let sub = request(1, &Subscribe { since: None });
            send_after(main, &[sub, request(1, &ping())]).await
        }
        "unknown-method" => {
            let f = encode_frame(FrameKind::Request, 99, 5, &(), MIN_MAX_FRAME).unwrap();
            send_after(main, &[f]).await
        }
        "bad-body" => {
            let mut f = request(5, &GetInfo::default());
            f.push(0);
            f[12] = 1; // body_len: the frame is sound, its body is not
            send_after(main, &[f]).await
        }
        "over-in-flight" => {
            let subs: Vec<_> = (1..=33)
                .map(|id| request(id, &Subscribe { since: None }))
                .collect();
            send_after(main, &subs).await
        }
        "not-admin" => {
            vm_catalog_tests::require_root("connecting as another uid")?;
            let (s, w) = hello_as(main, 1000).await;
            w.unwrap();
            s.send(&request(5, &Rescan { dry_run: true }))
                .await
                .unwrap();
            s
        }
        "idle" => send_after(&srv.quick.path, &[]).await,
        "not-reading" => {
            let (s, w) = raw(&srv.quick.path).await;
            let payload = vec![0u8; w.max_frame as usize - 200];
            for id in 1..=64u32 {
                let f = request(
                    id,
                    &Ping {
                        payload: payload.clone(),
                    },
                );
                if tokio::time::timeout(Duration::from_millis(200), s.send(&f))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            // Longer than the send deadline: the daemon gives up on it.
            tokio::time::sleep(Duration::from_secs(1)).await;
            s
        }
        other => panic!("no scenario for the documented row {other:?}"),
    })
}

/// Reads what the server answers, then checks whether it still serves a
/// `Ping` (call id 99).
async fn observe(s: &UnixSeqpacket) -> Seen {
    const PROBE: u32 = 99;
    let mut buf = vec![0u8; LIMIT_MAX_FRAME as usize + 1];
    let mut answer = None;
    let mut probed = false;
    loop {
        if answer.is_some() && !probed {
            probed = true;
            let _ = s.send(&request(PROBE, &ping())).await;
        }
        let got = tokio::time::timeout(Duration::from_secs(10), s.recv(&mut buf))
            .await
            .expect("an answer or a close in time");
        let n = match got {
            Ok(info) => info.bytes_read(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("{e}"),
        };
        if n == 0 {
            return Seen {
                answer: answer.unwrap_or(Answer::None),
                closed: true,
            };
        }
        let f = decode_frame(&buf[..n], LIMIT_MAX_FRAME).expect("a frame");
        match f.header.kind {
            FrameKind::Reply if f.header.call_id == PROBE => {
                return Seen {
                    answer: answer.unwrap_or(Answer::None),
                    closed: false,
                };
            }
            FrameKind::Error if answer.is_none() => {
                let e: ErrorBody = codec::decode(f.body, Compat::Exact).unwrap();
                answer = Some(Answer::Error(e.code.name(), f.header.call_id == 0));
            }
            FrameKind::Goodbye if answer.is_none() => answer = Some(Answer::Goodbye),
            // Other calls' frames (items, earlier replies), later errors.
            _ => {}
        }
    }
}

/// Regression (issue 12, item 9): the independent client found the daemon
/// lenient where the document is strict, and the document silent on what
/// follows each malformed input.
#[tokio::test(start_paused = true)]
async fn every_malformed_input_is_answered_as_documented() {
    let rows = documented();
    assert_eq!(rows.len(), 22, "{rows:#?}");
    let srv = Servers::start().await;
    for row in rows {
        let Some(s) = scenario(&row.id, &srv).await else {
            continue;
        };
        assert_eq!(observe(&s).await, row.expected, "row {}", row.id);
    }
}

async fn first_answer(id: &str) -> Seen {
    let srv = Servers::start().await;
    let s = scenario(id, &srv).await.unwrap();
    observe(&s).await
}

/// Regression (issue 12, item 9): a `Hello` with a trailing byte and equal
/// versions was accepted.
#[tokio::test(start_paused = true)]
async fn a_hello_with_a_trailing_byte_and_equal_versions_is_refused() {
    assert_eq!(
        first_answer("hello-trailing").await,
        Seen {
            answer: Answer::Error("invalid-request", true),
            closed: true
        }
    );
}

/// Regression (issue 12, item 9): a `Hello` cut inside a varint was
/// accepted (the missing bytes read as zeros).
#[tokio::test(start_paused = true)]
async fn a_hello_cut_inside_a_varint_is_refused() {
    assert_eq!(
        first_answer("hello-cut").await.answer,
        Answer::Error("invalid-request", true)
    );
}

/// Regression (issue 12, item 9): a `Hello` with call id 7 was accepted.
#[tokio::test(start_paused = true)]
async fn a_hello_with_a_call_id_is_refused() {
    assert_eq!(
        first_answer("hello-call-id").await.answer,
        Answer::Error("protocol-violation", true)
    );
}

/// A newer client may append fields to its `Hello` (§8): those bytes are
/// ignored, not refused as trailing garbage.
#[tokio::test(start_paused = true)]
async fn a_newer_clients_hello_with_more_fields_is_welcomed() {
    let srv = Server::start(Limits::default(), None).await;
    let newer = Hello {
        versions: VersionRange {
            min: SUPPORTED_VERSIONS.min,
            max: SUPPORTED_VERSIONS.max + 1,
        },
        ..hello()
    };
    let mut body = codec::encode(&newer).unwrap();
    body.extend_from_slice(&[1, 42]);
    let s = send_first(&srv.path, &[hello_frame(0, &body)]).await;
    let (h, _) = crate::server::recv_frame(&s).await;
    assert_eq!(h.kind, FrameKind::Welcome);
    srv.stop().await;
}

/// `docs/protocol.md` §4: the server may send `Busy` before any `Hello`.
#[tokio::test(start_paused = true)]
async fn a_connection_over_the_limits_gets_busy_without_sending_a_hello() {
    let srv = Servers::start().await;
    let s = send_first(&srv.tiny.path, &[]).await;
    assert_eq!(
        observe(&s).await,
        Seen {
            answer: Answer::Error("busy", true),
            closed: true
        }
    );
}
