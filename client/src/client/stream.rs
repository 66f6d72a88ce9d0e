//! [`CallStream`]: the frames of one streaming call of a [`super::Client`],
//! in order, from the call's bounded queue.

use std::sync::Arc;

use tokio::sync::mpsc;
use vm_catalog_protocol::Streaming;

use super::router::{Incoming, Inner};
use crate::error::Result;
use crate::session::Step;

/// The frames of one streaming call: items, then the end.
#[derive(Debug)]
pub struct CallStream<C: Streaming> {
    inner: Arc<Inner>,
    id: u32,
    rx: mpsc::Receiver<Incoming>,
    end: Option<C::End>,
    done: bool,
}

impl<C: Streaming> CallStream<C> {
    /// The stream of call `id`, whose frames arrive on `rx`.
    pub(super) fn new(inner: Arc<Inner>, id: u32, rx: mpsc::Receiver<Incoming>) -> Self {
        CallStream {
            inner,
            id,
            rx,
            end: None,
            done: false,
        }
    }

    /// The call id.
    pub fn call_id(&self) -> u32 {
        self.id
    }

    /// The next item; `None` after the end frame (see [`CallStream::end`]).
    pub async fn next(&mut self) -> Option<Result<C::Item>> {
        if self.done {
            return None;
        }
        match self.step().await {
            Step::Item(item) => Some(item),
            Step::End(end) => {
                self.end = Some(end);
                None
            }
            Step::Failed(e) => Some(Err(e)),
        }
    }

    /// The next step of a stream that is not over; after an end or a
    /// failure, the stream is over.
    pub(crate) async fn step(&mut self) -> Step<C> {
        let step = match self.rx.recv().await {
            Some(Incoming::Frame { kind, body }) => self.inner.session.step::<C>(kind, &body),
            Some(Incoming::Closed(c)) => Step::Failed(c.to_error()),
            None => Step::Failed(self.inner.ended()),
        };
        self.done = !matches!(step, Step::Item(_));
        step
    }

    /// The end frame's body, once [`CallStream::next`] returned `None`.
    pub fn end(&self) -> Option<&C::End> {
        self.end.as_ref()
    }

    /// Takes the end frame's body.
    pub fn into_end(self) -> Option<C::End> {
        let mut s = self;
        s.end.take()
    }
}

impl<C: Streaming> Drop for CallStream<C> {
    fn drop(&mut self) {
        self.inner.unregister(self.id);
        if !self.done {
            // Tell the daemon to stop sending.
            self.inner.cancel(self.id);
        }
    }
}
