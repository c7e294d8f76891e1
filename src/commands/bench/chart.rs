//! The report's chart (plotters, SVG backend): on the left the write ->
//! visible latency distribution of every strategy (one CDF line each, log
//! time axis), on the right the throughput bars (log axis).

use std::path::Path;

use plotters::prelude::*;

use super::load::RowResult;

/// Width and height of the SVG, pixels.
const SIZE: (u32, u32) = (1200, 480);

/// Points per CDF line at most (the SVG stays small for any run).
const CDF_POINTS: usize = 200;

fn colour(index: usize) -> RGBColor {
    const PALETTE: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    PALETTE[index % PALETTE.len()]
}

/// At most [`CDF_POINTS`] `(latency us, fraction <= it)` points of sorted latencies.
pub fn cdf(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(CDF_POINTS).max(1);
    let mut points: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (sorted[i].max(1.0), (i + 1) as f64 / n as f64))
        .collect();
    points.push((sorted[n - 1].max(1.0), 1.0));
    points
}

/// Draws the chart of `rows` into `path`.
pub fn write_svg(rows: &[RowResult], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(SIZE.0 * 3 / 5);
    let max_us = rows
        .iter()
        .filter_map(|row| row.latencies_us.last().copied())
        .fold(10.0, f64::max)
        * 2.0;
    let mut latency = ChartBuilder::on(&left)
        .caption("write -> visible in the mirror (CDF)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((1f64..max_us).log_scale(), 0f64..1f64)?;
    latency
        .configure_mesh()
        .x_desc("latency (log)")
        .y_desc("fraction of writes")
        .x_label_formatter(&|us| super::report::duration(*us))
        .draw()?;
    for (index, row) in rows.iter().enumerate() {
        let style = ShapeStyle::from(colour(index)).stroke_width(2);
        latency
            .draw_series(LineSeries::new(cdf(&row.latencies_us), style))?
            .label(row.strategy.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], style.filled()));
    }
    latency
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;

    let max_tp = rows.iter().map(RowResult::throughput).fold(10.0, f64::max) * 3.0;
    let names: Vec<String> = rows.iter().map(|row| row.strategy.name()).collect();
    let mut bars = ChartBuilder::on(&right)
        .caption("throughput, closed loop (writes/s)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (0..rows.len().saturating_sub(1)).into_segmented(),
            (1f64..max_tp).log_scale(),
        )?;
    bars.configure_mesh()
        .disable_x_mesh()
        .x_labels(rows.len())
        .x_label_formatter(&|segment| match segment {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&|tp| format!("{tp:.0}"))
        .y_desc("writes/s (log)")
        .draw()?;
    bars.draw_series(rows.iter().enumerate().map(|(index, row)| {
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(index), 1.0),
                (SegmentValue::Exact(index + 1), row.throughput().max(1.0)),
            ],
            colour(index).filled(),
        );
        bar.set_margin(0, 0, 12, 12);
        bar
    }))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_is_bounded_and_ends_at_one() {
        let sorted: Vec<f64> = (1..=10_000).map(f64::from).collect();
        let points = cdf(&sorted);
        assert!(points.len() <= CDF_POINTS + 1);
        assert_eq!(points.last(), Some(&(10_000.0, 1.0)));
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
        );
        assert!(cdf(&[]).is_empty());
    }
}
