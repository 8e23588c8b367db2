//! Small SVG building blocks for the HTML report: "nice" axis ticks (linear
//! and powers of two), a line chart with axes, units and a legend, a rack
//! map and a step timeline. Output is plain SVG 1.1 text with every label
//! escaped; nothing here knows about runs or nodes.

use std::fmt::Write as _;

use super::text::xml_attr as esc;

/// Tick positions along one linear axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Ticks {
    /// The axis starts here (a multiple of `step`, at or below the data).
    pub lo: f64,
    /// The axis ends here (a multiple of `step`, at or above the data).
    pub hi: f64,
    /// The distance between ticks: 1, 2, 2.5 or 5 times a power of ten.
    pub step: f64,
    /// Every tick from `lo` to `hi`.
    pub values: Vec<f64>,
}

impl Ticks {
    /// A tick value as a label, with as many decimals as the step needs.
    pub fn label(&self, value: f64) -> String {
        let decimals = decimals(self.step);
        let text = format!("{value:.decimals$}");
        // "-0" and "-0.0" read as a bug on an axis.
        if text
            .trim_start_matches('-')
            .chars()
            .all(|c| c == '0' || c == '.')
        {
            text.trim_start_matches('-').to_owned()
        } else {
            text
        }
    }
}

/// Decimals a tick step needs: none for 1, 2, 5, 10…; one for 0.5 and
/// 2.5; two for 0.25…
fn decimals(step: f64) -> usize {
    let exp = step.log10().floor() as i32;
    let mut decimals = (-exp).max(0) as usize;
    if exp <= 0 && is_fractional_mantissa(step) {
        decimals += 1;
    }
    decimals
}

/// Whether `step` is 2.5 × 10^k (which needs one more decimal than 10^k).
fn is_fractional_mantissa(step: f64) -> bool {
    let mantissa = step / 10f64.powf(step.log10().floor());
    (mantissa - 2.5).abs() < 1e-9
}

/// Ticks covering `[min, max]` with at most about `max_ticks` ticks, on
/// round numbers. An empty or flat range is widened so the axis still has
/// a scale; non-finite input gives the axis 0 to 1.
pub fn nice_ticks(min: f64, max: f64, max_ticks: usize) -> Ticks {
    let (mut min, mut max) = if min.is_finite() && max.is_finite() {
        (min.min(max), min.max(max))
    } else {
        (0.0, 1.0)
    };
    if max - min < 1e-9 {
        let pad = if min.abs() < 1e-9 {
            1.0
        } else {
            min.abs() * 0.1
        };
        min -= pad;
        max += pad;
    }
    let intervals = max_ticks.max(2) - 1;
    let raw = (max - min) / intervals as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude);
    let lo = (min / step + 1e-9).floor() * step;
    let hi = (max / step - 1e-9).ceil() * step;
    let count = ((hi - lo) / step).round() as usize;
    let values = (0..=count)
        .map(|i| {
            // Rounded past the step's decimals: no 0.30000000000000004.
            let scale = 10f64.powi(decimals(step) as i32 + 2);
            ((lo + i as f64 * step) * scale).round() / scale
        })
        .collect();
    Ticks {
        lo,
        hi,
        step,
        values,
    }
}

/// Labelled ticks on a log2 axis of byte sizes: exponents from
/// `floor(log2(min))` to `ceil(log2(max))`, labelled every 1, 2, 5 or 10
/// powers so labels fall on 1 KiB, 1 MiB, 1 GiB where they can. Returns
/// (exponent, label) pairs and the axis range in exponents.
pub fn log2_byte_ticks(min: f64, max: f64, max_ticks: usize) -> (Vec<(f64, String)>, (f64, f64)) {
    let min = if min.is_finite() && min >= 1.0 {
        min
    } else {
        1.0
    };
    let max = if max.is_finite() && max > min {
        max
    } else {
        min * 2.0
    };
    let lo = min.log2().floor();
    let hi = max.log2().ceil();
    let span = (hi - lo) as usize + 1;
    let stride = [1usize, 2, 5, 10, 20, 30]
        .into_iter()
        .find(|s| span.div_ceil(*s) <= max_ticks.max(2))
        .unwrap_or(30);
    let ticks = (lo as i64..=hi as i64)
        .filter(|e| e.rem_euclid(stride as i64) == 0)
        .map(|e| (e as f64, human_bytes(2f64.powi(e as i32))))
        .collect();
    (ticks, (lo, hi))
}

