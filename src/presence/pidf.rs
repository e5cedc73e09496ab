//! PIDF (RFC 3863) with the data model's person (RFC 4479) and RPID activities (RFC 4480):
//! read by namespace (quick-xml's `NsReader`, no DTD, no entity expansion), written the way
//! every phone reads it. baresip matches `<basic>` and the literal `<rpid:away/>`,
//! `<rpid:busy/>`, `<rpid:on-the-phone/>` with regular expressions, so the output keeps those
//! prefixes; Linphone reads namespaces properly.

use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;

/// The body type every phone expects, exactly (baresip answers 415 to anything else).
pub const CONTENT_TYPE: (&str, &str) = ("application", "pidf+xml");
/// Whether a message's body is declared PIDF.
pub fn is_pidf(msg: &crate::sip::Message) -> bool {
    msg.content_type()
        .ok()
        .flatten()
        .is_some_and(|t| t.ty.eq_ignore_ascii_case(CONTENT_TYPE.0) && t.subtype.eq_ignore_ascii_case(CONTENT_TYPE.1))
}

/// Largest PIDF document read or published.
pub const MAX_BYTES: usize = 4096;

const NS_PIDF: &str = "urn:ietf:params:xml:ns:pidf";
const NS_RPID: &str = "urn:ietf:params:xml:ns:pidf:rpid";

/// The part of a presence document p2psip understands and composes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// `<basic>`: `Some(true)` open, `Some(false)` closed, `None` not said.
    pub open: Option<bool>,
    /// RPID activities by local name (`away`, `busy`, `on-the-phone`, …), in document order.
    pub activities: Vec<String>,
    /// The first `<note>`, if any.
    pub note: Option<String>,
}

/// Why a body is not a presence document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PidfError {
    /// Larger than [`MAX_BYTES`].
    #[error("PIDF document larger than {MAX_BYTES} bytes")]
    TooLarge,
    /// Not well-formed XML, or not UTF-8.
    #[error("not well-formed XML: {0}")]
    Xml(String),
    /// Well-formed, but its root is not PIDF's `<presence>`.
    #[error("not a PIDF document")]
    NotPidf,
}

/// Activities a phone may show, as RPID names them (RFC 4480 §3.2).
const KNOWN_ACTIVITIES: [&str; 9] =
    ["away", "busy", "on-the-phone", "appointment", "breakfast", "dinner", "lunch", "meeting", "vacation"];

