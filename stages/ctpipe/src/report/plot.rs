//! Line plots as SVG: loss curves, metric-versus-step plots. Written by hand (a few hundred
//! bytes of markup per series) so that no font or system library is needed to draw one.

use std::fmt::Write as _;

/// One line of a plot.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: &'static str,
}

/// A line plot, `log_y` for a log₁₀ y axis (non-positive values are skipped there).
pub fn line_plot_svg(title: &str, x_label: &str, y_label: &str, series: &[Series], log_y: bool) -> String {
    let (w, h) = (720.0, 420.0);
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 50.0);
    let ty = |y: f64| if log_y { y.log10() } else { y };
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
        .map(|(x, y)| (x, ty(y)))
        .collect();
    let mut svg = String::new();
    let _ = write!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#);
    let _ = write!(svg, r#"<rect width="{w}" height="{h}" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#, w / 2.0, esc(title));
    if pts.is_empty() {
        svg.push_str("</svg>\n");
        return svg;
    }
    let (mut x0, mut x1) = minmax(pts.iter().map(|p| p.0));
    let (mut y0, mut y1) = minmax(pts.iter().map(|p| p.1));
    if x1 <= x0 {
        x1 = x0 + 1.0;
        x0 -= 0.0;
    }
    if y1 <= y0 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let (pw, ph) = (w - left - right, h - top - bottom);
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| top + ph - (y - y0) / (y1 - y0) * ph;
    let _ = write!(svg, r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##);
    for i in 0..=5 {
        let fx = x0 + (x1 - x0) * i as f64 / 5.0;
        let fy = y0 + (y1 - y0) * i as f64 / 5.0;
        let ylab = sig3(if log_y { 10f64.powf(fy) } else { fy });
        let _ = write!(
            svg,
            r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#eee"/><text x="{0}" y="{3}" text-anchor="middle">{4}</text><line x1="{5}" y1="{6}" x2="{7}" y2="{6}" stroke="#eee"/><text x="{8}" y="{9}" text-anchor="end">{10}</text>"##,
            sx(fx), top, top + ph, top + ph + 16.0, fmt_x(fx), left, sy(fy), left + pw, left - 6.0, sy(fy) + 4.0, ylab
        );
    }
    let _ = write!(svg, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, left + pw / 2.0, h - 12.0, esc(x_label));
    let _ = write!(svg, r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">{1}</text>"#, top + ph / 2.0, esc(&format!("{y_label}{}", if log_y { " (log scale)" } else { "" })));
    for (k, s) in series.iter().enumerate() {
        let path: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(ty(y))))
            .collect();
        if path.len() == 1 {
            let _ = write!(svg, r#"<circle cx="{}" r="3" fill="{}" cy="{}"/>"#, path[0].split(',').next().unwrap_or("0"), s.color, path[0].split(',').nth(1).unwrap_or("0"));
        } else {
            let _ = write!(svg, r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#, s.color, path.join(" "));
        }
        let ly = top + 16.0 + 16.0 * k as f64;
        let _ = write!(svg, r#"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="{3}" stroke-width="3"/><text x="{4}" y="{5}">{6}</text>"#, left + pw - 150.0, ly, left + pw - 130.0, s.color, left + pw - 124.0, ly + 4.0, esc(&s.name));
    }
    svg.push_str("</svg>\n");
    svg
}

fn fmt_x(x: f64) -> String {
    if x.abs() >= 1e4 { format!("{:.0}k", x / 1e3) } else { format!("{x:.4}").trim_end_matches('0').trim_end_matches('.').to_string() }
}

/// Three significant digits, plain or scientific by magnitude.
fn sig3(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else {
        let decimals = if a == 0.0 { 0 } else { (2 - a.log10().floor() as i32).max(0) as usize };
        format!("{v:.decimals$}")
    }
}

fn minmax(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A moving average (window `w`), for smoothing noisy loss curves.
pub fn moving_average(points: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    let w = w.max(1);
    let mut out = Vec::with_capacity(points.len());
    let mut sum = 0.0;
    for (i, &(x, y)) in points.iter().enumerate() {
        sum += y;
        if i >= w {
            sum -= points[i - w].1;
        }
        out.push((x, sum / (i + 1).min(w) as f64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_is_well_formed_and_scales() {
        let s = Series { name: "loss".into(), points: vec![(0.0, 1.0), (10.0, 0.1), (20.0, 0.01)], color: "#1f77b4" };
        let svg = line_plot_svg("Loss <ECT>", "step", "loss", &[s], true);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Loss &lt;ECT&gt;"));
        // log scale: the three points are equally spaced vertically.
        let pts = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        let ys: Vec<f64> = pts.split(' ').map(|p| p.split(',').nth(1).unwrap().parse().unwrap()).collect();
        assert!(((ys[1] - ys[0]) - (ys[2] - ys[1])).abs() < 0.2, "{ys:?}");
        assert_eq!(moving_average(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)], 2), vec![(0.0, 1.0), (1.0, 2.0), (2.0, 4.0)]);
    }
}