/// A byte count with binary units: `8 B`, `1 KiB`, `1.5 MiB`, `8 GiB`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if (value - value.round()).abs() < 1e-9 {
        format!("{} {}", value.round(), UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How the x axis maps values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XScale {
    /// Linear, with [`nice_ticks`].
    Linear,
    /// Byte sizes on a log2 axis, with [`log2_byte_ticks`].
    Log2Bytes,
}

/// One line of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Its legend entry.
    pub label: String,
    /// (x, y) in data units; non-finite points are left out.
    pub points: Vec<(f64, f64)>,
    /// Its stroke colour (`#rrggbb`).
    pub colour: String,
}

/// A horizontal reference line (a floor, a limit), drawn dashed.
#[derive(Clone, Debug, PartialEq)]
pub struct HLine {
    /// The y value.
    pub y: f64,
    /// Its legend entry.
    pub label: String,
    /// Its colour.
    pub colour: String,
}

/// A line chart: axes with ticks, units in the axis titles, a legend on
/// the right.
#[derive(Clone, Debug, PartialEq)]
pub struct LineChart {
    /// Shown above the plot, and as the SVG's accessible name.
    pub title: String,
    /// The x axis title, with its unit.
    pub x_label: String,
    /// The y axis title, with its unit.
    pub y_label: String,
    /// How x maps.
    pub x_scale: XScale,
    /// Whether the y axis starts at zero whatever the data.
    pub y_from_zero: bool,
    /// The lines.
    pub series: Vec<Series>,
    /// Dashed reference lines.
    pub hlines: Vec<HLine>,
}

/// Chart geometry, in SVG user units (pixels at 100 %).
const W: f64 = 590.0;
const H: f64 = 300.0;
const LEFT: f64 = 62.0;
const RIGHT: f64 = 140.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 46.0;

