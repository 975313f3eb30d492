//! The future most layers return: the inner service's own future when the layer lets a
//! request through untouched, an answer made on the spot, or (on a rare slow path such as a
//! queue wait or an injected delay) a boxed one.

use super::exchange::Outcome;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub type BoxOutcome<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

pin_project! {
    #[project = Proj]
    pub enum LayerFuture<'a, F> {
        Inner { #[pin] fut: F },
        Done { out: Option<Outcome> },
        Boxed { fut: BoxOutcome<'a> },
    }
}

impl<F> LayerFuture<'_, F> {
    pub fn done(out: Outcome) -> Self {
        LayerFuture::Done { out: Some(out) }
    }
}

impl<F: Future<Output = Outcome>> Future for LayerFuture<'_, F> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match self.project() {
            Proj::Inner { fut } => fut.poll(cx),
            Proj::Done { out } => Poll::Ready(out.take().expect("polled after completion")),
            Proj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}
