//! A session's field of view: the motion-corrected mean image with every ROI's
//! outline and, for tracked cells, the cell number.

use super::png::{base64, gray_png, to_gray};
use std::collections::HashSet;
use std::fmt::Write;

/// One ROI to outline.
pub struct Outline {
    pub pixels: Vec<u32>,
    pub weights: Vec<f32>,
    pub centroid: (f32, f32),
    /// Tracked cell number, when the ROI belongs to one.
    pub cell: Option<u32>,
    pub ablated: bool,
    pub is_cell: bool,
    /// A tracked cell's footprint transferred into this session (no ROI here).
    pub transferred: bool,
}

/// Footprint pixels at or above this fraction of the ROI's largest weight are
/// outlined: the outline follows the cell body, not its faint tails.
const OUTLINE_LEVEL: f32 = 0.2;

/// The boundary of a pixel set as an SVG path (unit-square edges between a member
/// and a non-member).
fn outline_path(pixels: &[u32], width: usize) -> String {
    let set: HashSet<u32> = pixels.iter().copied().collect();
    let w = width as i64;
    let inside = |x: i64, y: i64| x >= 0 && x < w && y >= 0 && set.contains(&((y * w + x) as u32));
    let mut d = String::new();
    for &p in pixels {
        let (x, y) = ((p as i64) % w, (p as i64) / w);
        if !inside(x, y - 1) {
            let _ = write!(d, "M{x} {y}h1");
        }
        if !inside(x, y + 1) {
            let _ = write!(d, "M{x} {}h1", y + 1);
        }
        if !inside(x - 1, y) {
            let _ = write!(d, "M{x} {y}v1");
        }
        if !inside(x + 1, y) {
            let _ = write!(d, "M{} {y}v1", x + 1);
        }
    }
    d
}

/// The field-of-view figure as an SVG document `display_px` wide.
pub fn fov_svg(
    image: &[f32],
    width: usize,
    height: usize,
    rois: &[Outline],
    display_px: u32,
) -> String {
    let png = gray_png(&to_gray(image), width, height);
    let display_h = (display_px as f64 * height as f64 / width.max(1) as f64).round();
    let font = (width.max(height) as f64 / 55.0).max(3.0);
    let stroke = (width.max(height) as f64 / 700.0).max(0.25);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" \
         width=\"{display_px}\" height=\"{display_h}\">\
         <image width=\"{width}\" height=\"{height}\" style=\"image-rendering:pixelated\" \
         href=\"data:image/png;base64,{}\"/>",
        base64(&png)
    );
    for r in rois {
        let top = r.weights.iter().copied().fold(0.0f32, f32::max);
        let body: Vec<u32> = r
            .pixels
            .iter()
            .zip(&r.weights)
            .filter(|(_, &w)| w >= OUTLINE_LEVEL * top)
            .map(|(&p, _)| p)
            .collect();
        let color = match (r.transferred, r.ablated, r.cell.is_some(), r.is_cell) {
            (true, ..) => "#40a0ff",
            (false, true, _, _) => "#ff3030",
            (false, false, true, _) => "#30e060",
            (false, false, false, true) => "#e0c030",
            (false, false, false, false) => "#909090",
        };
        let dash = if r.transferred {
            format!(" stroke-dasharray=\"{:.2}\"", stroke * 4.0)
        } else {
            String::new()
        };
        let _ = write!(
            s,
            "<path d=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"{stroke:.2}\"{dash}/>",
            outline_path(&body, width)
        );
        if let Some(c) = r.cell {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{font:.1}\" fill=\"{color}\" \
                 font-family=\"sans-serif\" text-anchor=\"middle\">{c}</text>",
                r.centroid.0 + 0.5,
                r.centroid.1 + 0.5 + font as f32 * 0.35,
            );
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outline_of_a_square_is_its_perimeter() {
        // A 2×2 square at (1,1) in a 4-wide image: 8 unit edges.
        let d = outline_path(&[5, 6, 9, 10], 4);
        assert_eq!(d.matches('M').count(), 8);
        assert!(d.contains("M1 1h1") && d.contains("M3 1v1"));
    }

    #[test]
    fn fov_embeds_the_image_and_labels_tracked_cells() {
        let img: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let rois = [Outline {
            pixels: vec![9, 10],
            weights: vec![1.0, 0.5],
            centroid: (1.5, 1.0),
            cell: Some(42),
            ablated: true,
            is_cell: true,
            transferred: false,
        }];
        let svg = fov_svg(&img, 8, 8, &rois, 300);
        assert!(svg.contains("data:image/png;base64,iVBORw0KGgo"));
        assert!(svg.contains(">42</text>") && svg.contains("#ff3030"));
        assert!(!svg.contains("stroke-dasharray"));
        // A transferred footprint: dashed blue.
        let moved = [Outline {
            transferred: true,
            ablated: false,
            ..rois.into_iter().next().unwrap()
        }];
        let svg = fov_svg(&img, 8, 8, &moved, 300);
        assert!(svg.contains("#40a0ff") && svg.contains("stroke-dasharray"));
    }
}
