//! Samples out of a Prometheus text exposition (format 0.0.4), read through openmetrics-parser's
//! grammar of the format (quoted label values with their escapes, `+Inf`, timestamps), so a
//! test reads exactly what Prometheus would.

use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::PrometheusValue;

/// One sample: metric name, label name/value pairs (sorted by name), value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample of the exposition; panics with the parser's error when it does not parse (a
/// daemon bug: Prometheus would reject the whole scrape).
pub fn samples(exposition: &str) -> Vec<Sample> {
    let parsed = parse_prometheus(exposition)
        .unwrap_or_else(|e| panic!("the exposition does not parse: {e:?}\n{exposition}"));
    let mut out = Vec::new();
    for family in parsed.families.values() {
        for sample in family.iter_samples() {
            let value = match &sample.value {
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
                PrometheusValue::Counter(c) => c.value.as_f64(),
                // pinsight exports neither; reading one would need bucket/quantile names.
                other => panic!(
                    "{}: histograms and summaries are not read here: {other:?}",
                    family.family_name
                ),
            };
            let labels = sample
                .get_labelset()
                .unwrap_or_else(|e| panic!("labels of {}: {e:?}", family.family_name))
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            out.push(Sample {
                name: family.family_name.clone(),
                labels,
                value,
            });
        }
    }
    out
}

/// Value of the one sample of `name` whose labels include all of `labels`; None if absent.
/// Panics if several samples match: the caller's label subset is ambiguous.
pub fn metric_value(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<Sample> = matches(exposition, name, labels).collect();
    match matching.as_slice() {
        [] => None,
        [one] => Some(one.value),
        many => panic!(
            "{} samples of {name} match labels {labels:?}; add labels to pick one: {many:?}",
            many.len()
        ),
    }
}

/// Sum of all samples of `name` whose labels include all of `labels` (0 if none).
pub fn metric_sum(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    matches(exposition, name, labels).map(|s| s.value).sum()
}

fn matches<'a>(
    exposition: &str,
    name: &'a str,
    labels: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = Sample> + 'a {
    samples(exposition).into_iter().filter(move |s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
    })
}
