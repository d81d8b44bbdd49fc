//! `regop data`: what a dataset becomes: rows per split, input columns per feature, the sensitive
//! attribute's groups with their positive rates. Also the data arguments every command shares.

use super::{Global, Printer};
use crate::error::Result;
use crate::io::data::loaders::{detect, load, DataOptions, DatasetName};
use crate::io::data::Dataset;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Dataset files: a directory or file in a standard layout (adult/, compas-scores-two-years.csv,
    /// german.data, ...) or any CSV (with --target). Without it, the built-in synthetic data.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Which loader reads --data (detected from file names when left out).
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetName>,
    #[command(flatten)]
    pub options: DataOptions,
}

impl DataArgs {
    pub fn name(&self) -> DatasetName {
        self.dataset
            .unwrap_or_else(|| self.data.as_deref().map_or(DatasetName::Synthetic, detect))
    }
    pub fn load(&self, seed: u64) -> Result<Dataset> {
        load(self.name(), self.data.as_deref(), &self.options, seed)
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub data: DataArgs,
    /// Write the preprocessed splits into this directory (train/val/test as safetensors and
    /// CSV, and schema.json), to train models elsewhere on exactly regop's inputs. The split
    /// is --seed's: use the data seed of the zoo whose editor will edit the models.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Replace an earlier export in --export.
    #[arg(long)]
    pub force: bool,
}

#[derive(serde::Serialize)]
struct Summary<'a> {
    dataset: &'a str,
    raw_rows: usize,
    dropped_missing: usize,
    train_rows: usize,
    val_rows: usize,
    test_rows: usize,
    columns: usize,
    schema: &'a crate::io::data::Schema,
    positive_rate_by_group: Vec<(String, f64)>,
}

/// `--export DIR`: the splits as files, and one status line.
fn export(g: &Global, p: &Printer, d: &Dataset, dir: &std::path::Path, force: bool) -> Result<i32> {
    let files = crate::io::data::export::export(d, g.seed, dir, force)?;
    p.status(&format!(
        "{}: train {}, val {}, test {} rows of {} input columns (split seed {}) -> {} files in {}",
        d.schema.dataset,
        d.train.rows(),
        d.val.rows(),
        d.test.rows(),
        d.schema.n_columns(),
        g.seed,
        files.len(),
        dir.display()
    ));
    Ok(0)
}

pub fn run(g: &Global, p: &Printer, a: Args) -> Result<i32> {
    let d = a.data.load(g.seed)?;
    if let Some(dir) = &a.export {
        return export(g, p, &d, dir, a.force);
    }
    let all_y: Vec<f32> = d.train.y.clone();
    let rates: Vec<(String, f64)> = (0..d.schema.groups.len() as u32)
        .filter_map(|k| {
            let idx: Vec<usize> = (0..all_y.len())
                .filter(|&r| d.train.group[r] == k)
                .collect();
            (!idx.is_empty()).then(|| {
                (
                    d.schema.groups[k as usize].clone(),
                    idx.iter().map(|&r| all_y[r] as f64).sum::<f64>() / idx.len() as f64,
                )
            })
        })
        .collect();
    let s = Summary {
        dataset: &d.schema.dataset,
        raw_rows: d.raw_rows,
        dropped_missing: d.dropped_missing,
        train_rows: d.train.rows(),
        val_rows: d.val.rows(),
        test_rows: d.test.rows(),
        columns: d.schema.n_columns(),
        schema: &d.schema,
        positive_rate_by_group: rates,
    };
    if p.json {
        p.json(&s);
        return Ok(0);
    }
    println!(
        "{}: {} rows read, {} dropped for missing values",
        s.dataset, s.raw_rows, s.dropped_missing
    );
    println!(
        "  split (seed {}): train {}, val {}, test {}",
        g.seed, s.train_rows, s.val_rows, s.test_rows
    );
    if d.schema.classes.is_empty() {
        println!(
            "  label '{}' (positive: {}), positive rate {:.3} in train",
            d.schema.label,
            d.schema.positive.join("/"),
            d.train.positive_rate()
        );
    } else {
        println!(
            "  label '{}': {} classes ({})",
            d.schema.label,
            d.schema.classes.len(),
            d.schema.classes.join(", ")
        );
    }
    println!(
        "  {} features -> {} input columns:",
        d.schema.features.len(),
        s.columns
    );
    // Images list a few pixels, not hundreds.
    let shown = if d.schema.features.len() > 40 {
        8
    } else {
        usize::MAX
    };
    for f in d.schema.features.iter().take(shown) {
        let kind = match &f.kind {
            crate::io::data::FeatureKind::Numeric { .. } => "numeric".to_string(),
            crate::io::data::FeatureKind::Categorical { categories } => {
                format!("{} categories", categories.len())
            }
        };
        println!(
            "    {:<28} columns {:>3}..{:<3} {kind}",
            f.name,
            f.start,
            f.start + f.width
        );
    }
    if d.schema.features.len() > shown {
        let last = d.schema.features.last().map_or("", |f| f.name.as_str());
        println!(
            "    ... {} more, to {last} (name a region of pixels as pR0-R1_C0-C1)",
            d.schema.features.len() - shown
        );
    }
    if let Some(sname) = &d.schema.sensitive {
        println!("  sensitive attribute '{sname}': positive rate by group (train)");
        for (grp, r) in &s.positive_rate_by_group {
            println!("    {grp:<28} {r:.3}");
        }
    }
    Ok(0)
}
