//! Prometheus text exposition (format 0.0.4) parsing, just enough to read samples in tests.

/// Label name/value pairs of one sample, in exposition order.
pub type Labels = Vec<(String, String)>;

/// One sample line: metric name, labels in order, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// Parses every sample line; panics naming the line when it is malformed (a daemon bug).
pub fn samples(exposition: &str) -> Vec<Sample> {
    exposition
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| parse_line(l).unwrap_or_else(|e| panic!("bad exposition line {l:?}: {e}")))
        .collect()
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

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = line[..name_end].to_string();
    if name.is_empty() {
        return Err("empty metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    // Value, then an optional timestamp.
    let value_text = rest.split_whitespace().next().ok_or("no value")?;
    let value = parse_value(value_text)?;
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` (after the opening brace); returns labels and the text after `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start();
        s = s.strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated escape".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        labels.push((key, value));
        s = s[end + 1..].trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|e| format!("value {text:?}: {e}")),
    }
}
