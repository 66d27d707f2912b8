//! The PNG chart of the ratios, drawn from the JSON document (so
//! `--chart-from FILE` can redraw it from a saved run).
//!
//! Text is drawn with plotters' `ab_glyph` feature and a font embedded in the
//! bench (DejaVu Sans, subset to ASCII: `DejaVuSans-subset.ttf`, licence
//! beside it), so no system font, fontconfig or freetype is needed.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use crate::{Better, ratio};

const FONT: &[u8] = include_bytes!("DejaVuSans-subset.ttf");
const SPAWN: RGBColor = RGBColor(70, 110, 190);
const FORK: RGBColor = RGBColor(235, 140, 40);

/// One row: a workload and its ratios against CPython spawn and fork.
struct Row {
    name: String,
    vs_spawn: Option<f64>,
    vs_fork: Option<f64>,
}

/// Draws one horizontal bar pair per workload (multiprocess against CPython
/// spawn and fork) on a log axis, with 1 = parity; missing rows say so.
pub fn draw(doc: &Value, path: &Path) -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow!("the embedded chart font did not load"))?;
    let res = &doc["results"];
    let Some(names) = res["cpython_spawn"]
        .as_object()
        .or(res["cpython_fork"].as_object())
    else {
        return Err(anyhow!(
            "no CPython results in the document: nothing to chart"
        ));
    };
    // Table order when the document says it, else the names' order.
    let order: Vec<String> = match doc["workloads"].as_array() {
        Some(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        None => names.keys().cloned().collect(),
    };
    let rows: Vec<Row> = order
        .iter()
        .filter(|n| names.contains_key(n.as_str()))
        .map(|n| {
            let better = if doc["better"][n] == "higher" {
                Better::Higher
            } else {
                Better::Lower
            };
            let ours = res["multiprocess"][n].as_f64();
            let r = |imp: &str| Some(ratio(better, ours?, res[imp][n].as_f64()?));
            Row {
                name: n.clone(),
                vs_spawn: r("cpython_spawn"),
                vs_fork: r("cpython_fork"),
            }
        })
        .collect();
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|r| [r.vs_spawn, r.vs_fork])
        .flatten()
        .collect();
    let lo = all.iter().copied().fold(0.5f64, f64::min) / 1.5;
    let hi = all.iter().copied().fold(2.0f64, f64::max) * 2.0;

    let height = 200 + 34 * rows.len() as u32;
    let whole = BitMapBackend::new(path, (1100, height)).into_drawing_area();
    whole.fill(&WHITE)?;
    let (root, footer) = whole.split_vertically(height - 28);
    let title = if doc["quick"] == true {
        " (--quick run)"
    } else {
        ""
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "multiprocess vs CPython multiprocessing: ratio, > 1 = multiprocess better{title}"
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(300)
        // Two empty slots at the top for the legend.
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..rows.len() as f64 + 2.0)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("ratio (log scale; lower-is-better rows inverted)")
        .x_label_formatter(&|v| {
            if *v >= 1.0 {
                format!("{v:.0}x")
            } else {
                format!("{v:.2}x")
            }
        })
        .label_style(("sans-serif", 14))
        .draw()?;
    // Parity.
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(1.0, 0.0), (1.0, rows.len() as f64 + 2.0)],
        BLACK.stroke_width(2),
    )))?;
    let label = ("sans-serif", 14).into_font();
    for (i, row) in rows.iter().enumerate() {
        // Row 0 at the top.
        let y = (rows.len() - 1 - i) as f64;
        let (px, py) = chart.backend_coord(&(lo, y + 0.5));
        root.draw(&Text::new(
            row.name.clone(),
            (px - 8, py),
            TextStyle::from(label.clone()).pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
        if row.vs_spawn.is_none() && row.vs_fork.is_none() {
            let (qx, qy) = chart.backend_coord(&(1.0, y + 0.5));
            root.draw(&Text::new(
                "missing: not in the crate yet",
                (qx + 6, qy),
                label
                    .clone()
                    .color(&RGBColor(120, 120, 120))
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
            continue;
        }
        for (k, (v, color)) in [(row.vs_spawn, SPAWN), (row.vs_fork, FORK)]
            .into_iter()
            .enumerate()
        {
            let Some(v) = v else { continue };
            let (y0, y1) = (y + 0.52 - 0.4 * k as f64, y + 0.88 - 0.4 * k as f64);
            chart.draw_series(std::iter::once(Rectangle::new(
                [(1.0f64.min(v), y0), (1.0f64.max(v), y1)],
                color.filled(),
            )))?;
            let (qx, qy) = chart.backend_coord(&(v, (y0 + y1) / 2.0));
            let (dx, hpos) = if v >= 1.0 {
                (4, HPos::Left)
            } else {
                (-4, HPos::Right)
            };
            root.draw(&Text::new(
                format!("{v:.2}x"),
                (qx + dx, qy),
                TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(hpos, VPos::Center)),
            ))?;
        }
    }
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(lo, 0.0), (lo, 0.0)],
            SPAWN.filled(),
        )))?
        .label("vs CPython spawn")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], SPAWN.filled()));
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(lo, 0.0), (lo, 0.0)],
            FORK.filled(),
        )))?
        .label("vs CPython fork")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], FORK.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    let m = &doc["machine"];
    let foot = format!(
        "{} cores, {}; Python {}; other load {:.2} cores on average during the run",
        m["cores"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["python"].as_str().unwrap_or("?"),
        m["load"]["foreign_cores"].as_f64().unwrap_or(0.0)
    );
    footer.draw(&Text::new(foot, (12, 6), ("sans-serif", 12).into_font()))?;
    whole.present()?;
    Ok(())
}
