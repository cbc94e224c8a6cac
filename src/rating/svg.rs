//! The ratings as an SVG plot: one row per model, best first, a dot at its rating and a bar over
//! its 95% interval, on a shared Elo axis. Model names are escaped (they are text, never markup).

/// The plot of `rows` (`(name, rating, (low, high))`, best first).
pub fn ratings_svg(rows: &[(String, f64, (f64, f64))]) -> String {
    let (label_w, plot_w, row_h, top) = (220.0, 520.0, 28.0, 40.0);
    let finite = |x: f64| if x.is_finite() { Some(x) } else { None };
    let lo = rows.iter().filter_map(|r| finite(r.2 .0).or(finite(r.1))).fold(f64::INFINITY, f64::min);
    let hi = rows.iter().filter_map(|r| finite(r.2 .1).or(finite(r.1))).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo - 20.0, hi + 20.0) } else { (900.0, 1100.0) };
    let x = |r: f64| label_w + (r - lo) / (hi - lo) * plot_w;
    let height = top + row_h * rows.len() as f64 + 40.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <text x=\"10\" y=\"22\" font-weight=\"bold\">Elo ratings (Bradley-Terry), 95% bootstrap intervals</text>\n",
        label_w + plot_w + 30.0
    );
    for (i, (name, rating, (l, h))) in rows.iter().enumerate() {
        let y = top + row_h * (i as f64 + 0.5);
        s += &format!("<text x=\"10\" y=\"{:.1}\">{}</text>\n", y + 4.0, escape(name));
        if l.is_finite() && h.is_finite() {
            s += &format!("<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#4878a8\" stroke-width=\"3\"/>\n", x(*l), x(*h));
        }
        s += &format!("<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"5\" fill=\"#c0392b\"/>\n", x(*rating));
        s += &format!("<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{rating:.0}</text>\n", x(*rating) + 8.0, y - 7.0);
    }
    let axis_y = top + row_h * rows.len() as f64 + 10.0;
    s += &format!("<line x1=\"{label_w}\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\" stroke=\"black\"/>\n", label_w + plot_w);
    for k in 0..=4 {
        let r = lo + (hi - lo) * k as f64 / 4.0;
        s += &format!("<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{r:.0}</text>\n", x(r), axis_y + 16.0);
    }
    s + "</svg>\n"
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_every_model_is_drawn() {
        let svg = ratings_svg(&[("<b>a&b</b>".into(), 1100.0, (1080.0, 1120.0)), ("m2".into(), 900.0, (880.0, 920.0))]);
        assert!(svg.contains("&lt;b&gt;a&amp;b&lt;/b&gt;") && !svg.contains("<b>"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}
