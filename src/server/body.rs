//! Reading a review's body within the size and time limits, so that even a refused body leaves
//! the client able to read why.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::Limits;
use super::error::ApiError;

/// How much of a body over the limit is read and thrown away before the 413 is sent. Left
/// unread, the rest makes HTTP/1.1 close (a client still sending gets a reset, not the 413)
/// and HTTP/2 reset the stream; past this bound the client is not an API server, and is cut off.
pub const DISCARD_LIMIT: usize = 64 * 1024 * 1024;

/// Reads the whole body by `deadline`. A body over `limits.max_body_bytes` is read to its end and
/// discarded (up to [`DISCARD_LIMIT`]) and answered with [`ApiError::TooLarge`] — except when the
/// client declared its size and waits for `100 Continue`: then it has sent nothing yet, and is
/// refused before it does.
pub async fn read(body: Body, headers: &HeaderMap, limits: &Limits, deadline: Instant) -> Result<Bytes, ApiError> {
    let limit = limits.max_body_bytes;
    let too_large = ApiError::TooLarge { limit };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let waits_for_continue =
        headers.get(header::EXPECT).is_some_and(|v| v.to_str().is_ok_and(|v| v.eq_ignore_ascii_case("100-continue")));
    if declared.is_some_and(|length| length > limit) && (waits_for_continue || declared > Some(DISCARD_LIMIT)) {
        return Err(too_large);
    }
    let mut body = body;
    // Sized once from the declared length: growing by doubling copied a large body several times.
    let mut kept = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    let mut received = 0usize;
    let over = |received: usize| received > limit || declared.is_some_and(|length| length > limit);
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(frame)) => frame.map_err(|e| ApiError::BodyRead(e.to_string()))?,
            Ok(None) => break,
            // A client that is still sending what will be refused anyway learns the real reason.
            Err(_) if over(received) => return Err(too_large),
            Err(_) => return Err(ApiError::BodyTimeout { seconds: limits.review_timeout.as_secs_f64() }),
        };
        let Ok(data) = frame.into_data() else { continue };
        received += data.len();
        if over(received) {
            kept = BytesMut::new();
            if received > DISCARD_LIMIT {
                return Err(too_large);
            }
        } else {
            kept.extend_from_slice(&data);
        }
    }
    if over(received) { Err(too_large) } else { Ok(kept.freeze()) }
}