impl Presence {
    /// Reads a PIDF body.
    pub fn parse(body: &[u8]) -> Result<Presence, PidfError> {
        if body.len() > MAX_BYTES {
            return Err(PidfError::TooLarge);
        }
        let text = std::str::from_utf8(body).map_err(|e| PidfError::Xml(e.to_string()))?;
        let mut reader = NsReader::from_str(text);
        let mut out = Presence::default();
        let mut seen_root = false;
        // The element the next text belongs to.
        let mut in_text: Option<&'static str> = None;
        let mut in_activities = false;
        loop {
            let (ns, event) = reader.read_resolved_event().map_err(|e| PidfError::Xml(e.to_string()))?;
            let ns: Option<String> = match ns {
                ResolveResult::Bound(Namespace(n)) => Some(n.to_string()),
                _ => None,
            };
            match event {
                Event::Start(e) | Event::Empty(e) => {
                    let name = e.local_name().as_ref().to_owned();
                    if !seen_root {
                        if ns.as_deref() != Some(NS_PIDF) || name != "presence" {
                            return Err(PidfError::NotPidf);
                        }
                        seen_root = true;
                        continue;
                    }
                    match (ns.as_deref(), name.as_str()) {
                        (Some(NS_PIDF), "basic") => in_text = Some("basic"),
                        (_, "note") if out.note.is_none() => in_text = Some("note"),
                        (Some(NS_RPID), "activities") => in_activities = true,
                        (Some(NS_RPID), activity) if in_activities => {
                            let activity = activity.to_owned();
                            if !out.activities.contains(&activity) && out.activities.len() < 8 {
                                out.activities.push(activity);
                            }
                        }
                        _ => {}
                    }
                }
                Event::Text(t) => {
                    let value = t.xml10_content().trim().to_owned();
                    match in_text {
                        Some("basic") if out.open.is_none() => out.open = Some(value.eq_ignore_ascii_case("open")),
                        Some("note") if out.note.is_none() && !value.is_empty() => {
                            out.note = Some(value.chars().take(256).collect())
                        }
                        _ => {}
                    }
                }
                Event::End(e) => {
                    if e.local_name().as_ref() == "activities" {
                        in_activities = false;
                    }
                    in_text = None;
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if !seen_root {
            return Err(PidfError::NotPidf);
        }
        Ok(out)
    }

    /// The PIDF document for `entity` (an AoR), one tuple and, with activities or a note, one
    /// person.
    pub fn to_pidf(&self, entity: &str) -> String {
        let escape = |s: &str| quick_xml::escape::escape(s).into_owned();
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        xml += "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
                xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" \
                xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" ";
        xml += &format!("entity=\"{}\">\n", escape(entity));
        let basic = match self.open {
            Some(false) => "closed",
            _ => "open",
        };
        xml += &format!("<tuple id=\"p2psip\"><status><basic>{basic}</basic></status>");
        xml += &format!("<contact>{}</contact></tuple>\n", escape(entity));
        let activities: Vec<&String> =
            self.activities.iter().filter(|a| KNOWN_ACTIVITIES.contains(&a.as_str())).collect();
        if !activities.is_empty() || self.note.is_some() {
            xml += "<dm:person id=\"p2psip-person\">";
            if !activities.is_empty() {
                xml += "<rpid:activities>";
                for a in activities {
                    xml += &format!("<rpid:{a}/>");
                }
                xml += "</rpid:activities>";
            }
            if let Some(note) = &self.note {
                xml += &format!("<dm:note>{}</dm:note>", escape(note));
            }
            xml += "</dm:person>\n";
        }
        xml += "</presence>\n";
        xml
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_baresip_and_linphone_send_is_read_by_namespace() {
        // baresip's notifier, abridged.
        let baresip = br#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
 xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:bob@p2p.test">
<dm:person id="p4159"><rpid:activities><rpid:busy/></rpid:activities></dm:person>
<tuple id="t4109"><status><basic>open</basic></status><contact>sip:bob@p2p.test</contact></tuple>
</presence>"#;
        let p = Presence::parse(baresip).unwrap();
        assert_eq!(p.open, Some(true));
        assert_eq!(p.activities, ["busy"]);
        // Other prefixes, same namespaces; a note; closed.
        let other = br#"<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" xmlns:r="urn:ietf:params:xml:ns:pidf:rpid"
 xmlns:d="urn:ietf:params:xml:ns:pidf:data-model" entity="sip:x@y">
<p:tuple id="a"><p:status><p:basic>closed</p:basic></p:status></p:tuple>
<d:person id="b"><r:activities><r:away/></r:activities><d:note>gone &amp; back</d:note></d:person></p:presence>"#;
        let p = Presence::parse(other).unwrap();
        assert_eq!((p.open, p.activities.as_slice()), (Some(false), ["away".to_owned()].as_slice()));
        assert!(p.note.is_some());
    }

    #[test]
    fn what_we_write_reads_back_with_the_prefixes_baresip_matches() {
        let p = Presence { open: Some(true), activities: vec!["on-the-phone".into()], note: Some("a <b>".into()) };
        let xml = p.to_pidf("sip:bob@p2p.test");
        assert!(xml.contains("<basic>open</basic>") && xml.contains("<rpid:on-the-phone/>"), "{xml}");
        assert!(xml.contains("a &lt;b&gt;"), "{xml}");
        let back = Presence::parse(xml.as_bytes()).unwrap();
        assert_eq!((back.open, back.activities), (Some(true), vec!["on-the-phone".to_owned()]));
        let closed = Presence { open: Some(false), ..Presence::default() }.to_pidf("sip:bob@p2p.test");
        assert!(closed.contains("<basic>closed</basic>") && !closed.contains("person"), "{closed}");
    }

    #[test]
    fn other_documents_and_garbage_are_refused() {
        for bad in [
            &b"<presence>no namespace</presence>"[..],
            b"<x xmlns=\"urn:ietf:params:xml:ns:pidf\"/>",
            b"<<<",
            b"\xff\xfe",
            b"",
        ] {
            assert!(Presence::parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(Presence::parse(&vec![b' '; MAX_BYTES + 1]), Err(PidfError::TooLarge));
    }
}
