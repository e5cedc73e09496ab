//! `GET /`: the node's web page, one HTML file built into the binary (`page.html`): no
//! external script, style or font, so it works with no Internet. Its script polls `/status`
//! and `/messages` every 2 s, and `/lookup` of our AoR once a minute for where our records
//! live, and draws the ring as SVG.
//!
//! It is served under the API's Host and cross-site checks. A Content-Security-Policy lets it
//! talk only to this origin and forbids framing, so another site cannot put its stop button
//! under a user's click; the stop itself needs the data directory's token.

use axum::http::header;
use axum::response::IntoResponse;

/// The page, as built into the binary.
pub const HTML: &str = include_str!("page.html");

/// What the page may do: its own inline script and style, requests to this origin only.
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                      connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'";

pub(crate) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        HTML,
    )
}
