//! The report's charts, drawn by plotters into SVG strings (no fonts or system
//! libraries needed: SVG text is laid out by the browser).

use crate::error::{Error, Result};
use plotters::prelude::*;

/// One line of a chart, with optional error bars (± `err`).
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
    pub err: Option<Vec<f64>>,
    /// Draw a marker on every point (for day-wise summaries, not for traces).
    pub markers: bool,
}

/// A line chart's labels and extras.
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub size: (u32, u32),
    /// A vertical marker line (e.g. the ablation), with its label.
    pub marker: Option<(f64, &'a str)>,
    /// A horizontal reference line (e.g. 1 for baseline-normalised values).
    pub reference: Option<f64>,
}

/// Series colours, distinguishable and colour-blind friendly (Okabe & Ito 2008).
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

fn draw_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::internal(format!("drawing a report figure: {e:?}"))
}

/// The finite range of values, padded; (0, 1) when there is none.
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { 0.06 * (hi - lo) } else { 0.5 };
    (lo - pad, hi + pad)
}

/// A line chart of `series` as an SVG document.
pub fn line_chart(c: &LineChart, series: &[Series]) -> Result<String> {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = padded_range(xs.chain(c.marker.map(|m| m.0)));
    let ys = series.iter().flat_map(|s| {
        s.points.iter().enumerate().flat_map(move |(i, p)| {
            let e = s.err.as_ref().map_or(0.0, |e| e[i].max(0.0));
            let e = if e.is_finite() { e } else { 0.0 };
            [p.1 - e, p.1 + e]
        })
    });
    let (y0, y1) = padded_range(ys.chain(c.reference));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, c.size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(c.title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc(c.x_label)
            .y_desc(c.y_label)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(draw_err)?;
        let grey = RGBColor(150, 150, 150);
        if let Some(r) = c.reference {
            chart
                .draw_series(LineSeries::new([(x0, r), (x1, r)], grey.stroke_width(1)))
                .map_err(draw_err)?;
        }
        if let Some((m, label)) = c.marker {
            chart
                .draw_series(LineSeries::new([(m, y0), (m, y1)], RED.stroke_width(1)))
                .map_err(draw_err)?
                .label(label)
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        }
        for s in series {
            let color = s.color;
            let finite: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(finite.clone(), color.stroke_width(2)))
                .map_err(draw_err)?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            if s.markers {
                chart
                    .draw_series(finite.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(draw_err)?;
            }
            if let Some(err) = &s.err {
                let bars = s
                    .points
                    .iter()
                    .zip(err)
                    .filter(|(p, e)| p.0.is_finite() && p.1.is_finite() && e.is_finite());
                chart
                    .draw_series(
                        bars.map(|(p, e)| {
                            ErrorBar::new_vertical(p.0, p.1 - e, p.1, p.1 + e, color, 6)
                        }),
                    )
                    .map_err(draw_err)?;
            }
        }
        if series.len() > 1 || c.marker.is_some() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .label_font(("sans-serif", 12))
                .draw()
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Colour of `v` on a diverging blue–white–red scale saturating at ±`limit`;
/// grey for NaN.
pub fn diverging(v: f64, limit: f64) -> RGBColor {
    if !v.is_finite() {
        return RGBColor(200, 200, 200);
    }
    let t = (v / limit.max(1e-12)).clamp(-1.0, 1.0);
    let fade = |t: f64| (255.0 * (1.0 - t.abs())).round() as u8;
    if t >= 0.0 {
        RGBColor(255, fade(t), fade(t))
    } else {
        RGBColor(fade(t), fade(t), 255)
    }
}

/// A square matrix (row-major, `n × n`) as a heat map with row 0 at the top.
pub fn heat_map(title: &str, matrix: &[f64], n: usize, limit: f64, side: u32) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (side, side + 20)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let nf = n.max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 13))
            .margin(4)
            .x_label_area_size(22)
            .y_label_area_size(26)
            .build_cartesian_2d(0.0..nf, 0.0..nf)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(4)
            .y_labels(4)
            .x_label_formatter(&|v| format!("{}", v.floor() as i64))
            .y_label_formatter(&|v| format!("{}", (nf - v).floor() as i64))
            .label_style(("sans-serif", 10))
            .draw()
            .map_err(draw_err)?;
        let cells = (0..n * n).map(|k| {
            let (i, j) = ((k / n) as f64, (k % n) as f64);
            Rectangle::new(
                [(j, nf - i - 1.0), (j + 1.0, nf - i)],
                diverging(matrix[k], limit).filled(),
            )
        });
        chart.draw_series(cells).map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_chart_draws_every_series_and_marker() {
        let s = |name: &str, k: f64| Series {
            name: name.into(),
            color: PALETTE[0],
            points: (0..5).map(|i| (i as f64, k * i as f64)).collect(),
            err: Some(vec![0.1; 5]),
            markers: true,
        };
        let svg = line_chart(
            &LineChart {
                title: "t",
                x_label: "day",
                y_label: "value",
                size: (400, 300),
                marker: Some((2.5, "ablation")),
                reference: Some(1.0),
            },
            &[s("diag", 1.0), s("off", f64::NAN)],
        )
        .unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("diag") && svg.contains("off") && svg.contains("ablation"));
        assert!(svg.matches("<circle").count() >= 5);
    }

    #[test]
    fn heat_map_has_one_rectangle_per_entry() {
        let m = vec![0.5, -0.2, f64::NAN, 1.0];
        let svg = heat_map("d1", &m, 2, 1.0, 200).unwrap();
        // Background, plotting area and 4 entries at least.
        assert!(svg.matches("<rect").count() >= 4);
        assert_eq!(diverging(1.0, 1.0), RGBColor(255, 0, 0));
        assert_eq!(diverging(-1.0, 1.0), RGBColor(0, 0, 255));
        assert_eq!(diverging(0.0, 1.0), RGBColor(255, 255, 255));
    }
}
