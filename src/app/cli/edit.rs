//! `regop edit --editor E --model M --out OUT [--drop F,G | --sparsity S | --lambda L |
//! --shift C,C | --max-eo-gap G | --max-dp-gap G]`: one editor inference makes a model comply. With data
//! (the built-in synthetic data, or --data for a real dataset) the result is verified on the
//! test split and printed before -> after; exit 0 = requirement met, 1 = missed.
//! `--batch DIR` edits every model file in a directory into --out (a directory).

use super::{Global, Printer};
use crate::engine::device::Device;
use crate::engine::kernels::fairness::Gap;
use crate::error::{Error, Result};
use crate::io::data::loaders::{load, DatasetName};
use crate::io::data::Dataset;
use crate::io::model::Model;
use crate::networks::mlp::{predict, MlpShape};
use crate::requirement::metrics::{
    accuracy, decisions, demographic_parity_difference, equalized_odds_difference,
};
use crate::requirement::{removed_columns, Requirement};
use crate::requirement::{Ask, FairTarget};
use crate::workflows::edit::checkpoint::EditorFile;
use crate::workflows::edit::edit_models;
use crate::workflows::edit::search::{choose_features, lambda_grid};
use crate::workflows::edit::search::{search_lambda, search_shift};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The editor (editor.safetensors from `regop train`).
    #[arg(long)]
    pub editor: PathBuf,
    /// The model to edit (safetensors).
    #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
    pub model: Option<PathBuf>,
    /// Edit every .safetensors file in this directory.
    #[arg(long)]
    pub batch: Option<PathBuf>,
    /// Where to write the edited model (a directory with --batch).
    #[arg(long)]
    pub out: PathBuf,
    /// Features to remove (minimise editors).
    #[arg(long, value_delimiter = ',')]
    pub drop: Vec<String>,
    /// Let the editor choose which features to drop so that at most this many remain
    /// (minimise editors; needs the data). --drop features are dropped in any case.
    #[arg(long)]
    pub keep_features: Option<usize>,
    /// Target weight sparsity (prune editors).
    #[arg(long)]
    pub sparsity: Option<f32>,
    /// Fairness weight (penalty fairness editors): larger trades accuracy for a smaller gap.
    #[arg(long, conflicts_with = "shift")]
    pub lambda: Option<f32>,
    /// Logit shift per group, in the order of the sensitive attribute's groups (shift fairness
    /// editors): the edited model decides as the original would with these group thresholds.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub shift: Vec<f32>,
    /// Largest acceptable equalised-odds difference (fairness editors): lambda, or the group
    /// shifts, are searched on the data.
    #[arg(long, conflicts_with_all = ["lambda", "max_dp_gap", "shift"])]
    pub max_eo_gap: Option<f64>,
    /// Largest acceptable demographic-parity difference (fairness editors): as --max-eo-gap.
    #[arg(long, conflicts_with_all = ["lambda", "shift"])]
    pub max_dp_gap: Option<f64>,
    /// The editor's dataset files (not needed for the built-in synthetic data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
}

/// What the user asked, checked against the editor.
struct Request {
    ask: Ask,
    /// Fairness target: (gap kind, bound).
    target: Option<(Gap, f64)>,
}

