//! Report output: a comparison's files (results.json, report.md, its plots drawn as SVG
//! scatter plots: linear or log x axis, legend, one colour per method). Deterministic text, so
//! reports can be diffed and reproduced by seed.

use crate::error::{Error, Result};
use crate::workflows::compare::report::{Plot, Report};
use std::fmt::Write;
use std::path::Path;

/// Write `report` into `dir`: results.json, the plots, then report.md (last, so that a
/// report.md means a finished comparison).
pub fn write(dir: &Path, report: &Report) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let results = serde_json::to_vec_pretty(&report.results).unwrap();
    crate::io::write_atomic(&dir.join("results.json"), &results, true)?;
    for plot in &report.plots {
        crate::io::write_atomic(&dir.join(plot.file), scatter_svg(plot).as_bytes(), true)?;
    }
    crate::io::write_atomic(&dir.join("report.md"), report.markdown.as_bytes(), true)
}

const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= n as f64)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + 1e-9 * step {
        out.push(t);
        t += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 || v.abs() < 0.01 {
        format!("{v:.0e}")
    } else {
        format!("{}", (v * 1000.0).round() / 1000.0)
    }
}

/// A plot as SVG text; a log x axis needs values above 0.
pub fn scatter_svg(plot: &Plot) -> String {
    let (title, x_label, y_label) = (&plot.title, &plot.x_label, &plot.y_label);
    let (log_x, series) = (plot.log_x, &plot.series);
    let (w, h, ml, mr, mt, mb) = (900.0, 460.0, 70.0, 330.0, 40.0, 55.0);
    let tx = |x: f64| if log_x { x.max(1e-12).log10() } else { x };
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(x, y)| (tx(x), y)))
        .collect();
    let (mut x0, mut x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if pts.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = |a: f64, b: f64| {
        let d = ((b - a) * 0.05).max(1e-3);
        (a - d, b + d)
    };
    (x0, x1) = pad(x0, x1);
    (y0, y1) = pad(y0, y1);
    let px = |x: f64| ml + (x - x0) / (x1 - x0) * (w - ml - mr);
    let py = |y: f64| h - mb - (y - y0) / (y1 - y0) * (h - mt - mb);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        (ml + w - mr) / 2.0,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{ml}" y="{mt}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        w - ml - mr,
        h - mt - mb
    );
    let xt: Vec<f64> = if log_x {
        (x0.ceil() as i64..=x1.floor() as i64)
            .map(|e| e as f64)
            .collect()
    } else {
        nice_ticks(x0, x1, 6)
    };
    for t in xt {
        let label = if log_x {
            fmt_tick(10f64.powf(t))
        } else {
            fmt_tick(t)
        };
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#ddd"/><text x="{0}" y="{3}" text-anchor="middle">{4}</text>"##,
            px(t),
            mt,
            h - mb,
            h - mb + 16.0,
            label
        );
    }
    for t in nice_ticks(y0, y1, 6) {
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#ddd"/><text x="{3}" y="{4}" text-anchor="end">{5}</text>"##,
            ml,
            py(t),
            w - mr,
            ml - 6.0,
            py(t) + 4.0,
            fmt_tick(t)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (ml + w - mr) / 2.0,
        h - 12.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
        (mt + h - mb) / 2.0,
        (mt + h - mb) / 2.0,
        esc(y_label)
    );
    for (i, se) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        if se.connect && se.points.len() > 1 {
            let path: Vec<String> = se
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(tx(x)), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
                path.join(" ")
            );
        }
        for &(x, y) in &se.points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{c}" fill-opacity="0.75"/>"#,
                px(tx(x)),
                py(y)
            );
        }
        let ly = mt + 14.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<circle cx="{}" cy="{ly}" r="5" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
            w - mr + 16.0,
            w - mr + 26.0,
            ly + 4.0,
            esc(&se.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