impl LineChart {
    /// The chart as an `<svg>` element.
    pub fn to_svg(&self) -> String {
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let xform = |x: f64| match self.x_scale {
            XScale::Linear => x,
            XScale::Log2Bytes => x.log2(),
        };
        let points = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter().copied())
                .filter(|(x, y)| {
                    x.is_finite() && y.is_finite() && (self.x_scale == XScale::Linear || *x > 0.0)
                })
        };
        let (mut x_min, mut x_max, mut y_min, mut y_max) = (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        );
        for (x, y) in points() {
            x_min = x_min.min(x);
            x_max = x_max.max(x);
            y_min = y_min.min(y);
            y_max = y_max.max(y);
        }
        for h in self.hlines.iter().filter(|h| h.y.is_finite()) {
            y_min = y_min.min(h.y);
            y_max = y_max.max(h.y);
        }
        if self.y_from_zero {
            y_min = y_min.min(0.0);
        }
        let y_ticks = nice_ticks(y_min, y_max, 7);
        let (x_ticks, (x_lo, x_hi)): (Vec<(f64, String)>, (f64, f64)) = match self.x_scale {
            XScale::Linear => {
                let t = nice_ticks(x_min, x_max, 8);
                let labelled = t.values.iter().map(|v| (*v, t.label(*v))).collect();
                (labelled, (t.lo, t.hi))
            }
            XScale::Log2Bytes => log2_byte_ticks(x_min, x_max, 8),
        };
        let sx = |x: f64| LEFT + (xform(x) - x_lo) / (x_hi - x_lo) * pw;
        let sx_raw = |e: f64| LEFT + (e - x_lo) / (x_hi - x_lo) * pw;
        let sy = |y: f64| TOP + ph - (y - y_ticks.lo) / (y_ticks.hi - y_ticks.lo) * ph;

        let mut svg = String::new();
        let _ = writeln!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 {W} {H}\" \
             width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">",
            esc(&self.title)
        );
        let _ = writeln!(svg, "<title>{}</title>", esc(&self.title));
        let _ = writeln!(
            svg,
            "<text x=\"{LEFT}\" y=\"18\" class=\"title\">{}</text>",
            esc(&self.title)
        );
        // Grid and y ticks.
        for v in &y_ticks.values {
            let y = sy(*v);
            let _ = writeln!(
                svg,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" class=\"grid\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{}</text>",
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                esc(&y_ticks.label(*v)),
            );
        }
        // Minor ticks on every power of two; labelled ones get a grid line.
        if self.x_scale == XScale::Log2Bytes {
            let mut e = x_lo;
            while e <= x_hi + 1e-9 {
                let x = sx_raw(e);
                let _ = writeln!(
                    svg,
                    "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" class=\"axis\"/>",
                    TOP + ph,
                    TOP + ph + 3.0
                );
                e += 1.0;
            }
        }
        for (v, label) in &x_ticks {
            let x = sx_raw(*v);
            let _ = writeln!(
                svg,
                "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" class=\"grid\"/>\
                 <line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" class=\"axis\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"middle\">{}</text>",
                TOP + ph,
                TOP + ph,
                TOP + ph + 6.0,
                TOP + ph + 18.0,
                esc(label),
            );
        }
        // Axes and their titles.
        let _ = writeln!(
            svg,
            "<path d=\"M{LEFT} {TOP}V{:.1}H{:.1}\" class=\"axis\" fill=\"none\"/>",
            TOP + ph,
            LEFT + pw
        );
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"axis-title\" text-anchor=\"middle\">{}</text>",
            LEFT + pw / 2.0,
            H - 8.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            svg,
            "<text transform=\"translate(16 {:.1}) rotate(-90)\" class=\"axis-title\" \
             text-anchor=\"middle\">{}</text>",
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        // Reference lines, then the data on top.
        for h in self.hlines.iter().filter(|h| h.y.is_finite()) {
            let y = sy(h.y);
            let _ = writeln!(
                svg,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\" \
                 stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>",
                LEFT + pw,
                esc(&h.colour)
            );
        }
        for s in &self.series {
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| {
                    x.is_finite() && y.is_finite() && (self.x_scale == XScale::Linear || *x > 0.0)
                })
                .map(|(x, y)| (sx(x), sy(y)))
                .collect();
            if pts.len() == 1 {
                let _ = writeln!(
                    svg,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                    pts[0].0,
                    pts[0].1,
                    esc(&s.colour)
                );
                continue;
            }
            let mut d = String::new();
            for (i, (x, y)) in pts.iter().enumerate() {
                let _ = write!(d, "{}{x:.1} {y:.1}", if i == 0 { "M" } else { "L" });
            }
            if !d.is_empty() {
                let _ = writeln!(
                    svg,
                    "<path d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" \
                     stroke-linejoin=\"round\"><title>{}</title></path>",
                    esc(&s.colour),
                    esc(&s.label)
                );
            }
        }
        // Legend: a swatch and a label per line, dashed for reference lines.
        let lx = LEFT + pw + 14.0;
        let mut ly = TOP + 6.0;
        for s in &self.series {
            legend_entry(&mut svg, lx, ly, &s.colour, &s.label, false);
            ly += 16.0;
        }
        for h in &self.hlines {
            legend_entry(&mut svg, lx, ly, &h.colour, &h.label, true);
            ly += 16.0;
        }
        svg.push_str("</svg>\n");
        svg
    }
}

fn legend_entry(svg: &mut String, x: f64, y: f64, colour: &str, label: &str, dashed: bool) {
    let dash = if dashed {
        " stroke-dasharray=\"6 4\""
    } else {
        ""
    };
    let _ = writeln!(
        svg,
        "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\" \
         stroke-width=\"2.5\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\" class=\"legend\">{}</text>",
        x + 22.0,
        esc(colour),
        x + 28.0,
        y + 4.0,
        esc(label)
    );
}

/// One node in a rack map.
#[derive(Clone, Debug, PartialEq)]
pub struct RackCell {
    /// The node's name, written in the cell.
    pub name: String,
    /// A short word for its state, written in the cell too (the colour is
    /// not the only signal).
    pub tag: String,
    /// Fill colour.
    pub colour: String,
    /// Where a click goes (`#node-…`).
    pub href: String,
}