fn request(a: &Args, ef: &EditorFile) -> Result<Request> {
    let req = ef.spec.requirement;
    let mut ask = Ask::new(ef.schema.n_columns());
    let wrong = |flag: &str| {
        Err(Error::Usage(format!(
            "{flag} does not apply to this editor: it was trained for {req:?}"
        )))
    };
    if !a.drop.is_empty() && req != Requirement::Minimise {
        return wrong("--drop");
    }
    if a.keep_features.is_some() && req != Requirement::Minimise {
        return wrong("--keep-features");
    }
    if a.sparsity.is_some() && req != Requirement::Prune {
        return wrong("--sparsity");
    }
    if (a.lambda.is_some()
        || !a.shift.is_empty()
        || a.max_eo_gap.is_some()
        || a.max_dp_gap.is_some())
        && req != Requirement::Fairness
    {
        return wrong("--lambda / --shift / --max-eo-gap / --max-dp-gap");
    }
    let shifts = ef.spec.fair_target == FairTarget::Shift;
    if a.lambda.is_some() && shifts {
        return Err(Error::Usage(
            "--lambda does not apply to this editor: it moves group thresholds (give --shift or --max-eo-gap / --max-dp-gap)".into(),
        ));
    }
    if !a.shift.is_empty() && req == Requirement::Fairness && !shifts {
        return Err(Error::Usage(
            "--shift does not apply to this editor: it was trained with a lambda-weighted penalty (give --lambda)".into(),
        ));
    }
    let mut target = None;
    match req {
        Requirement::Minimise => {
            if a.drop.is_empty() && a.keep_features.is_none() {
                return Err(Error::Usage(
                    "a minimise editor needs --drop FEATURE[,FEATURE] or --keep-features K".into(),
                ));
            }
            ask.removed = removed_columns(&ef.schema, &a.drop)
                .map_err(|m| Error::Usage(format!("--drop: {m}")))?;
        }
        Requirement::Prune => match a.sparsity {
            Some(s) if (0.0..1.0).contains(&s) => ask.sparsity = s,
            Some(_) => return Err(Error::Usage("--sparsity must be in [0, 1)".into())),
            None => return Err(Error::Usage("a prune editor needs --sparsity S".into())),
        },
        Requirement::Fairness => {
            target = a
                .max_eo_gap
                .map(|g| (Gap::Eo, g))
                .or(a.max_dp_gap.map(|g| (Gap::Dp, g)));
            let groups = ef.schema.groups.len();
            if !a.shift.is_empty() {
                if a.shift.len() != groups || a.shift.iter().any(|c| !c.is_finite()) {
                    return Err(Error::Usage(format!(
                        "--shift wants one finite number per group of '{}' ({})",
                        ef.schema.sensitive.as_deref().unwrap_or("?"),
                        ef.schema.groups.join(", ")
                    )));
                }
                ask.shift = Some(a.shift.clone());
                return Ok(Request { ask, target });
            }
            match (a.lambda, target) {
                (Some(l), _) if l > 0.0 && l.is_finite() => ask.lambda = l,
                (Some(_), _) => return Err(Error::Usage("--lambda must be positive".into())),
                (None, Some((_, g))) if g >= 0.0 => {}
                (None, Some(_)) => return Err(Error::Usage("the gap bound must be >= 0".into())),
                (None, None) => return Err(Error::Usage(
                    if shifts {
                        "this fairness editor needs --max-eo-gap G, --max-dp-gap G or --shift C,C"
                    } else {
                        "this fairness editor needs --lambda L, --max-eo-gap G or --max-dp-gap G"
                    }
                    .into(),
                )),
            }
        }
    }
    Ok(Request { ask, target })
}

/// The editor's data when it can be had: built in, or from --data.
fn data_for(ef: &EditorFile, path: Option<&Path>) -> Result<Option<Dataset>> {
    if path.is_none() && ef.loader != DatasetName::Synthetic {
        return Ok(None);
    }
    let d = load(ef.loader, path, &ef.data_options, ef.data_seed)?;
    if d.schema != ef.schema {
        let p = path.map_or(PathBuf::from("built-in data"), Path::to_path_buf);
        return Err(Error::input(
            &p,
            "does not reproduce the editor's data schema (other files or options)",
        ));
    }
    Ok(Some(d))
}

#[derive(serde::Serialize)]
struct Outcome {
    model: PathBuf,
    out: PathBuf,
    seconds: f64,
    lambda: Option<f32>,
    /// Logit shift per group (shift fairness editors).
    shift: Option<Vec<f32>>,
    /// Features the editor chose to drop (--keep-features).
    dropped: Option<Vec<String>>,
    requirement: String,
    before: f64,
    after: f64,
    accuracy_before: Option<f64>,
    accuracy_after: Option<f64>,
    agreement: Option<f64>,
    met: Option<bool>,
}

