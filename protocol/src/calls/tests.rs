//! The method table: ids, streaming, request decoding.

use super::*;

#[test]
fn method_ids_round_trip() {
    for m in Method::ALL {
        assert_eq!(Method::from_id(m.id()), Some(m));
    }
    assert_eq!(Method::from_id(0), None);
    assert_eq!(Method::from_id(9), None);
}

/// `is_streaming` is written by hand; the `unary!` / `streaming!` table
/// is what binds the reply types. They must agree.
#[test]
fn is_streaming_agrees_with_the_call_table() {
    fn unary<C: Unary>() -> Method {
        C::METHOD
    }
    fn streaming<C: Streaming>() -> Method {
        C::METHOD
    }
    let unary = [
        unary::<Ping>(),
        unary::<GetInfo>(),
        unary::<GetVm>(),
        unary::<ListSources>(),
        unary::<Cancel>(),
    ];
    let streams = [
        streaming::<ListVms>(),
        streaming::<Rescan>(),
        streaming::<Subscribe>(),
    ];
    for m in Method::ALL {
        let listed = (unary.contains(&m), streams.contains(&m));
        assert_eq!(listed, (!m.is_streaming(), m.is_streaming()), "{m:?}");
    }
}

#[test]
fn unknown_method_is_typed() {
    assert_eq!(
        Request::decode(77, &[], Compat::Exact),
        Err(RequestError::UnknownMethod(77))
    );
}

#[test]
fn invalid_name_is_an_invalid_request() {
    let body = codec::encode(&"bad name").unwrap();
    assert!(matches!(
        Request::decode(Method::GetVm.id(), &body, Compat::Exact),
        Err(RequestError::Invalid {
            method: "GetVm",
            ..
        })
    ));
}
