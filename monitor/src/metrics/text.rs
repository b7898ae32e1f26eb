//! The Prometheus text format: a family of samples written byte for byte as the prometheus
//! crate's encoder would, with escaping and bounded label values.

use prometheus::proto::MetricType;

/// One metric family: its name, HELP text, type and samples (labels, value).
pub(super) struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    pub(super) fn new(name: &'static str, kind: MetricType, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push((labels, value));
    }

    /// Appends the family in the Prometheus text format, byte for byte what the prometheus
    /// crate's `TextEncoder` writes for [`Family::into_proto`] (a test holds it to that), but
    /// without building a proto per sample: at 100 VMs x 8 vCPUs the protos were four fifths
    /// of a scrape's instructions (BENCHMARKS.md).
    fn write_text(&self, out: &mut String) {
        use std::fmt::Write;
        let kind = if self.kind == MetricType::COUNTER {
            "counter"
        } else {
            "gauge"
        };
        if !self.help.is_empty() {
            out.push_str("# HELP ");
            out.push_str(self.name);
            out.push(' ');
            push_escaped(out, self.help, false);
            out.push('\n');
        }
        for line in ["# TYPE ", self.name, " ", kind, "\n"] {
            out.push_str(line);
        }
        for (labels, value) in &self.samples {
            out.push_str(self.name);
            let mut separator = '{';
            for (name, value) in labels {
                out.push(separator);
                out.push_str(name);
                out.push_str("=\"");
                push_escaped(out, value, true);
                out.push('"');
                separator = ',';
            }
            if !labels.is_empty() {
                out.push('}');
            }
            // Writing into a String cannot fail.
            let _ = writeln!(out, " {value}");
        }
    }

    /// The proto the prometheus crate encodes: the reference [`Family::write_text`] is
    /// held to.
    #[cfg(test)]
    fn into_proto(self) -> prometheus::proto::MetricFamily {
        use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily};
        let mut family = MetricFamily::default();
        family.set_name(self.name.to_string());
        family.set_help(self.help.to_string());
        family.set_field_type(self.kind);
        for (labels, value) in self.samples {
            let mut metric = Metric::default();
            metric.set_label(
                labels
                    .into_iter()
                    .map(|(k, v)| {
                        let mut pair = LabelPair::default();
                        pair.set_name(k.to_string());
                        pair.set_value(v);
                        pair
                    })
                    .collect(),
            );
            if self.kind == MetricType::COUNTER {
                let mut c = Counter::default();
                c.set_value(value);
                metric.set_counter(c);
            } else {
                let mut g = Gauge::default();
                g.set_value(value);
                metric.set_gauge(g);
            }
            family.mut_metric().push(metric);
        }
        family
    }
}

/// A label value of at most 256 bytes: a longer one (a hostile domain or Nova name) keeps
/// its head, then `~` and 8 hex digits of a hash of the whole value, so two long values
/// never collapse into one series; `cut` counts them.
pub(super) fn bounded_label(value: &str, cut: &mut u64) -> String {
    use crate::inventory::domain_xml::MAX_LABEL_VALUE_BYTES;
    if value.len() <= MAX_LABEL_VALUE_BYTES {
        return value.to_string();
    }
    *cut += 1;
    // FNV-1a: stable across runs and builds, unlike std's randomly keyed hasher.
    let hash = value.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let mut end = MAX_LABEL_VALUE_BYTES - 9;
    // A UTF-8 character is at most 4 bytes, so this steps back at most 3 times.
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}~{hash:08x}", &value[..end])
}

/// The text format of every family that has samples (one without is left out, as the
/// prometheus crate's encoder refuses it).
pub(super) fn encode(families: Vec<Family>) -> String {
    let mut out = String::new();
    for family in families.iter().filter(|f| !f.samples.is_empty()) {
        family.write_text(&mut out);
    }
    out
}

/// `text` with backslash and newline escaped (and the double quote, in a label value), as
/// the text format wants.
fn push_escaped(out: &mut String, text: &str, quote: bool) {
    if !text
        .bytes()
        .any(|b| b == b'\\' || b == b'\n' || (quote && b == b'"'))
    {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text writer is byte for byte the prometheus crate's TextEncoder: escapes in help and
    /// label values, unlabelled samples, counters and gauges, whole and fractional values, NaN
    /// and infinities. (tests/golden_metrics.rs holds a whole render to the text the crate's
    /// encoder wrote before this writer replaced it.)
    #[test]
    fn the_text_writer_writes_what_the_crates_encoder_writes() {
        use prometheus::{Encoder, TextEncoder};
        let through_crate = |families: Vec<Family>| {
            let protos: Vec<_> = families
                .into_iter()
                .filter(|f| !f.samples.is_empty())
                .map(Family::into_proto)
                .collect();
            let mut out = Vec::new();
            TextEncoder::new().encode(&protos, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let families = || {
            let mut counter = Family::new(
                "pinsight_test_total",
                MetricType::COUNTER,
                "Help with a \\ backslash,\na newline and \"quotes\".",
            );
            counter.push(vec![("domain", "plain".into())], 3.0);
            counter.push(
                vec![("domain", "a\\b\n\"c\"".into()), ("vcpu", "0".into())],
                0.125,
            );
            counter.push(vec![("domain", "ünïcode".into())], 1e21);
            let mut gauge = Family::new("pinsight_test_ratio", MetricType::GAUGE, "");
            gauge.push(vec![], f64::NAN);
            gauge.push(vec![("k", String::new())], f64::INFINITY);
            gauge.push(vec![("k", "x".into())], -0.0);
            gauge.push(vec![("k", "y".into())], f64::NEG_INFINITY);
            let empty = Family::new("pinsight_test_empty", MetricType::GAUGE, "Never shown.");
            vec![counter, empty, gauge]
        };
        assert_eq!(encode(families()), through_crate(families()));
        assert!(encode(families()).contains(r#"domain="a\\b\n\"c\"""#));
    }
}
