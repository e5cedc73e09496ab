//! Header field names: the ones p2psip reads, their compact forms (RFC 3261 §7.3.3 and the
//! IANA registry), and case-insensitive lookup. Anything else is [`HeaderName::Other`].

use std::fmt;

use bytes::Bytes;

macro_rules! header_names {
    ($( $variant:ident => $canonical:literal $(, $compact:literal)? ;)*) => {
        /// A header field name. Names compare case-insensitively (RFC 3261 §7.3.1); the compact
        /// form maps to the same variant as the long form.
        #[derive(Debug, Clone)]
        pub enum HeaderName {
            $( #[doc = $canonical] $variant, )*
            /// Any header this crate does not interpret, named as received (no copy is made:
            /// the bytes are shared with the message buffer).
            Other(Bytes),
        }

        impl HeaderName {
            /// Classifies a raw field name held in a shared buffer, without copying it.
            pub fn from_shared(name: Bytes) -> HeaderName {
                Self::known(&name).unwrap_or(HeaderName::Other(name))
            }

            /// Classifies a raw field name.
            pub fn from_bytes(name: &[u8]) -> HeaderName {
                Self::known(name).unwrap_or_else(|| HeaderName::Other(Bytes::copy_from_slice(name)))
            }

            fn known(name: &[u8]) -> Option<HeaderName> {
                $(
                    if name.eq_ignore_ascii_case($canonical.as_bytes()) {
                        return Some(HeaderName::$variant);
                    }
                    $( if name.len() == 1 && name[0].eq_ignore_ascii_case(&$compact) {
                        return Some(HeaderName::$variant);
                    } )?
                )*
                None
            }

            /// The canonical long form, used when printing a header this crate built.
            pub fn as_str(&self) -> &str {
                match self {
                    $( HeaderName::$variant => $canonical, )*
                    // Names are tokens (ASCII) by construction in the parser.
                    HeaderName::Other(s) => std::str::from_utf8(s).unwrap_or("X-Invalid"),
                }
            }
        }
    };
}

header_names! {
    Via => "Via", b'v';
    From => "From", b'f';
    To => "To", b't';
    CallId => "Call-ID", b'i';
    CSeq => "CSeq";
    Contact => "Contact", b'm';
    MaxForwards => "Max-Forwards";
    Route => "Route";
    RecordRoute => "Record-Route";
    Expires => "Expires";
    ContentLength => "Content-Length", b'l';
    ContentType => "Content-Type", b'c';
    ContentEncoding => "Content-Encoding", b'e';
    Require => "Require";
    ProxyRequire => "Proxy-Require";
    Supported => "Supported", b'k';
    Unsupported => "Unsupported";
    Allow => "Allow";
    Accept => "Accept";
    AcceptEncoding => "Accept-Encoding";
    AcceptLanguage => "Accept-Language";
    Authorization => "Authorization";
    WwwAuthenticate => "WWW-Authenticate";
    ProxyAuthorization => "Proxy-Authorization";
    ProxyAuthenticate => "Proxy-Authenticate";
    UserAgent => "User-Agent";
    Server => "Server";
    Subject => "Subject", b's';
    Date => "Date";
    RetryAfter => "Retry-After";
    MinExpires => "Min-Expires";
    Event => "Event", b'o';
    AllowEvents => "Allow-Events", b'u';
    SubscriptionState => "Subscription-State";
    ReferTo => "Refer-To", b'r';
    DhtPeerId => "DHT-PeerID";
    DhtLink => "DHT-Link";
}

impl PartialEq for HeaderName {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl Eq for HeaderName {}

impl HeaderName {
    /// An extension header name, e.g. `HeaderName::other("X-Trace")`.
    pub fn other(name: &str) -> HeaderName {
        HeaderName::from_bytes(name.as_bytes())
    }

    /// Headers whose value is a comma-separated list that may also be split over several
    /// header lines (RFC 3261 §7.3.1).
    pub fn is_list(&self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Contact
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Require
                | HeaderName::ProxyRequire
                | HeaderName::Supported
                | HeaderName::Unsupported
                | HeaderName::Allow
                | HeaderName::Accept
                | HeaderName::AcceptEncoding
                | HeaderName::AcceptLanguage
                | HeaderName::AllowEvents
                | HeaderName::ContentEncoding
                | HeaderName::DhtLink
        )
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderName;

    #[test]
    fn compact_and_case() {
        assert_eq!(HeaderName::from_bytes(b"v"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"I"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"cSeQ"), HeaderName::CSeq);
        assert_eq!(HeaderName::from_bytes(b"l"), HeaderName::ContentLength);
        assert_eq!(HeaderName::from_bytes(b"X-Foo"), HeaderName::other("x-foo"));
    }
}
