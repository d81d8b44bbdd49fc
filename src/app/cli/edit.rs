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
use crate::requirement::metrics::{accuracy, predictions};
use crate::requirement::verify::{compliant, Target};
use crate::requirement::{removed_columns, Ask, FairTarget, PruneScore, Requirement};
use crate::workflows::edit::checkpoint::EditorFile;
use crate::workflows::edit::search::{choose_features, lambda_grid};
use crate::workflows::edit::search::{search_lambda, search_shift, search_steps};
use crate::workflows::edit::{edit_models, edit_models_at};
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
    /// Features to remove (minimise editors; prune editors trained with --also-drop remove
    /// them in the same edit).
    #[arg(long, value_delimiter = ',')]
    pub drop: Vec<String>,
    /// Let the editor choose which features to drop so that at most this many remain
    /// (minimise editors; needs the data). --drop features are dropped in any case.
    #[arg(long)]
    pub keep_features: Option<usize>,
    /// Target weight sparsity (prune editors; drop-attribute fairness editors trained with
    /// --also-prune prune to it in the same edit).
    #[arg(long, conflicts_with = "neurons")]
    pub sparsity: Option<f32>,
    /// Share of every hidden layer's neurons to remove (whole-neuron prune editors).
    #[arg(long)]
    pub neurons: Option<f32>,
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
    /// Most test accuracy an edit may lose and still count as met (a share: 0.02 = 2 points);
    /// checked whenever there is data.
    #[arg(long, default_value_t = crate::requirement::MAX_DROP)]
    pub max_drop: f64,
    /// Edit at this step along the editor's edit (0: the rule it starts from; 1: the edit as
    /// trained) instead of the editor's own choice (minimise and prune editors).
    #[arg(long)]
    pub step: Option<f32>,
    /// Write an edit that missed too (its file records that it missed); by default a missed
    /// edit is not written.
    #[arg(long)]
    pub write_missed: bool,
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