pub fn run(g: &Global, p: &Printer, a: Args) -> Result<i32> {
    let (dev, why) = Device::open(g.device)?;
    p.status(&format!("device: {} ({why})", dev.name()));
    let ef = EditorFile::load(&dev, &a.editor)?;
    let r = request(&a, &ef)?;
    let data = data_for(&ef, a.data.as_deref())?;
    if a.keep_features.is_some() && data.is_none() {
        return Err(Error::Usage(format!(
            "--keep-features needs the data: pass --data with the {:?} files",
            ef.loader
        )));
    }
    if r.target.is_some() && data.is_none() {
        return Err(Error::Usage(format!(
            "meeting a gap bound needs the data: pass --data with the {:?} files",
            ef.loader
        )));
    }
    // Inputs and outputs.
    let jobs: Vec<(PathBuf, PathBuf)> = match &a.batch {
        None => vec![(
            a.model.clone().expect("clap: --model or --batch"),
            a.out.clone(),
        )],
        Some(dir) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(Error::input(dir, "holds no .safetensors files"));
            }
            std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
            files
                .into_iter()
                .map(|f| {
                    let o = a.out.join(f.file_name().unwrap());
                    (f, o)
                })
                .collect()
        }
    };
    for (input, out) in &jobs {
        if out.exists() && std::fs::canonicalize(out).ok() == std::fs::canonicalize(input).ok() {
            return Err(Error::input(
                out,
                "is the input model; refusing to overwrite an input",
            ));
        }
        if out.exists() && !a.force {
            return Err(Error::input(
                out,
                "already exists (pass --force to replace it)",
            ));
        }
    }
    let models: Vec<Model> = jobs
        .iter()
        .map(|(input, _)| {
            let m = Model::load(input)?;
            ef.check_model(input, &m)?;
            Ok(m)
        })
        .collect::<Result<_>>()?;
    let shapes: Vec<MlpShape> = models.iter().map(Model::shape).collect();
    let params: Vec<Vec<f32>> = models.iter().map(Model::flat_params).collect();
    // The edits: one inference for all models (fairness with a bound: one per model, over a
    // grid of lambdas, picked on the validation split).
    let t0 = Instant::now();
    let mut lambdas = vec![None; models.len()];
    let mut shifts = vec![r.ask.shift.clone(); models.len()];
    let mut asks = vec![r.ask.clone(); models.len()];
    let mut chosen: Vec<Option<Vec<String>>> = vec![None; models.len()];
    if let (Some(k), Some(d)) = (a.keep_features, &data) {
        for i in 0..models.len() {
            let names = choose_features(&dev, &ef, &shapes[i], &params[i], &d.val, k, &a.drop)?;
            asks[i].removed = removed_columns(&ef.schema, &names).map_err(Error::Usage)?;
            chosen[i] = Some(names);
        }
    }
    let edited: Vec<Vec<f32>> = match (r.target, &data) {
        (Some((gap, bound)), Some(d)) if ef.spec.fair_target == FairTarget::Shift => {
            let mut out = Vec::new();
            for (i, (s, w)) in shapes.iter().zip(&params).enumerate() {
                let (c, e) = search_shift(
                    &dev,
                    &ef.editor,
                    &ef.spec,
                    &ef.columns,
                    &ef.schema,
                    (s, w),
                    &d.val,
                    gap,
                    bound,
                )?;
                shifts[i] = Some(c);
                out.push(e);
            }
            out
        }
        (Some((gap, bound)), Some(d)) => {
            let grid = lambda_grid(ef.lambda);
            let mut out = Vec::new();
            for (i, (s, w)) in shapes.iter().zip(&params).enumerate() {
                let (l, e) = search_lambda(&dev, &ef, s, w, &d.val, gap, bound, &grid)?;
                lambdas[i] = Some(l);
                out.push(e);
            }
            out
        }
        _ => {
            let pairs: Vec<(&MlpShape, &[f32])> = shapes
                .iter()
                .zip(&params)
                .map(|(s, w)| (s, w.as_slice()))
                .collect();
            if ef.spec.requirement == Requirement::Fairness && r.ask.shift.is_none() {
                lambdas = vec![Some(r.ask.lambda); models.len()];
            }
            edit_models(&dev, &ef.editor, &ef.spec, &pairs, &asks, &ef.columns)?
        }
    };
    dev.sync()?;
    let seconds = t0.elapsed().as_secs_f64() / models.len() as f64;
    // Verify and write.
    let mut outcomes = Vec::new();
    for (i, (input, out)) in jobs.iter().enumerate() {
        let (shape, before_w, after_w) = (&shapes[i], &params[i], &edited[i]);
        let (name, before, after, met) = match ef.spec.requirement {
            Requirement::Minimise => {
                let largest = |w: &[f32]| {
                    (0..shape.fan_out(0))
                        .flat_map(|j| (0..shape.dims[0]).map(move |c| (j, c)))
                        .filter(|(_, c)| asks[i].removed[*c])
                        .map(|(j, c)| w[j * shape.dims[0] + c].abs() as f64)
                        .fold(0.0, f64::max)
                };
                let after = largest(after_w);
                (
                    "largest weight on removed columns".to_string(),
                    largest(before_w),
                    after,
                    Some(after == 0.0),
                )
            }
            Requirement::Prune => {
                let s = |w: &[f32]| crate::requirement::metrics::weight_sparsity(shape, w);
                let n: usize = (0..shape.layers())
                    .map(|l| shape.fan_in(l) * shape.fan_out(l))
                    .sum();
                let after = s(after_w);
                (
                    "weight sparsity".to_string(),
                    s(before_w),
                    after,
                    Some(after + 0.5 / n as f64 >= r.ask.sparsity as f64),
                )
            }
            Requirement::Fairness => {
                let gap = r.target.map_or(ef.spec.gap, |t| t.0);
                let short = match gap {
                    Gap::Eo => "EO",
                    Gap::Dp => "DP",
                };
                let name = format!("{short} difference (test split)");
                match &data {
                    Some(d) => {
                        let m = |w: &[f32]| -> Result<f64> {
                            let pred = decisions(&predict(&dev, shape, 1, w, &d.test.x)?);
                            Ok(match gap {
                                Gap::Eo => {
                                    equalized_odds_difference(&d.test.y, &pred, &d.test.group)
                                }
                                Gap::Dp => demographic_parity_difference(&pred, &d.test.group),
                            })
                        };
                        let after = m(after_w)?;
                        (name, m(before_w)?, after, r.target.map(|t| after <= t.1))
                    }
                    None => (name, f64::NAN, f64::NAN, None),
                }
            }
        };
        let (mut acc_b, mut acc_a, mut agree) = (None, None, None);
        if let Some(d) = &data {
            let pb = decisions(&predict(&dev, shape, 1, before_w, &d.test.x)?);
            let pa = decisions(&predict(&dev, shape, 1, after_w, &d.test.x)?);
            acc_b = Some(accuracy(&d.test.y, &pb));
            acc_a = Some(accuracy(&d.test.y, &pa));
            agree = Some(accuracy(&pb, &pa));
        }
        let mut m = models[i].with_params(after_w);
        m.metadata.insert(
            "regop_edit".into(),
            serde_json::json!({"editor": a.editor, "requirement": ef.spec.requirement, "drop": chosen[i].clone().unwrap_or(a.drop.clone()),
                "sparsity": a.sparsity, "lambda": lambdas[i], "shift": shifts[i]})
            .to_string(),
        );
        m.save(out, a.force)?;
        outcomes.push(Outcome {
            model: input.clone(),
            out: out.clone(),
            seconds,
            lambda: lambdas[i],
            shift: shifts[i].clone(),
            dropped: chosen[i].clone(),
            requirement: name,
            before,
            after,
            accuracy_before: acc_b,
            accuracy_after: acc_a,
            agreement: agree,
            met,
        });
    }
    let missed = outcomes.iter().filter(|o| o.met == Some(false)).count();
    if p.json {
        p.json(&outcomes);
    } else {
        for o in &outcomes {
            let mut line = format!(
                "{}: {} {:.4} -> {:.4}",
                o.model.display(),
                o.requirement,
                o.before,
                o.after
            );
            if let (Some(b), Some(af), Some(ag)) =
                (o.accuracy_before, o.accuracy_after, o.agreement)
            {
                line += &format!(", test accuracy {b:.4} -> {af:.4}, agreement {ag:.4}");
            }
            if let Some(f) = &o.dropped {
                line += &format!(", dropped {}", f.join(","));
            }
            if let Some(l) = o.lambda {
                line += &format!(", lambda {l:.3}");
            }
            if let Some(c) = &o.shift {
                let c: Vec<String> = c.iter().map(|v| format!("{v:+.1}")).collect();
                line += &format!(", group shifts {}", c.join(","));
            }
            line += match o.met {
                Some(true) => "  [met]",
                Some(false) => "  [MISSED]",
                None => "  [not verified: no data]",
            };
            println!("{line}");
        }
        println!(
            "{} model(s) edited in {:.2} ms each -> {}",
            outcomes.len(),
            1e3 * seconds,
            a.out.display()
        );
    }
    Ok(if missed > 0 { 1 } else { 0 })
}
