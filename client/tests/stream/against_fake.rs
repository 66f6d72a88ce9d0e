//! The clients against a scripted daemon on a stream: what the real daemon
//! never sends, and the bytes the client writes.

use std::sync::mpsc;

use vm_catalog::{BlockingClient, Client, Error, ProtocolError};
use vm_catalog_protocol::stream::StreamError;
use vm_catalog_protocol::{DEFAULT_MAX_FRAME, FrameKind, Ping, Pong, codec, message};

use super::fake::{Fake, Peer};
use super::in_time;

/// Answers the next request, a `Ping`, with its payload, in pieces.
fn pong(peer: &mut Peer, piece: usize) {
    let (h, body) = peer.recv().expect("a request");
    assert_eq!(h.kind, FrameKind::Request);
    let ping: Ping = codec::decode(&body, codec::Compat::Exact).unwrap();
    let reply = message::reply::<Ping>(
        h.call_id,
        &Pong {
            payload: ping.payload,
        },
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    for chunk in reply.chunks(piece) {
        peer.send(chunk);
    }
}

#[tokio::test]
async fn frames_in_single_bytes_make_a_handshake_and_a_call() {
    let fake = Fake::serve(|mut peer| {
        let hello = peer.handshake(1);
        assert!(hello.client.starts_with("vm-catalog/"));
        pong(&mut peer, 1);
        pong(&mut peer, 3);
    });
    let client = in_time("connect", Client::connect_stream(&fake.path))
        .await
        .unwrap();
    assert_eq!(client.welcome().server, "fake");
    assert_eq!(client.ping(vec![1, 2, 3]).await.unwrap(), [1, 2, 3]);
    assert_eq!(client.ping(vec![9; 300]).await.unwrap(), [9; 300]);
    fake.join();
}

#[test]
fn the_blocking_client_reads_frames_in_pieces() {
    let fake = Fake::serve(|mut peer| {
        peer.handshake(5);
        pong(&mut peer, 2);
    });
    let mut client = BlockingClient::connect_stream(&fake.path).unwrap();
    assert_eq!(client.ping(vec![4; 100]).unwrap(), [4; 100]);
    fake.join();
}

/// The error a `Ping` gets when the fake answers it with `answer`.
async fn ping_answered_with(answer: &'static [u8], then_close: bool) -> Error {
    let fake = Fake::serve(move |mut peer| {
        peer.handshake(4096);
        peer.recv().expect("the ping");
        peer.send(answer);
        if then_close {
            peer.close();
        } else {
            // Hold the connection open: the client must not wait for more.
            while peer.recv().is_some() {}
        }
    });
    let client = in_time("connect", Client::connect_stream(&fake.path))
        .await
        .unwrap();
    let e = in_time("the failed ping", client.ping(vec![1]))
        .await
        .unwrap_err();
    // The connection is over for every later call too.
    let again = client.ping(vec![2]).await.unwrap_err();
    assert_eq!(again.to_string(), e.to_string());
    drop(client);
    fake.join();
    e
}

#[tokio::test]
async fn garbage_from_the_daemon_ends_the_connection() {
    let e = ping_answered_with(b"HTTP/1.1 400 Bad Request\r\n\r\n", false).await;
    assert!(
        matches!(e, Error::Protocol(ProtocolError::BadStream(StreamError::BadMagic(m))) if m == *b"HT"),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_frame_larger_than_negotiated_fails_before_its_body_arrives() {
    // A header announcing a 1 GiB body, and no body.
    const HEADER: &[u8] = b"VC\x01\x04\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00\x40";
    let e = ping_answered_with(HEADER, false).await;
    assert!(
        matches!(
            e,
            Error::Protocol(ProtocolError::BadStream(StreamError::TooLarge { len, max }))
                if len == (1 << 30) + 16 && max == DEFAULT_MAX_FRAME
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_stream_ending_inside_a_frame_is_a_protocol_error() {
    let e = ping_answered_with(b"VC\x01\x04\x00\x00\x01\x00\x01\x00", true).await;
    assert!(
        matches!(
            e,
            Error::Protocol(ProtocolError::BadStream(StreamError::Truncated {
                buffered: 10
            }))
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_stream_ending_between_frames_is_a_disconnect() {
    let e = ping_answered_with(b"", true).await;
    assert!(matches!(e, Error::Disconnected(None)), "{e:?}");
    assert!(e.is_unavailable());
}

#[tokio::test]
async fn a_call_given_up_in_the_middle_of_its_frame_still_writes_it_whole() {
    let (go, wait) = mpsc::channel::<()>();
    let (count, counted) = mpsc::channel();
    let fake = Fake::serve(move |mut peer| {
        peer.handshake(4096);
        // Read nothing until the client has given up its calls.
        wait.recv().unwrap();
        let mut pings = 0;
        loop {
            // `recv` fails the test on a frame that is not whole.
            let (h, body) = peer
                .recv()
                .expect("the last ping (after a frame cut short, the daemon waits for its rest)");
            let ping: Ping = codec::decode(&body, codec::Compat::Exact).unwrap();
            if ping.payload == b"last" {
                let reply = message::reply::<Ping>(
                    h.call_id,
                    &Pong {
                        payload: ping.payload,
                    },
                    DEFAULT_MAX_FRAME,
                );
                peer.send(&reply.unwrap());
                break;
            }
            let first = ping.payload[0];
            assert!(ping.payload.iter().all(|&b| b == first) && ping.payload.len() == 60_000);
            pings += 1;
        }
        count.send(pings).unwrap();
    });
    let client = in_time("connect", Client::connect_stream(&fake.path))
        .await
        .unwrap();
    // 20 frames of 60 KB fill the socket's buffers: one is written in part
    // when its call is given up (the calls after it give up waiting for
    // their turn to write).
    for i in 0..20u8 {
        tokio::select! {
            biased;
            _ = client.ping(vec![i; 60_000]) => panic!("no answer can have come"),
            () = std::future::ready(()) => {}
        }
    }
    go.send(()).unwrap();
    let last = in_time(
        "the last ping (after a frame cut short, the daemon waits for its rest)",
        client.ping(b"last".to_vec()),
    )
    .await;
    assert_eq!(last.unwrap(), b"last");
    let pings = counted.recv().unwrap();
    assert!(
        (1..20).contains(&pings),
        "{pings} whole pings before the last"
    );
    fake.join();
}
