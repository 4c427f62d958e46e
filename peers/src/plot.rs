//! The plot of a run: throughput per engine and workload, grouped bars on a log scale, as SVG.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{engines, w3_row, Results, W3_CONFIGS};

/// Colours of the engines, in `engines()` order.
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(127, 127, 127),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
];

/// Writes the grouped bar chart of `results` to `path`.
pub fn throughput_svg(results: &Results, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    // (group label, row, metric); W5 is plotted as keys/s of reopen-and-read-all.
    let mut groups: Vec<(String, String, &str)> = vec![
        ("W1 update".into(), "W1".into(), "ops_per_sec"),
        ("W2 RMW".into(), "W2".into(), "ops_per_sec"),
    ];
    for (b, t) in W3_CONFIGS {
        groups.push((format!("W3 b{b} t{t}"), w3_row(b, t), "commits_per_sec"));
    }
    groups.push(("W4 list add".into(), "W4".into(), "ops_per_sec"));
    groups.push(("W5 reopen".into(), "W5".into(), "keys_per_sec"));
    let engines = engines();
    let values: Vec<Vec<Option<f64>>> = groups
        .iter()
        .map(|(_, row, metric)| {
            engines
                .iter()
                .map(|e| results.median(row, e, metric))
                .collect()
        })
        .collect();
    let max = values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .fold(1.0, f64::max);
    let min = values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .min(max);
    let lo = 10f64.powf(min.log10().floor());
    let hi = 10f64.powf(max.log10().ceil());

    let root = SVGBackend::new(path, (1200, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = groups.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "statejournal vs RocksDB, fjall and the floor (higher is better, log scale)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (lo..hi).log_scale())?;
    let labels: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_label_style(("sans-serif", 13))
        .y_desc("per second: W1/W2/W4 ops, W3 commits (b = updates per commit, t = threads), W5 keys reopened and read")
        .y_label_formatter(&|y| crate::report::si(*y))
        .draw()?;
    let width = 0.8 / engines.len() as f64;
    for (ei, engine) in engines.iter().enumerate() {
        let colour = COLOURS[ei % COLOURS.len()];
        let bars: Vec<Rectangle<(f64, f64)>> = values
            .iter()
            .enumerate()
            .filter_map(|(gi, v)| {
                let y = v[ei]?;
                let x0 = gi as f64 - 0.4 + ei as f64 * width;
                Some(Rectangle::new(
                    [(x0, lo), (x0 + width * 0.9, y)],
                    colour.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(*engine)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
