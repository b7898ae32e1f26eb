//! Bounds on what one VM's XML may cost pinsight. Anyone with write access to a domain's
//! metadata (`virsh metadata --set`) writes the operator and state elements, and pinsight
//! reads them for every VM, so their size and entries are capped; label values taken from
//! the XML (domain names, Nova names) are cut before they become metric labels.

/// Largest operator (`urn:pinsight:domain:1`), state (`urn:pinsight:state:1`) or Nova
/// element, in bytes of XML text. Real ones are well under 4 KiB.
pub const MAX_METADATA_ELEMENT_BYTES: usize = 64 * 1024;

/// Most child entries (`<gpu>`, `<policy>`, `<vcpu>`, ...) one metadata element may hold:
/// one per vCPU of the largest VM QEMU starts, with room to spare.
pub const MAX_METADATA_ENTRIES: usize = 4096;

/// Most XML nodes (elements, text, comments) a domain XML may have. A large real domain has
/// a few thousand; the cap keeps roxmltree's tree of a hostile document at a few MiB.
pub const MAX_DOMAIN_XML_NODES: u32 = 1 << 17;

/// Largest domain XML pinsight reads, in bytes. libvirt's RPC caps a string at 4 MiB; real
/// domains are under 100 KiB even with thousands of vCPU pins.
pub const MAX_DOMAIN_XML_BYTES: usize = 1 << 20;

/// Most attributes one element may carry. roxmltree checks each new attribute against the
/// element's earlier ones, so the cost grows with their square (50,000 attributes on one
/// metadata element: 2.6 s per parse); libvirt's own elements have a dozen at most, and 64
/// keeps a whole 1 MiB document of such elements to a few milliseconds.
pub const MAX_ATTRIBUTES_PER_ELEMENT: usize = 64;

/// Longest label value (domain name, Nova instance, project or flavor name) pinsight
/// exports, in bytes. libvirt and Nova allow longer names; no dashboard shows more.
pub const MAX_LABEL_VALUE_BYTES: usize = 256;

/// `value` cut to at most [`MAX_LABEL_VALUE_BYTES`] at a character boundary, and whether it
/// was cut (so the caller can count cut values).
pub fn cut_label_value(value: &str) -> (&str, bool) {
    if value.len() <= MAX_LABEL_VALUE_BYTES {
        return (value, false);
    }
    let mut end = MAX_LABEL_VALUE_BYTES;
    // A UTF-8 character is at most 4 bytes, so this steps back at most 3 times.
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    (&value[..end], true)
}

/// Why `xml` is too costly to hand to the XML parser (too long, or an element with too many
/// attributes), or `None`. One pass over the bytes, no allocation.
pub(crate) fn text_over_limits(xml: &str, max_bytes: usize) -> Option<String> {
    if xml.len() > max_bytes {
        return Some(format!(
            "is {} bytes, more than the limit of {max_bytes}",
            xml.len()
        ));
    }
    let most = most_attributes(xml.as_bytes());
    (most > MAX_ATTRIBUTES_PER_ELEMENT).then(|| {
        format!(
            "has an element with {most} attributes, more than the limit of \
             {MAX_ATTRIBUTES_PER_ELEMENT}"
        )
    })
}