/// Refuse flags that do not apply to this editor, in one line naming the flag.
fn check_flags(a: &Args, ef: &EditorFile) -> Result<()> {
    let req = ef.spec.requirement;
    let wrong = |flag: &str| {
        Err(Error::Usage(format!(
            "{flag} does not apply to this editor: it was trained for {req:?}"
        )))
    };
    if !a.drop.is_empty() && req == Requirement::Prune && !ef.spec.also_drops {
        return Err(Error::Usage(
            "--drop does not apply to this prune editor: it was not trained to drop features (train one with --also-drop)".into(),
        ));
    }
    if !a.drop.is_empty() && req == Requirement::Fairness {
        return wrong("--drop");
    }
    if a.keep_features.is_some() && req != Requirement::Minimise {
        return wrong("--keep-features");
    }
    if a.neurons.is_some() && req != Requirement::Prune {
        return wrong("--neurons");
    }
    if a.sparsity.is_some() && req != Requirement::Prune && !ef.spec.also_prunes {
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
    if !(0.0..=1.0).contains(&a.max_drop) {
        return Err(Error::Usage("--max-drop must be in [0, 1]".into()));
    }
    Ok(())
}

fn request(a: &Args, ef: &EditorFile) -> Result<Request> {
    check_flags(a, ef)?;
    let req = ef.spec.requirement;
    let mut ask = Ask::new(ef.schema.n_columns());
    let shifts = ef.spec.fair_target == FairTarget::Shift;
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
        Requirement::Prune => {
            // Features dropped in the same edit (editors trained with --also-drop).
            ask.removed = removed_columns(&ef.schema, &a.drop)
                .map_err(|m| Error::Usage(format!("--drop: {m}")))?;
            // A whole-neuron editor reads the share of neurons where others read the sparsity.
            let neurons = ef.spec.prune_score == PruneScore::Neurons;
            let (given, flag, other) = if neurons {
                (a.neurons, "--neurons", a.sparsity.map(|_| "--sparsity"))
            } else {
                (a.sparsity, "--sparsity", a.neurons.map(|_| "--neurons"))
            };
            if let Some(o) = other {
                return Err(Error::Usage(format!(
                    "{o} does not apply to this editor: it prunes {}; give {flag}",
                    if neurons { "whole neurons" } else { "weights" }
                )));
            }
            match given {
                Some(s) if (0.0..1.0).contains(&s) => ask.sparsity = s,
                Some(_) => return Err(Error::Usage(format!("{flag} must be in [0, 1)"))),
                None => return Err(Error::Usage(format!("this prune editor needs {flag}"))),
            }
        }
        Requirement::Fairness => {
            // Pruned in the same edit (drop-attribute editors trained with --also-prune).
            match a.sparsity {
                Some(s) if (0.0..1.0).contains(&s) => ask.sparsity = s,
                Some(_) => return Err(Error::Usage("--sparsity must be in [0, 1)".into())),
                None if ef.spec.also_prunes => {
                    return Err(Error::Usage(
                        "this fairness editor also prunes: give --sparsity S".into(),
                    ))
                }
                None => {}
            }
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
    /// The step along the editor's edit: picked on training rows (editors that pick it), or
    /// given with --step.
    step: Option<f32>,
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
    /// The requirement met and, with data, at most --max-drop of accuracy lost; None where
    /// nothing could be checked (a fairness edit without data or bound).
    met: Option<bool>,
    /// What missed, in words.
    missed: Vec<String>,
    /// Where the model is outside the editor's training models but still edited.
    outside_training: Vec<String>,
    /// Whether the edited model was written (a missed edit is not, unless --write-missed).
    written: bool,
}

pub fn run(g: &Global, p: &Printer, a: Args) -> Result<i32> {
    let (dev, why) = Device::open(g.device)?;
    p.status(&format!("device: {} ({why})", dev.name()));
    let mut ef = EditorFile::load(&dev, &a.editor)?;
    let r = request(&a, &ef)?;
    if let Some(line) = ef.sparsity_outside(r.ask.sparsity) {
        p.warn(&line);
    }
    let data = data_for(&ef, a.data.as_deref())?;
    match &data {
        Some(d) => ef.attach_data(d),
        None if ef.needs_data() => {
            return Err(Error::Usage(format!(
            "this editor reads a calibration batch of its data: pass --data with the {:?} files",
            ef.loader
        )))
        }
        None => {}
    }
    if let Some(s) = a.step {
        if !matches!(
            ef.spec.requirement,
            Requirement::Minimise | Requirement::Prune
        ) {
            return Err(Error::Usage(
                "--step applies to minimise and prune editors; fairness editors search a lambda or shifts".into(),
            ));
        }
        if !(s >= 0.0 && s.is_finite()) {
            return Err(Error::Usage(format!(
                "--step must be a finite step of at least 0, not {s}"
            )));
        }
    }
    if ef.searches_step() && a.step.is_none() && data.is_none() {
        return Err(Error::Usage(format!(
            "this editor picks its step on training rows: pass --data with the {:?} files",
            ef.loader
        )));
    }
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
    let jobs = jobs(&a)?;
    let mut flags = Vec::new();
    let models: Vec<Model> = jobs
        .iter()
        .map(|(input, _)| {
            let m = Model::load(input)?;
            let outside = ef.check_model(input, &m)?;
            for f in &outside {
                p.warn(&format!("{}: {f}", input.display()));
            }
            flags.push(outside);
            Ok(m)
        })
        .collect::<Result<_>>()?;
    let t0 = Instant::now();
    let edits = edit_all(&dev, &ef, &r, &a, data.as_ref(), &models)?;
    dev.sync()?;
    let seconds = t0.elapsed().as_secs_f64() / models.len() as f64;
    let mut outcomes = Vec::new();
    let per_model = jobs.iter().zip(&models).zip(&edits).zip(flags);
    for ((((input, out), model), e), outside) in per_model {
        let mut o = check(&dev, &ef, &r, data.as_ref(), model, e, a.max_drop)?;
        o.outside_training = outside;
        o.written = o.met != Some(false) || a.write_missed;
        if o.written {
            let mut edited = model.with_params(&e.params);
            // A model that did not name its input columns is written naming the editor's.
            edited
                .features
                .get_or_insert_with(|| ef.schema.column_names());
            edited.metadata.insert(
                "regop_edit".into(),
                serde_json::json!({"editor": a.editor, "requirement": ef.spec.requirement, "drop": e.dropped.clone().unwrap_or(a.drop.clone()),
                    "sparsity": a.sparsity, "lambda": e.lambda, "step": e.step, "shift": e.ask.shift,
                    "met": o.met, "missed": o.missed})
                .to_string(),
            );
            edited.save(out, a.force)?;
        }
        (o.model, o.out, o.seconds) = (input.clone(), out.clone(), seconds);
        outcomes.push(o);
    }
    print_outcomes(p, &outcomes, &a.out, seconds);
    let missed = outcomes.iter().filter(|o| o.met == Some(false)).count();
    Ok(if missed > 0 { 1 } else { 0 })
}

/// (input model, output file) pairs: --model and --out, or every model file of --batch into
/// the directory --out. Refuses to write over an input, or over a file without --force.
fn jobs(a: &Args) -> Result<Vec<(PathBuf, PathBuf)>> {
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
    Ok(jobs)
}

/// One model's edit: its parameters and what was chosen for it.
struct Edit {
    params: Vec<f32>,
    /// What the edit asked (with the shifts a search chose).
    ask: Ask,
    /// The lambda of a penalty fairness edit.
    lambda: Option<f32>,
    /// The step along the editor's edit, where it was picked on training rows or given.
    step: Option<f32>,
    /// Features the editor chose to drop (--keep-features).
    dropped: Option<Vec<String>>,
}

/// Every model edited: one inference for all, or one search per model where a bound must be
/// met on the validation split (a fairness bound, a feature budget).
fn edit_all(
    dev: &Device,
    ef: &EditorFile,
    r: &Request,
    a: &Args,
    data: Option<&Dataset>,
    models: &[Model],
) -> Result<Vec<Edit>> {
    let shapes: Vec<MlpShape> = models.iter().map(Model::shape).collect();
    let params: Vec<Vec<f32>> = models.iter().map(Model::flat_params).collect();
    let mut edits: Vec<Edit> = params
        .iter()
        .map(|_| Edit {
            params: Vec::new(),
            ask: r.ask.clone(),
            lambda: None,
            step: None,
            dropped: None,
        })
        .collect();
    if let (Some(k), Some(d)) = (a.keep_features, data) {
        for (i, e) in edits.iter_mut().enumerate() {
            let names = choose_features(dev, ef, &shapes[i], &params[i], &d.val, k, &a.drop)?;
            e.ask.removed = removed_columns(&ef.schema, &names).map_err(Error::Usage)?;
            e.dropped = Some(names);
        }
    }
    let (editor, spec, cols) = (&ef.editor, &ef.spec, &ef.columns);
    match (r.target, data) {
        (Some((gap, bound)), Some(d)) if spec.fair_target == FairTarget::Shift => {
            for (i, e) in edits.iter_mut().enumerate() {
                let model = (&shapes[i], params[i].as_slice());
                let (shift, edited) = search_shift(
                    dev, editor, spec, cols, &ef.schema, model, &d.val, gap, bound,
                )?;
                (e.ask.shift, e.params) = (Some(shift), edited);
            }
        }
        (Some((gap, bound)), Some(d)) => {
            let grid = lambda_grid(ef.lambda);
            for (i, e) in edits.iter_mut().enumerate() {
                let (lambda, edited) = search_lambda(
                    dev,
                    ef,
                    &shapes[i],
                    &params[i],
                    r.ask.sparsity,
                    &d.val,
                    gap,
                    bound,
                    &grid,
                )?;
                (e.lambda, e.params) = (Some(lambda), edited);
            }
        }
        _ => {
            let pairs: Vec<(&MlpShape, &[f32])> = shapes
                .iter()
                .zip(&params)
                .map(|(s, w)| (s, w.as_slice()))
                .collect();
            let asks: Vec<Ask> = edits.iter().map(|e| e.ask.clone()).collect();
            let edited: Vec<(Option<f32>, Vec<f32>)> = match (a.step, data) {
                (Some(s), _) => edit_models_at(dev, editor, spec, &pairs, &asks, cols, &[s])?
                    .into_iter()
                    .map(|mut at| (Some(s), at.remove(0)))
                    .collect(),
                (None, Some(d)) if ef.searches_step() => {
                    let found = search_steps(dev, editor, spec, cols, &pairs, &asks, &d.train)?;
                    found.into_iter().map(|(s, p)| (Some(s), p)).collect()
                }
                (None, _) => (edit_models(dev, editor, spec, &pairs, &asks, cols)?.into_iter())
                    .map(|p| (None, p))
                    .collect(),
            };
            let penalty = spec.requirement == Requirement::Fairness && r.ask.shift.is_none();
            for (e, (step, p)) in edits.iter_mut().zip(edited) {
                (e.step, e.params) = (step, p);
                e.lambda = penalty.then_some(r.ask.lambda);
            }
        }
    }
    Ok(edits)
}

/// The requirement checked on one edit, before -> after (with the data: on its test split,
/// with the test accuracy before and after and the agreement of their decisions).
fn check(
    dev: &Device,
    ef: &EditorFile,
    r: &Request,
    data: Option<&Dataset>,
    model: &Model,
    e: &Edit,
    max_drop: f64,
) -> Result<Outcome> {
    let (shape, before) = (model.shape(), model.flat_params());
    let target = match ef.spec.requirement {
        Requirement::Minimise => Target::Minimise {
            removed: e.ask.removed.clone(),
        },
        Requirement::Prune if ef.spec.prune_score == PruneScore::Neurons => Target::PruneNeurons {
            fraction: r.ask.sparsity as f64,
            without: e.ask.removed.clone(),
        },
        Requirement::Prune => Target::Prune {
            sparsity: r.ask.sparsity as f64,
            without: e.ask.removed.clone(),
        },
        Requirement::Fairness => {
            let (gap, max_gap) = r.target.unwrap_or((ef.spec.gap, f64::INFINITY));
            Target::Fairness {
                gap,
                max_gap,
                without: ef.spec.unread_columns(&ef.columns),
                sparsity: r.ask.sparsity as f64,
            }
        }
    };
    // Decisions on the test split (a class per row: the argmax where there are several
    // outputs): what fairness is measured on, and accuracy for any edit.
    let decide = |w: &[f32], d: &Dataset| -> Result<Vec<f32>> {
        let logits = predict(dev, &shape, 1, w, &d.test.x)?;
        Ok(predictions(&logits, shape.outputs()))
    };
    let (pb, pa) = match data {
        Some(d) => (Some(decide(&before, d)?), Some(decide(&e.params, d)?)),
        None => (None, None),
    };
    let test = data.map(|d| &d.test);
    let fairness = matches!(target, Target::Fairness { .. });
    let mut name = target.measure_name();
    let (value_before, verdict) = match (fairness, test) {
        (true, None) => (f64::NAN, None),
        _ => {
            let b = target.measure(&shape, &before, test.zip(pb.as_deref()));
            let verdict = target.verify(&shape, &e.params, test.zip(pa.as_deref()));
            (b, Some(verdict))
        }
    };
    if fairness {
        name += " (test split)";
    }
    let (mut acc_b, mut acc_a, mut agree) = (None, None, None);
    if let (Some(d), Some(pb), Some(pa)) = (data, &pb, &pa) {
        acc_b = Some(accuracy(&d.test.y, pb));
        acc_a = Some(accuracy(&d.test.y, pa));
        agree = Some(accuracy(pb, pa));
    }
    // Fairness is verified only against a bound that was asked; accuracy wherever there is data.
    let mut missed = Vec::new();
    let requirement = match fairness && r.target.is_none() {
        true => None,
        false => verdict.map(|v| v.met),
    };
    if requirement == Some(false) {
        let v = verdict.expect("checked").value;
        missed.push(format!("{name} {v:.4} misses the requirement"));
    }
    if let (Some(b), Some(af)) = (acc_b, acc_a) {
        if !compliant(true, b, af, max_drop) {
            missed.push(format!(
                "test accuracy fell {:.1} points, more than the {:.1} allowed (--max-drop)",
                100.0 * (b - af),
                100.0 * max_drop
            ));
        }
    }
    let met = match (requirement, acc_b) {
        (None, None) => None,
        _ => Some(missed.is_empty()),
    };
    Ok(Outcome {
        model: PathBuf::new(),
        out: PathBuf::new(),
        seconds: 0.0,
        lambda: e.lambda,
        step: e.step,
        shift: e.ask.shift.clone(),
        dropped: e.dropped.clone(),
        requirement: name,
        before: value_before,
        after: verdict.map_or(f64::NAN, |v| v.value),
        accuracy_before: acc_b,
        accuracy_after: acc_a,
        agreement: agree,
        met,
        missed,
        outside_training: Vec::new(),
        written: false,
    })
}

fn print_outcomes(p: &Printer, outcomes: &[Outcome], out: &Path, seconds: f64) {
    if p.json {
        p.json(&outcomes);
        return;
    }
    for o in outcomes {
        let mut line = format!(
            "{}: {} {:.4} -> {:.4}",
            o.model.display(),
            o.requirement,
            o.before,
            o.after
        );
        if let (Some(b), Some(af), Some(ag)) = (o.accuracy_before, o.accuracy_after, o.agreement) {
            line += &format!(", test accuracy {b:.4} -> {af:.4}, agreement {ag:.4}");
        }
        if let Some(f) = &o.dropped {
            line += &format!(", dropped {}", f.join(","));
        }
        if let Some(l) = o.lambda {
            line += &format!(", lambda {l:.3}");
        }
        if let Some(s) = o.step {
            line += &format!(", step {s}");
        }
        if let Some(c) = &o.shift {
            let c: Vec<String> = c.iter().map(|v| format!("{v:+.1}")).collect();
            line += &format!(", group shifts {}", c.join(","));
        }
        line += &match o.met {
            Some(true) if o.accuracy_before.is_none() => {
                "  [met; accuracy not checked: no data]".to_string()
            }
            Some(true) => "  [met]".to_string(),
            Some(false) => format!(
                "  [MISSED: {}; {}]",
                o.missed.join("; "),
                if o.written {
                    "written anyway (--write-missed)"
                } else {
                    "not written (--write-missed keeps it)"
                }
            ),
            None => "  [not verified: no data]".to_string(),
        };
        println!("{line}");
    }
    let written = outcomes.iter().filter(|o| o.written).count();
    println!(
        "{} model(s) edited in {:.2} ms each; {written} written -> {}",
        outcomes.len(),
        1e3 * seconds,
        out.display()
    );
}
