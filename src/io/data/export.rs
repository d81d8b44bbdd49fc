//! `regop data --export`: the preprocessed splits as files any framework reads, so a model
//! trained elsewhere sees exactly the inputs regop's models see. Per split a safetensors file
//! (`x` [rows, columns] F32, `y` [rows] F32: 0/1 or the class index, `group` [rows] I64 where
//! there is a sensitive attribute) and a CSV of the same numbers; `schema.json` names every
//! input column and says how it was made from the raw feature.

use super::{Dataset, Schema, Split};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "regop-data/1";

#[derive(serde::Serialize)]
struct Rows {
    train: usize,
    val: usize,
    test: usize,
}

/// What `schema.json` holds: the schema regop keeps in model files, and what it means for a
/// user's own training code.
#[derive(serde::Serialize)]
struct ExportedSchema<'a> {
    format: &'static str,
    /// The seed of the train/val/test split: an editor edits models of its zoo's data seed.
    seed: u64,
    /// One name per input column, in the order of `x`'s columns.
    columns: Vec<String>,
    /// 1: one logit, trained with a sigmoid; more: one logit per class, softmax.
    outputs: usize,
    rows: Rows,
    preprocessing: &'static str,
    schema: &'a Schema,
}

const PREPROCESSING: &str = "rows with a missing value dropped; a numeric feature becomes one \
    column, (value - mean) / std with the training split's mean and std; a categorical feature \
    becomes one 0/1 column per category, in the listed order; y is 1 for the positive label \
    values (binary) or the class's index (multi-class); group is the sensitive attribute's \
    group index";

/// Write the three splits and `schema.json` into `dir` (created if needed). Every file is
/// written whole or not at all; an earlier export is replaced only with `force`.
pub fn export(data: &Dataset, seed: u64, dir: &Path, force: bool) -> Result<Vec<PathBuf>> {
    let schema_path = dir.join("schema.json");
    if schema_path.exists() && !force {
        return Err(Error::input(
            dir,
            "already holds an export (pass --force to replace it)",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let s = &data.schema;
    let splits = [
        ("train", &data.train),
        ("val", &data.val),
        ("test", &data.test),
    ];
    let mut written = Vec::new();
    for (name, split) in splits {
        let st = dir.join(format!("{name}.safetensors"));
        crate::io::write_atomic(&st, &split_safetensors(s, split, name, seed)?, true)?;
        let csv = dir.join(format!("{name}.csv"));
        crate::io::write_atomic(&csv, split_csv(s, split).as_bytes(), true)?;
        written.extend([st, csv]);
    }
    let exported = ExportedSchema {
        format: FORMAT,
        seed,
        columns: s.column_names(),
        outputs: s.outputs(),
        rows: Rows {
            train: data.train.rows(),
            val: data.val.rows(),
            test: data.test.rows(),
        },
        preprocessing: PREPROCESSING,
        schema: s,
    };
    let json = serde_json::to_string_pretty(&exported).expect("serialisable") + "\n";
    crate::io::write_atomic(&schema_path, json.as_bytes(), true)?;
    written.push(schema_path);
    Ok(written)
}

fn split_safetensors(s: &Schema, split: &Split, name: &str, seed: u64) -> Result<Vec<u8>> {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    let (rows, cols) = (split.rows(), s.n_columns());
    let group: Vec<i64> = split.group.iter().map(|&g| g as i64).collect();
    let mut tensors: Vec<(&str, Dtype, Vec<usize>, &[u8])> = vec![
        (
            "x",
            Dtype::F32,
            vec![rows, cols],
            bytemuck::cast_slice(&split.x),
        ),
        ("y", Dtype::F32, vec![rows], bytemuck::cast_slice(&split.y)),
    ];
    if s.sensitive.is_some() {
        tensors.push((
            "group",
            Dtype::I64,
            vec![rows],
            bytemuck::cast_slice(&group),
        ));
    }
    let views: Vec<(String, TensorView)> = tensors
        .into_iter()
        .map(|(n, dtype, shape, bytes)| {
            let view = TensorView::new(dtype, shape, bytes).expect("shape and bytes agree");
            (n.to_string(), view)
        })
        .collect();
    let meta = std::collections::HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("split".to_string(), name.to_string()),
        ("seed".to_string(), seed.to_string()),
        (
            "columns".to_string(),
            serde_json::to_string(&s.column_names()).unwrap(),
        ),
    ]);
    safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Usage(format!("serialising the {name} split: {e}")))
}

/// A CSV cell: quoted where the text holds a comma, a quote or a line break.
fn cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Header: the input columns, the label, then the group; one row per example. Values print in
/// the shortest form that reads back to the same f32.
fn split_csv(s: &Schema, split: &Split) -> String {
    let cols = s.n_columns();
    let mut header: Vec<String> = s.column_names().iter().map(|c| cell(c)).collect();
    header.push(cell(&s.label));
    let group = s.sensitive.as_ref().map(|a| format!("{a} group"));
    if let Some(g) = &group {
        header.push(cell(g));
    }
    let mut out = header.join(",") + "\n";
    for r in 0..split.rows() {
        for v in &split.x[r * cols..(r + 1) * cols] {
            out += &format!("{v},");
        }
        out += &format!("{}", split.y[r]);
        if group.is_some() {
            out += &format!(",{}", split.group[r]);
        }
        out.push('\n');
    }
    out
}
