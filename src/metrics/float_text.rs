//! Sample values in their shortest round-trip form.
//!
//! prometheus-client writes floats with `dtoa` (Grisu2), which round-trips
//! but is often not the closest shortest text: `0.1 + 0.2` comes out as
//! `0.30000000000000007`, a sum of hook durations as `0.0025513239999999999`
//! (the value is 0.0025513239999999998), large values as
//! `2476264882812357000.0`. Rust's own float formatting writes the shortest
//! text that parses back to the same value, the closest one when several
//! are as short, so `/metrics` passes every sample value through it.
//! Labels (a histogram's `le`) and integers are left as written.

/// Rewrites the value of every sample line of OpenMetrics `text` that is a
/// finite float to its shortest round-trip form.
pub(crate) fn shortest_floats(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        match shorter_sample(body) {
            Some(shorter) => out.push_str(&shorter),
            None => out.push_str(body),
        }
        out.push_str(newline);
    }
    out
}

/// The line with its value rewritten, or `None` when it stays as it is
/// (comments, integers, `+Inf`/`NaN`, values already in that form).
fn shorter_sample(line: &str) -> Option<String> {
    if line.starts_with('#') {
        return None;
    }
    // Our samples carry no timestamps or exemplars: the value is the last
    // token (a label value may hold spaces, but it ends before the value).
    let (head, value) = line.rsplit_once(' ')?;
    if !value.contains(['.', 'e', 'E']) {
        return None;
    }
    let parsed: f64 = value.parse().ok()?;
    if !parsed.is_finite() {
        return None;
    }
    // Both forms are the shortest digits; they differ in notation (`{:?}`
    // switches to an exponent for very large and very small values).
    let (debug, display) = (format!("{parsed:?}"), format!("{parsed}"));
    let shortest = if display.len() < debug.len() {
        display
    } else {
        debug
    };
    (shortest != value).then(|| format!("{head} {shortest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_written_shortest_and_the_rest_untouched() {
        let text = "# HELP cpu CPU time.\n# TYPE cpu counter\n\
                    hook_seconds_sum 0.0025513239999999999\n\
                    sum 0.30000000000000007\n\
                    big 2476264882812357000.0\n\
                    up 1\n\
                    ratio 0.5\n\
                    h_bucket{le=\"0.0025513239999999999\"} 3\n\
                    h_bucket{le=\"+Inf\"} 3\n\
                    h_sum{kind=\"a b\"} 1.0000000000000002\n\
                    nan NaN\n\
                    tiny 1.0000000000000001e-7\n\
                    # EOF\n";
        assert_eq!(
            shortest_floats(text),
            "# HELP cpu CPU time.\n# TYPE cpu counter\n\
             hook_seconds_sum 0.0025513239999999998\n\
             sum 0.30000000000000004\n\
             big 2476264882812357000\n\
             up 1\n\
             ratio 0.5\n\
             h_bucket{le=\"0.0025513239999999999\"} 3\n\
             h_bucket{le=\"+Inf\"} 3\n\
             h_sum{kind=\"a b\"} 1.0000000000000002\n\
             nan NaN\n\
             tiny 1.0000000000000001e-7\n\
             # EOF\n"
        );
    }

    #[test]
    fn every_value_dtoa_writes_comes_out_shortest_and_unchanged() {
        // From about 5e-10 to 1e19 by a fixed stride: the same values each run.
        let mut rewritten = 0;
        for i in 0..20_000u64 {
            let value = f64::from_bits(0x3e00_0000_0000_0000 + i * 0x0000_1357_9bdf_0247);
            if !value.is_finite() {
                continue;
            }
            let dtoa_text = dtoa::Buffer::new().format(value).to_string();
            let line = format!("m{{a=\"x y\"}} {dtoa_text}");
            let out = shortest_floats(&line);
            let written = out.rsplit_once(' ').unwrap().1;
            assert_eq!(written.parse::<f64>().unwrap(), value, "{line} -> {out}");
            assert!(written.len() <= dtoa_text.len(), "{line} -> {out}");
            assert!(
                [format!("{value:?}"), format!("{value}")].contains(&written.to_string()),
                "{line} -> {out}"
            );
            rewritten += usize::from(written != dtoa_text);
        }
        assert!(
            rewritten > 0,
            "the sample holds values dtoa writes differently"
        );
    }
}