/// Racks side by side, each a column of node cells top to bottom.
pub fn rack_map(racks: &[(String, Vec<RackCell>)]) -> String {
    const COL_W: f64 = 168.0;
    const CELL_H: f64 = 26.0;
    const GAP: f64 = 14.0;
    const HEAD: f64 = 24.0;
    let rows = racks.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
    let w = GAP + racks.len() as f64 * (COL_W + GAP);
    let h = HEAD + rows as f64 * (CELL_H + 4.0) + GAP;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"rackmap\" viewBox=\"0 0 {w} {h}\" \
         width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"Rack map\">"
    );
    svg.push_str("<title>Rack map: nodes by rack, coloured by verdict</title>\n");
    for (i, (rack, cells)) in racks.iter().enumerate() {
        let x = GAP + i as f64 * (COL_W + GAP);
        let _ = writeln!(
            svg,
            "<rect x=\"{:.1}\" y=\"2\" width=\"{:.1}\" height=\"{:.1}\" rx=\"6\" class=\"rack\"/>\
             <text x=\"{:.1}\" y=\"18\" class=\"rack-name\" text-anchor=\"middle\">rack {}</text>",
            x - 5.0,
            COL_W + 10.0,
            h - 6.0,
            x + COL_W / 2.0,
            esc(rack)
        );
        for (j, cell) in cells.iter().enumerate() {
            let y = HEAD + j as f64 * (CELL_H + 4.0);
            let _ = writeln!(
                svg,
                "<a href=\"{}\"><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{COL_W}\" \
                 height=\"{CELL_H}\" rx=\"3\" fill=\"{}\" class=\"cell\"><title>{} — {}</title>\
                 </rect><text x=\"{:.1}\" y=\"{:.1}\" class=\"cell-name\">{}</text>\
                 <text x=\"{:.1}\" y=\"{:.1}\" class=\"cell-tag\" text-anchor=\"end\">{}</text></a>",
                esc(&cell.href),
                esc(&cell.colour),
                esc(&cell.name),
                esc(&cell.tag),
                x + 7.0,
                y + 17.0,
                esc(&truncate(&cell.name, 16)),
                x + COL_W - 7.0,
                y + 17.0,
                esc(&cell.tag),
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// One bar of a timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// The row's label (`stage/step`).
    pub label: String,
    /// Start, in seconds from the timeline's origin.
    pub start_s: f64,
    /// Length in seconds (drawn at least 2 px wide).
    pub length_s: f64,
    /// Fill colour.
    pub colour: String,
    /// Tooltip text.
    pub tip: String,
}

/// A Gantt-style timeline: a row per bar, a time axis in seconds, minutes
/// or hours (whichever reads best for the span).
pub fn timeline(title: &str, bars: &[Bar]) -> String {
    const LABEL_W: f64 = 170.0;
    const ROW: f64 = 17.0;
    const TW: f64 = 660.0;
    let span = bars
        .iter()
        .map(|b| b.start_s + b.length_s)
        .fold(0.0f64, f64::max);
    let (unit, div) = if span <= 300.0 {
        ("s", 1.0)
    } else if span <= 3.0 * 3600.0 {
        ("min", 60.0)
    } else {
        ("h", 3600.0)
    };
    let ticks = nice_ticks(0.0, span / div, 8);
    let pw = TW - LABEL_W - 20.0;
    let h = 24.0 + bars.len() as f64 * ROW + 40.0;
    let axis_y = 20.0 + bars.len() as f64 * ROW + 4.0;
    let sx = |s: f64| LABEL_W + (s / div - ticks.lo) / (ticks.hi - ticks.lo) * pw;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" viewBox=\"0 0 {TW} {h}\" \
         width=\"{TW}\" height=\"{h}\" role=\"img\" aria-label=\"{}\"><title>{}</title>",
        esc(title),
        esc(title)
    );
    for v in &ticks.values {
        let x = LABEL_W + (v - ticks.lo) / (ticks.hi - ticks.lo) * pw;
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"16\" x2=\"{x:.1}\" y2=\"{axis_y:.1}\" class=\"grid\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"middle\">{}</text>",
            axis_y + 14.0,
            esc(&ticks.label(*v))
        );
    }
    for (i, bar) in bars.iter().enumerate() {
        let y = 20.0 + i as f64 * ROW;
        let x = sx(bar.start_s);
        let w = (sx(bar.start_s + bar.length_s) - x).max(2.0);
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{}</text>\
             <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{}\">\
             <title>{}</title></rect>",
            LABEL_W - 8.0,
            y + ROW - 5.0,
            esc(&truncate(&bar.label, 28)),
            ROW - 4.0,
            esc(&bar.colour),
            esc(&bar.tip)
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{LABEL_W}\" y1=\"{axis_y:.1}\" x2=\"{:.1}\" y2=\"{axis_y:.1}\" class=\"axis\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" class=\"axis-title\" text-anchor=\"middle\">\
         time since the node's first step ({unit})</text></svg>",
        LABEL_W + pw,
        LABEL_W + pw / 2.0,
        axis_y + 32.0
    );
    svg
}

