//! Two building blocks for middleware on the hot path, cheaper than `axum::middleware::from_fn`.
//!
//! A `from_fn` middleware clones the whole service stack below it on every request (its `Next`
//! must own a service), boxes that clone and boxes its future: with several of them in the edge
//! stack, cloning and allocating were a large share of a cached read. [`Around`] calls the inner
//! service in place (no clone; its future boxed once), and [`OnlyWhen`] runs a middleware only for
//! the requests that need it (an `Idempotency-Key` write, a `traceparent`), sending every other
//! request straight to the inner service.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::BoxError;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::response::Response;
use futures::future::Either;
use tower::{Layer, Service};

/// A response with any body as one with axum's body (what the layers below the router answer
/// with differs: compressed, panic-catching, …).
pub fn axum_body<B>(response: axum::http::Response<B>) -> Response
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    response.map(Body::new)
}

/// A middleware in two synchronous halves around the inner service: `before` reads the request
/// (what `after` needs to know of it), `after` rewrites the response.
pub trait Around: Clone + Send + Sync + Unpin + 'static {
    type Memo: Send + Unpin + 'static;

    fn before<T>(&self, request: &axum::http::Request<T>) -> Self::Memo;

    fn after(&self, memo: Self::Memo, response: Response) -> Response;
}

/// The layer of an [`Around`] middleware.
#[derive(Clone)]
pub struct AroundLayer<A>(pub A);

impl<A: Around, S> Layer<S> for AroundLayer<A> {
    type Service = AroundService<A, S>;

    fn layer(&self, inner: S) -> Self::Service {
        AroundService {
            around: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct AroundService<A, S> {
    around: A,
    inner: S,
}

impl<A, S, T, B> Service<axum::http::Request<T>> for AroundService<A, S>
where
    A: Around,
    S: Service<axum::http::Request<T>, Response = axum::http::Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AroundFuture<A, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<T>) -> Self::Future {
        let memo = self.around.before(&request);
        AroundFuture {
            // Boxed once, where it is made: an `async` block awaiting it would move it again.
            inner: Box::pin(self.inner.call(request)),
            after: Some((self.around.clone(), memo)),
        }
    }
}

/// The response future of an [`AroundService`]: the inner one, then `after`.
pub struct AroundFuture<A: Around, F> {
    inner: Pin<Box<F>>,
    after: Option<(A, A::Memo)>,
}

impl<A, F, B> Future for AroundFuture<A, F>
where
    A: Around,
    F: Future<Output = Result<axum::http::Response<B>, Infallible>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let response = std::task::ready!(this.inner.as_mut().poll(cx))?;
        let (around, memo) = this
            .after
            .take()
            .expect("AroundFuture polled after completion");
        Poll::Ready(Ok(around.after(memo, axum_body(response))))
    }
}

/// Applies `layer` only to requests for which `applies` holds; the others go straight to the inner
/// service. The layered service is built for the request that needs it (as cheap as the clone a
/// `from_fn` middleware makes anyway).
#[derive(Clone)]
pub struct OnlyWhen<L> {
    layer: L,
    applies: fn(&Request) -> bool,
}

impl<L> OnlyWhen<L> {
    pub fn new(applies: fn(&Request) -> bool, layer: L) -> OnlyWhen<L> {
        OnlyWhen { layer, applies }
    }
}

impl<L: Clone, S> Layer<S> for OnlyWhen<L> {
    type Service = OnlyWhenService<L, S>;

    fn layer(&self, inner: S) -> Self::Service {
        OnlyWhenService {
            only: self.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct OnlyWhenService<L, S> {
    only: OnlyWhen<L>,
    inner: S,
}

impl<L, S> Service<Request> for OnlyWhenService<L, S>
where
    L: Layer<S>,
    L::Service: Service<Request, Response = Response, Error = Infallible>,
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, <L::Service as Service<Request>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if (self.only.applies)(&request) {
            // `inner` was polled ready; its clone takes that readiness over, as `from_fn` does.
            let ready = self.inner.clone();
            let ready = std::mem::replace(&mut self.inner, ready);
            Either::Right(self.only.layer.layer(ready).call(request))
        } else {
            Either::Left(self.inner.call(request))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{HeaderValue, Method};
    use tower::ServiceExt;

    #[derive(Clone)]
    struct Tag;

    impl Around for Tag {
        type Memo = Method;

        fn before<T>(&self, request: &axum::http::Request<T>) -> Method {
            request.method().clone()
        }

        fn after(&self, method: Method, mut response: Response) -> Response {
            let value = HeaderValue::from_str(method.as_str()).unwrap();
            response.headers_mut().insert("x-method", value);
            response
        }
    }

    fn echo() -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone
    {
        tower::service_fn(|request: Request| async move {
            Ok::<_, Infallible>(Response::new(Body::from(request.uri().path().to_owned())))
        })
    }

    fn request(method: Method) -> Request {
        axum::http::Request::builder()
            .method(method)
            .uri("/x")
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn around_sees_the_request_and_rewrites_the_response() {
        let service = AroundLayer(Tag).layer(echo());
        let response = service.oneshot(request(Method::PUT)).await.unwrap();
        assert_eq!(response.headers()["x-method"], "PUT");
    }

    #[tokio::test]
    async fn only_when_applies_the_layer_to_the_chosen_requests() {
        let layer = OnlyWhen::new(|r: &Request| r.method() == Method::POST, AroundLayer(Tag));
        let posted = layer
            .layer(echo())
            .oneshot(request(Method::POST))
            .await
            .unwrap();
        assert_eq!(posted.headers()["x-method"], "POST");
        let read = layer
            .layer(echo())
            .oneshot(request(Method::GET))
            .await
            .unwrap();
        assert!(read.headers().get("x-method").is_none());
    }
}
