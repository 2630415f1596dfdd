//! A small SVG per run: throughput per second on the left, latency
//! percentiles on the right. Hand-written: two charts do not need a plotting
//! library.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::stats::{Latency, Timeline};

const W: f64 = 900.0;
const H: f64 = 320.0;
const PANEL: f64 = 400.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 280.0;

pub fn write(
    path: &Path,
    result: &Value,
    timeline: &Timeline,
    latency: &Latency,
) -> std::io::Result<()> {
    std::fs::write(path, render(result, timeline, latency))
}

fn render(result: &Value, timeline: &Timeline, latency: &Latency) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    svg.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "{} — {}",
        result["scenario"].as_str().unwrap_or("run"),
        summary_line(result)
    );
    let _ = write!(
        svg,
        r#"<text x="20" y="22" font-size="14">{}</text>"#,
        escape(&title)
    );

    // Left: per-second counts.
    let left = 50.0;
    axis(&mut svg, left, "per second");
    let peak = timeline.0.iter().copied().max().unwrap_or(0).max(1) as f64;
    if !timeline.0.is_empty() {
        let step = PANEL / timeline.0.len().max(2).saturating_sub(1) as f64;
        let points: Vec<String> = timeline
            .0
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let x = left + i as f64 * step;
                let y = BOTTOM - (*v as f64 / peak) * (BOTTOM - TOP);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="#36c" stroke-width="2" points="{}"/>"##,
            points.join(" ")
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}">{peak:.0}</text>"#,
            left + 4.0,
            TOP - 4.0
        );
        let _ = write!(
            svg,
            r#"<text x="{left}" y="{}">seconds 0–{}</text>"#,
            BOTTOM + 18.0,
            timeline.0.len()
        );
    }

    // Right: latency percentiles as bars.
    let right = 500.0;
    axis(&mut svg, right, "latency (ms)");
    if latency.count() > 0 {
        let quantiles = [
            (0.5, "p50"),
            (0.9, "p90"),
            (0.99, "p99"),
            (0.999, "p99.9"),
            (1.0, "max"),
        ];
        let top = latency.ms_at(1.0).max(0.001);
        let width = PANEL / quantiles.len() as f64;
        for (i, (q, name)) in quantiles.iter().enumerate() {
            let ms = latency.ms_at(*q);
            let h = (ms / top) * (BOTTOM - TOP);
            let x = right + i as f64 * width + 8.0;
            let _ = write!(
                svg,
                r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#c63"/>"##,
                BOTTOM - h,
                width - 16.0
            );
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{}">{name}</text>"#,
                BOTTOM + 18.0
            );
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{:.1}">{ms:.2}</text>"#,
                BOTTOM - h - 4.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn axis(svg: &mut String, x: f64, label: &str) {
    let _ = write!(
        svg,
        r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{BOTTOM}" stroke="#999"/><line x1="{x}" y1="{BOTTOM}" x2="{}" y2="{BOTTOM}" stroke="#999"/><text x="{x}" y="{}" fill="#555">{label}</text>"##,
        x + PANEL,
        TOP - 18.0
    );
}

fn summary_line(result: &Value) -> String {
    let mut parts = Vec::new();
    for key in ["delivered", "lost", "round_trips", "connected", "failed"] {
        if let Some(v) = result.get(key) {
            parts.push(format!("{key} {v}"));
        }
    }
    parts.join(", ")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_panels() {
        let mut latency = Latency::new();
        latency.record(1500);
        let svg = render(
            &serde_json::json!({ "scenario": "fanout", "delivered": 10, "lost": 0 }),
            &Timeline(vec![3, 5, 2]),
            &latency,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("<polyline") && svg.contains("p99.9"));
        assert!(svg.contains("fanout — delivered 10, lost 0"));
    }
}