/// At most `max` characters, with an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_land_on_round_numbers() {
        let t = nice_ticks(38.0, 92.3, 7);
        assert_eq!((t.lo, t.hi, t.step), (30.0, 100.0, 10.0));
        assert_eq!(t.values.len(), 8);
        let t = nice_ticks(38.0, 92.3, 5);
        assert_eq!((t.lo, t.hi, t.step), (20.0, 100.0, 20.0));
        let t = nice_ticks(0.0, 482.0, 6);
        assert_eq!((t.lo, t.hi, t.step), (0.0, 500.0, 100.0));
        assert_eq!(t.label(300.0), "300");
        let t = nice_ticks(0.0, 0.9, 5);
        assert_eq!(t.step, 0.25);
        assert_eq!(t.values, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(t.label(0.5), "0.50");
        let t = nice_ticks(0.1, 0.7, 7);
        assert_eq!(t.step, 0.1);
        assert_eq!(t.label(0.3), "0.3");
        assert_eq!(t.values[2], 0.3, "no float drift");
        let t = nice_ticks(-3.0, 0.0, 4);
        assert_eq!(t.label(0.0), "0");
        assert!(t.lo <= -3.0 && t.hi >= 0.0);
    }

    #[test]
    fn degenerate_ranges_still_have_a_scale() {
        let t = nice_ticks(5.0, 5.0, 6);
        assert!(t.lo < 5.0 && t.hi > 5.0 && t.values.len() >= 2);
        let t = nice_ticks(0.0, 0.0, 6);
        assert!(t.lo < 0.0 && t.hi > 0.0);
        let t = nice_ticks(f64::INFINITY, f64::NEG_INFINITY, 6);
        assert_eq!((t.lo, t.hi), (0.0, 1.0));
        let t = nice_ticks(10.0, 2.0, 6);
        assert!(t.lo <= 2.0 && t.hi >= 10.0);
    }

    #[test]
    fn every_range_is_covered_with_few_ticks() {
        for (a, b) in [
            (0.0, 1.0),
            (1e-3, 7e-3),
            (12.0, 13.0),
            (0.0, 1e9),
            (-50.0, 75.0),
        ] {
            let t = nice_ticks(a, b, 6);
            assert!(t.lo <= a && t.hi >= b, "{a}..{b}: {t:?}");
            assert!(
                t.values.len() <= 7 && t.values.len() >= 2,
                "{a}..{b}: {t:?}"
            );
        }
    }

    #[test]
    fn log2_ticks_fall_on_binary_units() {
        let (ticks, (lo, hi)) = log2_byte_ticks(8.0, 8.0 * 1024.0 * 1024.0 * 1024.0, 8);
        assert_eq!((lo, hi), (3.0, 33.0));
        let labels: Vec<&str> = ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            labels,
            ["32 B", "1 KiB", "32 KiB", "1 MiB", "32 MiB", "1 GiB"]
        );
        let (ticks, _) = log2_byte_ticks(1024.0, 65536.0, 8);
        assert_eq!(ticks.len(), 7, "every power when they fit: {ticks:?}");
        assert_eq!(human_bytes(8.0), "8 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(8589934592.0), "8 GiB");
    }

    #[test]
    fn chart_escapes_labels_and_skips_bad_points() {
        let chart = LineChart {
            title: "<b>t</b>".into(),
            x_label: "size".into(),
            y_label: "GB/s".into(),
            x_scale: XScale::Log2Bytes,
            y_from_zero: true,
            series: vec![Series {
                label: "a&b".into(),
                points: vec![(0.0, 1.0), (8.0, f64::NAN), (16.0, 2.0), (32.0, 3.0)],
                colour: "#000000".into(),
            }],
            hlines: vec![HLine {
                y: 2.5,
                label: "floor".into(),
                colour: "#ff0000".into(),
            }],
        };
        let svg = chart.to_svg();
        assert!(svg.contains("&lt;b&gt;t&lt;/b&gt;") && !svg.contains("<b>"));
        assert!(svg.contains("a&amp;b"));
        assert!(svg.contains("stroke-dasharray"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // Two good points: one M and one L.
        let path = svg
            .lines()
            .find(|l| l.starts_with("<path d=\"M") && l.contains("stroke=\"#000000\""));
        assert_eq!(path.map(|p| p.matches('L').count()), Some(1), "{svg}");
    }
}
