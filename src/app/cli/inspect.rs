//! `regop inspect FILE`: what a model is and which inputs it can use. The input-column weight
//! norms are the evidence a data-minimisation audit asks for: a column of norm exactly 0 is an
//! input the model provably ignores.

use super::{Global, Printer};
use crate::error::Result;
use crate::io::model::Model;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A safetensors model file (PyTorch state_dict naming).
    pub file: PathBuf,
}

#[derive(serde::Serialize)]
pub struct Inspection {
    pub file: String,
    pub dtype: String,
    pub activation: String,
    pub activation_recorded: bool,
    pub layers: Vec<LayerInfo>,
    pub parameters: usize,
    pub zero_weights: usize,
    pub weight_sparsity: f64,
    pub features: Option<Vec<String>>,
    pub input_columns: Vec<ColumnInfo>,
    pub metadata: std::collections::BTreeMap<String, String>,
}

#[derive(serde::Serialize)]
pub struct LayerInfo {
    pub name: String,
    pub inputs: usize,
    pub outputs: usize,
    pub bias: bool,
    pub parameters: usize,
    pub weight_sparsity: f64,
}

#[derive(serde::Serialize)]
pub struct ColumnInfo {
    pub index: usize,
    pub name: Option<String>,
    pub weight_norm: f32,
}

pub fn inspect(path: &std::path::Path, m: &Model) -> Inspection {
    let zeros = |w: &[f32]| w.iter().filter(|&&v| v == 0.0).count();
    let layers: Vec<LayerInfo> = m
        .layers
        .iter()
        .map(|l| LayerInfo {
            name: l.name.clone(),
            inputs: l.in_dim,
            outputs: l.out_dim,
            bias: l.bias.is_some(),
            parameters: l.weight.len() + l.bias.as_ref().map_or(0, Vec::len),
            weight_sparsity: zeros(&l.weight) as f64 / l.weight.len() as f64,
        })
        .collect();
    let n_weights: usize = m.layers.iter().map(|l| l.weight.len()).sum();
    let zero_weights: usize = m.layers.iter().map(|l| zeros(&l.weight)).sum();
    let input_columns = m
        .input_column_norms()
        .into_iter()
        .enumerate()
        .map(|(i, n)| ColumnInfo {
            index: i,
            name: m.features.as_ref().map(|f| f[i].clone()),
            weight_norm: n,
        })
        .collect();
    Inspection {
        file: path.display().to_string(),
        dtype: m.dtype.clone(),
        activation: m.activation.name().into(),
        activation_recorded: m.activation_recorded,
        layers,
        parameters: m.n_params(),
        zero_weights,
        weight_sparsity: zero_weights as f64 / n_weights as f64,
        features: m.features.clone(),
        input_columns,
        metadata: m.metadata.clone(),
    }
}

pub fn run(_g: &Global, p: &Printer, a: Args) -> Result<i32> {
    let m = Model::load(&a.file)?;
    let r = inspect(&a.file, &m);
    if p.json {
        p.json(&r);
        return Ok(0);
    }
    println!("{}", r.file);
    let dims: Vec<String> = std::iter::once(r.layers[0].inputs)
        .chain(r.layers.iter().map(|l| l.outputs))
        .map(|d| d.to_string())
        .collect();
    println!(
        "  MLP {}  activation {}{}  stored as {}",
        dims.join(" -> "),
        r.activation,
        if r.activation_recorded {
            ""
        } else {
            " (not recorded in the file; assumed)"
        },
        r.dtype
    );
    println!(
        "  {} parameters, {} weights exactly zero ({:.1}% sparse)",
        r.parameters,
        r.zero_weights,
        100.0 * r.weight_sparsity
    );
    if let Some(d) = r.metadata.get("dataset") {
        println!("  dataset: {d}");
    }
    println!();
    println!(
        "  {:<16} {:>7} {:>7} {:>6} {:>10} {:>9}",
        "layer", "in", "out", "bias", "params", "sparsity"
    );
    for l in &r.layers {
        println!(
            "  {:<16} {:>7} {:>7} {:>6} {:>10} {:>8.1}%",
            l.name,
            l.inputs,
            l.outputs,
            if l.bias { "yes" } else { "no" },
            l.parameters,
            100.0 * l.weight_sparsity
        );
    }
    println!();
    println!("  input columns (L2 norm of first-layer weights; 0 = input unused):");
    for c in &r.input_columns {
        let name = c
            .name
            .clone()
            .unwrap_or_else(|| format!("column {}", c.index));
        let note = if c.weight_norm == 0.0 {
            "  <- unused"
        } else {
            ""
        };
        println!(
            "  {:>5}  {:<24} {:>12.6}{note}",
            c.index, name, c.weight_norm
        );
    }
    Ok(0)
}
