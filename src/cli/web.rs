//! `p2psip web`: the address of the node's web page, with the token that lets it stop the node.

use std::net::SocketAddr;

use clap::Args;

/// Print the address of the node's web page: its ring, phones, calls, buddies, offline
/// messages and health counters, refreshed every two seconds.
///
/// The link carries the token from the node's data directory (its http-token file, readable
/// only by the user who runs the node) after `#`, which the browser keeps to itself: the page
/// needs it only to stop the node. Open the link in a browser on the same machine; the page
/// answers no other host. Asks the node's local HTTP API where its data directory is.
#[derive(Debug, Clone, Args)]
#[command(verbatim_doc_comment)]
pub struct WebArgs {
    /// The node's HTTP status API address (its `--http`)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5090")]
    pub http: SocketAddr,

    /// Print the address without the token (a page that can show but not stop the node)
    #[arg(long)]
    pub no_token: bool,
}

/// The page's address, with `token` in its fragment when there is one.
pub fn page_url(http: SocketAddr, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("http://{http}/#token={t}"),
        None => format!("http://{http}/"),
    }
}