/// The most `=` signs outside quotes within one tag: an upper bound on any element's
/// attributes. Comments, CDATA sections and processing instructions are skipped, so a `=` in
/// them does not count; malformed text only counts high, and then the parser refuses it.
fn most_attributes(xml: &[u8]) -> usize {
    let skip_to = |from: usize, end: &[u8]| {
        xml[from..]
            .windows(end.len())
            .position(|w| w == end)
            .map_or(xml.len(), |at| from + at + end.len())
    };
    let (mut most, mut at) = (0, 0);
    while at < xml.len() {
        if xml[at] != b'<' {
            at += 1;
            continue;
        }
        let rest = &xml[at..];
        if rest.starts_with(b"<!--") {
            at = skip_to(at + 4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            at = skip_to(at + 9, b"]]>");
        } else if rest.starts_with(b"<?") {
            at = skip_to(at + 2, b"?>");
        } else {
            let (mut count, mut quote) = (0, None);
            at += 1;
            while at < xml.len() {
                match (quote, xml[at]) {
                    (None, b'>') => break,
                    (None, b'=') => count += 1,
                    (None, q @ (b'"' | b'\'')) => quote = Some(q),
                    (Some(q), c) if c == q => quote = None,
                    _ => {}
                }
                at += 1;
            }
            most = most.max(count);
        }
    }
    most
}

/// Why a metadata element is refused whole, or `None` if it is within the bounds.
pub(crate) fn element_over_limits(bytes: usize, entries: usize) -> Option<String> {
    if bytes > MAX_METADATA_ELEMENT_BYTES {
        return Some(format!(
            "is {bytes} bytes, more than the limit of {MAX_METADATA_ELEMENT_BYTES}"
        ));
    }
    if entries > MAX_METADATA_ENTRIES {
        return Some(format!(
            "has {entries} entries, more than the limit of {MAX_METADATA_ENTRIES}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_cut_at_a_character_boundary() {
        assert_eq!(cut_label_value("vm-1"), ("vm-1", false));
        let exact = "a".repeat(MAX_LABEL_VALUE_BYTES);
        assert_eq!(cut_label_value(&exact), (exact.as_str(), false));
        // 255 ASCII bytes then a 3-byte character straddling the limit.
        let long = format!("{}€tail", "a".repeat(MAX_LABEL_VALUE_BYTES - 1));
        let (cut, was_cut) = cut_label_value(&long);
        assert!(was_cut);
        assert_eq!(cut, &long[..MAX_LABEL_VALUE_BYTES - 1]);
    }

    fn domain_with_metadata(element: &str) -> String {
        format!(
            "<domain type='kvm'><name>t</name><uuid>2d833cbe-a208-41db-bb80-226efe2b65e2</uuid>\
             <vcpu>1</vcpu><metadata>{element}</metadata></domain>"
        )
    }

    #[test]
    fn oversized_operator_and_nova_elements_are_ignored_with_a_warning() {
        let gpus = "<gpu address='0000:3b:00.0'/>".repeat(MAX_METADATA_ENTRIES + 1);
        let operator = format!("<p:domain xmlns:p='urn:pinsight:domain:1'>{gpus}</p:domain>");
        let spec = super::super::parse_domain_xml(&domain_with_metadata(&operator)).unwrap();
        assert!(spec.gpus.is_empty());
        assert_eq!(spec.warnings.len(), 1, "one warning, not one per entry");
        assert!(
            spec.warnings[0].contains("domain t: pinsight metadata element <domain>")
                && spec.warnings[0].contains("more than the limit of 65536"),
            "{:?}",
            spec.warnings
        );
        let entries = "<p:x/>".repeat(MAX_METADATA_ENTRIES + 1);
        let operator = format!("<p:domain xmlns:p='urn:pinsight:domain:1'>{entries}</p:domain>");
        let spec = super::super::parse_domain_xml(&domain_with_metadata(&operator)).unwrap();
        assert!(
            spec.warnings[0].contains("has 4097 entries"),
            "{:?}",
            spec.warnings
        );

        let name = "n".repeat(MAX_METADATA_ELEMENT_BYTES);
        let nova = format!(
            "<nova:instance xmlns:nova='{}'><nova:name>{name}</nova:name></nova:instance>",
            super::super::NOVA_NS
        );
        let spec = super::super::parse_domain_xml(&domain_with_metadata(&nova)).unwrap();
        assert_eq!(spec.nova, None);
        assert!(
            spec.warnings[0].contains("Nova metadata element <instance>"),
            "{:?}",
            spec.warnings
        );
    }

    #[test]
    fn a_domain_xml_past_the_node_limit_is_malformed() {
        let nodes = "<p:x/>".repeat(MAX_DOMAIN_XML_NODES as usize);
        let xml = domain_with_metadata(&format!("<p:o xmlns:p='urn:other'>{nodes}</p:o>"));
        let e = super::super::parse_domain_xml(&xml)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("domain t: malformed XML"), "{e}");
    }

    /// Found by probing what the fuzz targets' slowest inputs have in common: roxmltree's
    /// duplicate-attribute check is quadratic (50,000 attributes: 2.6 s).
    #[test]
    fn elements_with_thousands_of_attributes_are_refused_before_parsing() {
        let attrs: String = (0..50_000).map(|i| format!(" a{i}=''")).collect();
        let xml = domain_with_metadata(&format!("<x{attrs}/>"));
        let start = std::time::Instant::now();
        let e = super::super::parse_domain_xml(&xml)
            .unwrap_err()
            .to_string();
        assert!(
            start.elapsed() < std::time::Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        assert!(
            e.starts_with("domain t: ") && e.contains("has an element with 50000 attributes"),
            "{e}"
        );
        let big = domain_with_metadata(&"<x/>".repeat(MAX_DOMAIN_XML_BYTES / 4));
        let e = super::super::parse_domain_xml(&big)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than the limit of 1048576"), "{e}");
        // The worst the limits allow: 1 MiB of elements with 64 attributes each.
        let attrs: String = (0..MAX_ATTRIBUTES_PER_ELEMENT)
            .map(|i| format!(" a{i}=''"))
            .collect();
        let element = format!("<x{attrs}/>");
        let worst = domain_with_metadata(&element.repeat(MAX_DOMAIN_XML_BYTES / element.len() - 1));
        // This thread's CPU time, best of three: the input's cost, not the wall time of a
        // loaded test machine (the other tests of this binary run beside it).
        let took = (0..3)
            .map(|_| {
                let start = thread_cpu_time();
                let spec = super::super::parse_domain_xml(&worst);
                assert!(spec.is_ok(), "{} bytes: {spec:?}", worst.len());
                thread_cpu_time() - start
            })
            .min()
            .unwrap();
        assert!(took < std::time::Duration::from_millis(100), "{took:?}");
        // '=' in quotes, comments and CDATA is no attribute.
        let text = "<a x='=====' y=\"==\"><!-- = = = --><![CDATA[= = =]]><?pi a=b c=d?></a>";
        assert_eq!(most_attributes(text.as_bytes()), 2);
        assert_eq!(text_over_limits(text, 1000), None);
    }

    /// CPU time this thread has used.
    fn thread_cpu_time() -> std::time::Duration {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec it is given.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    #[test]
    fn limits_are_named_in_the_reason() {
        assert_eq!(element_over_limits(100, 10), None);
        let too_big = element_over_limits(MAX_METADATA_ELEMENT_BYTES + 1, 1).unwrap();
        assert!(
            too_big.contains("65537 bytes") && too_big.contains("65536"),
            "{too_big}"
        );
        let too_many = element_over_limits(1000, MAX_METADATA_ENTRIES + 1).unwrap();
        assert!(
            too_many.contains("4097 entries") && too_many.contains("4096"),
            "{too_many}"
        );
    }
}
